//! Groups (fan-out / fan-in): members enqueued together with a callback
//! task that runs once every member has ended, whatever the outcome, and
//! reads their outcomes through [`Context::group_results`](crate::Context::group_results).
//! The group's id is its callback's id; members carry it as `group_id`.

use std::collections::BTreeMap;

use offload_store::{TaskFilter, TaskListParams};
use offload_types::{MAX_GROUP_SIZE, NewTask, Status, Task, TaskId, ValidationError};
use serde::{Deserialize, Serialize};

use crate::{Client, Error, Result, TaskHandle};

/// Where a group stands: its members by status and its callback.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// The group's id (its callback's id).
    pub id: TaskId,
    /// How many members it has.
    pub size: u64,
    /// Members that have ended (`success`, `failed` or `aborted`).
    pub ended: u64,
    /// Members by status (statuses with no member are left out).
    pub members: BTreeMap<Status, u64>,
    /// The callback's status.
    pub callback_status: Status,
    /// `ended` as a percentage of `size` (100 for an empty group).
    pub percent: u8,
}

/// Members and callback of a group, as [`Client::trigger_group`] returns them.
#[derive(Debug, Clone)]
pub struct GroupHandle {
    /// The callback; its id is the group's id.
    pub callback: TaskHandle,
    /// The members, in the order given.
    pub members: Vec<TaskHandle>,
}

impl GroupHandle {
    /// The group's id.
    pub fn id(&self) -> TaskId {
        self.callback.id()
    }
}

/// Most times [`Client::group`] counts while the callback's status moves.
const GROUP_READS: usize = 3;

/// Page size when reading many tasks by id.
const IDS_PER_PAGE: u32 = 500;

impl Client {
    /// Enqueues a group in one commit: the `members`, and `callback`, which
    /// becomes `pending` once every member has ended (success, failure or
    /// abort) and reads their outcomes with
    /// [`Context::group_results`](crate::Context::group_results). Members
    /// may depend on one another (`depends_on`, earlier in the list) but
    /// may not carry a `unique_key`: a group's members are always new tasks.
    ///
    /// ```no_run
    /// # async fn demo(client: offload::Client) -> offload::Result<()> {
    /// use offload::NewTask;
    /// use serde_json::json;
    /// let parts = (1..=3).map(|p| NewTask::new("report_part", json!({"part": p}))).collect();
    /// let group = client
    ///     .trigger_group(parts, NewTask::new("report_assemble", json!({"report": 7})))
    ///     .await?;
    /// println!("group {} has {} parts", group.id(), group.members.len());
    /// # Ok(()) }
    /// ```
    pub async fn trigger_group(
        &self,
        members: Vec<NewTask>,
        mut callback: NewTask,
    ) -> Result<GroupHandle> {
        if members.len() > MAX_GROUP_SIZE {
            return Err(ValidationError::new(
                "members",
                format!("at most {MAX_GROUP_SIZE} members, got {}", members.len()),
            )
            .into());
        }
        let group = callback.id;
        let mut batch = Vec::with_capacity(members.len() + 1);
        for mut member in members {
            if member.options.unique_key.is_some() {
                return Err(ValidationError::new(
                    "members.unique_key",
                    "a group member cannot have a unique_key (members are always new tasks)",
                )
                .into());
            }
            member.group_id = Some(group);
            batch.push(member);
        }
        callback.group_id = Some(group);
        callback.after = batch.iter().map(|m| m.id).collect();
        if callback.options.unique_key.is_some() {
            return Err(ValidationError::new(
                "callback.unique_key",
                "a group's callback cannot have a unique_key",
            )
            .into());
        }
        batch.push(callback);
        let mut handles = self.trigger_many(batch).await?;
        let callback = handles.pop().ok_or_else(|| {
            Error::Store(offload_store::StoreError::Corrupt(
                "the store returned no id for a group's callback".into(),
            ))
        })?;
        Ok(GroupHandle {
            callback,
            members: handles,
        })
    }

    /// Where group `id` stands; [`Error::NotFound`] if there is no such group.
    pub async fn group(&self, id: TaskId) -> Result<GroupStatus> {
        let mut callback = self.get(id).await?;
        if callback.group_id != Some(id) {
            return Err(
                ValidationError::new("id", format!("task {id} is not a group's callback")).into(),
            );
        }
        // the count includes the callback; read its status again after the
        // count, so the one subtracted is the one counted
        let mut counts = Vec::new();
        for _ in 0..GROUP_READS {
            counts = self
                .count(TaskFilter {
                    group: Some(id),
                    ..TaskFilter::default()
                })
                .await?;
            let again = self.get(id).await?;
            let steady = again.status == callback.status;
            callback = again;
            if steady {
                break;
            }
        }
        let mut members: BTreeMap<Status, u64> = BTreeMap::new();
        for c in counts {
            *members.entry(c.status).or_default() += c.count;
        }
        // the callback carries the group id too: it is not a member
        if let Some(n) = members.get_mut(&callback.status) {
            *n = n.saturating_sub(1);
        }
        members.retain(|_, n| *n > 0);
        let size: u64 = members.values().sum();
        let ended: u64 = members
            .iter()
            .filter(|(s, _)| s.is_terminal())
            .map(|(_, n)| n)
            .sum();
        let percent = (ended * 100)
            .checked_div(size)
            .map_or(100, |p| u8::try_from(p).unwrap_or(100));
        Ok(GroupStatus {
            id,
            size,
            ended,
            members,
            callback_status: callback.status,
            percent,
        })
    }

    /// Aborts a group: its callback and every member that has not ended
    /// (running members are asked to stop). Returns the group afterwards.
    pub async fn abort_group(&self, id: TaskId, reason: Option<String>) -> Result<GroupStatus> {
        self.group(id).await?;
        if !self.get(id).await?.status.is_terminal() {
            self.abort(id, reason.clone()).await?;
        }
        let mut cursor = None;
        loop {
            let page = self
                .list(TaskListParams {
                    filter: TaskFilter {
                        group: Some(id),
                        statuses: vec![
                            Status::Scheduled,
                            Status::Blocked,
                            Status::Pending,
                            Status::Running,
                        ],
                        ..TaskFilter::default()
                    },
                    cursor,
                    limit: IDS_PER_PAGE,
                })
                .await?;
            for task in &page.tasks {
                match self.abort(task.id, reason.clone()).await {
                    // it ended (or a cascade aborted it) since the page was read
                    Ok(_)
                    | Err(Error::Store(offload_store::StoreError::InvalidTransition { .. })) => {}
                    Err(e) => return Err(e),
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        self.group(id).await
    }

    /// The tasks with these ids, in the order given;
    /// [`Error::NotFound`] names the first id with no task.
    pub async fn get_many(&self, ids: &[TaskId]) -> Result<Vec<Task>> {
        let mut found = std::collections::HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_PER_PAGE as usize) {
            let page = self
                .list(TaskListParams {
                    filter: TaskFilter {
                        ids: chunk.to_vec(),
                        ..TaskFilter::default()
                    },
                    cursor: None,
                    limit: IDS_PER_PAGE,
                })
                .await?;
            found.extend(page.tasks.into_iter().map(|t| (t.id, t)));
        }
        ids.iter()
            .map(|id| found.remove(id).ok_or(Error::NotFound(*id)))
            .collect()
    }
}
