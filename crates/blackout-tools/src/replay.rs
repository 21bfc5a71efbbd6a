//! `blackout replay`: the detection engine over recorded data, offline and fast.
//!
//! Inputs (exactly one):
//! - `--observations FILE`: JSON Lines, one [`Observation`] per line (the agents' upload
//!   format); replayed in measurement order with the configured bins.
//! - `--signals FILE.csv`: header `timestamp,entity,signal,value`; timestamp in Unix
//!   seconds or RFC 3339; entity `IR`, `IR/<region>`, `IR/AS<n>` or `AS<n>`; signal one
//!   of the names in [`source_signal`]. Bins are inferred from the data (the most
//!   common step between timestamps).
//! - `--ioda FILE`: IODA API v2 `signals/raw` JSON (`data` holds, per entity, one series
//!   per datasource with `from`, `step` and `values`); bins are the largest `step`.
//!
//! - `--mrt [COLLECTOR=]FILE...` (alone or with `--observations`): MRT RIB dumps and
//!   update files through the BGP table into the `bgp` signal, over the space of
//!   `--catalog` (see [`crate::replay_bgp`]).
//!
//! Prints the events as JSON Lines (`entity`, `kind`, `severity`, `start`, `end` in RFC
//! 3339 UTC, `end` null while open, and the rest of [`Event`]).

use chrono::{DateTime, Duration, TimeZone, Utc};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use blackout_detect::{DetectConfig, Engine, EntityKey, Event, EventChange};
use blackout_model::observation::{Observation, Signal};

/// Arguments of `blackout replay`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReplayArgs {
    /// Observation JSON Lines (the agents' upload format).
    #[arg(long, value_name = "FILE", group = "replay_input")]
    pub observations: Option<PathBuf>,
    /// Aggregate series CSV with header `timestamp,entity,signal,value`.
    #[arg(long, value_name = "FILE", group = "replay_input")]
    pub signals: Option<PathBuf>,
    /// IODA API v2 signals/raw JSON.
    #[arg(long, value_name = "FILE", group = "replay_input")]
    pub ioda: Option<PathBuf>,
    /// MRT RIB dumps and update files (plain, gzip or bzip2) for the `bgp` signal, read
    /// in the order given; `COLLECTOR=` names the route collector (default `mrt`).
    #[arg(long, value_name = "[COLLECTOR=]FILE", num_args = 1..)]
    pub mrt: Vec<String>,
    /// Catalog files or directories whose space the BGP table counts (with `--mrt`).
    #[arg(long, value_name = "PATH")]
    pub catalog: Vec<PathBuf>,
    /// Healthy peers that must carry a route (with `--mrt`); default: half of them.
    #[arg(long)]
    pub bgp_peer_quorum: Option<u16>,
    /// Prefixes that make a peer a full-table peer (with `--mrt`).
    #[arg(long)]
    pub bgp_full_table_min_prefixes: Option<u32>,
    /// A peer silent this long stops counting; 0: never (with `--mrt`).
    #[arg(long)]
    pub bgp_peer_silence_secs: Option<u64>,
    /// Detection settings (TOML, the keys of the collector's `[detect]` table).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Bin width; overrides the config and the width inferred from series input.
    #[arg(long)]
    pub bin_secs: Option<u64>,
    /// Print every event change (opened, updated, closed) as it happens instead of the
    /// final events.
    #[arg(long)]
    pub changes: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
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
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error(
        "give exactly one of --observations, --signals or --ioda, or --mrt (alone or with --observations)"
    )]
    NoInput,
    #[error("{0}")]
    Mrt(String),
    #[error("--mrt needs --catalog: the BGP signal counts the catalog's address space")]
    NoCatalog,
    #[error("catalog: {0}")]
    Catalog(String),
    #[error("writing the events: {0}")]
    Output(std::io::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReplayError + '_ {
    move |source| ReplayError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn parse_err(path: &Path, line: usize, reason: impl Into<String>) -> ReplayError {
    ReplayError::Parse {
        path: path.to_path_buf(),
        line,
        reason: reason.into(),
    }
}

/// Which engine series an aggregate signal name feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesInput {
    /// A level: responsive blocks, a connectivity index, a reachable share.
    Level(Signal),
    /// A latency (milliseconds or index): throttling evidence.
    Rtt(Signal),
}

/// Names accepted in the `signal` column and as IODA datasources. Active probing
/// (`ping-slash24`) is ICMP; BGP visibility (IODA's count of visible /24s, judged
/// against its own baseline) is the `bgp` signal, so that a replayed event names its
/// mechanism (routes withdrawn or traffic blocked); Google traffic (`gtr`) is web use and
/// takes the HTTP slot. Telescope datasources have no slot.
pub fn source_signal(name: &str) -> Option<SeriesInput> {
    let n = name.trim().to_ascii_lowercase();
    Some(match n.as_str() {
        "icmp" | "ping-slash24" | "ping" | "active" | "connectivity" => {
            SeriesInput::Level(Signal::Icmp)
        }
        "tcp" => SeriesInput::Level(Signal::Tcp),
        "bgp" => SeriesInput::Level(Signal::Bgp),
        "dns" => SeriesInput::Level(Signal::Dns),
        "http" | "gtr" | "gtr-norm" => SeriesInput::Level(Signal::Http),
        "icmp_rtt" | "rtt" | "latency" | "latency_index" => SeriesInput::Rtt(Signal::Icmp),
        "tcp_rtt" => SeriesInput::Rtt(Signal::Tcp),
        "dns_rtt" => SeriesInput::Rtt(Signal::Dns),
        "http_rtt" => SeriesInput::Rtt(Signal::Http),
        _ => return None,
    })
}

/// One value of an aggregate series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPoint {
    pub at: DateTime<Utc>,
    pub entity: EntityKey,
    pub input: SeriesInput,
    pub value: f64,
}

/// Splits one CSV line (RFC 4180 quoting, no embedded newlines).
pub fn split_csv_line(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Unix seconds or RFC 3339.
pub fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Utc
            .timestamp_opt(n, 0)
            .single()
            .ok_or_else(|| format!("timestamp {n} out of range"));
    }
    if let Ok(f) = s.parse::<f64>()
        && f.is_finite()
    {
        return Utc
            .timestamp_opt(f.floor() as i64, 0)
            .single()
            .ok_or_else(|| format!("timestamp {s} out of range"));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("timestamp {s:?}: not Unix seconds or RFC 3339 ({e})"))
}

/// Reads a `--signals` CSV.
pub fn read_signals_csv(path: &Path) -> Result<Vec<SeriesPoint>, ReplayError> {
    let f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let n = i + 1;
        let line = line.map_err(io_err(path))?;
        let line = line.trim_end_matches('\r');
        if n == 1 {
            let cols: Vec<String> = split_csv_line(line.trim_start_matches('\u{feff}'))
                .iter()
                .map(|c| c.trim().to_ascii_lowercase())
                .collect();
            if cols != ["timestamp", "entity", "signal", "value"] {
                return Err(parse_err(
                    path,
                    n,
                    format!("header must be `timestamp,entity,signal,value`, found {line:?}"),
                ));
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let cols = split_csv_line(line);
        if cols.len() != 4 {
            return Err(parse_err(
                path,
                n,
                format!("expected 4 columns, found {}", cols.len()),
            ));
        }
        let at = parse_timestamp(&cols[0]).map_err(|e| parse_err(path, n, e))?;
        let entity: EntityKey = cols[1].parse().map_err(|e: String| parse_err(path, n, e))?;
        let input = source_signal(&cols[2]).ok_or_else(|| {
            parse_err(
                path,
                n,
                format!(
                    "signal {:?}: expected icmp, dns, http, tcp, <signal>_rtt, latency, ping-slash24, bgp or gtr",
                    cols[2]
                ),
            )
        })?;
        let value: f64 = cols[3]
            .trim()
            .parse()
            .map_err(|_| parse_err(path, n, format!("value {:?} is not a number", cols[3])))?;
        if !value.is_finite() {
            return Err(parse_err(path, n, "value must be finite"));
        }
        out.push(SeriesPoint {
            at,
            entity,
            input,
            value,
        });
    }
    Ok(out)
}

/// Reads IODA v2 `signals/raw` JSON. Returns the points, the largest step, and the
/// datasources skipped for having no slot.
/// Points, the largest step, and the datasources skipped.
pub type IodaInput = (Vec<SeriesPoint>, Option<u64>, Vec<String>);

pub fn read_ioda(path: &Path) -> Result<IodaInput, ReplayError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let root: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| parse_err(path, e.line(), format!("not JSON: {e}")))?;
    let data = root.get("data").unwrap_or(&root);
    let mut series = Vec::new();
    collect_series(data, &mut series);
    if series.is_empty() {
        return Err(parse_err(
            path,
            1,
            "no series (objects with `values`) found under `data`",
        ));
    }
    let mut out = Vec::new();
    let mut step_max = None;
    let mut skipped = Vec::new();
    for (k, s) in series.iter().enumerate() {
        let field = |name: &str| s.get(name);
        let ctx = |m: &str| parse_err(path, 1, format!("series {k}: {m}"));
        let ds = field("datasource").and_then(|v| v.as_str()).unwrap_or("");
        let Some(input) = source_signal(ds) else {
            if !skipped.iter().any(|x| x == ds) {
                skipped.push(ds.to_string());
            }
            continue;
        };
        let etype = field("entityType")
            .and_then(|v| v.as_str())
            .unwrap_or("country");
        let code = match field("entityCode") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => return Err(ctx("missing entityCode")),
        };
        let entity = match etype {
            "country" => code
                .parse::<EntityKey>()
                .map_err(|e| ctx(&format!("entityCode: {e}")))?,
            "asn" => EntityKey::Asn {
                country: String::new(),
                asn: code
                    .trim_start_matches("AS")
                    .parse()
                    .map_err(|_| ctx("asn entityCode is not a number"))?,
            },
            "region" => {
                let name = field("entityName")
                    .and_then(|v| v.as_str())
                    .unwrap_or(&code)
                    .to_string();
                // The fully qualified id names the country (geo.<db>.<continent>.<CC>.<id>).
                let country = field("entityFqid")
                    .and_then(|v| v.as_str())
                    .and_then(|f| {
                        f.split('.')
                            .find(|p| blackout_model::observation::is_country_code(p))
                            .map(str::to_string)
                    })
                    .unwrap_or_else(|| "ZZ".to_string());
                EntityKey::Region {
                    country,
                    region: name,
                }
            }
            other => return Err(ctx(&format!("entityType {other:?} not supported"))),
        };
        let from = field("from")
            .and_then(|v| v.as_i64())
            .ok_or_else(|| ctx("missing from"))?;
        let step = field("step")
            .and_then(|v| v.as_u64())
            .filter(|s| *s > 0)
            .ok_or_else(|| ctx("missing or zero step"))?;
        step_max = Some(step_max.map_or(step, |m: u64| m.max(step)));
        let values = field("values")
            .and_then(|v| v.as_array())
            .ok_or_else(|| ctx("values is not an array"))?;
        for (i, v) in values.iter().enumerate() {
            let Some(value) = v.as_f64() else { continue };
            let at = parse_timestamp(&(from + (i as i64) * step as i64).to_string())
                .map_err(|e| ctx(&e))?;
            out.push(SeriesPoint {
                at,
                entity: entity.clone(),
                input,
                value,
            });
        }
    }
    Ok((out, step_max, skipped))
}

fn collect_series<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
    match v {
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_series(x, out)),
        serde_json::Value::Object(o) if o.contains_key("values") => out.push(v),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_series(x, out)),
        _ => {}
    }
}

/// The most common step between consecutive timestamps of one series.
pub fn infer_bin_secs(points: &[SeriesPoint]) -> Option<u64> {
    let mut per: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    for p in points {
        per.entry((p.entity.to_string(), format!("{:?}", p.input)))
            .or_default()
            .push(p.at.timestamp());
    }
    let mut steps: BTreeMap<i64, usize> = BTreeMap::new();
    for ts in per.values_mut() {
        ts.sort_unstable();
        ts.dedup();
        for w in ts.windows(2) {
            *steps.entry(w[1] - w[0]).or_default() += 1;
        }
    }
    steps
        .into_iter()
        .filter(|(s, _)| *s > 0)
        .max_by_key(|(s, n)| (*n, -*s))
        .map(|(s, _)| s as u64)
}

/// Runs the engine over aggregate points (in time order) and returns the engine.
pub fn replay_series(
    cfg: DetectConfig,
    points: &mut [SeriesPoint],
    mut on_change: impl FnMut(&EventChange),
) -> Engine {
    points.sort_by_key(|p| p.at);
    let bin = cfg.bin_secs as i64;
    let grace = Duration::seconds(cfg.grace_secs as i64);
    let mut eng = Engine::new(cfg);
    let mut current: Option<i64> = None;
    for p in points.iter() {
        let b = p.at.timestamp().div_euclid(bin);
        if current.is_some_and(|c| c != b) {
            for ch in eng.advance(Utc.timestamp_opt(b * bin, 0).unwrap() + grace) {
                on_change(&ch);
            }
        }
        current = Some(b);
        match p.input {
            SeriesInput::Level(s) => eng.ingest_value(p.at, &p.entity, s, p.value),
            SeriesInput::Rtt(s) => eng.ingest_rtt_value(p.at, &p.entity, s, p.value),
        }
    }
    if let Some(b) = current {
        for ch in eng.advance(Utc.timestamp_opt((b + 1) * bin, 0).unwrap() + grace) {
            on_change(&ch);
        }
    }
    eng
}

/// Reads observation JSON Lines; errors name the line.
pub fn read_observations(path: &Path) -> Result<Vec<Observation>, ReplayError> {
    let f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(io_err(path))?;
        if line.trim().is_empty() {
            continue;
        }
        let o: Observation =
            serde_json::from_str(&line).map_err(|e| parse_err(path, i + 1, e.to_string()))?;
        o.validate()
            .map_err(|e| parse_err(path, i + 1, e.to_string()))?;
        out.push(o);
    }
    Ok(out)
}

/// Runs the engine over observations in measurement order.
pub fn replay_observations(
    cfg: DetectConfig,
    obs: &mut [Observation],
    mut on_change: impl FnMut(&EventChange),
) -> Engine {
    obs.sort_by_key(|o| o.measured_at);
    let bin = cfg.bin_secs as i64;
    let grace = Duration::seconds(cfg.grace_secs as i64);
    let mut eng = Engine::new(cfg);
    let mut current: Option<i64> = None;
    for o in obs.iter() {
        let b = o.measured_at.timestamp().div_euclid(bin);
        if current.is_some_and(|c| c != b) {
            for ch in eng.advance(Utc.timestamp_opt(b * bin, 0).unwrap() + grace) {
                on_change(&ch);
            }
        }
        current = Some(b);
        eng.ingest(o);
    }
    if let Some(b) = current {
        for ch in eng.advance(Utc.timestamp_opt((b + 1) * bin, 0).unwrap() + grace) {
            on_change(&ch);
        }
    }
    eng
}

fn load_config(args: &ReplayArgs) -> Result<DetectConfig, ReplayError> {
    let Some(path) = &args.config else {
        return Ok(DetectConfig::default());
    };
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let cfg: DetectConfig = toml::from_str(&text).map_err(|e| ReplayError::Config {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    Ok(cfg)
}

fn finish_config(
    mut cfg: DetectConfig,
    args: &ReplayArgs,
    inferred: Option<u64>,
) -> Result<DetectConfig, ReplayError> {
    if let Some(b) = args.bin_secs.or(inferred) {
        cfg.bin_secs = b;
        // Series input is complete: nothing arrives after its bin.
        if args.bin_secs.is_none() {
            cfg.grace_secs = 0;
        }
    }
    cfg.validate().map_err(|reason| ReplayError::Config {
        path: args.config.clone().unwrap_or_else(|| "--bin-secs".into()),
        reason,
    })?;
    Ok(cfg)
}

pub fn run(args: &ReplayArgs) -> Result<(), ReplayError> {
    let cfg = load_config(args)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut write_err = None;
    let mut print = |v: &dyn erased::Json| {
        if write_err.is_none()
            && let Err(e) = v.write_line(&mut out)
        {
            write_err = Some(e);
        }
    };
    let eng = if !args.mrt.is_empty() {
        if args.signals.is_some() || args.ioda.is_some() {
            return Err(ReplayError::NoInput);
        }
        let mut obs = match &args.observations {
            Some(path) => read_observations(path)?,
            None => Vec::new(),
        };
        let cfg = finish_config(cfg, args, None)?;
        let table = bgp_table(args, cfg.bin_secs)?;
        let mrt: Vec<_> = args
            .mrt
            .iter()
            .map(|a| crate::replay_bgp::MrtInput::parse(a))
            .collect();
        let (eng, _) = crate::replay_bgp::replay_with_bgp(
            cfg,
            &mut obs,
            &mrt,
            table,
            &mut |c| {
                if args.changes {
                    print(c)
                }
            },
            &mut |_| {},
        )?;
        eng
    } else if let Some(path) = &args.observations {
        let mut obs = read_observations(path)?;
        let cfg = finish_config(cfg, args, None)?;
        replay_observations(cfg, &mut obs, |c| {
            if args.changes {
                print(c)
            }
        })
    } else {
        let (mut points, inferred) = if let Some(path) = &args.signals {
            let p = read_signals_csv(path)?;
            let b = infer_bin_secs(&p);
            (p, b)
        } else if let Some(path) = &args.ioda {
            let (p, step, skipped) = read_ioda(path)?;
            for s in skipped {
                tracing::warn!(datasource = %s, "IODA datasource has no blackout signal: skipped");
            }
            (p, step)
        } else {
            return Err(ReplayError::NoInput);
        };
        let cfg = finish_config(cfg, args, inferred)?;
        replay_series(cfg, &mut points, |c| {
            if args.changes {
                print(c)
            }
        })
    };
    if !args.changes {
        for ev in eng.events() {
            print(ev);
        }
    }
    if let Some(e) = write_err {
        return Err(ReplayError::Output(e));
    }
    out.flush().map_err(ReplayError::Output)
}

/// The BGP table over the space of `--catalog`, judged as the flags say.
fn bgp_table(args: &ReplayArgs, bin_secs: u64) -> Result<blackout_bgp::Table, ReplayError> {
    if args.catalog.is_empty() {
        return Err(ReplayError::NoCatalog);
    }
    let mut files = Vec::new();
    for p in &args.catalog {
        files.extend(
            blackout_model::catalog::load_path(p)
                .map_err(|e| ReplayError::Catalog(e.to_string()))?,
        );
    }
    let targets =
        blackout_model::catalog::expand(&files).map_err(|e| ReplayError::Catalog(e.to_string()))?;
    let d = blackout_bgp::TableConfig::default();
    let config = blackout_bgp::TableConfig {
        peer_quorum: args.bgp_peer_quorum.filter(|&q| q > 0),
        full_table_min_prefixes: args
            .bgp_full_table_min_prefixes
            .filter(|&n| n > 0)
            .unwrap_or(d.full_table_min_prefixes),
        peer_silence_secs: args.bgp_peer_silence_secs.unwrap_or(d.peer_silence_secs),
        // As in the collector: every detector bin gets a reading of every entity.
        emit_all_interval_secs: d.emit_all_interval_secs.min(bin_secs.max(1)),
    };
    Ok(blackout_bgp::Table::new(
        config,
        blackout_bgp::Space::from_targets(&targets),
    ))
}

mod erased {
    use std::io::Write;

    /// Lets one printer take events and event changes alike.
    pub trait Json {
        fn write_line(&self, w: &mut dyn Write) -> std::io::Result<()>;
    }

    impl<T: serde::Serialize> Json for T {
        fn write_line(&self, w: &mut dyn Write) -> std::io::Result<()> {
            serde_json::to_writer(&mut *w, self)?;
            w.write_all(b"\n")
        }
    }
}

/// Events of a finished replay, for tests and `blackout quality`.
pub fn events_of(eng: &Engine) -> Vec<Event> {
    eng.events().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_split_and_timestamps() {
        assert_eq!(
            split_csv_line(r#"1,"VE/Distrito, Capital",icmp,3"#)[1],
            "VE/Distrito, Capital"
        );
        assert_eq!(parse_timestamp("0").unwrap().timestamp(), 0);
        assert_eq!(
            parse_timestamp("2019-07-22T20:40:00Z").unwrap().timestamp(),
            1_563_828_000
        );
        assert!(parse_timestamp("yesterday").is_err());
    }
}
