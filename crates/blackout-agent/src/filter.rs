//! Which targets an agent may probe: never private, reserved or bogon space (unless a lab
//! allows it), never an operator's opted-out prefix.

use std::net::IpAddr;

use ipnet::IpNet;

use blackout_model::catalog::{DnsServer, Target, TargetKind};

/// IANA special-purpose and bogon ranges (RFC 6890 and its updates).
const RESERVED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// Why a target is not probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Reserved,
    OptedOut,
}

pub struct TargetFilter {
    reserved: Vec<IpNet>,
    opt_out: Vec<IpNet>,
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The addresses a target sends packets to, as prefixes (a block is its whole prefix).
fn destinations(t: &Target) -> Vec<IpNet> {
    match &t.kind {
        TargetKind::Icmp { block, .. } => vec![*block],
        TargetKind::Dns {
            server: DnsServer::Addr(a),
            ..
        } => vec![IpNet::from(a.ip())],
        TargetKind::Dns {
            server: DnsServer::System,
            ..
        } => vec![],
        TargetKind::Http { url, address, .. } => {
            let literal = reqwest::Url::parse(url).ok().and_then(|u| {
                u.host_str()
                    .and_then(|h| h.trim_matches(['[', ']']).parse::<IpAddr>().ok())
            });
            address
                .iter()
                .chain(literal.iter())
                .map(|a| IpNet::from(*a))
                .collect()
        }
        TargetKind::Tcp { address } => vec![IpNet::from(address.ip())],
    }
}

impl TargetFilter {
    pub fn new(allow_reserved: bool, opt_out: Vec<IpNet>) -> Self {
        let reserved = if allow_reserved {
            Vec::new()
        } else {
            RESERVED
                .iter()
                .map(|s| s.parse().expect("reserved ranges are valid constants"))
                .collect()
        };
        TargetFilter { reserved, opt_out }
    }

    pub fn check(&self, t: &Target) -> Result<(), Refusal> {
        destinations(t)
            .iter()
            .try_for_each(|d| self.check_prefix(d))
    }

    /// Whether any address of `net` may be refused (a block is refused whole).
    pub fn check_prefix(&self, net: &IpNet) -> Result<(), Refusal> {
        if self.opt_out.iter().any(|o| overlaps(o, net)) {
            return Err(Refusal::OptedOut);
        }
        if self.reserved.iter().any(|r| overlaps(r, net)) {
            return Err(Refusal::Reserved);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn icmp(block: &str) -> Target {
        Target {
            id: block.into(),
            country: "KZ".into(),
            asn: 1,
            region: None,
            control: false,
            kind: TargetKind::Icmp {
                block: block.parse().unwrap(),
                hosts: vec![],
                availability: None,
            },
        }
    }

    #[test]
    fn table() {
        let f = TargetFilter::new(false, vec!["2.72.0.0/16".parse().unwrap()]);
        let cases = [
            ("2.132.0.0/24", Ok(())),
            ("127.0.5.0/24", Err(Refusal::Reserved)),
            ("10.0.0.0/24", Err(Refusal::Reserved)),
            ("2.72.9.0/24", Err(Refusal::OptedOut)),
            ("8.0.0.0/6", Err(Refusal::Reserved)), // covers 10.0.0.0/8
            ("2001:db8:1::/48", Err(Refusal::Reserved)),
            ("2a01:7640::/48", Ok(())),
        ];
        for (block, want) in cases {
            assert_eq!(f.check(&icmp(block)), want, "{block}");
        }
        let lab = TargetFilter::new(true, vec![]);
        assert_eq!(lab.check(&icmp("127.0.5.0/24")), Ok(()));
    }
}
