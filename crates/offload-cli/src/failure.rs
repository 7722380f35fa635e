//! Exit codes and the one `error: ...` line a failed command prints.
//!
//! Commands return `anyhow::Result`. A [`Failure`] in the error chain
//! carries an explicit exit code; otherwise the code follows from the
//! library's error (bad input → 2, timeout → 4, anything else → 1).

use std::fmt;

use crate::config::ConfigError;

/// The exit codes documented in `offload --help`.
pub(crate) mod code {
    /// The operation failed.
    pub(crate) const FAILED: u8 = 1;
    /// Bad input: nothing was changed.
    pub(crate) const USAGE: u8 = 2;
    /// The task has not finished yet.
    pub(crate) const NOT_FINISHED: u8 = 3;
    /// Timed out waiting for the task.
    pub(crate) const TIMEOUT: u8 = 4;
    /// The task was aborted (`watch`).
    pub(crate) const ABORTED: u8 = 5;
}

/// An error with a chosen exit code. An empty message prints nothing.
#[derive(Debug)]
pub(crate) struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// Bad input (exit code 2).
    pub(crate) fn usage(message: impl Into<String>) -> anyhow::Error {
        Self::with_code(code::USAGE, message)
    }

    /// Any exit code and message.
    pub(crate) fn with_code(code: u8, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Self {
            code,
            message: message.into(),
        })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The exit code for an error.
pub(crate) fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.code;
        }
        if cause.downcast_ref::<ConfigError>().is_some() {
            return code::USAGE;
        }
        if let Some(e) = cause.downcast_ref::<offload::Error>() {
            return match e {
                offload::Error::Invalid(_) => code::USAGE,
                offload::Error::Timeout(_) => code::TIMEOUT,
                _ => code::FAILED,
            };
        }
    }
    code::FAILED
}

/// The line to print for an error (`None`: print nothing).
pub(crate) fn message(err: &anyhow::Error) -> Option<String> {
    if let Some(f) = err.downcast_ref::<Failure>()
        && f.message.is_empty()
    {
        return None;
    }
    Some(format!("{err:#}"))
}
