//! Cross-process wake-ups through a folder of Unix datagram sockets.
//!
//! Next to `offload.db` lives `offload.db-wake/`. A process whose store is
//! subscribed to (the first [`Notifier::subscribe`] call) binds a socket
//! `<pid>-<random>.sock` there and runs a [`Listener`] thread that turns
//! received datagrams into local [`Notification`]s. After each commit that
//! produced notifications, the writer's [`Broadcaster`] sends one small
//! datagram (the coalesced notifications as compact JSON) to every other
//! socket in the folder without blocking; a socket that refuses (its
//! process died) is removed. The folder listing is cached and re-read when
//! the folder's modification time changes (a new listener appeared) or
//! every 250 ms, so a burst of commits costs one `stat` each, not a
//! directory scan. Loss is harmless: notifications are hints and waiters
//! keep a slow safety poll.

use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use offload_store::{Notification, Notifier, NotifyHub};
use offload_types::TaskId;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// How long a cached listing of the wake folder is trusted at most.
const LISTING_TTL: Duration = Duration::from_millis(250);
/// Above this many changed ids a datagram says "anything changed" instead.
const MAX_IDS: usize = 128;
/// Largest datagram a listener reads.
const MAX_DATAGRAM: usize = 64 * 1024;

/// What one store instance shares between its writer (sender) and its
/// notifier (listener).
#[derive(Debug)]
pub(crate) struct WakeShared {
    dir: PathBuf,
    /// Tags this instance's datagrams so its own listener skips them.
    tag: u64,
    /// The file name of this instance's socket, once bound.
    own: Mutex<Option<OsString>>,
}

impl WakeShared {
    /// The wake folder of the database at `db`: `<db>-wake`.
    pub(crate) fn new(db: &Path) -> Arc<Self> {
        let mut dir = db.as_os_str().to_owned();
        dir.push("-wake");
        Arc::new(Self {
            dir: PathBuf::from(dir),
            tag: rand::random(),
            own: Mutex::new(None),
        })
    }

    fn own_name(&self) -> Option<OsString> {
        self.own.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The datagram: who sent it and the coalesced notifications.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Wire {
    /// Sender tag.
    f: u64,
    /// `Available` queues (`null`: some queue).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    a: Vec<Option<String>>,
    /// `Changed` ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    c: Vec<TaskId>,
    /// `Changed { ids: None }`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    all: bool,
    /// `AbortRequested` ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    x: Vec<TaskId>,
}

impl Wire {
    fn encode(tag: u64, notes: &[Notification]) -> Option<Vec<u8>> {
        let mut wire = Wire {
            f: tag,
            a: Vec::new(),
            c: Vec::new(),
            all: false,
            x: Vec::new(),
        };
        for n in notes {
            match n {
                Notification::Available { queue } => wire.a.push(queue.clone()),
                Notification::Changed { ids: None } => wire.all = true,
                Notification::Changed { ids: Some(ids) } => wire.c.extend_from_slice(ids),
                Notification::AbortRequested { ids } => wire.x.extend_from_slice(ids),
            }
        }
        if wire.all || wire.c.len() > MAX_IDS {
            wire.all = true;
            wire.c.clear();
        }
        serde_json::to_vec(&wire).ok()
    }

    fn decode(buf: &[u8]) -> Option<Wire> {
        serde_json::from_slice(buf).ok()
    }

    fn notifications(self) -> Vec<Notification> {
        let mut out: Vec<Notification> = self
            .a
            .into_iter()
            .map(|queue| Notification::Available { queue })
            .collect();
        if self.all {
            out.push(Notification::Changed { ids: None });
        } else if !self.c.is_empty() {
            out.push(Notification::Changed { ids: Some(self.c) });
        }
        if !self.x.is_empty() {
            out.push(Notification::AbortRequested { ids: self.x });
        }
        out
    }
}

/// The writer's side: sends each commit's notifications to every other
/// listener of the database.
#[derive(Debug)]
pub(crate) struct Broadcaster {
    shared: Arc<WakeShared>,
    socket: Option<UnixDatagram>,
    targets: Vec<PathBuf>,
    listed_mtime: Option<SystemTime>,
    listed_at: Option<Instant>,
    /// Whether the folder changed so shortly before the listing that a
    /// change in the same clock tick may be missing from it.
    racy: bool,
    own: Option<OsString>,
}

impl Broadcaster {
    /// A broadcaster for the instance's wake folder.
    pub(crate) fn new(shared: Arc<WakeShared>) -> Self {
        Self {
            shared,
            socket: None,
            targets: Vec::new(),
            listed_mtime: None,
            listed_at: None,
            racy: false,
            own: None,
        }
    }

    /// Sends `notes` to every other listener; never blocks, never fails.
    pub(crate) fn send(&mut self, notes: &[Notification]) {
        if !self.refresh() || self.targets.is_empty() {
            return;
        }
        let Some(buf) = Wire::encode(self.shared.tag, notes) else {
            return;
        };
        let socket = match &self.socket {
            Some(s) => s,
            None => match UnixDatagram::unbound().and_then(|s| {
                s.set_nonblocking(true)?;
                Ok(s)
            }) {
                Ok(s) => self.socket.insert(s),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot create the wake-up socket");
                    return;
                }
            },
        };
        let mut dead = Vec::new();
        for (i, target) in self.targets.iter().enumerate() {
            match socket.send_to(&buf, target) {
                Ok(_) => {}
                // Its buffer is full: it has wake-ups pending anyway.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    // Nobody listens: the process died. Tidy up after it,
                    // unless the socket is new (it may be binding right now).
                    let age = std::fs::symlink_metadata(target)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok());
                    if age.is_none_or(|age| age > DEAD_AFTER) {
                        let _ = std::fs::remove_file(target);
                        dead.push(i);
                    }
                }
                Err(e) if e.kind() == ErrorKind::NotFound => dead.push(i),
                Err(e) => {
                    tracing::debug!(error = %e, target = %target.display(), "wake-up not sent")
                }
            }
        }
        for i in dead.into_iter().rev() {
            self.targets.swap_remove(i);
        }
    }

    /// Re-reads the folder when it changed or the cache is old. False when
    /// there is no folder (nobody ever listened).
    fn refresh(&mut self) -> bool {
        let mtime = match std::fs::metadata(&self.shared.dir) {
            Ok(m) => m.modified().ok(),
            Err(_) => {
                self.targets.clear();
                self.listed_at = None;
                return false;
            }
        };
        let own = self.shared.own_name();
        let fresh = !self.racy
            && self.listed_at.is_some_and(|at| at.elapsed() < LISTING_TTL)
            && mtime.is_some()
            && mtime == self.listed_mtime
            && own == self.own;
        if fresh {
            return true;
        }
        self.targets.clear();
        self.listed_mtime = mtime;
        self.listed_at = Some(Instant::now());
        self.racy = mtime
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .is_none_or(|age| age < RACY);
        self.own = own;
        let Ok(entries) = std::fs::read_dir(&self.shared.dir) else {
            return false;
        };
        for entry in entries.flatten().take(10_000) {
            let name = entry.file_name();
            let is_socket = Path::new(&name).extension().is_some_and(|e| e == "sock");
            if is_socket && self.own.as_ref() != Some(&name) {
                self.targets.push(entry.path());
            }
        }
        true
    }
}

/// How long a listener blocks before checking that its socket file is
/// still in place (someone may have deleted the folder).
const LISTEN_CHECK: Duration = Duration::from_secs(2);

/// A socket file refusing datagrams is only removed once it is older than
/// this: a socket being bound right now refuses for an instant too.
const DEAD_AFTER: Duration = Duration::from_secs(2);

/// A cached folder listing is only trusted when the folder changed at
/// least this long before it was listed: directory times are coarse (one
/// clock tick), so a socket created in the same tick as the listing would
/// otherwise go unseen.
const RACY: Duration = Duration::from_millis(50);

/// What the listener thread and its owner share.
#[derive(Debug)]
struct ListenState {
    path: PathBuf,
    stop: AtomicBool,
    /// A handle on the socket the thread reads, to shut it down; replaced
    /// (under this lock) when the thread re-binds.
    current: Mutex<Option<UnixDatagram>>,
}

/// A bound socket and the thread reading it; dropping it stops the thread,
/// which removes the socket file.
#[derive(Debug)]
struct Listener {
    state: Arc<ListenState>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<WakeShared>,
}

/// Binds `path`; returns the socket, a handle for shutting it down, and
/// the socket file's inode.
fn bind(path: &Path) -> std::io::Result<(UnixDatagram, UnixDatagram, u64)> {
    use std::os::unix::fs::MetadataExt;
    let socket = UnixDatagram::bind(path)?;
    let result = (|| {
        socket.set_read_timeout(Some(LISTEN_CHECK))?;
        let handle = socket.try_clone()?;
        let ino = std::fs::symlink_metadata(path)?.ino();
        Ok((handle, ino))
    })();
    match result {
        Ok((handle, ino)) => Ok((socket, handle, ino)),
        Err(e) => {
            let _ = std::fs::remove_file(path);
            Err(e)
        }
    }
}

impl Listener {
    fn start(shared: Arc<WakeShared>, hub: NotifyHub) -> std::io::Result<Self> {
        std::fs::create_dir_all(&shared.dir)?;
        let name = format!("{}-{:016x}.sock", std::process::id(), rand::random::<u64>());
        let path = shared.dir.join(&name);
        let (socket, handle, ino) = bind(&path)?;
        let state = Arc::new(ListenState {
            path: path.clone(),
            stop: AtomicBool::new(false),
            current: Mutex::new(Some(handle)),
        });
        let thread_state = state.clone();
        let dir = shared.dir.clone();
        let tag = shared.tag;
        let thread = std::thread::Builder::new()
            .name("offload-sqlite-wake".to_owned())
            .spawn(move || listen(socket, ino, &dir, tag, &hub, &thread_state));
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        *shared.own.lock().unwrap_or_else(|e| e.into_inner()) = Some(OsString::from(name));
        tracing::debug!(socket = %path.display(), "listening for cross-process wake-ups");
        Ok(Self {
            state,
            thread: Some(thread),
            shared,
        })
    }
}

/// The listener thread: turns datagrams into local notifications until
/// stopped, re-binding its socket if the file disappears. Removes its
/// socket file when it ends.
fn listen(
    mut socket: UnixDatagram,
    mut ino: u64,
    dir: &Path,
    tag: u64,
    hub: &NotifyHub,
    state: &ListenState,
) {
    use std::os::unix::fs::MetadataExt;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !state.stop.load(Ordering::Acquire) {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let Some(wire) = buf.get(..n).and_then(Wire::decode) else {
                    continue;
                };
                if wire.f == tag {
                    continue;
                }
                for note in wire.notifications() {
                    hub.send(note);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let in_place = std::fs::symlink_metadata(&state.path).is_ok_and(|m| m.ino() == ino);
                if in_place {
                    continue;
                }
                // Someone removed our socket file: bind a fresh one there.
                let mut current = state.current.lock().unwrap_or_else(|e| e.into_inner());
                if state.stop.load(Ordering::Acquire) {
                    break;
                }
                let _ = std::fs::create_dir_all(dir);
                let _ = std::fs::remove_file(&state.path);
                match bind(&state.path) {
                    Ok((fresh, handle, fresh_ino)) => {
                        tracing::debug!(socket = %state.path.display(), "wake-up socket re-bound");
                        socket = fresh;
                        ino = fresh_ino;
                        *current = Some(handle);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot re-bind the wake-up socket; retrying");
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                if !state.stop.load(Ordering::Acquire) {
                    tracing::warn!(error = %e, "wake-up listener stopped");
                }
                break;
            }
        }
    }
    let ours = std::fs::symlink_metadata(&state.path).is_ok_and(|m| m.ino() == ino);
    if ours {
        let _ = std::fs::remove_file(&state.path);
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        {
            let current = self.state.current.lock().unwrap_or_else(|e| e.into_inner());
            self.state.stop.store(true, Ordering::Release);
            // Wakes the blocked recv: it returns at once after a shutdown.
            if let Some(socket) = current.as_ref() {
                let _ = socket.shutdown(std::net::Shutdown::Both);
            }
        }
        *self.shared.own.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The store's [`Notifier`]: the in-process hub, plus (started on the
/// first subscription) the cross-process listener.
#[derive(Debug)]
pub(crate) struct SqliteNotifier {
    hub: NotifyHub,
    shared: Arc<WakeShared>,
    listener: OnceLock<Option<Listener>>,
}

impl SqliteNotifier {
    /// A notifier over `hub` for the instance's wake folder.
    pub(crate) fn new(hub: NotifyHub, shared: Arc<WakeShared>) -> Self {
        Self {
            hub,
            shared,
            listener: OnceLock::new(),
        }
    }

    /// Binds the listening socket now (it is otherwise bound on the first
    /// subscription). True when listening.
    pub(crate) fn listen(&self) -> bool {
        self.listener
            .get_or_init(
                || match Listener::start(self.shared.clone(), self.hub.clone()) {
                    Ok(l) => Some(l),
                    Err(e) => {
                        tracing::warn!(
                            error = %e,
                            dir = %self.shared.dir.display(),
                            "cross-process wake-ups unavailable; other processes' changes are seen by polling"
                        );
                        None
                    }
                },
            )
            .is_some()
    }
}

impl Notifier for SqliteNotifier {
    fn subscribe(&self) -> broadcast::Receiver<Notification> {
        let rx = self.hub.subscribe();
        self.listen();
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trips_and_degrades_many_ids() {
        let id = TaskId::new();
        let notes = vec![
            Notification::Available {
                queue: Some("default".into()),
            },
            Notification::Changed {
                ids: Some(vec![id]),
            },
            Notification::AbortRequested { ids: vec![id] },
        ];
        let buf = Wire::encode(7, &notes).unwrap();
        let wire = Wire::decode(&buf).unwrap();
        assert_eq!(wire.f, 7);
        assert_eq!(wire.notifications(), notes);

        let many: Vec<TaskId> = (0..=MAX_IDS).map(|_| TaskId::new()).collect();
        let buf = Wire::encode(1, &[Notification::Changed { ids: Some(many) }]).unwrap();
        assert_eq!(
            Wire::decode(&buf).unwrap().notifications(),
            vec![Notification::Changed { ids: None }]
        );
    }

    #[test]
    fn shutdown_wakes_a_blocked_listener() {
        let dir = tempfile::tempdir().unwrap();
        let shared = WakeShared::new(&dir.path().join("x.db"));
        let hub = NotifyHub::new();
        let listener = Listener::start(shared.clone(), hub).unwrap();
        let path = listener.state.path.clone();
        assert!(path.exists());
        drop(listener);
        assert!(!path.exists());
        assert!(shared.own_name().is_none());
    }
}
