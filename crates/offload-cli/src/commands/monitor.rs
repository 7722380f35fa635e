//! `offload monitor`: a live terminal view of the queue (ratatui +
//! crossterm) — counts by status, counts by name × status, throughput
//! (tasks finished per second, from the change of the finished counts
//! between refreshes) and the running tasks with progress bars.
//!
//! `q`, Esc or Ctrl-C quits; the terminal is restored on every way out.
//! `--once` prints one plain-text snapshot instead (no terminal needed),
//! and `--json` one JSON snapshot.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use offload::{Client, Status, Task, TaskFilter, TaskListParams};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};
use serde::Serialize;

use crate::commands::duration_arg;
use crate::failure::Failure;
use crate::globals::Globals;
use crate::output::{self, Table as TextTable};

/// Most running tasks shown.
const RUNNING_SHOWN: u32 = 100;

/// Arguments of `offload monitor`.
#[derive(Debug, clap::Args)]
pub(crate) struct MonitorArgs {
    /// Time between refreshes.
    #[arg(long, default_value = "1s", value_name = "DURATION", value_parser = duration_arg)]
    interval: Duration,
    /// Print one plain-text snapshot and exit.
    #[arg(long)]
    once: bool,
}

/// One look at the store.
#[derive(Debug, Serialize)]
struct Snapshot {
    at: DateTime<Utc>,
    /// Tasks per status (every status, zero included).
    by_status: BTreeMap<Status, u64>,
    /// Tasks per name, then per status.
    by_name: BTreeMap<String, BTreeMap<Status, u64>>,
    /// Tasks finished per second since the previous snapshot.
    throughput: Option<f64>,
    /// Running tasks, newest first.
    running: Vec<Task>,
}

impl Snapshot {
    async fn take(client: &Client) -> anyhow::Result<Self> {
        let counts = client.count(TaskFilter::default()).await?;
        let mut by_status: BTreeMap<Status, u64> = Status::ALL.iter().map(|s| (*s, 0)).collect();
        let mut by_name: BTreeMap<String, BTreeMap<Status, u64>> = BTreeMap::new();
        for c in counts {
            *by_status.entry(c.status).or_default() += c.count;
            *by_name
                .entry(c.name)
                .or_default()
                .entry(c.status)
                .or_default() += c.count;
        }
        let running = client
            .list(TaskListParams {
                filter: TaskFilter {
                    statuses: vec![Status::Running],
                    ..TaskFilter::default()
                },
                cursor: None,
                limit: RUNNING_SHOWN,
            })
            .await?
            .tasks;
        Ok(Self {
            at: Utc::now(),
            by_status,
            by_name,
            throughput: None,
            running,
        })
    }

    fn finished(&self) -> u64 {
        self.by_status
            .iter()
            .filter(|(s, _)| s.is_terminal())
            .map(|(_, n)| n)
            .sum()
    }

    /// Sets the throughput from the previous snapshot (purges can shrink
    /// the counts; that is not negative throughput).
    fn since(mut self, prev: &Snapshot, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64();
        if secs > 0.0 {
            let done = self.finished().saturating_sub(prev.finished());
            self.throughput = Some(count_f64(done) / secs);
        }
        self
    }

    /// The plain-text view (`--once`).
    fn text(&self, database: &str) -> String {
        let mut out = format!(
            "offload monitor  {}  {}\n\n",
            database,
            output::time(self.at)
        );
        let mut t = TextTable::new(&["STATUS", "COUNT"]);
        for (status, n) in &self.by_status {
            t.row(vec![status.to_string(), n.to_string()]);
        }
        out.push_str(&t.render());
        out.push_str("\n\n");
        if let Some(tp) = self.throughput {
            out.push_str(&format!("throughput: {tp:.1} tasks/s\n\n"));
        }
        if self.by_name.is_empty() {
            out.push_str("no tasks\n");
        } else {
            let mut headers = vec!["NAME"];
            headers.extend(Status::ALL.iter().map(|s| s.as_str()));
            let mut t = TextTable::new(&headers);
            for (name, counts) in &self.by_name {
                let mut row = vec![name.clone()];
                row.extend(
                    Status::ALL
                        .iter()
                        .map(|s| counts.get(s).copied().unwrap_or(0).to_string()),
                );
                t.row(row);
            }
            out.push_str(&t.render());
            out.push('\n');
        }
        out.push_str(&format!("\nrunning: {}\n", self.running.len()));
        if !self.running.is_empty() {
            let mut t = TextTable::new(&["ID", "NAME", "PROGRESS", "", "MESSAGE", "RUNNING FOR"]);
            for task in &self.running {
                let (percent, message) = progress_parts(task);
                t.row(vec![
                    task.id.to_string(),
                    task.name.clone(),
                    output::bar(percent, 20),
                    format!("{percent}%"),
                    output::clip(&message, 40),
                    task.started_at
                        .map(|s| output::age(s, self.at))
                        .unwrap_or_else(|| "-".into()),
                ]);
            }
            out.push_str(&t.render());
            out.push('\n');
        }
        out.truncate(out.trim_end().len());
        out
    }
}

fn progress_parts(task: &Task) -> (u8, String) {
    match &task.progress {
        Some(p) => (p.percent, p.message.clone().unwrap_or_default()),
        None => (0, String::new()),
    }
}

/// A count as a float for rates (exact below 2^53, plenty for task counts).
fn count_f64(n: u64) -> f64 {
    u32::try_from(n).map(f64::from).unwrap_or_else(|_| {
        // split so no lossy cast is needed: high * 2^32 + low
        let high = u32::try_from(n >> 32).unwrap_or(u32::MAX);
        let low = u32::try_from(n & 0xFFFF_FFFF).unwrap_or(u32::MAX);
        f64::from(high) * 4_294_967_296.0 + f64::from(low)
    })
}

/// Runs `offload monitor`.
pub(crate) async fn run(args: MonitorArgs, globals: &Globals) -> anyhow::Result<()> {
    globals.local_only("monitor")?;
    if args.interval < Duration::from_millis(50) {
        return Err(Failure::usage("--interval must be at least 50ms"));
    }
    let client = globals.client().await?;
    if args.once || globals.json {
        let snap = Snapshot::take(&client).await?;
        return if globals.json {
            output::print_json(&snap)
        } else {
            output::print(&snap.text(&globals.database_url))
        };
    }
    if !std::io::stdout().is_terminal() {
        return Err(Failure::usage(
            "monitor needs a terminal; use --once for a plain-text snapshot (or --json)",
        ));
    }
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let result = live(&mut terminal, &client, args.interval, &globals.database_url).await;
    ratatui::restore();
    result
}

/// What the key reader thread reports.
enum Input {
    Quit,
    Redraw,
}

/// The live view's loop: refresh every `interval`, redraw on resize, quit
/// on `q` / Esc / Ctrl-C / SIGINT / SIGTERM.
async fn live(
    terminal: &mut ratatui::DefaultTerminal,
    client: &Client,
    interval: Duration,
    database: &str,
) -> anyhow::Result<()> {
    let (tx, mut keys) = tokio::sync::mpsc::channel(16);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || read_keys(&tx, &stop))
    };
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let outcome = async {
        let mut prev: Option<(Snapshot, Instant)> = None;
        loop {
            let snap = Snapshot::take(client).await?;
            let now = Instant::now();
            let snap = match &prev {
                Some((p, at)) => snap.since(p, now - *at),
                None => snap,
            };
            terminal.draw(|f| draw(f, &snap, database))?;
            prev = Some((snap, now));
            let next = tokio::time::Instant::now() + interval;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => break,
                    key = keys.recv() => match key {
                        Some(Input::Quit) | None => return anyhow::Ok(()),
                        Some(Input::Redraw) => {
                            if let Some((snap, _)) = &prev {
                                terminal.draw(|f| draw(f, snap, database))?;
                            }
                        }
                    },
                    _ = int.recv() => return Ok(()),
                    _ = term.recv() => return Ok(()),
                }
            }
        }
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || reader.join()).await;
    outcome
}

/// Reads terminal events until told to stop (checks every 100 ms).
fn read_keys(tx: &tokio::sync::mpsc::Sender<Input>, stop: &AtomicBool) {
    use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
    while !stop.load(Ordering::Relaxed) {
        match event::poll(Duration::from_millis(100)) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(_) => {
                let _ = tx.blocking_send(Input::Quit);
                return;
            }
        }
        let input = match event::read() {
            Ok(Event::Key(k)) if k.kind == KeyEventKind::Press => match k.code {
                KeyCode::Char('q') | KeyCode::Esc => Some(Input::Quit),
                KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                    Some(Input::Quit)
                }
                _ => None,
            },
            Ok(Event::Resize(..)) => Some(Input::Redraw),
            Ok(_) => None,
            Err(_) => Some(Input::Quit),
        };
        if let Some(input) = input {
            let quit = matches!(input, Input::Quit);
            if tx.blocking_send(input).is_err() || quit {
                return;
            }
        }
    }
}

fn draw(frame: &mut ratatui::Frame<'_>, snap: &Snapshot, database: &str) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let names = u16::try_from(snap.by_name.len().min(20)).unwrap_or(20);
    let [header, statuses, by_name, running, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(3),
        Constraint::Length(names + 3),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());

    let throughput = snap
        .throughput
        .map(|t| format!("{t:.1} tasks/s"))
        .unwrap_or_else(|| "…".into());
    frame.render_widget(
        Paragraph::new(Line::from(format!(
            "offload monitor  {database}  {}  throughput {throughput}",
            output::time(snap.at)
        )))
        .style(bold),
        header,
    );

    let status_line = snap
        .by_status
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect::<Vec<_>>()
        .join("   ");
    frame.render_widget(
        Paragraph::new(status_line).block(Block::bordered().title(" tasks by status ")),
        statuses,
    );

    let mut widths = vec![Constraint::Min(16)];
    widths.extend(Status::ALL.iter().map(|_| Constraint::Length(10)));
    let mut head = vec!["name".to_owned()];
    head.extend(Status::ALL.iter().map(|s| s.to_string()));
    let rows = snap.by_name.iter().map(|(name, counts)| {
        let mut cells = vec![name.clone()];
        cells.extend(
            Status::ALL
                .iter()
                .map(|s| counts.get(s).copied().unwrap_or(0).to_string()),
        );
        Row::new(cells)
    });
    frame.render_widget(
        Table::new(rows, widths)
            .header(Row::new(head).style(bold))
            .block(Block::bordered().title(" by name ")),
        by_name,
    );

    let bar_width = usize::from(running.width / 4).clamp(10, 40);
    let rows = snap.running.iter().map(|task| {
        let (percent, message) = progress_parts(task);
        Row::new(vec![
            task.name.clone(),
            format!("{} {percent:>3}%", output::bar(percent, bar_width)),
            message,
            task.started_at
                .map(|s| output::age(s, snap.at))
                .unwrap_or_else(|| "-".into()),
            task.id.to_string(),
        ])
    });
    let widths = [
        Constraint::Length(20),
        Constraint::Length(u16::try_from(bar_width + 7).unwrap_or(47)),
        Constraint::Min(10),
        Constraint::Length(8),
        Constraint::Length(36),
    ];
    frame.render_widget(
        Table::new(rows, widths)
            .header(Row::new(vec!["name", "progress", "message", "for", "id"]).style(bold))
            .block(Block::bordered().title(format!(" running ({}) ", snap.running.len()))),
        running,
    );
    frame.render_widget(Paragraph::new("q / Esc / Ctrl-C: quit"), footer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_convert_exactly() {
        assert_eq!(count_f64(7), 7.0);
        assert_eq!(count_f64(1 << 40), 1_099_511_627_776.0);
    }
}
