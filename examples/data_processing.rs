//! Run with: `cargo run --example data_processing -- [ROWS]`
//!
//! A data-processing task: it streams a large CSV file line by line (never
//! loading it whole), totals it per region, and reports progress as it
//! goes. The example writes the file first (200,000 rows by default).

use std::time::Duration;

use offload::{Client, Context, Controller, TaskError, TaskType, Worker};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};

#[derive(Debug, Serialize, Deserialize)]
struct Import {
    path: String,
    rows: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Totals {
    rows: u64,
    by_region: BTreeMap<String, f64>,
}

struct ImportSales;

impl TaskType for ImportSales {
    const NAME: &'static str = "import_sales";
    type Input = Import;
    type Output = Totals;

    async fn run(
        &self,
        input: Import,
        _ctx: &Context,
        ctl: &Controller,
    ) -> Result<Totals, TaskError> {
        let file = tokio::fs::File::open(&input.path).await?;
        let mut lines = BufReader::new(file).lines();
        let mut totals = Totals {
            rows: 0,
            by_region: BTreeMap::new(),
        };
        let step = (input.rows / 10).max(1);
        let _header = lines.next_line().await?;
        while let Some(line) = lines.next_line().await? {
            if ctl.is_stopping() {
                return Err(TaskError::new("stopped before the end of the file"));
            }
            let mut fields = line.split(',');
            let (Some(region), Some(amount)) = (fields.nth(1), fields.next()) else {
                return Err(TaskError::fatal(format!(
                    "row {} is malformed: {line:?}",
                    totals.rows + 1
                )));
            };
            let amount: f64 = amount.parse().map_err(|_| {
                TaskError::fatal(format!(
                    "row {}: amount {amount:?} is not a number",
                    totals.rows + 1
                ))
            })?;
            *totals.by_region.entry(region.to_owned()).or_default() += amount;
            totals.rows += 1;
            if totals.rows.is_multiple_of(step) {
                let percent = u8::try_from(100 * totals.rows / input.rows.max(1)).unwrap_or(100);
                ctl.progress(percent, Some(format!("{} rows", totals.rows)))
                    .await
                    .ok();
            }
        }
        Ok(totals)
    }
}

async fn write_sample(path: &std::path::Path, rows: u64) -> anyhow::Result<()> {
    let mut out = BufWriter::new(tokio::fs::File::create(path).await?);
    out.write_all(b"id,region,amount\n").await?;
    let regions = ["north", "south", "east", "west"];
    for i in 0..rows {
        let region = regions[usize::try_from(i % 4)?];
        out.write_all(format!("{i},{region},{}.{:02}\n", i % 97, i % 100).as_bytes())
            .await?;
    }
    out.flush().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    offload_examples::init_logging();
    let rows: u64 = offload_examples::positional_args()
        .first()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200_000);
    let path = std::env::temp_dir().join(format!("offload-sales-{}.csv", std::process::id()));
    write_sample(&path, rows).await?;

    let store = offload::open(&offload_examples::database_url()).await?;
    let worker = Worker::builder(store.clone())
        .task(ImportSales)
        .build()?
        .start();
    let client = Client::new(store);

    let result = offload_examples::with_worker(worker, async {
        let handle = ImportSales::enqueue(
            &client,
            Import {
                path: path.display().to_string(),
                rows,
            },
        )
        .await?;
        println!("enqueued import {}", handle.id());
        let totals = handle.result(Duration::from_secs(120)).await?;
        let task = handle.untyped().task().await?;
        println!("progress: {:?}", task.progress.map(|p| p.percent));
        println!("{}", serde_json::to_string_pretty(&totals)?);
        Ok(())
    })
    .await;
    tokio::fs::remove_file(&path).await.ok();
    result
}
