//! The collector's configuration file (`collector.toml`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default address of the collector's HTTP API, metrics and status page.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9797";
/// Readings older than this do not count in the latest view.
pub const DEFAULT_FRESHNESS_SECS: u64 = 900;
/// Largest accepted request body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Observations measured further in the future than this are refused (clock skew).
pub const DEFAULT_MAX_FUTURE_SECS: u64 = 300;
/// Observations older than this are refused (a spool can hold days; more is a bug).
pub const DEFAULT_MAX_AGE_SECS: u64 = 30 * 86_400;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCollectorConfig {
    #[serde(default)]
    pub listen: Option<String>,
    /// Where accepted observations are logged (durably, before they are acknowledged).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Catalog files or directories served to agents; the embedded catalogs if absent.
    #[serde(default)]
    pub catalog: Vec<PathBuf>,
    #[serde(default)]
    pub freshness_secs: Option<u64>,
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    #[serde(default)]
    pub max_future_secs: Option<u64>,
    #[serde(default)]
    pub max_age_secs: Option<u64>,
    /// Days of observation log kept (and replayed at start); older day segments are
    /// deleted. Must cover `max_age_secs`.
    #[serde(default)]
    pub retention_days: Option<u32>,
    /// PEM certificate chain and private key: with both, the collector serves HTTPS only.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Agents allowed to upload, each with the SHA-256 (hex) of its token.
    #[serde(default)]
    pub agent: Vec<AgentEntry>,
    /// Fleet assignment: each target goes to this many agents (`GET /api/v1/catalog?agent=ID`
    /// returns the agent's share). Absent: every agent gets the whole catalog.
    #[serde(default)]
    pub assign_k: Option<usize>,
    /// An agent that sent nothing for this long is left out of the assignment.
    #[serde(default)]
    pub agent_timeout_secs: Option<u64>,
    /// Seconds between snapshots of the collector's state in `state_dir` (a restart then
    /// replays only the log written since the last one); 0: no snapshots.
    #[serde(default)]
    pub snapshot_interval_secs: Option<u64>,
    /// Settings of the detection engine.
    #[serde(default)]
    pub detect: blackout_detect::DetectConfig,
}

/// Where the collector's certificate chain and key are (PEM files).
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEntry {
    pub id: String,
    pub token_sha256: String,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    pub listen: SocketAddr,
    pub state_dir: Option<PathBuf>,
    pub catalog: Vec<PathBuf>,
    pub freshness_secs: u64,
    pub max_body_bytes: usize,
    pub max_future_secs: u64,
    pub max_age_secs: u64,
    pub retention_days: u32,
    /// HTTPS instead of plain HTTP.
    pub tls: Option<TlsFiles>,
    /// (agent id, SHA-256 of its token).
    pub agents: Vec<(String, [u8; 32])>,
    pub assign_k: Option<usize>,
    pub agent_timeout_secs: u64,
    /// 0: never.
    pub snapshot_interval_secs: u64,
    pub detect: blackout_detect::DetectConfig,
}

/// Default silence after which an agent no longer counts for the assignment.
pub const DEFAULT_AGENT_TIMEOUT_SECS: u64 = 1800;
/// A snapshot every five minutes: a restart replays at most that much of the log.
pub const DEFAULT_SNAPSHOT_INTERVAL_SECS: u64 = 300;

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            listen: DEFAULT_LISTEN.parse().expect("valid default"),
            state_dir: None,
            catalog: Vec::new(),
            freshness_secs: DEFAULT_FRESHNESS_SECS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_future_secs: DEFAULT_MAX_FUTURE_SECS,
            max_age_secs: DEFAULT_MAX_AGE_SECS,
            retention_days: super::log::DEFAULT_RETENTION_DAYS,
            tls: None,
            agents: Vec::new(),
            assign_k: None,
            agent_timeout_secs: DEFAULT_AGENT_TIMEOUT_SECS,
            snapshot_interval_secs: DEFAULT_SNAPSHOT_INTERVAL_SECS,
            detect: blackout_detect::DetectConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl CollectorConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let raw: RawCollectorConfig =
            toml::from_str(text).map_err(|e| invalid(e.to_string().trim_end().to_string()))?;
        let d = CollectorConfig::default();
        let listen = match raw.listen {
            Some(s) => s
                .parse()
                .map_err(|_| invalid(format!("key `listen`: {s:?} is not an IP:PORT address")))?,
            None => d.listen,
        };
        let mut agents = Vec::new();
        for (i, a) in raw.agent.iter().enumerate() {
            if a.id.is_empty() || a.id.len() > 128 {
                return Err(invalid(format!(
                    "agent[{i}] key `id`: must be 1 to 128 characters"
                )));
            }
            let mut hash = [0u8; 32];
            hex::decode_to_slice(&a.token_sha256, &mut hash).map_err(|_| {
                invalid(format!(
                    "agent[{i}] (id {:?}) key `token_sha256`: must be 64 hex digits (sha256sum of the token)",
                    a.id
                ))
            })?;
            if agents.iter().any(|(id, _)| id == &a.id) {
                return Err(invalid(format!(
                    "agent[{i}] key `id`: {:?} appears twice",
                    a.id
                )));
            }
            agents.push((a.id.clone(), hash));
        }
        let positive = |key: &str, v: Option<u64>, default: u64| match v {
            Some(0) => Err(invalid(format!("key `{key}`: must be greater than 0"))),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        raw.detect
            .validate()
            .map_err(|m| match m.split_once(": ") {
                Some((key, why)) => invalid(format!("key `detect.{key}`: {why}")),
                None => invalid(format!("table `detect`: {m}")),
            })?;
        if raw.assign_k == Some(0) {
            return Err(invalid("key `assign_k`: must be at least 1".into()));
        }
        let max_age_secs = positive("max_age_secs", raw.max_age_secs, d.max_age_secs)?;
        let retention_days = positive(
            "retention_days",
            raw.retention_days.map(u64::from),
            u64::from(d.retention_days),
        )? as u32;
        if u64::from(retention_days) * 86_400 < max_age_secs + 86_400 {
            // A batch re-sent after its segment expired would be counted twice.
            return Err(invalid(format!(
                "key `retention_days`: {retention_days} days must exceed `max_age_secs` ({max_age_secs} s) by a day, so that re-sent batches are still recognised"
            )));
        }
        let base = path.parent().unwrap_or(Path::new(""));
        let tls = match (raw.tls_cert_file, raw.tls_key_file) {
            (Some(c), Some(k)) => Some(TlsFiles {
                cert_file: base.join(c),
                key_file: base.join(k),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    "key `tls_key_file`: required with `tls_cert_file`".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "key `tls_cert_file`: required with `tls_key_file`".into(),
                ));
            }
        };
        Ok(CollectorConfig {
            assign_k: raw.assign_k,
            agent_timeout_secs: positive(
                "agent_timeout_secs",
                raw.agent_timeout_secs,
                DEFAULT_AGENT_TIMEOUT_SECS,
            )?,
            snapshot_interval_secs: raw
                .snapshot_interval_secs
                .unwrap_or(DEFAULT_SNAPSHOT_INTERVAL_SECS),
            detect: raw.detect,
            listen,
            state_dir: raw.state_dir,
            catalog: raw.catalog,
            retention_days,
            tls,
            freshness_secs: positive("freshness_secs", raw.freshness_secs, d.freshness_secs)?,
            max_body_bytes: positive(
                "max_body_bytes",
                raw.max_body_bytes.map(|v| v as u64),
                d.max_body_bytes as u64,
            )? as usize,
            max_future_secs: positive("max_future_secs", raw.max_future_secs, d.max_future_secs)?,
            max_age_secs,
            agents,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_file_key_and_line() {
        let p = Path::new("collector.toml");
        let cases = [
            ("listen = \"nowhere\"\n", "key `listen`"),
            ("\nbogus = 1\n", "line 2"),
            (
                "[[agent]]\nid = \"a\"\ntoken_sha256 = \"xyz\"\n",
                "agent[0] (id \"a\") key `token_sha256`",
            ),
            ("freshness_secs = 0\n", "key `freshness_secs`"),
            ("[detect]\nbin_secs = 0\n", "key `detect.bin_secs`"),
            ("[detect]\nbins_secs = 60\n", "line 2"),
            ("retention_days = 0\n", "key `retention_days`"),
            (
                "retention_days = 30\n",
                "key `retention_days`: 30 days must exceed",
            ),
            (
                "tls_cert_file = \"c.pem\"\n",
                "key `tls_key_file`: required",
            ),
            (
                "tls_key_file = \"k.pem\"\n",
                "key `tls_cert_file`: required",
            ),
        ];
        for (text, want) in cases {
            let e = CollectorConfig::parse(text, p).unwrap_err().to_string();
            assert!(e.starts_with("collector.toml: "), "{e}");
            assert!(e.contains(want), "want {want:?} in {e}");
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = CollectorConfig::parse("", Path::new("c.toml")).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert!(c.agents.is_empty());
        assert!(c.tls.is_none());
    }

    #[test]
    fn tls_files_are_relative_to_the_config_file() {
        let text = "tls_cert_file = \"tls/cert.pem\"\ntls_key_file = \"/abs/key.pem\"\nretention_days = 2\nmax_age_secs = 3600\n";
        let c = CollectorConfig::parse(text, Path::new("/etc/blackout/collector.toml")).unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.cert_file, PathBuf::from("/etc/blackout/tls/cert.pem"));
        assert_eq!(tls.key_file, PathBuf::from("/abs/key.pem"));
        assert_eq!(c.retention_days, 2);
    }
}
