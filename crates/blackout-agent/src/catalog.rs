//! The catalog an agent receives from its collector, taken as untrusted input: a
//! collector that is hostile, or a man in the middle, must not be able to exhaust the
//! agent's memory. The body is read with a cap, and the targets a catalog expands into
//! are counted from its entries before anything is allocated for them.

use blackout_model::catalog::{
    Assignment, CatalogFile, IPV4_BLOCK_LEN, IPV6_BLOCK_LEN, SharedCatalog,
};
use ipnet::IpNet;
use std::sync::atomic::AtomicU64;

/// Default cap on a catalog response body.
pub const DEFAULT_MAX_CATALOG_BYTES: u64 = 256 << 20;
/// Default cap on the targets of a catalog: the whole IPv4 /24 space (2^24 blocks) and
/// 2^20 more for IPv6 blocks and DNS, HTTP and TCP targets.
pub const DEFAULT_MAX_TARGETS: u64 = (1 << 24) + (1 << 20);
/// Cap on an upload response body: the agent only needs the status and a short reason.
pub const MAX_UPLOAD_RESPONSE_BYTES: u64 = 4 << 10;

/// Catalogs from the collector this agent refused as over a limit since it started: one
/// count per process, reported to the collector with every batch (`SpoolStatus`).
pub static REFUSALS: AtomicU64 = AtomicU64::new(0);

/// The limits a received catalog must stay within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogLimits {
    pub max_catalog_bytes: u64,
    pub max_targets: u64,
}

impl Default for CatalogLimits {
    fn default() -> Self {
        CatalogLimits {
            max_catalog_bytes: DEFAULT_MAX_CATALOG_BYTES,
            max_targets: DEFAULT_MAX_TARGETS,
        }
    }
}

/// Why a catalog from the collector was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogRefusal {
    #[error("catalog body is larger than max_catalog_bytes = {limit} (refused after {read} bytes)")]
    TooLarge { limit: u64, read: u64 },
    #[error("catalog has {targets} targets, more than max_targets = {limit}")]
    TooManyTargets { targets: u64, limit: u64 },
    #[error("catalog from the collector is not valid JSON: {0}")]
    Json(String),
    #[error("invalid catalog from the collector: {0}")]
    Invalid(String),
    /// Not the catalog's fault: the collector could not be asked.
    #[error("{0}")]
    Unreachable(String),
}

impl CatalogRefusal {
    /// The configuration key of the limit that refused it, if a limit did.
    pub fn limit(&self) -> Option<(&'static str, u64)> {
        match self {
            CatalogRefusal::TooLarge { limit, .. } => Some(("max_catalog_bytes", *limit)),
            CatalogRefusal::TooManyTargets { limit, .. } => Some(("max_targets", *limit)),
            _ => None,
        }
    }
}

fn block_len(prefix: &IpNet, given: Option<u8>) -> u8 {
    given.unwrap_or(match prefix {
        IpNet::V4(_) => IPV4_BLOCK_LEN,
        IpNet::V6(_) => IPV6_BLOCK_LEN,
    })
}

/// How many targets `files` expand into, from their entries alone (saturating: a
/// hostile catalog may describe more than a u64 counts).
pub fn count_targets(files: &[CatalogFile]) -> u64 {
    files
        .iter()
        .flat_map(|f| {
            let blocks = f.icmp.iter().map(|e| {
                let bits = block_len(&e.prefix, e.block_len).saturating_sub(e.prefix.prefix_len());
                1u64.checked_shl(u32::from(bits)).unwrap_or(u64::MAX)
            });
            let others = [f.dns.len(), f.http.len(), f.tcp.len()]
                .into_iter()
                .map(|n| n as u64);
            blocks.chain(others)
        })
        .fold(0u64, u64::saturating_add)
}

/// Refuses `files` if they expand into more than `max_targets` targets.
pub fn check_target_count(files: &[CatalogFile], max_targets: u64) -> Result<(), CatalogRefusal> {
    check_count(count_targets(files), max_targets)
}

/// Refuses `targets` targets if they are more than `max_targets`.
pub fn check_count(targets: u64, max_targets: u64) -> Result<(), CatalogRefusal> {
    if targets > max_targets {
        return Err(CatalogRefusal::TooManyTargets {
            targets,
            limit: max_targets,
        });
    }
    Ok(())
}

/// How many targets an agent scans for its share of a fleet's assignment: its share
/// is about k/n of the catalog, so the catalog may be that much larger than
/// `max_targets`, twice for the spread of hashing, and never more than 64 times (a
/// collector that claims a huge fleet cannot make an agent scan without end).
pub fn share_scan_limit(max_targets: u64, a: &Assignment) -> u64 {
    let n = a.fleet.len().max(1) as u64;
    let k = (a.k.max(1) as u64).min(n);
    max_targets.saturating_mul((2 * n.div_ceil(k)).min(64))
}

/// A catalog from the collector: the agent's targets, or (`?share=rule`) the catalog as
/// written and the rule by which the agent takes its share.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    pub files: Vec<CatalogFile>,
    pub assignment: Option<Assignment>,
}

/// Parses and checks a catalog body as the agent receives it from `GET /api/v1/catalog`:
/// JSON (a list of files, or the files with the rule of the agent's share), every file
/// valid, within the limits. What passes can be expanded safely.
pub fn parse_catalog(body: &[u8], limits: &CatalogLimits) -> Result<Fetched, CatalogRefusal> {
    if body.len() as u64 > limits.max_catalog_bytes {
        return Err(CatalogRefusal::TooLarge {
            limit: limits.max_catalog_bytes,
            read: body.len() as u64,
        });
    }
    let json = |e: serde_json::Error| CatalogRefusal::Json(e.to_string());
    let shared = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let fetched = if shared {
        let s: SharedCatalog = serde_json::from_slice(body).map_err(json)?;
        Fetched {
            files: s.files,
            assignment: Some(s.assignment),
        }
    } else {
        Fetched {
            files: serde_json::from_slice(body).map_err(json)?,
            assignment: None,
        }
    };
    if let Some(m) = fetched.files.iter().find_map(|f| f.check().err()) {
        return Err(CatalogRefusal::Invalid(m));
    }
    if let Some(a) = &fetched.assignment {
        if a.agent.is_empty() || a.fleet.len() > MAX_FLEET {
            return Err(CatalogRefusal::Invalid(format!(
                "assignment: agent {:?} in a fleet of {} (at most {MAX_FLEET})",
                a.agent,
                a.fleet.len()
            )));
        }
        check_target_count(&fetched.files, share_scan_limit(limits.max_targets, a))?;
    } else {
        check_target_count(&fetched.files, limits.max_targets)?;
    }
    Ok(fetched)
}

/// The largest fleet an assignment may name: every agent's share is decided by hashing
/// each target against every agent.
pub const MAX_FLEET: usize = 10_000;

/// A response body read to at most `cap` bytes: `Err(read)` once it goes beyond (what
/// was read by then is dropped; the rest is never read).
pub async fn read_capped(
    mut resp: reqwest::Response,
    cap: u64,
) -> Result<Result<Vec<u8>, u64>, reqwest::Error> {
    if resp.content_length().is_some_and(|n| n > cap) {
        return Ok(Err(0));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if (body.len() + chunk.len()) as u64 > cap {
            return Ok(Err((body.len() + chunk.len()) as u64));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Ok(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(json: &str) -> Vec<CatalogFile> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn targets_are_counted_from_the_entries() {
        let f = files(
            r#"[{"country":"KZ","icmp":[{"prefix":"2.72.0.0/16","asn":1},{"prefix":"2a00::/16","asn":1,"block_len":40}],
                "tcp":[{"address":"192.0.2.1:443","asn":1}]}]"#,
        );
        assert_eq!(count_targets(&f), 256 + (1 << 24) + 1);
        // 100 entries of 2^24 blocks each: the catalog that aborted the agent.
        let e = r#"{"prefix":"2a00::/16","asn":1,"block_len":40}"#;
        let body = format!(
            r#"[{{"country":"KZ","icmp":[{}]}}]"#,
            vec![e; 100].join(",")
        );
        let r = parse_catalog(body.as_bytes(), &CatalogLimits::default()).unwrap_err();
        assert_eq!(
            r,
            CatalogRefusal::TooManyTargets {
                targets: 100 << 24,
                limit: DEFAULT_MAX_TARGETS
            }
        );
        assert_eq!(r.limit(), Some(("max_targets", DEFAULT_MAX_TARGETS)));
        let small = CatalogLimits {
            max_catalog_bytes: 10,
            ..CatalogLimits::default()
        };
        assert!(matches!(
            parse_catalog(body.as_bytes(), &small),
            Err(CatalogRefusal::TooLarge { limit: 10, .. })
        ));
    }
}
