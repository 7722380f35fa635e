//! [`Notifier`]: how a process learns that "something changed" without
//! polling. Notifications are hints: they may be coalesced or (across
//! processes) lost, so every waiter also keeps a slow safety poll.

use offload_types::TaskId;
use tokio::sync::broadcast;

/// A hint that the store changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// Tasks became ready in `queue` (`None`: in some queue).
    Available {
        /// The queue, when known.
        queue: Option<String>,
    },
    /// These tasks changed status, progress or output (`None`: any task may have).
    Changed {
        /// The tasks, when known.
        ids: Option<Vec<TaskId>>,
    },
    /// Someone asked these running tasks to stop.
    AbortRequested {
        /// The tasks.
        ids: Vec<TaskId>,
    },
}

impl Notification {
    /// Whether this notification may concern task `id`.
    pub fn concerns(&self, id: TaskId) -> bool {
        match self {
            Notification::Available { .. } => false,
            Notification::Changed { ids: None } => true,
            Notification::Changed { ids: Some(ids) } | Notification::AbortRequested { ids } => {
                ids.contains(&id)
            }
        }
    }
}

/// Where notifications come from. Stores emit them after each commit,
/// including (where the backend can) for changes made by other processes.
pub trait Notifier: Send + Sync {
    /// A receiver of every notification from now on. A lagging receiver
    /// sees `RecvError::Lagged`, which its owner treats as "anything changed".
    fn subscribe(&self) -> broadcast::Receiver<Notification>;
}

/// An in-process fan-out of notifications, the building block backends use.
#[derive(Debug, Clone)]
pub struct NotifyHub {
    tx: broadcast::Sender<Notification>,
}

impl NotifyHub {
    /// A hub that buffers up to 1024 notifications per slow receiver.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(1024);
        Self { tx }
    }

    /// Sends to every current subscriber (none is fine).
    pub fn send(&self, n: Notification) {
        let _ = self.tx.send(n);
    }

    /// Whether anyone listens.
    pub fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0
    }
}

impl Default for NotifyHub {
    fn default() -> Self {
        Self::new()
    }
}

impl Notifier for NotifyHub {
    fn subscribe(&self) -> broadcast::Receiver<Notification> {
        self.tx.subscribe()
    }
}
