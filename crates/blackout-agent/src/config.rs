//! The agent's configuration file (`agent.toml`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::catalog::{CatalogLimits, DEFAULT_MAX_CATALOG_BYTES, DEFAULT_MAX_TARGETS};

/// Default time in which every target is probed once.
pub const DEFAULT_ROUND_SECS: u64 = 300;
/// Default deadline of one probe.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Default number of probes in flight at once.
pub const DEFAULT_CONCURRENCY: usize = 512;
/// Default global pacing cap.
pub const DEFAULT_MAX_PROBES_PER_SEC: u32 = 2_000;
/// Default wait between uploads.
pub const DEFAULT_UPLOAD_INTERVAL_SECS: u64 = 5;
/// Default largest batch.
pub const DEFAULT_BATCH_MAX: usize = 5_000;
/// Default period of re-fetching a catalog from the collector.
pub const DEFAULT_CATALOG_REFRESH_SECS: u64 = 600;
/// Default threads of the agent's runtime: one paces 7,000 ICMP probes/s with room to
/// spare, and a second only adds cross-thread wake-ups (a quarter more CPU, measured by
/// `bench/sustained.sh`). More help agents with many HTTPS targets (TLS handshakes).
pub const DEFAULT_WORKER_THREADS: usize = 1;
/// Default disk cap of the spool (the oldest batches are dropped beyond it).
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgentConfig {
    agent_id: String,
    /// Base URL of the collector, e.g. `https://collector.example:9797`.
    collector_url: Option<String>,
    /// More collectors to upload the same observations to (scale-out, HA): each gets
    /// its own spool, so one collector's outage delays only its own copy.
    #[serde(default)]
    collector_urls: Vec<String>,
    /// The agent's bearer token, or a file holding it (preferred: keeps secrets out of
    /// config files that get shared).
    token: Option<String>,
    token_file: Option<PathBuf>,
    /// Extra CA certificate (PEM) to trust for the collector's TLS.
    ca_file: Option<PathBuf>,
    /// Catalog files or directories; empty: fetch the catalog from the collector.
    #[serde(default)]
    catalog: Vec<PathBuf>,
    /// How often a catalog fetched from the collector is fetched again.
    catalog_refresh_secs: Option<u64>,
    spool_dir: Option<PathBuf>,
    spool_max_bytes: Option<u64>,
    round_secs: Option<u64>,
    timeout_ms: Option<u64>,
    concurrency: Option<usize>,
    max_probes_per_sec: Option<u32>,
    upload_interval_secs: Option<u64>,
    batch_max: Option<usize>,
    /// Threads that run probes, batching and upload.
    worker_threads: Option<usize>,
    /// Politeness: at most this many ICMP echoes reach one block in any hour.
    icmp_max_probes_per_block_hour: Option<u32>,
    /// Probe private, reserved and bogon ranges (labs and tests only).
    #[serde(default)]
    allow_reserved: bool,
    /// Prefixes never probed (operators who asked to be left alone).
    #[serde(default)]
    opt_out: Vec<IpNet>,
    /// Largest catalog response body taken from the collector.
    max_catalog_bytes: Option<u64>,
    /// Most targets a catalog from the collector may expand into.
    max_targets: Option<u64>,
    /// Where the agent serves its own `/metrics`, `/-/healthy`, `/-/ready` and
    /// `/-/reload` (`IP:PORT`, `:PORT` or `HOST:PORT`); none by default.
    metrics_listen: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub agent_id: String,
    pub collector_url: Option<reqwest::Url>,
    /// Every collector to upload to: `collector_url` first, then `collector_urls`.
    pub collector_urls: Vec<reqwest::Url>,
    pub token: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub catalog: Vec<PathBuf>,
    pub catalog_refresh: Duration,
    pub spool_dir: Option<PathBuf>,
    pub spool_max_bytes: u64,
    pub round: Duration,
    pub timeout: Duration,
    pub concurrency: usize,
    pub max_probes_per_sec: u32,
    pub upload_interval: Duration,
    pub batch_max: usize,
    pub worker_threads: usize,
    pub icmp_max_probes_per_block_hour: u32,
    pub allow_reserved: bool,
    pub opt_out: Vec<IpNet>,
    /// Limits on a catalog received from the collector.
    pub catalog_limits: CatalogLimits,
    /// The agent's own HTTP endpoint (metrics, health, reload), if any.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl AgentConfig {
    /// The configuration of the agent inside `blackout standalone`.
    pub fn standalone() -> AgentConfig {
        AgentConfig {
            agent_id: "standalone".into(),
            collector_url: None,
            collector_urls: Vec::new(),
            token: None,
            ca_file: None,
            catalog: Vec::new(),
            catalog_refresh: Duration::from_secs(DEFAULT_CATALOG_REFRESH_SECS),
            spool_dir: None,
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            round: Duration::from_secs(DEFAULT_ROUND_SECS),
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
            concurrency: DEFAULT_CONCURRENCY,
            max_probes_per_sec: DEFAULT_MAX_PROBES_PER_SEC,
            upload_interval: Duration::from_secs(DEFAULT_UPLOAD_INTERVAL_SECS),
            batch_max: DEFAULT_BATCH_MAX,
            worker_threads: DEFAULT_WORKER_THREADS,
            icmp_max_probes_per_block_hour: blackout_probe::DEFAULT_ICMP_MAX_PROBES_PER_BLOCK_HOUR,
            allow_reserved: false,
            opt_out: Vec::new(),
            catalog_limits: CatalogLimits::default(),
            metrics_listen: None,
        }
    }

    /// The settings a reload cannot apply that differ between `self` (in force) and
    /// `new`, by key: they are built into the spool, the upload clients, the probers or
    /// the runtime when the agent starts. A reload applies the catalog, `round_secs`,
    /// `concurrency` and `max_probes_per_sec`.
    pub fn restart_only_changes(&self, new: &AgentConfig) -> Vec<&'static str> {
        let fixed: [(&str, bool); 18] = [
            ("agent_id", self.agent_id != new.agent_id),
            (
                "collector_url/collector_urls",
                self.collector_urls != new.collector_urls,
            ),
            ("token/token_file", self.token != new.token),
            ("ca_file", self.ca_file != new.ca_file),
            (
                "catalog (local files or from the collector)",
                self.catalog.is_empty() != new.catalog.is_empty(),
            ),
            (
                "catalog_refresh_secs",
                self.catalog_refresh != new.catalog_refresh,
            ),
            ("spool_dir", self.spool_dir != new.spool_dir),
            (
                "spool_max_bytes",
                self.spool_max_bytes != new.spool_max_bytes,
            ),
            ("timeout_ms", self.timeout != new.timeout),
            (
                "upload_interval_secs",
                self.upload_interval != new.upload_interval,
            ),
            ("batch_max", self.batch_max != new.batch_max),
            ("worker_threads", self.worker_threads != new.worker_threads),
            (
                "icmp_max_probes_per_block_hour",
                self.icmp_max_probes_per_block_hour != new.icmp_max_probes_per_block_hour,
            ),
            ("allow_reserved", self.allow_reserved != new.allow_reserved),
            // The probers check every resolved or redirected address against the policy
            // they were built with.
            ("opt_out", self.opt_out != new.opt_out),
            (
                "max_catalog_bytes",
                self.catalog_limits.max_catalog_bytes != new.catalog_limits.max_catalog_bytes,
            ),
            (
                "max_targets",
                self.catalog_limits.max_targets != new.catalog_limits.max_targets,
            ),
            ("metrics_listen", self.metrics_listen != new.metrics_listen),
        ];
        fixed.iter().filter(|(_, c)| *c).map(|(k, _)| *k).collect()
    }

    pub fn load(path: &Path) -> Result<AgentConfig, AgentConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| AgentConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates `text`. A TOML syntax error or an unknown key stops at the
    /// first; past that, every invalid value is reported at once (one line each, naming
    /// its key).
    pub fn parse(text: &str, path: &Path) -> Result<AgentConfig, AgentConfigError> {
        Self::parse_with(text, path, false).map(|(c, _)| c)
    }

    /// As [`AgentConfig::load`], for `check-config`: a `token_file` under
    /// `/run/credentials/` (systemd's `LoadCredential=`, which exists only inside the
    /// running unit) that is missing here is not an error but a note of what was not
    /// checked. Returns the config and those notes.
    pub fn check(path: &Path) -> Result<(AgentConfig, Vec<String>), AgentConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| AgentConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_with(&text, path, true)
    }

    fn parse_with(
        text: &str,
        path: &Path,
        unit_view: bool,
    ) -> Result<(AgentConfig, Vec<String>), AgentConfigError> {
        let raw: RawAgentConfig = toml::from_str(text).map_err(|e| AgentConfigError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let mut errors = Vec::new();
        let mut notes = Vec::new();
        let config = Self::validate(raw, path, unit_view, &mut errors, &mut notes);
        if errors.is_empty() {
            Ok((config, notes))
        } else {
            Err(AgentConfigError::Invalid {
                path: path.to_path_buf(),
                // One line per error, each naming the file, as the first does.
                message: errors.join(&format!("\n{}: ", path.display())),
            })
        }
    }

    /// The typed config from `raw`; each invalid value is pushed to `errors` and replaced
    /// by its default so that the others are still checked.
    fn validate(
        raw: RawAgentConfig,
        path: &Path,
        unit_view: bool,
        errors: &mut Vec<String>,
        notes: &mut Vec<String>,
    ) -> AgentConfig {
        if raw.agent_id.is_empty()
            || raw.agent_id.len() > 128
            || !raw
                .agent_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            errors.push(format!(
                "key `agent_id`: {:?} must be 1 to 128 of [A-Za-z0-9._-]",
                raw.agent_id
            ));
        }
        let parse_url = |key: &str, u: &str| {
            let url = reqwest::Url::parse(u).map_err(|e| format!("key `{key}`: {u:?}: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!("key `{key}`: {u:?} must be http:// or https://"));
            }
            Ok(url)
        };
        let collector_url = match &raw.collector_url {
            Some(u) => match parse_url("collector_url", u) {
                Ok(url) => Some(url),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
            None => {
                errors.push("key `collector_url`: required (where to upload)".into());
                None
            }
        };
        let mut collector_urls: Vec<reqwest::Url> = collector_url.iter().cloned().collect();
        for u in &raw.collector_urls {
            match parse_url("collector_urls", u) {
                Ok(url) if collector_urls.contains(&url) => {
                    errors.push(format!("key `collector_urls`: {u:?} is listed twice"));
                }
                Ok(url) => collector_urls.push(url),
                Err(e) => errors.push(e),
            }
        }
        if raw.collector_url.is_none() && !raw.collector_urls.is_empty() {
            errors.push(
                "key `collector_urls`: give `collector_url` (the first collector) too".into(),
            );
        }
        let token = match (&raw.token, &raw.token_file) {
            (Some(_), Some(_)) => {
                errors.push("keys `token` and `token_file`: give only one".into());
                None
            }
            (Some(t), None) => Some(t.trim().to_string()),
            (None, Some(f)) => {
                let base = path.parent().unwrap_or(Path::new("."));
                let f = base.join(f);
                match std::fs::read_to_string(&f) {
                    Ok(t) => Some(t.trim().to_string()),
                    Err(e)
                        if unit_view
                            && e.kind() == std::io::ErrorKind::NotFound
                            && f.starts_with("/run/credentials") =>
                    {
                        notes.push(format!(
                            "key `token_file`: {} exists only inside the running unit (systemd LoadCredential=); not checked here",
                            f.display()
                        ));
                        None
                    }
                    Err(e) => {
                        errors.push(format!("key `token_file`: {}: {e}", f.display()));
                        None
                    }
                }
            }
            (None, None) => None,
        };
        if token.as_deref().is_some_and(str::is_empty) {
            errors.push("key `token`: must not be empty".into());
        }
        let d = AgentConfig::standalone();
        let mut nonzero = |key: &str, v: Option<u64>, default: u64| match v {
            Some(0) => {
                errors.push(format!("key `{key}`: must be greater than 0"));
                default
            }
            Some(v) => v,
            None => default,
        };
        // Paths in the file are relative to the file, as a reader of it expects.
        let base = path.parent().unwrap_or(Path::new("."));
        let catalog_refresh = Duration::from_secs(nonzero(
            "catalog_refresh_secs",
            raw.catalog_refresh_secs,
            DEFAULT_CATALOG_REFRESH_SECS,
        ));
        let spool_max_bytes = nonzero("spool_max_bytes", raw.spool_max_bytes, d.spool_max_bytes);
        let round = Duration::from_secs(nonzero("round_secs", raw.round_secs, DEFAULT_ROUND_SECS));
        let timeout =
            Duration::from_millis(nonzero("timeout_ms", raw.timeout_ms, DEFAULT_TIMEOUT_MS));
        let concurrency = nonzero(
            "concurrency",
            raw.concurrency.map(|v| v as u64),
            DEFAULT_CONCURRENCY as u64,
        ) as usize;
        let max_probes_per_sec = nonzero(
            "max_probes_per_sec",
            raw.max_probes_per_sec.map(u64::from),
            DEFAULT_MAX_PROBES_PER_SEC as u64,
        ) as u32;
        let upload_interval = Duration::from_secs(nonzero(
            "upload_interval_secs",
            raw.upload_interval_secs,
            DEFAULT_UPLOAD_INTERVAL_SECS,
        ));
        let batch_max = nonzero(
            "batch_max",
            raw.batch_max.map(|v| v as u64),
            DEFAULT_BATCH_MAX as u64,
        ) as usize;
        let icmp_max_probes_per_block_hour = nonzero(
            "icmp_max_probes_per_block_hour",
            raw.icmp_max_probes_per_block_hour.map(u64::from),
            blackout_probe::DEFAULT_ICMP_MAX_PROBES_PER_BLOCK_HOUR as u64,
        ) as u32;
        let catalog_limits = CatalogLimits {
            max_catalog_bytes: nonzero(
                "max_catalog_bytes",
                raw.max_catalog_bytes,
                DEFAULT_MAX_CATALOG_BYTES,
            ),
            max_targets: nonzero("max_targets", raw.max_targets, DEFAULT_MAX_TARGETS),
        };
        let worker_threads = match raw.worker_threads {
            Some(n @ 1..=256) => n,
            Some(n) => {
                errors.push(format!(
                    "key `worker_threads`: {n} must be between 1 and 256"
                ));
                DEFAULT_WORKER_THREADS
            }
            None => DEFAULT_WORKER_THREADS,
        };
        if let Some(note) = politeness_note(round, icmp_max_probes_per_block_hour) {
            notes.push(note);
        }
        let metrics_listen = raw.metrics_listen.as_deref().and_then(|s| {
            blackout_model::listen::parse_listen(s)
                .map_err(|e| errors.push(format!("key `metrics_listen`: {e}")))
                .ok()
        });
        AgentConfig {
            agent_id: raw.agent_id,
            collector_url,
            collector_urls,
            token,
            ca_file: raw.ca_file.map(|p| base.join(p)),
            catalog: raw.catalog.iter().map(|p| base.join(p)).collect(),
            catalog_refresh,
            spool_dir: raw.spool_dir.map(|p| base.join(p)),
            spool_max_bytes,
            round,
            timeout,
            concurrency,
            max_probes_per_sec,
            upload_interval,
            batch_max,
            worker_threads,
            icmp_max_probes_per_block_hour,
            allow_reserved: raw.allow_reserved,
            opt_out: raw.opt_out,
            catalog_limits,
            metrics_listen,
        }
    }
}

/// Says so when `round` is too short for every ICMP block's one echo per round to fit
/// the hourly politeness limit: such blocks are then skipped some rounds.
pub fn politeness_note(round: Duration, per_hour: u32) -> Option<String> {
    let min = blackout_probe::min_round_for_politeness(per_hour);
    (round < min).then(|| {
        format!(
            "key `round_secs`: {} s is shorter than {} s, the shortest round in which every ICMP block's one echo per round fits `icmp_max_probes_per_block_hour` = {per_hour}: blocks will be skipped some rounds (counted in blackout_agent_politeness_skips_total)",
            round.as_secs(),
            min.as_secs_f64().ceil()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_file_key_and_line() {
        let p = Path::new("/etc/blackout/agent.toml");
        let ok = "agent_id = \"a1\"\ncollector_url = \"http://127.0.0.1:9797\"\n";
        let cases = [
            (
                "agent_id = \"a b\"\ncollector_url = \"http://x\"\n",
                "key `agent_id`",
            ),
            (
                "agent_id = \"a\"\ncollector_url = \"ftp://x\"\n",
                "key `collector_url`",
            ),
            ("agent_id = \"a\"\n", "key `collector_url`: required"),
            (&format!("{ok}round_secs = 0\n"), "key `round_secs`"),
            (&format!("{ok}round_sec = 10\n"), "line 3"),
            (
                &format!("{ok}worker_threads = 0\n"),
                "key `worker_threads`: 0 must be between 1 and 256",
            ),
            (&format!("{ok}opt_out = [\"300.0.0.0/8\"]\n"), "line 3"),
            (
                &format!("{ok}token = \"x\"\ntoken_file = \"t\"\n"),
                "only one",
            ),
            (
                &format!("{ok}collector_urls = [\"http://127.0.0.1:9797\"]\n"),
                "key `collector_urls`: \"http://127.0.0.1:9797\" is listed twice",
            ),
            (
                &format!("{ok}collector_urls = [\"udp://x\"]\n"),
                "key `collector_urls`",
            ),
            (
                &format!("{ok}metrics_listen = \"9798\"\n"),
                "key `metrics_listen`: \"9798\": expected IP:PORT, :PORT or HOST:PORT",
            ),
        ];
        for (text, want) in cases {
            let e = AgentConfig::parse(text, p).unwrap_err().to_string();
            assert!(e.starts_with("/etc/blackout/agent.toml: "), "{e}");
            assert!(e.contains(want), "want {want:?} in {e}");
        }
        let c = AgentConfig::parse(&format!("{ok}catalog = [\"probes\"]\n"), p).unwrap();
        assert_eq!(c.catalog, vec![PathBuf::from("/etc/blackout/probes")]);
        assert_eq!(c.round, Duration::from_secs(DEFAULT_ROUND_SECS));
        assert_eq!(c.collector_urls.len(), 1);
        let c = AgentConfig::parse(&format!("{ok}collector_urls = [\"https://b:9797/\"]\n"), p)
            .unwrap();
        assert_eq!(c.collector_urls.len(), 2);
        assert_eq!(c.collector_urls[1].as_str(), "https://b:9797/");
    }

    #[test]
    fn metrics_listen_takes_the_ecosystem_forms() {
        let p = Path::new("/etc/blackout/agent.toml");
        let ok = "agent_id = \"a1\"\ncollector_url = \"http://127.0.0.1:9797\"\n";
        assert_eq!(AgentConfig::parse(ok, p).unwrap().metrics_listen, None);
        for (v, want) in [
            (":9798", "0.0.0.0:9798"),
            ("127.0.0.1:9798", "127.0.0.1:9798"),
            ("localhost:9798", "127.0.0.1:9798"),
        ] {
            let c = AgentConfig::parse(&format!("{ok}metrics_listen = \"{v}\"\n"), p).unwrap();
            assert_eq!(c.metrics_listen.unwrap().to_string(), want, "{v}");
        }
    }

    #[test]
    fn a_reload_refuses_by_key_what_only_a_restart_applies() {
        let p = Path::new("/etc/blackout/agent.toml");
        let ok =
            "agent_id = \"a1\"\ncollector_url = \"http://127.0.0.1:9797\"\ncatalog = [\"c\"]\n";
        let old = AgentConfig::parse(ok, p).unwrap();
        let cases = [
            (
                "catalog = [\"c\", \"d\"]\nround_secs = 60\nconcurrency = 8\nmax_probes_per_sec = 10\n",
                vec![],
            ),
            ("spool_dir = \"/var/spool\"\n", vec!["spool_dir"]),
            ("metrics_listen = \":9798\"\n", vec!["metrics_listen"]),
            (
                "timeout_ms = 100\nopt_out = [\"192.0.2.0/24\"]\n",
                vec!["timeout_ms", "opt_out"],
            ),
        ];
        for (extra, want) in cases {
            let text = format!("{ok}{extra}").replacen(
                "catalog = [\"c\"]\n",
                "",
                usize::from(extra.starts_with("catalog")),
            );
            let new = AgentConfig::parse(&text, p).unwrap();
            assert_eq!(old.restart_only_changes(&new), want, "{extra}");
        }
        let fetch = AgentConfig::parse(&ok.replace("catalog = [\"c\"]\n", ""), p).unwrap();
        assert_eq!(
            old.restart_only_changes(&fetch),
            vec!["catalog (local files or from the collector)"]
        );
    }
}
