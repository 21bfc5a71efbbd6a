//! Debian's FRR for the BGP tests (`bgp_bmp`, `bgp_mechanism`): a bgpd configuration
//! from the few facts a test cares about, the daemons' command lines, and vtysh to change
//! a running router. Where the routers run (namespaces, processes) is the test's business.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const BGPD: &str = "/usr/lib/frr/bgpd";
pub const ZEBRA: &str = "/usr/lib/frr/zebra";

/// Whether FRR tests can run here; prints why not (the test then returns).
pub fn available(test: &str, with_zebra: bool) -> bool {
    if !blackout_test_support::is_root() {
        eprintln!("SKIPPED {test}: needs root (network namespaces)");
        return false;
    }
    if blackout_test_support::require(test, &["ip", "vtysh"]).is_none() {
        return false;
    }
    let daemons: &[&str] = if with_zebra { &[BGPD, ZEBRA] } else { &[BGPD] };
    for d in daemons {
        if !Path::new(d).is_file() {
            eprintln!("SKIPPED {test}: FRR's {d} is not installed (bash .ci/run installs frr)");
            return false;
        }
    }
    true
}

/// A BGP neighbor of a router.
#[derive(Debug, Clone)]
pub struct Neighbor {
    pub ip: String,
    pub asn: u32,
    /// Not on a shared link: eBGP multihop, the session sourced from this own address.
    pub multihop_from: Option<String>,
}

impl Neighbor {
    pub fn direct(ip: impl ToString, asn: u32) -> Neighbor {
        Neighbor {
            ip: ip.to_string(),
            asn,
            multihop_from: None,
        }
    }

    pub fn multihop(ip: impl ToString, asn: u32, from: impl ToString) -> Neighbor {
        Neighbor {
            ip: ip.to_string(),
            asn,
            multihop_from: Some(from.to_string()),
        }
    }
}

/// One bgpd: who it is, whom it peers with, what it originates.
#[derive(Debug, Clone)]
pub struct Bgpd {
    pub name: String,
    pub asn: u32,
    pub router_id: String,
    pub neighbors: Vec<Neighbor>,
    /// Prefixes it originates (`network`, no check that a route exists).
    pub networks: Vec<String>,
    /// Announces only its own networks: a customer of its transits, never a path
    /// between them.
    pub stub: bool,
    /// A monitor (like a route collector): keeps each peer's Adj-RIB-In, announces
    /// nothing, and streams BMP (pre-policy) of its peers to this `(address, port)`.
    pub bmp_to: Option<(String, u16)>,
}

impl Bgpd {
    pub fn new(name: &str, asn: u32, router_id: impl ToString) -> Bgpd {
        Bgpd {
            name: name.into(),
            asn,
            router_id: router_id.to_string(),
            neighbors: Vec::new(),
            networks: Vec::new(),
            stub: false,
            bmp_to: None,
        }
    }

    /// bgpd.conf. Short timers, so that sessions come up and news travels in about a
    /// second.
    pub fn config(&self) -> String {
        let mut c = format!(
            "hostname {}\nrouter bgp {}\n bgp router-id {}\n no bgp ebgp-requires-policy\n no bgp network import-check\n",
            self.name, self.asn, self.router_id
        );
        for nb in &self.neighbors {
            let ip = &nb.ip;
            let _ = write!(
                c,
                " neighbor {ip} remote-as {}\n neighbor {ip} timers 3 9\n neighbor {ip} timers connect 1\n neighbor {ip} advertisement-interval 0\n",
                nb.asn
            );
            if let Some(from) = &nb.multihop_from {
                let _ = write!(
                    c,
                    " neighbor {ip} ebgp-multihop 4\n neighbor {ip} update-source {from}\n"
                );
            }
        }
        c += " address-family ipv4 unicast\n";
        for p in &self.networks {
            let _ = writeln!(c, "  network {p}");
        }
        for nb in &self.neighbors {
            let ip = &nb.ip;
            if self.bmp_to.is_some() {
                // FRR's BMP reads the kept Adj-RIB-In for the pre-policy table it sends
                // when the BMP session starts.
                let _ = writeln!(c, "  neighbor {ip} soft-reconfiguration inbound");
                let _ = writeln!(c, "  neighbor {ip} route-map NONE out");
            } else if self.stub {
                let _ = writeln!(c, "  neighbor {ip} route-map OWN out");
            }
        }
        c += " exit-address-family\n";
        if let Some((addr, port)) = &self.bmp_to {
            let _ = write!(
                c,
                " bmp targets collector\n  bmp monitor ipv4 unicast pre-policy\n  bmp stats interval 1000\n  bmp connect {addr} port {port} min-retry 100 max-retry 500\n exit\n"
            );
        }
        if self.bmp_to.is_some() {
            c += "route-map NONE deny 10\n";
        } else if self.stub {
            for (i, p) in self.networks.iter().enumerate() {
                let _ = writeln!(c, "ip prefix-list OWN seq {} permit {p}", (i + 1) * 5);
            }
            c += "route-map OWN permit 10\n match ip address prefix-list OWN\n";
        }
        c
    }

    /// Writes bgpd.conf into `dir` (which also gets its pid file and vty socket) and
    /// returns the daemon's arguments. `zserv`: zebra's socket, through which the
    /// router's best routes go into its namespace's kernel table; None: no zebra, no
    /// kernel routes (a control-plane-only router).
    pub fn prepare(&self, dir: &Path, zserv: Option<&Path>) -> Vec<String> {
        std::fs::create_dir_all(dir).expect("router dir");
        let conf = dir.join("bgpd.conf");
        std::fs::write(&conf, self.config()).expect("bgpd.conf");
        let mut a: Vec<String> = Vec::new();
        match zserv {
            Some(z) => a.extend(["-z".into(), z.display().to_string()]),
            None => a.extend(["-Z".into(), "-n".into()]),
        }
        a.extend(["-S", "-p", "179", "--log", "stdout"].map(String::from));
        if self.bmp_to.is_some() {
            a.extend(["-M".into(), "bmp".into()]);
        }
        a.extend(daemon_files(dir, "bgpd"));
        a
    }

    /// This router stops (or starts again) originating `prefix`.
    pub fn announce(&self, dir: &Path, prefix: &str, on: bool) {
        let line = format!("{}network {prefix}", if on { "" } else { "no " });
        vtysh(
            dir,
            &[
                "configure terminal",
                &format!("router bgp {}", self.asn),
                "address-family ipv4 unicast",
                &line,
            ],
        );
    }
}

fn daemon_files(dir: &Path, daemon: &str) -> Vec<String> {
    vec![
        "-f".into(),
        dir.join(format!("{daemon}.conf")).display().to_string(),
        "-i".into(),
        dir.join(format!("{daemon}.pid")).display().to_string(),
        "--vty_socket".into(),
        dir.display().to_string(),
    ]
}

/// zebra for a router whose routes go into the kernel: its files in `dir`, which is
/// handed to the `frr` user (zebra drops root for it and needs FRR's vty group, which
/// root is not in), so every directory above `dir` must be traversable by that user.
/// Returns the daemon's arguments and the path of its zserv socket.
pub fn prepare_zebra(dir: &Path) -> (Vec<String>, PathBuf) {
    std::fs::create_dir_all(dir).expect("zebra dir");
    std::fs::write(dir.join("zebra.conf"), "hostname zebra\n").expect("zebra.conf");
    let out = Command::new("chown")
        .args(["-R", "frr:frr"])
        .arg(dir)
        .output()
        .expect("chown");
    assert!(
        out.status.success(),
        "chown frr {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let zserv = dir.join("zserv.api");
    let mut a: Vec<String> = ["-u", "frr", "-g", "frr", "--log", "stdout", "-z"]
        .map(String::from)
        .to_vec();
    a.push(zserv.display().to_string());
    a.extend(daemon_files(dir, "zebra"));
    (a, zserv)
}

/// Runs configuration or show commands on the bgpd whose vty socket is in `dir`.
pub fn vtysh(dir: &Path, cmds: &[&str]) -> String {
    let mut c = Command::new("vtysh");
    c.arg("--vty_socket").arg(dir).args(["-d", "bgpd"]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    let out = c.output().expect("vtysh");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !text.contains("% "),
        "vtysh {} {cmds:?}: {text}",
        dir.display()
    );
    text
}
