//! `offload store`: commands on a whole store.
//!
//! `offload store copy --from URL --to URL` copies every task, with its
//! attempt history, from one store to another (e.g. the embedded SQLite
//! file to PostgreSQL): ids, statuses, timestamps, output, errors and
//! progress are kept. It reads the source in pages, in id order, and
//! writes each page in one all-or-nothing import; a task whose id the
//! destination holds already is skipped and left as it is, so a copy that
//! stopped half-way is finished by running it again.
//!
//! It refuses, before anything is written, to copy from a store whose
//! workers are running tasks (running tasks whose lease has not expired):
//! their results would land in the source after the copy. A running task
//! whose lease expired (its worker died) is copied as it is; the
//! destination's workers rescue it like any other.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use offload::{Status, Store, TaskFilter, TaskListParams};
use offload_store::{MAX_EXPORT_PAGE, TaskCountParams, TaskExportParams, TaskImportParams};
use serde::Serialize;

use crate::failure::{Failure, code};
use crate::globals::Globals;
use crate::output;

/// Shown under `offload store copy --help`.
pub(crate) const COPY_HELP: &str = "\
Examples:
  offload store copy --from sqlite://offload.db --to postgres://app@db.internal:5432/app
  offload store copy --from sqlite://offload.db --to sqlite://backup.db --json

Stop the source's workers first: a copy is refused while running tasks hold live leases.
Tasks already in the destination (same id) are skipped, so running the copy again is safe.

Exit codes: 0 copied, 1 refused (workers are running tasks) or a database error,
2 bad input (e.g. --from and --to name the same store).";

/// Tasks per page when `--page-size` is not given.
const DEFAULT_PAGE: u32 = 1000;

/// Arguments of `offload store`.
#[derive(Debug, clap::Args)]
pub(crate) struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

/// The `offload store` subcommands.
#[derive(Debug, clap::Subcommand)]
enum StoreCommand {
    /// Copy every task, with its history, from one store to another.
    #[command(after_help = COPY_HELP)]
    Copy(CopyArgs),
}

/// Arguments of `offload store copy`.
#[derive(Debug, clap::Args)]
pub(crate) struct CopyArgs {
    /// The store to copy from (a sqlite:// file must exist).
    #[arg(long, value_name = "URL")]
    from: String,
    /// The store to copy to (a new SQLite file is created).
    #[arg(long, value_name = "URL")]
    to: String,
    /// Tasks read and written per round-trip (1 to 10000).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PAGE,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_EXPORT_PAGE)))]
    page_size: u32,
}

/// Runs `offload store`.
pub(crate) async fn run(args: StoreArgs, globals: &Globals) -> anyhow::Result<()> {
    match args.command {
        StoreCommand::Copy(args) => copy(args, globals).await,
    }
}

/// What a copy did, as `--json` prints it.
#[derive(Debug, Default, Serialize)]
struct CopyReport {
    /// The source (without its password).
    from: String,
    /// The destination (without its password).
    to: String,
    /// Tasks written to the destination.
    copied: u64,
    /// Tasks the destination held already (same id), left unchanged.
    skipped: u64,
    /// Tasks read from the source: `copied + skipped`.
    total: u64,
    /// Running tasks whose lease had expired, copied as running (the
    /// destination's workers rescue them).
    expired_leases: u64,
}

async fn copy(args: CopyArgs, globals: &Globals) -> anyhow::Result<()> {
    let (from, to) = (args.from.trim(), args.to.trim());
    for (flag, url) in [("--from", from), ("--to", to)] {
        if url.is_empty() {
            return Err(Failure::usage(format!("{flag} needs a database URL")));
        }
    }
    if same_store(from, to) {
        return Err(Failure::usage(format!(
            "--from and --to name the same store ({}); copy to another database",
            redact(from)
        )));
    }
    let source = offload::open(&existing_only(from))
        .await
        .with_context(|| format!("cannot open the source database {}", redact(from)))?;
    let running = running_leases(source.as_ref(), Utc::now())
        .await
        .context("cannot read the source's running tasks")?;
    if running.live > 0 {
        return Err(Failure::with_code(
            code::FAILED,
            format!(
                "the source {} has {} running task{} whose lease has not expired (e.g. {}): \
                 its workers are running them; stop the workers (or wait for their leases to \
                 expire) and copy again; nothing was copied",
                redact(from),
                running.live,
                if running.live == 1 { "" } else { "s" },
                running.example.unwrap_or_default(),
            ),
        ));
    }
    let destination = offload::open(to)
        .await
        .with_context(|| format!("cannot open the destination database {}", redact(to)))?;
    if source.describe() == destination.describe() {
        return Err(Failure::usage(format!(
            "--from and --to name the same store ({}); copy to another database",
            source.describe()
        )));
    }
    let expected = count_all(source.as_ref())
        .await
        .context("cannot count the source's tasks")?;
    let bar = progress_bar(expected, globals.json);
    let mut report = CopyReport {
        from: redact(from),
        to: redact(to),
        expired_leases: running.expired,
        ..CopyReport::default()
    };
    let copied = copy_pages(&source, &destination, args.page_size, &bar, &mut report).await;
    bar.finish_and_clear();
    copied.with_context(|| {
        format!(
            "the copy stopped after {} of about {expected} tasks; run it again to copy the \
             rest (tasks already copied are skipped)",
            report.total
        )
    })?;
    if globals.json {
        return output::print_json(&report);
    }
    if report.expired_leases > 0 {
        output::note(&format!(
            "{} running task{} whose lease had expired {} copied as running; the \
             destination's workers will rescue {}",
            report.expired_leases,
            if report.expired_leases == 1 { "" } else { "s" },
            if report.expired_leases == 1 {
                "was"
            } else {
                "were"
            },
            if report.expired_leases == 1 {
                "it"
            } else {
                "them"
            },
        ));
    }
    output::print(&format!(
        "copied {} task{} from {} to {} ({} skipped as already present, {} in the source)",
        report.copied,
        if report.copied == 1 { "" } else { "s" },
        report.from,
        report.to,
        report.skipped,
        report.total
    ))
}

/// Reads the source page by page and imports each page; counts into `report`.
async fn copy_pages(
    source: &Arc<dyn Store>,
    destination: &Arc<dyn Store>,
    page_size: u32,
    bar: &indicatif::ProgressBar,
    report: &mut CopyReport,
) -> anyhow::Result<()> {
    let mut after = None;
    loop {
        let records = source
            .task_export(&TaskExportParams {
                after,
                limit: page_size,
            })
            .await
            .context("cannot read tasks from the source")?;
        let Some(last) = records.last() else {
            return Ok(());
        };
        after = Some(last.task.id);
        let read = records.len() as u64;
        let full = records.len() >= page_size as usize;
        let result = destination
            .task_import(&TaskImportParams { records })
            .await
            .context("cannot write tasks to the destination")?;
        report.copied += result.inserted;
        report.skipped += result.skipped;
        report.total += read;
        bar.inc(read);
        if !full {
            return Ok(());
        }
    }
}

/// The source's running tasks: how many hold a live lease (with one of
/// them as an example), and how many have an expired one.
#[derive(Debug, Default)]
struct Running {
    live: u64,
    expired: u64,
    example: Option<String>,
}

async fn running_leases(store: &dyn Store, now: DateTime<Utc>) -> anyhow::Result<Running> {
    let mut running = Running::default();
    let mut cursor = None;
    loop {
        let page = store
            .task_list(&TaskListParams {
                filter: TaskFilter {
                    statuses: vec![Status::Running],
                    ..TaskFilter::default()
                },
                cursor,
                limit: 1000,
            })
            .await?;
        for task in &page.tasks {
            // A running task without an expiry is treated as held.
            if task.lease_expires_at.is_none_or(|t| t > now) {
                running.live += 1;
                running
                    .example
                    .get_or_insert_with(|| format!("task {} ({})", task.id, task.name));
            } else {
                running.expired += 1;
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(running),
        }
    }
}

/// How many tasks the store holds.
async fn count_all(store: &dyn Store) -> anyhow::Result<u64> {
    let counts = store.task_count(&TaskCountParams::default()).await?;
    Ok(counts.iter().map(|c| c.count).sum())
}

fn progress_bar(total: u64, json: bool) -> indicatif::ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} tasks copied ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar
}

/// The path of a `sqlite:` URL, without its query.
fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split_once('?').map_or(rest, |(path, _)| path);
    (!path.is_empty()).then_some(path)
}

/// A file path made absolute with symbolic links resolved, as far as it
/// exists (a destination file may not exist yet).
fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match (std::fs::canonicalize(parent), path.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => path.to_path_buf(),
    }
}

/// Whether two URLs name one store: the same text, or two `sqlite:` URLs
/// of the same file however written.
fn same_store(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (sqlite_path(a), sqlite_path(b)) {
        (Some(a), Some(b)) => resolved(Path::new(a)) == resolved(Path::new(b)),
        _ => false,
    }
}

/// The source URL, such that opening it never creates a database: a
/// `sqlite:` URL gets `create=false` unless it says otherwise.
fn existing_only(url: &str) -> String {
    if sqlite_path(url).is_none() {
        return url.to_owned();
    }
    match url.split_once('?') {
        Some((_, query)) if query.split('&').any(|kv| kv.starts_with("create=")) => url.to_owned(),
        Some(_) => format!("{url}&create=false"),
        None => format!("{url}?create=false"),
    }
}

/// The URL without the password of its user part, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/app?schema=x"),
            "postgres://app:***@db:5432/app?schema=x"
        );
        assert_eq!(redact("postgres://app@db/app"), "postgres://app@db/app");
        assert_eq!(redact("sqlite://offload.db"), "sqlite://offload.db");
        assert_eq!(redact("sqlite:///tmp/a@b.db"), "sqlite:///tmp/a@b.db");
    }

    #[test]
    fn the_source_is_never_created() {
        assert_eq!(existing_only("sqlite://a.db"), "sqlite://a.db?create=false");
        assert_eq!(
            existing_only("sqlite://a.db?durability=full"),
            "sqlite://a.db?durability=full&create=false"
        );
        assert_eq!(
            existing_only("sqlite://a.db?create=true"),
            "sqlite://a.db?create=true"
        );
        assert_eq!(existing_only("postgres://h/db"), "postgres://h/db");
    }

    #[test]
    fn one_file_written_two_ways_is_the_same_store() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("a.db");
        let plain = format!("sqlite://{}", file.display());
        let dotted = format!("sqlite://{}/./a.db?durability=full", dir.path().display());
        assert!(same_store(&plain, &dotted));
        assert!(same_store("postgres://h/db", "postgres://h/db"));
        assert!(!same_store(
            &plain,
            &format!("sqlite://{}/b.db", dir.path().display())
        ));
        assert!(!same_store(
            "postgres://h/db?schema=a",
            "postgres://h/db?schema=b"
        ));
    }
}
