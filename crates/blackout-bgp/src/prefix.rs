//! Prefixes as the table stores them: packed into one integer each, so that a full
//! table's keys cost 8 (IPv4) or 16 (IPv6) bytes.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Longest IPv6 prefix the table keeps: the low byte of the address holds the length.
/// Longer prefixes are never globally routed (the Internet drops anything past /48).
pub const MAX_IPV6_LEN: u8 = 120;

/// A prefix, host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pfx {
    V4(u32, u8),
    V6(u128, u8),
}

impl Pfx {
    /// `None` for an IPv6 prefix longer than [`MAX_IPV6_LEN`].
    pub fn from_net(net: &IpNet) -> Option<Pfx> {
        match net.trunc() {
            IpNet::V4(n) => Some(Pfx::V4(u32::from(n.network()), n.prefix_len())),
            IpNet::V6(n) if n.prefix_len() <= MAX_IPV6_LEN => {
                Some(Pfx::V6(u128::from(n.network()), n.prefix_len()))
            }
            IpNet::V6(_) => None,
        }
    }

    pub fn v4_key(addr: u32, len: u8) -> u64 {
        (u64::from(addr) << 8) | u64::from(len)
    }

    pub fn from_v4_key(k: u64) -> Pfx {
        Pfx::V4((k >> 8) as u32, (k & 0xff) as u8)
    }

    pub fn v6_key(addr: u128, len: u8) -> u128 {
        addr | u128::from(len)
    }

    pub fn from_v6_key(k: u128) -> Pfx {
        let len = (k & 0xff) as u8;
        Pfx::V6(k & !0xff, len)
    }

    pub fn prefix_len(&self) -> u8 {
        match *self {
            Pfx::V4(_, l) | Pfx::V6(_, l) => l,
        }
    }
}

/// First and last address of an IPv4 prefix.
pub fn v4_range(addr: u32, len: u8) -> (u32, u32) {
    let host = if len == 0 { u32::MAX } else { u32::MAX >> len };
    (addr, addr | host)
}

/// First and last address of an IPv6 prefix.
pub fn v6_range(addr: u128, len: u8) -> (u128, u128) {
    let host = if len == 0 {
        u128::MAX
    } else {
        u128::MAX >> len
    };
    (addr, addr | host)
}

impl std::fmt::Display for Pfx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Pfx::V4(a, l) => match Ipv4Net::new(Ipv4Addr::from(a), l) {
                Ok(n) => n.fmt(f),
                Err(_) => write!(f, "{}/{l}", Ipv4Addr::from(a)),
            },
            Pfx::V6(a, l) => match Ipv6Net::new(Ipv6Addr::from(a), l) {
                Ok(n) => n.fmt(f),
                Err(_) => write!(f, "{}/{l}", Ipv6Addr::from(a)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_clear_host_bits() {
        let p = Pfx::from_net(&"10.1.2.3/16".parse().unwrap()).unwrap();
        assert_eq!(p, Pfx::V4(0x0a01_0000, 16));
        let Pfx::V4(a, l) = p else { unreachable!() };
        assert_eq!(Pfx::from_v4_key(Pfx::v4_key(a, l)), p);
        let q = Pfx::from_net(&"2001:db8::1/32".parse().unwrap()).unwrap();
        let Pfx::V6(a, l) = q else { unreachable!() };
        assert_eq!(Pfx::from_v6_key(Pfx::v6_key(a, l)), q);
        assert_eq!(q.to_string(), "2001:db8::/32");
        assert_eq!(Pfx::from_net(&"2001:db8::1/128".parse().unwrap()), None);
        assert_eq!(v4_range(0, 0), (0, u32::MAX));
        assert_eq!(v4_range(0x0a00_0000, 24), (0x0a00_0000, 0x0a00_00ff));
    }
}
