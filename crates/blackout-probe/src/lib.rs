//! Probes: one file per kind behind one small trait.
//!
//! A probe never returns `Err` for a network failure: a failed probe is an [`Outcome`]
//! with the phase that failed and a label from the closed [`Failure`] vocabulary.
//! `Err` means the probe could not run at all (no ICMP permission, a target of the
//! wrong kind).

pub mod address;
pub mod classify;
pub mod dns;
pub mod echo;
pub mod http;
pub mod icmp;
pub mod tcp;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use blackout_model::catalog::{Target, TargetKind};
use blackout_model::observation::{
    BlockReport, Failure, HttpTimingsMs, Observation, Phase, Signal,
};

/// How long each phase of an HTTP(S) probe took: durations (not offsets from the start),
/// each summed over the redirect hops, as blackbox_exporter sums its
/// `probe_http_duration_seconds{phase}`. Only phases that completed are present: `resolve`
/// is absent when the address is pinned or the URL names an IP, `tls` on plain HTTP, and a
/// failed phase is absent (its failure is in the outcome). `first_byte` runs from sending
/// the request to receiving the response head.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpTimings {
    pub resolve: Option<Duration>,
    pub connect: Option<Duration>,
    pub tls: Option<Duration>,
    pub first_byte: Option<Duration>,
}

impl HttpTimings {
    pub fn is_empty(&self) -> bool {
        *self == HttpTimings::default()
    }

    /// Adds one hop's duration of a phase to the probe's total.
    pub fn add(slot: &mut Option<Duration>, d: Duration) {
        *slot = Some(slot.unwrap_or_default() + d);
    }

    /// In milliseconds, as observations carry them.
    pub fn to_ms(&self) -> HttpTimingsMs {
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        HttpTimingsMs {
            resolve: ms(self.resolve),
            connect: ms(self.connect),
            tls: ms(self.tls),
            first_byte: ms(self.first_byte),
        }
    }
}

/// The result of probing one target once.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub ok: bool,
    pub phase: Option<Phase>,
    pub failure: Option<Failure>,
    /// ICMP, DNS, TCP: the round trip. HTTP: from the probe's start to the response head of
    /// the last hop (redirects included).
    pub rtt: Option<Duration>,
    pub block: Option<BlockReport>,
    /// HTTP(S) only.
    pub timings: Option<HttpTimings>,
}

impl Outcome {
    pub fn ok(rtt: Duration) -> Self {
        Outcome {
            ok: true,
            phase: None,
            failure: None,
            rtt: Some(rtt),
            block: None,
            timings: None,
        }
    }

    pub fn failed(phase: Phase, failure: Failure) -> Self {
        Outcome {
            ok: false,
            phase: Some(phase),
            failure: Some(failure),
            rtt: None,
            block: None,
            timings: None,
        }
    }

    /// Turns the outcome into the record that travels to the collector.
    pub fn into_observation(
        self,
        agent: &str,
        target: &Target,
        measured_at: DateTime<Utc>,
    ) -> Observation {
        self.observe(
            agent,
            Labels {
                id: target.id.clone(),
                country: target.country.clone(),
                asn: target.asn,
                region: target.region.clone(),
                control: target.control,
            },
            target.signal(),
            measured_at,
        )
    }

    /// As [`Outcome::into_observation`], for a target known by its labels only (the
    /// agent's compact blocks are not [`Target`]s).
    pub fn observe(
        self,
        agent: &str,
        labels: Labels,
        signal: Signal,
        measured_at: DateTime<Utc>,
    ) -> Observation {
        Observation {
            agent: agent.to_string(),
            target: labels.id,
            country: labels.country,
            asn: labels.asn,
            region: labels.region,
            signal,
            control: labels.control,
            measured_at,
            ok: self.ok,
            phase: self.phase,
            failure: self.failure,
            rtt_ms: self.rtt.map(|d| d.as_secs_f64() * 1000.0),
            block: self.block,
            timings_ms: self.timings.map(|t| t.to_ms()),
        }
    }
}

/// What an observation says of its target besides the signal.
#[derive(Debug, Clone, PartialEq)]
pub struct Labels {
    pub id: String,
    pub country: String,
    pub asn: u32,
    pub region: Option<String>,
    pub control: bool,
}

/// Why a probe could not run. Never a network failure.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "no permission for ICMP sockets: {0} (allow unprivileged ping with `sysctl net.ipv4.ping_group_range=\"0 2147483647\"`, or grant CAP_NET_RAW)"
    )]
    IcmpPermission(String),
    #[error("target {id} is not a {expected} target")]
    WrongKind { id: String, expected: Signal },
    #[error("could not set up the {signal} probe: {reason}")]
    Setup { signal: Signal, reason: String },
    #[error("target {id}: {reason}")]
    BadTarget { id: String, reason: String },
    /// The block's politeness budget is spent (its adaptive follow-up echoes used it):
    /// the block is skipped this round. Not a failure of the network, not "could not run".
    #[error(
        "block {id}: politeness budget spent (its adaptive follow-up echoes used up the per-block hourly limit); skipped this round"
    )]
    PolitenessBudget { id: String },
    #[error("{path}: {reason}")]
    Input { path: String, reason: String },
    #[error("writing the results: {0}")]
    Output(#[source] std::io::Error),
}

/// One probe kind.
pub trait Prober: Send + Sync {
    fn signal(&self) -> Signal;
    /// Probes one target once. Network failures are `Ok(Outcome { ok: false, .. })`.
    fn probe<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<Outcome, ProbeError>>;
}

/// Default politeness: Trinocular's "fewer than 20 probes per hour per block".
pub const DEFAULT_ICMP_MAX_PROBES_PER_BLOCK_HOUR: u32 = 20;
/// Default bound on the adaptive probes of one round (Trinocular: up to ~15).
pub const DEFAULT_ICMP_MAX_EXTRA_PROBES: u32 = 15;
/// Default ICMP receive buffer: with 1,000+ echoes in flight on one socket, replies are
/// dropped at the default 208 KiB; 32 MiB showed no loss at any concurrency.
pub const DEFAULT_ICMP_RECV_BUFFER_BYTES: usize = 32 << 20;

/// Timeouts and limits shared by the probers. Build it with `..Default::default()` so that
/// new limits do not break callers.
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    pub timeout: Duration,
    pub http_max_redirects: usize,
    /// Politeness: at most this many echoes reach one block in any hour.
    pub icmp_max_probes_per_block_hour: u32,
    /// The agent's round, when blocks are probed once a round: the politeness bucket
    /// then refills at least one echo per round, so only the adaptive follow-ups of
    /// uncertain blocks can run out of budget, never a block's one echo per round.
    pub icmp_round: Option<Duration>,
    /// Adaptive echoes one block round may add to its first one.
    pub icmp_max_extra_probes: u32,
    /// Receive buffer of the shared ICMP sockets.
    pub icmp_recv_buffer_bytes: usize,
    /// Which addresses probes may contact; the default allows all.
    pub address_policy: Arc<address::AddressPolicy>,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            timeout: Duration::from_secs(5),
            http_max_redirects: 5,
            icmp_max_probes_per_block_hour: DEFAULT_ICMP_MAX_PROBES_PER_BLOCK_HOUR,
            icmp_round: None,
            icmp_max_extra_probes: DEFAULT_ICMP_MAX_EXTRA_PROBES,
            icmp_recv_buffer_bytes: DEFAULT_ICMP_RECV_BUFFER_BYTES,
            address_policy: Arc::default(),
        }
    }
}

/// One prober per kind, shared by every task of the agent (`Arc<ProbeSet>`).
///
/// Creating it opens no ICMP socket: that happens on the first ICMP probe, so an agent
/// without ICMP rights still probes DNS, HTTP and TCP, and only its ICMP targets fail with
/// [`ProbeError::IcmpPermission`].
#[derive(Debug)]
pub struct ProbeSet {
    pub icmp: icmp::IcmpProber,
    pub dns: dns::DnsProber,
    pub http: http::HttpProber,
    pub tcp: tcp::TcpProber,
}

impl ProbeSet {
    pub async fn new(settings: &ProbeSettings) -> Result<ProbeSet, ProbeError> {
        Ok(ProbeSet {
            icmp: icmp::IcmpProber::new(settings),
            dns: dns::DnsProber::new(settings.timeout).with_policy(settings.address_policy.clone()),
            http: http::HttpProber::new(settings)?,
            tcp: tcp::TcpProber::new(settings.timeout).with_policy(settings.address_policy.clone()),
        })
    }

    /// The prober for a kind of target.
    pub fn prober(&self, kind: &TargetKind) -> &dyn Prober {
        match kind {
            TargetKind::Icmp { .. } => &self.icmp,
            TargetKind::Dns { .. } => &self.dns,
            TargetKind::Http { .. } => &self.http,
            TargetKind::Tcp { .. } => &self.tcp,
        }
    }

    /// Probes one target once with the prober of its kind.
    pub async fn probe(&self, target: &Target) -> Result<Outcome, ProbeError> {
        self.prober(&target.kind).probe(target).await
    }
}

/// The politeness token bucket of a block: (capacity, refill per hour). No sliding hour
/// sees more than `per_hour` echoes (capacity + refill). The refill is one echo per round
/// (with 300 s rounds a block needs 12 an hour: a refill of 10 starved every sixth round
/// of even a healthy block) plus half of the rest, the other half being the burst for the
/// adaptive follow-ups (20 an hour, 300 s rounds: a burst of 4, refilled at 16 an hour).
pub fn politeness_bucket(per_hour: u32, round: Option<Duration>) -> (f32, f32) {
    let per_hour = per_hour.max(1) as f32;
    let per_round = round
        .filter(|r| !r.is_zero())
        .map_or(0.0, |r| 3600.0 / r.as_secs_f32());
    if per_round > per_hour - 1.0 {
        // Rounds too short for the limit (check-config and the agent say so): no split
        // can give each round its echo; half as burst at least lets the first rounds run.
        // (A probe needs a whole token: with a limit of 1 the burst is 1.)
        return ((per_hour / 2.0).max(1.0), per_hour / 2.0);
    }
    // The refill covers each round's echo and half of what the hour allows beyond it, so
    // the bucket fills again between the rounds that spend follow-ups; a refill of just
    // one echo per round (what 300 s rounds had) left no follow-up for a block once its
    // first burst was spent (the probe-level simulation: every round then had one echo).
    // At least one token stays as capacity (a probe needs a whole one).
    let capacity = ((per_hour - per_round) / 2.0).max(1.0);
    (capacity, per_hour - capacity)
}

/// Shortest round in which every block's one echo per round fits the hourly limit (with
/// the one token of burst the bucket keeps).
pub fn min_round_for_politeness(per_hour: u32) -> Duration {
    Duration::from_secs_f64(3600.0 / (per_hour.max(2) - 1) as f64)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn politeness_bucket_never_starves_a_rounds_echo_nor_exceeds_the_hour() {
        for (per_hour, round_secs) in [
            (20, 300),
            (20, 600),
            (20, 200),
            (20, 180),
            (20, 15),
            (1, 300),
            (60, 60),
        ] {
            let round = Some(Duration::from_secs(round_secs));
            let (capacity, refill) = super::politeness_bucket(per_hour, round);
            let per_round = 3600.0 / round_secs as f32;
            assert!(
                capacity >= 1.0,
                "{per_hour}/h, {round_secs} s: capacity {capacity}"
            );
            if per_round <= per_hour as f32 - 1.0 {
                assert!(
                    refill >= per_round,
                    "{per_hour}/h, {round_secs} s: refill {refill}"
                );
                assert!(
                    capacity + refill <= per_hour as f32 + 1e-3,
                    "{per_hour}/h, {round_secs} s"
                );
                // Follow-ups spent are refilled: more than one echo per round comes back.
                assert!(
                    per_round > per_hour as f32 - 3.0 || refill > per_round,
                    "{per_hour}/h, {round_secs} s: refill {refill}"
                );
            }
        }
        // Without a round: half the limit as burst, half as refill.
        assert_eq!(super::politeness_bucket(20, None), (10.0, 10.0));
        assert_eq!(
            super::min_round_for_politeness(20).as_secs(),
            189,
            "3600 / 19 s"
        );
    }

    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn probe_set_is_shareable() {
        assert_send_sync::<ProbeSet>();
        assert_send_sync::<std::sync::Arc<ProbeSet>>();
    }
}
