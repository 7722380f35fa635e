//! [`Role`]: what an API token may do.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The role of an API token. Each role is a fixed set of permissions (see
/// [`Role::allows`]); roles are not ordered, a `worker` token cannot read
/// the audit log and a `read` token cannot lease tasks.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything: tasks, tokens, webhooks, the audit log.
    Admin,
    /// Enqueues tasks, reads them and their results, aborts them.
    Producer,
    /// Runs tasks through the pull protocol; may enqueue (child tasks) and read.
    Worker,
    /// Reads tasks, queues, events and metrics; changes nothing.
    Read,
}

/// What a request needs (checked with [`Role::allows`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Read tasks, results, queues, events, metrics.
    Read,
    /// Enqueue tasks.
    Enqueue,
    /// Abort a task.
    Abort,
    /// Lease tasks and report on them (the pull protocol).
    Work,
    /// Change or delete tasks, retry them, purge.
    Manage,
    /// Tokens, webhooks, the audit log.
    Admin,
}

/// A string is not a role name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected one of admin, producer, worker, read")]
pub struct RoleParseError(pub String);

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Producer, Role::Worker, Role::Read];

    /// The name used in the API, the CLI and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Producer => "producer",
            Role::Worker => "worker",
            Role::Read => "read",
        }
    }

    /// Whether a token with this role may do what `permission` names.
    ///
    /// ```
    /// use offload_types::{Permission, Role};
    /// assert!(Role::Producer.allows(Permission::Enqueue));
    /// assert!(!Role::Producer.allows(Permission::Work));
    /// assert!(!Role::Read.allows(Permission::Abort));
    /// assert!(Role::Admin.allows(Permission::Admin));
    /// ```
    pub fn allows(self, permission: Permission) -> bool {
        use Permission as P;
        match self {
            Role::Admin => true,
            Role::Producer => matches!(permission, P::Read | P::Enqueue | P::Abort),
            Role::Worker => matches!(permission, P::Read | P::Enqueue | P::Work),
            Role::Read => matches!(permission, P::Read),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = RoleParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| RoleParseError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("Admin".parse::<Role>().is_err());
        assert!("".parse::<Role>().is_err());
    }

    #[test]
    fn only_admin_administers_and_only_worker_and_admin_work() {
        for role in Role::ALL {
            assert_eq!(role.allows(Permission::Admin), role == Role::Admin);
            assert_eq!(role.allows(Permission::Manage), role == Role::Admin);
            assert_eq!(
                role.allows(Permission::Work),
                matches!(role, Role::Admin | Role::Worker)
            );
            assert!(role.allows(Permission::Read));
        }
    }
}
