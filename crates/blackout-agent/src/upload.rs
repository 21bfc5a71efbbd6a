//! Upload: batches leave the spool oldest first; each is removed only after the
//! collector's acknowledgement. Failures back off exponentially with jitter; a collector
//! that says 429/503 with Retry-After is obeyed.
//!
//! Batches go out in the compact encoding under zstd
//! (`Content-Type: application/vnd.blackout.batch.v2`, `Content-Encoding: zstd`): about
//! a tenth of their JSON. A collector that does not speak it answers 415 (or, older than
//! the compact encoding, 400: it read the body as JSON); the batch then goes again as
//! JSON, and when that is taken the agent sends JSON to it from then on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use rand::RngExt;
use reqwest::StatusCode;

use super::catalog::{MAX_UPLOAD_RESPONSE_BYTES, read_capped};
use super::spool::{Outgoing, Spool};
use blackout_model::observation::{Batch, SpoolStatus};

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
    /// The body exceeds the collector's limit (413): split it and send the halves.
    TooLarge(String),
}

/// Where batches go: the oldest spooled batch, with the spool's status as it leaves.
pub trait Sink: Send + Sync {
    fn send<'a>(&'a self, batch: &'a Outgoing, status: SpoolStatus) -> BoxFuture<'a, SendResult>;
}

/// Uploads to a collector over HTTP(S).
pub struct HttpSink {
    client: reqwest::Client,
    url: reqwest::Url,
    token: Option<String>,
    /// Whether the collector is still believed to take compact batches.
    compact: std::sync::atomic::AtomicBool,
    /// Sent with every upload, so that the collector knows when this agent is silent.
    upload_interval_secs: Option<u64>,
}

/// The two forms an upload body takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    CompactZstd,
    Json,
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
        Ok(HttpSink {
            client,
            url,
            token,
            compact: std::sync::atomic::AtomicBool::new(true),
            upload_interval_secs: None,
        })
    }

    /// Declares how often this agent reports (its `upload_interval_secs`) with every
    /// upload ([`blackout_model::observation::UPLOAD_INTERVAL_HEADER`]).
    pub fn with_upload_interval(mut self, every: Duration) -> HttpSink {
        self.upload_interval_secs = Some(every.as_secs().max(1));
        self
    }

    /// Whether uploads still go out compact (false once the collector refused them).
    pub fn sends_compact(&self) -> bool {
        self.compact.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// One attempt in one form: the answer's status, its Retry-After and a short reason.
    async fn post(
        &self,
        batch: &Outgoing,
        status: SpoolStatus,
        form: Form,
    ) -> Result<(StatusCode, Option<Duration>, String), String> {
        let mut req = self.client.post(self.url.clone());
        req = match form {
            Form::Json => req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(batch.json(status)),
            Form::CompactZstd => {
                let body = batch
                    .compact_zstd(status)
                    .map_err(|e| format!("spooled batch unreadable: {e}"))?;
                req.header(
                    reqwest::header::CONTENT_TYPE,
                    blackout_model::compact::CONTENT_TYPE,
                )
                .header(reqwest::header::CONTENT_ENCODING, "zstd")
                .body(body)
            }
        };
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(secs) = self.upload_interval_secs {
            req = req.header(blackout_model::observation::UPLOAD_INTERVAL_HEADER, secs);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let code = resp.status();
        let after = retry_after(&resp);
        // Only a short reason is needed: a collector (or what poses as one) that
        // answers with an endless body must not fill the agent's memory.
        let body = match read_capped(resp, MAX_UPLOAD_RESPONSE_BYTES).await {
            Ok(Ok(b)) => String::from_utf8_lossy(&b).into_owned(),
            Ok(Err(read)) => format!(
                "(response body longer than {MAX_UPLOAD_RESPONSE_BYTES} bytes, {read} read, not kept)"
            ),
            Err(e) => format!("(response body unreadable: {e})"),
        };
        Ok((code, after, body))
    }
}

/// Retry-After as delay-seconds or as an HTTP date (RFC 9110 allows both). A date is
/// read by `httpdate`, which takes all three forms a recipient must accept (IMF-fixdate,
/// RFC 850, asctime) and, as the grammar says, only GMT: a date with another zone is not
/// an HTTP date, and the agent then keeps its own backoff.
fn parse_retry_after(v: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::from(now))
            .unwrap_or(Duration::ZERO),
    )
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    let v = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    parse_retry_after(v, chrono::Utc::now())
}

impl Sink for HttpSink {
    fn send<'a>(&'a self, batch: &'a Outgoing, status: SpoolStatus) -> BoxFuture<'a, SendResult> {
        Box::pin(async move {
            let compact = self.sends_compact();
            let form = if compact {
                Form::CompactZstd
            } else {
                Form::Json
            };
            let mut answer = self.post(batch, status, form).await;
            // 415: a collector that knows the compact batch and refuses it, or a proxy
            // that refuses the coding. 400: a collector older than the compact batch (it
            // read it as JSON). Either way the same batch goes again as JSON; only a
            // collector that then takes it is switched to JSON for good.
            if let Ok((
                code @ (StatusCode::UNSUPPORTED_MEDIA_TYPE | StatusCode::BAD_REQUEST),
                _,
                why,
            )) = &answer
                && compact
            {
                let (code, why) = (*code, why.clone());
                answer = self.post(batch, status, Form::Json).await;
                let json_taken = matches!(&answer, Ok((c, _, _)) if c.is_success());
                if code == StatusCode::UNSUPPORTED_MEDIA_TYPE || json_taken {
                    self.compact
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(url = %self.url, status = code.as_u16(), reason = %why, "the collector does not take compact batches; sending JSON from now on");
                }
            }
            let (status, after, body) = match answer {
                Ok(a) => a,
                Err(reason) => {
                    return SendResult::Retry {
                        after: None,
                        reason,
                    };
                }
            };
            match status {
                s if s.is_success() => SendResult::Acked,
                StatusCode::BAD_REQUEST => SendResult::Rejected(format!("{status}: {body}")),
                StatusCode::PAYLOAD_TOO_LARGE => SendResult::TooLarge(format!("{status}: {body}")),
                // Auth errors are an operator's mistake to fix: keep the data meanwhile.
                _ => SendResult::Retry {
                    after,
                    reason: format!("{status}: {body}"),
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

/// Longest wait between two upload attempts while the collector is unreachable: a
/// backlog lands within seconds of the collector coming back (late data completes the
/// evidence of the event that cut the agent off), at the cost of one small request per
/// agent every few seconds during an outage.
pub const MAX_UPLOAD_BACKOFF: Duration = Duration::from_secs(15);

/// Longest wait a collector's Retry-After may impose; beyond it the agent tries anyway
/// (a misconfigured proxy must not park a fleet for a day).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// How long an agent told to stop keeps uploading what it spooled, so that a clean
/// restart leaves nothing behind when the collector is reachable.
pub const DRAIN: Duration = Duration::from_secs(5);

/// The delay a Retry-After asks for, stretched by up to a fifth so that agents told the
/// same thing at once do not come back at once.
fn obey_retry_after(after: Duration) -> Duration {
    let after = after.min(MAX_RETRY_AFTER);
    let spread = after / 5 + Duration::from_millis(250);
    after + Duration::from_secs_f64(rand::rng().random_range(0.0..=1.0) * spread.as_secs_f64())
}

/// Halves of a batch the collector found too large. Their ids derive from the parent's,
/// so a split repeated after a crash yields the same ids and the collector's dedup holds.
fn split(batch: &Batch) -> Option<[Batch; 2]> {
    let n = batch.observations.len();
    if n < 2 || batch.batch_id.len() + 2 > 128 {
        return None;
    }
    let (a, b) = batch.observations.split_at(n / 2);
    let half = |suffix: &str, obs: &[blackout_model::observation::Observation]| Batch {
        batch_id: format!("{}.{suffix}", batch.batch_id),
        agent: batch.agent.clone(),
        observations: obs.to_vec(),
        spool: batch.spool,
    };
    Some([half("a", a), half("b", b)])
}

/// Uploads the spool's batches, oldest first, until `stop` fires; wakes on `more` when
/// a batch is added. After `stop` it drains: it keeps uploading for at most [`DRAIN`],
/// until the spool is empty and `flushed` says no batch will be added any more; it
/// gives up at the first failure (what is left stays spooled for the next start).
pub async fn upload_loop(
    spool: Arc<Mutex<Spool>>,
    sink: Arc<dyn Sink>,
    more: Arc<tokio::sync::Notify>,
    stop: tokio_util::sync::CancellationToken,
    flushed: tokio_util::sync::CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_secs(1), MAX_UPLOAD_BACKOFF);
    let mut deadline: Option<tokio::time::Instant> = None;
    let mut flush_seen = false;
    loop {
        if deadline.is_none() && stop.is_cancelled() {
            deadline = Some(tokio::time::Instant::now() + DRAIN);
        }
        // The last batch comes only after the probes in flight end: the drain window
        // starts again then, so a long probe timeout does not eat it.
        if deadline.is_some() && !flush_seen && flushed.is_cancelled() {
            flush_seen = true;
            deadline = Some(tokio::time::Instant::now() + DRAIN);
        }
        let front = {
            let mut s = spool.lock().expect("spool lock");
            let front = s.front_outgoing();
            let status = SpoolStatus {
                observations: s.observations(),
                dropped_observations: s.dropped_observations(),
                catalog_refusals: super::catalog::REFUSALS
                    .load(std::sync::atomic::Ordering::Relaxed),
                politeness_skips: super::run::POLITENESS_SKIPS
                    .load(std::sync::atomic::Ordering::Relaxed),
            };
            front.map(|f| f.map(|out| (out, status)))
        };
        let (batch, status) = match front {
            Ok(Some(bs)) => bs,
            Ok(None) => match deadline {
                Some(_) if flushed.is_cancelled() => return,
                // The batcher's last flush is bounded by the probe timeout in `run`.
                Some(_) => {
                    tokio::select! {
                        _ = more.notified() => continue,
                        _ = flushed.cancelled() => continue,
                    }
                }
                None => {
                    tokio::select! {
                        _ = more.notified() => continue,
                        _ = stop.cancelled() => continue,
                    }
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot read the spool; retrying");
                if deadline.is_some() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => continue,
                    _ = stop.cancelled() => continue,
                }
            }
        };
        let result = match deadline {
            Some(d) => match tokio::time::timeout_at(d, sink.send(&batch, status)).await {
                Ok(r) => r,
                Err(_) => return,
            },
            None => tokio::select! {
                r = sink.send(&batch, status) => r,
                // Abandoned mid-way: sent again while draining; the collector's dedup
                // makes that harmless.
                _ = stop.cancelled() => continue,
            },
        };
        let counted = match &result {
            SendResult::Acked => crate::metrics::UploadResult::Accepted,
            SendResult::Retry { .. } => crate::metrics::UploadResult::Failed,
            SendResult::Rejected(_) => crate::metrics::UploadResult::Rejected,
            SendResult::TooLarge(_) => crate::metrics::UploadResult::TooLarge,
        };
        crate::metrics::STATS.upload(counted, chrono::Utc::now());
        let delay = match result {
            SendResult::Acked => {
                backoff.reset();
                if let Err(e) = spool.lock().expect("spool lock").ack(batch.key) {
                    tracing::error!(error = %e, "cannot remove an acknowledged batch from the spool");
                }
                tracing::debug!(batch = %batch.batch_id, observations = batch.observations, "batch acknowledged");
                continue;
            }
            SendResult::TooLarge(reason) => {
                let mut sp = spool.lock().expect("spool lock");
                let parts = batch.batch().ok().and_then(|b| split(&b));
                let r = match parts {
                    Some([a, b]) => {
                        tracing::warn!(batch = %batch.batch_id, observations = batch.observations, %reason, "collector found the batch too large; splitting it");
                        sp.requeue(a)
                            .and_then(|_| sp.requeue(b))
                            .and_then(|_| sp.ack(batch.key))
                    }
                    None => {
                        tracing::error!(batch = %batch.batch_id, %reason, "collector refuses even the smallest part of a batch; dropping it");
                        sp.ack(batch.key)
                    }
                };
                if let Err(e) = r {
                    tracing::error!(error = %e, "cannot split a batch in the spool");
                }
                continue;
            }
            SendResult::Rejected(reason) => {
                tracing::error!(batch = %batch.batch_id, observations = batch.observations, %reason, "collector rejected a batch; dropping it");
                if let Err(e) = spool.lock().expect("spool lock").ack(batch.key) {
                    tracing::error!(error = %e, "cannot remove a rejected batch from the spool");
                }
                continue;
            }
            SendResult::Retry { after, reason } => {
                if deadline.is_some() {
                    tracing::info!(batch = %batch.batch_id, %reason, "stopping with batches still spooled");
                    return;
                }
                let d = match after {
                    Some(a) => obey_retry_after(a),
                    None => backoff.next_delay(),
                };
                tracing::warn!(batch = %batch.batch_id, %reason, retry_in_ms = d.as_millis() as u64, "upload failed");
                d
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes batches of at most `max` observations, answers 413 to larger ones.
    struct Small {
        max: usize,
        got: Mutex<Vec<Batch>>,
    }

    impl Sink for Small {
        fn send<'a>(&'a self, out: &'a Outgoing, status: SpoolStatus) -> BoxFuture<'a, SendResult> {
            let b: Batch = serde_json::from_slice(&out.json(status)).expect("a batch body");
            let r = if b.observations.len() > self.max {
                SendResult::TooLarge("413".into())
            } else {
                self.got.lock().unwrap().push(b);
                SendResult::Acked
            };
            Box::pin(async move { r })
        }
    }

    #[tokio::test]
    async fn a_batch_too_large_is_split_until_it_fits_and_nothing_is_lost() {
        let d = tempfile::tempdir().unwrap();
        let o: blackout_model::observation::Observation = serde_json::from_str(
            r#"{"agent":"a","target":"t","country":"KZ","asn":1,"signal":"icmp","measured_at":"2022-01-05T10:30:00Z","ok":true}"#,
        )
        .unwrap();
        let obs: Vec<_> = (0..10)
            .map(|i| blackout_model::observation::Observation {
                target: format!("t{i}"),
                ..o.clone()
            })
            .collect();
        let spool = Arc::new(Mutex::new(Spool::open(d.path(), 1 << 20).unwrap()));
        spool
            .lock()
            .unwrap()
            .push(Batch {
                batch_id: "a-1".into(),
                agent: "a".into(),
                observations: obs.clone(),
                spool: None,
            })
            .unwrap();
        let sink = Arc::new(Small {
            max: 3,
            got: Mutex::new(Vec::new()),
        });
        let stop = tokio_util::sync::CancellationToken::new();
        let flushed = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(upload_loop(
            spool.clone(),
            sink.clone(),
            Arc::new(tokio::sync::Notify::new()),
            stop.clone(),
            flushed.clone(),
        ));
        for _ in 0..200 {
            if spool.lock().unwrap().batches() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.cancel();
        flushed.cancel();
        task.await.unwrap();
        let got = sink.got.lock().unwrap();
        let mut targets: Vec<String> = got
            .iter()
            .flat_map(|b| b.observations.iter().map(|o| o.target.clone()))
            .collect();
        targets.sort();
        let mut want: Vec<String> = obs.iter().map(|o| o.target.clone()).collect();
        want.sort();
        assert_eq!(targets, want);
        assert!(
            got.iter()
                .all(|b| b.observations.len() <= 3 && b.batch_id.starts_with("a-1."))
        );
        assert!(got.iter().all(|b| b.spool.is_some()));
    }

    /// Unreachable until `until`, then takes everything and notes when.
    struct Cut {
        until: Mutex<tokio::time::Instant>,
        acked: Mutex<Vec<tokio::time::Instant>>,
    }

    impl Sink for Cut {
        fn send<'a>(&'a self, _: &'a Outgoing, _: SpoolStatus) -> BoxFuture<'a, SendResult> {
            let now = tokio::time::Instant::now();
            let r = if now < *self.until.lock().unwrap() {
                SendResult::Retry {
                    after: None,
                    reason: "connection refused".into(),
                }
            } else {
                self.acked.lock().unwrap().push(now);
                SendResult::Acked
            };
            Box::pin(async move { r })
        }
    }

    /// After ten minutes without the collector, the backlog lands within
    /// [`MAX_UPLOAD_BACKOFF`] of its return, every time (the backoff grew to 300 s, so it
    /// landed up to five minutes late).
    #[tokio::test(start_paused = true)]
    async fn a_backlog_lands_within_seconds_after_a_long_cut() {
        let d = tempfile::tempdir().unwrap();
        let o: blackout_model::observation::Observation = serde_json::from_str(
            r#"{"agent":"a","target":"t","country":"KZ","asn":1,"signal":"icmp","measured_at":"2022-01-05T10:30:00Z","ok":true}"#,
        )
        .unwrap();
        let spool = Arc::new(Mutex::new(Spool::open(d.path(), 1 << 20).unwrap()));
        let sink = Arc::new(Cut {
            until: Mutex::new(tokio::time::Instant::now()),
            acked: Mutex::new(Vec::new()),
        });
        let more = Arc::new(tokio::sync::Notify::new());
        let stop = tokio_util::sync::CancellationToken::new();
        let flushed = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(upload_loop(
            spool.clone(),
            sink.clone(),
            more.clone(),
            stop.clone(),
            flushed.clone(),
        ));
        for cycle in 0..5 {
            let back = tokio::time::Instant::now() + Duration::from_secs(600);
            *sink.until.lock().unwrap() = back;
            spool
                .lock()
                .unwrap()
                .push(Batch {
                    batch_id: format!("a-{cycle}"),
                    agent: "a".into(),
                    observations: vec![o.clone()],
                    spool: None,
                })
                .unwrap();
            more.notify_one();
            while sink.acked.lock().unwrap().len() <= cycle {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let late = sink.acked.lock().unwrap()[cycle] - back;
            assert!(
                late <= MAX_UPLOAD_BACKOFF,
                "cycle {cycle}: landed {late:?} late"
            );
        }
        stop.cancel();
        flushed.cancel();
        task.await.unwrap();
    }

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

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now: chrono::DateTime<chrono::Utc> = "2026-11-29T16:00:00Z".parse().unwrap();
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 29 Nov 2026 16:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 29 Nov 2026 15:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        let d = obey_retry_after(Duration::from_secs(10));
        assert!(
            d >= Duration::from_secs(10) && d <= Duration::from_millis(12_250),
            "{d:?}"
        );
        assert!(obey_retry_after(Duration::from_secs(86_400)) < Duration::from_secs(4_400));
    }

    /// RFC 9110 section 5.6.7: a recipient must also accept the obsolete RFC 850 and
    /// asctime forms (the RFC 2822 parser used before took neither), and an HTTP date is
    /// always GMT (that parser also took numeric offsets, which no HTTP date has).
    #[test]
    fn retry_after_takes_every_http_date_form_and_only_gmt() {
        let now: chrono::DateTime<chrono::Utc> = "2026-11-29T16:00:00Z".parse().unwrap();
        let in_30s = Some(Duration::from_secs(30));
        assert_eq!(
            parse_retry_after("Sun, 29 Nov 2026 16:00:30 GMT", now),
            in_30s
        );
        assert_eq!(
            parse_retry_after("Sunday, 29-Nov-26 16:00:30 GMT", now),
            in_30s
        );
        assert_eq!(parse_retry_after("Sun Nov 29 16:00:30 2026", now), in_30s);
        assert_eq!(
            parse_retry_after("Sun, 29 Nov 2026 17:00:30 +0100", now),
            None
        );
    }

    #[test]
    fn split_is_deterministic_and_complete() {
        let o: blackout_model::observation::Observation = serde_json::from_str(
            r#"{"agent":"a","target":"t","country":"KZ","asn":1,"signal":"icmp","measured_at":"2022-01-05T10:30:00Z","ok":true}"#,
        )
        .unwrap();
        let b = Batch {
            batch_id: "a-1".into(),
            agent: "a".into(),
            observations: vec![o; 5],
            spool: None,
        };
        let [x, y] = split(&b).unwrap();
        assert_eq!(
            (x.batch_id.as_str(), y.batch_id.as_str()),
            ("a-1.a", "a-1.b")
        );
        assert_eq!(x.observations.len() + y.observations.len(), 5);
        assert_eq!(split(&b), split(&b));
        let one = Batch {
            observations: vec![b.observations[0].clone()],
            spool: None,
            ..b
        };
        assert!(split(&one).is_none());
    }
}
