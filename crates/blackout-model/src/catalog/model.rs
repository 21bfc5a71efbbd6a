//! The catalog's file format (serde) and the targets it expands into.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::observation::{Signal, is_country_code};

/// Default block size for IPv4 ICMP targets: a /24, as IODA and Trinocular count.
pub const IPV4_BLOCK_LEN: u8 = 24;
/// Default block size for IPv6 ICMP targets.
pub const IPV6_BLOCK_LEN: u8 = 48;
/// The country code used by catalogs whose targets belong to no watched country
/// (control targets such as anycast resolvers).
pub const NO_COUNTRY: &str = "ZZ";

/// One catalog file, as written in `probes/<cc>.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    /// ISO 3166 alpha-2, upper case (`ZZ` for no country).
    pub country: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Control targets tell whether a vantage point is itself connected; they are never
    /// aggregated as a country.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub control: bool,
    /// Where the data came from, and when: kept with the catalog for provenance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source: Vec<SourceEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network: Vec<NetworkEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub icmp: Vec<IcmpEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<DnsEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceEntry {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licence: Option<String>,
}

/// A network (origin AS) of the country, with a human name for dashboards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkEntry {
    pub asn: u32,
    pub name: String,
}

/// ICMP echo targets: a prefix expanded into blocks, or one block with known hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcmpEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub prefix: IpNet,
    pub asn: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Addresses known to answer (the block's ever-active set). Only for an entry that
    /// is a single block.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<IpAddr>,
    /// Share of `hosts` expected to answer at any time (Trinocular's A(b)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<f64>,
    /// Block length this prefix splits into; defaults to /24 (IPv4) or /48 (IPv6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_len: Option<u8>,
}

/// A DNS query to a given server (or `system`, the agent's own resolver).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `IP`, `IP:PORT`, `[IPv6]:PORT`, or `system`.
    pub server: String,
    /// Query name, e.g. `kz.`.
    pub qname: String,
    /// Record type, e.g. `SOA`, `NS`, `A`.
    #[serde(default = "default_qtype")]
    pub qtype: String,
    pub asn: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Server name for humans (e.g. `ns.nic.kz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

fn default_qtype() -> String {
    "SOA".into()
}

/// An HTTP(S) URL; `address` pins the server's IP, as curl's `--resolve` does, so the
/// HTTP signal does not also measure DNS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub url: String,
    pub asn: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// Accepted status codes; empty means any 2xx or 3xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect_status: Vec<u16>,
}

/// A TCP connect target (many hosts drop ICMP but accept 443).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub address: SocketAddr,
    pub asn: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// Where a DNS query goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DnsServer {
    /// The agent's own configured resolver (`/etc/resolv.conf`): for agents inside a
    /// country, whose local resolver is part of what a shutdown cuts.
    System,
    Addr(SocketAddr),
}

/// What one target is, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetKind {
    Icmp {
        block: IpNet,
        hosts: Vec<IpAddr>,
        availability: Option<f64>,
    },
    Dns {
        server: DnsServer,
        qname: String,
        qtype: String,
    },
    Http {
        url: String,
        address: Option<IpAddr>,
        expect_status: Vec<u16>,
    },
    Tcp {
        address: SocketAddr,
    },
}

/// One thing to probe, with the labels its observations carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub id: String,
    pub country: String,
    pub asn: u32,
    pub region: Option<String>,
    pub control: bool,
    pub kind: TargetKind,
}

impl Target {
    pub fn signal(&self) -> Signal {
        match self.kind {
            TargetKind::Icmp { .. } => Signal::Icmp,
            TargetKind::Dns { .. } => Signal::Dns,
            TargetKind::Http { .. } => Signal::Http,
            TargetKind::Tcp { .. } => Signal::Tcp,
        }
    }
}

/// Parses `IP`, `IP:PORT`, `[IPv6]:PORT` or `system`.
pub fn parse_dns_server(s: &str) -> Result<DnsServer, String> {
    if s == "system" {
        return Ok(DnsServer::System);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(DnsServer::Addr(SocketAddr::new(ip, 53)));
    }
    s.parse::<SocketAddr>()
        .map(DnsServer::Addr)
        .map_err(|_| format!("{s:?} is not an IP address, IP:PORT or \"system\""))
}

fn block_len_for(prefix: &IpNet, given: Option<u8>) -> u8 {
    given.unwrap_or(match prefix {
        IpNet::V4(_) => IPV4_BLOCK_LEN,
        IpNet::V6(_) => IPV6_BLOCK_LEN,
    })
}

impl CatalogFile {
    /// Checks what serde cannot; the message names the section, entry index and key.
    pub fn check(&self) -> Result<(), String> {
        if !is_country_code(&self.country) {
            return Err(format!(
                "key `country`: {:?} is not an ISO 3166 alpha-2 code in upper case",
                self.country
            ));
        }
        for (i, e) in self.icmp.iter().enumerate() {
            let at = |key: &str| format!("icmp[{i}] (prefix {}) key `{key}`", e.prefix);
            let len = block_len_for(&e.prefix, e.block_len);
            let max = if e.prefix.addr().is_ipv4() { 32 } else { 128 };
            if len > max || len < e.prefix.prefix_len() {
                return Err(format!(
                    "{}: {len} must be between the prefix length {} and {max}",
                    at("block_len"),
                    e.prefix.prefix_len()
                ));
            }
            if e.prefix.trunc() != e.prefix {
                return Err(format!(
                    "{}: {} has host bits set (did you mean {}?)",
                    at("prefix"),
                    e.prefix,
                    e.prefix.trunc()
                ));
            }
            if !e.hosts.is_empty() && e.prefix.prefix_len() != len {
                return Err(format!(
                    "{}: hosts need an entry that is exactly one block (/{len})",
                    at("hosts")
                ));
            }
            if let Some(h) = e.hosts.iter().find(|h| !e.prefix.contains(*h)) {
                return Err(format!("{}: {h} is outside {}", at("hosts"), e.prefix));
            }
            if let Some(a) = e.availability
                && !(a > 0.0 && a <= 1.0)
            {
                return Err(format!("{}: {a} must be in (0, 1]", at("availability")));
            }
            // 2^24 blocks is the whole IPv4 /24 space; more than that is a typo.
            if len - e.prefix.prefix_len() > 24 {
                return Err(format!(
                    "{}: {} splits into more than 2^24 blocks of /{len}",
                    at("prefix"),
                    e.prefix
                ));
            }
        }
        for (i, e) in self.dns.iter().enumerate() {
            parse_dns_server(&e.server).map_err(|m| format!("dns[{i}] key `server`: {m}"))?;
            e.qtype
                .parse::<hickory_proto::rr::RecordType>()
                .map_err(|_| {
                    format!(
                        "dns[{i}] key `qtype`: {:?} is not a DNS record type",
                        e.qtype
                    )
                })?;
            if e.qname.is_empty() {
                return Err(format!("dns[{i}] key `qname`: must not be empty"));
            }
        }
        for (i, e) in self.http.iter().enumerate() {
            let url = url::Url::parse(&e.url)
                .map_err(|err| format!("http[{i}] key `url`: {:?}: {err}", e.url))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(format!(
                    "http[{i}] key `url`: {:?} must be an http:// or https:// URL with a host",
                    e.url
                ));
            }
            if let Some(s) = e.expect_status.iter().find(|s| !(100..=599).contains(*s)) {
                return Err(format!(
                    "http[{i}] key `expect_status`: {s} is not an HTTP status"
                ));
            }
        }
        Ok(())
    }

    /// Appends this file's targets, blocks expanded, in file order.
    pub fn expand_into(&self, out: &mut Vec<Target>) {
        self.expand_each(|t| out.push(t));
    }

    /// Hands this file's targets to `push` one at a time, blocks expanded, in file order
    /// (the order of [`Self::expand_into`]): a caller that keeps a few of a million
    /// targets never holds them all.
    pub fn expand_each(&self, mut push: impl FnMut(Target)) {
        let mk = |id: String, asn: u32, region: &Option<String>, kind: TargetKind| Target {
            id,
            country: self.country.clone(),
            asn,
            region: region.clone(),
            control: self.control,
            kind,
        };
        for e in &self.icmp {
            let len = block_len_for(&e.prefix, e.block_len);
            if e.prefix.prefix_len() == len {
                let id = e.id.clone().unwrap_or_else(|| format!("icmp:{}", e.prefix));
                push(mk(
                    id,
                    e.asn,
                    &e.region,
                    TargetKind::Icmp {
                        block: e.prefix,
                        hosts: e.hosts.clone(),
                        availability: e.availability,
                    },
                ));
            } else if let Ok(blocks) = e.prefix.subnets(len) {
                for block in blocks {
                    let id = match &e.id {
                        Some(base) => format!("{base}/{block}"),
                        None => format!("icmp:{block}"),
                    };
                    push(mk(
                        id,
                        e.asn,
                        &e.region,
                        TargetKind::Icmp {
                            block,
                            hosts: Vec::new(),
                            availability: e.availability,
                        },
                    ));
                }
            }
        }
        for e in &self.dns {
            // check() has validated the server; a bad one cannot reach here.
            let server = parse_dns_server(&e.server).unwrap_or(DnsServer::System);
            let id =
                e.id.clone()
                    .unwrap_or_else(|| format!("dns:{}/{}/{}", e.server, e.qname, e.qtype));
            push(mk(
                id,
                e.asn,
                &e.region,
                TargetKind::Dns {
                    server,
                    qname: e.qname.clone(),
                    qtype: e.qtype.to_ascii_uppercase(),
                },
            ));
        }
        for e in &self.http {
            let id = e.id.clone().unwrap_or_else(|| format!("http:{}", e.url));
            push(mk(
                id,
                e.asn,
                &e.region,
                TargetKind::Http {
                    url: e.url.clone(),
                    address: e.address,
                    expect_status: e.expect_status.clone(),
                },
            ));
        }
        for e in &self.tcp {
            let id = e.id.clone().unwrap_or_else(|| format!("tcp:{}", e.address));
            push(mk(
                id,
                e.asn,
                &e.region,
                TargetKind::Tcp { address: e.address },
            ));
        }
    }
}

/// Writes targets back as catalog files, one per (country, control), each target as its
/// own entry with its id: the form in which the collector hands an agent its share.
pub fn to_files(targets: &[&Target]) -> Vec<CatalogFile> {
    let mut files = FilesBuilder::default();
    for t in targets {
        files.push(t);
    }
    files.finish()
}

/// [`to_files`] one target at a time, for a caller that picks a few targets out of
/// millions as they expand and never holds them all.
#[derive(Debug, Default)]
pub struct FilesBuilder {
    files: std::collections::BTreeMap<(String, bool), CatalogFile>,
}

impl FilesBuilder {
    pub fn push(&mut self, t: &Target) {
        let f = self
            .files
            .entry((t.country.clone(), t.control))
            .or_insert_with(|| CatalogFile {
                country: t.country.clone(),
                name: None,
                control: t.control,
                source: Vec::new(),
                network: Vec::new(),
                icmp: Vec::new(),
                dns: Vec::new(),
                http: Vec::new(),
                tcp: Vec::new(),
            });
        let id = Some(t.id.clone());
        match &t.kind {
            TargetKind::Icmp {
                block,
                hosts,
                availability,
            } => f.icmp.push(IcmpEntry {
                id,
                prefix: *block,
                asn: t.asn,
                region: t.region.clone(),
                hosts: hosts.clone(),
                availability: *availability,
                block_len: Some(block.prefix_len()),
            }),
            TargetKind::Dns {
                server,
                qname,
                qtype,
            } => f.dns.push(DnsEntry {
                id,
                server: match server {
                    DnsServer::System => "system".to_string(),
                    DnsServer::Addr(a) => a.to_string(),
                },
                qname: qname.clone(),
                qtype: qtype.clone(),
                asn: t.asn,
                region: t.region.clone(),
                server_name: None,
            }),
            TargetKind::Http {
                url,
                address,
                expect_status,
            } => f.http.push(HttpEntry {
                id,
                url: url.clone(),
                asn: t.asn,
                region: t.region.clone(),
                address: *address,
                expect_status: expect_status.clone(),
            }),
            TargetKind::Tcp { address } => f.tcp.push(TcpEntry {
                id,
                address: *address,
                asn: t.asn,
                region: t.region.clone(),
            }),
        }
    }

    pub fn finish(self) -> Vec<CatalogFile> {
        self.files.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{expand, parse};
    use super::*;

    #[test]
    fn prefix_expands_into_blocks() {
        let f = parse(
            "country = \"KZ\"\n[[icmp]]\nprefix = \"10.0.0.0/22\"\nasn = 9198\n",
            "t.toml",
        )
        .unwrap();
        let t = expand(&[f]).unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(t[3].id, "icmp:10.0.3.0/24");
        assert_eq!(t[3].signal(), Signal::Icmp);
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let cases = [
            ("country = \"KZ\"\ncolour = 1\n", "line 2"),
            (
                "country = \"KZ\"\n[[icmp]]\nprefix = \"10.0.0.0/33\"\nasn = 1\n",
                "line 3",
            ),
            ("country = \"kz\"\n", "key `country`"),
            (
                "country = \"KZ\"\n[[icmp]]\nprefix = \"10.0.0.1/24\"\nasn = 1\n",
                "icmp[0] (prefix 10.0.0.1/24) key `prefix`",
            ),
            (
                "country = \"KZ\"\n[[dns]]\nserver = \"ns.example\"\nqname = \"kz.\"\nasn = 1\n",
                "dns[0] key `server`",
            ),
            (
                "country = \"KZ\"\n[[dns]]\nserver = \"192.0.2.1\"\nqname = \"kz.\"\nqtype = \"BOGUS\"\nasn = 1\n",
                "dns[0] key `qtype`",
            ),
            (
                "country = \"KZ\"\n[[http]]\nurl = \"ftp://x\"\nasn = 1\n",
                "http[0] key `url`",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text, "probes/x.toml").unwrap_err().to_string();
            assert!(e.starts_with("probes/x.toml: "), "{e}");
            assert!(e.contains(want), "want {want:?} in {e}");
        }
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let f = parse(
            "country = \"KZ\"\n[[tcp]]\naddress = \"192.0.2.1:443\"\nasn = 1\n[[tcp]]\naddress = \"192.0.2.1:443\"\nasn = 1\n",
            "t.toml",
        )
        .unwrap();
        assert!(
            expand(&[f])
                .unwrap_err()
                .to_string()
                .contains("more than once")
        );
    }
}
