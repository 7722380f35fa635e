//! The CLI's client of a running `offload serve` (`--server URL`, with
//! `--token`): the task routes of the HTTP API, and the error answers
//! turned into one readable line and the CLI's exit codes.

use std::time::Duration;

use anyhow::Context as _;
use offload::{
    Attempt, EnqueueOutcome, Enqueued, GroupStatus, Limit, LimitRecord, LimitScope, NewTask,
    Schedule, ScheduleRecord, Task, TaskFilter, TaskId, TaskListParams, TaskPage,
};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::failure::{Failure, code};

/// Longest `wait` the server takes per result request.
const MAX_WAIT_PER_REQUEST: Duration = Duration::from_secs(300);
/// Longest a request may take beyond its own `wait`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A running server and the token to present.
#[derive(Clone)]
pub(crate) struct ServerClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for ServerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerClient")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "(hidden)"))
            .finish()
    }
}

/// A task as `GET /v1/tasks/{id}` answers it: the task and its attempts.
#[derive(Debug, serde::Deserialize)]
struct TaskDetail {
    #[serde(flatten)]
    task: Task,
    #[serde(default)]
    attempts: Vec<Attempt>,
}

impl ServerClient {
    /// A client of the server at `url` (`http://host:port`, no path).
    pub(crate) fn new(url: &str, token: Option<String>) -> anyhow::Result<Self> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| Failure::usage(format!("--server {url:?} is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Failure::usage(format!(
                "--server {url:?} must start with http:// or https://"
            )));
        }
        if let Some(t) = &token
            && (t.trim().is_empty() || t.chars().any(char::is_control))
        {
            return Err(Failure::usage(
                "--token is empty or holds control characters",
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Self {
            base: url.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .timeout(REQUEST_TIMEOUT);
        self.authorize(req)
    }

    fn authorize(&self, req: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// The server's URL with `path` (for paths with segments to escape).
    fn path_url(&self, path: &str) -> anyhow::Result<reqwest::Url> {
        reqwest::Url::parse(&format!("{}{path}", self.base))
            .map_err(|e| Failure::usage(format!("--server {}: {e}", self.base)))
    }

    /// Sends `req`; a 2xx answer's JSON body (or `null` when empty), else
    /// the error as one line with an exit code.
    async fn send(&self, req: RequestBuilder) -> anyhow::Result<(StatusCode, Value)> {
        let (status, body) = self.exchange(req).await?;
        if status.is_success() {
            return Ok((status, body));
        }
        Err(error(status, &body, &self.base))
    }

    /// Sends `req`: the status and the JSON body (or `null` when empty),
    /// whatever the status; `Err` only when no answer came.
    async fn exchange(&self, req: RequestBuilder) -> anyhow::Result<(StatusCode, Value)> {
        let response = req.send().await.map_err(|e| {
            let why = if e.is_timeout() {
                "it did not answer in time".to_owned()
            } else if e.is_connect() {
                "the connection was refused or failed (is `offload serve` running there?)"
                    .to_owned()
            } else {
                e.to_string()
            };
            Failure::with_code(
                code::FAILED,
                format!("cannot reach the server at {}: {why}", self.base),
            )
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|e| {
            Failure::with_code(
                code::FAILED,
                format!("the server at {} broke off its answer: {e}", self.base),
            )
        })?;
        let body: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, body))
    }

    async fn call<T: DeserializeOwned>(&self, req: RequestBuilder) -> anyhow::Result<T> {
        let (_, body) = self.send(req).await?;
        serde_json::from_value(body).with_context(|| {
            format!(
                "the server at {} answered in an unexpected shape",
                self.base
            )
        })
    }

    /// `POST /v1/tasks` with an array: all or nothing.
    pub(crate) async fn trigger_many(&self, tasks: Vec<NewTask>) -> anyhow::Result<Vec<Enqueued>> {
        let body: Vec<Value> = tasks.into_iter().map(task_body).collect::<Result<_, _>>()?;
        #[derive(serde::Deserialize)]
        struct Answer {
            ids: Vec<TaskId>,
            outcomes: Vec<EnqueueOutcome>,
        }
        let answer: Answer = self
            .call(self.request(Method::POST, "/v1/tasks").json(&body))
            .await?;
        Ok(answer
            .ids
            .into_iter()
            .zip(answer.outcomes)
            .map(|(id, outcome)| Enqueued { id, outcome })
            .collect())
    }

    /// `POST /v1/groups`: the group's id and its members' ids.
    pub(crate) async fn trigger_group(
        &self,
        members: Vec<NewTask>,
        callback: NewTask,
    ) -> anyhow::Result<(TaskId, Vec<TaskId>)> {
        let members: Vec<Value> = members
            .into_iter()
            .map(task_body)
            .collect::<Result<_, _>>()?;
        let body = json!({ "members": members, "callback": task_body(callback)? });
        #[derive(serde::Deserialize)]
        struct Answer {
            id: TaskId,
            members: Vec<TaskId>,
        }
        let answer: Answer = self
            .call(self.request(Method::POST, "/v1/groups").json(&body))
            .await?;
        Ok((answer.id, answer.members))
    }

    /// `GET /v1/groups/{id}`.
    pub(crate) async fn group(&self, id: TaskId) -> anyhow::Result<GroupStatus> {
        self.call(self.request(Method::GET, &format!("/v1/groups/{id}")))
            .await
    }

    /// `POST /v1/groups/{id}/abort`.
    pub(crate) async fn abort_group(
        &self,
        id: TaskId,
        reason: Option<String>,
    ) -> anyhow::Result<GroupStatus> {
        let req = self
            .request(Method::POST, &format!("/v1/groups/{id}/abort"))
            .query(&reason_query(reason));
        self.call(req).await
    }

    /// `POST /v1/limits`.
    pub(crate) async fn set_limit(&self, limit: &Limit) -> anyhow::Result<LimitRecord> {
        self.call(self.request(Method::POST, "/v1/limits").json(limit))
            .await
    }

    /// `GET /v1/limits`.
    pub(crate) async fn limits(&self) -> anyhow::Result<Vec<LimitRecord>> {
        #[derive(serde::Deserialize)]
        struct Page {
            limits: Vec<LimitRecord>,
        }
        let page: Page = self.call(self.request(Method::GET, "/v1/limits")).await?;
        Ok(page.limits)
    }

    /// `DELETE /v1/limits/{scope}/{target}`.
    pub(crate) async fn delete_limit(
        &self,
        scope: LimitScope,
        target: &str,
        reason: Option<String>,
    ) -> anyhow::Result<()> {
        let path = format!("/v1/limits/{}/{}", scope.as_str(), path_segment(target));
        let req = self
            .request(Method::DELETE, &path)
            .query(&reason_query(reason));
        self.send(req).await.map(|_| ())
    }

    /// `POST /v1/schedules`.
    pub(crate) async fn put_schedule(
        &self,
        schedule: &Schedule,
        paused: Option<bool>,
    ) -> anyhow::Result<ScheduleRecord> {
        let mut body = serde_json::to_value(schedule).context("cannot write the schedule")?;
        if let (Some(p), Some(obj)) = (paused, body.as_object_mut()) {
            obj.insert("paused".into(), Value::Bool(p));
        }
        let answer: Listed = self
            .call(self.request(Method::POST, "/v1/schedules").json(&body))
            .await?;
        Ok(answer.record)
    }

    /// `GET /v1/schedules`.
    pub(crate) async fn schedules(&self) -> anyhow::Result<Vec<ScheduleRecord>> {
        #[derive(serde::Deserialize)]
        struct Page {
            schedules: Vec<Listed>,
        }
        let page: Page = self
            .call(self.request(Method::GET, "/v1/schedules"))
            .await?;
        Ok(page.schedules.into_iter().map(|l| l.record).collect())
    }

    /// `POST /v1/schedules/{name}/pause` or `/resume`.
    pub(crate) async fn pause_schedule(
        &self,
        name: &str,
        paused: bool,
        reason: Option<String>,
    ) -> anyhow::Result<ScheduleRecord> {
        let verb = if paused { "pause" } else { "resume" };
        let req = self
            .request(
                Method::POST,
                &format!("/v1/schedules/{}/{verb}", path_segment(name)),
            )
            .query(&reason_query(reason));
        let answer: Listed = self.call(req).await?;
        Ok(answer.record)
    }

    /// `DELETE /v1/schedules/{name}`.
    pub(crate) async fn delete_schedule(
        &self,
        name: &str,
        reason: Option<String>,
    ) -> anyhow::Result<()> {
        let req = self
            .request(
                Method::DELETE,
                &format!("/v1/schedules/{}", path_segment(name)),
            )
            .query(&reason_query(reason));
        self.send(req).await.map(|_| ())
    }

    /// `GET /v1/tasks/{id}`: the task and its attempts.
    pub(crate) async fn get(&self, id: TaskId) -> anyhow::Result<(Task, Vec<Attempt>)> {
        let detail: TaskDetail = self
            .call(self.request(Method::GET, &format!("/v1/tasks/{id}")))
            .await?;
        Ok((detail.task, detail.attempts))
    }

    /// `GET /v1/tasks` with the filter as query parameters.
    pub(crate) async fn list(&self, params: TaskListParams) -> anyhow::Result<TaskPage> {
        let mut query: Vec<(&str, String)> = vec![("limit", params.limit.to_string())];
        let f = &params.filter;
        let join = |v: Vec<String>| v.join(",");
        if !f.statuses.is_empty() {
            query.push((
                "status",
                join(f.statuses.iter().map(|s| s.to_string()).collect()),
            ));
        }
        if !f.names.is_empty() {
            query.push(("name", join(f.names.clone())));
        }
        if !f.queues.is_empty() {
            query.push(("queue", join(f.queues.clone())));
        }
        if let Some(tag) = &f.tag {
            query.push(("tag", tag.clone()));
        }
        if let Some(c) = &params.cursor {
            query.push(("cursor", c.clone()));
        }
        #[derive(serde::Deserialize)]
        struct Page {
            tasks: Vec<Task>,
            next_cursor: Option<String>,
        }
        let page: Page = self
            .call(self.request(Method::GET, "/v1/tasks").query(&query))
            .await?;
        Ok(TaskPage {
            tasks: page.tasks,
            next_cursor: page.next_cursor,
        })
    }

    /// `POST /v1/tasks/{id}/abort`.
    pub(crate) async fn abort(&self, id: TaskId, reason: Option<String>) -> anyhow::Result<Task> {
        let req = self
            .request(Method::POST, &format!("/v1/tasks/{id}/abort"))
            .json(&json!({ "reason": reason }));
        self.call(req).await
    }

    /// `POST /v1/tasks/{id}/retry`.
    pub(crate) async fn retry(&self, id: TaskId, reason: Option<String>) -> anyhow::Result<Task> {
        let req = self
            .request(Method::POST, &format!("/v1/tasks/{id}/retry"))
            .query(&reason_query(reason));
        self.call(req).await
    }

    /// `DELETE /v1/tasks/{id}`.
    pub(crate) async fn delete(&self, id: TaskId, reason: Option<String>) -> anyhow::Result<()> {
        let req = self
            .request(Method::DELETE, &format!("/v1/tasks/{id}"))
            .query(&reason_query(reason));
        self.send(req).await.map(|_| ())
    }

    /// `POST /v1/tokens`: the new token's info and the whole token.
    pub(crate) async fn create_token(
        &self,
        role: offload::Role,
        label: Option<String>,
        reason: Option<String>,
    ) -> anyhow::Result<(offload::TokenInfo, String)> {
        let req = self.request(Method::POST, "/v1/tokens").json(&json!({
            "role": role,
            "label": label,
            "reason": reason,
        }));
        let mut made: Value = self.call(req).await?;
        let token = made["token"]
            .as_str()
            .map(str::to_owned)
            .context("the server's answer holds no token")?;
        if let Value::Object(fields) = &mut made {
            fields.remove("token");
        }
        let info = serde_json::from_value(made).context("the server's token is malformed")?;
        Ok((info, token))
    }

    /// `GET /v1/tokens`.
    pub(crate) async fn tokens(&self) -> anyhow::Result<Vec<offload::TokenInfo>> {
        #[derive(serde::Deserialize)]
        struct Tokens {
            tokens: Vec<offload::TokenInfo>,
        }
        let list: Tokens = self.call(self.request(Method::GET, "/v1/tokens")).await?;
        Ok(list.tokens)
    }

    /// `DELETE /v1/tokens/{id}`: `false` when there was none.
    pub(crate) async fn delete_token(
        &self,
        id: &str,
        reason: Option<String>,
    ) -> anyhow::Result<bool> {
        self.delete_named("/v1/tokens", id, reason).await
    }

    /// `POST /v1/webhooks`: the subscription with its secret.
    pub(crate) async fn add_webhook(
        &self,
        url: &str,
        events: &[offload::EventKind],
        names: &[String],
        queues: &[String],
        reason: Option<String>,
    ) -> anyhow::Result<Value> {
        let req = self.request(Method::POST, "/v1/webhooks").json(&json!({
            "url": url,
            "events": events,
            "name": names,
            "queue": queues,
            "reason": reason,
        }));
        self.call(req).await
    }

    /// `GET /v1/webhooks`.
    pub(crate) async fn webhooks(&self) -> anyhow::Result<Vec<Value>> {
        let list: Value = self.call(self.request(Method::GET, "/v1/webhooks")).await?;
        Ok(list["webhooks"].as_array().cloned().unwrap_or_default())
    }

    /// `DELETE /v1/webhooks/{id}`: `false` when there was none.
    pub(crate) async fn delete_webhook(
        &self,
        id: &str,
        reason: Option<String>,
    ) -> anyhow::Result<bool> {
        self.delete_named("/v1/webhooks", id, reason).await
    }

    /// `GET /v1/webhooks/deliveries`.
    pub(crate) async fn deliveries(
        &self,
        webhook_id: Option<String>,
        task_id: Option<TaskId>,
        limit: u32,
    ) -> anyhow::Result<Vec<Value>> {
        let mut query: Vec<(&str, String)> = vec![("limit", limit.to_string())];
        if let Some(w) = webhook_id {
            query.push(("webhook_id", w));
        }
        if let Some(t) = task_id {
            query.push(("task_id", t.to_string()));
        }
        let list: Value = self
            .call(
                self.request(Method::GET, "/v1/webhooks/deliveries")
                    .query(&query),
            )
            .await?;
        Ok(list["deliveries"].as_array().cloned().unwrap_or_default())
    }

    /// `DELETE {collection}/{id}` with an optional reason: `false` on 404.
    async fn delete_named(
        &self,
        collection: &str,
        id: &str,
        reason: Option<String>,
    ) -> anyhow::Result<bool> {
        let mut url = self.path_url(collection)?;
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("the server URL cannot take a path"))?
            .push(id);
        let req = self
            .authorize(self.http.delete(url).timeout(REQUEST_TIMEOUT))
            .query(&reason_query(reason));
        match self.exchange(req).await? {
            (status, _) if status.is_success() => Ok(true),
            (StatusCode::NOT_FOUND, _) => Ok(false),
            (status, body) => Err(error(status, &body, &self.base)),
        }
    }

    /// `GET /v1/audit`.
    pub(crate) async fn audit_log(
        &self,
        params: offload::AuditListParams,
    ) -> anyhow::Result<offload::AuditPage> {
        let mut query: Vec<(&str, String)> = vec![("limit", params.limit.to_string())];
        if !params.actions.is_empty() {
            query.push(("action", params.actions.join(",")));
        }
        if let Some(t) = params.target {
            query.push(("target", t));
        }
        if let Some(c) = params.before {
            query.push(("cursor", c.to_string()));
        }
        #[derive(serde::Deserialize)]
        struct Page {
            records: Vec<offload::AuditRecord>,
            next_cursor: Option<i64>,
        }
        let page: Page = self
            .call(self.request(Method::GET, "/v1/audit").query(&query))
            .await?;
        Ok(offload::AuditPage {
            records: page.records,
            next_cursor: page.next_cursor,
        })
    }

    /// `POST /v1/purge`.
    pub(crate) async fn purge(
        &self,
        filter: &TaskFilter,
        finished_before: Option<chrono::DateTime<chrono::Utc>>,
        reason: Option<String>,
    ) -> anyhow::Result<u64> {
        #[derive(serde::Deserialize)]
        struct Purged {
            purged: u64,
        }
        // the CLI checked that an unfiltered purge was asked for with --all
        let all = filter.statuses.is_empty()
            && filter.names.is_empty()
            && filter.queues.is_empty()
            && filter.tag.is_none()
            && finished_before.is_none();
        let req = self.request(Method::POST, "/v1/purge").json(&json!({
            "all": all,
            "status": filter.statuses,
            "name": filter.names,
            "queue": filter.queues,
            "tag": filter.tag,
            "finished_before": finished_before,
            "reason": reason,
        }));
        let purged: Purged = self.call(req).await?;
        Ok(purged.purged)
    }

    /// Waits for the task to end (`GET /v1/tasks/{id}/result?wait=`, asked
    /// again until `timeout`): the ended task, or `offload::Error::Timeout`.
    pub(crate) async fn wait(&self, id: TaskId, timeout: Duration) -> anyhow::Result<Task> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let wait = left.min(MAX_WAIT_PER_REQUEST);
            let req = self
                .request(Method::GET, &format!("/v1/tasks/{id}/result"))
                .query(&[("wait", format!("{}ms", wait.as_millis()))])
                .timeout(wait + REQUEST_TIMEOUT);
            let (status, _) = self.send(req).await?;
            if status == StatusCode::OK {
                return Ok(self.get(id).await?.0);
            }
            if left.is_zero() {
                return Err(offload::Error::Timeout(timeout).into());
            }
        }
    }

    /// Waits until something may have happened to task `id`: an event of
    /// it on `GET /v1/events` (a stream kept open between calls), or `max`.
    pub(crate) async fn changed(&self, feed: &mut Option<EventFeed>, id: TaskId, max: Duration) {
        if feed.is_none() {
            let req = self
                .request(Method::GET, "/v1/events")
                .query(&[("task_id", id.to_string())])
                .header("accept", "text/event-stream");
            // a stream must not time out like a request
            let req = req.timeout(Duration::from_secs(365 * 24 * 3600));
            if let Ok(response) = req.send().await
                && response.status().is_success()
            {
                *feed = Some(EventFeed {
                    response,
                    buffer: Vec::new(),
                });
            }
        }
        let Some(f) = feed.as_mut() else {
            tokio::time::sleep(max).await;
            return;
        };
        match tokio::time::timeout(max, f.next_event()).await {
            Ok(true) | Err(_) => {}
            // the stream ended: open another next time
            Ok(false) => *feed = None,
        }
    }
}

/// An open `text/event-stream` answer, read one event at a time.
pub(crate) struct EventFeed {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl EventFeed {
    /// Reads until the end of the next event; `false` when the stream ended.
    async fn next_event(&mut self) -> bool {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                if block.starts_with(b":") {
                    continue; // a keep-alive comment
                }
                return true;
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) | Err(_) => return false,
            }
        }
    }
}

fn reason_query(reason: Option<String>) -> Vec<(&'static str, String)> {
    reason.map(|r| vec![("reason", r)]).unwrap_or_default()
}

/// A task as the enqueue body takes it: `name`, `input` and the options
/// beside them.
/// A schedule as the API lists it: the record and its next run times.
#[derive(serde::Deserialize)]
struct Listed {
    #[serde(flatten)]
    record: ScheduleRecord,
    /// Taken here so the record's definition does not see it.
    #[serde(default, rename = "upcoming")]
    _upcoming: serde::de::IgnoredAny,
}

/// A schedule name as one URL path segment (names may hold `/` and `:`).
fn path_segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn task_body(task: NewTask) -> anyhow::Result<Value> {
    let mut body = serde_json::to_value(&task.options).context("cannot write the task options")?;
    let Value::Object(fields) = &mut body else {
        anyhow::bail!("task options did not serialize as an object");
    };
    fields.insert("name".into(), Value::String(task.name));
    fields.insert("input".into(), task.input);
    Ok(body)
}

/// An error answer as one line, with the exit code it deserves: bad input
/// (400, 413, 415, 422) is 2, everything else 1.
fn error(status: StatusCode, body: &Value, base: &str) -> anyhow::Error {
    let message = body["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{body}"));
    let exit = match status {
        StatusCode::BAD_REQUEST
        | StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::UNSUPPORTED_MEDIA_TYPE
        | StatusCode::UNPROCESSABLE_ENTITY => code::USAGE,
        _ => code::FAILED,
    };
    let line = match status {
        StatusCode::UNAUTHORIZED => format!(
            "the server at {base} refused the request: {message} (give a token with --token or OFFLOAD_TOKEN)"
        ),
        StatusCode::FORBIDDEN => format!("the server at {base} refused the request: {message}"),
        _ => match body["error"]["field"].as_str() {
            Some(field) if !message.contains(field) => format!("{field}: {message}"),
            _ => message,
        },
    };
    Failure::with_code(exit, line)
}
