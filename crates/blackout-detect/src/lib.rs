//! Detection: vantage health, aggregation, baselines, states and events. Pure: no I/O, no
//! clock; time is passed in, so the same engine runs live in the collector, offline in
//! `blackout replay` and under the scenario simulator.
//!
//! Data path of one bin (`bin_secs`, default one 5-minute round):
//! 1. Vantage health: an agent whose control probes mostly failed in the bin (more than
//!    `control_fail_share`), or that probes controls but sent none in the bin, is
//!    unhealthy; its observations count neither as reachable nor as failed. The same
//!    rule ([`DetectConfig::vantage_healthy`]) serves the collector's latest readings.
//!    An entity that only unhealthy agents observed in the last closed bin, or any
//!    entity when no agent was healthy (or none reported), has no verdict
//!    ([`NoVerdict::NoHealthyVantage`]); its state stands but is not shown as one.
//! 2. Quorum: per target, the healthy agents that gave a verdict (ICMP block reports use
//!    their verdict; `uncertain` is no verdict; an agent with any success in the bin says
//!    up). The target is down when more than `down_quorum` of them failed.
//! 3. Aggregation per entity (country; ASN within the country unless the ASN is 0;
//!    region where the catalog gives one) and signal: value = targets up / targets with a
//!    verdict (None below `min_targets`); median RTT of successful probes (per target the lower median over the
//!    healthy agents: a delay half of them did not see is not the target's); loss: the
//!    probes to targets judged up that went unanswered (`Observation::loss_sample`: the
//!    echoes of ICMP block rounds, TCP/HTTP connects and DNS queries that timed out),
//!    with its sample size, whenever there is a sample.
//! 4. Baseline per series: median of the same time of day (plus or minus one bin) over
//!    the trailing `baseline_window_secs`; while fewer than three such values exist, the
//!    median of the last `recent_window_secs`. First verdict after `warmup_bins()` bins
//!    of history (default 1 hour) for latency and loss; reachability's after
//!    `first_verdict_bins()` (default one bin), from the median of what was seen so
//!    far. Values in a degraded state or below `warning_ratio` are stored as the
//!    baseline (inpainting).
//! 5. States per series with thresholds relative to the baseline, minimum durations and
//!    hysteresis (`recovery_ratio`); a drop counts only when `min_targets_down` targets
//!    are missing. Per entity, ICMP and TCP must agree (majority) for a network state.
//!    Latency: per target, RTT over the target's own slow average; the median of these
//!    ratios per entity against its baseline (>= `throttle_rtt_factor` with at least
//!    `throttle_rtt_min_added_ms` added, or `throttle_rtt_added_ms` added with the RTT up
//!    by half) or loss on reachable targets (`throttle_loss_increase` of what answered,
//!    at the sample's lower bound) means throttling after `throttle_min_bins`; a delay
//!    both relative and absolute, or latency and loss together, after one bin.
//! 6. Events per entity: `partial` (a network or region, or a country drop that is not
//!    national), `national_blackout` (a country in outage on most signals with more than
//!    `national_network_share` of its networks disrupted: one event, whose evidence names
//!    the disrupted networks; while it lasts those networks and regions open no event of
//!    their own (a `partial` of one that opened in an earlier bin becomes national in
//!    place); a country
//!    with only regional input is national when more than that
//!    share of its regions is), `throttling` (reachability normal or only at warning
//!    level, latency or loss up), `service_blocking` (DNS or HTTP degraded while ICMP and
//!    TCP are normal in the same bin and no network of the country is disrupted). An
//!    event starts at the first degraded bin and ends at the start of the first
//!    recovered bin; a change of family (reachability, throttling, service) closes it
//!    and opens another; partial becomes national in place.
//! 7. Late data: an observation for a closed bin inside `late_window_secs` is placed in
//!    its bin. At the next `advance` that bin is re-aggregated (agent health, quorum,
//!    values): its history value is replaced (inpainted if the bin lies in an event or
//!    below `warning_ratio`), and every event covering it gets `late_observations`, its
//!    healthy agents and its worst share of targets updated (an `Updated` change). States
//!    and event boundaries already reported are not rewritten. Late data older than
//!    that (up to `baseline_window_secs`) is only counted in the `late_observations` of
//!    the events covering its time (`late_evidence_only`); older still is dropped and
//!    counted in `too_late_observations`.
//!
//! Memory: per series (entity, signal) three histories of `baseline_window_secs /
//! bin_secs` f32 values (8 KiB each at the defaults) and a trail for the pages of
//! [`TRAIL_SECS`] / `bin_secs` pairs of f32 (16 KiB); per target one interned id and 24
//! bytes; per bin, while it is open or inside the late window, one 20-byte cell per
//! (target, agent) observed.

mod cells;
mod config;
mod engine;
mod entity;
mod event;
mod ids;
mod series;
mod throttle;

pub mod sim;

pub use config::{DetectConfig, SignalThresholds};
pub use engine::{
    AgentSnapshot, Engine, EngineStats, EntitySnapshot, NoVerdict, SeriesTrail, SignalSnapshot,
    Snapshot, TRAIL_SECS, TrailPoint, VantageSnapshot,
};
pub use entity::EntityKey;
pub use event::{ChangeKind, Event, EventChange, EventKind, Evidence, Mechanism};
pub use series::State;
