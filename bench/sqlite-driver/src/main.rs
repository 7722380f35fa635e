//! rusqlite (bundled) vs sqlx-sqlite on offload's write paths: see README.md.

mod common;
mod rusq;
mod sqlx_bench;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use common::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Workload {
    /// a. 20,000 inserts in transactions of 1000.
    Bulk,
    /// b. 2,000 single-insert transactions from 100 concurrent tasks.
    Single,
    /// c. claim 100 + finish 100 until 20,000 tasks are done.
    ClaimFinish,
}

impl Workload {
    const ALL: [Workload; 3] = [Workload::Bulk, Workload::Single, Workload::ClaimFinish];

    fn label(self) -> &'static str {
        match self {
            Workload::Bulk => "a bulk_insert",
            Workload::Single => "b single_insert",
            Workload::ClaimFinish => "c claim_finish",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Workload::Bulk | Workload::Single => "rows/s",
            Workload::ClaimFinish => "tasks/s",
        }
    }

    /// The drivers measured on this workload; the first is rusqlite, the
    /// second the sqlx it is compared with.
    fn drivers(self) -> &'static [Driver] {
        match self {
            Workload::Bulk | Workload::ClaimFinish => &[Driver::Rusqlite, Driver::SqlxPool],
            Workload::Single => &[
                Driver::Rusqlite,
                Driver::SqlxPool,
                Driver::SqlxPool1,
                Driver::SqlxGroup,
            ],
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Driver {
    /// rusqlite, one writer thread with group commit.
    Rusqlite,
    /// sqlx `SqlitePool` (10 connections), a transaction per operation.
    SqlxPool,
    /// sqlx `SqlitePool` with `max_connections(1)`.
    SqlxPool1,
    /// sqlx, one connection in a tokio task with the same group commit.
    SqlxGroup,
}

impl Driver {
    fn label(self) -> &'static str {
        match self {
            Driver::Rusqlite => "rusqlite",
            Driver::SqlxPool => "sqlx",
            Driver::SqlxPool1 => "sqlx-pool1",
            Driver::SqlxGroup => "sqlx-group",
        }
    }
}

struct Args {
    runs: usize,
}

fn args() -> Result<Args> {
    let mut runs = 5;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => {
                let v = it.next().context("--runs needs a value")?;
                runs = v.parse().with_context(|| format!("--runs {v}"))?;
            }
            "-h" | "--help" => {
                println!(
                    "usage: sqlite-driver-bench [--runs N]   (N >= 1, default 5)\n\
                     Each run measures every (driver, workload) once on a fresh\n\
                     database in a temporary directory; prints medians."
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    Ok(Args { runs })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

fn remove_db(path: &Path) -> Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {p:?}")),
        }
    }
    Ok(())
}

struct Data {
    bulk: Vec<NewTask>,
    single: Vec<NewTask>,
    preload: Vec<NewTask>,
}

/// One measurement on a fresh database; returns ops/s.
async fn measure(dir: &Path, tag: &str, w: Workload, d: Driver, data: &Data) -> Result<f64> {
    let path: PathBuf = dir.join(format!("{tag}.db"));
    remove_db(&path)?;
    let rate = match w {
        Workload::Bulk => {
            create_db(&path, &[])?;
            let rate = match d {
                Driver::Rusqlite => rusq::bulk(&path, data.bulk.clone()).await?,
                Driver::SqlxPool => sqlx_bench::bulk(&path, data.bulk.clone()).await?,
                other => bail!("{other:?} does not run {w:?}"),
            };
            expect_count(&path, "status = 'pending'", data.bulk.len())?;
            rate
        }
        Workload::Single => {
            create_db(&path, &[])?;
            let rate = match d {
                Driver::Rusqlite => rusq::single(&path, data.single.clone()).await?,
                Driver::SqlxPool => {
                    sqlx_bench::single_pool(&path, data.single.clone(), sqlx_bench::POOL_SIZE)
                        .await?
                }
                Driver::SqlxPool1 => sqlx_bench::single_pool(&path, data.single.clone(), 1).await?,
                Driver::SqlxGroup => sqlx_bench::single_group(&path, data.single.clone()).await?,
            };
            expect_count(&path, "status = 'pending'", data.single.len())?;
            rate
        }
        Workload::ClaimFinish => {
            create_db(&path, &data.preload)?;
            let n = data.preload.len();
            let rate = match d {
                Driver::Rusqlite => rusq::claim_finish(&path, n).await?,
                Driver::SqlxPool => sqlx_bench::claim_finish(&path, n).await?,
                other => bail!("{other:?} does not run {w:?}"),
            };
            expect_count(&path, "status = 'completed' AND attempt = 1", n)?;
            rate
        }
    };
    remove_db(&path)?;
    Ok(rate)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if !n.is_multiple_of(2) {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn thousands(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = args()?;
    let dir = tempfile::Builder::new()
        .prefix("sqlite-driver-bench-")
        .tempdir()
        .context("creating the temporary directory")?;

    let probe = dir.path().join("probe.db");
    create_db(&probe, &[])?;
    let sqlx_version = sqlx_bench::sqlite_version(&probe).await?;
    remove_db(&probe)?;
    println!(
        "SQLite {} (rusqlite) / {} (sqlx); WAL, synchronous=NORMAL, busy_timeout={} ms; \
         {} runs, {} CPUs, loadavg {}",
        rusqlite::version(),
        sqlx_version,
        BUSY_TIMEOUT.as_millis(),
        args.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );

    let data = Data {
        bulk: tasks(1, BULK_ROWS),
        single: tasks(2, SINGLE_ROWS),
        preload: tasks(3, BULK_ROWS),
    };

    // results[workload][driver] = one ops/s per run
    let mut results: Vec<Vec<Vec<f64>>> = Workload::ALL
        .iter()
        .map(|w| vec![Vec::new(); w.drivers().len()])
        .collect();
    for run in 0..args.runs {
        for (wi, w) in Workload::ALL.iter().enumerate() {
            let drivers = w.drivers();
            // Rotate the order every run so neither driver always goes first.
            for k in 0..drivers.len() {
                let di = (k + run) % drivers.len();
                let d = drivers[di];
                let tag = format!("run{run}-{}-{wi}", d.label());
                let rate = measure(dir.path(), &tag, *w, d, &data)
                    .await
                    .with_context(|| format!("{} / {} (run {})", d.label(), w.label(), run + 1))?;
                eprintln!(
                    "run {}: {:<11} {:<16} {:>10} {}",
                    run + 1,
                    d.label(),
                    w.label(),
                    thousands(rate),
                    w.unit()
                );
                results[wi][di].push(rate);
            }
        }
    }

    println!();
    println!(
        "{:<11} {:<16} {:>12}  {:<8} runs",
        "driver", "workload", "median ops/s", "unit"
    );
    for (wi, w) in Workload::ALL.iter().enumerate() {
        for (di, d) in w.drivers().iter().enumerate() {
            let v = &results[wi][di];
            let runs: Vec<String> = v.iter().map(|x| thousands(*x)).collect();
            let spread = if v.len() > 1 {
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                format!(
                    "  (spread {:+.0} % / {:+.0} % of median)",
                    (lo / median(v) - 1.0) * 100.0,
                    (hi / median(v) - 1.0) * 100.0
                )
            } else {
                String::new()
            };
            println!(
                "{:<11} {:<16} {:>12}  {:<8} {}{}",
                d.label(),
                w.label(),
                thousands(median(v)),
                w.unit(),
                runs.join(" / "),
                spread
            );
        }
    }
    println!();
    println!("ratios of medians (rusqlite / other):");
    for (wi, w) in Workload::ALL.iter().enumerate() {
        let base = median(&results[wi][0]);
        for (di, d) in w.drivers().iter().enumerate().skip(1) {
            println!(
                "  {:<16} rusqlite / {:<11} {:>6.2}x",
                w.label(),
                d.label(),
                base / median(&results[wi][di])
            );
        }
    }
    println!("loadavg at the end: {}", loadavg());
    dir.close().context("removing the temporary directory")?;
    Ok(())
}
