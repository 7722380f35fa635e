//! Maps SQLite's native errors onto the portable [`StoreError`] kinds, so
//! nothing above the store parses a database message: busy and locked are
//! `Unavailable` (retryable), "not a database" and corruption are
//! `Corrupt`, everything else is `Backend`.

use offload_store::StoreError;
use rusqlite::ErrorCode;

/// A store error for a SQLite error.
pub(crate) fn map(e: rusqlite::Error) -> StoreError {
    match classify(&e) {
        Kind::Unavailable => StoreError::Unavailable(e.to_string()),
        Kind::Corrupt => StoreError::Corrupt(e.to_string()),
        Kind::Other => StoreError::backend(e),
    }
}

/// A store error describing `e` without consuming it (one failed commit is
/// answered to every command of its batch).
pub(crate) fn describe(e: &rusqlite::Error) -> StoreError {
    match classify(e) {
        Kind::Unavailable => StoreError::Unavailable(e.to_string()),
        Kind::Corrupt => StoreError::Corrupt(e.to_string()),
        Kind::Other => StoreError::backend(Message(e.to_string())),
    }
}

enum Kind {
    Unavailable,
    Corrupt,
    Other,
}

fn classify(e: &rusqlite::Error) -> Kind {
    match e.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::CannotOpen
            | ErrorCode::DiskFull
            | ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied
            | ErrorCode::SystemIoFailure
            | ErrorCode::OutOfMemory,
        ) => Kind::Unavailable,
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => Kind::Corrupt,
        _ => Kind::Other,
    }
}

/// A backend error known only by its message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Message(pub(crate) String);

/// A stored value that does not read back: the database was changed by
/// something other than offload.
pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}
