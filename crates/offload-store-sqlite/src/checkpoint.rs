//! The checkpointer: a thread with its own connection that copies the WAL
//! back into the database file (`PRAGMA wal_checkpoint(PASSIVE)`), so the
//! writer thread — the store's bottleneck under load — does not pay for
//! checkpoints inside its commits. The writer pokes it every
//! [`COMMITS_PER_CHECKPOINT`] commits; a passive checkpoint never blocks
//! the writer or readers. The writer keeps SQLite's automatic checkpoint
//! at a high threshold as a fallback, should this thread fall behind.

use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::thread::JoinHandle;

use rusqlite::Connection;

/// Commits between two checkpoints (a commit writes about ten to twenty
/// pages to the WAL under load, so this is roughly SQLite's default of
/// 1000 pages).
pub(crate) const COMMITS_PER_CHECKPOINT: u32 = 64;

/// WAL pages after which the writer checkpoints by itself anyway.
pub(crate) const FALLBACK_AUTOCHECKPOINT: i64 = 10_000;

/// The handle the writer keeps; dropping it ends the thread.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    poke: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
    commits: u32,
}

impl Checkpointer {
    /// Starts the thread on `conn` (a read-write connection to the same
    /// database).
    pub(crate) fn start(conn: Connection) -> std::io::Result<Self> {
        let (poke, rx) = mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("offload-sqlite-checkpoint".to_owned())
            .spawn(move || {
                // Ends when the writer drops its handle.
                while rx.recv().is_ok() {
                    let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                    });
                    match result {
                        Ok((log, done)) => {
                            tracing::trace!(log, done, "checkpoint");
                        }
                        Err(e) => tracing::debug!(error = %e, "checkpoint skipped"),
                    }
                }
            })?;
        Ok(Self {
            poke: Some(poke),
            thread: Some(thread),
            commits: 0,
        })
    }

    /// Counts a commit; every [`COMMITS_PER_CHECKPOINT`] asks for a
    /// checkpoint (never blocks: a request already pending is enough).
    pub(crate) fn committed(&mut self) {
        self.commits += 1;
        if self.commits < COMMITS_PER_CHECKPOINT {
            return;
        }
        self.commits = 0;
        if let Some(poke) = &self.poke {
            match poke.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => self.poke = None,
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.poke.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
