//! Run with: `cargo run --example report`
//!
//! Report generation by fan-out and fan-in: a `monthly_report` task
//! triggers one `section` task per section from inside its run (through
//! `Context::tasks`), waits for all of their results, and assembles them.

use std::time::Duration;

use offload::{Client, Context, Controller, TaskError, TaskType, Worker};
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
struct ReportRequest {
    month: String,
}

struct MonthlyReport;

impl TaskType for MonthlyReport {
    const NAME: &'static str = "monthly_report";
    type Input = ReportRequest;
    type Output = String;

    async fn run(
        &self,
        input: ReportRequest,
        ctx: &Context,
        ctl: &Controller,
    ) -> Result<String, TaskError> {
        let titles = ["Revenue", "Costs", "Customers", "Outlook"];
        // fan out
        let mut children = Vec::new();
        for title in titles {
            let section = Section {
                month: input.month.clone(),
                title: title.to_owned(),
            };
            let handle = RenderSection::enqueue(ctx.tasks(), section)
                .await
                .map_err(|e| TaskError::new(format!("could not enqueue a section: {e}")))?;
            children.push(handle);
        }
        // fan in
        let mut parts = vec![format!("# Report for {}", input.month)];
        for (done, child) in children.iter().enumerate() {
            let text = child
                .result(Duration::from_secs(60))
                .await
                .map_err(|e| TaskError::new(format!("section {} failed: {e}", child.id())))?;
            parts.push(text);
            let percent = u8::try_from(100 * (done + 1) / children.len()).unwrap_or(100);
            ctl.progress(
                percent,
                Some(format!("{} of {} sections", done + 1, children.len())),
            )
            .await
            .ok();
        }
        Ok(parts.join("\n\n"))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    offload_examples::init_logging();
    let store = offload::open(&offload_examples::database_url()).await?;
    let worker = Worker::builder(store.clone())
        .task(MonthlyReport)
        .task(RenderSection)
        .concurrency(8) // the parent waits in a slot while its sections run
        .build()?
        .start();
    let client = Client::new(store);

    offload_examples::with_worker(worker, async {
        let handle = MonthlyReport::enqueue(
            &client,
            ReportRequest {
                month: "2026-10".into(),
            },
        )
        .await?;
        println!("enqueued report {}", handle.id());
        println!("{}", handle.result(Duration::from_secs(60)).await?);
        Ok(())
    })
    .await
}
