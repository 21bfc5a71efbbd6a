//! `blackout probe-sim`: the real adaptive ICMP prober against a simulated sparse Internet,
//! feeding the real detector.
//!
//! Each vantage keeps its own [`BlockState`] per block and runs the prober's own
//! [`BlockRound`] every round; only the echo is simulated. Blocks answer as the Internet
//! does (Trinocular, PAM 2020): few addresses ever answer, a large share of blocks below
//! 0.3 availability, some blocks silent, hosts renumbered (the answering slots move),
//! mobile networks dimming at night, hosts rate-limiting ICMP, one vantage losing its path
//! to one network for hours. Ground truth (national and one-ASN outages, a vantage's uplink
//! lost or the vantage silent) is scored against the detector's events.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use ipnet::{IpNet, Ipv4Net};

use blackout_detect::sim::Rng;
use blackout_detect::{DetectConfig, Engine, EntityKey, Event, EventKind};
use blackout_model::observation::{BlockVerdict, Failure, Observation, Phase, Signal};
use blackout_probe::icmp::{BlockRound, BlockState, RoundPolicy};
use blackout_probe::{Outcome, ProbeSettings};

/// The agent's default round (`round_secs`), which is also the detector's default bin.
pub const ROUND_SECS: u64 = 300;
/// Goals of issue 15.
pub const GOAL_COVERAGE: f64 = 0.96;
pub const GOAL_PRECISION: f64 = 0.99;
pub const GOAL_RECALL: f64 = 0.98;
/// Detection delay goal of the quality tables (bins).
pub const GOAL_MEDIAN_DELAY_BINS: f64 = 2.0;
/// A host that answers is up or down for this long at a time (not a coin per echo).
const HOST_EPOCH_SECS: u64 = 3600;
/// Share of the hour-long epochs a steady host is up (an intermittent one: the rest).
const STEADY_UP: f64 = 0.97;
/// Echoes lost at random on every path.
const BACKGROUND_LOSS: f64 = 0.005;
/// Share of blocks renumbered (all answering slots moved) per day.
const CHURN_PER_DAY: f64 = 0.05;
/// Share of blocks whose hosts rate-limit ICMP.
const RATE_LIMITED_SHARE: f64 = 0.15;
/// Echoes to one block remembered for the per-host rate limit.
const RING: usize = 8;
const CONTROLS: usize = 4;
/// Countries with their UTC offset (hours) and ASN count.
const COUNTRIES: [(&str, i64, usize); 4] = [("KZ", 5, 8), ("UZ", 5, 6), ("KG", 6, 5), ("TJ", 5, 4)];

/// Arguments of `blackout probe-sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeSimArgs {
    /// Simulated /24 blocks.
    #[arg(long, default_value_t = 100_000)]
    pub blocks: usize,
    /// Simulated days (rounds of 300 s).
    #[arg(long, default_value_t = 2.0)]
    pub days: f64,
    /// Vantages, each with its own prober state per block.
    #[arg(long, default_value_t = 3)]
    pub vantages: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Hours before any disturbance and before coverage is counted (beliefs and the
    /// learned addresses form; the detector warms up).
    #[arg(long, default_value_t = 6.0)]
    pub warmup_hours: f64,
    /// Also print the ground truth and every event (JSON Lines) after the report.
    #[arg(long)]
    pub events: bool,
}

impl Default for ProbeSimArgs {
    fn default() -> Self {
        ProbeSimArgs {
            blocks: 100_000,
            days: 2.0,
            vantages: 3,
            seed: 1,
            warmup_hours: 6.0,
            events: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeSimError {
    #[error("probe-level simulation: goals missed: {0}")]
    GoalsMissed(String),
}

pub fn run(args: &ProbeSimArgs) -> Result<(), ProbeSimError> {
    let report = simulate(args);
    println!("{}", report.markdown());
    if args.events {
        for line in &report.log {
            println!("{line}");
        }
    }
    let missed = report.goal_failures();
    if missed.is_empty() {
        Ok(())
    } else {
        Err(ProbeSimError::GoalsMissed(missed.join("; ")))
    }
}

// ---------------------------------------------------------------- the world

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Truth {
    National,
    /// One ASN cut.
    Partial,
    /// The vantage's own uplink fails: all its echoes fail, controls included.
    VantageUplinkLoss,
    /// The vantage sends nothing.
    VantageSilent,
    /// One vantage cannot reach one ASN; the ASN is fine.
    PathLoss,
}

impl Truth {
    pub fn as_str(self) -> &'static str {
        match self {
            Truth::National => "national",
            Truth::Partial => "partial (one ASN)",
            Truth::VantageUplinkLoss => "vantage uplink loss",
            Truth::VantageSilent => "vantage silent",
            Truth::PathLoss => "path loss (one vantage, one ASN)",
        }
    }
    fn is_outage(self) -> bool {
        matches!(self, Truth::National | Truth::Partial)
    }
}

#[derive(Debug, Clone)]
pub struct Disturbance {
    pub kind: Truth,
    pub country: usize,
    /// Index into the world's ASNs.
    pub asn: Option<usize>,
    pub vantage: Option<usize>,
    pub start_bin: usize,
    pub end_bin: usize,
}

#[derive(Debug, Clone)]
struct Asn {
    country: usize,
    number: u32,
    /// Night-time drop of availability (mobile networks: tens of percent).
    swing: f64,
    /// Base RTT from each vantage, milliseconds.
    rtt_ms: Vec<f64>,
}

#[derive(Debug, Clone, Copy)]
struct Block {
    asn: u16,
    /// Ever-active addresses (0: a silent block).
    n_active: u8,
    /// Host echoes per minute before the host stops answering (0: no limit).
    rate_limit: u8,
    ring_pos: u8,
    /// Share of the active addresses up at a time, before the diurnal swing.
    availability: f32,
    /// The answering slots; they move when the block is renumbered.
    active: [u64; 4],
    /// Recent echoes (seconds, slot) for the rate limit.
    ring: [(u32, u8); RING],
}

impl Block {
    fn is_active(&self, slot: u32) -> bool {
        slot < 256 && self.active[(slot / 64) as usize] & (1 << (slot % 64)) != 0
    }
    fn renumber(&mut self, r: &mut Rng) {
        self.active = [0; 4];
        let mut n = 0;
        while n < self.n_active as u32 {
            let s = r.range(0, 255) as u32;
            if !self.is_active(s) {
                self.active[(s / 64) as usize] |= 1 << (s % 64);
                n += 1;
            }
        }
    }
    /// Whether a rate-limited host still answers an echo at `t`, and remembers it.
    fn within_rate(&mut self, slot: u32, t: u32) -> bool {
        if self.rate_limit == 0 {
            return true;
        }
        let recent = self
            .ring
            .iter()
            .filter(|(at, s)| *s as u32 == slot && *at + 60 > t && *at <= t)
            .count();
        self.ring[self.ring_pos as usize % RING] = (t, slot as u8);
        self.ring_pos = self.ring_pos.wrapping_add(1);
        recent < self.rate_limit as usize
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn unit(z: u64) -> f64 {
    (mix(z) >> 11) as f64 / (1u64 << 53) as f64
}

/// The simulated Internet and its ground truth.
pub struct World {
    pub seed: u64,
    pub bins: usize,
    pub warmup_bins: usize,
    pub vantages: usize,
    pub start: DateTime<Utc>,
    asns: Vec<Asn>,
    blocks: Vec<Block>,
    pub disturbances: Vec<Disturbance>,
}

impl World {
    pub fn generate(args: &ProbeSimArgs) -> World {
        let mut r = Rng::new(args.seed);
        let bins = (args.days * 86_400.0 / ROUND_SECS as f64).round() as usize;
        let warmup_bins = (args.warmup_hours * 3600.0 / ROUND_SECS as f64).round() as usize;
        let mut asns = Vec::new();
        let mut number = 9000 + r.range(0, 20_000) as u32;
        for (ci, &(_, _, n)) in COUNTRIES.iter().enumerate() {
            for k in 0..n {
                // Every third network is mobile: it dims by tens of percent at night.
                let swing = if k % 3 == 1 {
                    0.2 + 0.3 * r.f64()
                } else {
                    0.1 * r.f64()
                };
                asns.push(Asn {
                    country: ci,
                    number,
                    swing,
                    rtt_ms: (0..args.vantages).map(|_| 30.0 + 170.0 * r.f64()).collect(),
                });
                number += r.range(1, 3000) as u32;
            }
        }
        // Network sizes follow a Zipf-like spread: a few large, many small.
        let weights: Vec<f64> = asns
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let rank = i - asns
                    .iter()
                    .position(|b| b.country == a.country)
                    .unwrap_or(0);
                1.0 / (rank as f64 + 1.0)
            })
            .collect();
        let total: f64 = weights.iter().sum();
        let mut blocks = Vec::with_capacity(args.blocks);
        for (ai, w) in weights.iter().enumerate() {
            let n = if ai + 1 == asns.len() {
                args.blocks - blocks.len()
            } else {
                ((w / total) * args.blocks as f64).round() as usize
            };
            for _ in 0..n.min(args.blocks - blocks.len()) {
                blocks.push(new_block(ai as u16, &mut r));
            }
        }
        let mut disturbances = Vec::new();
        for ci in 0..COUNTRIES.len() {
            let country_asns: Vec<usize> =
                (0..asns.len()).filter(|&a| asns[a].country == ci).collect();
            let mut t = warmup_bins + r.range(0, 24) as usize;
            while t + 40 < bins {
                let kind = match r.range(0, 7) {
                    0..=2 => Truth::National,
                    3..=5 => Truth::Partial,
                    6 => Truth::VantageUplinkLoss,
                    _ => Truth::VantageSilent,
                };
                let len = r.range(2, 36) as usize;
                let asn = (kind == Truth::Partial)
                    .then(|| country_asns[r.range(0, country_asns.len() as u64 - 1) as usize]);
                let vantage =
                    (!kind.is_outage()).then(|| r.range(0, args.vantages as u64 - 1) as usize);
                disturbances.push(Disturbance {
                    kind,
                    country: ci,
                    asn,
                    vantage,
                    start_bin: t,
                    end_bin: (t + len).min(bins),
                });
                t += len + r.range(12, 60) as usize;
            }
        }
        // About three path losses a day, each for one to six hours.
        let n_path = ((bins as f64 / 288.0) * 3.0).ceil() as usize;
        for _ in 0..n_path {
            let start = r.range(warmup_bins as u64, bins as u64 - 1) as usize;
            let asn = r.range(0, asns.len() as u64 - 1) as usize;
            disturbances.push(Disturbance {
                kind: Truth::PathLoss,
                country: asns[asn].country,
                asn: Some(asn),
                vantage: Some(r.range(0, args.vantages as u64 - 1) as usize),
                start_bin: start,
                end_bin: (start + r.range(12, 72) as usize).min(bins),
            });
        }
        World {
            seed: args.seed,
            bins,
            warmup_bins,
            vantages: args.vantages,
            start: Utc.timestamp_opt(1_640_995_200, 0).unwrap(),
            asns,
            blocks,
            disturbances,
        }
    }

    fn bin_start(&self, bin: usize) -> DateTime<Utc> {
        self.start + chrono::Duration::seconds((bin as u64 * ROUND_SECS) as i64)
    }

    fn entity(&self, ev: &Event) -> Option<(usize, Option<usize>)> {
        let ci = COUNTRIES.iter().position(|c| c.0 == ev.entity.country())?;
        match &ev.entity {
            EntityKey::Country(_) => Some((ci, None)),
            EntityKey::Asn { asn, .. } => self
                .asns
                .iter()
                .position(|a| a.number == *asn)
                .map(|a| (ci, Some(a))),
            EntityKey::Region { .. } => None,
        }
    }
}

fn new_block(asn: u16, r: &mut Rng) -> Block {
    // About a tenth of the catalogued blocks never answer.
    let n_active = if r.chance(0.1) {
        0
    } else {
        // 1 to ~200 ever-active addresses, most blocks few (log-uniform).
        (200f64.powf(r.f64()).round() as u8).max(1)
    };
    // A large share of blocks below 0.3 (Trinocular's sparse blocks), the rest spread up.
    let availability = if r.chance(0.45) {
        0.03 + 0.27 * r.f64()
    } else {
        0.3 + 0.65 * r.f64()
    } as f32;
    let rate_limit = if r.chance(RATE_LIMITED_SHARE) {
        [1, 2, 5][r.range(0, 2) as usize]
    } else {
        0
    };
    let mut b = Block {
        asn,
        n_active,
        rate_limit,
        ring_pos: 0,
        availability,
        active: [0; 4],
        ring: [(0, 0); RING],
    };
    b.renumber(r);
    b
}

/// What holds in one bin: per country and per ASN, whether it is cut; per vantage its
/// uplink and its lost paths.
struct BinTruth {
    country_cut: Vec<bool>,
    asn_cut: Vec<bool>,
    uplink_lost: Vec<bool>,
    silent: Vec<bool>,
    /// (vantage, asn) pairs without a path.
    path_lost: Vec<(usize, usize)>,
}

impl World {
    fn truth(&self, bin: usize) -> BinTruth {
        let mut t = BinTruth {
            country_cut: vec![false; COUNTRIES.len()],
            asn_cut: vec![false; self.asns.len()],
            uplink_lost: vec![false; self.vantages],
            silent: vec![false; self.vantages],
            path_lost: Vec::new(),
        };
        for d in &self.disturbances {
            if !(d.start_bin <= bin && bin < d.end_bin) {
                continue;
            }
            match d.kind {
                Truth::National => t.country_cut[d.country] = true,
                Truth::Partial => t.asn_cut[d.asn.unwrap_or(0)] = true,
                Truth::VantageUplinkLoss => t.uplink_lost[d.vantage.unwrap_or(0)] = true,
                Truth::VantageSilent => t.silent[d.vantage.unwrap_or(0)] = true,
                Truth::PathLoss => t
                    .path_lost
                    .push((d.vantage.unwrap_or(0), d.asn.unwrap_or(0))),
            }
        }
        t
    }
}

// ---------------------------------------------------------------- the run

/// Coverage of one band of blocks: rounds counted and rounds with a verdict.
#[derive(Debug, Clone, Copy, Default)]
pub struct Band {
    pub rounds: u64,
    pub verdicts: u64,
    pub false_down: u64,
}

impl Band {
    pub fn coverage(&self) -> f64 {
        if self.rounds == 0 {
            1.0
        } else {
            self.verdicts as f64 / self.rounds as f64
        }
    }
    /// Share of the rounds that end with a right verdict: a false `down` is a verdict, but
    /// a wrong one (these blocks are all live and reachable when counted).
    pub fn right_coverage(&self) -> f64 {
        if self.rounds == 0 {
            1.0
        } else {
            (self.verdicts - self.false_down) as f64 / self.rounds as f64
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Outcomes {
    pub disturbances: usize,
    pub found: usize,
    pub delays: Vec<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct ProbeSimReport {
    pub blocks: usize,
    pub responsive_blocks: usize,
    pub sparse_blocks: usize,
    pub vantages: usize,
    pub bins: usize,
    pub seed: u64,
    pub echoes: u64,
    /// Block rounds run (one block, one vantage, one round; skipped ones not counted) and
    /// the most echoes one of them sent: the prober's probe budget.
    pub block_rounds: u64,
    pub max_round_echoes: u32,
    pub observations: u64,
    pub politeness_skips: u64,
    /// Undisturbed (responsive block, vantage, round) after warm-up.
    pub all: Band,
    /// By availability band of the block: < 0.1, 0.1-0.3, 0.3-0.6, >= 0.6.
    pub by_availability: [Band; 4],
    /// By ever-active addresses: 1, 2-5, 6-20, > 20.
    pub by_active: [Band; 4],
    /// (block, vantage) pairs whose prober has found an answering address by the end, and
    /// all pairs, by ever-active addresses of the block (bands as `by_active`).
    pub learned: [(u64, u64); 4],
    /// Responsive blocks with a verdict in at least 90 % of their undisturbed rounds.
    pub blocks_mostly_covered: usize,
    /// Blocks with at least one counted round.
    pub blocks_counted: usize,
    pub block_days: f64,
    pub country: Outcomes,
    pub asn: Outcomes,
    pub country_events: usize,
    pub country_true: usize,
    pub asn_events: usize,
    pub asn_true: usize,
    /// Events of other kinds (throttling, service blocking): there is no such truth here.
    pub other_events: usize,
    pub events_on_vantage_faults: usize,
    /// Events that started during the warm-up (not scored).
    pub warmup_events: usize,
    /// False block-down rounds within two hours after the block's network was cut or out
    /// of the vantage's reach (the prober coming back), included in `all.false_down`.
    pub false_down_recovering: u64,
    pub secs: f64,
    /// Ground truth and events, one line each (printed with `--events`).
    pub log: Vec<String>,
}

fn band_of_availability(a: f32) -> usize {
    match a {
        a if a < 0.1 => 0,
        a if a < 0.3 => 1,
        a if a < 0.6 => 2,
        _ => 3,
    }
}

fn band_of_active(n: u8) -> usize {
    match n {
        0 | 1 => 0,
        2..=5 => 1,
        6..=20 => 2,
        _ => 3,
    }
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[(v.len() - 1) / 2])
}

fn ratio(n: usize, d: usize) -> f64 {
    if d == 0 { 1.0 } else { n as f64 / d as f64 }
}

impl ProbeSimReport {
    pub fn coverage(&self) -> f64 {
        self.all.coverage()
    }
    /// Mean echoes per block round.
    pub fn echoes_per_round(&self) -> f64 {
        if self.block_rounds == 0 {
            0.0
        } else {
            self.echoes as f64 / self.block_rounds as f64
        }
    }
    pub fn false_down_per_1000_block_days(&self) -> f64 {
        if self.block_days == 0.0 {
            0.0
        } else {
            self.all.false_down as f64 * 1000.0 / self.block_days
        }
    }
    pub fn country_precision(&self) -> f64 {
        ratio(self.country_true, self.country_events)
    }
    pub fn asn_precision(&self) -> f64 {
        ratio(self.asn_true, self.asn_events)
    }
    pub fn country_recall(&self) -> f64 {
        ratio(self.country.found, self.country.disturbances)
    }
    pub fn asn_recall(&self) -> f64 {
        ratio(self.asn.found, self.asn.disturbances)
    }
    pub fn median_delay_bins(&self) -> Option<f64> {
        let all: Vec<f64> = self
            .country
            .delays
            .iter()
            .chain(&self.asn.delays)
            .copied()
            .collect();
        median(&all)
    }

    /// The goals missed; empty when all are met.
    pub fn goal_failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        let mut check = |name: &str, v: f64, goal: f64| {
            if v < goal {
                f.push(format!("{name} {v:.4} < {goal}"));
            }
        };
        check("coverage", self.coverage(), GOAL_COVERAGE);
        check(
            "country precision",
            self.country_precision(),
            GOAL_PRECISION,
        );
        check("ASN precision", self.asn_precision(), GOAL_PRECISION);
        check("country recall", self.country_recall(), GOAL_RECALL);
        check("ASN recall", self.asn_recall(), GOAL_RECALL);
        if let Some(d) = self.median_delay_bins()
            && d > GOAL_MEDIAN_DELAY_BINS
        {
            f.push(format!(
                "median delay {d:.2} bins > {GOAL_MEDIAN_DELAY_BINS}"
            ));
        }
        f
    }

    pub fn markdown(&self) -> String {
        let mut s = format!(
            "### Probe-level simulation: {} blocks ({} responsive, {} of them below 0.3 availability), {} vantages, {} rounds of {ROUND_SECS} s ({:.1} days), seed {}, {:.1} s\n\n{} echoes ({:.3} per block round, at most {} in one), {} observations, {} rounds skipped by the politeness budget\n\n",
            self.blocks,
            self.responsive_blocks,
            self.sparse_blocks,
            self.vantages,
            self.bins,
            self.bins as f64 * ROUND_SECS as f64 / 86_400.0,
            self.seed,
            self.secs,
            self.echoes,
            self.echoes_per_round(),
            self.max_round_echoes,
            self.observations,
            self.politeness_skips,
        );
        let yes = |ok: bool| if ok { "met" } else { "MISSED" };
        let delay = self.median_delay_bins();
        s += "| measure | value | goal | |\n|---|---|---|---|\n";
        s += &format!(
            "| coverage: responsive block rounds with a verdict | {:.4} | >= {GOAL_COVERAGE} | {} |\n",
            self.coverage(),
            yes(self.coverage() >= GOAL_COVERAGE)
        );
        s += &format!(
            "| responsive block rounds with a right verdict (up) | {:.4} | - | |\n",
            self.all.right_coverage()
        );
        s += &format!(
            "| responsive blocks with a verdict in >= 90 % of their rounds | {:.4} | - | |\n",
            ratio(self.blocks_mostly_covered, self.blocks_counted)
        );
        s += &format!(
            "| false block-down verdicts per 1,000 block-days (per vantage) | {:.2} ({} in {:.0}; {} of them within 2 h after a cut or lost path) | - | |\n",
            self.false_down_per_1000_block_days(),
            self.all.false_down,
            self.block_days,
            self.false_down_recovering
        );
        for (name, v, n, d, goal) in [
            (
                "country precision",
                self.country_precision(),
                self.country_true,
                self.country_events,
                GOAL_PRECISION,
            ),
            (
                "ASN precision",
                self.asn_precision(),
                self.asn_true,
                self.asn_events,
                GOAL_PRECISION,
            ),
            (
                "country recall (national outages >= 2 bins)",
                self.country_recall(),
                self.country.found,
                self.country.disturbances,
                GOAL_RECALL,
            ),
            (
                "ASN recall (one-ASN outages >= 2 bins)",
                self.asn_recall(),
                self.asn.found,
                self.asn.disturbances,
                GOAL_RECALL,
            ),
        ] {
            s += &format!(
                "| {name} | {v:.4} ({n}/{d}) | >= {goal} | {} |\n",
                yes(v >= goal)
            );
        }
        s += &format!(
            "| median detection delay (bins) | {} | <= {GOAL_MEDIAN_DELAY_BINS} | {} |\n",
            delay.map_or("-".into(), |d| format!("{d:.2}")),
            yes(delay.is_none_or(|d| d <= GOAL_MEDIAN_DELAY_BINS))
        );
        s += &format!(
            "| events of other kinds (no such truth here) | {} | - | |\n| events overlapping only vantage faults or path losses | {} | - | |\n| events that started during the warm-up (not scored) | {} | - | |\n\n",
            self.other_events, self.events_on_vantage_faults, self.warmup_events
        );
        s += "| blocks | rounds | coverage | false down | learned by the end (block, vantage) |\n|---|---|---|---|---|\n";
        let names_a = ["A < 0.1", "A 0.1-0.3", "A 0.3-0.6", "A >= 0.6"];
        let names_e = [
            "1 ever-active address",
            "2-5 addresses",
            "6-20 addresses",
            "> 20 addresses",
        ];
        for (i, (name, b)) in names_a
            .iter()
            .zip(&self.by_availability)
            .chain(names_e.iter().zip(&self.by_active))
            .enumerate()
        {
            let learned = i
                .checked_sub(4)
                .map(|e| self.learned[e])
                .map_or("".into(), |(l, n)| {
                    format!("{:.4} ({l}/{n})", ratio(l as usize, n as usize))
                });
            s += &format!(
                "| {name} | {} | {:.4} | {} | {learned} |\n",
                b.rounds,
                b.coverage(),
                b.false_down
            );
        }
        s
    }
}

/// Per-vantage timing of one block's round.
struct Slot {
    vantage: usize,
    offset: u64,
}

/// Runs the simulation and scores it.
pub fn simulate(args: &ProbeSimArgs) -> ProbeSimReport {
    let t0 = Instant::now();
    let mut world = World::generate(args);
    let cfg = DetectConfig::default();
    let settings = ProbeSettings {
        icmp_round: Some(Duration::from_secs(ROUND_SECS)),
        ..ProbeSettings::default()
    };
    let policy = RoundPolicy::new(&settings);
    let timeout_secs = settings.timeout.as_secs_f64();
    let n = world.blocks.len();
    let v = world.vantages;
    let mut states: Vec<BlockState> = vec![policy.new_block_state(0); n * v];
    let mut per_block: Vec<(u32, u32)> = vec![(0, 0); n];
    let ids: Vec<String> = (0..n).map(|b| format!("icmp:{}", block_net(b))).collect();
    let agents: Vec<String> = (0..v).map(|k| format!("vantage-{k}")).collect();
    let mut eng = Engine::new(cfg.clone());
    let mut r = Rng::new(world.seed.wrapping_mul(31).wrapping_add(7));
    let mut rep = ProbeSimReport {
        blocks: n,
        responsive_blocks: world.blocks.iter().filter(|b| b.n_active > 0).count(),
        sparse_blocks: world
            .blocks
            .iter()
            .filter(|b| b.n_active > 0 && b.availability < 0.3)
            .count(),
        vantages: v,
        bins: world.bins,
        seed: world.seed,
        ..ProbeSimReport::default()
    };
    let mut obs = Observation {
        agent: String::new(),
        target: String::new(),
        country: String::new(),
        asn: 0,
        region: None,
        signal: Signal::Icmp,
        control: false,
        measured_at: world.start,
        ok: false,
        phase: None,
        failure: None,
        rtt_ms: None,
        block: None,
        timings_ms: None,
    };
    let churn_per_round = CHURN_PER_DAY * ROUND_SECS as f64 / 86_400.0;
    let mut order: Vec<Slot> = Vec::with_capacity(v);
    // Last bin each network was cut, or out of each vantage's reach.
    let mut last_cut = vec![None::<usize>; world.asns.len()];
    let mut last_unreachable = vec![None::<usize>; world.asns.len() * v];
    for bin in 0..world.bins {
        let truth = world.truth(bin);
        for (a, asn) in world.asns.iter().enumerate() {
            if truth.country_cut[asn.country] || truth.asn_cut[a] {
                last_cut[a] = Some(bin);
            }
            for k in 0..v {
                if truth.uplink_lost[k] || truth.path_lost.contains(&(k, a)) {
                    last_unreachable[a * v + k] = Some(bin);
                }
            }
        }
        let round_start = bin as u64 * ROUND_SECS;
        let counted = bin >= world.warmup_bins;
        // Controls: answered unless the vantage's own uplink is lost.
        for (k, agent) in agents.iter().enumerate() {
            if truth.silent[k] {
                continue;
            }
            for c in 0..CONTROLS {
                obs.agent.clone_from(agent);
                obs.target.clear();
                obs.target
                    .push_str(["control:0", "control:1", "control:2", "control:3"][c]);
                obs.country.clear();
                obs.country.push_str("ZZ");
                obs.asn = 64_500 + c as u32;
                obs.control = true;
                obs.measured_at = world.bin_start(bin)
                    + chrono::Duration::seconds(r.range(0, ROUND_SECS - 1) as i64);
                let ok = !truth.uplink_lost[k] && !r.chance(BACKGROUND_LOSS);
                obs.ok = ok;
                obs.phase = (!ok).then_some(Phase::IcmpEcho);
                obs.failure = (!ok).then_some(Failure::Timeout);
                obs.rtt_ms = ok.then_some(15.0);
                obs.block = None;
                eng.ingest(&obs);
                rep.observations += 1;
            }
        }
        obs.control = false;
        for b in 0..n {
            if r.chance(churn_per_round) {
                world.blocks[b].renumber(&mut r);
            }
            let blk = world.blocks[b];
            let asn = &world.asns[blk.asn as usize];
            let (cc, tz, _) = COUNTRIES[asn.country];
            let cut = truth.country_cut[asn.country] || truth.asn_cut[blk.asn as usize];
            order.clear();
            for k in 0..v {
                let h = mix(world.seed ^ ((b as u64) << 20) ^ ((bin as u64) << 44) ^ k as u64);
                order.push(Slot {
                    vantage: k,
                    offset: h % ROUND_SECS,
                });
            }
            order.sort_by_key(|s| s.offset);
            for slot in &order {
                let k = slot.vantage;
                if truth.silent[k] {
                    continue;
                }
                let no_path = truth.uplink_lost[k]
                    || truth
                        .path_lost
                        .iter()
                        .any(|&(pv, pa)| pv == k && pa == blk.asn as usize);
                let start = round_start + slot.offset;
                let net = block_net(b);
                let st = &mut states[b * v + k];
                // Trinocular's responsive blocks: those with addresses known to answer (it
                // learns them from a census, this prober from its own walk).
                let known = st.seen.iter().any(|w| *w != 0);
                let counted = counted && known;
                let Some(mut round) = BlockRound::start(st, &net, &[], None, start as u32, &policy)
                else {
                    rep.politeness_skips += 1;
                    if counted && !cut && !no_path && blk.n_active > 0 {
                        tally(&mut rep, &blk, &mut per_block[b], false, false);
                    }
                    continue;
                };
                let mut t = start as f64;
                let mut end_t = t;
                rep.block_rounds += 1;
                let mut round_echoes = 0;
                while let Some(addr) = round.next_address() {
                    rep.echoes += 1;
                    round_echoes += 1;
                    let s = match addr {
                        IpAddr::V4(a) => u32::from(a) & 0xff,
                        IpAddr::V6(_) => 0,
                    };
                    let local_hour = ((t as i64 / 3600 + tz).rem_euclid(24)) as f64;
                    let night =
                        (((local_hour - 3.0) / 24.0 * std::f64::consts::TAU).cos()).max(0.0);
                    // A share A of the block's hosts is steady (servers, routers: up almost
                    // always), the rest mostly off (dynamic addresses): the block's
                    // availability is A either way, but a prober that learns the steady
                    // hosts can track the block. Mobile networks dim all hosts at night.
                    let steady = unit(world.seed ^ ((b as u64) << 24) ^ ((s as u64) << 8) ^ 0xa5)
                        < blk.availability as f64;
                    let p_up = if steady { STEADY_UP } else { 1.0 - STEADY_UP };
                    let avail = p_up * (1.0 - asn.swing * night);
                    let host_up = unit(
                        world.seed
                            ^ ((b as u64) << 24)
                            ^ ((s as u64) << 8)
                            ^ ((t as u64 / HOST_EPOCH_SECS) << 40),
                    ) < avail;
                    let answers = !cut
                        && !no_path
                        && blk.is_active(s)
                        && world.blocks[b].within_rate(s, t as u32)
                        && host_up
                        && !r.chance(BACKGROUND_LOSS);
                    let out = if answers {
                        let rtt = asn.rtt_ms[k] * (0.9 + 0.3 * r.f64());
                        t += rtt / 1000.0;
                        Outcome::ok(Duration::from_secs_f64(rtt / 1000.0))
                    } else {
                        t += timeout_secs;
                        Outcome::failed(Phase::IcmpEcho, Failure::Timeout)
                    };
                    end_t = t;
                    round.record(&out);
                }
                rep.max_round_echoes = rep.max_round_echoes.max(round_echoes);
                let out = round.finish();
                let report = out.block.expect("a block round reports");
                if counted && !cut && !no_path && blk.n_active > 0 {
                    let definite = report.verdict != BlockVerdict::Uncertain;
                    let down = report.verdict == BlockVerdict::Down;
                    tally(&mut rep, &blk, &mut per_block[b], definite, down);
                    let recent = |l: Option<usize>| l.is_some_and(|l| l + 24 >= bin);
                    if down
                        && (recent(last_cut[blk.asn as usize])
                            || recent(last_unreachable[blk.asn as usize * v + k]))
                    {
                        rep.false_down_recovering += 1;
                    }
                }
                // The agent stamps an "up" resting on follow-up echoes when it ended.
                let at = if out.ok && report.probes > 1 {
                    end_t
                } else {
                    start as f64
                };
                obs.agent.clone_from(&agents[k]);
                obs.target.clone_from(&ids[b]);
                obs.country.clear();
                obs.country.push_str(cc);
                obs.asn = asn.number;
                obs.measured_at =
                    world.start + chrono::Duration::milliseconds((at * 1000.0) as i64);
                obs.ok = out.ok;
                obs.phase = out.phase;
                obs.failure = out.failure;
                obs.rtt_ms = out.rtt.map(|d| d.as_secs_f64() * 1000.0);
                obs.block = out.block;
                eng.ingest(&obs);
                rep.observations += 1;
            }
        }
        eng.advance(world.bin_start(bin + 1) + chrono::Duration::seconds(cfg.grace_secs as i64));
    }
    eng.advance(world.bin_start(world.bins + 1) + chrono::Duration::seconds(cfg.grace_secs as i64));
    rep.block_days = rep.all.rounds as f64 * ROUND_SECS as f64 / 86_400.0;
    for (b, blk) in world.blocks.iter().enumerate() {
        if blk.n_active == 0 {
            continue;
        }
        let band = band_of_active(blk.n_active);
        for k in 0..v {
            let known = states[b * v + k].seen.iter().any(|w| *w != 0);
            rep.learned[band].0 += known as u64;
            rep.learned[band].1 += 1;
        }
    }
    rep.blocks_mostly_covered = per_block
        .iter()
        .zip(&world.blocks)
        .filter(|((rounds, verdicts), blk)| {
            blk.n_active > 0 && *rounds > 0 && *verdicts as f64 >= 0.9 * *rounds as f64
        })
        .count();
    rep.blocks_counted = per_block.iter().filter(|(rounds, _)| *rounds > 0).count();
    let events: Vec<Event> = eng.events().cloned().collect();
    score(&world, &events, &mut rep);
    if args.events {
        for d in &world.disturbances {
            rep.log.push(format!(
                "truth {} {}{} vantage {:?} bins {}..{} ({} .. {})",
                d.kind.as_str(),
                COUNTRIES[d.country].0,
                d.asn
                    .map(|a| format!("/AS{}", world.asns[a].number))
                    .unwrap_or_default(),
                d.vantage,
                d.start_bin,
                d.end_bin,
                world.bin_start(d.start_bin).format("%dT%H:%M"),
                world.bin_start(d.end_bin).format("%dT%H:%M"),
            ));
        }
        for ev in &events {
            rep.log.push(format!(
                "event {} {} {:?} {} .. {} detected {}",
                ev.entity,
                ev.kind,
                ev.severity,
                ev.start.format("%dT%H:%M"),
                ev.end
                    .map_or("open".into(), |e| e.format("%dT%H:%M").to_string()),
                ev.detected_at.format("%dT%H:%M"),
            ));
        }
    }
    rep.secs = t0.elapsed().as_secs_f64();
    rep
}

fn tally(rep: &mut ProbeSimReport, blk: &Block, per: &mut (u32, u32), definite: bool, down: bool) {
    for band in [
        &mut rep.all,
        &mut rep.by_availability[band_of_availability(blk.availability)],
        &mut rep.by_active[band_of_active(blk.n_active)],
    ] {
        band.rounds += 1;
        band.verdicts += definite as u64;
        band.false_down += down as u64;
    }
    per.0 += 1;
    per.1 += definite as u32;
}

/// The /24 of block `b`: consecutive blocks from 2.0.0.0 (the simulation sends nothing).
fn block_net(b: usize) -> IpNet {
    let base = u32::from(Ipv4Addr::new(2, 0, 0, 0));
    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(base + ((b as u32) << 8)), 24).expect("a /24 is valid"))
}

/// Scores events against the truth, as the quality tables do: an event is true when it
/// overlaps (from one bin before to two after) an outage it may report; an outage of two
/// bins or more is found by an event of exactly its kind on exactly its entity.
fn score(world: &World, events: &[Event], rep: &mut ProbeSimReport) {
    let bin = ROUND_SECS as i64;
    let overlaps = |ev: &Event, d: &Disturbance| {
        let end = ev.end.unwrap_or(DateTime::<Utc>::MAX_UTC);
        ev.start < world.bin_start(d.end_bin) + chrono::Duration::seconds(2 * bin)
            && end > world.bin_start(d.start_bin) - chrono::Duration::seconds(bin)
    };
    // (acceptable report, the report the outage requires)
    let relation = |ev: &Event, d: &Disturbance| -> (bool, bool) {
        let Some((ci, asn)) = world.entity(ev) else {
            return (false, false);
        };
        if ci != d.country || !overlaps(ev, d) {
            return (false, false);
        }
        let outage_kind = matches!(ev.kind, EventKind::NationalBlackout | EventKind::Partial);
        match d.kind {
            Truth::National => (
                outage_kind,
                asn.is_none() && ev.kind == EventKind::NationalBlackout,
            ),
            Truth::Partial => {
                let ok = ev.kind == EventKind::Partial && (asn.is_none() || asn == d.asn);
                (ok, ok && asn == d.asn)
            }
            _ => (false, false),
        }
    };
    let warm = world.bin_start(world.warmup_bins);
    for ev in events {
        if ev.start < warm {
            // The prober is still learning its blocks and the detector its baselines: at
            // an agent's start, reported on their own line.
            rep.warmup_events += 1;
            continue;
        }
        if !matches!(ev.kind, EventKind::NationalBlackout | EventKind::Partial) {
            rep.other_events += 1;
            continue;
        }
        let good = world.disturbances.iter().any(|d| relation(ev, d).0);
        if ev.entity.is_country() {
            rep.country_events += 1;
            rep.country_true += good as usize;
        } else {
            rep.asn_events += 1;
            rep.asn_true += good as usize;
        }
        if !good
            && world
                .disturbances
                .iter()
                .any(|d| !d.kind.is_outage() && overlaps(ev, d))
        {
            rep.events_on_vantage_faults += 1;
        }
    }
    for d in &world.disturbances {
        if !d.kind.is_outage() || d.end_bin - d.start_bin < 2 {
            continue;
        }
        let found = events
            .iter()
            .filter(|ev| relation(ev, d).1)
            .map(|ev| {
                (ev.detected_at - world.bin_start(d.start_bin)).num_seconds() as f64 / bin as f64
            })
            .fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.min(x))));
        let o = if d.kind == Truth::National {
            &mut rep.country
        } else {
            &mut rep.asn
        };
        o.disturbances += 1;
        if let Some(x) = found {
            o.found += 1;
            o.delays.push(x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_hosts_stop_answering_within_the_minute() {
        let mut r = Rng::new(1);
        let mut b = new_block(0, &mut r);
        b.rate_limit = 2;
        assert!(b.within_rate(7, 100));
        assert!(b.within_rate(7, 101));
        assert!(!b.within_rate(7, 102), "third echo in a minute");
        assert!(b.within_rate(8, 102), "another host");
        assert!(b.within_rate(7, 170), "a minute later");
    }

    #[test]
    fn renumbering_keeps_the_count_and_moves_the_slots() {
        let mut r = Rng::new(2);
        let mut b = new_block(0, &mut r);
        b.n_active = 10;
        b.renumber(&mut r);
        let before = b.active;
        b.renumber(&mut r);
        let count = |a: [u64; 4]| a.iter().map(|w| w.count_ones()).sum::<u32>();
        assert_eq!(count(before), 10);
        assert_eq!(count(b.active), 10);
        assert_ne!(before, b.active);
    }
}
