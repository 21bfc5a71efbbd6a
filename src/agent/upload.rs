//! Upload: batches leave the spool oldest first; each is removed only after the
//! collector's acknowledgement. Failures back off exponentially with jitter; a collector
//! that says 429/503 with Retry-After is obeyed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use rand::RngExt;
use reqwest::StatusCode;

use super::spool::Spool;
use crate::collector::Collector;
use crate::collector::ingest::Uploader;
use crate::observation::Batch;

/// What became of one upload attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum SendResult {
    /// The collector has the batch (perhaps from an earlier attempt).
    Acked,
    /// Try again later; the collector may say when.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// The collector will never take this batch (it is invalid): drop it, loudly.
    Rejected(String),
}

/// Where batches go.
pub trait Sink: Send + Sync {
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, SendResult>;
}

/// Uploads to a collector over HTTP(S).
pub struct HttpSink {
    client: reqwest::Client,
    url: reqwest::Url,
    token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("collector URL {0}: {1}")]
    Url(String, String),
    #[error("CA file {path}: {reason}")]
    Ca { path: String, reason: String },
    #[error("HTTP client: {0}")]
    Client(String),
}

/// Builds the HTTP client agents use to talk to the collector (TLS verified, with an
/// extra trusted CA if given).
pub fn collector_client(
    ca_file: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<reqwest::Client, SinkError> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("blackout-agent/", env!("CARGO_PKG_VERSION")));
    if let Some(p) = ca_file {
        let pem = std::fs::read(p).map_err(|e| SinkError::Ca {
            path: p.display().to_string(),
            reason: e.to_string(),
        })?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| SinkError::Ca {
            path: p.display().to_string(),
            reason: e.to_string(),
        })?;
        b = b.add_root_certificate(cert);
    }
    b.build().map_err(|e| SinkError::Client(e.to_string()))
}

impl HttpSink {
    pub fn new(
        base: &reqwest::Url,
        token: Option<String>,
        client: reqwest::Client,
    ) -> Result<HttpSink, SinkError> {
        let url = base
            .join("api/v1/observations")
            .map_err(|e| SinkError::Url(base.to_string(), e.to_string()))?;
        Ok(HttpSink { client, url, token })
    }
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

impl Sink for HttpSink {
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, SendResult> {
        Box::pin(async move {
            let mut req = self.client.post(self.url.clone()).json(batch);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    return SendResult::Retry {
                        after: None,
                        reason: format!("request failed: {e}"),
                    };
                }
            };
            let status = resp.status();
            let after = retry_after(&resp);
            let body = resp.text().await.unwrap_or_default();
            match status {
                s if s.is_success() => SendResult::Acked,
                StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => {
                    SendResult::Rejected(format!("{status}: {body}"))
                }
                // Auth errors are an operator's mistake to fix: keep the data meanwhile.
                _ => SendResult::Retry {
                    after,
                    reason: format!("{status}: {body}"),
                },
            }
        })
    }
}

/// Hands batches straight to a collector in the same process (`blackout standalone`).
pub struct InProcessSink(pub Arc<Collector>);

impl Sink for InProcessSink {
    fn send<'a>(&'a self, batch: &'a Batch) -> BoxFuture<'a, SendResult> {
        Box::pin(async move {
            let c = self.0.clone();
            let b = batch.clone();
            let r = tokio::task::spawn_blocking(move || {
                c.ingest(&Uploader::InProcess, b, chrono::Utc::now())
            })
            .await;
            match r {
                Ok(Ok(_)) => SendResult::Acked,
                Ok(Err(crate::collector::IngestError::Invalid(m))) => SendResult::Rejected(m),
                Ok(Err(e)) => SendResult::Retry {
                    after: None,
                    reason: e.to_string(),
                },
                Err(e) => SendResult::Retry {
                    after: None,
                    reason: e.to_string(),
                },
            }
        })
    }
}

/// Exponential backoff with full jitter: 1 s, 2 s, 4 s ... capped, each drawn uniformly
/// from [cap/2, cap] so a fleet that lost its collector at once does not return at once.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            attempt: 0,
            base,
            max,
        }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(16));
        self.attempt = self.attempt.saturating_add(1);
        let cap = exp.min(self.max);
        let lo = cap / 2;
        lo + Duration::from_secs_f64(rand::rng().random_range(0.0..=1.0) * (cap - lo).as_secs_f64())
    }
}

/// Uploads the spool's batches until `stop` fires; wakes on `more` when a batch is added.
pub async fn upload_loop(
    spool: Arc<Mutex<Spool>>,
    sink: Arc<dyn Sink>,
    more: Arc<tokio::sync::Notify>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
    loop {
        let front = spool.lock().expect("spool lock").front();
        let batch = match front {
            Ok(Some(b)) => b,
            Ok(None) => {
                tokio::select! {
                    _ = more.notified() => continue,
                    _ = stop.cancelled() => return,
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the spool; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => continue,
                    _ = stop.cancelled() => return,
                }
            }
        };
        let result = tokio::select! {
            r = sink.send(&batch) => r,
            _ = stop.cancelled() => return,
        };
        let delay = match result {
            SendResult::Acked => {
                backoff.reset();
                if let Err(e) = spool.lock().expect("spool lock").ack_front() {
                    tracing::error!(error = %e, "cannot remove an acknowledged batch from the spool");
                }
                tracing::debug!(batch = %batch.batch_id, observations = batch.observations.len(), "batch acknowledged");
                continue;
            }
            SendResult::Rejected(reason) => {
                tracing::error!(batch = %batch.batch_id, observations = batch.observations.len(), %reason, "collector rejected a batch; dropping it");
                if let Err(e) = spool.lock().expect("spool lock").ack_front() {
                    tracing::error!(error = %e, "cannot remove a rejected batch from the spool");
                }
                continue;
            }
            SendResult::Retry { after, reason } => {
                let d = after.unwrap_or_else(|| backoff.next_delay());
                tracing::warn!(batch = %batch.batch_id, %reason, retry_in_secs = d.as_secs_f64(), "upload failed");
                d
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let d: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(500) && d[0] <= Duration::from_secs(1));
        assert!(d[3] >= Duration::from_secs(4) && d[3] <= Duration::from_secs(8));
        assert!(d[9] >= Duration::from_secs(30) && d[9] <= Duration::from_secs(60));
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }
}
