//! The Prometheus exposition of the collector: one declarative table of every metric
//! ([`METRICS`]: name, type, help, labels) builds the registry; [`Metrics::render`] fills
//! it from the collector's read model at each scrape.

use std::collections::HashMap;
use std::sync::Mutex;

use blackout_collector::silence::is_silent;
use blackout_collector::{BatchResult, ConnectionDrop, Encoding, Scrape};
use blackout_detect::{EntityKey, NoVerdict, Snapshot};
use blackout_model::catalog::CatalogFile;
use prometheus::{
    Encoder, GaugeVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::names;

/// The type of a metric, as the exposition declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An integer counter (`_total`).
    Counter,
    /// A floating-point gauge.
    Gauge,
    /// An integer gauge (counts, states, flags).
    IntGauge,
}

impl Kind {
    /// The `# TYPE` of the exposition.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge | Kind::IntGauge => "gauge",
        }
    }
}

/// One metric the collector exports.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

/// Every metric the collector exports, in one table: the registry is built from it and
/// the documentation is checked against it.
pub const METRICS: &[Def] = &[
    Def {
        name: names::BUILD_INFO,
        kind: Kind::IntGauge,
        help: "The running build of blackout: version, git revision and build date (UTC), as labels.",
        labels: &["version", "revision", "build_date"],
    },
    Def {
        name: names::CONFIG_LAST_RELOAD_SUCCESSFUL,
        kind: Kind::IntGauge,
        help: "Whether the last configuration reload (SIGHUP or POST /-/reload) succeeded; 1 from the start.",
        labels: &[],
    },
    Def {
        name: names::CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS,
        kind: Kind::Gauge,
        help: "When the configuration was last loaded successfully (the start counts), Unix seconds.",
        labels: &[],
    },
    Def {
        name: names::OBSERVATIONS_INGESTED_TOTAL,
        kind: Kind::Counter,
        help: "Observations accepted from each agent.",
        labels: &["agent", "signal"],
    },
    Def {
        name: names::OBSERVATION_FAILURES_TOTAL,
        kind: Kind::Counter,
        help: "Accepted observations that record a failed probe, by phase and failure.",
        labels: &["agent", "signal", "phase", "failure"],
    },
    Def {
        name: names::BATCHES_TOTAL,
        kind: Kind::Counter,
        help: "Upload batches by result.",
        labels: &["result"],
    },
    Def {
        name: names::UPLOAD_BYTES_TOTAL,
        kind: Kind::Counter,
        help: "Bytes of upload bodies that decoded, as they arrived (content coding not undone), by encoding.",
        labels: &["encoding"],
    },
    Def {
        name: names::HTTP_CONNECTIONS_DROPPED_TOTAL,
        kind: Kind::Counter,
        help: "Connections the collector refused or closed itself, by reason.",
        labels: &["reason"],
    },
    Def {
        name: names::HTTP_CONNECTIONS,
        kind: Kind::IntGauge,
        help: "Open connections: trusted (a trusted network, or an agent's token seen) or untrusted.",
        labels: &["class"],
    },
    Def {
        name: names::AGENT_LAST_REPORT_TIMESTAMP_SECONDS,
        kind: Kind::Gauge,
        help: "When the collector last accepted a batch from the agent (Unix time).",
        labels: &["agent"],
    },
    Def {
        name: names::AGENT_LAST_REPORT_AGE_SECONDS,
        kind: Kind::Gauge,
        help: "Seconds since the collector last accepted a batch from the agent, at this scrape.",
        labels: &["agent"],
    },
    Def {
        name: names::AGENT_UPLOAD_INTERVAL_SECONDS,
        kind: Kind::Gauge,
        help: "How often the agent said it reports (its upload_interval_secs); absent until it declared one.",
        labels: &["agent"],
    },
    Def {
        name: names::AGENT_SILENT,
        kind: Kind::IntGauge,
        help: "1 if the agent's last report is older than three of its declared report intervals plus 30 s (at least 60 s), else 0.",
        labels: &["agent"],
    },
    Def {
        name: names::AGENT_LAST_MEASUREMENT_TIMESTAMP_SECONDS,
        kind: Kind::Gauge,
        help: "Measurement time of the newest observation from the agent (Unix time).",
        labels: &["agent"],
    },
    Def {
        name: names::AGENT_HEALTHY,
        kind: Kind::IntGauge,
        help: "Detector, last closed bin: 1 if the agent's control targets answered (its own connectivity works), else 0.",
        labels: &["agent"],
    },
    Def {
        name: names::OBSERVATION_REGIONS_REPLACED_TOTAL,
        kind: Kind::Counter,
        help: "Accepted observations that named a region other than the catalog's for their target; the catalog's was kept (live uploads since the start).",
        labels: &["agent"],
    },
    Def {
        name: names::LOG_DAMAGED_RECORDS_TOTAL,
        kind: Kind::Counter,
        help: "Damaged records of the observation log (checksum or JSON wrong) set aside, not replayed, when the collector started.",
        labels: &[],
    },
    Def {
        name: names::TARGETS,
        kind: Kind::IntGauge,
        help: "Targets with a fresh reading from a healthy agent.",
        labels: &["country", "signal"],
    },
    Def {
        name: names::REACHABLE_RATIO,
        kind: Kind::Gauge,
        help: "Share of targets reachable in the latest round (0 to 1).",
        labels: &["country", "signal"],
    },
    Def {
        name: names::ASN_TARGETS,
        kind: Kind::IntGauge,
        help: "Targets of the network with a fresh reading from a healthy agent.",
        labels: &["country", "asn", "signal"],
    },
    Def {
        name: names::ASN_REACHABLE_RATIO,
        kind: Kind::Gauge,
        help: "Share of the network's targets reachable in the latest round (0 to 1).",
        labels: &["country", "asn", "signal"],
    },
    Def {
        name: names::RTT_MEDIAN_SECONDS,
        kind: Kind::Gauge,
        help: "Median round-trip time of successful probes in the latest round.",
        labels: &["country", "signal"],
    },
    Def {
        name: names::HTTP_PHASE_MEDIAN_SECONDS,
        kind: Kind::Gauge,
        help: "Median duration of each phase (resolve, connect, tls, first_byte; redirect hops summed) of the country's successful HTTP(S) probes in the latest round.",
        labels: &["country", "phase"],
    },
    Def {
        name: names::COUNTRY_STATUS,
        kind: Kind::IntGauge,
        help: "Verdict for the country: 0 normal, 1 warning, 2 outage. Absent without a verdict (see blackout_country_verdict).",
        labels: &["country"],
    },
    Def {
        name: names::COUNTRY_VERDICT,
        kind: Kind::IntGauge,
        help: "1 if the detector has a verdict for the country (blackout_country_status exists), 0 if not.",
        labels: &["country"],
    },
    Def {
        name: names::COUNTRY_NO_VERDICT,
        kind: Kind::IntGauge,
        help: "Why the country has no verdict: 1 for the reason (no_data, warm_up, no_healthy_vantage), 0 for the others; all 0 with a verdict.",
        labels: &["country", "reason"],
    },
    Def {
        name: names::ASN_STATUS,
        kind: Kind::IntGauge,
        help: "Verdict for the network: 0 normal, 1 warning, 2 outage. Absent without a verdict.",
        labels: &["country", "asn"],
    },
    Def {
        name: names::COUNTRY_SIGNAL_VALUE,
        kind: Kind::Gauge,
        help: "Detector: share of the country's targets up in the last closed bin; for signal bgp, the visible share of its address space in BGP.",
        labels: &["country", "signal"],
    },
    Def {
        name: names::COUNTRY_SIGNAL_BASELINE,
        kind: Kind::Gauge,
        help: "Detector: the learned normal level of that value.",
        labels: &["country", "signal"],
    },
    Def {
        name: names::COUNTRY_SIGNAL_BASELINE_RATIO,
        kind: Kind::Gauge,
        help: "Detector: value / baseline (1 at the normal level, can exceed 1).",
        labels: &["country", "signal"],
    },
    Def {
        name: names::COUNTRY_SIGNAL_STATUS,
        kind: Kind::IntGauge,
        help: "Detector: state of the signal, 0 normal, 1 warning, 2 outage.",
        labels: &["country", "signal"],
    },
    Def {
        name: names::ASN_SIGNAL_VALUE,
        kind: Kind::Gauge,
        help: "Detector: share of the network's targets up in the last closed bin; for signal bgp, the visible share of its address space in BGP.",
        labels: &["country", "asn", "signal"],
    },
    Def {
        name: names::ASN_SIGNAL_BASELINE,
        kind: Kind::Gauge,
        help: "Detector: the learned normal level of that value.",
        labels: &["country", "asn", "signal"],
    },
    Def {
        name: names::ASN_SIGNAL_BASELINE_RATIO,
        kind: Kind::Gauge,
        help: "Detector: value / baseline (1 at the normal level, can exceed 1).",
        labels: &["country", "asn", "signal"],
    },
    Def {
        name: names::LOSS_RATIO,
        kind: Kind::Gauge,
        help: "Detector: share of the probes to the country's reachable targets that went unanswered in the last bin with a sample, 0 to 1.",
        labels: &["country", "signal"],
    },
    Def {
        name: names::ASN_LOSS_RATIO,
        kind: Kind::Gauge,
        help: "Detector: blackout_loss_ratio for one network.",
        labels: &["country", "asn", "signal"],
    },
    Def {
        name: names::REGION_STATUS,
        kind: Kind::IntGauge,
        help: "Detector: verdict for a region of a country, 0 normal, 1 warning, 2 outage.",
        labels: &["country", "region"],
    },
    Def {
        name: names::EVENTS_OPEN,
        kind: Kind::IntGauge,
        help: "Open outage events by kind (national_blackout, partial, throttling, service_blocking) and mechanism (routes_withdrawn, traffic_blocked, service_blocking, throttling, unknown).",
        labels: &["country", "kind", "mechanism"],
    },
    Def {
        name: names::EVENTS_TOTAL,
        kind: Kind::Counter,
        help: "Outage events opened, by kind.",
        labels: &["country", "kind"],
    },
    Def {
        name: names::VANTAGE_HEALTHY_AGENTS,
        kind: Kind::IntGauge,
        help: "Agents counted healthy by the detector in the last closed bin.",
        labels: &[],
    },
    Def {
        name: names::VANTAGE_HEALTHY,
        kind: Kind::IntGauge,
        help: "0 when agents exist but none was healthy in the last closed bin (then no country has a verdict), else 1.",
        labels: &[],
    },
    Def {
        name: names::AGENT_SPOOL_OBSERVATIONS,
        kind: Kind::IntGauge,
        help: "Observations waiting in the agent's spool, as the agent last reported.",
        labels: &["agent"],
    },
    Def {
        name: names::AGENT_SPOOL_DROPPED_OBSERVATIONS_TOTAL,
        kind: Kind::Counter,
        help: "Observations agents dropped because their spool was full, as they report them.",
        labels: &["agent"],
    },
    Def {
        name: names::AGENT_CATALOG_REFUSALS_TOTAL,
        kind: Kind::Counter,
        help: "Catalogs from the collector that agents refused as over a limit, as they report them.",
        labels: &["agent"],
    },
    Def {
        name: names::AGENT_POLITENESS_SKIPS_TOTAL,
        kind: Kind::Counter,
        help: "ICMP block probes agents skipped because the block's hourly politeness budget was spent, as they report them.",
        labels: &["agent"],
    },
    Def {
        name: names::BGP_PEERS,
        kind: Kind::IntGauge,
        help: "BGP peers by source (bmp, ris_live, mrt) and state (loading, healthy, partial, silent, down); only healthy peers count towards the quorum. With [bgp].",
        labels: &["source", "state"],
    },
    Def {
        name: names::BGP_ROUTE_EVENTS_TOTAL,
        kind: Kind::Counter,
        help: "Route events received from BGP sources, by source and kind (peer_up, peer_down, announce, withdraw, end_of_rib). With [bgp].",
        labels: &["source", "kind"],
    },
    Def {
        name: names::BGP_PREFIXES,
        kind: Kind::IntGauge,
        help: "Distinct prefixes the BGP table holds (carried by at least one peer), by family (ipv4, ipv6). With [bgp].",
        labels: &["family"],
    },
    Def {
        name: names::BGP_BMP_SESSIONS,
        kind: Kind::IntGauge,
        help: "Open BMP sessions (routers connected to bgp.bmp_listen). With [bgp].",
        labels: &[],
    },
    Def {
        name: names::BGP_PEERS_EVICTED_TOTAL,
        kind: Kind::Counter,
        help: "BGP peers evicted from the table's 64 peer slots for a new peer, being known not to carry a full table; their routes were forgotten, not counted as withdrawn. With [bgp].",
        labels: &[],
    },
    Def {
        name: names::BGP_PEERS_REFUSED_TOTAL,
        kind: Kind::Counter,
        help: "Route events of new BGP peers ignored because all 64 peer slots were held by peers that could not be evicted (full-table, loading, or evicted before). With [bgp].",
        labels: &[],
    },
    Def {
        name: names::BGP_BMP_IGNORED_MESSAGES_TOTAL,
        kind: Kind::Counter,
        help: "BMP messages dropped as not of the global instance, by peer_type (rd_instance, local_instance, loc_rib_instance): a VRF's routes are not the Internet's table. With [bgp].",
        labels: &["peer_type"],
    },
];

/// The table's entry for a name.
pub fn def(name: &str) -> Option<&'static Def> {
    METRICS.iter().find(|d| d.name == name)
}

/// The registered families, by name, as the table built them.
enum Family {
    Counter(IntCounterVec),
    Gauge(GaugeVec),
    IntGauge(IntGaugeVec),
}

struct Families(HashMap<&'static str, Family>);

impl Families {
    fn build(r: &Registry) -> Families {
        let mut out = HashMap::new();
        for d in METRICS {
            let opts = Opts::new(d.name, d.help);
            let f = match d.kind {
                Kind::Counter => Family::Counter(IntCounterVec::new(opts, d.labels).unwrap()),
                Kind::Gauge => Family::Gauge(GaugeVec::new(opts, d.labels).unwrap()),
                Kind::IntGauge => Family::IntGauge(IntGaugeVec::new(opts, d.labels).unwrap()),
            };
            let c: Box<dyn prometheus::core::Collector> = match &f {
                Family::Counter(c) => Box::new(c.clone()),
                Family::Gauge(c) => Box::new(c.clone()),
                Family::IntGauge(c) => Box::new(c.clone()),
            };
            r.register(c).expect("metric names are unique constants");
            assert!(
                out.insert(d.name, f).is_none(),
                "{} twice in METRICS",
                d.name
            );
        }
        Families(out)
    }

    fn counter(&self, name: &str) -> IntCounterVec {
        match self.0.get(name) {
            Some(Family::Counter(c)) => c.clone(),
            _ => panic!("{name}: not a counter in METRICS"),
        }
    }

    fn gauge(&self, name: &str) -> GaugeVec {
        match self.0.get(name) {
            Some(Family::Gauge(c)) => c.clone(),
            _ => panic!("{name}: not a gauge in METRICS"),
        }
    }

    fn int_gauge(&self, name: &str) -> IntGaugeVec {
        match self.0.get(name) {
            Some(Family::IntGauge(c)) => c.clone(),
            _ => panic!("{name}: not an integer gauge in METRICS"),
        }
    }
}

/// Every metric the collector exports. Counters follow the collector's counts; gauges of
/// aggregates and verdicts are recomputed at each scrape from the current state.
pub struct Metrics {
    pub registry: Registry,
    pub observations_ingested: IntCounterVec,
    pub observation_failures: IntCounterVec,
    pub batches: IntCounterVec,
    pub connections_dropped: IntCounterVec,
    pub upload_bytes: IntCounterVec,
    pub connections_open: IntGaugeVec,
    pub agent_last_report: GaugeVec,
    pub agent_last_report_age: GaugeVec,
    pub agent_upload_interval: GaugeVec,
    pub agent_silent: IntGaugeVec,
    pub agent_last_measurement: GaugeVec,
    pub agent_healthy: IntGaugeVec,
    pub regions_replaced: IntCounterVec,
    pub log_damaged_records: IntCounterVec,
    pub targets: IntGaugeVec,
    pub reachable_ratio: GaugeVec,
    pub asn_targets: IntGaugeVec,
    pub asn_reachable_ratio: GaugeVec,
    pub rtt_median: GaugeVec,
    pub http_phase: GaugeVec,
    pub country_status: IntGaugeVec,
    pub country_verdict: IntGaugeVec,
    pub country_no_verdict: IntGaugeVec,
    pub asn_status: IntGaugeVec,
    pub country_signal_value: GaugeVec,
    pub country_signal_baseline: GaugeVec,
    pub country_signal_ratio: GaugeVec,
    pub country_signal_status: IntGaugeVec,
    pub asn_signal_value: GaugeVec,
    pub asn_signal_baseline: GaugeVec,
    pub asn_signal_ratio: GaugeVec,
    pub loss_ratio: GaugeVec,
    pub asn_loss_ratio: GaugeVec,
    pub region_status: IntGaugeVec,
    pub events_open: IntGaugeVec,
    pub events_total: IntCounterVec,
    pub vantage_healthy_agents: IntGaugeVec,
    pub vantage_healthy: IntGaugeVec,
    pub agent_spool_observations: IntGaugeVec,
    pub agent_spool_dropped: IntCounterVec,
    pub agent_catalog_refusals: IntCounterVec,
    reload_successful: IntGaugeVec,
    reload_success_at: GaugeVec,
    pub agent_politeness_skips: IntCounterVec,
    bgp_peers: IntGaugeVec,
    bgp_route_events: IntCounterVec,
    bgp_prefixes: IntGaugeVec,
    bgp_bmp_sessions: IntGaugeVec,
    bgp_peers_evicted: IntCounterVec,
    bgp_peers_refused: IntCounterVec,
    bgp_bmp_ignored: IntCounterVec,
    /// One scrape at a time: a scrape resets and refills gauges.
    scrape: Mutex<()>,
}

/// Raises a counter to a count the collector keeps (the series exists from the first
/// count on, even at 0).
fn follow(c: IntCounter, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

impl Metrics {
    pub fn new(build: crate::BuildInfo) -> Self {
        let r = Registry::new();
        // process_* (CPU, RSS, open fds, start time, threads), as every exporter has them.
        // Only on Linux, where they are read from /proc.
        #[cfg(target_os = "linux")]
        let _ = r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        let fam = Families::build(&r);
        fam.int_gauge(names::BUILD_INFO)
            .with_label_values(&[build.version, build.revision, build.build_date])
            .set(1);
        let m = Metrics {
            observations_ingested: fam.counter(names::OBSERVATIONS_INGESTED_TOTAL),
            observation_failures: fam.counter(names::OBSERVATION_FAILURES_TOTAL),
            batches: fam.counter(names::BATCHES_TOTAL),
            connections_dropped: fam.counter(names::HTTP_CONNECTIONS_DROPPED_TOTAL),
            upload_bytes: fam.counter(names::UPLOAD_BYTES_TOTAL),
            connections_open: fam.int_gauge(names::HTTP_CONNECTIONS),
            agent_last_report: fam.gauge(names::AGENT_LAST_REPORT_TIMESTAMP_SECONDS),
            agent_last_report_age: fam.gauge(names::AGENT_LAST_REPORT_AGE_SECONDS),
            agent_upload_interval: fam.gauge(names::AGENT_UPLOAD_INTERVAL_SECONDS),
            agent_silent: fam.int_gauge(names::AGENT_SILENT),
            agent_last_measurement: fam.gauge(names::AGENT_LAST_MEASUREMENT_TIMESTAMP_SECONDS),
            agent_healthy: fam.int_gauge(names::AGENT_HEALTHY),
            regions_replaced: fam.counter(names::OBSERVATION_REGIONS_REPLACED_TOTAL),
            log_damaged_records: fam.counter(names::LOG_DAMAGED_RECORDS_TOTAL),
            targets: fam.int_gauge(names::TARGETS),
            reachable_ratio: fam.gauge(names::REACHABLE_RATIO),
            asn_targets: fam.int_gauge(names::ASN_TARGETS),
            asn_reachable_ratio: fam.gauge(names::ASN_REACHABLE_RATIO),
            rtt_median: fam.gauge(names::RTT_MEDIAN_SECONDS),
            http_phase: fam.gauge(names::HTTP_PHASE_MEDIAN_SECONDS),
            country_status: fam.int_gauge(names::COUNTRY_STATUS),
            country_verdict: fam.int_gauge(names::COUNTRY_VERDICT),
            country_no_verdict: fam.int_gauge(names::COUNTRY_NO_VERDICT),
            asn_status: fam.int_gauge(names::ASN_STATUS),
            country_signal_value: fam.gauge(names::COUNTRY_SIGNAL_VALUE),
            country_signal_baseline: fam.gauge(names::COUNTRY_SIGNAL_BASELINE),
            country_signal_ratio: fam.gauge(names::COUNTRY_SIGNAL_BASELINE_RATIO),
            country_signal_status: fam.int_gauge(names::COUNTRY_SIGNAL_STATUS),
            asn_signal_value: fam.gauge(names::ASN_SIGNAL_VALUE),
            asn_signal_baseline: fam.gauge(names::ASN_SIGNAL_BASELINE),
            asn_signal_ratio: fam.gauge(names::ASN_SIGNAL_BASELINE_RATIO),
            loss_ratio: fam.gauge(names::LOSS_RATIO),
            asn_loss_ratio: fam.gauge(names::ASN_LOSS_RATIO),
            region_status: fam.int_gauge(names::REGION_STATUS),
            events_open: fam.int_gauge(names::EVENTS_OPEN),
            events_total: fam.counter(names::EVENTS_TOTAL),
            vantage_healthy_agents: fam.int_gauge(names::VANTAGE_HEALTHY_AGENTS),
            vantage_healthy: fam.int_gauge(names::VANTAGE_HEALTHY),
            agent_spool_observations: fam.int_gauge(names::AGENT_SPOOL_OBSERVATIONS),
            agent_spool_dropped: fam.counter(names::AGENT_SPOOL_DROPPED_OBSERVATIONS_TOTAL),
            agent_catalog_refusals: fam.counter(names::AGENT_CATALOG_REFUSALS_TOTAL),
            reload_successful: fam.int_gauge(names::CONFIG_LAST_RELOAD_SUCCESSFUL),
            reload_success_at: fam.gauge(names::CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS),
            agent_politeness_skips: fam.counter(names::AGENT_POLITENESS_SKIPS_TOTAL),
            bgp_peers: fam.int_gauge(names::BGP_PEERS),
            bgp_route_events: fam.counter(names::BGP_ROUTE_EVENTS_TOTAL),
            bgp_prefixes: fam.int_gauge(names::BGP_PREFIXES),
            bgp_bmp_sessions: fam.int_gauge(names::BGP_BMP_SESSIONS),
            bgp_peers_evicted: fam.counter(names::BGP_PEERS_EVICTED_TOTAL),
            bgp_peers_refused: fam.counter(names::BGP_PEERS_REFUSED_TOTAL),
            bgp_bmp_ignored: fam.counter(names::BGP_BMP_IGNORED_MESSAGES_TOTAL),
            registry: r,
            scrape: Mutex::new(()),
        };
        // Every result and reason from the start, so that `rate()` sees each series.
        for result in BatchResult::ALL {
            m.batches.with_label_values(&[result.as_str()]);
        }
        for e in Encoding::ALL {
            m.upload_bytes.with_label_values(&[e.as_str()]);
        }
        for why in ConnectionDrop::ALL {
            m.connections_dropped.with_label_values(&[why.as_str()]);
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

    /// Fills the registry from a scrape of the read model and returns the text
    /// exposition. `catalog` gives the countries that always have a status series.
    pub fn render(&self, scrape: &Scrape, catalog: &[CatalogFile]) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.render_counts(scrape);
        self.render_bgp(scrape);
        self.reload_successful
            .with_label_values::<&str>(&[])
            .set(i64::from(scrape.reload.successful));
        self.reload_success_at
            .with_label_values::<&str>(&[])
            .set(scrape.reload.last_success.timestamp_millis() as f64 / 1000.0);
        for (agent, t) in &scrape.last_report {
            let age = (scrape.at - *t).num_milliseconds().max(0) as f64 / 1000.0;
            self.agent_last_report_age
                .with_label_values(&[agent])
                .set(age);
            let declared = scrape.upload_intervals.get(agent).copied();
            let silent = is_silent(*t, scrape.at, declared);
            self.agent_silent
                .with_label_values(&[agent])
                .set(i64::from(silent));
            if let Some(i) = declared {
                self.agent_upload_interval
                    .with_label_values(&[agent])
                    .set(f64::from(i));
            }
        }
        self.render_detector(&scrape.verdicts, &scrape.open_events, catalog);
        self.render_latest(scrape);
        self.encode()
    }

    /// The BGP sources and table, when configured.
    fn render_bgp(&self, scrape: &Scrape) {
        let Some(b) = &scrape.bgp else { return };
        for (source, state, n) in &b.peers {
            self.bgp_peers
                .with_label_values(&[*source, *state])
                .set(*n as i64);
        }
        for (source, kind, n) in &b.route_events {
            follow(
                self.bgp_route_events.with_label_values(&[*source, *kind]),
                *n,
            );
        }
        self.bgp_prefixes
            .with_label_values(&["ipv4"])
            .set(b.prefixes.0 as i64);
        self.bgp_prefixes
            .with_label_values(&["ipv6"])
            .set(b.prefixes.1 as i64);
        self.bgp_bmp_sessions
            .with_label_values(&[] as &[&str])
            .set(b.bmp_sessions as i64);
        follow(
            self.bgp_peers_evicted.with_label_values(&[] as &[&str]),
            b.peers_evicted,
        );
        follow(
            self.bgp_peers_refused.with_label_values(&[] as &[&str]),
            b.peers_refused,
        );
        for (peer_type, n) in &b.bmp_ignored {
            follow(self.bgp_bmp_ignored.with_label_values(&[*peer_type]), *n);
        }
    }

    /// What the collector counted, and the agents' latest reports.
    fn render_counts(&self, scrape: &Scrape) {
        let c = &scrape.counters;
        for r in BatchResult::ALL {
            follow(self.batches.with_label_values(&[r.as_str()]), c.batches(r));
        }
        for e in Encoding::ALL {
            follow(
                self.upload_bytes.with_label_values(&[e.as_str()]),
                c.upload_bytes(e),
            );
        }
        for why in ConnectionDrop::ALL {
            follow(
                self.connections_dropped.with_label_values(&[why.as_str()]),
                c.connections_dropped(why),
            );
        }
        let (trusted, untrusted) = c.connections_open;
        self.connections_open
            .with_label_values(&["trusted"])
            .set(trusted as i64);
        self.connections_open
            .with_label_values(&["untrusted"])
            .set(untrusted as i64);
        for ((agent, signal), n) in &c.observations_ingested {
            follow(
                self.observations_ingested
                    .with_label_values(&[agent.as_str(), signal.as_str()]),
                *n,
            );
        }
        for ((agent, signal, phase, failure), n) in &c.observation_failures {
            follow(
                self.observation_failures.with_label_values(&[
                    agent.as_str(),
                    signal.as_str(),
                    phase,
                    failure,
                ]),
                *n,
            );
        }
        // Present at 0 from the start: an alert on it needs the series before the damage.
        follow(
            self.log_damaged_records.with_label_values(&[] as &[&str]),
            c.log_damaged_records,
        );
        for (agent, n) in &c.regions_replaced {
            follow(self.regions_replaced.with_label_values(&[agent]), *n);
        }
        for ((country, kind), n) in &c.events_opened {
            follow(
                self.events_total
                    .with_label_values(&[country.as_str(), kind]),
                *n,
            );
        }
        for (agent, n) in &c.agent_spool_dropped {
            follow(self.agent_spool_dropped.with_label_values(&[agent]), *n);
        }
        for (agent, n) in &c.agent_catalog_refusals {
            follow(self.agent_catalog_refusals.with_label_values(&[agent]), *n);
        }
        for (agent, n) in &c.agent_politeness_skips {
            follow(self.agent_politeness_skips.with_label_values(&[agent]), *n);
        }
        for (agent, n) in &c.agent_spool_observations {
            self.agent_spool_observations
                .with_label_values(&[agent])
                .set(*n);
        }
        for (agent, t) in &c.agent_last_measurement {
            self.agent_last_measurement
                .with_label_values(&[agent])
                .set(*t);
        }
        for (agent, t) in &scrape.last_report {
            self.agent_last_report
                .with_label_values(&[agent])
                .set(t.timestamp_millis() as f64 / 1000.0);
        }
    }

    /// The latest round, as measured.
    fn render_latest(&self, scrape: &Scrape) {
        let agg = &scrape.latest;
        let m = self;
        m.targets.reset();
        m.reachable_ratio.reset();
        m.asn_targets.reset();
        m.asn_reachable_ratio.reset();
        m.rtt_median.reset();
        m.http_phase.reset();
        for ((country, phase), secs) in &agg.http_phase_median_seconds {
            m.http_phase
                .with_label_values(&[country.as_str(), phase])
                .set(*secs);
        }
        for ((country, signal), share) in &agg.country {
            m.targets
                .with_label_values(&[country, signal.as_str()])
                .set(share.targets as i64);
            if let Some(r) = share.ratio() {
                m.reachable_ratio
                    .with_label_values(&[country, signal.as_str()])
                    .set(r);
            }
            if let Some(rtt) = share.rtt_median_seconds {
                m.rtt_median
                    .with_label_values(&[country, signal.as_str()])
                    .set(rtt);
            }
        }
        for ((country, asn, signal), share) in &agg.asn {
            let asn_s = asn.to_string();
            m.asn_targets
                .with_label_values(&[country, &asn_s, signal.as_str()])
                .set(share.targets as i64);
            if let Some(r) = share.ratio() {
                m.asn_reachable_ratio
                    .with_label_values(&[country, &asn_s, signal.as_str()])
                    .set(r);
            }
        }
    }

    /// Sets the detector's gauges from a snapshot. Every country of the catalog has a
    /// `blackout_country_verdict` series from the start, so alerts and maps see it; its
    /// status series exists only while it has a verdict.
    fn render_detector(
        &self,
        snap: &Snapshot,
        open: &[(String, &'static str, &'static str)],
        catalog: &[CatalogFile],
    ) {
        let m = self;
        for g in [
            &m.country_signal_value,
            &m.country_signal_baseline,
            &m.country_signal_ratio,
            &m.asn_signal_value,
            &m.asn_signal_baseline,
            &m.asn_signal_ratio,
            &m.loss_ratio,
            &m.asn_loss_ratio,
        ] {
            g.reset();
        }
        m.country_signal_status.reset();
        m.country_status.reset();
        m.country_verdict.reset();
        m.country_no_verdict.reset();
        m.asn_status.reset();
        m.region_status.reset();
        m.events_open.reset();
        m.agent_healthy.reset();
        let mut verdicts: std::collections::BTreeMap<&str, Option<NoVerdict>> = catalog
            .iter()
            .filter(|f| !f.control)
            .map(|f| (f.country.as_str(), Some(snap.no_verdict_unseen(&f.country))))
            .collect();
        let set = |g: &GaugeVec, labels: &[&str], v: Option<f64>| {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                g.with_label_values(labels).set(v);
            }
        };
        for e in &snap.entities {
            let state = e.state.code() as i64;
            let verdict = e.no_verdict.is_none();
            match &e.entity {
                EntityKey::Country(cc) => {
                    verdicts.insert(cc, e.no_verdict);
                    if verdict {
                        m.country_status.with_label_values(&[cc]).set(state);
                    }
                    for s in &e.signals {
                        let l = [cc.as_str(), s.signal.as_str()];
                        set(&m.country_signal_value, &l, s.value);
                        set(&m.country_signal_baseline, &l, s.baseline);
                        set(&m.country_signal_ratio, &l, s.ratio);
                        set(&m.loss_ratio, &l, s.loss);
                        if let Some(st) = s.state {
                            m.country_signal_status
                                .with_label_values(&l)
                                .set(st.code() as i64);
                        }
                    }
                }
                EntityKey::Asn { country, asn } if !country.is_empty() => {
                    let asn = asn.to_string();
                    if verdict {
                        m.asn_status.with_label_values(&[country, &asn]).set(state);
                    }
                    for s in &e.signals {
                        let l = [country.as_str(), asn.as_str(), s.signal.as_str()];
                        set(&m.asn_signal_value, &l, s.value);
                        set(&m.asn_signal_baseline, &l, s.baseline);
                        set(&m.asn_signal_ratio, &l, s.ratio);
                        set(&m.asn_loss_ratio, &l, s.loss);
                    }
                }
                EntityKey::Region { country, region } if verdict => {
                    m.region_status
                        .with_label_values(&[country, region])
                        .set(state);
                }
                EntityKey::Region { .. } => {}
                EntityKey::Asn { .. } => {}
            }
        }
        for (country, kind, mechanism) in open {
            m.events_open
                .with_label_values(&[country.as_str(), kind, mechanism])
                .inc();
        }
        for (cc, why) in verdicts {
            m.country_verdict
                .with_label_values(&[cc])
                .set(why.is_none() as i64);
            for r in NoVerdict::ALL {
                m.country_no_verdict
                    .with_label_values(&[cc, r.as_str()])
                    .set((why == Some(r)) as i64);
            }
        }
        // Agent health is the detector's, of the last closed bin: the same reading as
        // `blackout_vantage_healthy_agents` and `/api/v1/status`. Before the first bin
        // closes nothing is known, and no series says otherwise.
        if snap.at.is_some() {
            for a in &snap.agents {
                m.agent_healthy
                    .with_label_values(&[&a.agent])
                    .set(a.healthy as i64);
            }
        }
        m.vantage_healthy_agents
            .with_label_values::<&str>(&[])
            .set(snap.vantage.healthy_agents as i64);
        m.vantage_healthy
            .with_label_values::<&str>(&[])
            .set(snap.vantage.healthy as i64);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(crate::BuildInfo::UNKNOWN)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use blackout_collector::{Collector, CollectorConfig, ReadModel, Uploader};
    use blackout_model::catalog::CatalogFile;
    use blackout_model::observation::{Batch, Observation, Signal};
    use chrono::{DateTime, Utc};

    use super::*;

    #[test]
    fn the_table_has_unique_names_and_builds_the_registry() {
        let mut seen = std::collections::HashSet::new();
        for d in METRICS {
            assert!(seen.insert(d.name), "{} twice", d.name);
            assert!(d.name.starts_with("blackout_"), "{}", d.name);
            assert_eq!(
                d.kind == Kind::Counter,
                d.name.ends_with("_total"),
                "{}",
                d.name
            );
        }
        let _ = Metrics::new(crate::BuildInfo::UNKNOWN);
    }

    fn collector() -> Arc<Collector> {
        let cat = blackout_model::catalog::parse(
            "country = \"XA\"\n[[icmp]]\nprefix = \"198.18.0.0/20\"\nasn = 64500\n[[tcp]]\naddress = \"198.18.0.1:443\"\nasn = 64500\n",
            "xa.toml",
        )
        .unwrap();
        Arc::new(Collector::new(CollectorConfig::default(), vec![cat, control_catalog()]).unwrap())
    }

    fn control_catalog() -> CatalogFile {
        blackout_model::catalog::parse(
            "country = \"ZZ\"\ncontrol = true\n[[tcp]]\naddress = \"192.0.2.1:443\"\nasn = 1\n",
            "control.toml",
        )
        .unwrap()
    }

    fn report_spool(
        c: &Collector,
        agent: &str,
        n: u32,
        spool: Option<blackout_model::observation::SpoolStatus>,
        now: DateTime<Utc>,
    ) {
        let o = Observation {
            agent: agent.into(),
            target: "tcp:192.0.2.1:443".into(),
            country: "ZZ".into(),
            asn: 1,
            region: None,
            signal: Signal::Tcp,
            control: true,
            measured_at: now,
            ok: true,
            phase: None,
            failure: None,
            rtt_ms: Some(1.0),
            block: None,
            timings_ms: None,
        };
        let b = Batch {
            batch_id: format!("{agent}-{n}"),
            agent: agent.into(),
            observations: vec![o],
            spool,
        };
        c.ingest(&Uploader::InProcess, b, now).unwrap();
    }

    /// Was a unit test of the collector's ingest; the rendering is expose's now.
    #[test]
    fn spool_reports_become_a_backlog_gauge_and_a_drop_counter() {
        use blackout_model::observation::SpoolStatus;
        let c = collector();
        let metrics = Metrics::new(crate::BuildInfo::UNKNOWN);
        let read = ReadModel::new(c.clone());
        let now = Utc::now();
        let st = |observations, dropped_observations| {
            Some(SpoolStatus {
                observations,
                dropped_observations,
                catalog_refusals: 0,
                politeness_skips: 0,
            })
        };
        let text = |_: &Collector| metrics.render(&read.scrape(now), &read.catalog().files);
        let line = |t: &str, name: &str| {
            t.lines()
                .find(|l| l.starts_with(&format!("{name}{{agent=\"a1\"}}")))
                .map(|l| l.rsplit(' ').next().unwrap().to_string())
        };
        use crate::names::{
            AGENT_SPOOL_DROPPED_OBSERVATIONS_TOTAL as DROPPED, AGENT_SPOOL_OBSERVATIONS as WAITING,
        };
        let expect = |waiting: &str, dropped: &str| {
            let t = text(&c);
            assert_eq!(line(&t, WAITING).as_deref(), Some(waiting));
            assert_eq!(line(&t, DROPPED).as_deref(), Some(dropped));
        };
        report_spool(&c, "a1", 1, st(40, 0), now);
        report_spool(&c, "a1", 2, st(900, 7), now);
        expect("900", "7");
        // More drops, then an agent restart (its count starts again at 2).
        report_spool(&c, "a1", 3, st(1000, 10), now);
        report_spool(&c, "a1", 4, st(5, 2), now);
        expect("5", "12");
        // A batch without a report (an older agent) changes nothing.
        report_spool(&c, "a1", 5, None, now);
        assert_eq!(
            line(&text(&c), crate::names::AGENT_SPOOL_OBSERVATIONS).as_deref(),
            Some("5")
        );
    }

    /// One rule for a healthy agent: with `control_fail_share = 0.7`, an agent with one
    /// control of three answering is healthy for the detector, so its readings count in
    /// the latest-round gauges too (they used a fixed half), and the three health
    /// readings agree, before the first bin closes (nothing known) and after.
    #[test]
    fn one_rule_for_a_healthy_agent_in_every_reading() {
        let xa = blackout_model::catalog::parse(
            "country = \"XA\"\n[[tcp]]\naddress = \"198.18.0.1:443\"\nasn = 64500\n",
            "xa.toml",
        )
        .unwrap();
        let control = blackout_model::catalog::parse(
            "country = \"ZZ\"\ncontrol = true\n[[tcp]]\naddress = \"192.0.2.1:443\"\nasn = 1\n[[tcp]]\naddress = \"192.0.2.2:443\"\nasn = 1\n[[tcp]]\naddress = \"192.0.2.3:443\"\nasn = 1\n",
            "control.toml",
        )
        .unwrap();
        let mut cfg = CollectorConfig::default();
        cfg.detect.control_fail_share = 0.7;
        let c = Arc::new(Collector::new(cfg, vec![xa, control]).unwrap());
        let bin = c.config.detect.bin_secs as i64;
        let now = DateTime::from_timestamp(1_764_000_000 / bin * bin + 10, 0).unwrap();
        let obs = |target: &str, country: &str, control: bool, ok: bool| Observation {
            agent: "a1".into(),
            target: format!("tcp:{target}"),
            country: country.into(),
            asn: if control { 1 } else { 64500 },
            region: None,
            signal: Signal::Tcp,
            control,
            measured_at: now,
            ok,
            phase: (!ok).then_some(blackout_model::observation::Phase::Connect),
            failure: (!ok).then_some(blackout_model::observation::Failure::Refused),
            rtt_ms: ok.then_some(1.0),
            block: None,
            timings_ms: None,
        };
        let b = Batch {
            batch_id: "b1".into(),
            agent: "a1".into(),
            observations: vec![
                obs("192.0.2.1:443", "ZZ", true, true),
                obs("192.0.2.2:443", "ZZ", true, false),
                obs("192.0.2.3:443", "ZZ", true, false),
                obs("198.18.0.1:443", "XA", false, true),
            ],
            spool: None,
        };
        c.ingest(&Uploader::InProcess, b, now).unwrap();
        let metrics = Metrics::new(crate::BuildInfo::UNKNOWN);
        let read = ReadModel::new(c.clone());
        let value = |t: &str, series: &str| {
            t.lines().find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .parse::<f64>()
                    .ok()
            })
        };
        let text = metrics.render(&read.scrape(now), &read.catalog().files);
        assert_eq!(
            value(&text, "blackout_targets{country=\"XA\",signal=\"tcp\"}"),
            Some(1.0),
            "the agent's readings count: it is healthy by control_fail_share"
        );
        // Before a bin closes: no health is known, and no reading claims one.
        assert_eq!(value(&text, "blackout_agent_healthy{agent=\"a1\"}"), None);
        assert_eq!(value(&text, "blackout_vantage_healthy_agents"), Some(0.0));
        assert_eq!(value(&text, "blackout_vantage_healthy"), Some(1.0));
        assert!(!c.snapshot().agents.iter().any(|a| a.healthy));
        let later = now + chrono::Duration::seconds(bin + c.config.detect.grace_secs as i64);
        c.tick(later);
        let text = metrics.render(&read.scrape(later), &read.catalog().files);
        assert_eq!(
            value(&text, "blackout_agent_healthy{agent=\"a1\"}"),
            Some(1.0)
        );
        assert_eq!(value(&text, "blackout_vantage_healthy_agents"), Some(1.0));
        assert_eq!(value(&text, "blackout_vantage_healthy"), Some(1.0));
        let snap = c.snapshot();
        assert!(snap.agents[0].healthy && snap.vantage.healthy);
        assert_eq!(snap.vantage.control_ok, 1);
        assert_eq!(snap.vantage.control_failed, 2);
    }
}
