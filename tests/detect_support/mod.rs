//! What the detector's engine tests share: a clock of 300-s bins and hand-made
//! observations (`detect_engine`, `detect_bgp`).
#![allow(dead_code)]

use blackout_detect::Engine;
use blackout_model::observation::{Failure, Observation, Phase, Signal};
use chrono::{DateTime, Duration, TimeZone, Utc};

pub const BIN: i64 = 300;

pub fn t0() -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_100 - 1_700_000_100 % BIN, 0)
        .unwrap()
}

/// Ten seconds into bin `bin`.
pub fn at(bin: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(bin * BIN + 10)
}

/// An observation of `target` in KZ by `agent` in bin `bin`: a 40 ms answer, or a
/// connect timeout.
pub fn obs(agent: &str, target: &str, asn: u32, signal: Signal, bin: i64, ok: bool) -> Observation {
    Observation {
        agent: agent.into(),
        target: target.into(),
        country: "KZ".into(),
        asn,
        region: None,
        signal,
        control: false,
        measured_at: at(bin),
        ok,
        phase: (!ok).then_some(Phase::Connect),
        failure: (!ok).then_some(Failure::Timeout),
        rtt_ms: ok.then_some(40.0),
        block: None,
        timings_ms: None,
    }
}

/// The agent's control probe in bin `bin`.
pub fn control(agent: &str, bin: i64, ok: bool) -> Observation {
    Observation {
        control: true,
        country: "ZZ".into(),
        ..obs(
            agent,
            &format!("control-{agent}"),
            64500,
            Signal::Icmp,
            bin,
            ok,
        )
    }
}

/// Close every bin up to and including `bin`.
pub fn close(eng: &mut Engine, bin: i64) -> Vec<blackout_detect::EventChange> {
    eng.advance(t0() + Duration::seconds((bin + 1) * BIN + 30))
}
