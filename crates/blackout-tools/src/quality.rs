//! `blackout quality`: precision, recall and detection delay on real data and on
//! simulated scenarios with ground truth, and (`--bench`) the engine's throughput.
//!
//! Real data is read at run time from `--data` (the shared data set; its licences keep it
//! out of this repository); each part is skipped with a message when its file is absent.

use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Utc};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::replay::{SeriesInput, SeriesPoint, replay_series, split_csv_line};
use blackout_detect::sim::{Scenario, TruthKind};
use blackout_detect::{DetectConfig, Engine, EntityKey, Event, EventKind};
use blackout_model::observation::{Observation, Signal};

/// Arguments of `blackout quality`.
#[derive(Debug, Clone, clap::Args)]
pub struct QualityArgs {
    /// Directory of the shared data set (holds `outages/`).
    #[arg(long, value_name = "DIR", default_value = "../shared/data")]
    pub data: PathBuf,
    /// Simulated scenarios.
    #[arg(long, default_value_t = 300)]
    pub scenarios: usize,
    /// Seed of the first scenario (scenario i uses seed + i).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Bins per simulated scenario (of 300 s).
    #[arg(long, default_value_t = 288)]
    pub bins: usize,
    /// Skip the real-data part.
    #[arg(long)]
    pub no_real: bool,
    /// Skip the simulator.
    #[arg(long)]
    pub no_sim: bool,
    /// Measure engine throughput (ingest + aggregate) instead of quality.
    #[arg(long)]
    pub bench: bool,
    /// Targets in the benchmark.
    #[arg(long, default_value_t = 100_000)]
    pub bench_targets: usize,
    /// Agents probing every target in the benchmark.
    #[arg(long, default_value_t = 5)]
    pub bench_agents: usize,
    /// Repetitions of the benchmark (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub bench_runs: usize,
}

impl Default for QualityArgs {
    fn default() -> Self {
        QualityArgs {
            data: "../shared/data".into(),
            scenarios: 300,
            seed: 1,
            bins: 288,
            no_real: false,
            no_sim: false,
            bench: false,
            bench_targets: 100_000,
            bench_agents: 5,
            bench_runs: 5,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Parse {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("quality goals missed: {0}")]
    GoalsMissed(String),
}

fn perr(path: &Path, line: usize, reason: impl Into<String>) -> QualityError {
    QualityError::Parse {
        path: path.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

pub fn run(args: &QualityArgs) -> Result<(), QualityError> {
    if args.bench {
        let b = bench(args.bench_targets, args.bench_agents, args.bench_runs);
        println!("{}", b.markdown());
        return Ok(());
    }
    let mut missed = Vec::new();
    if !args.no_real {
        let outages = args.data.join("outages/monash-ip-observatory");
        match venezuela(&outages.join("ven-2019-07-22_gif.csv"))? {
            Some(v) => {
                println!("{}", v.markdown());
                if !v.goals_met() {
                    missed.push(
                        "Venezuela 2019: not every affected state and the nation found".to_string(),
                    );
                }
            }
            None => println!(
                "SKIPPED Venezuela 2019: {} not found (pass --data DIR)\n",
                outages.join("ven-2019-07-22_gif.csv").display()
            ),
        }
        match ukraine(&outages.join("ukr-2022-01-18_border-regions.csv"))? {
            Some(u) => {
                println!("{}", u.markdown());
                if u.events_as_latency + u.events_as_level > 0 {
                    missed
                        .push("Ukraine/Russia border: events on a series without shutdown".into());
                }
            }
            None => println!(
                "SKIPPED Ukraine/Russia border: {} not found (pass --data DIR)\n",
                outages.join("ukr-2022-01-18_border-regions.csv").display()
            ),
        }
    }
    if !args.no_sim {
        let r = simulate(
            args.seed,
            args.scenarios,
            args.bins,
            &DetectConfig::default(),
        );
        println!("{}", r.markdown());
        missed.extend(r.goal_failures());
    }
    if missed.is_empty() {
        Ok(())
    } else {
        Err(QualityError::GoalsMissed(missed.join("; ")))
    }
}

// ---------------------------------------------------------------- simulator

#[derive(Debug, Clone, Default)]
pub struct KindRow {
    pub disturbances: usize,
    pub found: usize,
    pub delays: Vec<f64>,
    /// Found disturbances whose event named the right mechanism.
    pub mechanism_right: usize,
    /// What the events named instead, when wrong (None: no mechanism).
    pub mechanism_wrong: BTreeMap<String, usize>,
}

/// Goal: the share of found cuts (reachability, service, throttling) whose event names
/// the right mechanism. The mechanism follows from BGP and the probes in the same bins,
/// so only edges should miss it (the bin a cut starts or ends in): 0.95.
pub const MECHANISM_ACCURACY_GOAL: f64 = 0.95;
/// Goal: median delay of a cut whose routes are withdrawn, in bins: well inside the
/// first bin (it must not wait for a probing round).
pub const ROUTES_WITHDRAWN_DELAY_GOAL_BINS: f64 = 0.5;

#[derive(Debug, Clone, Default)]
pub struct SimReport {
    pub scenarios: usize,
    pub seed: u64,
    pub bins: usize,
    pub observations: u64,
    pub events: usize,
    pub true_events: usize,
    pub false_events: usize,
    pub agent_failure_events: usize,
    /// Events that started in the first hour of a scenario (no disturbance starts before
    /// the third hour, so every one is false): the price of the first verdict coming
    /// before the full warm-up.
    pub first_hour_events: usize,
    pub agent_failures: usize,
    pub late_observations: u64,
    pub late_in_evidence: u64,
    pub kinds: BTreeMap<TruthKind, KindRow>,
    pub secs: f64,
}

fn pct(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    Some(v[i])
}

impl SimReport {
    pub fn precision(&self) -> f64 {
        if self.events == 0 {
            1.0
        } else {
            self.true_events as f64 / self.events as f64
        }
    }
    pub fn recall(&self) -> f64 {
        let (d, f) = self
            .kinds
            .values()
            .fold((0, 0), |(d, f), r| (d + r.disturbances, f + r.found));
        if d == 0 { 1.0 } else { f as f64 / d as f64 }
    }
    /// Share of the found disturbances with a mechanism whose event named it.
    pub fn mechanism_accuracy(&self) -> f64 {
        let (n, right) = self
            .kinds
            .iter()
            .filter(|(k, _)| k.mechanism().is_some())
            .fold((0, 0), |(n, ok), (_, r)| {
                (n + r.found, ok + r.mechanism_right)
            });
        if n == 0 { 1.0 } else { right as f64 / n as f64 }
    }

    pub fn median_delay_bins(&self) -> Option<f64> {
        let mut all: Vec<f64> = self.kinds.values().flat_map(|r| r.delays.clone()).collect();
        pct(&mut all, 0.5)
    }

    /// The goals; an empty list when all are met.
    pub fn goal_failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        if self.recall() < 1.0 {
            f.push(format!(
                "recall {:.4} < 1 (every outage of >= 2 bins)",
                self.recall()
            ));
        }
        if self.agent_failure_events > 0 {
            f.push(format!(
                "{} events caused by agent failures or noisy BGP",
                self.agent_failure_events
            ));
        }
        if self.first_hour_events > 0 {
            f.push(format!(
                "{} events in the first hour (first verdicts must not bring false alarms)",
                self.first_hour_events
            ));
        }
        if self.precision() < 0.99 {
            f.push(format!("precision {:.4} < 0.99", self.precision()));
        }
        if self.median_delay_bins().is_some_and(|d| d > 2.0) {
            f.push(format!(
                "median delay {:?} bins > 2",
                self.median_delay_bins()
            ));
        }
        // Issue 16: the mechanism named, and withdrawals known without a probing round.
        if self.mechanism_accuracy() < MECHANISM_ACCURACY_GOAL {
            f.push(format!(
                "mechanism accuracy {:.4} < {MECHANISM_ACCURACY_GOAL}",
                self.mechanism_accuracy()
            ));
        }
        for k in [TruthKind::NationalWithdrawn, TruthKind::PartialWithdrawn] {
            let mut d = self
                .kinds
                .get(&k)
                .map(|r| r.delays.clone())
                .unwrap_or_default();
            if let Some(m) = pct(&mut d, 0.5).filter(|m| *m > ROUTES_WITHDRAWN_DELAY_GOAL_BINS) {
                f.push(format!(
                    "{}: median delay {m:.2} bins > {ROUTES_WITHDRAWN_DELAY_GOAL_BINS}",
                    k.as_str()
                ));
            }
        }
        // Issue 15: throttling within two bins, each shape on its own.
        for (k, r) in &self.kinds {
            let mut d = r.delays.clone();
            if k.is_throttling()
                && let Some(m) = pct(&mut d, 0.5).filter(|m| *m > 2.0)
            {
                f.push(format!("{}: median delay {m:.2} bins > 2", k.as_str()));
            }
        }
        f
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        s += &format!(
            "### Simulator: {} scenarios (seeds {}..{}), {} bins of 300 s each, {} observations, {:.1} s\n\n",
            self.scenarios,
            self.seed,
            self.seed + self.scenarios as u64 - 1,
            self.bins,
            self.observations,
            self.secs
        );
        s += "| ground truth | disturbances (>= 2 bins) | found | recall | median delay (bins) | p90 delay (bins) |\n|---|---|---|---|---|---|\n";
        for (k, r) in &self.kinds {
            if !k.is_outage() {
                continue;
            }
            let mut d = r.delays.clone();
            let fmt = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.2}"));
            s += &format!(
                "| {} | {} | {} | {:.3} | {} | {} |\n",
                k.as_str(),
                r.disturbances,
                r.found,
                if r.disturbances == 0 {
                    1.0
                } else {
                    r.found as f64 / r.disturbances as f64
                },
                fmt(pct(&mut d, 0.5)),
                fmt(pct(&mut d, 0.9)),
            );
        }
        s += &format!(
            "\n| events | true | false | precision | recall | median delay (bins) | agent failures injected | events caused by agent failures or noisy BGP | late observations | late observations in event evidence |\n|---|---|---|---|---|---|---|---|---|---|\n| {} | {} | {} | {:.4} | {:.4} | {} | {} | {} | {} | {} |\n",
            self.events,
            self.true_events,
            self.false_events,
            self.precision(),
            self.recall(),
            self.median_delay_bins()
                .map_or("-".into(), |d| format!("{d:.2}")),
            self.agent_failures,
            self.agent_failure_events,
            self.late_observations,
            self.late_in_evidence,
        );
        s += "\n| mechanism (truth) | disturbances found | mechanism right | accuracy | median delay (bins) | p90 delay (bins) | named instead |\n|---|---|---|---|---|---|---|\n";
        // Rows of the kinds that name one mechanism, added up per mechanism.
        let mut by_mech: BTreeMap<&str, KindRow> = BTreeMap::new();
        for (k, r) in &self.kinds {
            let Some(m) = k.mechanism() else { continue };
            let e = by_mech.entry(m.as_str()).or_default();
            e.found += r.found;
            e.mechanism_right += r.mechanism_right;
            e.delays.extend(r.delays.iter().copied());
            for (w, n) in &r.mechanism_wrong {
                *e.mechanism_wrong.entry(w.clone()).or_default() += n;
            }
        }
        for (m, mut r) in by_mech {
            let fmt = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.2}"));
            let wrong: Vec<String> = r
                .mechanism_wrong
                .iter()
                .map(|(w, n)| format!("{w} x{n}"))
                .collect();
            s += &format!(
                "| {m} | {} | {} | {:.3} | {} | {} | {} |\n",
                r.found,
                r.mechanism_right,
                if r.found == 0 {
                    1.0
                } else {
                    r.mechanism_right as f64 / r.found as f64
                },
                fmt(pct(&mut r.delays, 0.5)),
                fmt(pct(&mut r.delays, 0.9)),
                if wrong.is_empty() {
                    "-".into()
                } else {
                    wrong.join(", ")
                },
            );
        }
        s += &format!(
            "\nMechanism accuracy (found cuts naming the right mechanism): {:.4} (goal >= {MECHANISM_ACCURACY_GOAL}).\n",
            self.mechanism_accuracy()
        );
        s += &format!(
            "\nEvents that started in the first hour of a scenario (all false: no disturbance starts before the third hour): {}.\n",
            self.first_hour_events
        );
        s
    }
}

/// Runs `n` seeded scenarios through the engine and scores them against their truth.
pub fn simulate(seed: u64, n: usize, bins: usize, cfg: &DetectConfig) -> SimReport {
    let t0 = Instant::now();
    let mut r = SimReport {
        scenarios: n,
        seed,
        bins,
        ..SimReport::default()
    };
    for k in TruthKind::ALL {
        r.kinds.entry(k).or_default();
    }
    for i in 0..n {
        let sc = Scenario::generate(seed + i as u64, bins, cfg.bin_secs);
        let run = sc.run(cfg);
        let score = sc.score(&run);
        r.observations += run.observations;
        r.events += score.events;
        r.true_events += score.true_events;
        r.false_events += score.false_events;
        r.agent_failure_events += score.agent_failure_events;
        let hour = sc.bin_start((3600 / cfg.bin_secs.max(1)) as usize);
        r.first_hour_events += run.events.iter().filter(|e| e.start < hour).count();
        r.late_observations += score.late_observations;
        r.late_in_evidence += score.late_in_evidence;
        r.agent_failures += sc
            .disturbances
            .iter()
            .filter(|d| matches!(d.kind, TruthKind::AgentUplinkLoss | TruthKind::AgentSilent))
            .count();
        for o in score.outcomes {
            let row = r.kinds.entry(o.kind).or_default();
            row.disturbances += 1;
            if o.found {
                row.found += 1;
            }
            if let Some(d) = o.delay_bins {
                row.delays.push(d);
            }
            match o.mechanism_right {
                Some(true) => row.mechanism_right += 1,
                Some(false) => {
                    let w = o.mechanism_found.map_or("none", |m| m.as_str());
                    *row.mechanism_wrong.entry(w.to_string()).or_default() += 1;
                }
                None => {}
            }
        }
    }
    r.secs = t0.elapsed().as_secs_f64();
    r
}

// ---------------------------------------------------------------- Venezuela 2019

/// Onset of the 22 July 2019 blackout: about 16:40 local time (VET, UTC-4), i.e.
/// 20:40 UTC, as reported by NetBlocks and Reuters on the day and in the Monash IP
/// Observatory's post "Maduro's Land of Darkness Redux" (26 July 2019).
pub const VEN_ONSET_UTC: i64 = 1_563_828_000;
/// Tolerance on an event's start around the onset: the file is hourly.
pub const VEN_TOLERANCE_SECS: i64 = 3 * 3600;
/// The file's `time_e` is local time written as if it were UTC; Venezuela is UTC-4.
const VEN_UTC_OFFSET_SECS: i64 = 4 * 3600;

#[derive(Debug, Clone)]
pub struct VenRow {
    pub state: String,
    /// Lowest connectivity within a day after the onset.
    pub min_after_onset: f64,
    pub expected: bool,
    pub event: Option<Event>,
}

#[derive(Debug, Clone)]
pub struct VenReport {
    pub rows: Vec<VenRow>,
    pub national: Option<Event>,
    pub events: Vec<Event>,
    pub false_events: usize,
}

impl VenReport {
    pub fn goals_met(&self) -> bool {
        self.national.is_some() && self.rows.iter().all(|r| !r.expected || r.event.is_some())
    }

    pub fn markdown(&self) -> String {
        let mut s = String::from(
            "### Venezuela, 22 July 2019 blackout (Monash IP Observatory, hourly connectivity per state)\n\n",
        );
        let expected = self.rows.iter().filter(|r| r.expected).count();
        let found = self
            .rows
            .iter()
            .filter(|r| r.expected && r.event.is_some())
            .count();
        let mut delays: Vec<f64> = self
            .rows
            .iter()
            .filter_map(|r| r.event.as_ref())
            .chain(self.national.as_ref())
            .map(|e| (e.detected_at.timestamp() - VEN_ONSET_UTC) as f64 / 3600.0)
            .collect();
        let onset_events = self.events.len() - self.false_events;
        s += &format!(
            "Onset 2019-07-22T20:40Z (16:40 VET). National event: {}. States found: {found}/{expected} expected (recall {:.3}). Events: {} ({} true, {} false; precision {:.3}). Median detection delay after onset: {} h.\n\n",
            match &self.national {
                Some(e) => format!(
                    "{} {} from {} (detected {})",
                    e.kind,
                    severity_str(e),
                    e.start.format("%Y-%m-%dT%H:%MZ"),
                    e.detected_at.format("%Y-%m-%dT%H:%MZ")
                ),
                None => "NOT FOUND".into(),
            },
            if expected == 0 {
                1.0
            } else {
                found as f64 / expected as f64
            },
            self.events.len(),
            onset_events,
            self.false_events,
            if self.events.is_empty() {
                1.0
            } else {
                onset_events as f64 / self.events.len() as f64
            },
            pct(&mut delays, 0.5).map_or("-".into(), |d| format!("{d:.1}")),
        );
        s += "| state | lowest index after onset | expected | event | kind | severity | start (UTC) | end (UTC) | peak drop |\n|---|---|---|---|---|---|---|---|---|\n";
        for r in &self.rows {
            let (found, kind, sev, start, end, drop) = match &r.event {
                Some(e) => (
                    "found".to_string(),
                    e.kind.to_string(),
                    severity_str(e).to_string(),
                    e.start.format("%m-%d %H:%M").to_string(),
                    e.end
                        .map_or("open".into(), |t| t.format("%m-%d %H:%M").to_string()),
                    format!("{:.2}", e.peak_drop),
                ),
                None => (
                    "none".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ),
            };
            s += &format!(
                "| {} | {} | {} | {found} | {kind} | {sev} | {start} | {end} | {drop} |\n",
                r.state,
                r.min_after_onset,
                if r.expected { "yes" } else { "no" },
            );
        }
        s
    }
}

fn severity_str(e: &Event) -> &'static str {
    {
        match e.severity {
            blackout_detect::State::Normal => "normal",
            blackout_detect::State::Warning => "warning",
            blackout_detect::State::Outage => "outage",
        }
    }
}

fn read_lines(path: &Path) -> Result<Option<Vec<String>>, QualityError> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(QualityError::Io {
                path: path.into(),
                source,
            });
        }
    };
    let lines: Result<Vec<String>, _> = BufReader::new(f).lines().collect();
    lines.map(Some).map_err(|source| QualityError::Io {
        path: path.into(),
        source,
    })
}

fn column(header: &[String], name: &str, path: &Path) -> Result<usize, QualityError> {
    header
        .iter()
        .position(|h| h.trim().trim_start_matches('\u{feff}') == name)
        .ok_or_else(|| perr(path, 1, format!("no column {name:?}")))
}

/// Ground truth, from the public facts above: every state whose connectivity fell in the
/// blackout is expected to get an event starting within the tolerance of the onset, and
/// the country a national one. A state counts as affected when its index (100 = normal)
/// fell below 80, IODA's warning threshold, within a day of the onset: Bolívar never
/// fell below 80 in this file and is not expected (an event there would be a false one).
/// Events on affected states starting after the onset count as true: the recovery was
/// uneven, with relapses, until the end of the file.
pub fn venezuela(path: &Path) -> Result<Option<VenReport>, QualityError> {
    let Some(lines) = read_lines(path)? else {
        return Ok(None);
    };
    let header = split_csv_line(lines.first().map(String::as_str).unwrap_or(""));
    let (c_name, c_time, c_val) = (
        column(&header, "name_1", path)?,
        column(&header, "time_e", path)?,
        column(&header, "connectivity", path)?,
    );
    let mut points = Vec::new();
    let mut mins: BTreeMap<String, f64> = BTreeMap::new();
    for (i, line) in lines.iter().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let cols = split_csv_line(line);
        let get = |c: usize| {
            cols.get(c)
                .map(String::as_str)
                .ok_or_else(|| perr(path, i + 1, "short row"))
        };
        let state = get(c_name)?.to_string();
        let t: i64 = get(c_time)?
            .trim()
            .parse()
            .map_err(|_| perr(path, i + 1, "time_e is not a number"))?;
        let v: f64 = get(c_val)?
            .trim()
            .parse()
            .map_err(|_| perr(path, i + 1, "connectivity is not a number"))?;
        let at = Utc.timestamp_opt(t + VEN_UTC_OFFSET_SECS, 0).unwrap();
        let since = at.timestamp() - VEN_ONSET_UTC;
        if (-VEN_TOLERANCE_SECS..86_400).contains(&since) {
            let m = mins.entry(state.clone()).or_insert(f64::INFINITY);
            *m = m.min(v);
        }
        points.push(SeriesPoint {
            at,
            entity: EntityKey::Region {
                country: "VE".into(),
                region: state,
            },
            input: SeriesInput::Level(Signal::Icmp),
            value: v,
        });
    }
    let cfg = DetectConfig {
        bin_secs: 3600,
        grace_secs: 0,
        ..DetectConfig::default()
    };
    let eng = replay_series(cfg, &mut points, |_| {});
    let events: Vec<Event> = eng.events().cloned().collect();
    let near_onset = |e: &Event| (e.start.timestamp() - VEN_ONSET_UTC).abs() <= VEN_TOLERANCE_SECS;
    let reach = |e: &Event| matches!(e.kind, EventKind::NationalBlackout | EventKind::Partial);
    let national = events
        .iter()
        .find(|e| {
            e.entity == EntityKey::Country("VE".into())
                && e.kind == EventKind::NationalBlackout
                && near_onset(e)
        })
        .cloned();
    let rows: Vec<VenRow> = mins
        .iter()
        .map(|(state, min)| {
            let key = EntityKey::Region {
                country: "VE".into(),
                region: state.clone(),
            };
            VenRow {
                state: state.clone(),
                min_after_onset: *min,
                expected: *min < 80.0,
                // A state's own event, or the national blackout that names it in its
                // evidence (one shutdown is one event; its regions are parts of it).
                event: events
                    .iter()
                    .find(|e| e.entity == key && reach(e) && near_onset(e))
                    .or_else(|| {
                        national
                            .as_ref()
                            .filter(|n| n.evidence.networks.iter().any(|x| *x == key.to_string()))
                    })
                    .cloned(),
            }
        })
        .collect();
    let false_events = events
        .iter()
        .filter(|e| {
            let expected_entity = e.entity.is_country()
                || rows.iter().any(|r| {
                    r.expected
                        && e.entity
                            == EntityKey::Region {
                                country: "VE".into(),
                                region: r.state.clone(),
                            }
                });
            !(reach(e)
                && expected_entity
                && e.start.timestamp() >= VEN_ONSET_UTC - VEN_TOLERANCE_SECS)
        })
        .count();
    Ok(Some(VenReport {
        rows,
        national,
        events,
        false_events,
    }))
}

// ---------------------------------------------------------------- Ukraine/Russia border

#[derive(Debug, Clone)]
pub struct UkrReport {
    pub regions: usize,
    pub points: usize,
    pub events_as_latency: usize,
    pub events_as_level: usize,
    pub max_index: f64,
}

impl UkrReport {
    pub fn markdown(&self) -> String {
        format!(
            "### Ukraine/Russia border regions, Dec 2021 - Jan 2022 (latency index, 3-hourly; no shutdown)\n\n| regions | values | max index | events (as latency: throttling) | events (as level) |\n|---|---|---|---|---|\n| {} | {} | {:.1} | {} | {} |\n",
            self.regions, self.points, self.max_index, self.events_as_latency, self.events_as_level
        )
    }
}

fn iso3_to_iso2(s: &str) -> Option<&'static str> {
    Some(match s {
        "UKR" => "UA",
        "RUS" => "RU",
        "BLR" => "BY",
        _ => return None,
    })
}

/// The negative control: the same series read as a latency (throttling detection) and as
/// a level (outage detection) must give no event.
pub fn ukraine(path: &Path) -> Result<Option<UkrReport>, QualityError> {
    let Some(lines) = read_lines(path)? else {
        return Ok(None);
    };
    let header = split_csv_line(lines.first().map(String::as_str).unwrap_or(""));
    let c_iso = column(&header, "country_iso_three_char_code", path)?;
    let c_name = column(&header, "adm1_name", path)?;
    let c_tz = column(&header, "timezone_offset", path)?;
    let c_time = column(&header, "time_local", path)?;
    let c_val = column(&header, "latency_indx", path)?;
    let mut lat = Vec::new();
    let mut max_index = f64::MIN;
    for (i, line) in lines.iter().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let cols = split_csv_line(line);
        let get = |c: usize| {
            cols.get(c)
                .map(String::as_str)
                .ok_or_else(|| perr(path, i + 1, "short row"))
        };
        let cc = iso3_to_iso2(get(c_iso)?.trim())
            .ok_or_else(|| perr(path, i + 1, "unknown country code"))?;
        let tz: f64 = get(c_tz)?
            .trim()
            .parse()
            .map_err(|_| perr(path, i + 1, "timezone_offset is not a number"))?;
        let local = NaiveDateTime::parse_from_str(get(c_time)?.trim(), "%d-%b-%Y %H:%M:%S")
            .map_err(|e| perr(path, i + 1, format!("time_local: {e}")))?;
        let at: DateTime<Utc> =
            Utc.from_utc_datetime(&local) - Duration::seconds((tz * 3600.0) as i64);
        let v: f64 = get(c_val)?
            .trim()
            .parse()
            .map_err(|_| perr(path, i + 1, "latency_indx is not a number"))?;
        max_index = max_index.max(v);
        lat.push(SeriesPoint {
            at,
            entity: EntityKey::Region {
                country: cc.into(),
                region: get(c_name)?.trim().to_string(),
            },
            input: SeriesInput::Rtt(Signal::Icmp),
            value: v,
        });
    }
    let regions = lat
        .iter()
        .map(|p| p.entity.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let cfg = DetectConfig {
        bin_secs: crate::replay::infer_bin_secs(&lat).unwrap_or(10_800),
        grace_secs: 0,
        ..DetectConfig::default()
    };
    let mut level: Vec<SeriesPoint> = lat
        .iter()
        .map(|p| SeriesPoint {
            input: SeriesInput::Level(Signal::Icmp),
            ..p.clone()
        })
        .collect();
    let points = lat.len();
    let e1 = replay_series(cfg.clone(), &mut lat, |_| {})
        .events()
        .count();
    let e2 = replay_series(cfg, &mut level, |_| {}).events().count();
    Ok(Some(UkrReport {
        regions,
        points,
        events_as_latency: e1,
        events_as_level: e2,
        max_index,
    }))
}

// ---------------------------------------------------------------- benchmark

#[derive(Debug, Clone)]
pub struct BenchReport {
    pub targets: usize,
    pub agents: usize,
    pub bins: usize,
    pub observations: usize,
    pub runs: Vec<f64>,
    pub rss_per_target_bytes: Option<f64>,
}

impl BenchReport {
    pub fn median_obs_per_sec(&self) -> f64 {
        let mut r = self.runs.clone();
        pct(&mut r, 0.5).unwrap_or(0.0)
    }
    pub fn markdown(&self) -> String {
        format!(
            "### Engine throughput (ingest + aggregate + evaluate, one thread)\n\n| targets | agents | bins | observations per run | runs | median obs/s | min obs/s | max obs/s | RSS growth per tracked target |\n|---|---|---|---|---|---|---|---|---|\n| {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {} |\n",
            self.targets,
            self.agents,
            self.bins,
            self.observations,
            self.runs.len(),
            self.median_obs_per_sec(),
            self.runs.iter().cloned().fold(f64::INFINITY, f64::min),
            self.runs.iter().cloned().fold(0.0, f64::max),
            self.rss_per_target_bytes
                .map_or("n/a".into(), |b| format!("{b:.0} bytes")),
        )
    }
}

fn rss_bytes() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096.0)
}

/// Synthetic load: `targets` ICMP targets in 8 countries of 16 ASNs each, probed by
/// `agents` agents (plus 4 control targets each) in every bin; 5 % failures. Times
/// `ingest` of every observation and the `advance` that closes each bin.
pub fn bench(targets: usize, agents: usize, runs: usize) -> BenchReport {
    const BINS: usize = 3;
    let start: DateTime<Utc> = Utc
        .timestamp_opt(1_700_000_000 - 1_700_000_000 % 300, 0)
        .unwrap();
    let mut rng = blackout_detect::sim::Rng::new(42);
    let mut obs = Vec::with_capacity(targets * agents * BINS);
    for bin in 0..BINS {
        for a in 0..agents {
            let agent = format!("agent-{a}");
            for c in 0..4 {
                obs.push(Observation {
                    agent: agent.clone(),
                    target: format!("control-{c}"),
                    country: "ZZ".into(),
                    asn: 64_500,
                    region: None,
                    signal: Signal::Icmp,
                    control: true,
                    measured_at: start + Duration::seconds(bin as i64 * 300 + 1),
                    ok: true,
                    phase: None,
                    failure: None,
                    rtt_ms: Some(10.0),
                    block: None,
                    timings_ms: None,
                });
            }
            for t in 0..targets {
                let ok = !rng.chance(0.05);
                let cc = ["KZ", "UZ", "KG", "TJ", "TM", "RU", "IR", "MM"][t % 8];
                obs.push(Observation {
                    agent: agent.clone(),
                    target: format!("icmp:{t}"),
                    country: cc.into(),
                    asn: 1000 + (t % 128) as u32,
                    region: None,
                    signal: Signal::Icmp,
                    control: false,
                    measured_at: start + Duration::seconds(bin as i64 * 300 + (t % 300) as i64),
                    ok,
                    phase: (!ok).then_some(blackout_model::observation::Phase::IcmpEcho),
                    failure: (!ok).then_some(blackout_model::observation::Failure::Timeout),
                    rtt_ms: ok.then_some(50.0),
                    block: None,
                    timings_ms: None,
                });
            }
        }
    }
    let mut results = Vec::new();
    let mut rss_per_target = None;
    for run in 0..runs.max(1) {
        let before = rss_bytes();
        let mut eng = Engine::new(DetectConfig::default());
        let t0 = Instant::now();
        let per_bin = obs.len() / BINS;
        for bin in 0..BINS {
            for o in &obs[bin * per_bin..(bin + 1) * per_bin] {
                eng.ingest(o);
            }
            eng.advance(start + Duration::seconds((bin as i64 + 1) * 300 + 30));
        }
        let secs = t0.elapsed().as_secs_f64();
        results.push(obs.len() as f64 / secs);
        if run == 0
            && let (Some(b), Some(a)) = (before, rss_bytes())
        {
            rss_per_target = Some((a - b).max(0.0) / eng.tracked_targets().max(1) as f64);
        }
        std::hint::black_box(&eng);
    }
    BenchReport {
        targets,
        agents,
        bins: BINS,
        observations: obs.len(),
        runs: results,
        rss_per_target_bytes: rss_per_target,
    }
}
