//! Cron schedules through the [`Client`]: store, list, pause, resume and
//! delete them. Every [`Worker`](crate::Worker) runs a scheduler that
//! enqueues their ticks (see [`WorkerBuilder::schedule`](crate::WorkerBuilder::schedule)).

use offload_store::{SchedulePauseParams, SchedulePutParams, ScheduleRecord};
use offload_types::{Schedule, ValidationError};

use crate::{Client, Result};

fn not_found(name: &str) -> crate::Error {
    ValidationError::new("name", format!("no schedule is named {name:?}")).into()
}

impl Client {
    /// Stores `schedule`, or replaces the definition of the one with its
    /// name. Stating the same schedule again (at every start of an
    /// application) keeps its next tick, its last run and an operator's
    /// pause; a changed `cron` or `time_zone` starts from the next tick
    /// after now.
    ///
    /// ```no_run
    /// # async fn demo(client: offload::Client) -> offload::Result<()> {
    /// use offload::Schedule;
    /// let s = Schedule::new("nightly-cleanup", "0 3 * * *", "cleanup").time_zone("Europe/Berlin");
    /// let stored = client.put_schedule(s).await?;
    /// println!("next run: {:?}", stored.next_run_at);
    /// # Ok(()) }
    /// ```
    pub async fn put_schedule(&self, schedule: Schedule) -> Result<ScheduleRecord> {
        schedule.validate()?;
        let now = self.now();
        let next_run_at = schedule.cron_schedule()?.next_after(now);
        Ok(self
            .store()
            .schedule_put(&SchedulePutParams {
                schedule,
                next_run_at,
                paused: None,
                now,
            })
            .await?)
    }

    /// One schedule by name, or `None`.
    pub async fn schedule(&self, name: &str) -> Result<Option<ScheduleRecord>> {
        Ok(self.store().schedule_get(name).await?)
    }

    /// Every schedule, by name.
    pub async fn schedules(&self) -> Result<Vec<ScheduleRecord>> {
        Ok(self.store().schedule_list().await?)
    }

    /// Pauses a schedule: its ticks enqueue nothing until it is resumed.
    /// An `Invalid` error naming `name` if there is no such schedule (so
    /// for resume and delete).
    pub async fn pause_schedule(&self, name: &str) -> Result<ScheduleRecord> {
        self.set_paused(name, true).await
    }

    /// Resumes a schedule from the next tick after now (the ticks of the
    /// pause are not run).
    pub async fn resume_schedule(&self, name: &str) -> Result<ScheduleRecord> {
        self.set_paused(name, false).await
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Result<ScheduleRecord> {
        let now = self.now();
        let next_run_at = if paused {
            None
        } else {
            self.schedule(name)
                .await?
                .ok_or_else(|| not_found(name))?
                .schedule
                .cron_schedule()?
                .next_after(now)
        };
        self.store()
            .schedule_pause(&SchedulePauseParams {
                name: name.to_owned(),
                paused,
                next_run_at,
                now,
            })
            .await?
            .ok_or_else(|| not_found(name))
    }

    /// Deletes a schedule (the tasks it enqueued stay); `false` if there
    /// was none with that name.
    pub async fn delete_schedule(&self, name: &str) -> Result<bool> {
        Ok(self.store().schedule_delete(name).await?)
    }
}
