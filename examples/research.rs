//! Run with: `cargo run --example research -- "AI agents"`
//!
//! A research task: given a topic, it calls a search API over HTTP (here a
//! stand-in service on a loopback port), reports progress per source, and
//! returns a short summary. The search API's base URL is shared state
//! registered once on the worker.

use std::time::Duration;

use axum::{Json, Router, extract::Query, routing::get};
use offload::{Client, Context, Controller, TaskError, TaskType, Worker};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Serialize, Deserialize)]
struct Topic {
    topic: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Findings {
    topic: String,
    sources: Vec<String>,
    summary: String,
}

struct SearchApi {
    base: String,
    http: reqwest::Client,
}

struct Research;

impl TaskType for Research {
    const NAME: &'static str = "research";
    type Input = Topic;
    type Output = Findings;

    async fn run(
        &self,
        input: Topic,
        ctx: &Context,
        ctl: &Controller,
    ) -> Result<Findings, TaskError> {
        let api = ctx
            .state::<SearchApi>()
            .ok_or_else(|| TaskError::fatal("SearchApi is not registered"))?;
        let mut sources = Vec::new();
        let engines = ["papers", "news", "forums"];
        for (i, engine) in engines.iter().enumerate() {
            let hits: Vec<String> = api
                .http
                .get(format!("{}/search/{engine}", api.base))
                .query(&[("q", &input.topic)])
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| TaskError::new(format!("search {engine}: {e}")))?
                .json()
                .await
                .map_err(|e| TaskError::new(format!("search {engine}: {e}")))?;
            sources.extend(hits);
            let percent = u8::try_from(100 * (i + 1) / engines.len()).unwrap_or(100);
            ctl.progress(percent, Some(format!("searched {engine}")))
                .await
                .ok();
        }
        Ok(Findings {
            summary: format!("{} sources about {}", sources.len(), input.topic),
            topic: input.topic,
            sources,
        })
    }
}

#[derive(Deserialize)]
struct SearchQuery {
    q: String,
}

async fn search(
    axum::extract::Path(engine): axum::extract::Path<String>,
    Query(q): Query<SearchQuery>,
) -> Json<serde_json::Value> {
    Json(json!([
        format!("{engine}: {} (part 1)", q.q),
        format!("{engine}: {} (part 2)", q.q)
    ]))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    offload_examples::init_logging();
    let topic = offload_examples::positional_args()
        .into_iter()
        .next()
        .unwrap_or_else(|| "AI agents".to_owned());
    let base =
        offload_examples::serve(Router::new().route("/search/{engine}", get(search))).await?;

    let store = offload::open(&offload_examples::database_url()).await?;
    let worker = Worker::builder(store.clone())
        .state(SearchApi {
            base,
            http: reqwest::Client::new(),
        })
        .task(Research)
        .concurrency(4)
        .build()?
        .start();
    let client = Client::new(store);

    offload_examples::with_worker(worker, async {
        let handle = Research::enqueue(&client, Topic { topic }).await?;
        println!("enqueued research task {}", handle.id());
        let findings = handle.result(Duration::from_secs(30)).await?;
        println!("{}", serde_json::to_string_pretty(&findings)?);
        Ok(())
    })
    .await
}
