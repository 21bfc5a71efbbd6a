//! Which targets an agent may probe: never private, reserved or bogon space (unless a lab
//! allows it), never an operator's opted-out prefix. The ranges and the rules are
//! [`blackout_probe::address`]'s, the one policy of every address the agent contacts.

use std::net::IpAddr;

use ipnet::IpNet;

use blackout_model::catalog::{DnsServer, Target, TargetKind};

use blackout_probe::address::AddressPolicy;
pub use blackout_probe::address::Refusal;

/// The agent's [`AddressPolicy`] applied to whole targets when a catalog is loaded; the
/// probes apply the same policy again to what they resolve and where they are redirected.
pub struct TargetFilter {
    policy: AddressPolicy,
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
        TargetFilter {
            policy: AddressPolicy::new(allow_reserved, opt_out),
        }
    }

    /// The policy the filter applies, for the probes to apply too.
    pub fn policy(&self) -> &AddressPolicy {
        &self.policy
    }

    pub fn check(&self, t: &Target) -> Result<(), Refusal> {
        destinations(t)
            .iter()
            .try_for_each(|d| self.check_prefix(d))
    }

    /// Whether any address of `net` may be refused (a block is refused whole).
    pub fn check_prefix(&self, net: &IpNet) -> Result<(), Refusal> {
        self.policy.check_prefix(net)
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
