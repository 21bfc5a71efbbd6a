//! Seeded scenario simulator with ground truth: agents (with control targets), countries
//! with several ASNs, daily rhythms, noise, packet loss (ICMP targets answer as adaptive
//! block rounds), agent failures, partial and national outages, throttling in three
//! shapes (RTT x6 with +10 % loss; +300 ms; +150 ms with +30 % loss) and DNS-only
//! blocking, driving the [`Engine`] through [`Observation`]s exactly as the collector
//! would. A BGP source reports every country's and network's visible share every 30 s
//! (`advance` after each reading, as the collector's tick): national and one-ASN cuts
//! come with their routes withdrawn or kept, and windows of noisy readings (one reading
//! now and then shows a network mostly gone, the next one back) test that a single
//! reading opens nothing.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::Serialize;

use super::{DetectConfig, Engine, EntityKey, Event, EventKind, Mechanism};
use blackout_model::bgp::{BgpVisibility, BgpWithdrawals};
use blackout_model::observation::{BlockReport, BlockVerdict, Failure, Observation, Phase, Signal};

/// SplitMix64: tiny, seedable, and identical on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in lo..=hi.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TruthKind {
    /// Probes fail; BGP keeps the country's routes.
    National,
    /// Probes fail and the country's routes are withdrawn.
    NationalWithdrawn,
    /// One ASN: probes fail, routes kept.
    Partial,
    /// One ASN: probes fail and its routes are withdrawn.
    PartialWithdrawn,
    /// RTT x6 and 10 % more loss.
    Throttling,
    /// 300 ms added to every RTT (the live world's first figure).
    ThrottlingDelay,
    /// 150 ms added and 30 % more loss (the live world's second figure).
    ThrottlingDelayLoss,
    DnsBlocking,
    /// The agent loses its own uplink: every probe it sends fails, controls included.
    AgentUplinkLoss,
    /// The agent sends nothing.
    AgentSilent,
    /// No cut: now and then one BGP reading shows a network mostly gone, the next one
    /// shows it back.
    BgpNoise,
}

impl TruthKind {
    pub const ALL: [TruthKind; 11] = [
        TruthKind::National,
        TruthKind::NationalWithdrawn,
        TruthKind::Partial,
        TruthKind::PartialWithdrawn,
        TruthKind::Throttling,
        TruthKind::ThrottlingDelay,
        TruthKind::ThrottlingDelayLoss,
        TruthKind::DnsBlocking,
        TruthKind::AgentUplinkLoss,
        TruthKind::AgentSilent,
        TruthKind::BgpNoise,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            TruthKind::National => "national, routes kept",
            TruthKind::NationalWithdrawn => "national, routes withdrawn",
            TruthKind::Partial => "partial (one ASN), routes kept",
            TruthKind::PartialWithdrawn => "partial (one ASN), routes withdrawn",
            TruthKind::Throttling => "throttling (RTT x6, +10 % loss)",
            TruthKind::ThrottlingDelay => "throttling (+300 ms)",
            TruthKind::ThrottlingDelayLoss => "throttling (+150 ms, +30 % loss)",
            TruthKind::DnsBlocking => "dns blocking",
            TruthKind::AgentUplinkLoss => "agent uplink loss",
            TruthKind::AgentSilent => "agent silent",
            TruthKind::BgpNoise => "noisy bgp readings",
        }
    }
    /// Disturbances of the watched networks (the others must cause no event).
    pub fn is_outage(self) -> bool {
        !matches!(
            self,
            TruthKind::AgentUplinkLoss | TruthKind::AgentSilent | TruthKind::BgpNoise
        )
    }
    /// The mechanism its event must name.
    pub fn mechanism(self) -> Option<Mechanism> {
        match self {
            TruthKind::National | TruthKind::Partial => Some(Mechanism::TrafficBlocked),
            TruthKind::NationalWithdrawn | TruthKind::PartialWithdrawn => {
                Some(Mechanism::RoutesWithdrawn)
            }
            TruthKind::DnsBlocking => Some(Mechanism::ServiceBlocking),
            k if k.is_throttling() => Some(Mechanism::Throttling),
            _ => None,
        }
    }
    fn is_national(self) -> bool {
        matches!(self, TruthKind::National | TruthKind::NationalWithdrawn)
    }
    fn is_partial(self) -> bool {
        matches!(self, TruthKind::Partial | TruthKind::PartialWithdrawn)
    }
    pub fn is_throttling(self) -> bool {
        matches!(
            self,
            TruthKind::Throttling | TruthKind::ThrottlingDelay | TruthKind::ThrottlingDelayLoss
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Disturbance {
    pub kind: TruthKind,
    pub country: String,
    pub asn: Option<u32>,
    pub agent: Option<usize>,
    pub start_bin: usize,
    pub end_bin: usize,
}

#[derive(Debug, Clone)]
struct SimTarget {
    id: String,
    country: usize,
    asn: u32,
    signal: Signal,
    control: bool,
    /// Probability of being up in a bin (noise), scaled by the daily rhythm.
    availability: f64,
    night_dip: f64,
    rtt_ms: f64,
}

/// What one probe of a target saw.
struct Probe {
    ok: bool,
    rtt_ms: f64,
    phase: Phase,
    block: Option<BlockReport>,
}

/// One probe. A watched ICMP block answers an adaptive round as the real prober sends it
/// (an answered echo ends it, a lost one brings another, two lost in a row say "down";
/// the block report carries the echoes), so that loss shows in its echoes rather than as
/// a block down. Other probes are one exchange, lost with the path's loss (a TCP connect
/// that times out).
fn probe(signal: Signal, control: bool, up: bool, loss: f64, rtt_ms: f64, r: &mut Rng) -> Probe {
    match signal {
        Signal::Icmp if !control => {
            let (mut probes, mut replies) = (0u32, 0u32);
            if up {
                while probes < 2 {
                    probes += 1;
                    if !r.chance(loss) {
                        replies = 1;
                        break;
                    }
                }
            } else {
                probes = 2;
            }
            let ok = replies > 0;
            Probe {
                ok,
                rtt_ms,
                phase: Phase::IcmpEcho,
                block: Some(BlockReport {
                    belief: if ok { 0.99 } else { 0.01 },
                    verdict: if ok {
                        BlockVerdict::Up
                    } else {
                        BlockVerdict::Down
                    },
                    probes,
                    replies,
                }),
            }
        }
        _ => Probe {
            ok: up && !r.chance(loss),
            rtt_ms,
            phase: match signal {
                Signal::Dns => Phase::DnsRoundTrip,
                Signal::Icmp => Phase::IcmpEcho,
                _ => Phase::Connect,
            },
            block: None,
        },
    }
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    pub bins: usize,
    pub bin_secs: u64,
    pub start: DateTime<Utc>,
    pub countries: Vec<String>,
    pub asns: Vec<Vec<u32>>,
    pub agents: usize,
    /// Agent 0 sits inside the first country when set: cut off with it, uploads late.
    pub inside_agent: bool,
    pub loss: f64,
    pub disturbances: Vec<Disturbance>,
    targets: Vec<SimTarget>,
    /// /24s of each ASN's space, in the order of `asns`.
    space: Vec<Vec<u32>>,
}

/// Seconds between two readings of the simulated BGP source.
const BGP_READING_SECS: u64 = 30;

const CODES: [&str; 8] = ["KZ", "UZ", "KG", "IR", "VE", "MM", "TJ", "BY"];

impl Scenario {
    /// A random scenario; the same seed gives the same scenario.
    pub fn generate(seed: u64, bins: usize, bin_secs: u64) -> Scenario {
        let mut r = Rng::new(seed);
        let n_countries = r.range(1, 3) as usize;
        let first = r.range(0, CODES.len() as u64 - 1) as usize;
        let countries: Vec<String> = (0..n_countries)
            .map(|i| CODES[(first + i) % CODES.len()].to_string())
            .collect();
        let mut targets = Vec::new();
        let mut asns = Vec::new();
        let mut next_asn = 1000 + r.range(0, 50_000) as u32;
        for (ci, cc) in countries.iter().enumerate() {
            let n_asn = r.range(2, 5) as usize;
            let mut list = Vec::new();
            for _ in 0..n_asn {
                let asn = next_asn;
                next_asn += r.range(1, 900) as u32;
                list.push(asn);
                let counts = [
                    (Signal::Icmp, r.range(4, 20)),
                    (Signal::Tcp, r.range(2, 5)),
                    (Signal::Http, r.range(1, 4)),
                ];
                for (signal, n) in counts {
                    for k in 0..n {
                        targets.push(SimTarget {
                            id: format!("{signal}:{cc}:AS{asn}:{k}"),
                            country: ci,
                            asn,
                            signal,
                            control: false,
                            availability: 0.97 + 0.03 * r.f64(),
                            night_dip: if signal == Signal::Icmp {
                                0.15 * r.f64()
                            } else {
                                0.0
                            },
                            rtt_ms: 20.0 + 180.0 * r.f64(),
                        });
                    }
                }
            }
            // The ccTLD's name servers: anycast or unknown origin, so ASN 0.
            for k in 0..r.range(3, 4) {
                targets.push(SimTarget {
                    id: format!("dns:{cc}:ns{k}"),
                    country: ci,
                    asn: 0,
                    signal: Signal::Dns,
                    control: false,
                    availability: 0.995,
                    night_dip: 0.0,
                    rtt_ms: 30.0 + 100.0 * r.f64(),
                });
            }
            asns.push(list);
        }
        for k in 0..4 {
            targets.push(SimTarget {
                id: format!("control:{k}"),
                country: usize::MAX,
                asn: 64_500 + k,
                signal: Signal::Icmp,
                control: true,
                availability: 0.999,
                night_dip: 0.0,
                rtt_ms: 10.0 + 20.0 * r.f64(),
            });
        }
        let agents = r.range(3, 5) as usize;
        let inside_agent = r.chance(0.5);
        let loss = 0.05 * r.f64();
        // Disturbances: at most one network disturbance per country at a time, agent
        // failures anywhere. Start after three hours so that verdicts exist.
        let mut disturbances = Vec::new();
        let earliest = (3 * 3600 / bin_secs) as usize;
        for (ci, cc) in countries.iter().enumerate() {
            let mut t = earliest + r.range(0, 24) as usize;
            while t + 40 < bins {
                if r.chance(0.25) {
                    t += r.range(10, 60) as usize;
                    continue;
                }
                let kind = match r.range(0, 9) {
                    0 | 1 => TruthKind::National,
                    2 | 3 => TruthKind::Partial,
                    4 | 5 => match r.range(0, 2) {
                        0 => TruthKind::Throttling,
                        1 => TruthKind::ThrottlingDelay,
                        _ => TruthKind::ThrottlingDelayLoss,
                    },
                    6 | 7 => TruthKind::DnsBlocking,
                    8 => TruthKind::AgentUplinkLoss,
                    _ => TruthKind::AgentSilent,
                };
                let len = r.range(2, 36) as usize;
                let asn = (kind == TruthKind::Partial || (kind.is_throttling() && r.chance(0.3)))
                    .then(|| asns[ci][r.range(0, asns[ci].len() as u64 - 1) as usize]);
                let agent = (!kind.is_outage()).then(|| r.range(0, agents as u64 - 1) as usize);
                disturbances.push(Disturbance {
                    kind,
                    country: cc.clone(),
                    asn,
                    agent,
                    start_bin: t,
                    end_bin: (t + len).min(bins),
                });
                t += len + r.range(12, 60) as usize;
            }
        }
        let start = Utc
            .timestamp_opt(1_640_995_200 + (r.range(0, 6 * 24) as i64) * 3600, 0)
            .unwrap();
        // BGP from its own stream, so that the probes' world of a seed is what it was
        // before BGP: half the cuts withdraw their routes, and each country gets windows
        // of noisy readings.
        let mut rb = Rng::new(seed ^ 0x00b6_9b6b_9b6b);
        let space: Vec<Vec<u32>> = asns
            .iter()
            .map(|l| l.iter().map(|_| rb.range(16, 512) as u32).collect())
            .collect();
        for d in &mut disturbances {
            if rb.chance(0.5) {
                d.kind = match d.kind {
                    TruthKind::National => TruthKind::NationalWithdrawn,
                    TruthKind::Partial => TruthKind::PartialWithdrawn,
                    k => k,
                };
            }
        }
        for cc in &countries {
            for _ in 0..rb.range(1, 3) {
                let s =
                    earliest + rb.range(0, (bins.saturating_sub(earliest + 30)) as u64) as usize;
                disturbances.push(Disturbance {
                    kind: TruthKind::BgpNoise,
                    country: cc.clone(),
                    asn: None,
                    agent: None,
                    start_bin: s,
                    end_bin: (s + rb.range(6, 24) as usize).min(bins),
                });
            }
        }
        Scenario {
            seed,
            bins,
            bin_secs,
            start,
            countries,
            asns,
            agents,
            inside_agent,
            loss,
            disturbances,
            targets,
            space,
        }
    }

    pub fn bin_start(&self, bin: usize) -> DateTime<Utc> {
        self.start + Duration::seconds((bin as u64 * self.bin_secs) as i64)
    }

    fn active(&self, bin: usize) -> impl Iterator<Item = &Disturbance> {
        self.disturbances
            .iter()
            .filter(move |d| d.start_bin <= bin && bin < d.end_bin)
    }

    /// Observations of one bin, and whether each must be held back (uploaded late).
    fn observations(&self, bin: usize, r: &mut Rng, out: &mut Vec<(Observation, bool)>) {
        let t0 = self.bin_start(bin);
        let hour = ((t0.timestamp() / 3600) % 24) as f64;
        // Residential blocks sleep: a smooth dip centred on 03:00 UTC.
        let night = (((hour - 3.0) / 24.0 * std::f64::consts::TAU).cos()).max(0.0);
        let active: Vec<&Disturbance> = self.active(bin).collect();
        for agent in 0..self.agents {
            let silent = active
                .iter()
                .any(|d| d.kind == TruthKind::AgentSilent && d.agent == Some(agent));
            if silent {
                continue;
            }
            let uplink_lost = active
                .iter()
                .any(|d| d.kind == TruthKind::AgentUplinkLoss && d.agent == Some(agent));
            let inside = self.inside_agent && agent == 0;
            let cut_off = inside
                && active
                    .iter()
                    .any(|d| d.kind.is_national() && d.country == self.countries[0]);
            for t in &self.targets {
                let offset = r.range(0, self.bin_secs - 1) as i64;
                let at = t0 + Duration::seconds(offset);
                let mut up = r.chance(t.availability * (1.0 - t.night_dip * night));
                let mut rtt = t.rtt_ms * (0.8 + 0.5 * r.f64());
                let mut loss = self.loss;
                let country = (!t.control).then(|| self.countries[t.country].as_str());
                for d in &active {
                    let here = country == Some(d.country.as_str());
                    match d.kind {
                        k if k.is_national() && here => up = false,
                        k if k.is_partial()
                            && here
                            && d.asn == Some(t.asn)
                            && t.signal != Signal::Dns =>
                        {
                            up = false
                        }
                        k if k.is_throttling()
                            && here
                            && (d.asn.is_none() || d.asn == Some(t.asn)) =>
                        {
                            match k {
                                TruthKind::ThrottlingDelay => rtt += 300.0,
                                TruthKind::ThrottlingDelayLoss => {
                                    rtt += 150.0;
                                    loss += 0.3;
                                }
                                _ => {
                                    rtt *= 6.0;
                                    loss += 0.1;
                                }
                            }
                        }
                        TruthKind::DnsBlocking if here && t.signal == Signal::Dns => up = false,
                        _ => {}
                    }
                }
                if inside {
                    // Inside the country: domestic targets stay reachable during the cut,
                    // the rest of the world (controls, other countries) does not.
                    let domestic = t.country == 0 && !t.control;
                    if cut_off {
                        up = domestic && r.chance(t.availability);
                    }
                }
                if uplink_lost {
                    up = false;
                }
                let p = probe(t.signal, t.control, up, loss, rtt, r);
                let ok = p.ok;
                let (phase, failure) = if ok {
                    (None, None)
                } else {
                    (Some(p.phase), Some(Failure::Timeout))
                };
                out.push((
                    Observation {
                        agent: format!("agent-{agent}"),
                        target: t.id.clone(),
                        country: country.unwrap_or("ZZ").to_string(),
                        asn: t.asn,
                        region: None,
                        signal: t.signal,
                        control: t.control,
                        measured_at: at,
                        ok,
                        phase,
                        failure,
                        rtt_ms: ok.then_some(p.rtt_ms),
                        block: p.block,
                        timings_ms: None,
                    },
                    cut_off,
                ));
            }
        }
    }

    /// What the BGP source reads at `t` (in bin `bin`): each ASN's and each country's
    /// visible share. In a noise window one reading in ten shows one of the country's
    /// networks mostly gone, and the next one shows it back: `dipped` remembers the
    /// countries whose last reading was a noisy one (one noisy reading, never two in a row).
    fn bgp_readings(
        &self,
        bin: usize,
        t: DateTime<Utc>,
        r: &mut Rng,
        dipped: &mut std::collections::BTreeSet<usize>,
        out: &mut Vec<BgpVisibility>,
    ) {
        let active: Vec<&Disturbance> = self.active(bin).collect();
        for (ci, cc) in self.countries.iter().enumerate() {
            let here = |d: &&&Disturbance| d.country == *cc;
            let national = active
                .iter()
                .filter(here)
                .any(|d| d.kind == TruthKind::NationalWithdrawn);
            let noisy = active
                .iter()
                .filter(here)
                .any(|d| d.kind == TruthKind::BgpNoise);
            let was_dip = dipped.remove(&ci);
            let dip = (noisy && !was_dip && r.chance(0.1))
                .then(|| r.range(0, self.asns[ci].len() as u64 - 1) as usize);
            if dip.is_some() {
                dipped.insert(ci);
            }
            let (mut vis_total, mut total) = (0u32, 0u32);
            for (ai, &asn) in self.asns[ci].iter().enumerate() {
                let space = self.space[ci][ai];
                let withdrawn = national
                    || active
                        .iter()
                        .filter(here)
                        .any(|d| d.kind == TruthKind::PartialWithdrawn && d.asn == Some(asn));
                let mut visible = if withdrawn { 0 } else { space };
                if dip == Some(ai) && !withdrawn {
                    visible = (space as f64 * 0.5 * r.f64()) as u32;
                }
                vis_total += visible;
                total += space;
                out.push(self.reading(t, cc, Some(asn), visible, space));
            }
            out.push(self.reading(t, cc, None, vis_total, total));
        }
    }

    fn reading(
        &self,
        t: DateTime<Utc>,
        cc: &str,
        asn: Option<u32>,
        visible: u32,
        total: u32,
    ) -> BgpVisibility {
        BgpVisibility {
            at: t,
            country: cc.to_string(),
            asn,
            visible_slash24: visible,
            total_slash24: total,
            peers_healthy: 5,
            peers_quorum: 3,
            withdrawals: (visible < total).then(|| BgpWithdrawals {
                prefixes_withdrawn: (total - visible).div_ceil(16),
                examples: Vec::new(),
                peers: vec!["AS64500 192.0.2.1".into()],
                first_withdrawal_at: t,
            }),
        }
    }

    /// Drives an engine through the scenario, bin by bin, as the collector would: each
    /// bin's observations arrive during the bin, `advance` runs at its end plus grace,
    /// and the inside agent's observations during a cut arrive after it.
    pub fn run(&self, cfg: &DetectConfig) -> SimRun {
        let mut eng = Engine::new(cfg.clone());
        let mut r = Rng::new(self.seed.wrapping_mul(31).wrapping_add(7));
        let mut buf = Vec::new();
        let mut held: Vec<Observation> = Vec::new();
        let mut observations = 0u64;
        let mut rb = Rng::new(self.seed.wrapping_mul(37).wrapping_add(11));
        let mut bgp = Vec::new();
        let mut dipped = std::collections::BTreeSet::new();
        for bin in 0..self.bins {
            buf.clear();
            self.observations(bin, &mut r, &mut buf);
            let cut_now = buf.iter().any(|(_, h)| *h);
            // The collector's tick: a BGP reading every 30 s, `advance` after each; the
            // previous bin closes at the first tick past its grace, and this bin's
            // observations arrive after that (the held ones of a cut that ended first).
            let ticks = (self.bin_secs / BGP_READING_SECS).max(1);
            let close_tick = (cfg.grace_secs.div_ceil(BGP_READING_SECS)).min(ticks - 1);
            for k in 0..ticks {
                let t = self.bin_start(bin) + Duration::seconds((k * BGP_READING_SECS) as i64);
                bgp.clear();
                self.bgp_readings(bin, t, &mut rb, &mut dipped, &mut bgp);
                for v in &bgp {
                    eng.ingest_bgp(v);
                }
                let close_at = self.bin_start(bin) + Duration::seconds(cfg.grace_secs as i64);
                eng.advance(if k == close_tick { close_at.max(t) } else { t });
                if k != close_tick {
                    continue;
                }
                if !cut_now && !held.is_empty() {
                    for o in held.drain(..) {
                        eng.ingest(&o);
                    }
                }
                for (o, hold) in buf.drain(..) {
                    observations += 1;
                    if hold {
                        held.push(o);
                    } else {
                        eng.ingest(&o);
                    }
                }
            }
        }
        for o in held.drain(..) {
            eng.ingest(&o);
        }
        eng.advance(self.bin_start(self.bins + 1) + Duration::seconds(cfg.grace_secs as i64));
        SimRun {
            events: eng.events().cloned().collect(),
            observations,
            late: eng.stats().late_observations,
        }
    }
}

pub struct SimRun {
    pub events: Vec<Event>,
    pub observations: u64,
    pub late: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub kind: TruthKind,
    pub found: bool,
    pub delay_bins: Option<f64>,
    /// None when not found or when the truth has no mechanism.
    pub mechanism_right: Option<bool>,
    pub mechanism_found: Option<Mechanism>,
}

/// How one scenario's events compare with its ground truth.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Score {
    pub events: usize,
    pub true_events: usize,
    pub false_events: usize,
    /// False events overlapping an agent failure (any country), or noisy BGP readings of
    /// their own country.
    pub agent_failure_events: usize,
    /// Per disturbance lasting >= 2 bins: its kind, the delay in bins when found, and
    /// whether the finding event names the right mechanism.
    pub outcomes: Vec<Outcome>,
    pub late_observations: u64,
    pub late_in_evidence: u64,
}

fn in_country(ev: &Event, cc: &str) -> bool {
    ev.entity.country() == cc
}

/// Whether `ev` is an acceptable report of `d` (precision) and whether it is the report
/// `d` requires (recall).
fn relation(ev: &Event, d: &Disturbance) -> (bool, bool) {
    if !in_country(ev, &d.country) {
        return (false, false);
    }
    let on_asn = |asn: u32| {
        ev.entity
            == EntityKey::Asn {
                country: d.country.clone(),
                asn,
            }
    };
    let reach = matches!(ev.kind, EventKind::NationalBlackout | EventKind::Partial);
    match d.kind {
        TruthKind::National | TruthKind::NationalWithdrawn => (
            reach,
            ev.entity.is_country() && ev.kind == EventKind::NationalBlackout,
        ),
        TruthKind::Partial | TruthKind::PartialWithdrawn => {
            let asn = d.asn.expect("partial has an asn");
            let ok = ev.kind == EventKind::Partial && (on_asn(asn) || ev.entity.is_country());
            (ok, ok && on_asn(asn))
        }
        TruthKind::Throttling | TruthKind::ThrottlingDelay | TruthKind::ThrottlingDelayLoss => {
            let ok = ev.kind == EventKind::Throttling
                && (ev.entity.is_country() || d.asn.is_none_or(on_asn));
            let target_ok = match d.asn {
                Some(a) => on_asn(a),
                None => ev.entity.is_country(),
            };
            (ok, ok && target_ok)
        }
        TruthKind::DnsBlocking => {
            let ok = ev.kind == EventKind::ServiceBlocking && ev.entity.is_country();
            (ok, ok)
        }
        TruthKind::AgentUplinkLoss | TruthKind::AgentSilent | TruthKind::BgpNoise => (false, false),
    }
}

impl Scenario {
    pub fn score(&self, run: &SimRun) -> Score {
        let bin = self.bin_secs as i64;
        let mut s = Score {
            events: run.events.len(),
            late_observations: run.late,
            ..Score::default()
        };
        let t = |b: usize| self.bin_start(b);
        let overlaps = |ev: &Event, d: &Disturbance| {
            let end = ev.end.unwrap_or(DateTime::<Utc>::MAX_UTC);
            ev.start < t(d.end_bin) + Duration::seconds(2 * bin)
                && end > t(d.start_bin) - Duration::seconds(bin)
        };
        for ev in &run.events {
            let good = self
                .disturbances
                .iter()
                .any(|d| d.kind.is_outage() && overlaps(ev, d) && relation(ev, d).0);
            if good {
                s.true_events += 1;
            } else {
                s.false_events += 1;
                // A vantage's failure touches what it measures in every country; noisy
                // BGP readings only the country they are about.
                let caused_by = |d: &Disturbance| {
                    !d.kind.is_outage()
                        && overlaps(ev, d)
                        && (d.agent.is_some() || ev.entity.country() == d.country)
                };
                if self.disturbances.iter().any(caused_by) {
                    s.agent_failure_events += 1;
                }
            }
            s.late_in_evidence += ev.evidence.late_observations;
        }
        for d in &self.disturbances {
            if !d.kind.is_outage() || d.end_bin - d.start_bin < 2 {
                continue;
            }
            let first = run
                .events
                .iter()
                .filter(|ev| overlaps(ev, d) && relation(ev, d).1)
                .min_by_key(|ev| ev.detected_at);
            let delay =
                first.map(|ev| (ev.detected_at - t(d.start_bin)).num_seconds() as f64 / bin as f64);
            s.outcomes.push(Outcome {
                kind: d.kind,
                found: first.is_some(),
                delay_bins: delay,
                mechanism_right: first
                    .zip(d.kind.mechanism())
                    .map(|(ev, m)| ev.mechanism == Some(m)),
                mechanism_found: first.and_then(|ev| ev.mechanism),
            });
        }
        s
    }
}
