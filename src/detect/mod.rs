//! Detection: vantage health, aggregation, baselines, states and events. Pure: no I/O, no
//! clock; time is passed in, so the same engine runs live in the collector, offline in
//! `blackout replay` and under the scenario simulator.
//!
//! Data path of one bin (`bin_secs`, default one 5-minute round):
//! 1. Vantage health: an agent whose control probes mostly failed in the bin (more than
//!    `control_fail_share`), or that probes controls but sent none in the bin, is
//!    unhealthy; its observations count neither as reachable nor as failed.
//! 2. Quorum: per target, the healthy agents that gave a verdict (ICMP block reports use
//!    their verdict; `uncertain` is no verdict; an agent with any success in the bin says
//!    up). The target is down when more than `down_quorum` of them failed.
//! 3. Aggregation per entity (country; ASN within the country unless the ASN is 0;
//!    region where the catalog gives one) and signal: value = targets up / targets with a
//!    verdict (None below `min_targets`); median RTT of successful probes; loss of probes
//!    on targets judged up.
//! 4. Baseline per series: median of the same time of day (plus or minus one bin) over
//!    the trailing `baseline_window_secs`; while fewer than three such values exist, the
//!    median of the last `recent_window_secs`. First verdict after `warmup_bins()` bins
//!    of history (default 1 hour). Values in a degraded state or below `warning_ratio`
//!    are stored as the baseline (inpainting).
//! 5. States per series with thresholds relative to the baseline, minimum durations and
//!    hysteresis (`recovery_ratio`); overall state and event kind per entity.

mod config;
mod engine;
mod entity;
mod event;
mod fxhash;
mod series;

pub mod quality;
pub mod sim;

pub use config::{DetectConfig, SignalThresholds};
pub use engine::{
    AgentSnapshot, Engine, EngineStats, EntitySnapshot, PersistedSeries, PersistedState,
    SignalSnapshot, Snapshot,
};
pub use entity::EntityKey;
pub use event::{ChangeKind, Event, EventChange, EventKind, Evidence};
pub use series::State;
