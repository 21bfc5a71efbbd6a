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
    pub country_status: IntGaugeVec,
    pub asn_status: IntGaugeVec,
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
