//! Probes: one file per kind behind one small trait.
//!
//! A probe never returns `Err` for a network failure: a failed probe is an [`Outcome`]
//! with the phase that failed and a label from the closed [`Failure`] vocabulary.
//! `Err` means the probe could not run at all (no ICMP permission, a target of the
//! wrong kind).

pub mod adhoc;
pub mod classify;
pub mod dns;
pub mod http;
pub mod icmp;
pub mod set;
pub use set::ProbeSet;
pub mod tcp;

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use crate::catalog::Target;
use crate::observation::{BlockReport, Failure, Observation, Phase, Signal};

/// The result of probing one target once.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub ok: bool,
    pub phase: Option<Phase>,
    pub failure: Option<Failure>,
    pub rtt: Option<Duration>,
    pub block: Option<BlockReport>,
}

impl Outcome {
    pub fn ok(rtt: Duration) -> Self {
        Outcome {
            ok: true,
            phase: None,
            failure: None,
            rtt: Some(rtt),
            block: None,
        }
    }

    pub fn failed(phase: Phase, failure: Failure) -> Self {
        Outcome {
            ok: false,
            phase: Some(phase),
            failure: Some(failure),
            rtt: None,
            block: None,
        }
    }

    /// Turns the outcome into the record that travels to the collector.
    pub fn into_observation(
        self,
        agent: &str,
        target: &Target,
        measured_at: DateTime<Utc>,
    ) -> Observation {
        Observation {
            agent: agent.to_string(),
            target: target.id.clone(),
            country: target.country.clone(),
            asn: target.asn,
            region: target.region.clone(),
            signal: target.signal(),
            control: target.control,
            measured_at,
            ok: self.ok,
            phase: self.phase,
            failure: self.failure,
            rtt_ms: self.rtt.map(|d| d.as_secs_f64() * 1000.0),
            block: self.block,
        }
    }
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
}

/// One probe kind.
pub trait Prober: Send + Sync {
    fn signal(&self) -> Signal;
    /// Probes one target once. Network failures are `Ok(Outcome { ok: false, .. })`.
    fn probe<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<Outcome, ProbeError>>;
}

/// Timeouts and limits shared by the probers.
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    pub timeout: Duration,
    pub http_max_redirects: usize,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            timeout: Duration::from_secs(5),
            http_max_redirects: 5,
        }
    }
}
