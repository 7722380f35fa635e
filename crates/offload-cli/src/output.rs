//! Everything the commands print: plain tables, key/value blocks, JSON for
//! `--json`, and short human times ("3m ago"). Writes never panic: a closed
//! pipe (`offload list | head`) ends the output quietly.

use std::fmt::Write as _;
use std::io::{self, Write};

use chrono::{DateTime, Utc};
use offload::{Progress, Task};
use serde::Serialize;

/// Writes `text` and a newline to stdout. A closed pipe is not an error.
pub(crate) fn print(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out
        .write_all(text.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
    {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// Prints `value` as one line of JSON on stdout.
pub(crate) fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    print(&serde_json::to_string(value)?)
}

/// Prints `value` as indented JSON on stdout (for people).
pub(crate) fn print_json_pretty(value: &impl Serialize) -> anyhow::Result<()> {
    print(&serde_json::to_string_pretty(value)?)
}

/// Writes `error: <message>` as one line on stderr.
pub(crate) fn error_line(message: &str) {
    let one_line = message.replace(['\n', '\r'], " ");
    let _ = writeln!(io::stderr(), "error: {one_line}");
}

/// Writes a line of information on stderr (kept off stdout so scripts can
/// read stdout alone).
pub(crate) fn note(message: &str) {
    let _ = writeln!(io::stderr(), "{message}");
}

/// A plain text table: left-aligned columns two spaces apart.
#[derive(Debug)]
pub(crate) struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub(crate) fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are blank).
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, without a trailing newline.
    pub(crate) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                let w = cell.chars().count();
                match widths.get_mut(i) {
                    Some(slot) => *slot = (*slot).max(w),
                    None => widths.push(w),
                }
            }
        }
        let mut text = String::new();
        let mut line = |cells: &[String]| {
            let mut out = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = cells.get(i).map(String::as_str).unwrap_or("");
                let _ = write!(out, "{cell:<width$}  ");
            }
            text.push_str(out.trim_end());
            text.push('\n');
        };
        line(&self.headers);
        for row in &self.rows {
            line(row);
        }
        text.truncate(text.trim_end().len());
        text
    }
}

/// A UTC time as `2024-05-01 12:34:56`.
pub(crate) fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// An optional time, `-` when absent.
pub(crate) fn opt_time(t: Option<DateTime<Utc>>) -> String {
    t.map(time).unwrap_or_else(|| "-".to_owned())
}

/// How long ago `t` was, shortly: `12s`, `5m`, `3h`, `2d`.
pub(crate) fn age(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds().max(0);
    short_duration(secs)
}

/// Seconds as `12s`, `5m`, `3h`, `2d`.
pub(crate) fn short_duration(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// A std duration as `1.5s` / `2m 30s` style text.
pub(crate) fn duration(d: std::time::Duration) -> String {
    let millis = d.as_millis();
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let secs = d.as_secs();
    if secs < 60 {
        let tenths = d.subsec_millis() / 100;
        return if tenths == 0 {
            format!("{secs}s")
        } else {
            format!("{secs}.{tenths}s")
        };
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    match (h, m, s) {
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

/// `2/3`: attempts made / allowed.
pub(crate) fn attempts(task: &Task) -> String {
    format!("{}/{}", task.attempt, task.max_attempts)
}

/// Progress as `40%` (and the message when `with_message`), `-` when none.
pub(crate) fn progress(p: Option<&Progress>, with_message: bool) -> String {
    match p {
        None => "-".to_owned(),
        Some(p) => match (&p.message, with_message) {
            (Some(m), true) => format!("{}% {m}", p.percent),
            _ => format!("{}%", p.percent),
        },
    }
}

/// A text bar of `width` cells for `percent`: `[#####.....]`.
pub(crate) fn bar(percent: u8, width: usize) -> String {
    let filled = usize::from(percent.min(100)) * width / 100;
    format!(
        "[{}{}]",
        "#".repeat(filled),
        ".".repeat(width.saturating_sub(filled))
    )
}

/// Cuts `text` to at most `max` characters, marking the cut with `…`.
pub(crate) fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["id", "name"]);
        t.row(vec!["1".into(), "long-name".into()]);
        t.row(vec!["22".into(), "x".into()]);
        assert_eq!(t.render(), "id  name\n1   long-name\n22  x");
    }

    #[test]
    fn short_times() {
        assert_eq!(short_duration(5), "5s");
        assert_eq!(short_duration(125), "2m");
        assert_eq!(short_duration(7300), "2h");
        assert_eq!(short_duration(200_000), "2d");
        assert_eq!(duration(std::time::Duration::from_millis(1500)), "1.5s");
        assert_eq!(duration(std::time::Duration::from_secs(150)), "2m 30s");
    }

    #[test]
    fn bars_and_clips() {
        assert_eq!(bar(50, 10), "[#####.....]");
        assert_eq!(bar(200, 4), "[####]");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }
}
