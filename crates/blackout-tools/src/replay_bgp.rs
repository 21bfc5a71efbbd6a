//! `blackout replay --mrt`: MRT files (RIB dumps, update files) through the BGP table
//! into the detector's `bgp` signal, alone or interleaved by time with observations.
//!
//! Files are read one after another, each streamed; give a RIB dump first, then the
//! update files that follow it, in time order. Each route event is applied to the
//! table at its timestamp; the table's due readings go to the engine whenever replay
//! time passes a second, and the engine's bins close as replay time passes them, as
//! they would live.

use std::path::PathBuf;

use blackout_bgp::mrt::{MrtOrigin, MrtSummary, read_mrt_file};
use blackout_bgp::{RouteEvent, SourceKind, Table};
use blackout_detect::{DetectConfig, Engine, EventChange};
use blackout_model::bgp::BgpVisibility;
use blackout_model::observation::Observation;
use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::replay::ReplayError;

/// Collector name of an MRT file given without one.
pub const DEFAULT_COLLECTOR: &str = "mrt";

/// One `--mrt [COLLECTOR=]FILE`.
#[derive(Debug, Clone, PartialEq)]
pub struct MrtInput {
    pub origin: MrtOrigin,
    pub path: PathBuf,
}

impl MrtInput {
    /// `rrc00=bview.gz` or `bview.gz`: the collector names the peers, so that a RIB
    /// dump and the update files of one collector speak of the same peers.
    pub fn parse(arg: &str) -> MrtInput {
        let (collector, path) = match arg.split_once('=') {
            Some((c, p)) if !c.is_empty() && !c.contains('/') => (c, p),
            _ => (DEFAULT_COLLECTOR, arg),
        };
        MrtInput {
            origin: MrtOrigin::new(SourceKind::Mrt, collector),
            path: PathBuf::from(path),
        }
    }
}

/// Replays `mrt` (and `obs`, sorted here) through `table` into a new engine.
/// `on_reading` sees every reading handed to the engine.
pub fn replay_with_bgp(
    cfg: DetectConfig,
    obs: &mut [Observation],
    mrt: &[MrtInput],
    table: Table,
    on_change: &mut dyn FnMut(&EventChange),
    on_reading: &mut dyn FnMut(&BgpVisibility),
) -> Result<(Engine, Vec<MrtSummary>), ReplayError> {
    obs.sort_by_key(|o| o.measured_at);
    let mut d = Driver {
        bin: cfg.bin_secs as i64,
        grace: Duration::seconds(cfg.grace_secs as i64),
        eng: Engine::new(cfg),
        table,
        obs,
        next_obs: 0,
        current_bin: None,
        now: None,
        on_change,
        on_reading,
    };
    let mut summaries = Vec::new();
    for input in mrt {
        let summary = read_mrt_file(&input.path, &input.origin, &mut |ev| {
            d.route(&ev);
            true
        })
        .map_err(|e| ReplayError::Mrt(e.to_string()))?;
        for bad in &summary.bad_listed {
            tracing::warn!(file = %input.path.display(), offset = bad.offset, reason = %bad.reason, "MRT record skipped");
        }
        summaries.push(summary);
    }
    d.finish();
    Ok((d.eng, summaries))
}

struct Driver<'a> {
    eng: Engine,
    table: Table,
    bin: i64,
    grace: Duration,
    obs: &'a [Observation],
    next_obs: usize,
    current_bin: Option<i64>,
    /// Latest time replayed; files may step back (a RIB dump after the start of an
    /// update file): replay time does not.
    now: Option<DateTime<Utc>>,
    on_change: &'a mut dyn FnMut(&EventChange),
    on_reading: &'a mut dyn FnMut(&BgpVisibility),
}

impl Driver<'_> {
    fn route(&mut self, ev: &RouteEvent) {
        let t = ev.at();
        self.observations_until(t);
        self.clock(t);
        self.table.apply(ev);
    }

    fn observations_until(&mut self, t: DateTime<Utc>) {
        while let Some(o) = self.obs.get(self.next_obs).filter(|o| o.measured_at <= t) {
            self.next_obs += 1;
            self.clock(o.measured_at);
            self.eng.ingest(o);
        }
    }

    /// Moves replay time to `t`: the table's readings when a second has passed, the
    /// engine's bins when a bin has.
    fn clock(&mut self, t: DateTime<Utc>) {
        let Some(now) = self.now else {
            self.now = Some(t);
            self.current_bin = Some(t.timestamp().div_euclid(self.bin));
            return;
        };
        if t.timestamp() <= now.timestamp() {
            return;
        }
        // The state as of the end of the last second, before the next one starts.
        self.poll(now);
        self.now = Some(t);
        let b = t.timestamp().div_euclid(self.bin);
        if self.current_bin.is_some_and(|c| c < b) {
            self.advance(b);
        }
        self.current_bin = Some(b);
    }

    fn poll(&mut self, now: DateTime<Utc>) {
        for r in self.table.poll(now) {
            (self.on_reading)(&r);
            self.eng.ingest_bgp(&r);
        }
    }

    fn advance(&mut self, bin: i64) {
        let to = Utc.timestamp_opt(bin * self.bin, 0).unwrap() + self.grace;
        for ch in self.eng.advance(to) {
            (self.on_change)(&ch);
        }
    }

    fn finish(&mut self) {
        if let Some(last) = self.obs.last() {
            self.observations_until(last.measured_at);
        }
        if let Some(now) = self.now {
            self.poll(now);
        }
        if let Some(b) = self.current_bin {
            self.advance(b + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mrt_argument_names_its_collector() {
        let a = MrtInput::parse("rrc00=data/bview.20250101.0000.gz");
        assert_eq!(a.origin.collector, "rrc00");
        assert_eq!(a.path, PathBuf::from("data/bview.20250101.0000.gz"));
        let b = MrtInput::parse("data/x=y/updates.gz");
        assert_eq!(b.origin.collector, DEFAULT_COLLECTOR);
        assert_eq!(b.path, PathBuf::from("data/x=y/updates.gz"));
    }
}
