//! Maps driver errors onto the portable [`StoreError`] kinds.

use offload_store::StoreError;

/// The SQLSTATE of a database error, if it is one.
pub(crate) fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// Whether a SQLSTATE means "the server or connection is going away, or
/// the transaction lost a race": retrying may succeed.
fn transient(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("57P") // admin/crash shutdown, cannot connect now
        || code == "53300" // too many connections
        || code == "40001" // serialization failure
        || code == "40P01" // deadlock detected
        || code == "55P03" // lock not available
        || code == "25P04" // idle session timeout
}

/// Maps a driver error.
pub(crate) fn map(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Database(db) => match db.code() {
            Some(code) if transient(&code) => StoreError::Unavailable(db.message().to_owned()),
            Some(code) if code == "42P01" || code == "42703" => StoreError::Corrupt(format!(
                "{} (the schema is not what this build of offload expects)",
                db.message()
            )),
            _ => StoreError::backend(e),
        },
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
            StoreError::Corrupt(e.to_string())
        }
        _ => StoreError::backend(e),
    }
}

/// A value read from the database that breaks offload's rules.
pub(crate) fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}
