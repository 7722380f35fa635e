//! [`Tasks`]: where the task commands act. On the store itself (the
//! default: the database URL is opened in this process) or through a
//! running `offload serve` (`--server URL`): the same commands, the same
//! output and exit codes either way. Operator actions on the store itself
//! are written to the audit log as `local`; through a server, the server
//! writes them under the token's id.

use std::time::Duration;

use offload::{
    Attempt, AuditEntry, Client, Enqueued, GroupStatus, Limit, LimitRecord, LimitScope, NewTask,
    Notification, Schedule, ScheduleRecord, Task, TaskFilter, TaskId, TaskListParams, TaskPage,
};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::commands::{LOCAL_ACTOR, audit};
use crate::server::{EventFeed, ServerClient};

/// Where the task commands act.
#[derive(Debug)]
pub(crate) enum Tasks {
    /// The store, opened here.
    Store(Client),
    /// A running server.
    Server(ServerClient),
}

/// What [`Tasks::changed`] listens to between calls.
pub(crate) enum Changes {
    /// The store's notifications.
    Store(broadcast::Receiver<Notification>),
    /// The server's event stream of the task (opened on first use).
    Server(Option<EventFeed>),
}

impl Tasks {
    /// Enqueues tasks, all or nothing; their ids and outcomes in order.
    pub(crate) async fn trigger_many(&self, tasks: Vec<NewTask>) -> anyhow::Result<Vec<Enqueued>> {
        match self {
            Tasks::Store(c) => Ok(c
                .trigger_many(tasks)
                .await?
                .iter()
                .map(|h| Enqueued {
                    id: h.id(),
                    outcome: h.outcome(),
                })
                .collect()),
            Tasks::Server(s) => s.trigger_many(tasks).await,
        }
    }

    /// Enqueues a group; its id and its members' ids.
    pub(crate) async fn trigger_group(
        &self,
        members: Vec<NewTask>,
        callback: NewTask,
    ) -> anyhow::Result<(TaskId, Vec<TaskId>)> {
        match self {
            Tasks::Store(c) => {
                let group = c.trigger_group(members, callback).await?;
                Ok((group.id(), group.members.iter().map(|h| h.id()).collect()))
            }
            Tasks::Server(s) => s.trigger_group(members, callback).await,
        }
    }

    /// Where a group stands.
    pub(crate) async fn group(&self, id: TaskId) -> anyhow::Result<GroupStatus> {
        match self {
            Tasks::Store(c) => Ok(c.group(id).await?),
            Tasks::Server(s) => s.group(id).await,
        }
    }

    /// Aborts a group (recorded in the audit log).
    pub(crate) async fn abort_group(
        &self,
        id: TaskId,
        reason: Option<String>,
    ) -> anyhow::Result<GroupStatus> {
        match self {
            Tasks::Store(c) => {
                let status = c.abort_group(id, reason.clone()).await?;
                audit(c, entry("group.abort", id, reason)).await;
                Ok(status)
            }
            Tasks::Server(s) => s.abort_group(id, reason).await,
        }
    }

    /// Stores a schedule (`paused`: `Some(true)` stores it paused).
    pub(crate) async fn put_schedule(
        &self,
        schedule: Schedule,
        paused: Option<bool>,
    ) -> anyhow::Result<ScheduleRecord> {
        match self {
            Tasks::Store(c) => {
                let name = schedule.name.clone();
                let mut record = c.put_schedule(schedule).await?;
                if paused == Some(true) && !record.paused {
                    record = c.pause_schedule(&name).await?;
                }
                audit(c, AuditEntry::new(LOCAL_ACTOR, "schedule.put").target(name)).await;
                Ok(record)
            }
            Tasks::Server(s) => s.put_schedule(&schedule, paused).await,
        }
    }

    /// Every schedule.
    pub(crate) async fn schedules(&self) -> anyhow::Result<Vec<ScheduleRecord>> {
        match self {
            Tasks::Store(c) => Ok(c.schedules().await?),
            Tasks::Server(s) => s.schedules().await,
        }
    }

    /// Pauses (`true`) or resumes a schedule (recorded in the audit log).
    pub(crate) async fn pause_schedule(
        &self,
        name: &str,
        paused: bool,
        reason: Option<String>,
    ) -> anyhow::Result<ScheduleRecord> {
        match self {
            Tasks::Store(c) => {
                let record = if paused {
                    c.pause_schedule(name).await?
                } else {
                    c.resume_schedule(name).await?
                };
                let action = if paused {
                    "schedule.pause"
                } else {
                    "schedule.resume"
                };
                let entry = AuditEntry::new(LOCAL_ACTOR, action).target(name.to_owned());
                audit(c, entry.reason(reason)).await;
                Ok(record)
            }
            Tasks::Server(s) => s.pause_schedule(name, paused, reason).await,
        }
    }

    /// Deletes a schedule (recorded in the audit log); an error if there is none.
    pub(crate) async fn delete_schedule(
        &self,
        name: &str,
        reason: Option<String>,
    ) -> anyhow::Result<()> {
        match self {
            Tasks::Store(c) => {
                if !c.delete_schedule(name).await? {
                    anyhow::bail!("no schedule is named {name:?}");
                }
                let entry = AuditEntry::new(LOCAL_ACTOR, "schedule.delete").target(name.to_owned());
                audit(c, entry.reason(reason)).await;
                Ok(())
            }
            Tasks::Server(s) => s.delete_schedule(name, reason).await,
        }
    }

    /// Sets a limit (recorded in the audit log).
    pub(crate) async fn set_limit(
        &self,
        limit: Limit,
        reason: Option<String>,
    ) -> anyhow::Result<LimitRecord> {
        match self {
            Tasks::Store(c) => {
                let target = format!("{}:{}", limit.scope.as_str(), limit.target);
                let record = c.set_limit(limit).await?;
                let entry = AuditEntry::new(LOCAL_ACTOR, "limit.set").target(target);
                audit(c, entry.reason(reason)).await;
                Ok(record)
            }
            Tasks::Server(s) => s.set_limit(&limit).await,
        }
    }

    /// Every limit.
    pub(crate) async fn limits(&self) -> anyhow::Result<Vec<LimitRecord>> {
        match self {
            Tasks::Store(c) => Ok(c.limits().await?),
            Tasks::Server(s) => s.limits().await,
        }
    }

    /// Deletes a limit (recorded in the audit log); an error if there is none.
    pub(crate) async fn delete_limit(
        &self,
        scope: LimitScope,
        target: &str,
        reason: Option<String>,
    ) -> anyhow::Result<()> {
        match self {
            Tasks::Store(c) => {
                if !c.delete_limit(scope, target).await? {
                    anyhow::bail!("no limit for {} {target:?}", scope.as_str());
                }
                let entry = AuditEntry::new(LOCAL_ACTOR, "limit.delete")
                    .target(format!("{}:{target}", scope.as_str()));
                audit(c, entry.reason(reason)).await;
                Ok(())
            }
            Tasks::Server(s) => s.delete_limit(scope, target, reason).await,
        }
    }

    /// One task.
    pub(crate) async fn get(&self, id: TaskId) -> anyhow::Result<Task> {
        match self {
            Tasks::Store(c) => Ok(c.get(id).await?),
            Tasks::Server(s) => Ok(s.get(id).await?.0),
        }
    }

    /// One task and its attempts.
    pub(crate) async fn get_with_attempts(
        &self,
        id: TaskId,
    ) -> anyhow::Result<(Task, Vec<Attempt>)> {
        match self {
            Tasks::Store(c) => {
                let task = c.get(id).await?;
                let attempts = c.attempts(id).await?;
                Ok((task, attempts))
            }
            Tasks::Server(s) => s.get(id).await,
        }
    }

    /// One page of tasks.
    pub(crate) async fn list(&self, params: TaskListParams) -> anyhow::Result<TaskPage> {
        match self {
            Tasks::Store(c) => Ok(c.list(params).await?),
            Tasks::Server(s) => s.list(params).await,
        }
    }

    /// Aborts a task (recorded in the audit log).
    pub(crate) async fn abort(&self, id: TaskId, reason: Option<String>) -> anyhow::Result<Task> {
        match self {
            Tasks::Store(c) => {
                let task = c.abort(id, reason.clone()).await?;
                audit(c, entry("task.abort", id, reason)).await;
                Ok(task)
            }
            Tasks::Server(s) => s.abort(id, reason).await,
        }
    }

    /// Runs a failed or aborted task again (recorded in the audit log).
    pub(crate) async fn retry(&self, id: TaskId, reason: Option<String>) -> anyhow::Result<Task> {
        match self {
            Tasks::Store(c) => {
                let task = c.retry(id).await?;
                audit(c, entry("task.retry", id, reason)).await;
                Ok(task)
            }
            Tasks::Server(s) => s.retry(id, reason).await,
        }
    }

    /// Deletes a task (recorded in the audit log).
    pub(crate) async fn delete(&self, id: TaskId, reason: Option<String>) -> anyhow::Result<()> {
        match self {
            Tasks::Store(c) => {
                c.delete(id).await?;
                audit(c, entry("task.delete", id, reason)).await;
                Ok(())
            }
            Tasks::Server(s) => s.delete(id, reason).await,
        }
    }

    /// Deletes finished tasks (recorded in the audit log with the filter
    /// and the count).
    pub(crate) async fn purge(
        &self,
        filter: TaskFilter,
        finished_before: Option<chrono::DateTime<chrono::Utc>>,
        reason: Option<String>,
    ) -> anyhow::Result<u64> {
        match self {
            Tasks::Store(c) => {
                let purged = c.purge(filter.clone(), finished_before).await?;
                let entry = AuditEntry::purge(LOCAL_ACTOR, &filter, finished_before, purged);
                audit(c, entry.reason(reason)).await;
                Ok(purged)
            }
            Tasks::Server(s) => s.purge(&filter, finished_before, reason).await,
        }
    }

    /// Waits for a task to end; `offload::Error::Timeout` after `timeout`.
    pub(crate) async fn wait(&self, id: TaskId, timeout: Duration) -> anyhow::Result<Task> {
        match self {
            Tasks::Store(c) => Ok(c.wait(id, timeout).await?),
            Tasks::Server(s) => s.wait(id, timeout).await,
        }
    }

    /// A listener for [`changed`](Self::changed).
    pub(crate) fn changes(&self) -> Changes {
        match self {
            Tasks::Store(c) => Changes::Store(c.store().notifier().subscribe()),
            Tasks::Server(_) => Changes::Server(None),
        }
    }

    /// Returns when task `id` may have changed, or after `max`.
    pub(crate) async fn changed(&self, changes: &mut Changes, id: TaskId, max: Duration) {
        match (self, changes) {
            (Tasks::Store(c), Changes::Store(rx)) => {
                let sleep = tokio::time::sleep(max);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        () = &mut sleep => return,
                        note = rx.recv() => match note {
                            Ok(n) if n.concerns(id) => return,
                            Ok(_) => continue,
                            Err(RecvError::Lagged(_)) => return,
                            Err(RecvError::Closed) => {
                                *rx = c.store().notifier().subscribe();
                                return;
                            }
                        },
                    }
                }
            }
            (Tasks::Server(s), Changes::Server(feed)) => s.changed(feed, id, max).await,
            _ => tokio::time::sleep(max).await,
        }
    }
}

fn entry(action: &str, id: TaskId, reason: Option<String>) -> AuditEntry {
    AuditEntry::new(LOCAL_ACTOR, action)
        .target(id.to_string())
        .reason(reason)
}
