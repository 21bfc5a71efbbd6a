//! Metric names, in one place: dashboards, alert rules and tests refer to these.
//!
//! Base units, `_total` on counters, labels only from closed sets or configuration
//! (country, asn, signal, agent, phase, failure, result): never IPs, URLs or error text.

pub const BUILD_INFO: &str = "blackout_build_info";

// Ingest.
pub const OBSERVATIONS_INGESTED_TOTAL: &str = "blackout_observations_ingested_total";
pub const OBSERVATION_FAILURES_TOTAL: &str = "blackout_observation_failures_total";
pub const BATCHES_TOTAL: &str = "blackout_batches_total";
pub const AGENT_LAST_REPORT_TIMESTAMP_SECONDS: &str =
    "blackout_agent_last_report_timestamp_seconds";
pub const AGENT_LAST_MEASUREMENT_TIMESTAMP_SECONDS: &str =
    "blackout_agent_last_measurement_timestamp_seconds";
pub const AGENT_HEALTHY: &str = "blackout_agent_healthy";

// The latest round, as measured.
pub const TARGETS: &str = "blackout_targets";
pub const REACHABLE_RATIO: &str = "blackout_reachable_ratio";
pub const ASN_TARGETS: &str = "blackout_asn_targets";
pub const ASN_REACHABLE_RATIO: &str = "blackout_asn_reachable_ratio";
pub const RTT_MEDIAN_SECONDS: &str = "blackout_rtt_median_seconds";

// Verdicts.
pub const COUNTRY_STATUS: &str = "blackout_country_status";
pub const ASN_STATUS: &str = "blackout_asn_status";
