//! The agent's own HTTP endpoint (`metrics_listen`): `/metrics` from
//! [`blackout_agent::metrics`] plus `blackout_build_info` and `process_*`, the ecosystem's
//! `/-/healthy` and `/-/ready`, and `POST /-/reload`.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use blackout_agent::metrics::{self as m, Kind, METRICS, STATS, UploadResult};
use blackout_model::observation::Signal;
use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// The registry of the agent's metrics, filled from [`STATS`] at each scrape.
pub struct AgentMetrics {
    registry: Registry,
    counters: HashMap<&'static str, IntCounterVec>,
    gauges: HashMap<&'static str, GaugeVec>,
    /// Scrapes one at a time: counters are raised to the totals by difference.
    scrape: Mutex<()>,
}

impl AgentMetrics {
    pub fn new(build: blackout_expose::BuildInfo) -> Self {
        let registry = Registry::new();
        // process_* (CPU, RSS, open fds, start time, threads), as on the collector.
        #[cfg(target_os = "linux")]
        let _ = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        let info_def = blackout_expose::metrics::def(blackout_expose::names::BUILD_INFO)
            .expect("build info is declared");
        let info = IntGaugeVec::new(Opts::new(info_def.name, info_def.help), info_def.labels)
            .expect("a valid metric");
        registry
            .register(Box::new(info.clone()))
            .expect("registered once");
        info.with_label_values(&[build.version, build.revision, build.build_date])
            .set(1);
        let (mut counters, mut gauges) = (HashMap::new(), HashMap::new());
        for d in METRICS {
            let opts = Opts::new(d.name, d.help);
            match d.kind {
                Kind::Counter => {
                    let c = IntCounterVec::new(opts, d.labels).expect("a valid metric");
                    registry.register(Box::new(c.clone())).expect("unique");
                    counters.insert(d.name, c);
                }
                Kind::Gauge => {
                    let g = GaugeVec::new(opts, d.labels).expect("a valid metric");
                    registry.register(Box::new(g.clone())).expect("unique");
                    gauges.insert(d.name, g);
                }
            }
        }
        AgentMetrics {
            registry,
            counters,
            gauges,
            scrape: Mutex::new(()),
        }
    }

    fn count(&self, name: &str, labels: &[&str], total: u64) {
        let c = self.counters[name].with_label_values(labels);
        let now = c.get();
        if total > now {
            c.inc_by(total - now);
        }
    }

    fn gauge(&self, name: &str, labels: &[&str], v: f64) {
        self.gauges[name].with_label_values(labels).set(v);
    }

    /// The text exposition now. Reads the spools' sizes under their locks: call it off
    /// the async runtime.
    pub fn render(&self) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        let s = &STATS;
        self.gauge(
            m::CONFIG_LAST_RELOAD_SUCCESSFUL,
            &[],
            if s.last_reload_successful() { 1.0 } else { 0.0 },
        );
        self.gauge(
            m::CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS,
            &[],
            s.config_loaded_at(),
        );
        for sig in Signal::PROBED {
            self.count(m::PROBES_TOTAL, &[sig.as_str()], s.probes(sig));
            self.gauge(m::CATALOG_TARGETS, &[sig.as_str()], s.targets(sig) as f64);
        }
        for r in UploadResult::ALL {
            self.count(m::UPLOADS_TOTAL, &[r.as_str()], s.uploads(r));
        }
        self.count(m::OBSERVATIONS_SPOOLED_TOTAL, &[], s.observations_spooled());
        let spool = s.spool_totals();
        self.gauge(m::SPOOL_OBSERVATIONS, &[], spool.observations as f64);
        self.gauge(m::SPOOL_BYTES, &[], spool.bytes as f64);
        self.count(
            m::SPOOL_DROPPED_OBSERVATIONS_TOTAL,
            &[],
            spool.dropped_observations,
        );
        self.gauge(
            m::LAST_UPLOAD_SUCCESS_TIMESTAMP_SECONDS,
            &[],
            s.last_upload_success(),
        );
        self.count(
            m::POLITENESS_SKIPS_TOTAL,
            &[],
            blackout_agent::run::POLITENESS_SKIPS.load(std::sync::atomic::Ordering::Relaxed),
        );
        self.count(
            m::CATALOG_REFUSALS_TOTAL,
            &[],
            blackout_agent::catalog::REFUSALS.load(std::sync::atomic::Ordering::Relaxed),
        );
        self.count(m::ROUNDS_TOTAL, &[], s.rounds());
        self.gauge(m::ROUND_DURATION_SECONDS, &[], s.round_duration());
        self.gauge(m::ROUND_LAG_SECONDS, &[], s.round_lag());
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buf).expect("the text exposition is UTF-8")
    }
}

/// `GET /metrics`, `GET /-/healthy`, `GET /-/ready` (200 once the agent has its catalog
/// and probes) and `POST /-/reload`.
pub fn router(reload: crate::Reload) -> Router {
    let metrics = std::sync::Arc::new(AgentMetrics::new(crate::BUILD));
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    match tokio::task::spawn_blocking(move || metrics.render()).await {
                        Ok(body) => (
                            [(
                                header::CONTENT_TYPE,
                                HeaderValue::from_static(
                                    "text/plain; version=0.0.4; charset=utf-8",
                                ),
                            )],
                            body,
                        )
                            .into_response(),
                        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("metrics: {e}\n"))
                            .into_response(),
                    }
                }
            }),
        )
        .route("/-/healthy", get(|| async { "Healthy\n" }))
        .route("/-/ready", get(ready))
        .route("/-/reload", crate::reload_route(reload))
}

async fn ready() -> Response {
    if STATS.ready() {
        "Ready\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no catalog yet\n",
        )
            .into_response()
    }
}
