//! `offload bench --via http`: `single_enqueue` and `pickup_latency`
//! through `offload serve`'s HTTP API, as a client in another language
//! would use it. For each workload the bench starts this binary as
//! `offload serve --no-worker` on a free loopback port over a fresh bench
//! database, and stops it afterwards.
//!
//! - `single_enqueue`: `BENCH_SINGLE_N` `POST /v1/tasks`, each awaited,
//!   over one kept-alive connection.
//! - `pickup_latency`: a remote worker in this process long-polls
//!   `POST /v1/lease` and completes each task with `POST .../complete`
//!   (its own connection); after it has waited idle for a second,
//!   `BENCH_LATENCY_N` tasks are enqueued over HTTP on a fixed schedule of
//!   `BENCH_LATENCY_RATE` per second, each carrying the wall-clock time
//!   taken just before its call; the latency is the time from there to the
//!   lease answer arriving.
//!
//! Other workloads are skipped with a `NOTE` line.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::time::{sleep_until, timeout};

use super::workloads::{nearest_rank, rate, wall_clock_ms};
use super::{Out, QUEUE, Settings, TASK_NAME, Target, short};

/// How long the server may take to start listening.
const START_LIMIT: Duration = Duration::from_secs(30);

/// A running `offload serve`, stopped (SIGTERM, then SIGKILL) when dropped
/// through [`Server::stop`] or killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    async fn start(url: &str) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this binary to start the server")?;
        let mut child = Command::new(exe)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--no-worker",
                "--database-url",
                url,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start offload serve")?;
        let stderr = child
            .stderr
            .take()
            .context("no stderr from offload serve")?;
        let mut lines = BufReader::new(stderr).lines();
        let base = timeout(START_LIMIT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(rest) = line.split("listening on ").nth(1)
                    && let Some(base) = rest.split_whitespace().next()
                {
                    return anyhow::Ok(base.to_owned());
                }
            }
            bail!("offload serve exited before listening")
        })
        .await
        .context("offload serve did not start listening in time")??;
        // keep reading so the server never blocks on a full pipe
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { child, base })
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Runs the HTTP workloads named in `BENCH_WORKLOADS`.
pub(super) async fn run_all(out: &Out, settings: &Settings, target: &Target) {
    for workload in &settings.workloads {
        let run = match workload.as_str() {
            "single_enqueue" => single_enqueue(out, settings, target).await,
            "pickup_latency" => pickup_latency(out, settings, target).await,
            other => {
                out.note(&format!("workload={other} skipped=not_measured_via_http"));
                continue;
            }
        };
        if let Err(err) = run {
            out.note(&format!(
                "workload={workload} error={:?}",
                short(&format!("{err:#}"))
            ));
        }
    }
}

fn task(i: u64, extra: Option<f64>) -> Value {
    let mut input = json!({ "i": i });
    if let Some(t) = extra {
        input["t"] = json!(t);
    }
    json!({ "name": TASK_NAME, "queue": QUEUE, "input": input })
}

/// One client with one kept-alive connection.
fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .context("cannot build an HTTP client")
}

async fn enqueue(http: &reqwest::Client, base: &str, body: &Value) -> anyhow::Result<()> {
    let r = http
        .post(format!("{base}/v1/tasks"))
        .json(body)
        .send()
        .await?;
    if r.status() != reqwest::StatusCode::CREATED {
        bail!(
            "enqueue answered {}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

async fn single_enqueue(out: &Out, s: &Settings, target: &Target) -> anyhow::Result<()> {
    target.fresh().await?;
    let server = Server::start(&target.url()).await?;
    let http = client()?;
    // the connection is made before the timer starts, as the peers do
    let r = http.get(format!("{}/healthz", server.base)).send().await?;
    r.error_for_status()?;
    let mut done = 0;
    let start = Instant::now();
    let run = timeout(s.timeout, async {
        while done < s.single_n {
            enqueue(&http, &server.base, &task(done, None)).await?;
            done += 1;
        }
        anyhow::Ok(())
    })
    .await;
    let elapsed = start.elapsed().as_secs_f64();
    server.stop().await;
    match run {
        Ok(result) => result?,
        Err(_) => out.note(&format!(
            "workload=single_enqueue timed_out completed={done}/{}",
            s.single_n
        )),
    }
    out.result("single_enqueue", rate(done, elapsed), "jobs/s");
    Ok(())
}

async fn pickup_latency(out: &Out, s: &Settings, target: &Target) -> anyhow::Result<()> {
    target.fresh().await?;
    let server = Server::start(&target.url()).await?;
    let base = server.base.clone();
    let expect = s.latency_n;
    let worker = {
        let http = client()?;
        let base = base.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            while (latencies.len() as u64) < expect {
                let r = http
                    .post(format!("{base}/v1/lease"))
                    .json(&json!({ "queues": [QUEUE], "max": 1, "wait": "30s" }))
                    .send()
                    .await?;
                let answer: Value = r.error_for_status()?.json().await?;
                let now = wall_clock_ms();
                for t in answer["tasks"].as_array().into_iter().flatten() {
                    if let Some(sent) = t["input"]["t"].as_f64() {
                        latencies.push(now - sent);
                    }
                    let id = t["id"].as_str().unwrap_or_default();
                    http.post(format!("{base}/v1/tasks/{id}/complete"))
                        .json(&json!({ "lease_token": t["lease_token"], "output": null }))
                        .send()
                        .await?
                        .error_for_status()?;
                }
            }
            anyhow::Ok(latencies)
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await; // the worker waits idle
    let http = client()?;
    let interval = Duration::from_secs_f64(1.0 / s.latency_rate);
    let start = tokio::time::Instant::now();
    let produced = timeout(s.timeout, async {
        for k in 0..s.latency_n {
            sleep_until(start + interval.mul_f64(k as f64)).await;
            enqueue(&http, &base, &task(k, Some(wall_clock_ms()))).await?;
        }
        anyhow::Ok(())
    })
    .await;
    let collected = timeout(s.timeout, worker).await;
    server.stop().await;
    match produced {
        Ok(result) => result?,
        Err(_) => out.note("workload=pickup_latency enqueue timed_out"),
    }
    let mut latencies = match collected {
        Ok(Ok(Ok(l))) => l,
        Ok(Ok(Err(e))) => return Err(e.context("the remote worker failed")),
        Ok(Err(e)) => bail!("the remote worker stopped: {e}"),
        Err(_) => bail!("the remote worker did not get every task in time"),
    };
    latencies.sort_by(f64::total_cmp);
    for (workload, percent) in [("pickup_latency_p50", 50), ("pickup_latency_p99", 99)] {
        if let Some(value) = nearest_rank(&latencies, percent) {
            out.result(workload, value, "ms");
        }
    }
    Ok(())
}
