//! Scratch probe (not kept).
#![allow(missing_docs, clippy::unwrap_used)]
use offload_store::{Store, TaskInsertParams};
use offload_store_sqlite::{SqliteOptions, SqliteStore};
use offload_types::NewTask;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let store = SqliteStore::open(&args[2], SqliteOptions::default())
        .await
        .unwrap();
    if args[1] == "listen" {
        let mut rx = store.notifier().subscribe();
        let mut n = 0;
        let end = Instant::now() + Duration::from_secs(12);
        loop {
            match tokio::time::timeout_at(end.into(), rx.recv()).await {
                Ok(Ok(note)) => {
                    n += 1;
                    if n % 100 == 0 {
                        eprintln!("got {n} {note:?}");
                    }
                }
                Ok(Err(e)) => eprintln!("recv error {e:?}"),
                Err(_) => break,
            }
        }
        println!("listener received {n}");
    } else {
        let start = Instant::now();
        for k in 0..1000u32 {
            tokio::time::sleep_until((start + Duration::from_millis(5) * k).into()).await;
            store
                .task_insert_many(&TaskInsertParams {
                    tasks: vec![NewTask::new("x", serde_json::json!(k))],
                    now: chrono::Utc::now(),
                })
                .await
                .unwrap();
        }
        println!("producer done");
    }
}
