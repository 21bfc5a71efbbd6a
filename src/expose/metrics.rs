//! The Prometheus registry of the collector.

use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

use super::names;

/// Every metric the collector exports. Counters are updated on ingest; gauges of
/// aggregates and verdicts are recomputed at each scrape from the current state.
pub struct Metrics {
    pub registry: Registry,
    pub observations_ingested: IntCounterVec,
    pub observation_failures: IntCounterVec,
    pub batches: IntCounterVec,
    pub agent_last_report: GaugeVec,
    pub agent_last_measurement: GaugeVec,
    pub agent_healthy: IntGaugeVec,
    pub targets: IntGaugeVec,
    pub reachable_ratio: GaugeVec,
    pub asn_targets: IntGaugeVec,
    pub asn_reachable_ratio: GaugeVec,
    pub rtt_median: GaugeVec,
    pub http_phase: GaugeVec,
    pub country_status: IntGaugeVec,
    pub asn_status: IntGaugeVec,
    pub country_signal_value: GaugeVec,
    pub country_signal_baseline: GaugeVec,
    pub country_signal_ratio: GaugeVec,
    pub country_signal_status: IntGaugeVec,
    pub asn_signal_value: GaugeVec,
    pub asn_signal_baseline: GaugeVec,
    pub asn_signal_ratio: GaugeVec,
    pub region_status: IntGaugeVec,
    pub events_open: IntGaugeVec,
    pub events_total: IntCounterVec,
    pub vantage_healthy_agents: IntGaugeVec,
    pub agent_spool_observations: IntGaugeVec,
    pub agent_spool_dropped: IntCounterVec,
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    reg(r, GaugeVec::new(Opts::new(name, help), labels).unwrap())
}

fn int_gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    reg(r, IntGaugeVec::new(Opts::new(name, help), labels).unwrap())
}

/// Results a batch can have, pre-created so `rate()` sees every series from the start.
pub const BATCH_RESULTS: [&str; 5] = [
    "accepted",
    "duplicate",
    "rejected",
    "unauthorized",
    "overloaded",
];

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone()))
        .expect("metric names are unique constants");
    c
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let build = reg(
            &r,
            IntGaugeVec::new(
                Opts::new(names::BUILD_INFO, "Version of blackout, as a label."),
                &["version"],
            )
            .unwrap(),
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let m = Metrics {
            observations_ingested: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        names::OBSERVATIONS_INGESTED_TOTAL,
                        "Observations accepted from each agent.",
                    ),
                    &["agent", "signal"],
                )
                .unwrap(),
            ),
            observation_failures: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        names::OBSERVATION_FAILURES_TOTAL,
                        "Accepted observations that record a failed probe, by phase and failure.",
                    ),
                    &["agent", "signal", "phase", "failure"],
                )
                .unwrap(),
            ),
            batches: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(names::BATCHES_TOTAL, "Upload batches by result."),
                    &["result"],
                )
                .unwrap(),
            ),
            agent_last_report: reg(
                &r,
                GaugeVec::new(
                    Opts::new(
                        names::AGENT_LAST_REPORT_TIMESTAMP_SECONDS,
                        "When the collector last accepted a batch from the agent (Unix time).",
                    ),
                    &["agent"],
                )
                .unwrap(),
            ),
            agent_last_measurement: reg(
                &r,
                GaugeVec::new(
                    Opts::new(
                        names::AGENT_LAST_MEASUREMENT_TIMESTAMP_SECONDS,
                        "Measurement time of the newest observation from the agent (Unix time).",
                    ),
                    &["agent"],
                )
                .unwrap(),
            ),
            agent_healthy: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        names::AGENT_HEALTHY,
                        "1 if the agent's control targets answer (its own connectivity works), else 0.",
                    ),
                    &["agent"],
                )
                .unwrap(),
            ),
            targets: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        names::TARGETS,
                        "Targets with a fresh reading from a healthy agent.",
                    ),
                    &["country", "signal"],
                )
                .unwrap(),
            ),
            reachable_ratio: reg(
                &r,
                GaugeVec::new(
                    Opts::new(
                        names::REACHABLE_RATIO,
                        "Share of targets reachable in the latest round (0 to 1).",
                    ),
                    &["country", "signal"],
                )
                .unwrap(),
            ),
            asn_targets: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        names::ASN_TARGETS,
                        "Targets of the network with a fresh reading from a healthy agent.",
                    ),
                    &["country", "asn", "signal"],
                )
                .unwrap(),
            ),
            asn_reachable_ratio: reg(
                &r,
                GaugeVec::new(
                    Opts::new(
                        names::ASN_REACHABLE_RATIO,
                        "Share of the network's targets reachable in the latest round (0 to 1).",
                    ),
                    &["country", "asn", "signal"],
                )
                .unwrap(),
            ),
            rtt_median: reg(
                &r,
                GaugeVec::new(
                    Opts::new(
                        names::RTT_MEDIAN_SECONDS,
                        "Median round-trip time of successful probes in the latest round.",
                    ),
                    &["country", "signal"],
                )
                .unwrap(),
            ),
            http_phase: gauge(
                &r,
                names::HTTP_PHASE_SECONDS,
                "Median duration of each phase (resolve, connect, tls, first_byte; redirect hops summed) of the country's successful HTTP(S) probes in the latest round.",
                &["country", "phase"],
            ),
            country_status: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        names::COUNTRY_STATUS,
                        "Verdict for the country: 0 normal, 1 warning, 2 outage.",
                    ),
                    &["country"],
                )
                .unwrap(),
            ),
            asn_status: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        names::ASN_STATUS,
                        "Verdict for the network: 0 normal, 1 warning, 2 outage.",
                    ),
                    &["country", "asn"],
                )
                .unwrap(),
            ),
            country_signal_value: gauge(
                &r,
                names::COUNTRY_SIGNAL_VALUE,
                "Detector: share of the country's targets up in the last closed bin.",
                &["country", "signal"],
            ),
            country_signal_baseline: gauge(
                &r,
                names::COUNTRY_SIGNAL_BASELINE,
                "Detector: the learned normal level of that value.",
                &["country", "signal"],
            ),
            country_signal_ratio: gauge(
                &r,
                names::COUNTRY_SIGNAL_RATIO,
                "Detector: value / baseline.",
                &["country", "signal"],
            ),
            country_signal_status: int_gauge(
                &r,
                names::COUNTRY_SIGNAL_STATUS,
                "Detector: state of the signal, 0 normal, 1 warning, 2 outage.",
                &["country", "signal"],
            ),
            asn_signal_value: gauge(
                &r,
                names::ASN_SIGNAL_VALUE,
                "Detector: share of the network's targets up in the last closed bin.",
                &["country", "asn", "signal"],
            ),
            asn_signal_baseline: gauge(
                &r,
                names::ASN_SIGNAL_BASELINE,
                "Detector: the learned normal level of that value.",
                &["country", "asn", "signal"],
            ),
            asn_signal_ratio: gauge(
                &r,
                names::ASN_SIGNAL_RATIO,
                "Detector: value / baseline.",
                &["country", "asn", "signal"],
            ),
            region_status: int_gauge(
                &r,
                names::REGION_STATUS,
                "Detector: verdict for a region of a country, 0 normal, 1 warning, 2 outage.",
                &["country", "region"],
            ),
            events_open: int_gauge(
                &r,
                names::EVENTS_OPEN,
                "Open outage events by kind (national_blackout, partial, throttling, service_blocking).",
                &["country", "kind"],
            ),
            events_total: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(names::EVENTS_TOTAL, "Outage events opened, by kind."),
                    &["country", "kind"],
                )
                .unwrap(),
            ),
            vantage_healthy_agents: int_gauge(
                &r,
                names::VANTAGE_HEALTHY_AGENTS,
                "Agents counted healthy by the detector in the last closed bin.",
                &[],
            ),
            agent_spool_observations: int_gauge(
                &r,
                names::AGENT_SPOOL_OBSERVATIONS,
                "Observations waiting in the agent's spool, as the agent last reported.",
                &["agent"],
            ),
            agent_spool_dropped: reg(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        names::AGENT_SPOOL_DROPPED_OBSERVATIONS_TOTAL,
                        "Observations agents dropped because their spool was full, as they report them.",
                    ),
                    &["agent"],
                )
                .unwrap(),
            ),
            registry: r,
        };
        for result in BATCH_RESULTS {
            m.batches.with_label_values(&[result]);
        }
        m
    }

    /// Text exposition of everything registered.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buf).expect("exposition is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
