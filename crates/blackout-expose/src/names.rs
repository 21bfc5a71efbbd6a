//! Metric names, in one place: dashboards, alert rules and tests refer to these.
//!
//! Base units, `_total` on counters, labels only from closed sets or configuration
//! (country, asn, signal, agent, phase, failure, result): never IPs, URLs or error text.

pub const BUILD_INFO: &str = "blackout_build_info";
pub const CONFIG_LAST_RELOAD_SUCCESSFUL: &str = "blackout_config_last_reload_successful";
pub const CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS: &str =
    "blackout_config_last_reload_success_timestamp_seconds";

// Ingest.
pub const OBSERVATIONS_INGESTED_TOTAL: &str = "blackout_observations_ingested_total";
pub const OBSERVATION_FAILURES_TOTAL: &str = "blackout_observation_failures_total";
pub const BATCHES_TOTAL: &str = "blackout_batches_total";
pub const UPLOAD_BYTES_TOTAL: &str = "blackout_upload_bytes_total";
pub const HTTP_CONNECTIONS_DROPPED_TOTAL: &str = "blackout_http_connections_dropped_total";
pub const HTTP_CONNECTIONS: &str = "blackout_http_connections";
pub const AGENT_LAST_REPORT_TIMESTAMP_SECONDS: &str =
    "blackout_agent_last_report_timestamp_seconds";
pub const AGENT_LAST_MEASUREMENT_TIMESTAMP_SECONDS: &str =
    "blackout_agent_last_measurement_timestamp_seconds";
pub const AGENT_HEALTHY: &str = "blackout_agent_healthy";
/// Accepted observations whose region was replaced by the catalog's, per agent.
pub const OBSERVATION_REGIONS_REPLACED_TOTAL: &str = "blackout_observation_regions_replaced_total";

// The collector's own state.
/// Damaged records of the observation log set aside when it was read back at start.
pub const LOG_DAMAGED_RECORDS_TOTAL: &str = "blackout_log_damaged_records_total";

/// Seconds since the collector last accepted a batch from the agent, at the scrape: a
/// silent agent shows without PromQL arithmetic.
pub const AGENT_LAST_REPORT_AGE_SECONDS: &str = "blackout_agent_last_report_age_seconds";
/// How often the agent said it reports (its `upload_interval_secs`).
pub const AGENT_UPLOAD_INTERVAL_SECONDS: &str = "blackout_agent_upload_interval_seconds";
/// 1 when the agent's last report is older than its declared interval allows
/// (`blackout_collector::silence`): the one rule the page and the alert share.
pub const AGENT_SILENT: &str = "blackout_agent_silent";

// The latest round, as measured.
pub const TARGETS: &str = "blackout_targets";
pub const REACHABLE_RATIO: &str = "blackout_reachable_ratio";
pub const ASN_TARGETS: &str = "blackout_asn_targets";
pub const ASN_REACHABLE_RATIO: &str = "blackout_asn_reachable_ratio";
pub const RTT_MEDIAN_SECONDS: &str = "blackout_rtt_median_seconds";
/// Per country and phase (resolve, connect, tls, first_byte): median duration of that phase
/// over the successful HTTP(S) probes of the latest round.
pub const HTTP_PHASE_MEDIAN_SECONDS: &str = "blackout_http_phase_median_seconds";

// Verdicts.
/// Present only for a country with a verdict: a missing verdict is not "normal".
pub const COUNTRY_STATUS: &str = "blackout_country_status";
/// Per catalog country: 1 if the detector has a verdict (then `COUNTRY_STATUS` exists), 0 if not.
pub const COUNTRY_VERDICT: &str = "blackout_country_verdict";
/// Per catalog country and reason (no_data, warm_up, no_healthy_vantage): 1 for the reason
/// there is no verdict, 0 for the others (all 0 when there is one). A state set.
pub const COUNTRY_NO_VERDICT: &str = "blackout_country_no_verdict";
pub const ASN_STATUS: &str = "blackout_asn_status";

// The detector, per (entity, signal): the bin value, its learned baseline, their ratio,
// and the state (0 normal, 1 warning, 2 outage). Entities: country, network (asn within
// a country) and region (from the catalog).
pub const COUNTRY_SIGNAL_VALUE: &str = "blackout_country_signal_value";
pub const COUNTRY_SIGNAL_BASELINE: &str = "blackout_country_signal_baseline";
pub const COUNTRY_SIGNAL_BASELINE_RATIO: &str = "blackout_country_signal_baseline_ratio";
pub const COUNTRY_SIGNAL_STATUS: &str = "blackout_country_signal_status";
pub const ASN_SIGNAL_VALUE: &str = "blackout_asn_signal_value";
pub const ASN_SIGNAL_BASELINE: &str = "blackout_asn_signal_baseline";
pub const ASN_SIGNAL_BASELINE_RATIO: &str = "blackout_asn_signal_baseline_ratio";
/// Per (entity, signal): share of the probes to targets judged up that went unanswered in
/// the last bin with a sample (ICMP echoes of block rounds, TCP/HTTP connects, DNS queries).
pub const LOSS_RATIO: &str = "blackout_loss_ratio";
pub const ASN_LOSS_RATIO: &str = "blackout_asn_loss_ratio";
pub const REGION_STATUS: &str = "blackout_region_status";

// Events.
/// Open events per country, kind (national_blackout, partial, throttling, service_blocking)
/// and mechanism (routes_withdrawn, traffic_blocked, service_blocking, throttling, unknown).
pub const EVENTS_OPEN: &str = "blackout_events_open";
/// Events opened since the collector started, per country and kind.
pub const EVENTS_TOTAL: &str = "blackout_events_total";
/// Agents counted healthy by the detector in the last closed bin.
pub const VANTAGE_HEALTHY_AGENTS: &str = "blackout_vantage_healthy_agents";
/// 0 when agents exist but none was healthy in the last closed bin (no verdicts), else 1.
pub const VANTAGE_HEALTHY: &str = "blackout_vantage_healthy";

// Agents report their own state with each batch.
pub const AGENT_SPOOL_OBSERVATIONS: &str = "blackout_agent_spool_observations";
pub const AGENT_SPOOL_DROPPED_OBSERVATIONS_TOTAL: &str =
    "blackout_agent_spool_dropped_observations_total";
pub const AGENT_CATALOG_REFUSALS_TOTAL: &str = "blackout_agent_catalog_refusals_total";
pub const AGENT_POLITENESS_SKIPS_TOTAL: &str = "blackout_agent_politeness_skips_total";

// BGP sources and the route table (present with `[bgp]`).
/// Peers by source (bmp, ris_live, mrt) and state (loading, healthy, partial, silent, down).
pub const BGP_PEERS: &str = "blackout_bgp_peers";
/// Route events received, by source and kind (peer_up, peer_down, announce, withdraw, end_of_rib).
pub const BGP_ROUTE_EVENTS_TOTAL: &str = "blackout_bgp_route_events_total";
/// Distinct prefixes the table holds, by family (ipv4, ipv6).
pub const BGP_PREFIXES: &str = "blackout_bgp_prefixes";
/// Open BMP sessions (routers connected).
pub const BGP_BMP_SESSIONS: &str = "blackout_bgp_bmp_sessions";
/// Peers that took the slot of a held peer known not to carry a full table (the table
/// holds 64 peers).
pub const BGP_PEERS_EVICTED_TOTAL: &str = "blackout_bgp_peers_evicted_total";
/// Route events of new peers ignored because every slot was held by a peer that could
/// not be evicted.
pub const BGP_PEERS_REFUSED_TOTAL: &str = "blackout_bgp_peers_refused_total";
/// BMP messages dropped as not of the global instance, by peer type (rd_instance,
/// local_instance, loc_rib_instance).
pub const BGP_BMP_IGNORED_MESSAGES_TOTAL: &str = "blackout_bgp_bmp_ignored_messages_total";
