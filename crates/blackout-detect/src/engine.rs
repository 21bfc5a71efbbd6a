//! The detection engine: bins, vantage health, quorum, aggregation, baselines, states and
//! events. Pure: no I/O and no clock; time is passed in.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use super::cells::{Extras, Vote, Votes};
use super::config::DetectConfig;
use super::entity::EntityKey;
use super::event::{ChangeKind, Event, EventChange, EventKind, Evidence, Mechanism};
use super::series::{BaselineShape, History, Rules, State, Tracker, Trail, baseline, median};
use super::throttle;
use blackout_model::bgp::{BgpVisibility, BgpWithdrawals};
use blackout_model::observation::{BlockVerdict, Observation, Signal, is_country_code};
// Fx, not SipHash: the keys are our own interned ids and agent/target names from
// authenticated agents, so a DoS-resistant hash buys nothing on the ingest hot path and
// cost a third of the ingest time.
use rustc_hash::FxHashMap as FxMap;

/// Evidence lists are capped so that an event stays small whatever the fleet size.
const MAX_EVIDENCE_NAMES: usize = 64;

/// A BGP reading older than this gives its entity no bgp value: the sources re-send every
/// entity's visibility periodically, so silence this long is a source that stopped, not
/// routes that stayed (or stayed away).
pub const BGP_READING_MAX_AGE_SECS: i64 = 3600;

/// The last BGP reading of one entity and the run of low readings it is in.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct BgpLive {
    /// Visible share; None: BGP knows nothing (no quorum of peers).
    share: Option<f64>,
    /// When it was read (Unix seconds).
    at: i64,
    /// The last share that was not low: what a low run not yet confirmed stands for.
    steady: Option<f64>,
    /// First reading of the current run below `warning_ratio` of the baseline.
    low_since: Option<i64>,
    /// The run lasted `bgp_confirm_secs`: it counts, and its event was opened or marked.
    confirmed: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct TargetMeta {
    /// Slow average of the target's RTT: RTTs are compared per target, so a change in
    /// which targets answered never looks like a change in latency.
    rtt_base_ms: f32,
    signal: Signal,
    control: bool,
    entities: [u32; 3],
    n_entities: u8,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Tally {
    ok: u32,
    fail: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
enum Metric {
    Level,
    Rtt,
}

/// Raw data of one bin, kept after the bin closes for `late_window_secs`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct BinData {
    /// Each agent's vote on each target: all a closed bin keeps of its observations.
    votes: Votes,
    /// Loss samples and RTTs per agent and target while the bin is open (empty after).
    extras: Extras,
    /// Closed: late observations change votes only.
    closed: bool,
    control: FxMap<u32, Tally>,
    agents: BTreeSet<u32>,
    /// Aggregate series (`ingest_value`): sum and count per entity, signal and metric.
    values: FxMap<(u32, Signal, Metric), (f64, u32)>,
    /// Late observations placed in this bin since it was last (re)evaluated, per entity.
    late_pending: FxMap<u32, u64>,
    late_total: u64,
    dirty: bool,
}

impl BinData {
    /// At the close the bin's latency and loss have been taken: only votes stay.
    fn close(&mut self) {
        self.closed = true;
        self.extras = Extras::default();
        self.votes.shrink();
    }
}

/// Aggregate of one entity and signal in one bin.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Agg {
    entity: u32,
    signal: Signal,
    up: u32,
    down: u32,
    level: Option<f64>,
    /// Median RTT (display).
    rtt_ms: Option<f64>,
    /// The latency series value: median over targets of RTT / the target's own average
    /// (observations), or the aggregate latency itself (`ingest_rtt_value`).
    rtt_value: Option<f64>,
    /// Median over targets of RTT minus the target's own average, in milliseconds: the
    /// absolute floor of throttling (None for aggregate series, whose unit is unknown).
    rtt_added_ms: Option<f64>,
    /// Share of the probes sent to targets judged up that went unanswered (None without
    /// a sample), and the sample: probes sent and lost.
    loss: Option<f64>,
    #[serde(default)]
    loss_sent: u64,
    #[serde(default)]
    loss_lost: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct BinResult {
    aggs: Vec<Agg>,
    /// Mean RTT per target in this bin (healthy agents), to update the targets' averages.
    target_rtts: Vec<(u32, f32)>,
    healthy: Vec<u32>,
    unhealthy: Vec<u32>,
    /// Entities observed in this bin only by unhealthy agents: no healthy vantage covers
    /// them.
    #[serde(default)]
    uncovered: Vec<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SeriesState {
    hist: History,
    tracker: Tracker,
    last_value: Option<f64>,
    last_baseline: Option<f64>,
    last_bin: Option<i64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SignalSeries {
    level: SeriesState,
    /// The level as measured and its baseline, per bin, for [`TRAIL_SECS`]: what the
    /// pages draw (the level's own history is inpainted and has no baselines).
    trail: Trail,
    rtt: SeriesState,
    loss: SeriesState,
    targets: u32,
    targets_down: u32,
    rtt_ms: Option<f64>,
    /// Probes behind `loss.last_value`.
    #[serde(default)]
    loss_sent: u64,
}

/// Overall view of an entity after the last evaluation.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct View {
    state: State,
    kind: Option<EventKind>,
}

/// Counters for operators and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineStats {
    pub observations: u64,
    pub values: u64,
    /// Observations placed in an already closed bin.
    pub late_observations: u64,
    /// Late observations older than the late window but inside the baseline window:
    /// counted in the evidence of the events covering them, not re-aggregated.
    pub late_evidence_only: u64,
    /// Observations older than the baseline window: dropped.
    pub too_late_observations: u64,
    pub bins_closed: u64,
    pub bins_reevaluated: u64,
    /// Readings of the BGP sources (`ingest_bgp`).
    #[serde(default)]
    pub bgp_readings: u64,
}

/// How far back [`Engine::trails`] reaches: the 7 days a country page draws. Memory: one
/// pair of f32 per bin and series (entity, signal), 16 KiB per series at 300 s bins; a
/// country with 10 networks, 5 regions and 4 signals keeps 64 series, 1 MiB.
pub const TRAIL_SECS: u64 = 7 * 86_400;

/// One bin of a series as a reader is shown it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TrailPoint {
    /// Start of the bin.
    pub start: DateTime<Utc>,
    /// Share of targets up (observations) or the series' level (aggregate input), as
    /// measured: not inpainted.
    pub value: Option<f64>,
    /// The baseline the bin was judged against; None during warm-up.
    pub baseline: Option<f64>,
}

/// The trail of one series, oldest bin first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesTrail {
    pub entity: EntityKey,
    pub signal: Signal,
    pub points: Vec<TrailPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SignalSnapshot {
    pub signal: Signal,
    /// Share of targets up (observations) or the series' level (aggregate input).
    pub value: Option<f64>,
    pub baseline: Option<f64>,
    pub ratio: Option<f64>,
    /// None during warm-up.
    pub state: Option<State>,
    pub targets: u32,
    pub targets_down: u32,
    pub rtt_ms: Option<f64>,
    pub rtt_baseline_ms: Option<f64>,
    pub rtt_ratio: Option<f64>,
    /// Share of the probes to targets judged up that went unanswered in the last bin with
    /// a sample (ICMP: echoes of block rounds; TCP, HTTP: connects; DNS: queries).
    pub loss: Option<f64>,
    /// Probes behind `loss`: below 8 it is shown but not judged.
    pub loss_probes: u64,
    pub loss_baseline: Option<f64>,
    pub throttled: bool,
}

/// Why an entity has no verdict. A closed set: it is a label value of
/// `blackout_country_verdict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoVerdict {
    /// Nothing measured yet for the entity.
    NoData,
    /// Measured, but the baselines are still being learned (`warmup_secs`).
    WarmUp,
    /// In the last closed bin no healthy agent observed the entity: its observations came
    /// only from agents whose control targets fail, or no agent was healthy at all.
    NoHealthyVantage,
}

impl NoVerdict {
    pub const ALL: [NoVerdict; 3] = [
        NoVerdict::NoData,
        NoVerdict::WarmUp,
        NoVerdict::NoHealthyVantage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NoVerdict::NoData => "no_data",
            NoVerdict::WarmUp => "warm_up",
            NoVerdict::NoHealthyVantage => "no_healthy_vantage",
        }
    }
}

impl std::fmt::Display for NoVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntitySnapshot {
    pub entity: EntityKey,
    /// The verdict when `no_verdict` is None; otherwise the state the detector last held,
    /// which is not a verdict and must not be shown as one.
    pub state: State,
    /// Why there is no verdict (None: `state` is the verdict).
    pub no_verdict: Option<NoVerdict>,
    pub kind: Option<EventKind>,
    pub event_id: Option<u64>,
    /// How the entity was cut: the mechanism of its open event.
    pub mechanism: Option<Mechanism>,
    pub signals: Vec<SignalSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentSnapshot {
    pub agent: String,
    /// Health in the last closed bin; agents that sent nothing there are unhealthy.
    pub healthy: bool,
    pub control_ok: u32,
    pub control_failed: u32,
    pub last_seen: Option<DateTime<Utc>>,
}

/// The fleet's own connectivity in the last closed bin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VantageSnapshot {
    /// Agents the detector knows.
    pub agents: u32,
    /// Agents counted healthy in the last closed bin.
    pub healthy_agents: u32,
    /// Control probes that answered, and that failed, in the last closed bin (all agents).
    pub control_ok: u32,
    pub control_failed: u32,
    /// False when agents exist but none was healthy in the last closed bin: then no
    /// entity has a verdict (reason `no_healthy_vantage`).
    pub healthy: bool,
    /// Entities observed in the last closed bin only by unhealthy agents.
    pub uncovered: Vec<EntityKey>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    /// End of the last closed bin.
    pub at: Option<DateTime<Utc>>,
    pub bin_secs: u64,
    pub entities: Vec<EntitySnapshot>,
    pub agents: Vec<AgentSnapshot>,
    pub vantage: VantageSnapshot,
    pub open_events: usize,
    pub stats: EngineStats,
}

impl Snapshot {
    /// Why a country the snapshot has no entry for has no verdict.
    pub fn no_verdict_unseen(&self, country: &str) -> NoVerdict {
        let uncovered = || {
            self.vantage
                .uncovered
                .iter()
                .any(|e| matches!(e, EntityKey::Country(c) if c == country))
        };
        if !self.vantage.healthy || uncovered() {
            NoVerdict::NoHealthyVantage
        } else {
            NoVerdict::NoData
        }
    }
}

/// Bins after a country's national blackout ended during which a network of it still
/// down is the blackout's tail (no event of its own); a network down longer than that
/// gets its own partial event.
const NATIONAL_TAIL_BINS: i64 = 2;

/// Bins in which an agent that has sent no control observation yet is not a healthy
/// vantage (its first round may probe the controls late); from then on one that never
/// probes controls (turned off by its operator, who was warned) is trusted unchecked.
const UNCHECKED_AGENT_GRACE_BINS: i64 = 2;

/// See the module documentation of [`crate`].
///
/// Serialisable whole (open bins, raw data of the late window, per-target averages), so
/// that a collector's snapshot restores exactly the engine it saved; the settings are not
/// part of it, [`Engine::with_config`] puts them back.
#[derive(Debug, Serialize, Deserialize)]
pub struct Engine {
    #[serde(skip)]
    cfg: DetectConfig,
    #[serde(skip)]
    shape: BaselineShape,
    /// `shape` with the first verdict's shorter warm-up, for reachability (level) series:
    /// latency and loss baselines still wait for the full warm-up.
    #[serde(skip)]
    level_shape: BaselineShape,
    #[serde(skip)]
    hist_cap: usize,
    /// Bins of [`TRAIL_SECS`].
    #[serde(skip)]
    trail_cap: usize,
    #[serde(skip)]
    late_bins: i64,
    agents: Vec<String>,
    agent_index: FxMap<String, u32>,
    agent_has_controls: Vec<bool>,
    /// The earliest bin with an observation of the agent: one that has not probed a
    /// control yet is not taken for a healthy vantage in its first bins.
    agent_first_bin: Vec<Option<i64>>,
    agent_last_bin: Vec<Option<i64>>,
    targets: Vec<TargetMeta>,
    target_index: super::ids::Ids,
    entities: Vec<EntityKey>,
    entity_index: FxMap<EntityKey, u32>,
    children: FxMap<u32, Vec<u32>>,
    bins: BTreeMap<i64, BinData>,
    last_closed: Option<i64>,
    series: BTreeMap<(u32, Signal), SignalSeries>,
    views: FxMap<u32, View>,
    events: Vec<Event>,
    open: FxMap<u32, usize>,
    next_id: u64,
    stats: EngineStats,
    last_health: Vec<(u32, bool, Tally)>,
    /// `uncovered` of the last closed bin.
    #[serde(default)]
    last_uncovered: BTreeSet<u32>,
    /// Late observations older than the raw window, per entity and bin, not yet added to
    /// the evidence of the events covering them.
    late_evidence: FxMap<(u32, i64), u64>,
    /// Per entity, the withdrawals the BGP sources last reported (gone once the entity's
    /// space is fully visible again): the evidence of a `routes_withdrawn` event.
    #[serde(default)]
    bgp_withdrawals: FxMap<u32, BgpWithdrawals>,
    #[serde(default)]
    bgp_live: FxMap<u32, BgpLive>,
}

fn trail_slot(value: f64, baseline: Option<f64>) -> (f32, f32) {
    (value as f32, baseline.map_or(f32::NAN, |b| b as f32))
}

fn ts(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
}

fn push_capped(v: &mut Vec<String>, s: &str) {
    if v.len() < MAX_EVIDENCE_NAMES && !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}

impl Engine {
    pub fn new(cfg: DetectConfig) -> Engine {
        let bin = cfg.bin_secs.max(1) as i64;
        let bins_per_day = if 86_400 % bin == 0 { 86_400 / bin } else { 0 };
        let days = (cfg.baseline_window_secs / 86_400).max(1) as i64;
        let shape = BaselineShape {
            bins_per_day,
            days,
            recent_bins: cfg.bins(cfg.recent_window_secs),
            warmup_bins: cfg.warmup_bins() as usize,
        };
        let level_shape = BaselineShape {
            warmup_bins: cfg.first_verdict_bins() as usize,
            ..shape
        };
        let hist_cap = (cfg.bins(cfg.baseline_window_secs) + 2) as usize;
        let trail_cap = cfg.bins(TRAIL_SECS) as usize;
        let late_bins = cfg.bins(cfg.late_window_secs);
        Engine {
            cfg,
            shape,
            level_shape,
            hist_cap,
            trail_cap,
            late_bins,
            agents: Vec::new(),
            agent_index: FxMap::default(),
            agent_has_controls: Vec::new(),
            agent_first_bin: Vec::new(),
            agent_last_bin: Vec::new(),
            targets: Vec::new(),
            target_index: Default::default(),
            entities: Vec::new(),
            entity_index: FxMap::default(),
            children: FxMap::default(),
            bins: BTreeMap::new(),
            last_closed: None,
            series: BTreeMap::new(),
            views: FxMap::default(),
            events: Vec::new(),
            open: FxMap::default(),
            next_id: 1,
            stats: EngineStats::default(),
            last_health: Vec::new(),
            last_uncovered: BTreeSet::new(),
            late_evidence: FxMap::default(),
            bgp_withdrawals: FxMap::default(),
            bgp_live: FxMap::default(),
        }
    }

    pub fn config(&self) -> &DetectConfig {
        &self.cfg
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Number of distinct targets seen.
    pub fn tracked_targets(&self) -> usize {
        self.targets.len()
    }

    fn bin_of(&self, at: DateTime<Utc>) -> i64 {
        at.timestamp().div_euclid(self.cfg.bin_secs as i64)
    }

    fn bin_start(&self, bin: i64) -> DateTime<Utc> {
        ts(bin * self.cfg.bin_secs as i64)
    }

    /// Start of the first bin not yet closed: after a restore, re-ingest observations
    /// measured from here on.
    pub fn resume_from(&self) -> Option<DateTime<Utc>> {
        self.last_closed.map(|b| self.bin_start(b + 1))
    }

    fn intern_entity(&mut self, e: EntityKey) -> u32 {
        if let Some(&i) = self.entity_index.get(&e) {
            return i;
        }
        let parent = e.parent().map(|p| self.intern_entity(p));
        let i = self.entities.len() as u32;
        self.entities.push(e.clone());
        self.entity_index.insert(e, i);
        if let Some(p) = parent {
            self.children.entry(p).or_default().push(i);
        }
        i
    }

    fn intern_agent(&mut self, agent: &str) -> u32 {
        if let Some(&i) = self.agent_index.get(agent) {
            return i;
        }
        let i = self.agents.len() as u32;
        self.agents.push(agent.to_string());
        self.agent_index.insert(agent.to_string(), i);
        self.agent_has_controls.push(false);
        self.agent_first_bin.push(None);
        self.agent_last_bin.push(None);
        i
    }

    fn intern_target(&mut self, obs: &Observation) -> u32 {
        if let Some(i) = self.target_index.get(obs.target.as_str()) {
            return i;
        }
        let mut entities = [0u32; 3];
        let mut n = 0u8;
        if !obs.control {
            entities[0] = self.intern_entity(EntityKey::Country(obs.country.clone()));
            n = 1;
            // ASN 0 means "origin unknown or anycast": it counts for the country only.
            if obs.asn != 0 {
                entities[n as usize] = self.intern_entity(EntityKey::Asn {
                    country: obs.country.clone(),
                    asn: obs.asn,
                });
                n += 1;
            }
            if let Some(r) = obs.region.as_ref().filter(|r| !r.is_empty()) {
                entities[n as usize] = self.intern_entity(EntityKey::Region {
                    country: obs.country.clone(),
                    region: r.clone(),
                });
                n += 1;
            }
        }
        let i = self.target_index.push(&obs.target);
        debug_assert_eq!(i as usize, self.targets.len());
        self.targets.push(TargetMeta {
            rtt_base_ms: f32::NAN,
            signal: obs.signal,
            control: obs.control,
            entities,
            n_entities: n,
        });
        i
    }

    /// Returns the bin to write into, or None when it is older than the late window.
    fn bin_for_write(&mut self, bin: i64) -> Option<(&mut BinData, bool)> {
        let late = self.last_closed.is_some_and(|lc| bin <= lc);
        if late
            && self
                .last_closed
                .is_some_and(|lc| bin <= lc - self.late_bins)
        {
            return None;
        }
        // A closed bin that had no data gets some: it is closed all the same.
        let bd = self.bins.entry(bin).or_insert_with(|| BinData {
            closed: late,
            ..BinData::default()
        });
        Some((bd, late))
    }

    /// Places an observation in the bin of its `measured_at`, late data included.
    /// Returns the index the engine gave the observation's target (dense, from 0, the
    /// same for the target's every observation, saved with the engine): the collector
    /// keys its own per-target state by it instead of copying the target's id.
    pub fn ingest(&mut self, obs: &Observation) -> u32 {
        let bin = self.bin_of(obs.measured_at);
        let target = self.intern_target(obs);
        if let Some(lc) = self.last_closed
            && bin <= lc - self.late_bins
        {
            // Beyond the raw window the bin cannot be re-aggregated, but the observation
            // still lands in the evidence of the events covering its time.
            if bin > lc - self.hist_cap as i64 && !obs.control {
                let meta = self.targets[target as usize];
                for &e in &meta.entities[..meta.n_entities as usize] {
                    *self.late_evidence.entry((e, bin)).or_default() += 1;
                }
                self.stats.late_observations += 1;
                self.stats.late_evidence_only += 1;
            } else {
                self.stats.too_late_observations += 1;
            }
            return target;
        }
        self.stats.observations += 1;
        let agent = self.intern_agent(&obs.agent);
        let meta = self.targets[target as usize];
        if obs.control {
            self.agent_has_controls[agent as usize] = true;
        }
        let first = &mut self.agent_first_bin[agent as usize];
        if first.is_none_or(|f| bin < f) {
            *first = Some(bin);
        }
        let last = &mut self.agent_last_bin[agent as usize];
        if last.is_none_or(|l| l < bin) {
            *last = Some(bin);
        }
        let n_targets = self.targets.len();
        let Some((bd, late)) = self.bin_for_write(bin) else {
            return target;
        };
        bd.agents.insert(agent);
        if meta.control {
            let t = bd.control.entry(agent).or_default();
            if obs.ok {
                t.ok += 1;
            } else {
                t.fail += 1;
            }
        } else {
            let vote = match &obs.block {
                Some(b) => match b.verdict {
                    BlockVerdict::Up => Vote::Up,
                    BlockVerdict::Down => Vote::Down,
                    BlockVerdict::Uncertain => Vote::Unsure,
                },
                None if obs.ok => Vote::Up,
                None => Vote::Down,
            };
            let slot = bd.votes.slot(agent);
            let new = bd.votes.raise(target, slot, vote, n_targets);
            if !bd.closed {
                let rtt = obs.rtt_ms.filter(|_| obs.ok).map(|r| r as f32);
                let row = bd.votes.row(target);
                bd.extras
                    .add(target, row, slot, new, obs.loss_sample(), rtt);
            }
        }
        if late {
            bd.dirty = true;
            bd.late_total += 1;
            for &e in &meta.entities[..meta.n_entities as usize] {
                *bd.late_pending.entry(e).or_default() += 1;
            }
            self.stats.late_observations += 1;
        }
        target
    }

    /// One value of an aggregate series (replay of `--signals`/IODA input): a level such
    /// as responsive blocks or a connectivity index. Values in one bin are averaged.
    pub fn ingest_value(
        &mut self,
        at: DateTime<Utc>,
        entity: &EntityKey,
        signal: Signal,
        value: f64,
    ) {
        self.ingest_metric(at, entity, signal, Metric::Level, value)
    }

    /// One value of an aggregate latency series (milliseconds or a latency index): feeds
    /// throttling detection only.
    pub fn ingest_rtt_value(
        &mut self,
        at: DateTime<Utc>,
        entity: &EntityKey,
        signal: Signal,
        value: f64,
    ) {
        self.ingest_metric(at, entity, signal, Metric::Rtt, value)
    }

    fn ingest_metric(
        &mut self,
        at: DateTime<Utc>,
        entity: &EntityKey,
        signal: Signal,
        metric: Metric,
        value: f64,
    ) {
        if !value.is_finite() {
            return;
        }
        let e = self.intern_entity(entity.clone());
        let bin = self.bin_of(at);
        let Some((bd, late)) = self.bin_for_write(bin) else {
            self.stats.too_late_observations += 1;
            return;
        };
        let v = bd.values.entry((e, signal, metric)).or_default();
        v.0 += value;
        v.1 += 1;
        if late {
            bd.dirty = true;
        }
        self.stats.values += 1;
    }

    /// One reading of a BGP source: the visible share of a country's or one of its
    /// networks' address space becomes a value of that entity's `bgp` series, and the
    /// withdrawals become the evidence its events carry. A reading without a share (no
    /// quorum of healthy peers, no address space) says nothing: BGP not knowing is not the
    /// entity going dark. A reading whose country is not an ISO code is dropped (the
    /// sources build them from the catalog, so that is a source's bug, not data).
    pub fn ingest_bgp(&mut self, v: &BgpVisibility) {
        if !is_country_code(&v.country) {
            return;
        }
        let entity = match v.asn {
            None => EntityKey::Country(v.country.clone()),
            Some(asn) => EntityKey::Asn {
                country: v.country.clone(),
                asn,
            },
        };
        let e = self.intern_entity(entity.clone());
        match &v.withdrawals {
            Some(w) => {
                self.bgp_withdrawals.insert(e, w.clone());
            }
            None => {
                self.bgp_withdrawals.remove(&e);
            }
        }
        self.stats.bgp_readings += 1;
        let at = v.at.timestamp();
        let share = v.share();
        let base = self
            .series
            .get(&(e, Signal::Bgp))
            .and_then(|s| s.level.last_baseline)
            .filter(|b| *b > 1e-9);
        let warn = self.cfg.thresholds(Signal::Bgp).0;
        let live = self.bgp_live.entry(e).or_default();
        if at < live.at {
            // Readings of one entity come in order; an older one is a source's replay.
            return;
        }
        // Low against the baseline of the last closed bin: during warm-up nothing is low.
        let low = share.zip(base).is_some_and(|(s, b)| s / b < warn);
        if low {
            live.low_since.get_or_insert(at);
        } else {
            live.low_since = None;
            live.confirmed = false;
            live.steady = share;
        }
        live.share = share;
        live.at = at;
    }

    /// The bgp value of an entity for a bin that closes at `end` (Unix seconds): the share
    /// read last, but the steady one while a low run is not yet confirmed (one noisy
    /// reading is not the entity's space falling), and none when the reading is stale.
    fn bgp_value(&self, live: &BgpLive, end: i64) -> Option<f64> {
        if end - live.at > BGP_READING_MAX_AGE_SECS {
            return None;
        }
        match live.low_since {
            Some(since) if !live.confirmed && end - since < self.cfg.bgp_confirm_secs as i64 => {
                live.steady
            }
            _ => live.share,
        }
    }

    /// The state a confirmed BGP drop of `e` stands for now (None: no confirmed drop).
    fn bgp_live_state(&self, e: u32) -> Option<State> {
        let live = self.bgp_live.get(&e).filter(|l| l.confirmed)?;
        let base = self.series.get(&(e, Signal::Bgp))?.level.last_baseline?;
        let ratio = live.share? / base;
        let (_, outage) = self.cfg.thresholds(Signal::Bgp);
        Some(if ratio < outage {
            State::Outage
        } else {
            State::Warning
        })
    }

    /// Withdrawal evidence of `e`: its own, or for a country without its own, its
    /// networks' together.
    fn withdrawals_of(&self, e: u32) -> Option<BgpWithdrawals> {
        if let Some(w) = self.bgp_withdrawals.get(&e) {
            return Some(w.clone());
        }
        let kids = self.children.get(&e)?;
        let mut out: Option<BgpWithdrawals> = None;
        for w in kids.iter().filter_map(|k| self.bgp_withdrawals.get(k)) {
            match &mut out {
                None => out = Some(w.clone()),
                Some(o) => {
                    o.prefixes_withdrawn =
                        o.prefixes_withdrawn.saturating_add(w.prefixes_withdrawn);
                    o.first_withdrawal_at = o.first_withdrawal_at.min(w.first_withdrawal_at);
                    for x in &w.examples {
                        if o.examples.len() < BgpWithdrawals::MAX_LISTED && !o.examples.contains(x)
                        {
                            o.examples.push(x.clone());
                        }
                    }
                    for x in &w.peers {
                        if o.peers.len() < BgpWithdrawals::MAX_LISTED && !o.peers.contains(x) {
                            o.peers.push(x.clone());
                        }
                    }
                }
            }
        }
        out
    }

    /// BGP drops that lasted `bgp_confirm_secs` by `now` open their entity's event, or
    /// mark the open one `routes_withdrawn`, without waiting for the bin to close.
    /// Countries first, so that a country's national event absorbs its networks' drops.
    fn bgp_live_check(&mut self, now: DateTime<Utc>, changes: &mut Vec<EventChange>) {
        let confirm = self.cfg.bgp_confirm_secs as i64;
        let t = now.timestamp();
        let mut due: Vec<u32> = self
            .bgp_live
            .iter()
            .filter(|(_, l)| !l.confirmed && l.low_since.is_some_and(|s| t - s >= confirm))
            .map(|(e, _)| *e)
            .collect();
        due.sort_by_key(|e| (!self.entities[*e as usize].is_country(), *e));
        for e in due {
            let Some(live) = self.bgp_live.get_mut(&e) else {
                continue;
            };
            live.confirmed = true;
            let since = live.low_since.unwrap_or(t);
            let share = live.share;
            let Some(sev) = self.bgp_live_state(e) else {
                // No baseline yet: nothing to confirm against.
                if let Some(l) = self.bgp_live.get_mut(&e) {
                    l.confirmed = false;
                }
                continue;
            };
            let key = self.entities[e as usize].clone();
            let bin = self.bin_of(now);
            if let Some(&i) = self.open.get(&e) {
                if self.events[i].kind.family() == EventKind::Partial.family() {
                    let ev = &mut self.events[i];
                    let before = (ev.severity, ev.mechanism);
                    ev.severity = ev.severity.max(sev);
                    ev.mechanism = Some(Mechanism::RoutesWithdrawn);
                    if (ev.severity, ev.mechanism) != before {
                        self.note_bgp(i, e, share);
                        changes.push(EventChange {
                            change: ChangeKind::Updated,
                            event: self.events[i].clone(),
                        });
                    }
                    continue;
                }
                self.close_event(e, i, bin, changes);
            }
            let parent_national = key
                .parent()
                .and_then(|p| self.entity_index.get(&p))
                .and_then(|p| self.open.get(p))
                .is_some_and(|i| self.events[*i].kind == EventKind::NationalBlackout);
            if parent_national {
                continue;
            }
            // National as for the probes: more than `national_network_share` of the
            // country's networks (those BGP reports on) low too. One large network
            // withdrawing is its own partial event and its country's.
            let national = key.is_country() && sev == State::Outage && {
                let kids: Vec<u32> = self
                    .children
                    .get(&e)
                    .map(|k| {
                        k.iter()
                            .copied()
                            .filter(|k| self.bgp_live.contains_key(k))
                            .collect()
                    })
                    .unwrap_or_default();
                let low = kids
                    .iter()
                    .filter(|k| self.bgp_live[*k].low_since.is_some())
                    .count();
                kids.is_empty() || low as f64 > self.cfg.national_network_share * kids.len() as f64
            };
            let kind = if national {
                EventKind::NationalBlackout
            } else {
                EventKind::Partial
            };
            let c = Cond {
                since: Some(self.bin_of(Utc.timestamp_opt(since, 0).single().unwrap_or(now))),
                mechanism: Some(Mechanism::RoutesWithdrawn),
                ..Cond::default()
            };
            self.open_event(e, kind, sev, &c, bin, now, changes);
            if let Some(&i) = self.open.get(&e) {
                self.note_bgp(i, e, share);
                if let Some(last) = changes.last_mut() {
                    last.event = self.events[i].clone();
                }
            }
        }
    }

    /// Puts `e`'s BGP evidence into event `i`.
    fn note_bgp(&mut self, i: usize, e: u32, share: Option<f64>) {
        let w = self.withdrawals_of(e);
        let ev = &mut self.events[i].evidence;
        if let Some(s) = share {
            ev.bgp_lowest_share = Some(ev.bgp_lowest_share.map_or(s, |x| x.min(s)));
        }
        if w.is_some() {
            ev.bgp_withdrawals = w;
        }
    }

    /// Gives every closing bin from `from` to `to` the bgp value of each entity BGP
    /// reports on (as an aggregate value of the bin).
    fn fill_bgp_bins(&mut self, from: i64, to: i64) {
        if self.bgp_live.is_empty() {
            return;
        }
        let from = from.max(to - self.late_bins);
        for b in from..=to {
            let end = self.bin_start(b + 1).timestamp();
            let values: Vec<(u32, f64)> = self
                .bgp_live
                .iter()
                .filter(|(_, l)| l.at <= end + self.cfg.grace_secs as i64 || b == to)
                .filter_map(|(e, l)| Some((*e, self.bgp_value(l, end)?)))
                .collect();
            if values.is_empty() {
                continue;
            }
            let bd = self.bins.entry(b).or_default();
            for (e, v) in values {
                bd.values.insert((e, Signal::Bgp, Metric::Level), (v, 1));
            }
        }
    }

    /// The withdrawals the BGP sources last reported for an entity.
    pub fn bgp_withdrawals(&self, entity: &EntityKey) -> Option<&BgpWithdrawals> {
        let e = self.entity_index.get(entity)?;
        self.bgp_withdrawals.get(e)
    }

    /// The first instant after `now` at which `advance` closes another bin (a bin's end
    /// plus the grace), so that a caller can wake then instead of polling.
    pub fn next_close_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let bin = self.cfg.bin_secs as i64;
        let grace = self.cfg.grace_secs as i64;
        ts(((now.timestamp() - grace).div_euclid(bin) + 1) * bin + grace)
    }

    /// Closes every bin whose end plus `grace_secs` is at or before `now`, re-evaluates
    /// closed bins that received late data, and returns what changed in the events.
    pub fn advance(&mut self, now: DateTime<Utc>) -> Vec<EventChange> {
        let mut changes = Vec::new();
        let dirty: Vec<i64> = self
            .bins
            .iter()
            .filter(|(b, d)| d.dirty && self.last_closed.is_some_and(|lc| **b <= lc))
            .map(|(b, _)| *b)
            .collect();
        for b in dirty {
            self.reevaluate(b, &mut changes);
        }
        if !self.late_evidence.is_empty() {
            self.apply_late_evidence(&mut changes);
        }
        self.bgp_live_check(now, &mut changes);
        let bin = self.cfg.bin_secs as i64;
        let closable = (now.timestamp() - self.cfg.grace_secs as i64).div_euclid(bin) - 1;
        if self.last_closed.is_some_and(|lc| closable <= lc) {
            return changes;
        }
        let from = self.last_closed.map_or(i64::MIN, |lc| lc + 1);
        self.fill_bgp_bins(from, closable);
        let to_close: Vec<i64> = self.bins.range(from..=closable).map(|(b, _)| *b).collect();
        for b in to_close {
            let mut result = self.aggregate(b);
            self.learn_rtts(std::mem::take(&mut result.target_rtts));
            if let Some(bd) = self.bins.get_mut(&b) {
                bd.dirty = false;
                bd.late_pending.clear();
                bd.close();
            }
            self.evaluate(b, &result, now, &mut changes);
            self.last_health = self.health_list(b);
            self.last_uncovered = result.uncovered.iter().copied().collect();
            self.stats.bins_closed += 1;
        }
        if !self.bins.contains_key(&closable)
            && self.last_closed.is_some_and(|lc| closable > lc)
            && !self.last_health.is_empty()
        {
            // Not one observation in the newest closed bin, after bins with some: every
            // agent is silent, so none is a healthy vantage point now.
            self.last_health = (0..self.agents.len() as u32)
                .map(|a| (a, false, Tally::default()))
                .collect();
            self.last_uncovered.clear();
        }
        self.last_closed = Some(closable);
        let keep_from = closable - self.late_bins + 1;
        self.bins = self.bins.split_off(&keep_from);
        changes
    }

    fn learn_rtts(&mut self, samples: Vec<(u32, f32)>) {
        for (t, r) in samples {
            let base = &mut self.targets[t as usize].rtt_base_ms;
            if !base.is_finite() {
                *base = r;
            } else {
                // Learn slowly, and far more slowly from values that look like throttling.
                let alpha = if r <= 2.0 * *base { 0.1 } else { 0.005 };
                *base += alpha * (r - *base);
            }
        }
    }

    fn agent_health(&self, bd: &BinData, bin: i64, agent: u32) -> (bool, Tally) {
        match bd.control.get(&agent) {
            Some(t) => (self.cfg.vantage_healthy(t.ok as u64, t.fail as u64), *t),
            // One that probes controls but sent none this bin has lost its own way out.
            // One that never has cannot be checked: trusted only after its first
            // bins, since an agent probes its controls somewhere in its first round and
            // one that starts cut off would otherwise make its targets look dark.
            None => {
                let unchecked_trusted = !self.agent_has_controls[agent as usize]
                    && self.agent_first_bin[agent as usize]
                        .is_some_and(|f| bin >= f + UNCHECKED_AGENT_GRACE_BINS);
                (unchecked_trusted, Tally::default())
            }
        }
    }

    /// Whether a healthy agent's latencies count in a bin: only when its own path was
    /// clean, i.e. at most half the failed-control share that makes it unhealthy failed
    /// this bin, and it was healthy in the bin before (when that bin is still held).
    /// Across its own link's flap a vantage's connects complete through retransmitted
    /// SYNs and queries through retries, a second or more late: its reachability votes
    /// still count (the health rule), its delays are its own and not the targets'. Seen
    /// in the namespace scenarios: the agent inside a country cut off, healthy again in
    /// the bin of the restore, alone in measuring a few targets of another country in
    /// that bin, opened a throttling event there.
    fn latency_trusted(&self, prev: Option<&BinData>, prev_bin: i64, agent: u32, t: Tally) -> bool {
        let probes = (t.ok + t.fail) as f64;
        if t.fail as f64 > 0.5 * self.cfg.control_fail_share * probes {
            return false;
        }
        match prev {
            // Beyond the window (or no observation at all from anyone then): nothing to
            // hold against the agent.
            None => true,
            Some(p) => p.agents.contains(&agent) && self.agent_health(p, prev_bin, agent).0,
        }
    }

    fn health_list(&self, bin: i64) -> Vec<(u32, bool, Tally)> {
        let Some(bd) = self.bins.get(&bin) else {
            return Vec::new();
        };
        (0..self.agents.len() as u32)
            .map(|a| {
                if bd.agents.contains(&a) {
                    let (h, t) = self.agent_health(bd, bin, a);
                    (a, h, t)
                } else {
                    (a, false, Tally::default())
                }
            })
            .collect()
    }

    /// Vantage health, quorum per target, aggregation per entity and signal.
    fn aggregate(&self, bin: i64) -> BinResult {
        let mut out = BinResult::default();
        let Some(bd) = self.bins.get(&bin) else {
            return out;
        };
        let mut healthy = vec![false; self.agents.len()];
        let mut clean_path = vec![false; self.agents.len()];
        let prev = self.bins.get(&(bin - 1));
        for &a in &bd.agents {
            let (h, tally) = self.agent_health(bd, bin, a);
            healthy[a as usize] = h;
            clean_path[a as usize] = h && self.latency_trusted(prev, bin - 1, a, tally);
            if h {
                out.healthy.push(a);
            } else {
                out.unhealthy.push(a);
            }
        }
        let slot_healthy: Vec<bool> = (0..bd.votes.slots())
            .map(|s| healthy[bd.votes.agent(s) as usize])
            .collect();
        let slot_clean: Vec<bool> = (0..bd.votes.slots())
            .map(|s| clean_path[bd.votes.agent(s) as usize])
            .collect();
        #[derive(Default)]
        struct EAcc {
            up: u32,
            down: u32,
            rtts: Vec<f64>,
            ratios: Vec<f64>,
            added_ms: Vec<f64>,
            probes: u64,
            replies: u64,
        }
        let mut per_entity: BTreeMap<(u32, Signal), EAcc> = BTreeMap::new();
        // Targets seen by unhealthy agents: rare, so the normal path pays nothing.
        let mut seen_unhealthy: Vec<u32> = Vec::new();
        // The healthy agents' RTTs of one target.
        let mut rtts: Vec<f32> = Vec::new();
        for target in 0..bd.votes.rows() as u32 {
            let row = bd.votes.row(target);
            if row.iter().all(|w| *w == 0) {
                continue;
            }
            // A closed bin has no extras: its latency and loss were taken at the close.
            let extras = bd.extras.row(target);
            let (mut probed, mut failed, mut unsure) = (0u32, 0u32, 0u32);
            let (mut probes, mut replies) = (0u64, 0u64);
            let mut any_healthy = false;
            let mut any_unhealthy = false;
            rtts.clear();
            for (i, (slot, vote)) in Votes::voters(row).enumerate() {
                if !slot_healthy[slot] {
                    any_unhealthy = true;
                    continue;
                }
                any_healthy = true;
                match vote {
                    Vote::Up => probed += 1,
                    Vote::Down => {
                        probed += 1;
                        failed += 1;
                    }
                    Vote::Unsure => unsure += 1,
                }
                if let Some(x) = extras.get(i) {
                    let (p, r) = bd.extras.sample(target, slot, x);
                    probes += p as u64;
                    replies += r as u64;
                    if vote == Vote::Up && x.rtt_ms.is_finite() && slot_clean[slot] {
                        rtts.push(x.rtt_ms);
                    }
                }
            }
            if any_unhealthy {
                seen_unhealthy.push(target);
            }
            if !any_healthy || probed == 0 {
                continue;
            }
            // A vantage that measured a block and could not tell still votes: a block is
            // down only when most of the vantages that measured it say so, and up likewise
            // (else it has no verdict this bin). Without it one vantage that lost its path
            // to a network decides alone for every block the others are unsure of.
            let voters = (probed + unsure) as f64;
            let down = failed as f64 > self.cfg.down_quorum * voters;
            let judged = down || (probed - failed) as f64 >= (1.0 - self.cfg.down_quorum) * voters;
            let meta = &self.targets[target as usize];
            // The lower median over agents: a delay counts only when at least half the
            // vantage points saw it. One agent's slow answers (SYNs retransmitted across
            // its own link flap, its own queueing) are that agent's, not the target's.
            let rtt = (!rtts.is_empty()).then(|| {
                rtts.sort_by(|a, b| a.total_cmp(b));
                rtts[(rtts.len() - 1) / 2] as f64
            });
            if let Some(r) = rtt {
                out.target_rtts.push((target, r as f32));
            }
            let ratio = rtt
                .filter(|_| meta.rtt_base_ms.is_finite() && meta.rtt_base_ms > 0.0)
                .map(|r| r / meta.rtt_base_ms as f64);
            for &e in &meta.entities[..meta.n_entities as usize] {
                let acc = per_entity.entry((e, meta.signal)).or_default();
                if let Some(r) = rtt {
                    acc.rtts.push(r);
                }
                if let Some(q) = ratio {
                    acc.ratios.push(q);
                    if let Some(r) = rtt {
                        acc.added_ms.push(r - meta.rtt_base_ms as f64);
                    }
                }
                if down {
                    acc.down += 1;
                } else if judged {
                    acc.up += 1;
                    acc.probes += probes;
                    acc.replies += replies;
                }
            }
        }
        if !seen_unhealthy.is_empty() {
            // Targets with a vote of a healthy agent.
            let covered: BTreeSet<u32> = (0..bd.votes.rows() as u32)
                .filter(|&t| Votes::voters(bd.votes.row(t)).any(|(slot, _)| slot_healthy[slot]))
                .flat_map(|t| {
                    let m = &self.targets[t as usize];
                    m.entities[..m.n_entities as usize].to_vec()
                })
                .collect();
            let uncovered: BTreeSet<u32> = seen_unhealthy
                .iter()
                .flat_map(|t| {
                    let m = &self.targets[*t as usize];
                    m.entities[..m.n_entities as usize].to_vec()
                })
                .filter(|e| !covered.contains(e))
                .collect();
            out.uncovered = uncovered.into_iter().collect();
        }
        let min_targets = self.cfg.min_targets;
        for ((entity, signal), mut acc) in per_entity {
            let n = acc.up + acc.down;
            let enough = n >= min_targets;
            out.aggs.push(Agg {
                entity,
                signal,
                up: acc.up,
                down: acc.down,
                level: enough.then(|| acc.up as f64 / n as f64),
                rtt_ms: if acc.rtts.len() as u32 >= min_targets {
                    median(&mut acc.rtts)
                } else {
                    None
                },
                rtt_value: if acc.ratios.len() as u32 >= min_targets {
                    median(&mut acc.ratios)
                } else {
                    None
                },
                rtt_added_ms: if acc.added_ms.len() as u32 >= min_targets {
                    median(&mut acc.added_ms)
                } else {
                    None
                },
                loss: (acc.probes > 0).then(|| 1.0 - acc.replies as f64 / acc.probes as f64),
                loss_sent: acc.probes,
                loss_lost: acc.probes.saturating_sub(acc.replies),
            });
        }
        let mut external: BTreeMap<(u32, Signal), Agg> = BTreeMap::new();
        for (&(entity, signal, metric), &(sum, n)) in &bd.values {
            let a = external.entry((entity, signal)).or_insert(Agg {
                entity,
                signal,
                up: 0,
                down: 0,
                level: None,
                rtt_ms: None,
                rtt_value: None,
                rtt_added_ms: None,
                loss: None,
                loss_sent: 0,
                loss_lost: 0,
            });
            let v = sum / n as f64;
            match metric {
                Metric::Level => a.level = Some(v),
                Metric::Rtt => {
                    a.rtt_ms = Some(v);
                    a.rtt_value = Some(v);
                }
            }
        }
        out.aggs.extend(external.into_values());
        out
    }

    fn level_raw(&self, signal: Signal, ratio: f64, degraded: bool) -> State {
        let (warn, outage) = self.cfg.thresholds(signal);
        let normal_at = if degraded {
            self.cfg.recovery_ratio
        } else {
            warn
        };
        if ratio < outage {
            State::Outage
        } else if ratio < normal_at {
            State::Warning
        } else {
            State::Normal
        }
    }

    fn level_rules(&self) -> Rules {
        Rules {
            warning_min_bins: self.cfg.warning_min_bins,
            outage_min_bins: self.cfg.outage_min_bins,
            recovery_min_bins: self.cfg.recovery_min_bins,
        }
    }

    fn throttle_rules(&self) -> Rules {
        Rules {
            warning_min_bins: self.cfg.throttle_min_bins,
            outage_min_bins: u32::MAX,
            recovery_min_bins: self.cfg.recovery_min_bins,
        }
    }

    /// Feeds one bin's aggregate into its series: baseline from history before the bin,
    /// state step, then the inpainted value into history.
    fn update_series(&mut self, bin: i64, agg: &Agg) {
        let shape = self.shape;
        let level_shape = self.level_shape;
        let cap = self.hist_cap;
        let trail_cap = self.trail_cap;
        let level_rules = self.level_rules();
        let throttle_rules = self.throttle_rules();
        let rtt_factor = self.cfg.throttle_rtt_factor;
        let loss_inc = self.cfg.throttle_loss_increase;
        let warn = self.cfg.thresholds(agg.signal).0;
        let min_missing = self.cfg.min_targets_down as f64;
        let mut s = self
            .series
            .remove(&(agg.entity, agg.signal))
            .unwrap_or_default();
        if agg.level.is_some() {
            s.targets = agg.up + agg.down;
            s.targets_down = agg.down;
        }
        // Whether this bin's reachability is below normal: then the loss on the targets
        // still up is the edge of the outage (probes failing as the cut lands), not a
        // throttle's, and its latency alone must last `throttle_min_bins`. The bin in
        // which reachability comes back is an edge too: connects started during the cut
        // complete after the restore through retransmitted SYNs, a second late or more
        // (seen in the namespace scenarios: a one-bin throttling event on a network at
        // the end of its country's national blackout).
        let mut level_down = s.level.tracker.state() != State::Normal;
        if let Some(v) = agg.level {
            let base = baseline(&s.level.hist, bin, &level_shape).filter(|b| *b > 1e-9);
            let mut store = v;
            if let Some(b) = base {
                let ratio = v / b;
                let degraded = s.level.tracker.state() != State::Normal;
                let mut raw = self.level_raw(agg.signal, ratio, degraded);
                // One target of three failing is a 33 % drop and an anecdote: a drop
                // counts only when enough targets are missing against the baseline.
                let n = (agg.up + agg.down) as f64;
                if n > 0.0 && b * n - agg.up as f64 <= min_missing - 0.5 {
                    raw = State::Normal;
                }
                level_down |= raw != State::Normal;
                let st = s.level.tracker.step(bin, raw, &level_rules);
                // Inpainting: a degraded value must not drag the baseline down.
                if st != State::Normal || ratio < warn {
                    store = b;
                }
            }
            s.level.hist.set(bin, store as f32, cap);
            s.trail.set(bin, trail_slot(v, base), trail_cap);
            s.level.last_value = Some(v);
            s.level.last_baseline = base;
            s.level.last_bin = Some(bin);
        }
        if agg.rtt_ms.is_some() {
            s.rtt_ms = agg.rtt_ms;
        }
        // Both kinds of throttling evidence first: latency and loss seen together in one
        // bin are stronger than either (see `throttle`).
        let loss_base = agg.loss.and_then(|_| baseline(&s.loss.hist, bin, &shape));
        let loss_ev = match (agg.loss, loss_base) {
            (Some(_), Some(b)) if !level_down => throttle::loss_evidence(
                &self.cfg,
                agg.loss_lost,
                agg.loss_sent,
                b,
                s.loss.tracker.state() != State::Normal,
            ),
            _ => throttle::Evidence::None,
        };
        let rtt_base = agg
            .rtt_value
            .and_then(|_| baseline(&s.rtt.hist, bin, &shape).filter(|b| *b > 1e-9));
        let rtt_ev = match (agg.rtt_value, rtt_base) {
            (Some(v), Some(b)) => throttle::rtt_evidence(
                &self.cfg,
                v / b,
                agg.rtt_added_ms,
                s.rtt.tracker.state() != State::Normal,
            ),
            _ => throttle::Evidence::None,
        };
        let (rtt_bad, loss_bad, one_bin) = throttle::combine(rtt_ev, loss_ev);
        // Nor is one bin enough while reachability drops or comes back: the answers of
        // the bins a cut begins and ends in (retransmitted SYNs, queues at the cut) are
        // the outage's edges.
        let one_bin = one_bin && !level_down;
        let rules = if one_bin {
            Rules {
                warning_min_bins: 1,
                ..throttle_rules
            }
        } else {
            throttle_rules
        };
        if let Some(v) = agg.rtt_value {
            let mut store = v;
            if let Some(b) = rtt_base {
                let raw = if rtt_bad {
                    State::Warning
                } else {
                    State::Normal
                };
                s.rtt.tracker.step(bin, raw, &rules);
                // Inpainting: a slow bin must not teach the baseline that slow is normal.
                if rtt_bad || v / b >= 1.0 + (rtt_factor - 1.0) * 0.5 {
                    store = b;
                }
            }
            s.rtt.hist.set(bin, store as f32, cap);
            s.rtt.last_value = Some(v);
            s.rtt.last_baseline = rtt_base;
            s.rtt.last_bin = Some(bin);
        }
        if let Some(v) = agg.loss {
            s.loss_sent = agg.loss_sent;
            // A handful of probes is shown but neither judged nor learned from.
            if agg.loss_sent >= throttle::MIN_LOSS_PROBES {
                let mut store = v;
                if let Some(b) = loss_base {
                    let raw = if loss_bad {
                        State::Warning
                    } else {
                        State::Normal
                    };
                    s.loss.tracker.step(bin, raw, &rules);
                    if loss_bad || v - b >= loss_inc * 0.5 {
                        store = b;
                    }
                }
                s.loss.hist.set(bin, store as f32, cap);
            }
            s.loss.last_value = Some(v);
            s.loss.last_baseline = loss_base;
            s.loss.last_bin = Some(bin);
        }
        self.series.insert((agg.entity, agg.signal), s);
    }

    fn evaluate(
        &mut self,
        bin: i64,
        result: &BinResult,
        now: DateTime<Utc>,
        changes: &mut Vec<EventChange>,
    ) {
        for agg in &result.aggs {
            self.update_series(bin, agg);
        }
        let conds = self.conditions(bin);
        let healthy: Vec<String> = result
            .healthy
            .iter()
            .take(MAX_EVIDENCE_NAMES)
            .map(|a| self.agents[*a as usize].clone())
            .collect();
        let unhealthy: Vec<String> = result
            .unhealthy
            .iter()
            .take(MAX_EVIDENCE_NAMES)
            .map(|a| self.agents[*a as usize].clone())
            .collect();
        let bin_counts = self.bin_target_counts(result);
        let mut entities: Vec<u32> = conds.keys().copied().collect();
        entities.extend(self.open.keys().copied());
        entities.sort_unstable();
        entities.dedup();
        for e in entities {
            let cond = conds.get(&e).and_then(|c| c.event);
            let open = self.open.get(&e).copied();
            match (open, cond) {
                (None, None) => {}
                (None, Some((kind, sev))) => {
                    let c = &conds[&e];
                    self.open_event(e, kind, sev, c, bin, now, changes);
                }
                (Some(i), Some((kind, sev))) if self.events[i].kind.family() == kind.family() => {
                    let ev = &mut self.events[i];
                    let before = (ev.kind, ev.severity, ev.mechanism);
                    if kind == EventKind::NationalBlackout {
                        ev.kind = kind;
                    }
                    ev.severity = ev.severity.max(sev);
                    ev.mechanism = merge_mechanism(vec![ev.mechanism, conds[&e].mechanism]);
                    if (ev.kind, ev.severity, ev.mechanism) != before {
                        changes.push(EventChange {
                            change: ChangeKind::Updated,
                            event: ev.clone(),
                        });
                    }
                }
                // Services often fail a bin before the network when a blackout begins:
                // a service blocking of one bin that the network's outage follows was
                // that outage's first bin.
                (Some(i), Some((kind, sev)))
                    if self.events[i].kind == EventKind::ServiceBlocking
                        && kind.family() == EventKind::Partial.family()
                        && self.events[i].evidence.bins <= 1 =>
                {
                    let ev = &mut self.events[i];
                    ev.kind = kind;
                    ev.severity = ev.severity.max(sev);
                    ev.mechanism = conds[&e].mechanism;
                    changes.push(EventChange {
                        change: ChangeKind::Updated,
                        event: ev.clone(),
                    });
                }
                (Some(i), Some((kind, sev))) => {
                    self.close_event(e, i, bin, changes);
                    let c = &conds[&e];
                    self.open_event(e, kind, sev, c, bin, now, changes);
                }
                // A network's own outage that opened before its country's national
                // blackout was the blackout's first sign: it becomes part of it in place
                // (no new network events open while the national one lasts).
                (Some(i), None) if conds.get(&e).is_some_and(|c| c.absorbed) => {
                    let ev = &mut self.events[i];
                    if ev.kind == EventKind::Partial {
                        ev.kind = EventKind::NationalBlackout;
                        changes.push(EventChange {
                            change: ChangeKind::Updated,
                            event: ev.clone(),
                        });
                    }
                }
                (Some(i), None) => {
                    let end_bin = bin - (self.cfg.recovery_min_bins as i64 - 1);
                    self.close_event(e, i, end_bin, changes);
                }
            }
            if let Some(&i) = self.open.get(&e) {
                let c = conds.get(&e);
                let counts = bin_counts.get(&e).copied().unwrap_or_default();
                let ev = &mut self.events[i];
                ev.evidence.bins += 1;
                if let Some(c) = c {
                    if let Some(sh) = c.bgp_share {
                        ev.evidence.bgp_lowest_share =
                            Some(ev.evidence.bgp_lowest_share.map_or(sh, |x| x.min(sh)));
                    }
                    ev.peak_drop = ev.peak_drop.max(c.peak_drop);
                    ev.peak_rtt_ratio = ev.peak_rtt_ratio.max(c.rtt_ratio);
                    for s in &c.signals {
                        if !ev.evidence.signals.contains(s) {
                            ev.evidence.signals.push(*s);
                        }
                    }
                    for n in &c.networks {
                        push_capped(&mut ev.evidence.networks, n);
                    }
                }
                for a in &healthy {
                    push_capped(&mut ev.evidence.agents, a);
                }
                for a in &unhealthy {
                    push_capped(&mut ev.evidence.unhealthy_agents, a);
                }
                merge_counts(&mut ev.evidence, counts);
                if ev.mechanism == Some(Mechanism::RoutesWithdrawn)
                    && let Some(w) = self.withdrawals_of(e)
                {
                    self.events[i].evidence.bgp_withdrawals = Some(w);
                }
            }
        }
        self.views = conds
            .iter()
            .map(|(e, c)| {
                (
                    *e,
                    View {
                        state: c.state,
                        kind: c.event.map(|(k, _)| k),
                    },
                )
            })
            .collect();
    }

    /// Targets down and with a verdict per entity in one bin, all signals together.
    fn bin_target_counts(&self, result: &BinResult) -> FxMap<u32, (u32, u32)> {
        let mut m: FxMap<u32, (u32, u32)> = FxMap::default();
        for a in &result.aggs {
            let c = m.entry(a.entity).or_default();
            c.0 += a.down;
            c.1 += a.up + a.down;
        }
        m
    }

    #[allow(clippy::too_many_arguments)]
    fn open_event(
        &mut self,
        e: u32,
        kind: EventKind,
        severity: State,
        c: &Cond,
        bin: i64,
        now: DateTime<Utc>,
        changes: &mut Vec<EventChange>,
    ) {
        let start_bin = c.since.unwrap_or(bin).min(bin);
        let ev = Event {
            id: self.next_id,
            entity: self.entities[e as usize].clone(),
            kind,
            severity,
            start: self.bin_start(start_bin),
            end: None,
            detected_at: now,
            peak_drop: 0.0,
            peak_rtt_ratio: 1.0,
            mechanism: c.mechanism,
            evidence: Evidence::default(),
        };
        self.next_id += 1;
        changes.push(EventChange {
            change: ChangeKind::Opened,
            event: ev.clone(),
        });
        self.open.insert(e, self.events.len());
        self.events.push(ev);
    }

    fn close_event(&mut self, e: u32, i: usize, end_bin: i64, changes: &mut Vec<EventChange>) {
        let start = self.events[i].start;
        let mut end = self.bin_start(end_bin);
        if end <= start {
            end = start + chrono::Duration::seconds(self.cfg.bin_secs as i64);
        }
        let ev = &mut self.events[i];
        ev.end = Some(end);
        changes.push(EventChange {
            change: ChangeKind::Closed,
            event: ev.clone(),
        });
        self.open.remove(&e);
    }

    /// Per entity: overall state, and the event it calls for.
    fn conditions(&self, bin: i64) -> BTreeMap<u32, Cond> {
        let mut own: BTreeMap<u32, Cond> = BTreeMap::new();
        let mut by_entity: BTreeMap<u32, Vec<(Signal, &SignalSeries)>> = BTreeMap::new();
        for ((e, s), ser) in &self.series {
            by_entity.entry(*e).or_default().push((*s, ser));
        }
        for (e, sigs) in &by_entity {
            if let Some(c) =
                self.own_condition(*e, sigs, self.entities[*e as usize].is_country(), bin)
            {
                own.insert(*e, c);
            }
        }
        let name = |e: u32| self.entities[e as usize].to_string();
        // Countries: national when most networks and most signals agree; countries with
        // no series of their own (regional input) are judged from their networks.
        let mut out = own.clone();
        for (e, key) in self.entities.iter().enumerate() {
            let e = e as u32;
            if !key.is_country() {
                continue;
            }
            let kids: Vec<u32> = self
                .children
                .get(&e)
                .map(|k| k.iter().copied().filter(|k| own.contains_key(k)).collect())
                .unwrap_or_default();
            let disrupted: Vec<u32> = kids
                .iter()
                .copied()
                .filter(|k| own[k].net.is_some_and(|s| s >= State::Warning))
                .collect();
            let out_kids = kids
                .iter()
                .filter(|k| own[*k].net == Some(State::Outage))
                .count();
            let net_share = if kids.is_empty() {
                None
            } else {
                Some(disrupted.len() as f64 / kids.len() as f64)
            };
            let nat_net = self.cfg.national_network_share;
            match own.get(&e) {
                Some(c) => {
                    let mut c = c.clone();
                    c.networks = disrupted.iter().map(|k| name(*k)).collect();
                    // Services failing with a network of the country are that network's
                    // outage, reported on it.
                    if matches!(c.event, Some((EventKind::ServiceBlocking, _)))
                        && !disrupted.is_empty()
                    {
                        c.event = None;
                        c.state = State::Normal;
                    }
                    if let Some((EventKind::Partial, sev)) = c.event {
                        let national = sev == State::Outage
                            && net_share.is_none_or(|s| s > nat_net)
                            && c.signal_share >= self.cfg.national_signal_share;
                        if national {
                            c.event = Some((EventKind::NationalBlackout, sev));
                        }
                    }
                    out.insert(e, c);
                }
                None => {
                    let Some(share) = net_share else { continue };
                    let mut c = Cond {
                        state: State::Normal,
                        ..Cond::default()
                    };
                    if share > nat_net {
                        let sev = if out_kids as f64 > nat_net * kids.len() as f64 {
                            State::Outage
                        } else {
                            State::Warning
                        };
                        c.state = sev;
                        c.net = Some(sev);
                        c.event = Some((EventKind::NationalBlackout, sev));
                        c.mechanism =
                            merge_mechanism(disrupted.iter().map(|k| own[k].mechanism).collect());
                        c.networks = disrupted.iter().map(|k| name(*k)).collect();
                        c.since = disrupted.iter().filter_map(|k| own[k].since).min();
                        c.peak_drop = disrupted
                            .iter()
                            .map(|k| own[k].peak_drop)
                            .fold(0.0, f64::max);
                        let mut sigs: Vec<Signal> = disrupted
                            .iter()
                            .flat_map(|k| own[k].signals.clone())
                            .collect();
                        sigs.sort();
                        sigs.dedup();
                        c.signals = sigs;
                    } else if !disrupted.is_empty() {
                        c.state = State::Warning;
                    }
                    out.insert(e, c);
                }
            }
        }
        // Networks and regions inside a national blackout are part of its one event (the
        // country's evidence names them), not events of their own: one shutdown, one
        // event. A network gets its own event only when it fails alone.
        // Country -> the bin its national blackout ended in (None: it lasts).
        let mut national: BTreeMap<u32, Option<i64>> = out
            .iter()
            .filter(|(_, c)| matches!(c.event, Some((EventKind::NationalBlackout, _))))
            .map(|(e, _)| (*e, None))
            .collect();
        // Networks do not come back in the same instant: when links return in the middle
        // of a bin, the country's share is back above its threshold while a network whose
        // targets were probed before the restore still looks down for a bin. That tail is
        // the blackout's, not a partial outage of its own (seen in the namespace
        // scenarios: a one-bin partial event of one ASN right after the national one).
        // An open national event without a national condition is closing in this bin.
        let tail_from = self.bin_start(bin - NATIONAL_TAIL_BINS);
        for ev in self.events.iter().filter(|ev| {
            ev.kind == EventKind::NationalBlackout
                && ev.entity.is_country()
                && ev.end.is_none_or(|end| end >= tail_from)
        }) {
            if let Some(&e) = self.entity_index.get(&ev.entity) {
                let end = ev.end.map(|t| self.bin_of(t));
                let slot = national.entry(e).or_insert(end);
                *slot = slot.zip(end).map(|(a, b)| a.max(b));
            }
        }
        for (e, c) in out.iter_mut() {
            let key = &self.entities[*e as usize];
            if key.is_country() {
                continue;
            }
            if let Some((EventKind::Partial, _)) = c.event {
                let parent = key
                    .parent()
                    .and_then(|p| self.entity_index.get(&p).copied());
                // Inside the blackout while it lasts; after its end, only a network
                // down since before the end is its tail. One that went down after the
                // end (its routes withdrawn a bin later) fails alone: its own event,
                // not a "national blackout" of one network.
                let inside = parent
                    .and_then(|p| national.get(&p))
                    .is_some_and(|end| match end {
                        None => true,
                        Some(end) => c.since.is_none_or(|since| since < *end),
                    });
                if inside {
                    c.event = None;
                    c.absorbed = true;
                }
            }
            if c.net.is_some_and(|s| s >= State::Warning) {
                c.networks = vec![key.to_string()];
            }
        }
        out
    }

    /// An entity's condition from its own series. On a network or region, service
    /// blocking needs two bins: a few HTTP targets of one network fail together by chance
    /// more often than a country's name servers do.
    fn own_condition(
        &self,
        e: u32,
        sigs: &[(Signal, &SignalSeries)],
        is_country: bool,
        bin: i64,
    ) -> Option<Cond> {
        // BGP votes on its own (below): it is the network's routes, not one more probe.
        let bgp_series = sigs
            .iter()
            .find(|(s, ss)| *s == Signal::Bgp && ss.level.tracker.state.is_some())
            .map(|(_, ss)| *ss);
        // A confirmed drop between bins counts at once, before the state machine's
        // minimum duration: its event is already open.
        let bgp_state = bgp_series
            .map(|ss| ss.level.tracker.state())
            .max(self.bgp_live_state(e));
        let bgp_share = bgp_series
            .filter(|ss| ss.level.last_bin == Some(bin))
            .and_then(|ss| ss.level.last_value);
        let mut with_verdict: Vec<(Signal, &SignalSeries)> = sigs
            .iter()
            .filter(|(sig, s)| *sig != Signal::Bgp && s.level.tracker.state.is_some())
            .copied()
            .collect();
        let is_net = |s: Signal| matches!(s, Signal::Icmp | Signal::Tcp);
        // An entity with network signals judges its network on them only.
        let has_net = with_verdict.iter().any(|(s, _)| is_net(*s));
        // Signals measured in this bin vote; one without a value here (its reports still
        // in flight, e.g. adaptive ICMP blocks that wait several timeouts to say "down")
        // would vote with its state from before. With none measured (every vantage point
        // unhealthy), the states from before stand.
        if with_verdict
            .iter()
            .any(|(_, s)| s.level.last_bin == Some(bin))
        {
            with_verdict.retain(|(_, s)| s.level.last_bin == Some(bin));
        }
        let throttled_sigs: Vec<Signal> = sigs
            .iter()
            .filter(|(_, s)| {
                s.rtt.tracker.state() != State::Normal || s.loss.tracker.state() != State::Normal
            })
            .map(|(sig, _)| *sig)
            .collect();
        if with_verdict.is_empty() && throttled_sigs.is_empty() && bgp_state.is_none() {
            return None;
        }
        let (net_sigs, svc_sigs): (Vec<_>, Vec<_>) = if has_net {
            with_verdict.iter().partition(|(s, _)| is_net(*s))
        } else {
            (with_verdict.clone(), Vec::new())
        };
        // The state reached by a majority of the signals: ICMP and TCP must agree, so
        // that one signal's noise or filtering alone never makes a network look down.
        let combine = |v: &[(Signal, &SignalSeries)]| -> Option<State> {
            let mut st: Vec<State> = v.iter().map(|(_, s)| s.level.tracker.state()).collect();
            if st.is_empty() {
                return None;
            }
            st.sort_by(|a, b| b.cmp(a));
            Some(st[st.len() / 2])
        };
        let probe_net = combine(&net_sigs);
        // Reachability and/or routes: either falling is the network falling.
        let net = probe_net.max(bgp_state);
        let bgp_down = bgp_state.is_some_and(|s| s != State::Normal);
        // Service blocking: services failing while the network signals are normal, both
        // for `service_min_bins` bins in a row (a network's few targets: at least 2).
        // Both runs end in this bin, so they overlap for the shorter of them. Services
        // that failed with the network (the tail of an outage: they often come back a bin
        // after it) need two bins from the network's recovery on. A network signal
        // without a value in this bin cannot vouch for the network.
        let net_good_run = net_sigs
            .iter()
            .map(|(_, s)| {
                if s.level.last_bin == Some(bin) {
                    s.level.tracker.good_run
                } else {
                    0
                }
            })
            .min()
            .unwrap_or(0);
        let net_good_start = net_sigs
            .iter()
            .filter_map(|(_, s)| s.level.tracker.good_start)
            .max();
        let svc = svc_sigs.iter().map(|(_, s)| s.level.tracker.state()).max();
        // Loss on the network signals explains failing services: an HTTP fetch takes
        // several round trips and fails long before a ping does under a throttle's loss
        // (the simulator's +150 ms, +30 % loss throttles opened `service_blocking` on HTTP
        // alone in bins where the network's own throttling verdict had lapsed). Blocking
        // is a service failing while the network carries its packets as usual.
        // It keeps a blocking from starting, not one that runs from going on: a bin's
        // loss noise on a network's few targets must not split a DNS block's event.
        let blocking_open = self
            .open
            .get(&e)
            .is_some_and(|&i| self.events[i].kind == EventKind::ServiceBlocking);
        let net_lossy = !blocking_open
            && net_sigs.iter().any(|(_, s)| {
                s.loss.last_bin == Some(bin)
                    && s.loss_sent >= throttle::MIN_LOSS_PROBES
                    && match (s.loss.last_value, s.loss.last_baseline) {
                        (Some(v), Some(b)) => {
                            let b = b.clamp(0.0, 0.95);
                            (v - b) / (1.0 - b) >= self.cfg.throttle_loss_increase * 0.5
                        }
                        _ => false,
                    }
            });
        let degraded: Vec<(Signal, &SignalSeries)> = with_verdict
            .iter()
            .filter(|(_, s)| s.level.tracker.state() != State::Normal)
            .copied()
            .collect();
        let drop_of = |s: &SignalSeries| {
            let v = s.level.last_value?;
            let b = s.level.last_baseline?;
            Some((1.0 - v / b).clamp(0.0, 1.0))
        };
        let mut peak_drop = degraded
            .iter()
            .filter_map(|(_, s)| drop_of(s))
            .fold(0.0, f64::max);
        if bgp_down && let Some(d) = bgp_series.and_then(drop_of) {
            peak_drop = peak_drop.max(d);
        }
        let voters = with_verdict.len() + usize::from(bgp_state.is_some());
        let since_of = |v: &[(Signal, &SignalSeries)], rtt: bool| {
            v.iter()
                .filter_map(|(_, s)| {
                    if rtt {
                        s.rtt.tracker.since.or(s.loss.tracker.since)
                    } else {
                        s.level.tracker.since
                    }
                })
                .min()
        };
        let rtt_ratio = sigs
            .iter()
            .filter_map(|(_, s)| Some(s.rtt.last_value? / s.rtt.last_baseline?))
            .fold(1.0, f64::max);
        let mut c = Cond {
            state: State::Normal,
            net,
            signal_share: if voters == 0 {
                0.0
            } else {
                (degraded.len() + usize::from(bgp_down)) as f64 / voters as f64
            },
            peak_drop,
            rtt_ratio,
            bgp_share,
            ..Cond::default()
        };
        // Throttling loses some probes: a warning-level drop under throttling is the
        // throttling; an outage-level one is an outage.
        let reach = net
            .filter(|s| *s == State::Outage || (*s == State::Warning && throttled_sigs.is_empty()));
        if let Some(n) = reach {
            c.state = n;
            c.event = Some((EventKind::Partial, n));
            c.signals = degraded.iter().map(|(s, _)| *s).collect();
            c.since = since_of(&degraded, false);
            if bgp_down {
                c.signals.push(Signal::Bgp);
                let bgp_since = bgp_series.and_then(|s| s.level.tracker.since);
                c.since = match (c.since, bgp_since) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            // How: BGP lost the routes, or carried them while the probes failed.
            c.mechanism = if bgp_down {
                Some(Mechanism::RoutesWithdrawn)
            } else if bgp_state.is_some() {
                Some(Mechanism::TrafficBlocked)
            } else {
                None
            };
        } else if !throttled_sigs.is_empty() {
            c.mechanism = Some(Mechanism::Throttling);
            c.state = State::Warning;
            c.event = Some((EventKind::Throttling, State::Warning));
            let bad: Vec<_> = sigs
                .iter()
                .filter(|(s, _)| throttled_sigs.contains(s))
                .copied()
                .collect();
            c.signals = throttled_sigs;
            c.since = since_of(&bad, true);
        } else if let Some(sv) = svc.filter(|s| *s >= State::Warning)
            && !net_lossy
            && svc_sigs.iter().any(|(_, s)| {
                let t = &s.level.tracker;
                let base = if is_country {
                    self.cfg.service_min_bins
                } else {
                    self.cfg.service_min_bins.max(2)
                };
                let tail = t.since.is_some_and(|since| net_good_start > Some(since));
                let need = if tail { base.max(2) } else { base };
                t.state() != State::Normal && t.bad_run.min(net_good_run) >= need
            })
        {
            c.state = State::Warning;
            c.event = Some((EventKind::ServiceBlocking, sv));
            c.mechanism = Some(Mechanism::ServiceBlocking);
            let bad: Vec<_> = svc_sigs
                .iter()
                .filter(|(_, s)| s.level.tracker.state() != State::Normal)
                .copied()
                .collect();
            c.signals = bad.iter().map(|(s, _)| *s).collect();
            c.since = since_of(&bad, false).max(net_good_start);
        }
        Some(c)
    }

    /// Re-aggregates a closed bin that received late data: its values in the series'
    /// history (inpainted as at first evaluation) and the evidence of events covering it.
    /// States and event boundaries already reported are not rewritten.
    fn reevaluate(&mut self, bin: i64, changes: &mut Vec<EventChange>) {
        let result = self.aggregate(bin);
        let pending: Vec<(u32, u64)> = match self.bins.get_mut(&bin) {
            Some(bd) => {
                bd.dirty = false;
                bd.late_pending.drain().collect()
            }
            None => Vec::new(),
        };
        self.stats.bins_reevaluated += 1;
        let level_shape = self.level_shape;
        let cap = self.hist_cap;
        let trail_cap = self.trail_cap;
        let t0 = self.bin_start(bin);
        let covering = |ev: &Event| ev.start <= t0 && ev.end.is_none_or(|e| e > t0);
        for agg in &result.aggs {
            let Some(v) = agg.level else { continue };
            let in_event = self
                .events
                .iter()
                .rev()
                .any(|ev| ev.entity == self.entities[agg.entity as usize] && covering(ev));
            let warn = self.cfg.thresholds(agg.signal).0;
            let s = self.series.entry((agg.entity, agg.signal)).or_default();
            let base = baseline(&s.level.hist, bin, &level_shape).filter(|b| *b > 1e-9);
            let store = match base {
                Some(b) if in_event || v / b < warn => b,
                _ => v,
            };
            s.level.hist.set(bin, store as f32, cap);
            s.trail.set(bin, trail_slot(v, base), trail_cap);
            if s.level.last_bin == Some(bin) {
                s.level.last_value = Some(v);
                s.targets = agg.up + agg.down;
                s.targets_down = agg.down;
            }
        }
        let counts = self.bin_target_counts(&result);
        let healthy: Vec<String> = result
            .healthy
            .iter()
            .map(|a| self.agents[*a as usize].clone())
            .collect();
        let unhealthy: Vec<String> = result
            .unhealthy
            .iter()
            .map(|a| self.agents[*a as usize].clone())
            .collect();
        let pending: FxMap<u32, u64> = pending.into_iter().collect();
        for i in 0..self.events.len() {
            if !covering(&self.events[i]) {
                continue;
            }
            let Some(&e) = self.entity_index.get(&self.events[i].entity) else {
                continue;
            };
            let late = pending.get(&e).copied().unwrap_or(0);
            let ev = &mut self.events[i];
            ev.evidence.late_observations += late;
            for a in &healthy {
                push_capped(&mut ev.evidence.agents, a);
            }
            for a in &unhealthy {
                push_capped(&mut ev.evidence.unhealthy_agents, a);
            }
            if let Some(c) = counts.get(&e) {
                merge_counts(&mut ev.evidence, *c);
            }
            changes.push(EventChange {
                change: ChangeKind::Updated,
                event: ev.clone(),
            });
        }
    }

    fn apply_late_evidence(&mut self, changes: &mut Vec<EventChange>) {
        let pending: Vec<((u32, i64), u64)> = self.late_evidence.drain().collect();
        let mut touched = BTreeSet::new();
        for ((e, bin), n) in pending {
            let t0 = self.bin_start(bin);
            let key = &self.entities[e as usize];
            for (i, ev) in self.events.iter_mut().enumerate() {
                if &ev.entity == key && ev.start <= t0 && ev.end.is_none_or(|end| end > t0) {
                    ev.evidence.late_observations += n;
                    touched.insert(i);
                }
            }
        }
        for i in touched {
            changes.push(EventChange {
                change: ChangeKind::Updated,
                event: self.events[i].clone(),
            });
        }
    }

    /// All events, open and closed, oldest first.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    pub fn open_events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter().filter(|e| e.is_open())
    }

    /// The trails (value and baseline per bin, from the bin holding `since` on) of the
    /// series whose entity `which` accepts, in entity then signal order. Reaches back at
    /// most [`TRAIL_SECS`].
    pub fn trails(
        &self,
        which: impl Fn(&EntityKey) -> bool,
        since: DateTime<Utc>,
    ) -> Vec<SeriesTrail> {
        let from = self.bin_of(since);
        let opt = |v: f32| v.is_finite().then_some(v as f64);
        let mut out: Vec<SeriesTrail> = self
            .series
            .iter()
            .filter(|((e, _), _)| which(&self.entities[*e as usize]))
            .map(|((e, sig), s)| SeriesTrail {
                entity: self.entities[*e as usize].clone(),
                signal: *sig,
                points: s
                    .trail
                    .since(from)
                    .map(|(bin, (v, b))| TrailPoint {
                        start: self.bin_start(bin),
                        value: opt(v),
                        baseline: opt(b),
                    })
                    .collect(),
            })
            .collect();
        out.sort_by(|a, b| (&a.entity, a.signal).cmp(&(&b.entity, b.signal)));
        out
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut entities = Vec::new();
        let mut by_entity: BTreeMap<u32, Vec<SignalSnapshot>> = BTreeMap::new();
        for ((e, sig), s) in &self.series {
            let ratio = |st: &SeriesState| Some(st.last_value? / st.last_baseline?);
            by_entity.entry(*e).or_default().push(SignalSnapshot {
                signal: *sig,
                value: s.level.last_value,
                baseline: s.level.last_baseline,
                ratio: ratio(&s.level),
                state: s.level.tracker.state,
                targets: s.targets,
                targets_down: s.targets_down,
                rtt_ms: s.rtt_ms,
                rtt_baseline_ms: s.rtt_ms.zip(ratio(&s.rtt)).map(|(ms, q)| ms / q),
                rtt_ratio: ratio(&s.rtt),
                loss: s.loss.last_value,
                loss_probes: s.loss_sent,
                loss_baseline: s.loss.last_baseline,
                throttled: s.rtt.tracker.state() != State::Normal
                    || s.loss.tracker.state() != State::Normal,
            });
        }
        for (e, key) in self.entities.iter().enumerate() {
            let e = e as u32;
            let view = self.views.get(&e);
            let signals = by_entity.remove(&e).unwrap_or_default();
            if signals.is_empty() && view.is_none() {
                continue;
            }
            entities.push(EntitySnapshot {
                entity: key.clone(),
                state: view.map_or(State::Normal, |v| v.state),
                no_verdict: self.no_verdict(e, &signals),
                kind: view.and_then(|v| v.kind),
                event_id: self.open.get(&e).map(|i| self.events[*i].id),
                mechanism: self.open.get(&e).and_then(|i| self.events[*i].mechanism),
                signals,
            });
        }
        entities.sort_by(|a, b| a.entity.cmp(&b.entity));
        let agents = self
            .agents
            .iter()
            .enumerate()
            .map(|(a, name)| {
                let h = self.last_health.iter().find(|(x, _, _)| *x as usize == a);
                AgentSnapshot {
                    agent: name.clone(),
                    healthy: h.is_some_and(|h| h.1),
                    control_ok: h.map_or(0, |h| h.2.ok),
                    control_failed: h.map_or(0, |h| h.2.fail),
                    last_seen: self.agent_last_bin[a].map(|b| self.bin_start(b)),
                }
            })
            .collect();
        let vantage = VantageSnapshot {
            agents: self.agents.len() as u32,
            healthy_agents: self.last_health.iter().filter(|h| h.1).count() as u32,
            control_ok: self.last_health.iter().map(|h| h.2.ok).sum(),
            control_failed: self.last_health.iter().map(|h| h.2.fail).sum(),
            healthy: !self.vantage_lost(None),
            uncovered: self
                .last_uncovered
                .iter()
                .map(|e| self.entities[*e as usize].clone())
                .collect(),
        };
        Snapshot {
            at: self.last_closed.map(|b| self.bin_start(b + 1)),
            bin_secs: self.cfg.bin_secs,
            entities,
            agents,
            vantage,
            open_events: self.open.len(),
            stats: self.stats,
        }
    }

    /// True when the last closed bin gives `entity` (or, with None, the whole fleet) no
    /// healthy vantage point. Engines fed only aggregate series (no agents, so no health
    /// list) have no vantage to lose.
    fn vantage_lost(&self, entity: Option<u32>) -> bool {
        // Before a bin with observations has closed, nothing is known either way.
        if self.last_health.is_empty() {
            return false;
        }
        entity.is_some_and(|e| self.last_uncovered.contains(&e))
            || !self.last_health.iter().any(|h| h.1)
    }

    fn no_verdict(&self, entity: u32, signals: &[SignalSnapshot]) -> Option<NoVerdict> {
        if self.vantage_lost(Some(entity)) {
            Some(NoVerdict::NoHealthyVantage)
        } else if signals.iter().any(|s| s.state.is_some()) {
            None
        } else if signals.iter().any(|s| s.value.is_some()) {
            Some(NoVerdict::WarmUp)
        } else if self.views.contains_key(&entity) {
            // A state without a series (events only): that state is the verdict.
            None
        } else {
            Some(NoVerdict::NoData)
        }
    }

    /// An engine read back from a snapshot, with the settings it runs with (the same
    /// ones it was saved with: a snapshot taken under other settings is not used).
    pub fn with_config(self, cfg: DetectConfig) -> Engine {
        let fresh = Engine::new(cfg);
        Engine {
            cfg: fresh.cfg,
            shape: fresh.shape,
            level_shape: fresh.level_shape,
            hist_cap: fresh.hist_cap,
            trail_cap: fresh.trail_cap,
            late_bins: fresh.late_bins,
            ..self
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Cond {
    /// Part of its country's national blackout: no event of its own.
    absorbed: bool,
    state: State,
    net: Option<State>,
    event: Option<(EventKind, State)>,
    signals: Vec<Signal>,
    networks: Vec<String>,
    since: Option<i64>,
    signal_share: f64,
    peak_drop: f64,
    rtt_ratio: f64,
    /// How: from the event's kind, and for reachability from what BGP saw.
    mechanism: Option<Mechanism>,
    /// The entity's visible share in BGP in this bin, when BGP has a verdict on it.
    bgp_share: Option<f64>,
}

/// The mechanism of an event from what its bins (or networks) said: routes withdrawn
/// once seen stays (probes may still reach a cached path for a while; the routes were
/// gone); otherwise the latest that is known.
fn merge_mechanism(seen: Vec<Option<Mechanism>>) -> Option<Mechanism> {
    if seen.contains(&Some(Mechanism::RoutesWithdrawn)) {
        return Some(Mechanism::RoutesWithdrawn);
    }
    seen.into_iter().rev().flatten().next()
}

fn merge_counts(ev: &mut Evidence, (down, total): (u32, u32)) {
    if total == 0 {
        return;
    }
    let share = down as f64 / total as f64;
    if ev.targets_total == 0 || share > ev.share_of_targets {
        ev.targets_down = down;
        ev.targets_total = total;
        ev.share_of_targets = share;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blackout_model::observation::{Failure, Phase};

    const BIN: i64 = 300;

    fn obs(agent: &str, target: u32, bin: i64, ok: bool, rtt: f64) -> Observation {
        Observation {
            agent: agent.into(),
            target: format!("icmp:t{target}"),
            country: "KZ".into(),
            asn: 64500 + target % 3,
            region: None,
            signal: Signal::Icmp,
            control: false,
            measured_at: ts(bin * BIN + 7 + target as i64 % 200),
            ok,
            phase: (!ok).then_some(Phase::Connect),
            failure: (!ok).then_some(Failure::Timeout),
            rtt_ms: ok.then_some(rtt),
            block: None,
            timings_ms: None,
        }
    }

    fn close(eng: &mut Engine, bin: i64) {
        eng.advance(ts((bin + 1) * BIN + 60));
    }

    /// A closed bin keeps its votes only, and late data on top of them (for pairs it had
    /// and pairs it had not) give the levels the open bin would have given with all of it
    /// in time, and exactly what a closed bin fed in time gives.
    #[test]
    fn packed_cells_with_late_data_aggregate_as_the_open_bin_would() {
        let agents = ["a1", "a2", "a3"];
        let in_time: Vec<Observation> = (0..60u32)
            .flat_map(|t| {
                agents[..2]
                    .iter()
                    .map(move |a| obs(a, t, 1, t % 5 != 0, 20.0 + t as f64))
            })
            .collect();
        // Late: a3's whole bin, and a second look by a1 that answers where it failed.
        let late: Vec<Observation> = (0..60u32)
            .map(|t| obs("a3", t, 1, t % 4 != 0, 30.0 + t as f64))
            .chain(
                (0..60u32)
                    .filter(|t| t % 5 == 0)
                    .map(|t| obs("a1", t, 1, true, 5.0)),
            )
            .collect();
        let mut whole = Engine::new(DetectConfig::default());
        let mut split = Engine::new(DetectConfig::default());
        // Each agent's controls answer (an agent without any is no vantage in its first
        // bins): the late agent's with its late data.
        let control = |a: &str| Observation {
            control: true,
            country: "ZZ".into(),
            target: format!("control-{a}"),
            ..obs(a, 0, 1, true, 10.0)
        };
        for o in in_time
            .iter()
            .cloned()
            .chain(agents[..2].iter().map(|a| control(a)))
        {
            whole.ingest(&o);
            split.ingest(&o);
        }
        let late: Vec<Observation> = late.into_iter().chain([control("a3")]).collect();
        for o in &late {
            whole.ingest(o);
        }
        let open = whole.aggregate(1);
        close(&mut whole, 1);
        close(&mut split, 1);
        let bd = &split.bins[&1];
        assert!(bd.closed && (0..60).all(|t| bd.extras.row(t).is_empty()));
        assert_eq!(bd.votes.slots(), 2);
        for o in &late {
            split.ingest(o);
        }
        assert_eq!(split.bins[&1].votes.slots(), 3);
        assert!(split.bins[&1].dirty);
        close(&mut split, 2);
        let (a, b) = (whole.aggregate(1), split.aggregate(1));
        assert_eq!(format!("{:?}", a.aggs), format!("{:?}", b.aggs));
        assert_eq!((&a.healthy, &a.unhealthy), (&b.healthy, &b.unhealthy));
        let levels = |r: &BinResult| {
            r.aggs
                .iter()
                .map(|g| (g.entity, g.signal, g.up, g.down, g.level))
                .collect::<Vec<_>>()
        };
        assert_eq!(levels(&open), levels(&b));
        assert!(b.aggs.iter().any(|g| g.up > 0 && g.down > 0));
        // What re-evaluation does not use is not kept: latency and loss come from the
        // open bin, at its close.
        assert!(
            open.aggs
                .iter()
                .any(|g| g.rtt_ms.is_some() && g.loss.is_some())
        );
        assert!(
            b.aggs
                .iter()
                .all(|g| g.rtt_ms.is_none() && g.loss.is_none())
        );
        assert!(b.target_rtts.is_empty());
    }
}
