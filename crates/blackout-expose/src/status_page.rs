//! The status page at `/`: one self-contained HTML document (inline CSS and SVG, no script,
//! no CDN), readable offline and without Grafana.
//!
//! [`render`] is a pure function of a [`StatusView`] (maud templates: text is escaped by the
//! template, never by hand); [`view_from`] fills the view from the collector's read model
//! (verdicts, the detector's per-bin values against baselines, events).

use std::collections::BTreeMap;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{Markup, PreEscaped, html};
use serde::{Deserialize, Serialize};

use blackout_collector::ReadModel;
use blackout_collector::silence::is_silent;
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
    /// Its last report is older than its declared report interval allows
    /// (`blackout_collector::silence`, the rule `blackout_agent_silent` follows).
    #[serde(default)]
    pub silent: bool,
}

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
    /// How: routes_withdrawn, traffic_blocked, service_blocking, throttling; None when
    /// unknown (no BGP data for a reachability event).
    #[serde(default)]
    pub mechanism: Option<String>,
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
    /// Lowest visible share of the entity's space in BGP during the event.
    #[serde(default)]
    pub bgp_lowest_share: Option<f64>,
    /// Prefixes withdrawn, as the BGP sources reported them.
    #[serde(default)]
    pub prefixes_withdrawn: Option<u32>,
    /// Some of them (`192.0.2.0/24`), and the peers that saw it (`AS64500 192.0.2.1`).
    #[serde(default)]
    pub withdrawn_examples: Vec<String>,
    #[serde(default)]
    pub bgp_peers: Vec<String>,
    /// When the first withdrawal was heard.
    #[serde(default)]
    pub first_withdrawal_at: Option<DateTime<Utc>>,
}

impl Evidence {
    /// The BGP evidence in one sentence, when there is some.
    pub fn bgp_text(&self) -> Option<String> {
        let n = self.prefixes_withdrawn?;
        let mut s = format!("{n} prefixes withdrawn");
        if !self.bgp_peers.is_empty() {
            s += &format!(", seen by {}", self.bgp_peers.join(", "));
        }
        if let Some(t) = self.first_withdrawal_at {
            s += &format!(", first at {}", rfc3339(t));
        }
        if let Some(v) = self.bgp_lowest_share {
            s += &format!("; lowest visible share {}", percent(v));
        }
        Some(s)
    }
}

/// Which signal stands for a country when only one sparkline fits: ICMP blocks cover the
/// address space, TCP is next where ICMP is filtered, then the services.
pub const MAIN_SIGNALS: [&str; 4] = ["icmp", "tcp", "dns", "http"];

pub(crate) const CSS: &str = include_str!("assets/status.css");

const SPARK_W: f64 = 240.0;
const SPARK_H: f64 = 56.0;

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
    sparkline_markup(s).into_string()
}

fn sparkline_markup(s: &SignalSeries) -> Markup {
    let pts = |v: &[(i64, f64)]| -> Vec<(i64, f64)> {
        v.iter().copied().filter(|(_, y)| y.is_finite()).collect()
    };
    let values = pts(&s.values);
    let baseline = pts(&s.baseline);
    let (mut t0, mut t1, mut ymax) = (i64::MAX, i64::MIN, 0.0f64);
    for (t, y) in values.iter().chain(baseline.iter()) {
        t0 = t0.min(*t);
        t1 = t1.max(*t);
        ymax = ymax.max(*y);
    }
    // Ratios live in 0..1: keep that scale so 100 % is always the top. Levels (counts of
    // responsive blocks) scale to their largest value.
    let top = if ymax <= 1.0 { 1.0 } else { ymax * 1.05 };
    let span = if t1 > t0 { (t1 - t0) as f64 } else { 1.0 };
    let pad = 3.0;
    let x = |t: i64| pad + (t - t0) as f64 / span * (SPARK_W - 2.0 * pad);
    let y = |v: f64| pad + (1.0 - (v / top).clamp(0.0, 1.0)) * (SPARK_H - 2.0 * pad);
    let line = |v: &[(i64, f64)]| {
        v.iter()
            .map(|(t, val)| format!("{:.1},{:.1}", x(*t), y(*val)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let f1 = |v: f64| format!("{v:.1}");
    let label = format!("{} over time", s.signal);
    html! {
        svg class="spark" viewBox={"0 0 " (SPARK_W) " " (SPARK_H)} width=(SPARK_W) height=(SPARK_H) role="img" aria-label=(label) {
            @if values.is_empty() && baseline.is_empty() {
                text x="4" y="32" class="spark-empty" { "no readings yet" }
            } @else {
                line class="spark-axis" x1="0" y1=(f1(y(0.0))) x2=(SPARK_W) y2=(f1(y(0.0))) {}
                @if !baseline.is_empty() {
                    polyline class="spark-baseline" points=(line(&baseline)) {}
                }
                @if values.len() == 1 {
                    circle class="spark-dot"
                        cx=(f1(if baseline.is_empty() { SPARK_W / 2.0 } else { x(values[0].0) }))
                        cy=(f1(y(values[0].1))) r="3" {}
                } @else if let (Some(first), Some(last)) = (values.first(), values.last()) {
                    polygon class="spark-area" points={(line(&values)) " " (f1(x(last.0))) "," (f1(y(0.0))) " " (f1(x(first.0))) "," (f1(y(0.0)))} {}
                    polyline class="spark-value" points=(line(&values)) {}
                    circle class="spark-dot" cx=(f1(x(last.0))) cy=(f1(y(last.1))) r="2.5" {}
                }
            }
        }
    }
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

fn country_tile(c: &CountryStatus) -> Markup {
    let st = c.status.as_str();
    let main = main_signal(c);
    let chips: Vec<(&str, String)> = c
        .signals
        .iter()
        .filter_map(|s| latest(&s.values).map(|v| (s.signal.as_str(), value_text(v))))
        .collect();
    let span = main.and_then(|s| {
        let first = s.values.iter().chain(&s.baseline).map(|(t, _)| *t).min()?;
        let last = s.values.iter().chain(&s.baseline).map(|(t, _)| *t).max()?;
        (last > first).then(|| duration_text(last - first))
    });
    let href = format!("/country/{}", c.code);
    html! {
        article class={"tile " (st)} id={"country-" (c.code)} {
            header {
                a class="code" href=(href) { (c.code) }
                a class="name" href=(href) { (c.name) }
                span class={"badge " (st)} { (c.status.label()) }
            }
            @if let Some(r) = &c.reason {
                div class="reason muted" { "no verdict: " (r.replace('_', " ")) }
            }
            @if let Some(s) = main {
                div class="main" {
                    span class="sig" { (s.signal) } " "
                    strong { (latest(&s.values).map(value_text).unwrap_or_default()) }
                    span class="muted" {
                        (latest(&s.baseline)
                            .map(|b| format!(" · baseline {}", value_text(b)))
                            .unwrap_or_else(|| " · no baseline yet".to_string()))
                    }
                }
                (sparkline_markup(s))
            } @else {
                div class="main muted" { "no readings yet" }
            }
            @if !chips.is_empty() || span.is_some() {
                ul class="chips" {
                    @for (sig, v) in &chips {
                        li { span class="sig" { (sig) } " " (v) }
                    }
                    @if let Some(d) = &span {
                        li class="span" title="sparkline span" { "last " (d) }
                    }
                }
            }
        }
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "—".to_string()
    } else {
        v.join(", ")
    }
}

fn events_table(events: &[&EventView], now: DateTime<Utc>, open: bool) -> Markup {
    let pct = |v: Option<f64>| v.map(percent).unwrap_or_else(|| "—".into());
    html! {
        table class="events" {
            thead { tr {
                th { "entity" } th { "kind" } th { "severity" } th { "start" }
                @if open { th { "for" } } @else { th { "end" } th { "lasted" } }
                th { "peak drop" } th { "signals" } th { "networks" } th { "agents" } th { "targets down" }
            } }
            tbody {
                @for e in events {
                    tr class=(e.severity.as_str()) {
                        td { strong { (e.entity) } }
                        td { (e.kind.replace('_', " ")) }
                        td { span class={"badge " (e.severity.as_str())} { (e.severity.label()) } }
                        td class="time" { (rfc3339(e.start)) }
                        @match e.end {
                            Some(end) if !open => {
                                td class="time" { (rfc3339(end)) }
                                td class="time" { (duration_text((end - e.start).num_seconds())) }
                            }
                            _ => { td class="time" { (duration_text((now - e.start).num_seconds())) } }
                        }
                        td { (pct(e.peak_drop)) }
                        td { (list(&e.evidence.signals)) }
                        td { (list(&e.evidence.networks)) }
                        td { (list(&e.evidence.agents)) }
                        td { (pct(e.evidence.share_of_targets)) }
                    }
                }
            }
        }
    }
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
    let silent: Vec<&AgentView> = view.agents.iter().filter(|a| a.silent).collect();
    let silent_names = silent
        .iter()
        .map(|a| {
            format!(
                "{} (last report {} ago)",
                a.agent,
                duration_text(a.last_report_age_secs.unwrap_or_default())
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let filter = view.filter.trim();
    let page = html! {
        (DOCTYPE_LOWER)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content="60";
                title { "blackout status" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header class="top" {
                    h1 { "blackout" }
                    p class="muted" { "Internet shutdowns, as seen by this collector's agents · generated " (rfc3339(view.generated_at)) }
                    ul class="summary" {
                        li class="outage" { strong { (count(Status::Outage)) } " outage" }
                        li class="warning" { strong { (count(Status::Warning)) } " warning" }
                        li class="normal" { strong { (count(Status::Normal)) } " normal" }
                        li class="unknown" { strong { (count(Status::Unknown)) } " no data" }
                        li { strong { (open.len()) } " open events" }
                    }
                }
                @if let Some(v) = view.vantage.as_ref().filter(|v| !v.healthy) {
                    p class="alert vantage" id="vantage" {
                        strong { "No healthy vantage point" }
                        " (reason: no_healthy_vantage): the agents' own connectivity fails, so nothing is known about the countries they watch and every verdict is unknown. Controls answering: "
                        (v.control_ok) " of " (v.control_ok + v.control_failed) "; agents healthy: " (v.healthy_agents) " of " (v.agents) "."
                    }
                }
                @if !silent.is_empty() {
                    p class="alert silent" id="silent" {
                        strong { "Silent agents" } ": " (silent_names)
                        ". Their observations wait in their spools until they reach the collector again."
                    }
                }
                @for n in &view.notes { p class="note" { (n) } }
                main {
                    section {
                        h2 { "Countries" }
                        form class="filter" method="get" action="/" {
                            label { "Country name or code " input type="search" name="q" value=(filter) placeholder="e.g. kz or kazakh"; }
                            " " button type="submit" { "Filter" }
                            @if !q.is_empty() {
                                " " a href="/" { "show all" } " "
                                span class="muted" { (countries.len()) " of " (view.countries.len()) " countries" }
                            }
                        }
                        @if view.countries.is_empty() {
                            p class="muted" { "No country is watched: the catalog is empty." }
                        } @else if countries.is_empty() {
                            p class="muted" id="no-match" { "No country matches \"" (filter) "\"." }
                        } @else {
                            div class="legend" {
                                span class="swatch normal" {} "normal " span class="swatch warning" {} "warning "
                                span class="swatch outage" {} "outage " span class="swatch unknown" {} "no data · "
                                svg width="28" height="8" { line class="spark-value" x1="0" y1="4" x2="28" y2="4" {} }
                                " main signal "
                                svg width="28" height="8" { line class="spark-baseline" x1="0" y1="4" x2="28" y2="4" {} }
                                " baseline"
                            }
                            div class="grid" { @for c in &countries { (country_tile(c)) } }
                        }
                    }
                    section {
                        h2 { "Open events" }
                        @if open.is_empty() { p class="muted" { "No open events." } }
                        @else { (events_table(&open, view.generated_at, true)) }
                    }
                    section {
                        h2 { "Recent events" }
                        @if closed.is_empty() { p class="muted" { "No recent events." } }
                        @else { (events_table(&closed, view.generated_at, false)) }
                    }
                    section id="agents" {
                        h2 { "Agents" }
                        @if view.agents.is_empty() {
                            p class="muted" { "No agent has reported yet." }
                        } @else {
                            table {
                                thead { tr { th { "agent" } th { "health" } th { "last report" } } }
                                tbody {
                                    @for a in &view.agents {
                                        tr {
                                            td { strong { (a.agent) } }
                                            td {
                                                @match a.healthy {
                                                    Some(true) => span class="normal" { "healthy" },
                                                    Some(false) => span class="outage" { "unhealthy (controls fail or silent)" },
                                                    None => span class="muted" { "not judged yet" },
                                                }
                                            }
                                            td {
                                                (a.last_report_age_secs
                                                    .map(|s| format!("{} ago", duration_text(s)))
                                                    .unwrap_or_else(|| "never".into()))
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                footer class="muted" {
                    "Machine-readable: " a href="/metrics" { "/metrics" } " · "
                    a href="/api/v1/catalog" { "/api/v1/catalog" }
                    " · status values: 0 normal, 1 warning, 2 outage (" (super::names::COUNTRY_STATUS) ")"
                }
            }
        }
    };
    page.into_string()
}

/// `<!doctype html>`, as the page has always begun.
const DOCTYPE_LOWER: PreEscaped<&str> = PreEscaped("<!doctype html>");

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
            "No verdict yet: the detector learns each signal's normal level first ({} s of data for reachability, {} s for latency and loss).",
            read.first_verdict_secs(),
            read.warmup_secs()
        ));
    }
    StatusView {
        generated_at: now,
        countries: countries.into_values().collect(),
        events,
        notes,
        agents: agent_views(&snap, &read.last_reports(), &read.upload_intervals(), now),
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
        mechanism: e.mechanism.map(|m| m.as_str().to_string()),
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
            bgp_lowest_share: e.evidence.bgp_lowest_share,
            prefixes_withdrawn: e
                .evidence
                .bgp_withdrawals
                .as_ref()
                .map(|w| w.prefixes_withdrawn),
            withdrawn_examples: e
                .evidence
                .bgp_withdrawals
                .as_ref()
                .map(|w| w.examples.clone())
                .unwrap_or_default(),
            bgp_peers: e
                .evidence
                .bgp_withdrawals
                .as_ref()
                .map(|w| w.peers.clone())
                .unwrap_or_default(),
            first_withdrawal_at: e
                .evidence
                .bgp_withdrawals
                .as_ref()
                .map(|w| w.first_withdrawal_at),
        },
    }
}

fn agent_views(
    snap: &blackout_detect::Snapshot,
    last: &std::collections::HashMap<String, DateTime<Utc>>,
    intervals: &std::collections::HashMap<String, u32>,
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
            silent: last
                .get(name)
                .is_some_and(|t| is_silent(*t, now, intervals.get(name).copied())),
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
                    mechanism: Some("traffic_blocked".into()),
                    evidence: Evidence {
                        signals: vec!["icmp".into(), "dns".into()],
                        networks: vec!["AS9198".into(), "AS29355".into()],
                        agents: vec!["fra-1".into(), "ams-2".into()],
                        share_of_targets: Some(0.93),
                        ..Evidence::default()
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
                    mechanism: None,
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
        // A single quote needs no escaping in element content or in attributes quoted
        // with double quotes, which is all maud writes.
        assert!(html.contains("<td><strong>KZ/'x'</strong></td>"));
    }

    #[test]
    fn a_silent_agent_is_named_at_the_top() {
        let mut v = view();
        v.agents = vec![
            AgentView {
                agent: "almaty-1".into(),
                healthy: Some(true),
                last_report_age_secs: Some(300),
                silent: true,
            },
            AgentView {
                agent: "fra-1".into(),
                healthy: Some(true),
                last_report_age_secs: Some(4),
                silent: false,
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
    fn silence_is_judged_against_each_agents_declared_interval() {
        let now = Utc::now();
        let snap = blackout_detect::Engine::new(Default::default()).snapshot();
        let two_minutes_ago = now - chrono::Duration::seconds(120);
        let last: std::collections::HashMap<String, DateTime<Utc>> = [
            ("rare".to_string(), two_minutes_ago),
            ("default".to_string(), two_minutes_ago),
            ("undeclared".to_string(), two_minutes_ago),
            ("fresh".to_string(), now),
        ]
        .into();
        let intervals: std::collections::HashMap<String, u32> =
            [("rare".to_string(), 300), ("default".to_string(), 5)].into();
        let silent: Vec<String> = agent_views(&snap, &last, &intervals, now)
            .into_iter()
            .filter(|a| a.silent)
            .map(|a| a.agent)
            .collect();
        // Two minutes is not silence for an agent that reports every five.
        assert_eq!(silent, ["default", "undeclared"]);
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
