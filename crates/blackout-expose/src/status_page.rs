//! The status page at `/`: one self-contained HTML document (inline CSS and SVG, no script,
//! no CDN), readable offline and without Grafana.
//!
//! [`render`] is a pure function of a [`StatusView`]; [`view_from`] fills the view from the
//! collector's read model (verdicts, per-bin values against baselines, events).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use blackout_collector::ReadModel;
use blackout_detect::EntityKey;

/// A verdict, as the `blackout_*_status` gauges encode it (0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// No verdict yet (no fresh readings from a healthy agent).
    Unknown,
    Normal,
    Warning,
    Outage,
}

impl Status {
    /// From the gauge value; anything else is unknown.
    pub fn from_gauge(v: f64) -> Status {
        match v as i64 {
            0 if v == 0.0 => Status::Normal,
            1 if v == 1.0 => Status::Warning,
            2 if v == 2.0 => Status::Outage,
            _ => Status::Unknown,
        }
    }

    /// For people: the legend calls a missing verdict "no data".
    pub fn label(self) -> &'static str {
        match self {
            Status::Unknown => "no data",
            s => s.as_str(),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Normal => "normal",
            Status::Warning => "warning",
            Status::Outage => "outage",
        }
    }
}

/// Everything the page shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    pub generated_at: DateTime<Utc>,
    pub countries: Vec<CountryStatus>,
    /// Open events and recently closed ones (`end` set); the page splits them.
    pub events: Vec<EventView>,
    /// Short remarks for the reader, e.g. what the numbers are while baselines are learned.
    #[serde(default)]
    pub notes: Vec<String>,
    /// The agents' own connectivity; the page says it at the top when no agent is healthy.
    #[serde(default)]
    pub vantage: Option<VantageView>,
    /// Each agent: its health and the age of its last accepted batch.
    #[serde(default)]
    pub agents: Vec<AgentView>,
    /// The reader's filter (`?q=`): countries whose code or name contains it, any case.
    #[serde(default)]
    pub filter: String,
}

/// An agent as the page shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentView {
    pub agent: String,
    /// The detector's reading of the last closed bin; None before the first bin closes.
    pub healthy: Option<bool>,
    /// Seconds since the collector last accepted a batch from it.
    pub last_report_age_secs: Option<i64>,
}

/// An agent whose last batch is older than this is called silent at the top of the page:
/// twelve of the agent's default upload intervals (`upload_interval_secs`, 5 s), past
/// what a retry (at most 15 s apart) explains.
pub const SILENT_AFTER_SECS: i64 = 60;

/// The fleet's own connectivity in the detector's last closed bin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VantageView {
    pub healthy: bool,
    pub agents: u32,
    pub healthy_agents: u32,
    pub control_ok: u32,
    pub control_failed: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountryStatus {
    /// ISO 3166 alpha-2.
    pub code: String,
    pub name: String,
    pub status: Status,
    /// Why there is no verdict (`no_data`, `warm_up`, `no_healthy_vantage`); None with one.
    #[serde(default)]
    pub reason: Option<String>,
    /// Per signal: the series and its baseline. The first signal in [`MAIN_SIGNALS`] order
    /// that has values is drawn as the country's sparkline.
    pub signals: Vec<SignalSeries>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalSeries {
    pub signal: String,
    /// (Unix seconds, value), oldest first.
    pub values: Vec<(i64, f64)>,
    /// (Unix seconds, baseline), oldest first; empty while no baseline is learned.
    #[serde(default)]
    pub baseline: Vec<(i64, f64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventView {
    /// Entity: `KZ`, `KZ/AS9198` or `KZ/<region>`.
    pub entity: String,
    pub country: String,
    /// national_blackout, partial, throttling, service_blocking.
    pub kind: String,
    pub severity: Status,
    pub start: DateTime<Utc>,
    /// `None` while the event is open.
    pub end: Option<DateTime<Utc>>,
    /// Largest drop below the baseline, 0 to 1.
    pub peak_drop: Option<f64>,
    pub evidence: Evidence,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub signals: Vec<String>,
    /// Networks, e.g. `AS9198`.
    pub networks: Vec<String>,
    pub agents: Vec<String>,
    /// Share of the entity's targets that were down at the peak, 0 to 1.
    pub share_of_targets: Option<f64>,
}

/// Which signal stands for a country when only one sparkline fits: ICMP blocks cover the
/// address space, TCP is next where ICMP is filtered, then the services.
pub const MAIN_SIGNALS: [&str; 4] = ["icmp", "tcp", "dns", "http"];

pub(crate) const CSS: &str = include_str!("assets/status.css");

const SPARK_W: f64 = 240.0;
const SPARK_H: f64 = 56.0;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

pub(crate) fn duration_text(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h {:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

pub(crate) fn percent(v: f64) -> String {
    format!("{:.0}%", v * 100.0)
}

/// The series drawn for a country, if any has values.
pub fn main_signal(c: &CountryStatus) -> Option<&SignalSeries> {
    let has = |s: &&SignalSeries| s.values.iter().any(|(_, v)| v.is_finite());
    MAIN_SIGNALS
        .iter()
        .find_map(|m| c.signals.iter().filter(has).find(|s| s.signal == *m))
        .or_else(|| c.signals.iter().find(has))
}

/// Inline SVG: the value as a solid line, the baseline dashed, on a shared scale from 0.
pub fn sparkline(s: &SignalSeries) -> String {
    let pts = |v: &[(i64, f64)]| -> Vec<(i64, f64)> {
        v.iter().copied().filter(|(_, y)| y.is_finite()).collect()
    };
    let values = pts(&s.values);
    let baseline = pts(&s.baseline);
    let all = values.iter().chain(baseline.iter());
    let (mut t0, mut t1, mut ymax) = (i64::MAX, i64::MIN, 0.0f64);
    for (t, y) in all {
        t0 = t0.min(*t);
        t1 = t1.max(*t);
        ymax = ymax.max(*y);
    }
    let mut svg = format!(
        r#"<svg class="spark" viewBox="0 0 {SPARK_W} {SPARK_H}" width="{SPARK_W}" height="{SPARK_H}" role="img" aria-label="{} over time">"#,
        escape(&s.signal)
    );
    if values.is_empty() && baseline.is_empty() {
        svg.push_str(r#"<text x="4" y="32" class="spark-empty">no readings yet</text></svg>"#);
        return svg;
    }
    // Ratios live in 0..1: keep that scale so 100 % is always the top. Levels (counts of
    // responsive blocks) scale to their largest value.
    let top = if ymax <= 1.0 { 1.0 } else { ymax * 1.05 };
    let span = (t1 - t0).max(1) as f64;
    let pad = 3.0;
    let x = |t: i64| pad + (t - t0) as f64 / span * (SPARK_W - 2.0 * pad);
    let y = |v: f64| pad + (1.0 - (v / top).clamp(0.0, 1.0)) * (SPARK_H - 2.0 * pad);
    let line = |v: &[(i64, f64)]| {
        let mut d = String::new();
        for (i, (t, val)) in v.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if i == 0 { "" } else { " " },
                x(*t),
                y(*val)
            );
        }
        d
    };
    let _ = write!(
        svg,
        r#"<line class="spark-axis" x1="0" y1="{:.1}" x2="{SPARK_W}" y2="{:.1}"/>"#,
        y(0.0),
        y(0.0)
    );
    if !baseline.is_empty() {
        let _ = write!(
            svg,
            r#"<polyline class="spark-baseline" points="{}"/>"#,
            line(&baseline)
        );
    }
    match values.len() {
        0 => {}
        1 => {
            let (t, v) = values[0];
            let _ = write!(
                svg,
                r#"<circle class="spark-dot" cx="{:.1}" cy="{:.1}" r="3"/>"#,
                if baseline.is_empty() {
                    SPARK_W / 2.0
                } else {
                    x(t)
                },
                y(v)
            );
        }
        _ => {
            let mut area = line(&values);
            let (first, last) = (values[0].0, values[values.len() - 1].0);
            let _ = write!(
                area,
                " {:.1},{:.1} {:.1},{:.1}",
                x(last),
                y(0.0),
                x(first),
                y(0.0)
            );
            let _ = write!(
                svg,
                r#"<polygon class="spark-area" points="{area}"/><polyline class="spark-value" points="{}"/>"#,
                line(&values)
            );
            let (t, v) = values[values.len() - 1];
            let _ = write!(
                svg,
                r#"<circle class="spark-dot" cx="{:.1}" cy="{:.1}" r="2.5"/>"#,
                x(t),
                y(v)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

fn latest(v: &[(i64, f64)]) -> Option<f64> {
    v.iter().rev().map(|(_, y)| *y).find(|y| y.is_finite())
}

pub(crate) fn value_text(v: f64) -> String {
    if (0.0..=1.0).contains(&v) {
        percent(v)
    } else {
        format!("{v:.0}")
    }
}

fn country_tile(out: &mut String, c: &CountryStatus) {
    let st = c.status.as_str();
    let _ = write!(
        out,
        r#"<article class="tile {st}" id="country-{code}"><header><a class="code" href="/country/{code}">{code}</a><a class="name" href="/country/{code}">{name}</a><span class="badge {st}">{label}</span></header>"#,
        code = escape(&c.code),
        name = escape(&c.name),
        label = c.status.label(),
    );
    if let Some(r) = &c.reason {
        let _ = write!(
            out,
            r#"<div class="reason muted">no verdict: {}</div>"#,
            escape(&r.replace('_', " "))
        );
    }
    match main_signal(c) {
        Some(s) => {
            let now = latest(&s.values).map(value_text).unwrap_or_default();
            let base = latest(&s.baseline)
                .map(|b| format!(" · baseline {}", value_text(b)))
                .unwrap_or_else(|| " · no baseline yet".to_string());
            let _ = write!(
                out,
                r#"<div class="main"><span class="sig">{sig}</span> <strong>{now}</strong><span class="muted">{base}</span></div>{svg}"#,
                sig = escape(&s.signal),
                svg = sparkline(s),
            );
        }
        None => out.push_str(r#"<div class="main muted">no readings yet</div>"#),
    }
    let chips: Vec<String> = c
        .signals
        .iter()
        .filter_map(|s| {
            latest(&s.values).map(|v| {
                format!(
                    r#"<li><span class="sig">{}</span> {}</li>"#,
                    escape(&s.signal),
                    value_text(v)
                )
            })
        })
        .collect();
    let span = main_signal(c).and_then(|s| {
        let first = s.values.iter().chain(&s.baseline).map(|(t, _)| *t).min()?;
        let last = s.values.iter().chain(&s.baseline).map(|(t, _)| *t).max()?;
        (last > first).then(|| {
            format!(
                r#"<li class="span" title="sparkline span">last {}</li>"#,
                duration_text(last - first)
            )
        })
    });
    if !chips.is_empty() || span.is_some() {
        let _ = write!(
            out,
            r#"<ul class="chips">{}{}</ul>"#,
            chips.concat(),
            span.unwrap_or_default()
        );
    }
    out.push_str("</article>");
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "—".to_string()
    } else {
        v.iter().map(|s| escape(s)).collect::<Vec<_>>().join(", ")
    }
}

fn events_table(out: &mut String, events: &[&EventView], now: DateTime<Utc>, open: bool) {
    out.push_str(r#"<table class="events"><thead><tr><th>entity</th><th>kind</th><th>severity</th><th>start</th>"#);
    out.push_str(if open {
        "<th>for</th>"
    } else {
        "<th>end</th><th>lasted</th>"
    });
    out.push_str("<th>peak drop</th><th>signals</th><th>networks</th><th>agents</th><th>targets down</th></tr></thead><tbody>");
    for e in events {
        let sev = e.severity.as_str();
        let _ = write!(
            out,
            r#"<tr class="{sev}"><td><strong>{entity}</strong></td><td>{kind}</td><td><span class="badge {sev}">{label}</span></td><td class="time">{start}</td>"#,
            entity = escape(&e.entity),
            kind = escape(&e.kind.replace('_', " ")),
            start = rfc3339(e.start),
            label = e.severity.label(),
        );
        match e.end {
            Some(end) if !open => {
                let _ = write!(
                    out,
                    r#"<td class="time">{}</td><td class="time">{}</td>"#,
                    rfc3339(end),
                    duration_text((end - e.start).num_seconds())
                );
            }
            _ => {
                let _ = write!(
                    out,
                    r#"<td class="time">{}</td>"#,
                    duration_text((now - e.start).num_seconds())
                );
            }
        }
        let _ = write!(
            out,
            "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e.peak_drop.map(percent).unwrap_or_else(|| "—".into()),
            list(&e.evidence.signals),
            list(&e.evidence.networks),
            list(&e.evidence.agents),
            e.evidence
                .share_of_targets
                .map(percent)
                .unwrap_or_else(|| "—".into()),
        );
    }
    out.push_str("</tbody></table>");
}

/// The whole page.
pub fn render(view: &StatusView) -> String {
    let q = view.filter.trim().to_lowercase();
    let mut countries: Vec<&CountryStatus> = view
        .countries
        .iter()
        .filter(|c| matches_filter(c, &q))
        .collect();
    // Worst first: what a reader came for is at the top (outage, warning, normal, then
    // the countries without a verdict).
    countries.sort_by(|a, b| b.status.cmp(&a.status).then_with(|| a.code.cmp(&b.code)));
    let count = |s: Status| view.countries.iter().filter(|c| c.status == s).count();
    let mut open: Vec<&EventView> = view.events.iter().filter(|e| e.end.is_none()).collect();
    let mut closed: Vec<&EventView> = view.events.iter().filter(|e| e.end.is_some()).collect();
    // Worst first; a country's own event before those of its networks and regions, which
    // are its evidence.
    open.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then((a.entity != a.country).cmp(&(b.entity != b.country)))
            .then(b.start.cmp(&a.start))
            .then(a.entity.cmp(&b.entity))
    });
    closed.sort_by_key(|e| std::cmp::Reverse(e.end));

    let mut out = String::with_capacity(16 * 1024 + 2048 * countries.len());
    let _ = write!(
        out,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta http-equiv="refresh" content="60"><title>blackout status</title><style>{CSS}</style></head><body>"#
    );
    let _ = write!(
        out,
        r#"<header class="top"><h1>blackout</h1><p class="muted">Internet shutdowns, as seen by this collector's agents · generated {}</p><ul class="summary"><li class="outage"><strong>{}</strong> outage</li><li class="warning"><strong>{}</strong> warning</li><li class="normal"><strong>{}</strong> normal</li><li class="unknown"><strong>{}</strong> no data</li><li><strong>{}</strong> open events</li></ul></header>"#,
        rfc3339(view.generated_at),
        count(Status::Outage),
        count(Status::Warning),
        count(Status::Normal),
        count(Status::Unknown),
        open.len(),
    );
    if let Some(v) = view.vantage.as_ref().filter(|v| !v.healthy) {
        let controls = v.control_ok + v.control_failed;
        let _ = write!(
            out,
            r#"<p class="alert vantage" id="vantage"><strong>No healthy vantage point</strong> (reason: no_healthy_vantage): the agents' own connectivity fails, so nothing is known about the countries they watch and every verdict is unknown. Controls answering: {} of {}; agents healthy: {} of {}.</p>"#,
            v.control_ok, controls, v.healthy_agents, v.agents,
        );
    }
    let silent: Vec<&AgentView> = view
        .agents
        .iter()
        .filter(|a| {
            a.last_report_age_secs
                .is_some_and(|s| s > SILENT_AFTER_SECS)
        })
        .collect();
    if !silent.is_empty() {
        let names: Vec<String> = silent
            .iter()
            .map(|a| {
                format!(
                    "{} (last report {} ago)",
                    escape(&a.agent),
                    duration_text(a.last_report_age_secs.unwrap_or_default())
                )
            })
            .collect();
        let _ = write!(
            out,
            r#"<p class="alert silent" id="silent"><strong>Silent agents</strong>: {}. Their observations wait in their spools until they reach the collector again.</p>"#,
            names.join(", ")
        );
    }
    for n in &view.notes {
        let _ = write!(out, r#"<p class="note">{}</p>"#, escape(n));
    }
    out.push_str(r#"<main><section><h2>Countries</h2>"#);
    let _ = write!(
        out,
        r#"<form class="filter" method="get" action="/"><label>Country name or code <input type="search" name="q" value="{}" placeholder="e.g. kz or kazakh"></label> <button type="submit">Filter</button>{}</form>"#,
        escape(view.filter.trim()),
        if q.is_empty() {
            String::new()
        } else {
            format!(
                r#" <a href="/">show all</a> <span class="muted">{} of {} countries</span>"#,
                countries.len(),
                view.countries.len()
            )
        }
    );
    if view.countries.is_empty() {
        out.push_str(r#"<p class="muted">No country is watched: the catalog is empty.</p>"#);
    } else if countries.is_empty() {
        let _ = write!(
            out,
            r#"<p class="muted" id="no-match">No country matches "{}".</p>"#,
            escape(view.filter.trim())
        );
    } else {
        out.push_str(r#"<div class="legend"><span class="swatch normal"></span>normal <span class="swatch warning"></span>warning <span class="swatch outage"></span>outage <span class="swatch unknown"></span>no data · <svg width="28" height="8"><line class="spark-value" x1="0" y1="4" x2="28" y2="4"/></svg> main signal <svg width="28" height="8"><line class="spark-baseline" x1="0" y1="4" x2="28" y2="4"/></svg> baseline</div><div class="grid">"#);
        for c in countries {
            country_tile(&mut out, c);
        }
        out.push_str("</div>");
    }
    out.push_str("</section><section><h2>Open events</h2>");
    if open.is_empty() {
        out.push_str(r#"<p class="muted">No open events.</p>"#);
    } else {
        events_table(&mut out, &open, view.generated_at, true);
    }
    out.push_str("</section><section><h2>Recent events</h2>");
    if closed.is_empty() {
        out.push_str(r#"<p class="muted">No recent events.</p>"#);
    } else {
        events_table(&mut out, &closed, view.generated_at, false);
    }
    out.push_str(r#"</section><section id="agents"><h2>Agents</h2>"#);
    if view.agents.is_empty() {
        out.push_str(r#"<p class="muted">No agent has reported yet.</p>"#);
    } else {
        out.push_str(
            "<table><thead><tr><th>agent</th><th>health</th><th>last report</th></tr></thead><tbody>",
        );
        for a in &view.agents {
            let health = match a.healthy {
                Some(true) => r#"<span class="normal">healthy</span>"#,
                Some(false) => r#"<span class="outage">unhealthy (controls fail or silent)</span>"#,
                None => r#"<span class="muted">not judged yet</span>"#,
            };
            let age = a
                .last_report_age_secs
                .map(|s| format!("{} ago", duration_text(s)))
                .unwrap_or_else(|| "never".into());
            let _ = write!(
                out,
                "<tr><td><strong>{}</strong></td><td>{health}</td><td>{age}</td></tr>",
                escape(&a.agent)
            );
        }
        out.push_str("</tbody></table>");
    }
    let _ = write!(
        out,
        r#"</section></main><footer class="muted">Machine-readable: <a href="/metrics">/metrics</a> · <a href="/api/v1/catalog">/api/v1/catalog</a> · status values: 0 normal, 1 warning, 2 outage ({})</footer></body></html>"#,
        super::names::COUNTRY_STATUS
    );
    out
}

/// A country is shown under filter `q` (lower case; empty: all) when its code or name
/// contains it.
fn matches_filter(c: &CountryStatus, q: &str) -> bool {
    q.is_empty() || c.code.to_lowercase().contains(q) || c.name.to_lowercase().contains(q)
}

/// The overview's sparklines reach back this many bins (a day of 300 s bins).
pub const SPARK_BINS: i64 = 288;

/// Events shown: all open ones and the most recent closed ones, up to this many in all.
pub const MAX_EVENTS: usize = 50;

/// The view from the collector's detector: catalog countries, their verdicts, the history
/// of each signal against its baseline, and the open and recent events.
pub fn view_from(read: &ReadModel, now: DateTime<Utc>) -> StatusView {
    let snap = read.verdicts();
    let trails = read.trails(
        |e| e.is_country(),
        now - chrono::Duration::seconds(SPARK_BINS * snap.bin_secs as i64),
    );
    let mut countries: BTreeMap<String, CountryStatus> = BTreeMap::new();
    for f in read.catalog().files.iter().filter(|f| !f.control) {
        countries
            .entry(f.country.clone())
            .or_insert_with(|| CountryStatus {
                code: f.country.clone(),
                name: f.name.clone().unwrap_or_else(|| f.country.clone()),
                status: Status::Unknown,
                reason: Some(snap.no_verdict_unseen(&f.country).as_str().to_string()),
                signals: Vec::new(),
            });
    }
    for e in &snap.entities {
        let EntityKey::Country(cc) = &e.entity else {
            continue;
        };
        let c = countries
            .entry(cc.clone())
            .or_insert_with(|| CountryStatus {
                code: cc.clone(),
                name: cc.clone(),
                status: Status::Unknown,
                reason: None,
                signals: Vec::new(),
            });
        match e.no_verdict {
            None => {
                c.status = Status::from_gauge(e.state.code() as f64);
                c.reason = None;
            }
            Some(why) => {
                c.status = Status::Unknown;
                c.reason = Some(why.as_str().to_string());
            }
        }
    }
    for t in &trails {
        let Some(c) = countries.get_mut(t.entity.country()) else {
            continue;
        };
        // Each point at its bin's end: the sparkline ends at the last closed bin.
        let end = |p: &blackout_detect::TrailPoint| p.start.timestamp() + snap.bin_secs as i64;
        c.signals.push(SignalSeries {
            signal: t.signal.as_str().to_string(),
            values: t
                .points
                .iter()
                .filter_map(|p| Some((end(p), p.value?)))
                .collect(),
            baseline: t
                .points
                .iter()
                .filter_map(|p| Some((end(p), p.baseline?)))
                .collect(),
        });
    }
    let events = read
        .events(false, None, MAX_EVENTS)
        .iter()
        .map(event_view)
        .collect();
    let mut notes = vec![format!(
        "Sparklines: share of targets up per {} s bin against its learned baseline.",
        snap.bin_secs
    )];
    // With no healthy vantage the banner at the top gives the reason instead.
    if countries.values().all(|c| c.status == Status::Unknown) && snap.vantage.healthy {
        notes.push(format!(
            "No verdict yet: the detector learns each signal's normal level first ({} s of data).",
            read.warmup_secs()
        ));
    }
    StatusView {
        generated_at: now,
        countries: countries.into_values().collect(),
        events,
        notes,
        agents: agent_views(&snap, &read.last_reports(), now),
        filter: String::new(),
        vantage: Some(VantageView {
            healthy: snap.vantage.healthy,
            agents: snap.vantage.agents,
            healthy_agents: snap.vantage.healthy_agents,
            control_ok: snap.vantage.control_ok,
            control_failed: snap.vantage.control_failed,
        }),
    }
}

/// An event as the pages and their JSON show it.
pub fn event_view(e: &blackout_detect::Event) -> EventView {
    EventView {
        entity: e.entity.to_string(),
        country: e.entity.country().to_string(),
        kind: e.kind.as_str().to_string(),
        severity: Status::from_gauge(e.severity.code() as f64),
        start: e.start,
        end: e.end,
        peak_drop: Some(e.peak_drop),
        evidence: Evidence {
            signals: e
                .evidence
                .signals
                .iter()
                .map(|s| s.as_str().to_string())
                .collect(),
            networks: e.evidence.networks.clone(),
            agents: e.evidence.agents.clone(),
            share_of_targets: Some(e.evidence.share_of_targets),
        },
    }
}

fn agent_views(
    snap: &blackout_detect::Snapshot,
    last: &std::collections::HashMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<AgentView> {
    let mut names: Vec<&String> = snap.agents.iter().map(|a| &a.agent).collect();
    names.extend(last.keys());
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| AgentView {
            agent: name.clone(),
            healthy: snap
                .at
                .and(snap.agents.iter().find(|a| &a.agent == name))
                .map(|a| a.healthy),
            last_report_age_secs: last.get(name).map(|t| (now - *t).num_seconds().max(0)),
        })
        .collect()
}

pub(crate) fn html(body: String) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                // Inline style only: nothing on the page loads or runs anything.
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
                ),
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn series(signal: &str, values: &[f64], baseline: &[f64]) -> SignalSeries {
        let pts = |v: &[f64]| {
            v.iter()
                .enumerate()
                .map(|(i, y)| (1_700_000_000 + 300 * i as i64, *y))
                .collect()
        };
        SignalSeries {
            signal: signal.into(),
            values: pts(values),
            baseline: pts(baseline),
        }
    }

    fn view() -> StatusView {
        StatusView {
            generated_at: t(3600),
            countries: vec![
                CountryStatus {
                    code: "UZ".into(),
                    name: "Uzbekistan".into(),
                    status: Status::Normal,
                    reason: None,
                    signals: vec![series("icmp", &[0.9, 0.91, 0.9], &[0.9, 0.9, 0.9])],
                },
                CountryStatus {
                    code: "KZ".into(),
                    name: "Kazakhstan".into(),
                    status: Status::Outage,
                    reason: None,
                    signals: vec![
                        series("dns", &[1.0, 0.0], &[]),
                        series("icmp", &[812.0, 800.0, 40.0], &[810.0, 810.0, 812.0]),
                    ],
                },
            ],
            events: vec![
                EventView {
                    entity: "KZ".into(),
                    country: "KZ".into(),
                    kind: "national_blackout".into(),
                    severity: Status::Outage,
                    start: t(600),
                    end: None,
                    peak_drop: Some(0.95),
                    evidence: Evidence {
                        signals: vec!["icmp".into(), "dns".into()],
                        networks: vec!["AS9198".into(), "AS29355".into()],
                        agents: vec!["fra-1".into(), "ams-2".into()],
                        share_of_targets: Some(0.93),
                    },
                },
                EventView {
                    entity: "UZ/AS8193".into(),
                    country: "UZ".into(),
                    kind: "partial".into(),
                    severity: Status::Warning,
                    start: t(0),
                    end: Some(t(1500)),
                    peak_drop: None,
                    evidence: Evidence::default(),
                },
            ],
            notes: vec![],
            vantage: None,
            agents: vec![],
            filter: String::new(),
        }
    }

    #[test]
    fn worst_country_first_and_events_split() {
        let html = render(&view());
        let kz = html.find("id=\"country-KZ\"").unwrap();
        let uz = html.find("id=\"country-UZ\"").unwrap();
        assert!(kz < uz, "outage before normal");
        let open = html.find("<h2>Open events</h2>").unwrap();
        let recent = html.find("<h2>Recent events</h2>").unwrap();
        let national = html.find("national blackout").unwrap();
        let partial = html.find("UZ/AS8193").unwrap();
        assert!(open < national && national < recent && recent < partial);
        // Evidence of the open event, and its age at generation time (3600 - 600 s).
        assert!(html.contains("AS9198, AS29355"));
        assert!(html.contains("fra-1, ams-2"));
        assert!(html.contains("<td>95%</td>"));
        assert!(html.contains("<td class=\"time\">50m</td>"));
        // The closed one: end and duration.
        assert!(html.contains("<td class=\"time\">25m</td>"));
        assert!(html.contains("<strong>1</strong> outage"));
        assert!(html.contains("<strong>1</strong> open events"));
    }

    #[test]
    fn filter_by_code_or_name_and_tiles_link_to_their_page() {
        let mut v = view();
        v.countries.push(CountryStatus {
            code: "AF".into(),
            name: "Afghanistan".into(),
            status: Status::Unknown,
            reason: Some("no_data".into()),
            signals: vec![],
        });
        let html = render(&v);
        let pos = |c: &str| html.find(&format!("id=\"country-{c}\"")).unwrap();
        assert!(
            pos("KZ") < pos("UZ") && pos("UZ") < pos("AF"),
            "no verdict last"
        );
        assert!(html.contains("href=\"/country/KZ\""));
        assert!(html.contains("<form class=\"filter\" method=\"get\" action=\"/\">"));
        for q in ["kz", " KZ ", "kazakh"] {
            v.filter = q.into();
            let html = render(&v);
            assert!(html.contains("id=\"country-KZ\""), "{q}");
            assert!(!html.contains("id=\"country-UZ\""), "{q}");
            assert!(html.contains("1 of 3 countries"), "{q}");
            // Counts and events stay those of every country.
            assert!(html.contains("<strong>1</strong> normal"));
        }
        v.filter = "\"><b>x".into();
        let html = render(&v);
        assert!(html.contains("id=\"no-match\""));
        assert!(!html.contains("<b>x"));
    }

    #[test]
    fn main_signal_prefers_icmp_and_draws_baseline() {
        let v = view();
        let kz = &v.countries[1];
        assert_eq!(main_signal(kz).unwrap().signal, "icmp");
        let svg = sparkline(main_signal(kz).unwrap());
        assert!(svg.contains("spark-baseline"));
        assert!(svg.contains("spark-value"));
        // Levels scale to their maximum: the drop to 40 of 812 sits near the bottom.
        let pts = svg.split("class=\"spark-value\" points=\"").nth(1).unwrap();
        let last_y: f64 = pts
            .split('"')
            .next()
            .unwrap()
            .split(' ')
            .next_back()
            .unwrap()
            .split(',')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert!(last_y > SPARK_H * 0.85, "{last_y}");
        let html = render(&v);
        assert!(html.contains("baseline 812"));
    }

    #[test]
    fn sparkline_edge_cases() {
        let empty = sparkline(&series("icmp", &[], &[]));
        assert!(empty.contains("no readings yet"));
        let one = sparkline(&series("icmp", &[0.5], &[]));
        assert!(one.contains("<circle") && !one.contains("polyline"));
        let nan = sparkline(&series("icmp", &[f64::NAN, 0.5, f64::INFINITY], &[]));
        assert!(!nan.contains("NaN") && !nan.contains("inf"));
        // A ratio scale keeps 100 % at the top even when every value is low.
        let low = sparkline(&series("icmp", &[0.1, 0.1], &[]));
        assert!(low.contains(",48.0"), "{low}");
    }

    #[test]
    fn names_and_ids_from_config_are_escaped() {
        let mut v = view();
        v.countries[0].name = "<script>alert(1)</script>".into();
        v.countries[0].code = "\"><img src=x onerror=alert(1)>".into();
        v.events[0].evidence.agents = vec!["a&b<i>".into()];
        v.events[0].entity = "KZ/'x'".into();
        v.notes = vec!["<b>note</b>".into()];
        v.countries[1].signals[0].signal = "<svg onload=x>".into();
        let html = render(&v);
        assert!(!html.contains("<script>"));
        assert!(!html.contains("<img"));
        assert!(!html.contains("<i>"));
        assert!(!html.contains("<b>note"));
        assert!(!html.contains("<svg onload"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("id=\"country-&quot;&gt;&lt;img src=x onerror=alert(1)&gt;\""));
        assert!(html.contains("a&amp;b&lt;i&gt;"));
        assert!(html.contains("KZ/&#39;x&#39;"));
    }

    #[test]
    fn a_silent_agent_is_named_at_the_top() {
        let mut v = view();
        v.agents = vec![
            AgentView {
                agent: "almaty-1".into(),
                healthy: Some(true),
                last_report_age_secs: Some(SILENT_AFTER_SECS + 240),
            },
            AgentView {
                agent: "fra-1".into(),
                healthy: Some(true),
                last_report_age_secs: Some(4),
            },
        ];
        let html = render(&v);
        let top = &html[..html.find("<main>").unwrap()];
        assert!(top.contains("Silent agents"), "{top}");
        assert!(top.contains("almaty-1 (last report 5m ago)"), "{top}");
        assert!(!top.contains("fra-1"));
        let agents = &html[html.find("<h2>Agents</h2>").unwrap()..];
        assert!(agents.contains("<td><strong>fra-1</strong></td>"));
        assert!(agents.contains("<td>4s ago</td>"));
        v.agents.truncate(0);
        assert!(!render(&v).contains("Silent agents"));
    }

    #[test]
    fn empty_view_says_so() {
        let html = render(&StatusView {
            generated_at: t(0),
            countries: vec![],
            events: vec![],
            notes: vec![],
            vantage: None,
            agents: vec![],
            filter: String::new(),
        });
        assert!(html.contains("No country is watched"));
        assert!(html.contains("No open events."));
        assert!(html.contains("No recent events."));
        assert!(html.starts_with("<!doctype html>"));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }

    #[test]
    fn status_from_gauge() {
        assert_eq!(Status::from_gauge(0.0), Status::Normal);
        assert_eq!(Status::from_gauge(1.0), Status::Warning);
        assert_eq!(Status::from_gauge(2.0), Status::Outage);
        assert_eq!(Status::from_gauge(1.5), Status::Unknown);
        assert_eq!(Status::from_gauge(-1.0), Status::Unknown);
        assert_eq!(Status::from_gauge(f64::NAN), Status::Unknown);
    }

    #[test]
    fn view_serde_round_trip() {
        let v = view();
        let json = serde_json::to_string(&v).unwrap();
        assert!(json.contains("\"severity\":\"outage\""));
        let back: StatusView = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v);
    }
}
