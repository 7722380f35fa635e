//! Wake-ups across processes with LISTEN/NOTIFY.
//!
//! Every write that other processes may wait for sends one `pg_notify` on
//! the schema's channel inside its own statement, so it is delivered
//! exactly when the change commits. The payload is lines of text: the
//! sender's instance id first, then `a|QUEUE` (tasks became ready),
//! `c|ID,ID,…` or `c|*` (tasks changed) and `x|ID,…` (abort requested).
//! Each store runs one listening connection; it skips its own instance's
//! payloads (those reach local subscribers straight from the write),
//! re-connects with back-off after a connection loss, and then tells local
//! subscribers that anything may have changed, since notifications sent
//! while it was away are gone.

use std::sync::{Arc, Weak};
use std::time::Duration;

use offload_store::{Notification, Notifier, NotifyHub};
use offload_types::TaskId;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;

/// Most ids a `c|` or `x|` line lists; more become `c|*`.
pub(crate) const MAX_IDS: usize = 150;

/// Longest payload body sent as it is.
const MAX_BODY: usize = 7000;

/// The channel of a schema.
pub(crate) fn channel(schema: &str) -> String {
    format!("offload_{schema}")
}

/// Builds payload lines.
#[derive(Debug, Default)]
pub(crate) struct Payload {
    lines: Vec<String>,
}

impl Payload {
    /// Tasks became ready in `queue`.
    pub(crate) fn available(&mut self, queue: &str) -> &mut Self {
        let line = format!("a|{queue}");
        if !self.lines.contains(&line) {
            self.lines.push(line);
        }
        self
    }

    /// These tasks changed.
    pub(crate) fn changed(&mut self, ids: &[TaskId]) -> &mut Self {
        self.lines.push(id_line('c', ids));
        self
    }

    /// These running tasks were asked to stop.
    pub(crate) fn abort_requested(&mut self, ids: &[TaskId]) -> &mut Self {
        self.lines.push(id_line('x', ids));
        self
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The lines, without the instance line the statement prepends.
    /// Kept well under PostgreSQL's 8000-byte payload limit: a longer body
    /// becomes "anything may have changed".
    pub(crate) fn body(&self) -> String {
        let body = self.lines.join("\n");
        if body.len() > MAX_BODY {
            "a|*\nc|*".to_owned()
        } else {
            body
        }
    }
}

fn id_line(kind: char, ids: &[TaskId]) -> String {
    if ids.len() > MAX_IDS && kind == 'c' {
        return "c|*".to_owned();
    }
    let list: Vec<String> = ids.iter().take(MAX_IDS).map(ToString::to_string).collect();
    format!("{kind}|{}", list.join(","))
}

/// Reads a payload: `None` when it is this instance's own.
pub(crate) fn parse(payload: &str, instance: &str) -> Option<Vec<Notification>> {
    let mut lines = payload.lines();
    if lines.next()? == instance {
        return None;
    }
    let ids = |list: &str| -> Vec<TaskId> { list.split(',').filter_map(|s| s.parse().ok()).collect() };
    Some(
        lines
            .filter_map(|line| {
                let (kind, rest) = line.split_once('|')?;
                Some(match kind {
                    "a" if rest == "*" => Notification::Available { queue: None },
                    "a" => Notification::Available {
                        queue: Some(rest.to_owned()),
                    },
                    "c" if rest == "*" => Notification::Changed { ids: None },
                    "c" => Notification::Changed {
                        ids: Some(ids(rest)),
                    },
                    "x" => Notification::AbortRequested { ids: ids(rest) },
                    _ => return None,
                })
            })
            .collect(),
    )
}

/// The store's notifier: the in-process hub, fed by the store's own writes
/// and by the listener task.
#[derive(Debug)]
pub(crate) struct PgNotifier {
    pub(crate) hub: NotifyHub,
}

impl Notifier for PgNotifier {
    fn subscribe(&self) -> broadcast::Receiver<Notification> {
        self.hub.subscribe()
    }
}

/// Listens on `channel` until `alive` can no longer be upgraded (the store
/// was dropped), forwarding other instances' notifications into `hub`.
pub(crate) async fn listen<T: Send + Sync + 'static>(
    pool: PgPool,
    channel: String,
    instance: String,
    hub: NotifyHub,
    alive: Weak<T>,
) {
    let mut backoff = Duration::from_millis(100);
    'connect: loop {
        if alive.upgrade().is_none() {
            return;
        }
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the notification listener; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if let Err(e) = listener.listen(&channel).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        }
        backoff = Duration::from_millis(100);
        // Anything sent before LISTEN took effect was missed.
        hub.send(Notification::Available { queue: None });
        hub.send(Notification::Changed { ids: None });
        loop {
            // Wake now and then to notice that the store is gone.
            let next = tokio::time::timeout(Duration::from_secs(1), listener.try_recv()).await;
            if alive.upgrade().is_none() {
                return;
            }
            match next {
                Err(_) => continue,
                Ok(Ok(Some(n))) => {
                    if let Some(notes) = parse(n.payload(), &instance) {
                        for note in notes {
                            hub.send(note);
                        }
                    }
                }
                Ok(Ok(None)) | Ok(Err(_)) => {
                    tracing::warn!("the notification listener lost its connection; reconnecting");
                    tokio::time::sleep(backoff).await;
                    continue 'connect;
                }
            }
        }
    }
}

/// Starts [`listen`] on the current runtime.
pub(crate) fn spawn_listener<T: Send + Sync + 'static>(
    pool: PgPool,
    channel: String,
    instance: String,
    hub: NotifyHub,
    alive: &Arc<T>,
) {
    tokio::spawn(listen(pool, channel, instance, hub, Arc::downgrade(alive)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_skip_their_own_instance() {
        let a = TaskId::new();
        let b = TaskId::new();
        let mut p = Payload::default();
        p.available("emails").available("emails").changed(&[a, b]).abort_requested(&[a]);
        let text = format!("other\n{}", p.body());
        let notes = parse(&text, "me").unwrap();
        assert_eq!(
            notes,
            vec![
                Notification::Available {
                    queue: Some("emails".into())
                },
                Notification::Changed {
                    ids: Some(vec![a, b])
                },
                Notification::AbortRequested { ids: vec![a] },
            ]
        );
        assert!(parse(&format!("me\n{}", p.body()), "me").is_none());
    }

    #[test]
    fn long_id_lists_become_anything_changed() {
        let ids: Vec<TaskId> = (0..MAX_IDS + 1).map(|_| TaskId::new()).collect();
        let mut p = Payload::default();
        p.changed(&ids);
        assert_eq!(p.body(), "c|*");
        assert!(p.body().len() < 8000);
    }
}
