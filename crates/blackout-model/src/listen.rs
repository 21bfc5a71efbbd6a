//! Listen addresses as the Prometheus ecosystem's flags write them (`--listen` of the
//! collector, `metrics_listen` of the agent).

/// A listen address as the ecosystem's flags take it: `IP:PORT`, `[IPv6]:PORT`,
/// `:PORT` (every IPv4 interface, as `--web.listen-address=:9100`), or `HOST:PORT` with a
/// name that resolves locally (`localhost:9797`; its IPv4 address first).
pub fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::{SocketAddr, ToSocketAddrs};
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?}: the port after ':' must be a number 0-65535"))?;
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if !s.contains(':') {
        return Err(format!(
            "{s:?}: expected IP:PORT, :PORT or HOST:PORT (e.g. 127.0.0.1:9797)"
        ));
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("{s:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{s:?}: the name has no address"))
}

#[cfg(test)]
mod tests {
    use super::parse_listen;

    #[test]
    fn listen_addresses_as_the_ecosystem_writes_them() {
        let ok = [
            ("127.0.0.1:9797", "127.0.0.1:9797"),
            (":9797", "0.0.0.0:9797"),
            ("localhost:9797", "127.0.0.1:9797"),
            ("[::1]:9797", "[::1]:9797"),
            ("0.0.0.0:0", "0.0.0.0:0"),
        ];
        for (s, want) in ok {
            assert_eq!(parse_listen(s).unwrap().to_string(), want, "{s}");
        }
        for s in [
            "9797",
            ":",
            ":http",
            ":70000",
            "127.0.0.1",
            "no-such-host.invalid:80",
        ] {
            assert!(parse_listen(s).is_err(), "{s} accepted");
        }
    }
}
