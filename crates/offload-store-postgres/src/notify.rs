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

/// Most ids a `c|` or `x|` line lists; more changed ids become `c|*`.
pub(crate) const MAX_IDS: usize = 120;

/// Longest payload body sent as it is.
const MAX_BODY: usize = 7000;

/// The channel of a schema.
pub(crate) fn channel(schema: &str) -> String {
    format!("offload_{schema}")
}

/// What one payload says, merged from any number of writes.
#[derive(Debug, Default, Clone)]
pub(crate) struct Payload {
    /// Queues with new ready tasks (`a|QUEUE`).
    queues: Vec<String>,
    /// Some queue, unknown which (`a|*`).
    any_queue: bool,
    /// Changed tasks (`c|IDS`).
    changed: Vec<TaskId>,
    /// More changed than listed (`c|*`).
    changed_all: bool,
    /// Abort requests (`x|IDS`).
    aborts: Vec<TaskId>,
}

impl Payload {
    /// Tasks became ready in `queue`.
    pub(crate) fn available(&mut self, queue: &str) -> &mut Self {
        if !self.queues.iter().any(|q| q == queue) {
            self.queues.push(queue.to_owned());
        }
        self
    }

    /// Tasks became ready in some queue.
    pub(crate) fn available_somewhere(&mut self) -> &mut Self {
        self.any_queue = true;
        self
    }

    /// These tasks changed.
    pub(crate) fn changed(&mut self, ids: &[TaskId]) -> &mut Self {
        if !self.changed_all {
            self.changed.extend_from_slice(ids);
            if self.changed.len() > MAX_IDS {
                self.changed_all = true;
                self.changed.clear();
            }
        }
        self
    }

    /// These running tasks were asked to stop.
    pub(crate) fn abort_requested(&mut self, ids: &[TaskId]) -> &mut Self {
        self.aborts.extend_from_slice(ids);
        self
    }

    /// Adds everything `other` says.
    pub(crate) fn merge(&mut self, other: Payload) {
        for q in &other.queues {
            self.available(q);
        }
        self.any_queue |= other.any_queue;
        if other.changed_all {
            self.changed_all = true;
            self.changed.clear();
        } else {
            self.changed(&other.changed);
        }
        self.aborts.extend(other.aborts);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queues.is_empty()
            && !self.any_queue
            && self.changed.is_empty()
            && !self.changed_all
            && self.aborts.is_empty()
    }

    /// The lines, without the instance line the statement prepends.
    /// Kept well under PostgreSQL's 8000-byte payload limit: a longer body
    /// becomes "anything may have changed".
    pub(crate) fn body(&self) -> String {
        let mut lines = Vec::new();
        if self.any_queue {
            lines.push("a|*".to_owned());
        } else {
            lines.extend(self.queues.iter().map(|q| format!("a|{q}")));
        }
        if self.changed_all {
            lines.push("c|*".to_owned());
        } else if !self.changed.is_empty() {
            lines.push(id_line('c', &self.changed));
        }
        for chunk in self.aborts.chunks(MAX_IDS) {
            lines.push(id_line('x', chunk));
        }
        let body = lines.join("\n");
        if body.len() > MAX_BODY {
            "a|*\nc|*".to_owned()
        } else {
            body
        }
    }
}

fn id_line(kind: char, ids: &[TaskId]) -> String {
    let list: Vec<String> = ids.iter().map(ToString::to_string).collect();
    format!("{kind}|{}", list.join(","))
}

/// Spaces out the notifications of hot writes.
///
/// PostgreSQL serialises the commits of transactions that notify (a
/// cluster-wide lock held through the commit's WAL flush), so a `NOTIFY`
/// in every enqueue would undo group commit: measured here, 8 clients
/// inserting one row per transaction reach about a quarter of the rate
/// once each also notifies. So a hot write notifies inline when no other
/// hot write of this store is in flight (nothing to serialise against) or
/// when the store has not notified within [`DEBOUNCE`]; otherwise its
/// payload is merged into a trailing notification sent by a background
/// task once the window ends (after the write has committed, since it is
/// scheduled when the write returns). One caller enqueueing at a time
/// always wakes workers at once; under concurrent load, wake-ups lag by at
/// most the window, while busy workers keep claiming anyway.
#[derive(Debug, Default)]
pub(crate) struct Debounce {
    state: std::sync::Mutex<DebounceState>,
}

#[derive(Debug, Default)]
struct DebounceState {
    last_inline: Option<std::time::Instant>,
    /// Hot writes planned and not yet returned.
    in_flight: usize,
    pending: Payload,
    flush_scheduled: bool,
}

/// A hot write in flight; dropping it ends the write for [`Debounce`].
#[derive(Debug)]
pub(crate) struct Flight(Arc<Debounce>);

impl Drop for Flight {
    fn drop(&mut self) {
        if let Ok(mut st) = self.0.state.lock() {
            st.in_flight = st.in_flight.saturating_sub(1);
        }
    }
}

/// The notification window of hot writes.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(5);

/// What a hot write does with its payload.
#[derive(Debug)]
pub(crate) enum Plan {
    /// Send this (the write's own payload plus anything pending) inline.
    Inline(Payload),
    /// Merged into the trailing notification; call [`Debounce::schedule`]
    /// once the write has committed.
    Deferred,
}

impl Debounce {
    /// Decides for a write about to run. The write counts as in flight
    /// until the returned [`Flight`] is dropped.
    pub(crate) fn plan(self: &Arc<Self>, p: Payload) -> (Plan, Flight) {
        let flight = Flight(self.clone());
        let Ok(mut st) = self.state.lock() else {
            return (Plan::Inline(p), flight);
        };
        st.in_flight += 1;
        let now = std::time::Instant::now();
        let quiet = st.in_flight == 1
            || st
                .last_inline
                .is_none_or(|t| now.duration_since(t) >= DEBOUNCE);
        let plan = if quiet {
            st.last_inline = Some(now);
            let mut all = std::mem::take(&mut st.pending);
            all.merge(p);
            Plan::Inline(all)
        } else {
            st.pending.merge(p);
            Plan::Deferred
        };
        (plan, flight)
    }

    /// Puts a payload back (its write failed before sending it), so the
    /// trailing notification carries it.
    pub(crate) fn restore(&self, p: Payload) {
        if let Ok(mut st) = self.state.lock() {
            st.pending.merge(p);
        }
    }

    /// Takes what is pending if a flush should be scheduled now.
    fn claim_flush(&self) -> Option<Duration> {
        let mut st = self.state.lock().ok()?;
        if st.flush_scheduled || st.pending.is_empty() {
            return None;
        }
        st.flush_scheduled = true;
        let waited = st.last_inline.map(|t| t.elapsed()).unwrap_or(DEBOUNCE);
        Some(DEBOUNCE.saturating_sub(waited))
    }

    fn take_for_flush(&self) -> Payload {
        match self.state.lock() {
            Ok(mut st) => {
                st.flush_scheduled = false;
                st.last_inline = Some(std::time::Instant::now());
                std::mem::take(&mut st.pending)
            }
            Err(_) => Payload::default(),
        }
    }

    /// After a deferred write committed: makes sure a trailing
    /// notification goes out when the window ends.
    pub(crate) fn schedule(self: &Arc<Self>, pool: &PgPool, channel: &str, instance: &str) {
        let Some(delay) = self.claim_flush() else {
            return;
        };
        let this = self.clone();
        let pool = pool.clone();
        let channel = channel.to_owned();
        let instance = instance.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let p = this.take_for_flush();
            if p.is_empty() {
                return;
            }
            let text = format!("{instance}\n{}", p.body());
            if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(&channel)
                .bind(&text)
                .execute(&pool)
                .await
            {
                tracing::debug!(error = %e, "a trailing notification was not sent");
            }
        });
    }
}

/// Reads a payload: `None` when it is this instance's own.
pub(crate) fn parse(payload: &str, instance: &str) -> Option<Vec<Notification>> {
    let mut lines = payload.lines();
    if lines.next()? == instance {
        return None;
    }
    let ids =
        |list: &str| -> Vec<TaskId> { list.split(',').filter_map(|s| s.parse().ok()).collect() };
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
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
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
        if let Some(r) = ready.take() {
            let _ = r.send(());
        }
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

/// How long opening a store waits for its listener's first `LISTEN`.
const LISTEN_READY_WAIT: Duration = Duration::from_secs(5);

/// Starts [`listen`] on the current runtime and waits (a bounded time)
/// until it listens, so a subscriber that subscribes once the store is
/// open hears every later notification of other processes.
pub(crate) async fn spawn_listener<T: Send + Sync + 'static>(
    pool: PgPool,
    channel: String,
    instance: String,
    hub: NotifyHub,
    alive: &Arc<T>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(listen(
        pool,
        channel,
        instance,
        hub,
        Arc::downgrade(alive),
        tx,
    ));
    if tokio::time::timeout(LISTEN_READY_WAIT, rx).await.is_err() {
        tracing::warn!("the notification listener is not connected yet; it keeps trying");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_skip_their_own_instance() {
        let a = TaskId::new();
        let b = TaskId::new();
        let mut p = Payload::default();
        p.available("emails")
            .available("emails")
            .changed(&[a, b])
            .abort_requested(&[a]);
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
        let mut q = Payload::default();
        q.changed(&ids[..MAX_IDS]);
        assert!(q.body().len() < 8000);
        let mut many = Payload::default();
        for i in 0..200 {
            many.available(&format!("{i:0>100}"));
        }
        assert_eq!(many.body(), "a|*\nc|*");
    }

    #[test]
    fn concurrent_hot_writes_notify_inline_once_per_window() {
        let d = Arc::new(Debounce::default());
        let mut first = Payload::default();
        first.available("a");
        let (plan, first_flight) = d.plan(first);
        assert!(matches!(plan, Plan::Inline(_)));
        let mut second = Payload::default();
        second.available("b");
        let (plan, second_flight) = d.plan(second);
        assert!(
            matches!(plan, Plan::Deferred),
            "the first is still in flight"
        );
        assert!(d.claim_flush().is_some());
        assert!(d.claim_flush().is_none(), "one flush at a time");
        let flushed = d.take_for_flush();
        assert_eq!(flushed.body(), "a|b");
        drop(second_flight);
        std::thread::sleep(DEBOUNCE);
        let mut third = Payload::default();
        third.available("c");
        match d.plan(third) {
            (Plan::Inline(p), _) => assert_eq!(p.body(), "a|c"),
            (Plan::Deferred, _) => panic!("a quiet window notifies inline"),
        }
        drop(first_flight);
    }

    #[test]
    fn a_write_with_none_other_in_flight_notifies_inline() {
        let d = Arc::new(Debounce::default());
        for q in ["a", "b", "c"] {
            let mut p = Payload::default();
            p.available(q);
            let (plan, flight) = d.plan(p);
            assert!(matches!(plan, Plan::Inline(_)), "{q}");
            drop(flight);
        }
    }
}
