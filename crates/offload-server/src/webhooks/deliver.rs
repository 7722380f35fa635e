//! The sender: claims due deliveries, POSTs each (signed, no redirects,
//! only to allowed addresses) and records the attempt: delivered on 2xx,
//! otherwise retried with doubling back-off until `max_attempts`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt as _;
use offload::{
    Client, Delivery, DeliveryAttempt, DeliveryClaimParams, DeliveryRecordParams, DeliveryStatus,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{WebhookSettings, guard, sign};

/// Deliveries claimed per round, all attempted at once, so every claim
/// ends within one attempt's time limit (well inside its lease).
const BATCH: u32 = 16;
/// Without a wake-up, due deliveries are looked for this often.
const POLL: Duration = Duration::from_secs(1);
/// Longest back-off between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Error texts kept per attempt.
const MAX_ERROR: usize = 500;

pub(crate) fn http_client(settings: &WebhookSettings) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(guard::resolver(settings.allow_private_targets))
        .timeout(settings.timeout)
        .user_agent(concat!("offload-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

pub(crate) async fn run(
    client: Client,
    http: reqwest::Client,
    settings: WebhookSettings,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    // tasks' own webhooks are signed with the store's shared secret
    let task_secret = loop {
        match client
            .store()
            .webhook_task_secret(&sign::new_secret())
            .await
        {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the task webhook secret; trying again");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    };
    let mut next_retry: Option<tokio::time::Instant> = None;
    loop {
        let now = Utc::now();
        let claimed = client
            .store()
            .webhook_delivery_claim(&DeliveryClaimParams {
                limit: BATCH,
                now,
                lease: settings.timeout + Duration::from_secs(30),
            })
            .await;
        let claimed = match claimed {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "claiming webhook deliveries failed");
                Vec::new()
            }
        };
        let full = claimed.len() >= BATCH as usize;
        if !claimed.is_empty() {
            let subscriptions = match client.store().webhook_list().await {
                Ok(s) => s,
                Err(e) => {
                    // no attempt is made (or counted); the claims lapse and
                    // the deliveries are taken again
                    tracing::warn!(error = %e, "cannot read the webhook subscriptions");
                    tokio::select! {
                        () = tokio::time::sleep(POLL) => continue,
                        () = stop.cancelled() => return,
                    }
                }
            };
            let retries: Vec<Option<chrono::DateTime<Utc>>> = futures::stream::iter(claimed)
                .map(|d| {
                    let secret = match &d.webhook_id {
                        None => Some(task_secret.clone()),
                        Some(id) => subscriptions
                            .iter()
                            .find(|s| &s.id == id)
                            .map(|s| s.secret.clone()),
                    };
                    attempt(&client, &http, &settings, d, secret)
                })
                .buffer_unordered(BATCH as usize)
                .collect()
                .await;
            for at in retries.into_iter().flatten() {
                let wait = (at - Utc::now()).to_std().unwrap_or_default();
                let when = tokio::time::Instant::now() + wait;
                next_retry = Some(next_retry.map_or(when, |n| n.min(when)));
            }
        }
        if full {
            continue;
        }
        let until = next_retry.unwrap_or_else(|| tokio::time::Instant::now() + POLL);
        let until = until.min(tokio::time::Instant::now() + POLL);
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep_until(until) => {
                if next_retry.is_some_and(|n| n <= tokio::time::Instant::now()) {
                    next_retry = None;
                }
            }
            () = stop.cancelled() => return,
        }
    }
}

/// One attempt at `delivery`, recorded; returns when it is due again if
/// it will be retried.
async fn attempt(
    client: &Client,
    http: &reqwest::Client,
    settings: &WebhookSettings,
    delivery: Delivery,
    secret: Option<String>,
) -> Option<chrono::DateTime<Utc>> {
    let number = u32::try_from(delivery.attempts.len()).unwrap_or(u32::MAX - 1) + 1;
    let at = Utc::now();
    let started = Instant::now();
    let (status_code, error) = match secret {
        None => (None, Some("its subscription was deleted".to_owned())),
        Some(secret) => send(http, settings, &delivery, &secret, at.timestamp()).await,
    };
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let delivered = error.is_none();
    let (status, retry_at) = if delivered {
        (DeliveryStatus::Delivered, None)
    } else if number >= settings.max_attempts {
        (DeliveryStatus::Failed, None)
    } else {
        let backoff = settings
            .retry_initial
            .saturating_mul(2u32.saturating_pow(number.saturating_sub(1).min(20)))
            .min(MAX_BACKOFF);
        let retry_at = Utc::now() + chrono::Duration::from_std(backoff).unwrap_or_default();
        (DeliveryStatus::Pending, Some(retry_at))
    };
    let host = reqwest::Url::parse(&delivery.url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    match &error {
        None => tracing::debug!(delivery = %delivery.id, host, number, "webhook delivered"),
        Some(e) => {
            tracing::info!(delivery = %delivery.id, host, number, error = %e, "webhook attempt failed")
        }
    }
    let recorded = client
        .store()
        .webhook_delivery_record(&DeliveryRecordParams {
            id: delivery.id.clone(),
            attempt: DeliveryAttempt {
                attempt: number,
                at,
                status_code,
                latency_ms,
                error,
            },
            status,
            retry_at,
        })
        .await;
    if let Err(e) = recorded {
        tracing::warn!(delivery = %delivery.id, error = %e, "a webhook attempt could not be recorded; it will be made again");
        return None;
    }
    retry_at
}

/// POSTs the delivery: the status code, and the error if it was not a success.
async fn send(
    http: &reqwest::Client,
    settings: &WebhookSettings,
    delivery: &Delivery,
    secret: &str,
    timestamp: i64,
) -> (Option<u16>, Option<String>) {
    let Ok(url) = reqwest::Url::parse(&delivery.url) else {
        return (None, Some(format!("{} is not a URL", delivery.url)));
    };
    if !settings.allow_private_targets
        && let Some(ip) = guard::literal_ip(&url)
        && !guard::is_public(ip)
    {
        return (None, Some(guard::refusal(&delivery.url, ip)));
    }
    let body = delivery.payload.clone().into_bytes();
    let signature = match sign::signature(secret, &delivery.id, timestamp, &body) {
        Ok(s) => s,
        Err(e) => return (None, Some(e)),
    };
    let sent = http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &delivery.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    match sent {
        // without the URL: a path may carry a secret (chat webhooks do)
        Err(e) => (None, Some(clip(&describe(&e.without_url())))),
        Ok(response) => {
            let status = response.status();
            // read (a bounded part of) the answer so the connection can be reused
            let _ = tokio::time::timeout(Duration::from_secs(1), response.bytes()).await;
            if status.is_success() {
                (Some(status.as_u16()), None)
            } else {
                (
                    Some(status.as_u16()),
                    Some(format!("the target answered {status}")),
                )
            }
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn clip(text: &str) -> String {
    text.chars().take(MAX_ERROR).collect()
}
