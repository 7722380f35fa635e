//! Opening connections: the checks that refuse a file without touching it
//! (missing directory, not an SQLite file, someone else's database, a
//! schema newer than this build), the pragmas (WAL, `synchronous`, cache),
//! and a busy handler that retries a locked database in short steps up to
//! the configured timeout, so several processes share one file without
//! `SQLITE_BUSY` errors and without the default handler's 1–100 ms naps.

use std::cell::Cell;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use offload_store::StoreError;
use rusqlite::{Connection, OpenFlags};

use crate::options::{Durability, SqliteOptions};
use crate::schema;

/// The first 16 bytes of every SQLite database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Statements each connection keeps prepared.
const STATEMENT_CACHE: usize = 128;

thread_local! {
    /// The busy timeout of the connection this thread uses, and when the
    /// current wait for a lock began.
    static BUSY: Cell<(Duration, Option<Instant>)> =
        const { Cell::new((crate::options::DEFAULT_BUSY_TIMEOUT, None)) };
}

/// Sets how long this thread's SQLite calls wait for a lock.
pub(crate) fn set_thread_busy_timeout(timeout: Duration) {
    BUSY.with(|b| b.set((timeout, None)));
}

/// SQLite's busy callback: `count` is how often it was called for this
/// lock already. Retries quickly at first (a writer holds the lock for well
/// under a millisecond per batch), then backs off to 1 ms steps.
fn busy_handler(count: i32) -> bool {
    BUSY.with(|b| {
        let (timeout, started) = b.get();
        let now = Instant::now();
        let started = match started {
            Some(s) if count > 0 => s,
            _ => now,
        };
        b.set((timeout, Some(started)));
        if now.duration_since(started) >= timeout {
            return false;
        }
        let nap = match count {
            0..=19 => Duration::from_micros(50),
            20..=199 => Duration::from_micros(250),
            _ => Duration::from_millis(1),
        };
        std::thread::sleep(nap);
        true
    })
}

fn unavailable(path: &Path, what: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("cannot open database {}: {what}", path.display()))
}

fn open_error(path: &Path, e: rusqlite::Error) -> StoreError {
    match crate::error::map(e) {
        StoreError::Unavailable(m) => unavailable(path, m),
        StoreError::Corrupt(m) => StoreError::Corrupt(format!("{}: {m}", path.display())),
        other => other,
    }
}

/// Refuses, without writing anything, a path that cannot hold our
/// database: a missing directory, a missing file when creating is off, a
/// file that is not SQLite. Returns whether the file exists with content.
fn check_file(path: &Path, options: &SqliteOptions) -> Result<bool, StoreError> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = parent {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(unavailable(
                    path,
                    format!("{} is not a directory", dir.display()),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(unavailable(
                    path,
                    format!("directory {} does not exist", dir.display()),
                ));
            }
            Err(e) => return Err(unavailable(path, e)),
        }
    }
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if options.create_if_missing {
                return Ok(false);
            }
            return Err(unavailable(
                path,
                "the file does not exist (and creating it is turned off)",
            ));
        }
        Err(e) => return Err(unavailable(path, e)),
    };
    if meta.is_dir() {
        return Err(unavailable(path, "it is a directory"));
    }
    if meta.len() == 0 {
        return Ok(false);
    }
    let mut header = [0u8; 16];
    let mut file = std::fs::File::open(path).map_err(|e| unavailable(path, e))?;
    let read = file.read(&mut header).map_err(|e| unavailable(path, e))?;
    if meta.len() < 100 || read < header.len() || &header != SQLITE_HEADER {
        return Err(StoreError::Corrupt(format!(
            "{} is not an SQLite database (its first bytes are not the SQLite header); \
             it was left unchanged",
            path.display()
        )));
    }
    Ok(true)
}

fn apply_common_pragmas(conn: &Connection, options: &SqliteOptions) -> rusqlite::Result<()> {
    conn.busy_handler(Some(busy_handler))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(
        None,
        "synchronous",
        match options.durability {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        },
    )?;
    Ok(())
}

/// Switches the connection to WAL mode and returns the journal mode SQLite
/// reports afterwards.
///
/// Leaving the rollback journal of a fresh file writes its header under
/// an exclusive lock, which SQLite asks for while the pragma already holds
/// a read transaction on the file. A connection that upgrades a read
/// transaction is never given to the busy handler (two such connections
/// waiting for each other would deadlock): while another connection
/// holds even a shared lock, the pragma fails at once with `SQLITE_BUSY`.
/// That is the normal case when two processes open a new database at the
/// same moment (a worker and an `enqueue` started together): one reads
/// the empty schema, or switches too, while the other switches. So the
/// switch is retried, like any other lock, until the busy timeout.
fn switch_to_wal(conn: &Connection, timeout: Duration) -> rusqlite::Result<String> {
    let started = Instant::now();
    let mut tries: u32 = 0;
    loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)) {
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && started.elapsed() < timeout =>
            {
                tries = tries.saturating_add(1);
                std::thread::sleep(if tries < 20 {
                    Duration::from_micros(50)
                } else {
                    Duration::from_millis(1)
                });
            }
            other => return other,
        }
    }
}

/// Opens the write connection: checks the file, refuses foreign or newer
/// databases untouched, switches to WAL and applies pending migrations.
/// Runs on the calling (blocking) thread.
pub(crate) fn open_writer(path: &Path, options: &SqliteOptions) -> Result<Connection, StoreError> {
    set_thread_busy_timeout(options.busy_timeout);
    check_file(path, options)?;
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if options.create_if_missing {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(path, e))?;
    apply_common_pragmas(&conn, options).map_err(|e| open_error(path, e))?;
    // Read-only inspection first: nothing is written to a file we refuse.
    schema::inspect(&conn, path)?;
    let mode = switch_to_wal(&conn, options.busy_timeout).map_err(|e| open_error(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(unavailable(
            path,
            format!("cannot switch to WAL mode (journal_mode is {mode})"),
        ));
    }
    conn.pragma_update(None, "cache_size", -32_000)
        .map_err(|e| open_error(path, e))?;
    schema::migrate(&conn, path)?;
    Ok(conn)
}

/// Opens one read-only connection onto a database the writer has opened.
pub(crate) fn open_reader(path: &Path, options: &SqliteOptions) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(path, e))?;
    apply_common_pragmas(&conn, options).map_err(|e| open_error(path, e))?;
    conn.pragma_update(None, "cache_size", -8_000)
        .map_err(|e| open_error(path, e))?;
    Ok(conn)
}

/// Opens the checkpointer's connection onto a database the writer has
/// opened (read-write: a checkpoint writes the database file).
pub(crate) fn open_checkpointer(
    path: &Path,
    options: &SqliteOptions,
) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| open_error(path, e))?;
    apply_common_pragmas(&conn, options).map_err(|e| open_error(path, e))?;
    // It reads WAL frames and writes pages once: a small cache will do.
    conn.pragma_update(None, "cache_size", -2_000)
        .map_err(|e| open_error(path, e))?;
    Ok(conn)
}
