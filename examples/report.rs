//! Run with: `cargo run --example report`
//!
//! Report generation by fan-out and fan-in with a group: one `section`
//! task per section of the report (the members), and a `report_assemble`
//! callback that runs once every section has ended — whatever the outcome
//! — and reads their outputs through `Context::group_results`. Nothing
//! waits in a worker slot while the sections run, and the group's progress
//! is visible (`offload groups get ID`).

use std::time::Duration;

use offload::{Client, Context, Controller, Status, TaskError, TaskType, Worker};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Section {
    month: String,
    title: String,
}

struct RenderSection;

impl TaskType for RenderSection {
    const NAME: &'static str = "section";
    type Input = Section;
    type Output = String;

    async fn run(
        &self,
        input: Section,
        _ctx: &Context,
        _ctl: &Controller,
    ) -> Result<String, TaskError> {
        tokio::time::sleep(Duration::from_millis(50)).await; // stands in for real work
        Ok(format!(
            "## {} ({})\n{} figures look fine.",
            input.title, input.month, input.title
        ))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Assemble {
    month: String,
}

struct AssembleReport;

impl TaskType for AssembleReport {
    const NAME: &'static str = "report_assemble";
    type Input = Assemble;
    type Output = String;

    async fn run(
        &self,
        input: Assemble,
        ctx: &Context,
        _ctl: &Controller,
    ) -> Result<String, TaskError> {
        // the members, in enqueue order, each ended
        let sections = ctx
            .group_results()
            .await
            .map_err(|e| TaskError::new(format!("cannot read the sections: {e}")))?;
        let mut parts = vec![format!("# Report for {}", input.month)];
        for section in sections {
            match (section.status, section.output) {
                (Status::Success, Some(serde_json::Value::String(text))) => parts.push(text),
                (status, _) => parts.push(format!(
                    "## (section {} is missing: it ended {status})",
                    section.id
                )),
            }
        }
        Ok(parts.join("\n\n"))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    offload_examples::init_logging();
    let store = offload::open(&offload_examples::database_url()).await?;
    let worker = Worker::builder(store.clone())
        .task(RenderSection)
        .task(AssembleReport)
        .concurrency(4)
        .build()?
        .start();
    let client = Client::new(store);

    offload_examples::with_worker(worker, async {
        let month = "2026-10".to_owned();
        let sections = ["Revenue", "Costs", "Customers", "Outlook"]
            .into_iter()
            .map(|title| {
                RenderSection::new_task(Section {
                    month: month.clone(),
                    title: title.to_owned(),
                })
            })
            .collect::<offload::Result<Vec<_>>>()?;
        let callback = AssembleReport::new_task(Assemble { month })?;
        let group = client.trigger_group(sections, callback).await?;
        println!("enqueued report group {}", group.id());
        let report = group.callback.result(Duration::from_secs(60)).await?;
        let progress = client.group(group.id()).await?;
        println!(
            "{} of {} sections ended ({}%)",
            progress.ended, progress.size, progress.percent
        );
        println!("{}", report.as_str().unwrap_or_default());
        Ok(())
    })
    .await
}
