//! The latest view: each target's most recent reading from each agent.
//!
//! It answers "what does the fleet see right now" for the raw reachability metrics;
//! verdicts over time come from `detect`.

use std::collections::HashMap;

use rustc_hash::FxHashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use blackout_detect::DetectConfig;
use blackout_model::observation::{HttpTimingsMs, Observation, Signal};

/// One agent's latest reading of a target: 12 bytes, since there is one per agent and
/// target (millions).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Reading {
    /// Seconds since the epoch (readings are within the accepted window of now).
    measured_at: u32,
    rtt_ms: f32,
    agent: u16,
    ok: bool,
}

/// A target's readings, at the index the detector gave the target
/// ([`blackout_detect::Engine::ingest`]): the view keeps no copy of the target's id.
#[derive(Debug, Serialize, Deserialize)]
struct TargetLatest {
    /// Index in [`LatestView::countries`].
    country: u32,
    asn: u32,
    signal: Signal,
    control: bool,
    /// Empty until the target's first reading.
    readings: Vec<Reading>,
}

impl Default for TargetLatest {
    /// A slot below the highest index seen, of a target not read yet.
    fn default() -> Self {
        TargetLatest {
            country: 0,
            asn: 0,
            signal: Signal::Icmp,
            control: false,
            readings: Vec::new(),
        }
    }
}

/// Aggregate of one (country, signal) or (country, asn, signal) over fresh readings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Share {
    /// Targets with at least one fresh reading from a healthy agent.
    pub targets: u64,
    /// Of those, targets that at least half of the agents reached.
    pub reachable: u64,
    /// Median RTT of successful readings, in seconds.
    pub rtt_median_seconds: Option<f64>,
}

impl Share {
    pub fn ratio(&self) -> Option<f64> {
        (self.targets > 0).then(|| self.reachable as f64 / self.targets as f64)
    }
}

/// The latest view aggregated at one instant.
#[derive(Debug, Default)]
pub struct LatestAggregate {
    pub country: HashMap<(String, Signal), Share>,
    pub asn: HashMap<(String, u32, Signal), Share>,
    /// Per agent: share of its fresh control readings that succeeded (None: no controls).
    pub agent_control: HashMap<String, Option<f64>>,
    /// Per (country, phase of [`HttpTimingsMs::PHASES`]): median duration in seconds over
    /// the successful fresh HTTP readings that timed the phase.
    pub http_phase_median_seconds: HashMap<(String, &'static str), f64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct LatestView {
    agents: Vec<String>,
    agent_index: FxHashMap<String, u16>,
    countries: Vec<String>,
    country_index: FxHashMap<String, u32>,
    targets: Vec<TargetLatest>,
    /// Targets with at least one reading.
    seen: usize,
    /// HTTP targets: each agent's phase durations (ms, NaN = absent) of its reading, by
    /// (target, agent). Kept apart so the millions of ICMP readings do not pay for them.
    phases: FxHashMap<(u32, u16), [f32; 4]>,
}

impl LatestView {
    /// Records `o`, the observation of the target the detector indexed as `target`.
    pub fn record(&mut self, target: u32, o: &Observation) {
        let agent = match self.agent_index.get(o.agent.as_str()) {
            Some(i) => *i,
            None => {
                // Agents are the configured ones: far fewer than 65,536.
                let Ok(i) = u16::try_from(self.agents.len()) else {
                    return;
                };
                self.agents.push(o.agent.clone());
                self.agent_index.insert(o.agent.clone(), i);
                i
            }
        };
        let ti = target as usize;
        if self.targets.len() <= ti {
            self.targets.resize_with(ti + 1, TargetLatest::default);
        }
        if self.targets[ti].readings.is_empty() {
            let country = match self.country_index.get(o.country.as_str()) {
                Some(c) => *c,
                None => {
                    let c = self.countries.len() as u32;
                    self.countries.push(o.country.clone());
                    self.country_index.insert(o.country.clone(), c);
                    c
                }
            };
            let t = &mut self.targets[ti];
            t.country = country;
            t.asn = o.asn;
            t.signal = o.signal;
            t.control = o.control;
            t.readings.reserve_exact(1);
            self.seen += 1;
        }
        let t = &mut self.targets[ti];
        let r = Reading {
            agent,
            measured_at: o.measured_at.timestamp().clamp(0, u32::MAX as i64) as u32,
            ok: o.ok,
            rtt_ms: o.rtt_ms.unwrap_or(0.0) as f32,
        };
        let newest = match t.readings.iter_mut().find(|x| x.agent == agent) {
            // A late upload must not overwrite a newer reading.
            Some(x) if x.measured_at <= r.measured_at => {
                *x = r;
                true
            }
            Some(_) => false,
            None => {
                t.readings.push(r);
                true
            }
        };
        if newest {
            let phases = o
                .timings_ms
                .map(|tm| tm.values().map(|v| v.map_or(f32::NAN, |v| v as f32)));
            match phases {
                Some(p) => {
                    self.phases.insert((target, agent), p);
                }
                None if !self.phases.is_empty() => {
                    self.phases.remove(&(target, agent));
                }
                None => {}
            }
        }
    }

    /// Aggregates readings no older than `max_age_secs` at `now`. Readings of an agent
    /// whose fresh control readings fail count for nothing, by the detector's rule
    /// ([`DetectConfig::vantage_healthy`]).
    pub fn aggregate(
        &self,
        now: DateTime<Utc>,
        max_age_secs: i64,
        rule: &DetectConfig,
    ) -> LatestAggregate {
        let oldest = now.timestamp() - max_age_secs;
        let fresh = |r: &Reading| i64::from(r.measured_at) >= oldest;
        let mut out = LatestAggregate::default();
        let mut control = vec![(0u64, 0u64); self.agents.len()];
        for t in self.targets.iter().filter(|t| t.control) {
            for r in t.readings.iter().filter(|r| fresh(r)) {
                let c = &mut control[r.agent as usize];
                c.0 += r.ok as u64;
                c.1 += 1;
            }
        }
        let healthy: Vec<bool> = control
            .iter()
            .map(|(ok, n)| *n == 0 || rule.vantage_healthy(*ok, n - ok))
            .collect();
        for (i, name) in self.agents.iter().enumerate() {
            let (ok, n) = control[i];
            out.agent_control
                .insert(name.clone(), (n > 0).then(|| ok as f64 / n as f64));
        }
        // Keyed by interned country: the walk clones no string; names are put back once
        // per key at the end.
        #[derive(Default)]
        struct Acc {
            targets: u64,
            reachable: u64,
            rtts: Vec<f32>,
        }
        let mut country: FxHashMap<(u32, Signal), Acc> = FxHashMap::default();
        let mut asn: FxHashMap<(u32, u32, Signal), Acc> = FxHashMap::default();
        let mut phases: FxHashMap<(u32, usize), Vec<f32>> = FxHashMap::default();
        for (ti, t) in self.targets.iter().enumerate() {
            if t.control || t.readings.is_empty() {
                continue;
            }
            let (mut ok, mut n) = (0u32, 0u32);
            let c = country.entry((t.country, t.signal)).or_default();
            let mut a = (t.asn != 0).then(|| asn.entry((t.country, t.asn, t.signal)).or_default());
            for r in t.readings.iter() {
                if !fresh(r) || !healthy[r.agent as usize] {
                    continue;
                }
                n += 1;
                if r.ok {
                    ok += 1;
                    c.rtts.push(r.rtt_ms);
                    if let Some(a) = a.as_mut() {
                        a.rtts.push(r.rtt_ms);
                    }
                    if !self.phases.is_empty()
                        && let Some(p) = self.phases.get(&(ti as u32, r.agent))
                    {
                        for (i, v) in p.iter().enumerate().filter(|(_, v)| !v.is_nan()) {
                            phases.entry((t.country, i)).or_default().push(*v);
                        }
                    }
                }
            }
            if n == 0 {
                continue;
            }
            let up = (ok * 2 >= n) as u64;
            c.targets += 1;
            c.reachable += up;
            if let Some(a) = a {
                a.targets += 1;
                a.reachable += up;
            }
        }
        let share = |mut acc: Acc| Share {
            targets: acc.targets,
            reachable: acc.reachable,
            rtt_median_seconds: median_ms(&mut acc.rtts).map(|m| m / 1000.0),
        };
        for ((c, signal), acc) in country {
            if acc.targets > 0 {
                out.country
                    .insert((self.countries[c as usize].clone(), signal), share(acc));
            }
        }
        for ((c, asn, signal), acc) in asn {
            if acc.targets > 0 {
                out.asn.insert(
                    (self.countries[c as usize].clone(), asn, signal),
                    share(acc),
                );
            }
        }
        for ((c, i), mut v) in phases {
            if let Some(m) = median_ms(&mut v) {
                out.http_phase_median_seconds.insert(
                    (self.countries[c as usize].clone(), HttpTimingsMs::PHASES[i]),
                    m / 1000.0,
                );
            }
        }
        out
    }

    pub fn target_count(&self) -> usize {
        self.seen
    }
}

fn median_ms(v: &mut [f32]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    Some(*m as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Indexes targets by name, as the detector does for the collector.
    trait RecordByName {
        fn record_named(&mut self, o: &Observation);
    }

    impl RecordByName for LatestView {
        fn record_named(&mut self, o: &Observation) {
            thread_local!(static IDS: std::cell::RefCell<Vec<String>> = Default::default());
            let i = IDS.with(|ids| {
                let mut ids = ids.borrow_mut();
                match ids.iter().position(|t| *t == o.target) {
                    Some(i) => i,
                    None => {
                        ids.push(o.target.clone());
                        ids.len() - 1
                    }
                }
            });
            self.record(i as u32, o);
        }
    }

    fn obs(agent: &str, target: &str, country: &str, asn: u32, ok: bool, at: i64) -> Observation {
        Observation {
            agent: agent.into(),
            target: target.into(),
            country: country.into(),
            asn,
            region: None,
            signal: Signal::Icmp,
            control: country == "ZZ",
            measured_at: DateTime::from_timestamp(at, 0).unwrap(),
            ok,
            phase: None,
            failure: None,
            rtt_ms: ok.then_some(10.0),
            block: None,
            timings_ms: None,
        }
    }

    #[test]
    fn agent_without_its_own_connectivity_is_ignored() {
        let mut v = LatestView::default();
        // a1 is healthy and sees KZ up; a2 lost its uplink: controls and targets fail.
        v.record_named(&obs("a1", "c", "ZZ", 1, true, 100));
        v.record_named(&obs("a1", "t1", "KZ", 9198, true, 100));
        v.record_named(&obs("a2", "c", "ZZ", 1, false, 100));
        v.record_named(&obs("a2", "t1", "KZ", 9198, false, 100));
        v.record_named(&obs("a2", "t2", "KZ", 9198, false, 100));
        let a = v.aggregate(
            DateTime::from_timestamp(110, 0).unwrap(),
            60,
            &DetectConfig::default(),
        );
        let kz = &a.country[&("KZ".to_string(), Signal::Icmp)];
        assert_eq!((kz.targets, kz.reachable), (1, 1));
        assert_eq!(a.agent_control["a2"], Some(0.0));
    }

    fn http(
        agent: &str,
        target: &str,
        ok: bool,
        at: i64,
        phases_ms: [Option<f64>; 4],
    ) -> Observation {
        let [resolve, connect, tls, first_byte] = phases_ms;
        Observation {
            signal: Signal::Http,
            timings_ms: Some(HttpTimingsMs {
                resolve,
                connect,
                tls,
                first_byte,
            }),
            ..obs(agent, target, "KZ", 9198, ok, at)
        }
    }

    #[test]
    fn http_phases_are_medians_of_successful_fresh_readings() {
        let mut v = LatestView::default();
        v.record_named(&http(
            "a1",
            "h1",
            true,
            100,
            [Some(4.0), Some(1.0), Some(10.0), Some(20.0)],
        ));
        v.record_named(&http(
            "a1",
            "h2",
            true,
            100,
            [None, Some(3.0), Some(30.0), Some(40.0)],
        ));
        v.record_named(&http(
            "a1",
            "h3",
            true,
            100,
            [None, Some(2.0), None, Some(60.0)],
        ));
        // A failed probe's phases do not count; nor do stale readings.
        v.record_named(&http(
            "a1",
            "h4",
            false,
            100,
            [None, Some(500.0), None, None],
        ));
        v.record_named(&http(
            "a1",
            "h5",
            true,
            10,
            [None, Some(900.0), None, Some(900.0)],
        ));
        // A late upload with other phases does not replace the newer reading's.
        v.record_named(&http(
            "a1",
            "h3",
            true,
            50,
            [None, Some(700.0), None, Some(700.0)],
        ));
        // An ICMP reading of the same country has no phases.
        v.record_named(&obs("a1", "i1", "KZ", 9198, true, 100));
        let a = v.aggregate(
            DateTime::from_timestamp(110, 0).unwrap(),
            60,
            &DetectConfig::default(),
        );
        let got = |p: &'static str| {
            a.http_phase_median_seconds
                .get(&("KZ".to_string(), p))
                .copied()
        };
        assert_eq!(got("resolve"), Some(0.004));
        assert_eq!(got("connect"), Some(0.002));
        assert_eq!(got("tls"), Some(0.03));
        assert_eq!(got("first_byte"), Some(0.04));
        assert_eq!(a.http_phase_median_seconds.len(), 4);
        // A newer reading without timings (an older agent) drops the agent's phases.
        v.record_named(&Observation {
            timings_ms: None,
            ..http("a1", "h1", true, 105, [None; 4])
        });
        let a = v.aggregate(
            DateTime::from_timestamp(110, 0).unwrap(),
            60,
            &DetectConfig::default(),
        );
        assert_eq!(
            a.http_phase_median_seconds
                .get(&("KZ".to_string(), "resolve")),
            None
        );
    }

    #[test]
    fn http_phases_survive_the_snapshot_encoding() {
        let mut v = LatestView::default();
        v.record_named(&http(
            "a1",
            "h1",
            true,
            100,
            [None, Some(1.0), Some(2.0), Some(3.0)],
        ));
        let bytes = postcard::to_allocvec(&v).unwrap();
        let back: LatestView = postcard::from_bytes(&bytes).unwrap();
        let now = DateTime::from_timestamp(110, 0).unwrap();
        let (a, b) = (
            v.aggregate(now, 60, &DetectConfig::default()),
            back.aggregate(now, 60, &DetectConfig::default()),
        );
        assert_eq!(a.http_phase_median_seconds.len(), 3);
        assert_eq!(a.http_phase_median_seconds, b.http_phase_median_seconds);
    }

    #[test]
    fn stale_and_late_readings() {
        let mut v = LatestView::default();
        v.record_named(&obs("a1", "t1", "KZ", 9198, true, 100));
        // An older reading arriving late does not replace the newer one.
        v.record_named(&obs("a1", "t1", "KZ", 9198, false, 50));
        let a = v.aggregate(
            DateTime::from_timestamp(120, 0).unwrap(),
            60,
            &DetectConfig::default(),
        );
        assert_eq!(a.country[&("KZ".to_string(), Signal::Icmp)].reachable, 1);
        let a = v.aggregate(
            DateTime::from_timestamp(1000, 0).unwrap(),
            60,
            &DetectConfig::default(),
        );
        assert!(a.country.is_empty());
    }
}
