//! The one address policy of the agent: which addresses a probe may send packets to.
//! Never private, reserved or bogon space (unless a lab allows it), never an operator's
//! opted-out prefix. It is applied where the connection is made, to every address the
//! probe would actually use: IP literals, each address a name resolved to (CNAME chains
//! end in addresses too), each redirect hop, DNS servers; an IPv4-mapped IPv6 address
//! (`::ffff:10.0.0.1`) is judged as the IPv4 address it reaches. A refused address is
//! never contacted: the probe ends with [`Refusal::failure`], an observation like any
//! other failure.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

use blackout_model::observation::Failure;

/// IANA special-purpose and bogon ranges (RFC 6890 and its updates).
pub const RESERVED: &[&str] = &[
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

/// Why an address is not probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Reserved,
    OptedOut,
}

impl Refusal {
    /// The failure label a probe refused for this reason ends with.
    pub fn failure(self) -> Failure {
        match self {
            Refusal::Reserved => Failure::ReservedAddress,
            Refusal::OptedOut => Failure::OptedOutAddress,
        }
    }
}

/// Which addresses may be probed. The default allows every address (ad-hoc probes and
/// tests on loopback); the agent builds its own from `allow_reserved` and `opt_out`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AddressPolicy {
    reserved: Vec<IpNet>,
    opt_out: Vec<IpNet>,
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// An IPv4-mapped IPv6 prefix as the IPv4 prefix it reaches; others unchanged.
fn canonical(net: &IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(*net),
            None => *net,
        },
        _ => *net,
    }
}

impl AddressPolicy {
    pub fn new(allow_reserved: bool, opt_out: Vec<IpNet>) -> Self {
        let reserved = if allow_reserved {
            Vec::new()
        } else {
            RESERVED
                .iter()
                .map(|s| s.parse().expect("reserved ranges are valid constants"))
                .collect()
        };
        AddressPolicy {
            reserved,
            opt_out: opt_out.iter().map(canonical).collect(),
        }
    }

    /// Whether `ip` may be sent packets.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        self.check_prefix(&IpNet::from(ip.to_canonical()))
    }

    /// Whether any address of `net` may be refused (a block is refused whole).
    pub fn check_prefix(&self, net: &IpNet) -> Result<(), Refusal> {
        let net = canonical(net);
        if self.opt_out.iter().any(|o| overlaps(o, &net)) {
            return Err(Refusal::OptedOut);
        }
        if self.reserved.iter().any(|r| overlaps(r, &net)) {
            return Err(Refusal::Reserved);
        }
        Ok(())
    }

    /// The addresses of `addresses` that may be contacted, in order; if none may, the
    /// refusal of the first.
    pub fn allowed(&self, addresses: &[IpAddr]) -> Result<Vec<IpAddr>, Refusal> {
        let mut first = None;
        let ok: Vec<IpAddr> = addresses
            .iter()
            .copied()
            .filter(|a| match self.check_ip(*a) {
                Ok(()) => true,
                Err(r) => {
                    first.get_or_insert(r);
                    false
                }
            })
            .collect();
        match first {
            Some(r) if ok.is_empty() => Err(r),
            _ => Ok(ok),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let p = AddressPolicy::new(false, vec!["2.72.0.0/16".parse().unwrap()]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases = [
            ("2.132.0.1", Ok(())),
            ("127.0.0.1", Err(Refusal::Reserved)),
            ("0.0.0.0", Err(Refusal::Reserved)),
            ("::1", Err(Refusal::Reserved)),
            ("::ffff:10.0.0.1", Err(Refusal::Reserved)),
            ("::ffff:127.0.0.1", Err(Refusal::Reserved)),
            ("::ffff:2.72.3.4", Err(Refusal::OptedOut)),
            ("::ffff:2.132.0.1", Ok(())),
            ("fd00::1", Err(Refusal::Reserved)),
            ("2a01:7640::1", Ok(())),
            ("2.72.9.9", Err(Refusal::OptedOut)),
        ];
        for (a, want) in cases {
            assert_eq!(p.check_ip(ip(a)), want, "{a}");
        }
        let mapped: IpNet = "::ffff:10.0.0.0/120".parse().unwrap();
        assert_eq!(p.check_prefix(&mapped), Err(Refusal::Reserved));
        // A mapped opt-out covers the IPv4 addresses it reaches.
        let q = AddressPolicy::new(true, vec!["::ffff:192.0.2.0/120".parse().unwrap()]);
        assert_eq!(q.check_ip(ip("192.0.2.7")), Err(Refusal::OptedOut));
        assert_eq!(q.check_ip(ip("127.0.0.1")), Ok(()));
        assert_eq!(
            p.allowed(&[ip("10.0.0.1"), ip("2.132.0.1")]),
            Ok(vec![ip("2.132.0.1")])
        );
        assert_eq!(
            p.allowed(&[ip("10.0.0.1"), ip("2.72.0.1")]),
            Err(Refusal::Reserved)
        );
        assert_eq!(AddressPolicy::default().check_ip(ip("127.0.0.1")), Ok(()));
    }
}
