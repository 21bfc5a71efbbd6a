//! The page of one country at `/country/CC` and its JSON at `/api/v1/country/CC`: the
//! verdict and why (or why none), each signal against its baseline over the last 24 hours
//! and 7 days (inline SVG drawn here, no script), the country's networks and regions worst
//! first, and its events with their evidence.
//!
//! [`view_from`] fills a [`CountryView`] from the collector's read model (the detector's
//! snapshot, its per-bin trails and its events); [`render`] is a pure function of it.

use chrono::{DateTime, Duration, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::{Deserialize, Serialize};

use blackout_collector::ReadModel;
use blackout_detect::{EntityKey, EntitySnapshot, NoVerdict, SeriesTrail, Snapshot};

use crate::status_page::{
    CSS, EventView, Status, VantageView, duration_text, event_view, percent, rfc3339, value_text,
};

/// The short window of the charts.
pub const DAY_SECS: i64 = 86_400;
/// The long window: all the detector keeps ([`blackout_detect::TRAIL_SECS`]).
pub const WEEK_SECS: i64 = blackout_detect::TRAIL_SECS as i64;
/// Events of the country shown: the open ones and the most recent closed ones.
pub const MAX_EVENTS: usize = 50;

/// Everything the country page shows; also the body of `/api/v1/country/CC`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountryView {
    pub generated_at: DateTime<Utc>,
    /// ISO 3166 alpha-2.
    pub code: String,
    pub name: String,
    pub status: Status,
    /// Why there is no verdict (`no_data`, `warm_up`, `no_healthy_vantage`); None with one.
    pub reason: Option<String>,
    /// The verdict or its absence in sentences, for people.
    pub why: Vec<String>,
    /// The kind of the country's current condition (`national_blackout`, ...), if any.
    pub kind: Option<String>,
    pub bin_secs: u64,
    pub signals: Vec<CountrySignal>,
    /// Networks (`KZ/AS9198`) and regions (`KZ/Almaty`), worst first.
    pub parts: Vec<PartView>,
    /// Open events, then recently closed ones, newest first within each.
    pub events: Vec<EventView>,
    pub vantage: Option<VantageView>,
}

/// One signal of the country: its latest reading and its trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountrySignal {
    pub signal: String,
    /// Share of targets up in the last closed bin.
    pub value: Option<f64>,
    pub baseline: Option<f64>,
    /// value / baseline.
    pub ratio: Option<f64>,
    /// None during warm-up.
    pub state: Option<Status>,
    pub targets: u32,
    pub targets_down: u32,
    /// Per bin over the last [`WEEK_SECS`], oldest first (the 24-hour chart is its tail).
    pub points: Vec<Point>,
}

/// One bin: its start (Unix seconds), the value as measured and its baseline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub t: i64,
    pub value: Option<f64>,
    pub baseline: Option<f64>,
}

/// A network or region of the country.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartView {
    /// `KZ/AS9198` or `KZ/Almaty`.
    pub entity: String,
    /// `network` or `region`.
    pub part: String,
    pub status: Status,
    pub reason: Option<String>,
    /// The lowest value / baseline over its signals.
    pub ratio: Option<f64>,
    /// The signal of that ratio.
    pub signal: Option<String>,
    pub targets: u32,
    pub targets_down: u32,
}

fn status_of(e: &EntitySnapshot) -> (Status, Option<String>) {
    match e.no_verdict {
        None => (Status::from_gauge(e.state.code() as f64), None),
        Some(why) => (Status::Unknown, Some(why.as_str().to_string())),
    }
}

fn points(t: &SeriesTrail) -> Vec<Point> {
    t.points
        .iter()
        .map(|p| Point {
            t: p.start.timestamp(),
            value: p.value,
            baseline: p.baseline,
        })
        .collect()
}

/// The worst (value / baseline) of an entity's signals and which signal it is.
fn worst_ratio(e: &EntitySnapshot) -> (Option<f64>, Option<String>) {
    e.signals
        .iter()
        .filter_map(|s| Some((s.ratio?, s.signal.as_str().to_string())))
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map_or((None, None), |(r, s)| (Some(r), Some(s)))
}

/// Sentences that say why the country has its verdict, or why it has none.
fn why(
    snap: &Snapshot,
    entity: Option<&EntitySnapshot>,
    reason: Option<NoVerdict>,
    (first_secs, warmup_secs): (u64, u64),
) -> Vec<String> {
    let v = &snap.vantage;
    match reason {
        Some(NoVerdict::NoData) => {
            return vec![
                "No verdict: no reading of this country's targets has reached the detector yet."
                    .into(),
            ];
        }
        Some(NoVerdict::WarmUp) => {
            return vec![format!(
                "No verdict yet: the detector learns each signal's normal level first ({first_secs} s of data for reachability, {warmup_secs} s for latency and loss)."
            )];
        }
        Some(NoVerdict::NoHealthyVantage) => {
            return vec![format!(
                "No verdict: no healthy vantage point observed this country in the last bin (controls answering: {} of {}; agents healthy: {} of {}).",
                v.control_ok,
                v.control_ok + v.control_failed,
                v.healthy_agents,
                v.agents
            )];
        }
        None => {}
    }
    let Some(e) = entity else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for s in &e.signals {
        let (Some(value), Some(base), Some(state)) = (s.value, s.baseline, s.state) else {
            continue;
        };
        if s.signal == blackout_model::observation::Signal::Bgp {
            out.push(format!(
                "bgp: {} of the address space visible to the route collectors' peers against a baseline of {} ({} of it): {}.",
                value_text(value),
                value_text(base),
                percent(value / base.max(1e-9)),
                Status::from_gauge(state.code() as f64).label(),
            ));
            continue;
        }
        out.push(format!(
            "{}: {} of targets up against a baseline of {} ({} of it), {} of {} targets down: {}.",
            s.signal.as_str(),
            value_text(value),
            value_text(base),
            percent(value / base.max(1e-9)),
            s.targets_down,
            s.targets,
            Status::from_gauge(state.code() as f64).label(),
        ));
        if s.throttled {
            out.push(format!(
                "{}: latency or loss far above its baseline (RTT ratio {}).",
                s.signal.as_str(),
                s.rtt_ratio.map_or("—".into(), |r| format!("{r:.1}")),
            ));
        }
    }
    if let Some(k) = e.kind {
        let how = match e.mechanism {
            Some(blackout_detect::Mechanism::RoutesWithdrawn) => {
                " Routes withdrawn: BGP lost the country's address space."
            }
            Some(blackout_detect::Mechanism::TrafficBlocked) => {
                " Traffic blocked: BGP still carries the routes while probes fail."
            }
            _ => "",
        };
        out.insert(
            0,
            format!(
                "{}: {}.{how}",
                Status::from_gauge(e.state.code() as f64).label(),
                k.as_str().replace('_', " ")
            ),
        );
    } else if e.state == blackout_detect::State::Normal {
        out.insert(0, "normal: every signal near its baseline.".into());
    }
    out.push(format!(
        "Vantage: {} of {} agents healthy in the last bin.",
        v.healthy_agents, v.agents
    ));
    out
}

/// The view of `code` (upper-cased), or None when the catalog does not watch it.
pub fn view_from(read: &ReadModel, code: &str, now: DateTime<Utc>) -> Option<CountryView> {
    let code = code.to_ascii_uppercase();
    let catalog = read.catalog();
    let file = catalog
        .files
        .iter()
        .find(|f| !f.control && f.country == code)?;
    let name = file.name.clone().unwrap_or_else(|| code.clone());
    let snap = read.verdicts();
    let own = snap
        .entities
        .iter()
        .find(|e| matches!(&e.entity, EntityKey::Country(c) if *c == code));
    let reason = match own {
        Some(e) => e.no_verdict,
        None => Some(snap.no_verdict_unseen(&code)),
    };
    let status = match (own, reason) {
        (Some(e), None) => Status::from_gauge(e.state.code() as f64),
        _ => Status::Unknown,
    };
    let trails = read.trails(
        |e| e.country() == code && e.is_country(),
        now - Duration::seconds(WEEK_SECS),
    );
    let signals = own
        .map(|e| e.signals.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|s| CountrySignal {
            signal: s.signal.as_str().to_string(),
            value: s.value,
            baseline: s.baseline,
            ratio: s.ratio,
            state: s.state.map(|st| Status::from_gauge(st.code() as f64)),
            targets: s.targets,
            targets_down: s.targets_down,
            points: trails
                .iter()
                .find(|t| t.signal == s.signal)
                .map(points)
                .unwrap_or_default(),
        })
        .collect();
    let mut parts: Vec<PartView> = snap
        .entities
        .iter()
        .filter(|e| e.entity.country() == code && !e.entity.is_country())
        .map(|e| {
            let (status, reason) = status_of(e);
            let (ratio, signal) = worst_ratio(e);
            PartView {
                entity: e.entity.to_string(),
                part: match e.entity {
                    EntityKey::Asn { .. } => "network",
                    _ => "region",
                }
                .to_string(),
                status,
                reason,
                ratio,
                signal,
                targets: e.signals.iter().map(|s| s.targets).max().unwrap_or(0),
                targets_down: e.signals.iter().map(|s| s.targets_down).max().unwrap_or(0),
            }
        })
        .collect();
    // Worst first: state, then how far below its baseline; no verdict last.
    parts.sort_by(|a, b| {
        b.status
            .cmp(&a.status)
            .then(
                a.ratio
                    .unwrap_or(f64::MAX)
                    .total_cmp(&b.ratio.unwrap_or(f64::MAX)),
            )
            .then(a.entity.cmp(&b.entity))
    });
    let mut events: Vec<EventView> = read
        .events(false, Some(&code), MAX_EVENTS)
        .iter()
        .map(event_view)
        .collect();
    events.sort_by(|a, b| {
        a.end
            .is_some()
            .cmp(&b.end.is_some())
            .then(b.start.cmp(&a.start))
    });
    Some(CountryView {
        generated_at: now,
        why: why(
            &snap,
            own,
            reason,
            (read.first_verdict_secs(), read.warmup_secs()),
        ),
        kind: own.and_then(|e| e.kind).map(|k| k.as_str().to_string()),
        code,
        name,
        status,
        reason: reason.map(|r| r.as_str().to_string()),
        bin_secs: snap.bin_secs,
        signals,
        parts,
        events,
        vantage: Some(VantageView {
            healthy: snap.vantage.healthy,
            agents: snap.vantage.agents,
            healthy_agents: snap.vantage.healthy_agents,
            control_ok: snap.vantage.control_ok,
            control_failed: snap.vantage.control_failed,
        }),
    })
}

const CHART_W: f64 = 720.0;
const CHART_H: f64 = 150.0;
/// Left margin for the scale's labels, and the others.
const PAD_L: f64 = 44.0;
const PAD: f64 = 8.0;
const PAD_B: f64 = 20.0;

/// At most this many points per line: a chart is 720 px wide.
const MAX_POINTS: usize = 720;

/// Buckets of consecutive points, each drawn as its lowest value (a short drop stays
/// visible) and its mean baseline.
fn thin(points: &[Point]) -> Vec<Point> {
    if points.len() <= MAX_POINTS {
        return points.to_vec();
    }
    let size = points.len().div_ceil(MAX_POINTS);
    points
        .chunks(size)
        .map(|c| {
            let vals = c.iter().filter_map(|p| p.value);
            let bases: Vec<f64> = c.iter().filter_map(|p| p.baseline).collect();
            Point {
                t: c[0].t,
                value: vals.reduce(f64::min),
                baseline: (!bases.is_empty())
                    .then(|| bases.iter().sum::<f64>() / bases.len() as f64),
            }
        })
        .collect()
}

/// Runs of consecutive bins that have a value: a gap in the data is a gap in the line.
fn runs(points: &[(i64, f64)], gap: i64) -> Vec<&[(i64, f64)]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=points.len() {
        if i == points.len() || points[i].0 - points[i - 1].0 > gap {
            out.push(&points[start..i]);
            start = i;
        }
    }
    out.retain(|r| !r.is_empty());
    out
}

/// A line chart of one signal over `[to - span, to]`: the value solid, the baseline
/// dashed, the country's events shaded, on a scale from 0 (shares: 0 to 100 %).
pub fn chart(
    signal: &str,
    points: &[Point],
    to: i64,
    span: i64,
    bin_secs: u64,
    events: &[EventView],
) -> Markup {
    let window = span;
    let pts: Vec<Point> = points
        .iter()
        .copied()
        .filter(|p| p.t >= to - span && p.t <= to)
        .collect();
    // A young collector's data fills the width: the axis starts at its first bin, and
    // its label says how far back that is.
    let from = pts.first().map_or(to - span, |p| p.t.max(to - span));
    let span = (to - from).max(1);
    // Thinned, a point stands for `size` bins.
    let size = pts.len().div_ceil(MAX_POINTS).max(1) as i64;
    let pts = thin(&pts);
    let fin = |v: Option<f64>| v.filter(|v| v.is_finite());
    let values: Vec<(i64, f64)> = pts
        .iter()
        .filter_map(|p| Some((p.t, fin(p.value)?)))
        .collect();
    let baseline: Vec<(i64, f64)> = pts
        .iter()
        .filter_map(|p| Some((p.t, fin(p.baseline)?)))
        .collect();
    let ymax = values
        .iter()
        .chain(&baseline)
        .map(|(_, v)| *v)
        .fold(0.0f64, f64::max);
    let top = if ymax <= 1.0 { 1.0 } else { ymax * 1.05 };
    let x = |t: i64| PAD_L + (t - from) as f64 / span.max(1) as f64 * (CHART_W - PAD_L - PAD);
    let y = |v: f64| PAD + (1.0 - (v / top).clamp(0.0, 1.0)) * (CHART_H - PAD - PAD_B);
    let line = |r: &[(i64, f64)]| {
        r.iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let gap = 2 * size * (bin_secs as i64).max(1);
    let top_label = if top == 1.0 {
        "100%".to_string()
    } else {
        format!("{top:.0}")
    };
    let shaded: Vec<(f64, f64, &str)> = events
        .iter()
        .filter(|e| e.end.is_none_or(|end| end.timestamp() > from) && e.start.timestamp() < to)
        .map(|e| {
            let a = x(e.start.timestamp().max(from));
            let b = x(e.end.map_or(to, |end| end.timestamp().min(to)));
            (a, (b - a).max(1.5), e.severity.as_str())
        })
        .collect();
    let label = format!("{signal} against its baseline over the last {}", ago(span));
    html! {
        svg class="chart" viewBox={"0 0 " (CHART_W) " " (CHART_H)} width=(CHART_W) height=(CHART_H)
            role="img" aria-label=(label) data-signal=(signal) data-window=(window) {
            @for (a, w, sev) in &shaded {
                rect class={"chart-event " (sev)} x={(format!("{a:.1}"))} y=(PAD)
                    width={(format!("{w:.1}"))} height={(CHART_H - PAD - PAD_B)} {}
            }
            line class="chart-axis" x1=(PAD_L) y1=(y(0.0)) x2={(CHART_W - PAD)} y2=(y(0.0)) {}
            line class="chart-grid" x1=(PAD_L) y1=(y(top)) x2={(CHART_W - PAD)} y2=(y(top)) {}
            text class="chart-label" x={(PAD_L - 4.0)} y={(y(top) + 4.0)} text-anchor="end" { (top_label) }
            text class="chart-label" x={(PAD_L - 4.0)} y={(y(0.0) + 4.0)} text-anchor="end" { "0" }
            text class="chart-label" x=(PAD_L) y={(CHART_H - 4.0)} { "−" (ago(span)) }
            text class="chart-label" x={(CHART_W - PAD)} y={(CHART_H - 4.0)} text-anchor="end" { "now" }
            @if values.is_empty() && baseline.is_empty() {
                text class="chart-empty" x={(CHART_W / 2.0)} y={(CHART_H / 2.0)} text-anchor="middle" { "no readings in this window" }
            }
            @for r in runs(&baseline, gap) {
                polyline class="chart-baseline" points=(line(r)) {}
            }
            @for r in runs(&values, gap) {
                @if r.len() == 1 {
                    circle class="chart-dot" cx={(format!("{:.1}", x(r[0].0)))} cy={(format!("{:.1}", y(r[0].1)))} r="2.5" {}
                } @else {
                    polyline class="chart-value" points=(line(r)) {}
                }
            }
        }
    }
}

/// How far back the left end of a chart is: whole days or hours when it is one.
fn ago(secs: i64) -> String {
    match secs {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s => duration_text(s),
    }
}

fn badge(s: Status) -> Markup {
    html! { span class={"badge " (s.as_str())} { (s.label()) } }
}

fn ratio_text(r: Option<f64>) -> String {
    r.map_or_else(|| "—".to_string(), percent)
}

fn events_table(events: &[&EventView], now: DateTime<Utc>) -> Markup {
    html! {
        table class="events" {
            thead { tr {
                th { "entity" } th { "kind" } th { "how" } th { "severity" } th { "start" } th { "end" }
                th { "lasted" } th { "peak drop" } th { "signals" } th { "networks" }
                th { "agents" } th { "targets down" }
            } }
            tbody {
                @for e in events {
                    tr class=(e.severity.as_str()) {
                        td { strong { (e.entity) } }
                        td { (e.kind.replace('_', " ")) }
                        td class="mechanism" {
                            (e.mechanism.as_deref().map_or("unknown".to_string(), |m| m.replace('_', " ")))
                            @if let Some(b) = e.evidence.bgp_text() { br; small { (b) } }
                        }
                        td { (badge(e.severity)) }
                        td class="time" { (rfc3339(e.start)) }
                        td class="time" { (e.end.map_or_else(|| "open".to_string(), rfc3339)) }
                        td class="time" { (duration_text((e.end.unwrap_or(now) - e.start).num_seconds())) }
                        td { (ratio_text(e.peak_drop)) }
                        td { (join(&e.evidence.signals)) }
                        td { (join(&e.evidence.networks)) }
                        td { (join(&e.evidence.agents)) }
                        td { (ratio_text(e.evidence.share_of_targets)) }
                    }
                }
            }
        }
    }
}

fn join(v: &[String]) -> String {
    if v.is_empty() {
        "—".into()
    } else {
        v.join(", ")
    }
}

/// The whole country page.
pub fn render(v: &CountryView) -> String {
    let now = v.generated_at.timestamp();
    let open: Vec<&EventView> = v.events.iter().filter(|e| e.end.is_none()).collect();
    let closed: Vec<&EventView> = v.events.iter().filter(|e| e.end.is_some()).collect();
    let st = v.status.as_str();
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content="60";
                title { (v.code) " · " (v.name) " · blackout" }
                style { (PreEscaped(CSS)) }
            }
            body {
                header class="top" {
                    p class="back" { a href="/" { "← all countries" } }
                    h1 { span class="code" { (v.code) } " " (v.name) " " span class={"badge " (st)} id="verdict" { (v.status.label()) } }
                    p class="muted" { "generated " (rfc3339(v.generated_at)) " · bins of " (v.bin_secs) " s" }
                }
                @if let Some(vt) = v.vantage.as_ref().filter(|vt| !vt.healthy) {
                    p class="alert vantage" id="vantage" {
                        strong { "No healthy vantage point" } " (reason: no_healthy_vantage): controls answering "
                        (vt.control_ok) " of " (vt.control_ok + vt.control_failed) "; agents healthy "
                        (vt.healthy_agents) " of " (vt.agents) "."
                    }
                }
                main {
                    section id="why" class={"verdict " (st)} {
                        h2 { "Verdict" }
                        @if let Some(k) = &v.kind { p class="kind" { strong { (k.replace('_', " ")) } } }
                        ul { @for w in &v.why { li { (w) } } }
                    }
                    section id="signals" {
                        h2 { "Signals against their baselines" }
                        div class="legend" {
                            svg width="28" height="8" { line class="chart-value" x1="0" y1="4" x2="28" y2="4" {} }
                            " value (share of targets up) "
                            svg width="28" height="8" { line class="chart-baseline" x1="0" y1="4" x2="28" y2="4" {} }
                            " baseline "
                            span class="swatch outage" {} " event"
                        }
                        @if v.signals.is_empty() {
                            p class="muted" { "No readings yet." }
                        }
                        @for s in &v.signals {
                            article class="signal" id={"signal-" (s.signal)} {
                                h3 {
                                    span class="sig" { (s.signal) } " "
                                    strong { (s.value.map_or_else(|| "—".into(), value_text)) }
                                    span class="muted" {
                                        " · baseline " (s.baseline.map_or_else(|| "not learned yet".into(), value_text))
                                        " · " (s.targets_down) " of " (s.targets) " targets down "
                                    }
                                    (badge(s.state.unwrap_or(Status::Unknown)))
                                }
                                div class="charts" {
                                    figure { figcaption { "last 24 hours" } (chart(&s.signal, &s.points, now, DAY_SECS, v.bin_secs, &v.events)) }
                                    figure { figcaption { "last 7 days" } (chart(&s.signal, &s.points, now, WEEK_SECS, v.bin_secs, &v.events)) }
                                }
                            }
                        }
                    }
                    section id="parts" {
                        h2 { "Networks and regions, worst first" }
                        @if v.parts.is_empty() {
                            p class="muted" { "No network or region of this country has readings yet." }
                        } @else {
                            table class="events parts" {
                                thead { tr { th { "network or region" } th { "kind" } th { "state" } th { "value / baseline" } th { "targets down" } } }
                                tbody {
                                    @for p in &v.parts {
                                        tr class=(p.status.as_str()) id={"part-" (p.entity)} {
                                            td { strong { (p.entity) } }
                                            td { (p.part) }
                                            td { (badge(p.status)) @if let Some(r) = &p.reason { " " span class="muted" { (r.replace('_', " ")) } } }
                                            td { (ratio_text(p.ratio)) @if let Some(s) = &p.signal { " " span class="sig" { (s) } } }
                                            td { (p.targets_down) " of " (p.targets) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    section id="events" {
                        h2 { "Open events" }
                        @if open.is_empty() { p class="muted" { "No open events." } } @else { (events_table(&open, v.generated_at)) }
                        h2 { "Recent events" }
                        @if closed.is_empty() { p class="muted" { "No recent events." } } @else { (events_table(&closed, v.generated_at)) }
                    }
                }
                footer class="muted" {
                    a href="/" { "All countries" } " · Machine-readable: "
                    a href={"/api/v1/country/" (v.code)} { "/api/v1/country/" (v.code) }
                    " · " a href={"/api/v1/events?country=" (v.code)} { "events" }
                }
            }
        }
    };
    page.into_string()
}

/// The page for a code the catalog does not watch.
pub fn render_not_found(code: &str) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "not watched · blackout" } style { (PreEscaped(CSS)) } }
            body {
                header class="top" { h1 { "Not watched: " (code) } }
                main {
                    p { "No catalog of this collector watches the country " strong { (code) } "." }
                    p { a href="/" { "← all countries" } }
                }
            }
        }
    }
    .into_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status_page::Evidence;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn view() -> CountryView {
        let pts = |f: &dyn Fn(i64) -> Option<f64>| -> Vec<Point> {
            (0..288)
                .map(|i| Point {
                    t: 1_700_000_000 + i * 300,
                    value: f(i),
                    baseline: (i >= 12).then_some(1.0),
                })
                .collect()
        };
        CountryView {
            generated_at: t(288 * 300),
            code: "KZ".into(),
            name: "Kazakhstan <&>".into(),
            status: Status::Outage,
            reason: None,
            why: vec!["outage: national blackout.".into()],
            kind: Some("national_blackout".into()),
            bin_secs: 300,
            signals: vec![CountrySignal {
                signal: "icmp".into(),
                value: Some(0.1),
                baseline: Some(1.0),
                ratio: Some(0.1),
                state: Some(Status::Outage),
                targets: 10,
                targets_down: 9,
                points: pts(&|i| match i {
                    100..110 => None,
                    250.. => Some(0.1),
                    _ => Some(1.0),
                }),
            }],
            parts: vec![PartView {
                entity: "KZ/AS9198".into(),
                part: "network".into(),
                status: Status::Outage,
                reason: None,
                ratio: Some(0.0),
                signal: Some("icmp".into()),
                targets: 5,
                targets_down: 5,
            }],
            events: vec![EventView {
                entity: "KZ".into(),
                country: "KZ".into(),
                kind: "national_blackout".into(),
                severity: Status::Outage,
                start: t(250 * 300),
                end: None,
                peak_drop: Some(0.9),
                mechanism: Some("routes_withdrawn".into()),
                evidence: Evidence {
                    signals: vec!["icmp".into(), "bgp".into()],
                    networks: vec!["KZ/AS9198".into()],
                    agents: vec!["fra-1".into()],
                    share_of_targets: Some(0.9),
                    bgp_lowest_share: Some(0.02),
                    prefixes_withdrawn: Some(42),
                    withdrawn_examples: vec!["192.0.2.0/24".into()],
                    bgp_peers: vec!["AS64500 192.0.2.1".into()],
                    first_withdrawal_at: Some(t(250 * 300)),
                },
            }],
            vantage: None,
        }
    }

    #[test]
    fn page_has_verdict_charts_parts_and_events_escaped() {
        let html = render(&view());
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("Kazakhstan &lt;&amp;&gt;"), "escaped by maud");
        assert!(html.contains("id=\"verdict\">outage<"));
        assert_eq!(html.matches("class=\"chart\"").count(), 2, "24 h and 7 d");
        // The gap of bins 100..110 splits the value line in two.
        let day = html.split("data-window=\"86400\"").nth(1).unwrap();
        let day = &day[..day.find("</svg>").unwrap()];
        assert_eq!(day.matches("class=\"chart-value\"").count(), 2, "{day}");
        assert!(day.contains("chart-event outage"));
        assert!(html.contains("id=\"part-KZ/AS9198\""));
        assert!(html.contains("<td><strong>KZ</strong></td><td>national blackout</td>"));
        // The event says how, with the BGP evidence.
        assert!(html.contains("<td class=\"mechanism\">routes withdrawn<br><small>42 prefixes withdrawn, seen by AS64500 192.0.2.1"), "{html}");
        assert!(html.contains("href=\"/\""));
        for bad in ["<script", "http://", "https://"] {
            assert!(!html.contains(bad), "{bad}");
        }
    }

    #[test]
    fn thin_keeps_a_short_drop() {
        let mut pts: Vec<Point> = (0..2016)
            .map(|i| Point {
                t: i * 300,
                value: Some(1.0),
                baseline: Some(1.0),
            })
            .collect();
        pts[1000].value = Some(0.0);
        let thinned = thin(&pts);
        assert!(thinned.len() <= MAX_POINTS);
        assert_eq!(
            thinned.iter().filter(|p| p.value == Some(0.0)).count(),
            1,
            "one bin down stays visible"
        );
    }

    #[test]
    fn not_found_page_escapes_the_code() {
        let html = render_not_found("<x>");
        assert!(html.contains("&lt;x&gt;") && !html.contains("<x>"));
    }
}
