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
/// Open connections at most (each costs a file descriptor and a task).
pub const DEFAULT_MAX_CONNECTIONS: usize = 2048;
/// Of `max_connections`, how many only trusted connections may hold: an agent that has
/// shown its token, or a peer in `trusted_networks`. Unauthenticated traffic never gets
/// these.
pub const DEFAULT_RESERVED_CONNECTIONS: usize = 256;
/// Open connections from one address outside `trusted_networks`.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 64;
/// From a connection's start, or the end of its previous response, the next request
/// head must be complete within this: a trickle of bytes does not extend it. Also how
/// long an idle keep-alive connection stays open.
pub const DEFAULT_REQUEST_HEAD_TIMEOUT_SECS: u64 = 10;
/// An upload's body must arrive within this, plus one second per
/// `body_min_bytes_per_sec` received; past it, 408.
pub const DEFAULT_BODY_TIMEOUT_SECS: u64 = 30;
/// The slowest upload rate kept going past `body_timeout_secs` (16 KiB/s: an 8 MiB
/// batch may take 8.5 minutes).
pub const DEFAULT_BODY_MIN_BYTES_PER_SEC: u64 = 16 * 1024;
/// Request bodies held in memory at once, summed over every upload.
pub const DEFAULT_BODY_BUDGET_BYTES: usize = 64 * 1024 * 1024;
/// Request bodies held in memory at once for one agent: one agent's uploads can take no
/// more of `body_budget_bytes` than this, whatever they do.
pub const DEFAULT_AGENT_BODY_BUDGET_BYTES: usize = 16 * 1024 * 1024;
/// Peers trusted by address: Prometheus scraping from the same host.
pub const DEFAULT_TRUSTED_NETWORKS: [&str; 2] = ["127.0.0.1/32", "::1/128"];

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
    /// Days of per-bin aggregates kept after their raw observations expired (0: none).
    #[serde(default)]
    pub aggregate_retention_days: Option<u32>,
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
    #[serde(default)]
    pub max_connections: Option<usize>,
    #[serde(default)]
    pub reserved_connections: Option<usize>,
    #[serde(default)]
    pub max_connections_per_ip: Option<usize>,
    /// Networks whose peers are trusted by address (scrapers): exempt from the per-address
    /// limit, may use the reserved connections.
    #[serde(default)]
    pub trusted_networks: Option<Vec<String>>,
    #[serde(default)]
    pub request_head_timeout_secs: Option<u64>,
    #[serde(default)]
    pub body_timeout_secs: Option<u64>,
    #[serde(default)]
    pub body_min_bytes_per_sec: Option<u64>,
    #[serde(default)]
    pub body_budget_bytes: Option<usize>,
    #[serde(default)]
    pub agent_body_budget_bytes: Option<usize>,
    /// Settings of the detection engine.
    #[serde(default)]
    pub detect: blackout_detect::DetectConfig,
    /// BGP sources and the route table; absent: no BGP signal.
    #[serde(default)]
    pub bgp: Option<RawBgpConfig>,
}

/// `[bgp]`: the BMP listener and how the route table judges peers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBgpConfig {
    /// Where routers connect with BMP (RFC 7854); absent: no BMP listener.
    #[serde(default)]
    pub bmp_listen: Option<String>,
    #[serde(default)]
    pub peer_quorum: Option<u16>,
    #[serde(default)]
    pub full_table_min_prefixes: Option<u32>,
    #[serde(default)]
    pub peer_silence_secs: Option<u64>,
    /// The RIPE RIS Live client; off by default (a collector is often offline).
    #[serde(default)]
    pub ris_live: bool,
    #[serde(default)]
    pub ris_live_url: Option<String>,
    #[serde(default)]
    pub ris_live_hosts: Vec<String>,
    #[serde(default)]
    pub ris_live_prefixes: Vec<String>,
    /// RIS collector -> its RIB dump (MRT), the initial table of its peers.
    #[serde(default)]
    pub ris_live_rib_dumps: std::collections::BTreeMap<String, PathBuf>,
}

/// The validated `[bgp]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct BgpConfig {
    pub bmp_listen: Option<SocketAddr>,
    pub table: blackout_bgp::TableConfig,
    /// `None`: no RIS Live client.
    pub ris_live: Option<blackout_bgp::RisLiveSettings>,
}

impl RawBgpConfig {
    fn validate(&self, errors: &mut Vec<String>) -> BgpConfig {
        let d = blackout_bgp::TableConfig::default();
        let bmp_listen = self.bmp_listen.as_ref().and_then(|s| {
            s.parse()
                .map_err(|_| {
                    errors.push(format!(
                        "key `bgp.bmp_listen`: {s:?} is not an IP:PORT address"
                    ))
                })
                .ok()
        });
        if self.peer_quorum == Some(0) {
            errors.push("key `bgp.peer_quorum`: must be at least 1".into());
        }
        if self.full_table_min_prefixes == Some(0) {
            errors.push("key `bgp.full_table_min_prefixes`: must be at least 1".into());
        }
        let ris_live = self.ris_live_settings(errors);
        BgpConfig {
            bmp_listen,
            ris_live,
            table: blackout_bgp::TableConfig {
                peer_quorum: self.peer_quorum.filter(|&q| q > 0),
                full_table_min_prefixes: self
                    .full_table_min_prefixes
                    .filter(|&n| n > 0)
                    .unwrap_or(d.full_table_min_prefixes),
                peer_silence_secs: self.peer_silence_secs.unwrap_or(d.peer_silence_secs),
                emit_all_interval_secs: d.emit_all_interval_secs,
            },
        }
    }

    fn ris_live_settings(&self, errors: &mut Vec<String>) -> Option<blackout_bgp::RisLiveSettings> {
        let mut s = blackout_bgp::RisLiveSettings::default();
        if let Some(url) = &self.ris_live_url {
            if !(url.starts_with("ws://") || url.starts_with("wss://")) {
                errors.push(format!(
                    "key `bgp.ris_live_url`: {url:?} is not a ws:// or wss:// URL"
                ));
            }
            s.url = url.clone();
        }
        for host in &self.ris_live_hosts {
            if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
                errors.push(format!(
                    "key `bgp.ris_live_hosts`: {host:?} is not a RIS collector name (rrc00)"
                ));
            }
        }
        s.hosts = self.ris_live_hosts.clone();
        for p in &self.ris_live_prefixes {
            match p.parse() {
                Ok(net) => s.prefixes.push(net),
                Err(_) => errors.push(format!(
                    "key `bgp.ris_live_prefixes`: {p:?} is not a prefix (192.0.2.0/24)"
                )),
            }
        }
        s.rib_dumps = self
            .ris_live_rib_dumps
            .iter()
            .map(|(host, path)| (host.clone(), path.clone()))
            .collect();
        self.ris_live.then_some(s)
    }
}

/// What the HTTP server lets each peer, connection and upload take.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub reserved_connections: usize,
    pub max_connections_per_ip: usize,
    pub trusted_networks: Vec<ipnet::IpNet>,
    pub request_head_timeout_secs: u64,
    pub body_timeout_secs: u64,
    pub body_min_bytes_per_sec: u64,
    pub body_budget_bytes: usize,
    pub agent_body_budget_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            reserved_connections: DEFAULT_RESERVED_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            trusted_networks: DEFAULT_TRUSTED_NETWORKS
                .iter()
                .map(|n| n.parse().expect("valid default"))
                .collect(),
            request_head_timeout_secs: DEFAULT_REQUEST_HEAD_TIMEOUT_SECS,
            body_timeout_secs: DEFAULT_BODY_TIMEOUT_SECS,
            body_min_bytes_per_sec: DEFAULT_BODY_MIN_BYTES_PER_SEC,
            body_budget_bytes: DEFAULT_BODY_BUDGET_BYTES,
            agent_body_budget_bytes: DEFAULT_AGENT_BODY_BUDGET_BYTES,
        }
    }
}

impl HttpLimits {
    /// Whether `ip` is in `trusted_networks` (an IPv4-mapped IPv6 address counts as
    /// its IPv4 address, as a dual-stack listener reports it).
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_networks.iter().any(|n| n.contains(&ip))
    }
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
    /// Days of per-bin aggregates of expired log segments kept (0: none written).
    pub aggregate_retention_days: u32,
    /// HTTPS instead of plain HTTP.
    pub tls: Option<TlsFiles>,
    /// (agent id, SHA-256 of its token).
    pub agents: Vec<(String, [u8; 32])>,
    pub assign_k: Option<usize>,
    pub agent_timeout_secs: u64,
    /// 0: never.
    pub snapshot_interval_secs: u64,
    pub http: HttpLimits,
    pub detect: blackout_detect::DetectConfig,
    /// `[bgp]`; `None`: no BGP signal.
    pub bgp: Option<BgpConfig>,
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
            aggregate_retention_days: super::aggregates::DEFAULT_AGGREGATE_RETENTION_DAYS,
            tls: None,
            agents: Vec::new(),
            assign_k: None,
            agent_timeout_secs: DEFAULT_AGENT_TIMEOUT_SECS,
            snapshot_interval_secs: DEFAULT_SNAPSHOT_INTERVAL_SECS,
            http: HttpLimits::default(),
            detect: blackout_detect::DetectConfig::default(),
            bgp: None,
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

    /// Parses and validates `text`. A TOML syntax error or an unknown key stops at the
    /// first; past that, every invalid value is reported at once (one line each, naming
    /// its key), not only the first.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawCollectorConfig = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let mut errors = Vec::new();
        let config = Self::validate(raw, path, &mut errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                // One line per error, each naming the file, as the first does.
                message: errors.join(&format!("\n{}: ", path.display())),
            })
        }
    }

    /// The typed config from `raw`; each invalid value is pushed to `errors` and replaced
    /// by its default so the others are still checked.
    fn validate(raw: RawCollectorConfig, path: &Path, errors: &mut Vec<String>) -> Self {
        let d = CollectorConfig::default();
        let mut or = |r: Result<u64, String>, default: u64| match r {
            Ok(v) => v,
            Err(e) => {
                errors.push(e);
                default
            }
        };
        let positive = |key: &str, v: Option<u64>, default: u64| match v {
            Some(0) => Err(format!("key `{key}`: must be greater than 0")),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        let max_age_secs = or(
            positive("max_age_secs", raw.max_age_secs, d.max_age_secs),
            d.max_age_secs,
        );
        let retention_days = or(
            positive(
                "retention_days",
                raw.retention_days.map(u64::from),
                u64::from(d.retention_days),
            ),
            u64::from(d.retention_days),
        ) as u32;
        let max_body_bytes = or(
            positive(
                "max_body_bytes",
                raw.max_body_bytes.map(|v| v as u64),
                d.max_body_bytes as u64,
            ),
            d.max_body_bytes as u64,
        ) as usize;
        let agent_timeout_secs = or(
            positive(
                "agent_timeout_secs",
                raw.agent_timeout_secs,
                DEFAULT_AGENT_TIMEOUT_SECS,
            ),
            DEFAULT_AGENT_TIMEOUT_SECS,
        );
        let freshness_secs = or(
            positive("freshness_secs", raw.freshness_secs, d.freshness_secs),
            d.freshness_secs,
        );
        let max_future_secs = or(
            positive("max_future_secs", raw.max_future_secs, d.max_future_secs),
            d.max_future_secs,
        );

        let listen = match &raw.listen {
            Some(s) => s.parse().unwrap_or_else(|_| {
                errors.push(format!("key `listen`: {s:?} is not an IP:PORT address"));
                d.listen
            }),
            None => d.listen,
        };
        let mut agents = Vec::new();
        for (i, a) in raw.agent.iter().enumerate() {
            if a.id.is_empty() || a.id.len() > 128 {
                errors.push(format!("agent[{i}] key `id`: must be 1 to 128 characters"));
            }
            let mut hash = [0u8; 32];
            if hex::decode_to_slice(&a.token_sha256, &mut hash).is_err() {
                errors.push(format!(
                    "agent[{i}] (id {:?}) key `token_sha256`: must be 64 hex digits (sha256sum of the token)",
                    a.id
                ));
                continue;
            }
            if agents.iter().any(|(id, _)| id == &a.id) {
                errors.push(format!("agent[{i}] key `id`: {:?} appears twice", a.id));
            }
            // One token, one agent: with two, the token would authenticate only one of
            // them and the other would get 403 for ever.
            if let Some((other, _)) = agents.iter().find(|(_, h)| *h == hash) {
                errors.push(format!(
                    "agent[{i}] (id {:?}) key `token_sha256`: the same token as agent {other:?}; give each agent its own token",
                    a.id
                ));
            }
            agents.push((a.id.clone(), hash));
        }
        if let Err(m) = raw.detect.validate() {
            errors.push(match m.split_once(": ") {
                Some((key, why)) => format!("key `detect.{key}`: {why}"),
                None => format!("table `detect`: {m}"),
            });
        }
        if raw.assign_k == Some(0) {
            errors.push("key `assign_k`: must be at least 1".into());
        }
        if u64::from(retention_days) * 86_400 < max_age_secs + 86_400 {
            // A batch re-sent after its segment expired would be counted twice.
            errors.push(format!(
                "key `retention_days`: {retention_days} days must exceed `max_age_secs` ({max_age_secs} s) by a day, so that re-sent batches are still recognised"
            ));
        }
        let aggregate_retention_days = raw
            .aggregate_retention_days
            .unwrap_or(d.aggregate_retention_days);
        if aggregate_retention_days != 0 && aggregate_retention_days <= retention_days {
            // Aggregates are written when raw segments expire: kept no longer, they would
            // be deleted as they are written.
            errors.push(format!(
                "key `aggregate_retention_days`: {aggregate_retention_days} days must exceed `retention_days` ({retention_days}), or be 0 for no aggregates"
            ));
        }
        let http = http_limits(&raw, max_body_bytes).unwrap_or_else(|e| {
            errors.push(e);
            HttpLimits::default()
        });
        let base = path.parent().unwrap_or(Path::new(""));
        let tls = match (raw.tls_cert_file, raw.tls_key_file) {
            (Some(c), Some(k)) => Some(TlsFiles {
                cert_file: base.join(c),
                key_file: base.join(k),
            }),
            (None, None) => None,
            (Some(_), None) => {
                errors.push("key `tls_key_file`: required with `tls_cert_file`".into());
                None
            }
            (None, Some(_)) => {
                errors.push("key `tls_cert_file`: required with `tls_key_file`".into());
                None
            }
        };
        let mut bgp = raw.bgp.as_ref().map(|b| {
            let mut b = b.validate(errors);
            // Every detector bin gets a reading of every entity, changed or not.
            b.table.emit_all_interval_secs = b
                .table
                .emit_all_interval_secs
                .min(raw.detect.bin_secs.max(1));
            b
        });
        // Like the TLS files: relative to the config file.
        if let Some(ris) = bgp.as_mut().and_then(|b| b.ris_live.as_mut()) {
            let base = path.parent().unwrap_or(Path::new(""));
            for (_, dump) in &mut ris.rib_dumps {
                *dump = base.join(&*dump);
            }
        }
        CollectorConfig {
            bgp,
            assign_k: raw.assign_k,
            agent_timeout_secs,
            snapshot_interval_secs: raw
                .snapshot_interval_secs
                .unwrap_or(DEFAULT_SNAPSHOT_INTERVAL_SECS),
            detect: raw.detect,
            listen,
            state_dir: raw.state_dir,
            catalog: raw.catalog,
            retention_days,
            aggregate_retention_days,
            tls,
            freshness_secs,
            max_body_bytes,
            http,
            max_future_secs,
            max_age_secs,
            agents,
        }
    }
}

/// The HTTP server's limits, checked against each other: each error names its key.
fn http_limits(raw: &RawCollectorConfig, max_body_bytes: usize) -> Result<HttpLimits, String> {
    let d = HttpLimits::default();
    let positive = |key: &str, v: Option<u64>, default: u64| match v {
        Some(0) => Err(format!("key `{key}`: must be greater than 0")),
        Some(v) => Ok(v),
        None => Ok(default),
    };
    let size = |key: &str, v: Option<usize>, default: usize| {
        positive(key, v.map(|v| v as u64), default as u64).map(|v| v as usize)
    };
    let max_connections = size("max_connections", raw.max_connections, d.max_connections)?;
    let reserved_connections = raw.reserved_connections.unwrap_or(d.reserved_connections);
    if reserved_connections >= max_connections {
        return Err(format!(
            "key `reserved_connections`: {reserved_connections} must be less than `max_connections` ({max_connections})"
        ));
    }
    let trusted_networks = match &raw.trusted_networks {
        None => d.trusted_networks,
        Some(list) => list
            .iter()
            .map(|n| {
                n.parse::<ipnet::IpNet>()
                    .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map(|n| n.trunc())
                    .map_err(|_| {
                        format!("key `trusted_networks`: {n:?} is not an address or CIDR network")
                    })
            })
            .collect::<Result<_, _>>()?,
    };
    let body_budget_bytes = size(
        "body_budget_bytes",
        raw.body_budget_bytes,
        d.body_budget_bytes,
    )?;
    let agent_body_budget_bytes = size(
        "agent_body_budget_bytes",
        raw.agent_body_budget_bytes,
        d.agent_body_budget_bytes,
    )?;
    if agent_body_budget_bytes < max_body_bytes {
        return Err(format!(
            "key `agent_body_budget_bytes`: {agent_body_budget_bytes} must be at least `max_body_bytes` ({max_body_bytes}), or no agent could upload a batch of the largest size"
        ));
    }
    if agent_body_budget_bytes > body_budget_bytes {
        return Err(format!(
            "key `agent_body_budget_bytes`: {agent_body_budget_bytes} must not exceed `body_budget_bytes` ({body_budget_bytes})"
        ));
    }
    Ok(HttpLimits {
        max_connections,
        reserved_connections,
        max_connections_per_ip: size(
            "max_connections_per_ip",
            raw.max_connections_per_ip,
            d.max_connections_per_ip,
        )?,
        trusted_networks,
        request_head_timeout_secs: positive(
            "request_head_timeout_secs",
            raw.request_head_timeout_secs,
            d.request_head_timeout_secs,
        )?,
        body_timeout_secs: positive(
            "body_timeout_secs",
            raw.body_timeout_secs,
            d.body_timeout_secs,
        )?,
        body_min_bytes_per_sec: positive(
            "body_min_bytes_per_sec",
            raw.body_min_bytes_per_sec,
            d.body_min_bytes_per_sec,
        )?,
        body_budget_bytes,
        agent_body_budget_bytes,
    })
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
            (
                "[bgp]\nbmp_listen = \"router\"\n",
                "key `bgp.bmp_listen`: \"router\" is not an IP:PORT address",
            ),
            (
                "[bgp]\npeer_quorum = 0\n",
                "key `bgp.peer_quorum`: must be at least 1",
            ),
            (
                "[bgp]\nfull_table_min_prefixes = 0\n",
                "key `bgp.full_table_min_prefixes`: must be at least 1",
            ),
            ("[bgp]\npeer_quorom = 2\n", "line 2"),
            (
                "[bgp]\nris_live = true\nris_live_url = \"https://ris-live.ripe.net/v1/ws/\"\n",
                "key `bgp.ris_live_url`: \"https://ris-live.ripe.net/v1/ws/\" is not a ws:// or wss:// URL",
            ),
            (
                "[bgp]\nris_live_hosts = [\"rrc 00\"]\n",
                "key `bgp.ris_live_hosts`: \"rrc 00\" is not a RIS collector name (rrc00)",
            ),
            (
                "[bgp]\nris_live_prefixes = [\"192.0.2.0/33\"]\n",
                "key `bgp.ris_live_prefixes`: \"192.0.2.0/33\" is not a prefix (192.0.2.0/24)",
            ),
            ("[detect]\nbin_secs = 0\n", "key `detect.bin_secs`"),
            ("[detect]\nbins_secs = 60\n", "line 2"),
            ("retention_days = 0\n", "key `retention_days`"),
            (
                "aggregate_retention_days = 35\n",
                "key `aggregate_retention_days`: 35 days must exceed `retention_days` (35)",
            ),
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
            (
                "[[agent]]\nid = \"a\"\ntoken_sha256 = \"AB00000000000000000000000000000000000000000000000000000000000000\"\n[[agent]]\nid = \"b\"\ntoken_sha256 = \"ab00000000000000000000000000000000000000000000000000000000000000\"\n",
                "agent[1] (id \"b\") key `token_sha256`: the same token as agent \"a\"",
            ),
            (
                "max_connections = 100\nreserved_connections = 100\n",
                "key `reserved_connections`: 100 must be less than `max_connections` (100)",
            ),
            (
                "max_connections_per_ip = 0\n",
                "key `max_connections_per_ip`",
            ),
            (
                "request_head_timeout_secs = 0\n",
                "key `request_head_timeout_secs`",
            ),
            ("body_timeout_secs = 0\n", "key `body_timeout_secs`"),
            (
                "body_min_bytes_per_sec = 0\n",
                "key `body_min_bytes_per_sec`",
            ),
            (
                "trusted_networks = [\"10.0.0.0/33\"]\n",
                "key `trusted_networks`: \"10.0.0.0/33\"",
            ),
            (
                "agent_body_budget_bytes = 1024\n",
                "key `agent_body_budget_bytes`: 1024 must be at least `max_body_bytes`",
            ),
            (
                "body_budget_bytes = 1048576\nmax_body_bytes = 1024\n",
                "key `agent_body_budget_bytes`: 16777216 must not exceed `body_budget_bytes`",
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
        assert_eq!(c.http, HttpLimits::default());
    }

    #[test]
    fn trusted_networks_take_addresses_and_networks() {
        let c = CollectorConfig::parse(
            "trusted_networks = [\"10.1.2.3\", \"192.0.2.77/24\", \"2001:db8::/32\"]\n",
            Path::new("c.toml"),
        )
        .unwrap();
        let trusts = |ip: &str| c.http.trusts(ip.parse().unwrap());
        assert!(trusts("10.1.2.3"));
        assert!(!trusts("10.1.2.4"));
        assert!(trusts("192.0.2.1"));
        assert!(trusts("::ffff:192.0.2.9"));
        assert!(trusts("2001:db8::1"));
        assert!(!trusts("127.0.0.1"));
        let d = HttpLimits::default();
        assert!(d.trusts("127.0.0.1".parse().unwrap()));
        assert!(d.trusts("::1".parse().unwrap()));
        assert!(!d.trusts("127.0.0.2".parse().unwrap()));
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

    #[test]
    fn ris_live_is_off_by_default_and_takes_its_keys() {
        let c =
            CollectorConfig::parse("[bgp]\n", Path::new("/etc/blackout/collector.toml")).unwrap();
        assert_eq!(c.bgp.unwrap().ris_live, None);
        let text = "[bgp]\nris_live = true\nris_live_hosts = [\"rrc00\", \"rrc21\"]\n\
                    ris_live_prefixes = [\"192.0.2.0/24\"]\n\
                    [bgp.ris_live_rib_dumps]\nrrc00 = \"ris/rrc00-bview.gz\"\n";
        let c = CollectorConfig::parse(text, Path::new("/etc/blackout/collector.toml")).unwrap();
        let ris = c.bgp.unwrap().ris_live.unwrap();
        assert_eq!(ris.url, blackout_bgp::rislive::DEFAULT_URL);
        assert_eq!(ris.hosts, ["rrc00", "rrc21"]);
        assert_eq!(
            ris.prefixes,
            ["192.0.2.0/24".parse::<ipnet::IpNet>().unwrap()]
        );
        assert_eq!(
            ris.rib_dumps,
            [(
                "rrc00".to_string(),
                PathBuf::from("/etc/blackout/ris/rrc00-bview.gz")
            )]
        );
    }
}
