//! The BGP table fed by real routers: Debian's FRR (`bgpd -M bmp`) in network namespaces.
//!
//! Three "country" routers announce their networks' prefixes (EG: AS64501 10.1.0.0/16,
//! AS64502 10.2.0.0/16; SD: AS64503 10.3.0.0/16) to two transit routers (AS65001,
//! AS65002), which both feed a monitor router (AS65000) that streams BMP of its two
//! peers (pre-policy) to the collector side: the test's own BMP listener and table here,
//! the real `blackout collector` binary in the end-to-end test. All routers sit on one
//! bridge in a hub namespace; the host reaches it through a veth.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blackout_bgp::bmp::{BmpStats, serve};
use blackout_bgp::table::{PeerState, TableConfig};
use blackout_bgp::{Feed, RouteEvent, SourceKind, Space, Table};
use blackout_model::bgp::BgpVisibility;
use blackout_test_support::{self as common, Netns, Proc};

mod frr;

/// One lab: namespaces `<tag>-*`, subnet `10.<net>.0.0/24`, the host at `.254`.
struct Lab {
    tag: String,
    net: u8,
    dir: PathBuf,
    // Dropped first (fields drop in order): processes, then namespaces.
    procs: Vec<Proc>,
    _ns: Vec<Netns>,
}

/// (name, last octet, AS, announced prefix, neighbors by name).
type Router = (
    &'static str,
    u8,
    u32,
    Option<&'static str>,
    &'static [&'static str],
);

const ROUTERS: [Router; 6] = [
    ("c1", 11, 64501, Some("10.1.0.0/16"), &["u1", "u2"]),
    ("c2", 12, 64502, Some("10.2.0.0/16"), &["u1", "u2"]),
    ("c3", 13, 64503, Some("10.3.0.0/16"), &["u1", "u2"]),
    ("u1", 21, 65001, None, &["c1", "c2", "c3", "m"]),
    ("u2", 22, 65002, None, &["c1", "c2", "c3", "m"]),
    ("m", 30, 65000, None, &["u1", "u2"]),
];

fn router(name: &str) -> (u8, u32) {
    let r = ROUTERS.iter().find(|r| r.0 == name).unwrap();
    (r.1, r.2)
}

fn sh(args: &[&str]) {
    let ok = Command::new(args[0])
        .args(&args[1..])
        .status()
        .unwrap()
        .success();
    assert!(ok, "{args:?}");
}

impl Lab {
    fn new(tag: &str, net: u8, dir: &Path) -> Lab {
        let mut ns = Vec::new();
        let hub = format!("{tag}-hub");
        ns.push(Netns::loopback_only(&hub));
        sh(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"]);
        sh(&["ip", "-n", &hub, "link", "set", "br0", "up"]);
        let attach = |ns_name: Option<&str>, link: &str, octet: u8| {
            let port = format!("{tag}p{octet}");
            sh(&[
                "ip", "link", "add", link, "type", "veth", "peer", "name", &port,
            ]);
            sh(&["ip", "link", "set", &port, "netns", &hub]);
            sh(&[
                "ip", "-n", &hub, "link", "set", &port, "master", "br0", "up",
            ]);
            let addr = format!("10.{net}.0.{octet}/24");
            match ns_name {
                Some(n) => {
                    sh(&["ip", "link", "set", link, "netns", n]);
                    sh(&["ip", "-n", n, "addr", "add", &addr, "dev", link]);
                    sh(&["ip", "-n", n, "link", "set", link, "up"]);
                }
                None => {
                    sh(&["ip", "addr", "add", &addr, "dev", link]);
                    sh(&["ip", "link", "set", link, "up"]);
                }
            }
        };
        for (name, octet, ..) in ROUTERS {
            let n = format!("{tag}-{name}");
            ns.push(Netns::loopback_only(&n));
            attach(Some(&n), &format!("{tag}-{name}-a"), octet);
        }
        // The host's end goes with the hub namespace (its veth peer is there).
        attach(None, &format!("{tag}-host"), 254);
        Lab {
            tag: tag.into(),
            net,
            dir: dir.to_path_buf(),
            procs: Vec::new(),
            _ns: ns,
        }
    }

    fn ip(&self, octet: u8) -> String {
        format!("10.{}.0.{octet}", self.net)
    }

    /// Starts every router; the monitor streams BMP to the host at `bmp_port`.
    fn start(&mut self, bmp_port: u16) {
        for (name, octet, asn, prefix, neighbors) in ROUTERS {
            let mut r = frr::Bgpd::new(name, asn, self.ip(octet));
            for nb in neighbors {
                let (o, a) = router(nb);
                r.neighbors.push(frr::Neighbor::direct(self.ip(o), a));
            }
            r.networks.extend(prefix.map(String::from));
            if name == "m" {
                r.bmp_to = Some((self.ip(254), bmp_port));
            }
            let rdir = self.dir.join(name);
            let args = r.prepare(&rdir, None);
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &format!("{}-{name}", self.tag)])
                .arg(frr::BGPD)
                .args(args);
            self.procs
                .push(Proc::spawn(name, &mut cmd, &rdir.join("bgpd.log")));
        }
    }

    /// Runs configuration commands on a router (through its vty socket).
    fn vtysh(&self, name: &str, cmds: &[&str]) {
        frr::vtysh(&self.dir.join(name), cmds);
    }

    /// A country router stops (or starts again) announcing its prefix.
    fn announce(&self, name: &str, on: bool) {
        let r = ROUTERS.iter().find(|r| r.0 == name).unwrap();
        frr::Bgpd::new(name, r.2, self.ip(r.1)).announce(&self.dir.join(name), r.3.unwrap(), on);
    }
}

fn catalog_space() -> Space {
    Space::from_blocks([
        ("EG", 64501, "10.1.0.0/22".parse().unwrap()),
        ("EG", 64502, "10.2.0.0/23".parse().unwrap()),
        ("SD", 64503, "10.3.0.0/24".parse().unwrap()),
    ])
}

type Seen = Arc<Mutex<Vec<(Instant, BgpVisibility)>>>;

/// The test's collector side: a BMP listener on the host's address and the table.
struct Side {
    feed: Arc<Feed>,
    seen: Seen,
    rt: tokio::runtime::Runtime,
}

impl Side {
    fn start(listen: std::net::SocketAddr) -> Side {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = TableConfig {
            peer_quorum: None,
            full_table_min_prefixes: 3,
            peer_silence_secs: 0,
            ..TableConfig::default()
        };
        let feed = Arc::new(Feed::new(Table::new(config, catalog_space())));
        let seen: Seen = Arc::default();
        let (tx, rx) = tokio::sync::mpsc::channel::<RouteEvent>(1024);
        let listener = rt.block_on(tokio::net::TcpListener::bind(listen)).unwrap();
        rt.spawn(serve(listener, tx, Arc::new(BmpStats::default())));
        let (f, s) = (feed.clone(), seen.clone());
        rt.spawn(async move {
            f.run(rx, move |r| {
                let now = Instant::now();
                s.lock().unwrap().extend(r.into_iter().map(|v| (now, v)));
            })
            .await
        });
        Side { feed, seen, rt }
    }

    /// The first reading of (country, asn) since `since` that `ok` accepts.
    fn wait(
        &self,
        what: &str,
        since: Instant,
        country: &str,
        asn: Option<u32>,
        ok: impl Fn(&BgpVisibility) -> bool,
    ) -> (Duration, BgpVisibility) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = self
                .seen
                .lock()
                .unwrap()
                .iter()
                .find(|(t, v)| *t >= since && v.country == country && v.asn == asn && ok(v))
                .map(|(t, v)| (*t - since, v.clone()));
            if let Some(f) = found {
                return f;
            }
            if Instant::now() > deadline {
                let states = self.feed.table().peer_states();
                let seen = self.readings_since(since);
                panic!("timed out waiting for {what}; peers {states:?}; readings {seen:#?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The table's reading of (country, asn) now.
    fn now(&self, country: &str, asn: Option<u32>) -> BgpVisibility {
        self.feed
            .table()
            .current(chrono::Utc::now())
            .into_iter()
            .find(|v| v.country == country && v.asn == asn)
            .unwrap()
    }

    fn readings_since(&self, since: Instant) -> Vec<BgpVisibility> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(t, _)| *t >= since)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

fn full(v: &BgpVisibility) -> bool {
    v.total_slash24 > 0 && v.visible_slash24 == v.total_slash24 && v.peers_healthy == 2
}

#[test]
fn frr_bmp_feeds_the_table_withdrawals_flaps_and_one_network() {
    if !frr::available(
        "frr_bmp_feeds_the_table_withdrawals_flaps_and_one_network",
        false,
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::new("bgpt", 99, dir.path());
    let port = common::free_port();
    let side = Side::start(format!("{}:{port}", lab.ip(254)).parse().unwrap());
    let t0 = Instant::now();
    lab.start(port);

    // 1. The announcements: both transit peers healthy, every block visible.
    let (d, eg) = side.wait("EG fully visible", t0, "EG", None, full);
    assert_eq!((eg.visible_slash24, eg.total_slash24), (6, 6));
    assert!(eg.withdrawals.is_none());
    side.wait("SD fully visible", t0, "SD", None, full);
    eprintln!(
        "scenario announce: EG 6/6 and SD 1/1 visible from 2 healthy peers {d:?} after the routers started"
    );
    let u1 = blackout_bgp::PeerKey {
        source: SourceKind::Bmp,
        collector: lab.ip(30),
        peer_ip: lab.ip(21).parse().unwrap(),
        peer_asn: 65001,
    };
    assert_eq!(side.feed.table().peer_state(&u1), Some(PeerState::Healthy));
    // FRR's Statistics Reports (every second) reach the table as the peers heard.
    common::wait_for("a BMP Statistics Report", Duration::from_secs(30), || {
        Some(side.feed.counters.get(SourceKind::Bmp, 5)).filter(|n| *n > 0)
    });

    // 2. One peer's session flaps (the monitor resets its session with u1): the peer
    // goes down and comes back, no withdrawal is counted and the space stays visible,
    // judged from the other peer.
    let t1 = Instant::now();
    let downs = side.feed.counters.get(SourceKind::Bmp, 1);
    lab.vtysh("m", &[&format!("clear bgp {}", lab.ip(21))]);
    let (d_down, _) = side.wait("EG judged from one peer", t1, "EG", None, |v| {
        v.peers_healthy == 1
    });
    let (d_up, _) = side.wait("EG back from 2 peers", t1 + d_down, "EG", None, full);
    let d_flap = d_down + d_up;
    assert!(
        side.feed.counters.get(SourceKind::Bmp, 1) > downs,
        "BMP Peer Down for u1"
    );
    let during = side.readings_since(t1);
    let eg_during: Vec<_> = during
        .iter()
        .filter(|v| v.country == "EG" && v.asn.is_none())
        .collect();
    assert!(
        eg_during
            .iter()
            .all(|v| v.visible_slash24 == 6 && v.withdrawals.is_none()),
        "a flap is not a withdrawal: {eg_during:?}"
    );
    assert!(
        eg_during.iter().any(|v| v.peers_healthy == 1),
        "the flap was seen (one healthy peer for a while): {eg_during:?}"
    );
    eprintln!(
        "scenario flap: u1 down and up, EG stayed 6/6 with no withdrawal; both peers healthy again after {d_flap:?}"
    );

    // 3. One network withdraws: only its blocks fall.
    let t2 = Instant::now();
    lab.announce("c2", false);
    let (d_asn, v) = side.wait("AS64502 dark", t2, "EG", Some(64502), |v| {
        v.visible_slash24 == 0
    });
    let w = v.withdrawals.clone().expect("withdrawal evidence");
    assert_eq!(w.examples, vec!["10.2.0.0/16"]);
    assert_eq!(w.prefixes_withdrawn, 1);
    let (_, eg) = side.wait("EG partial", t2, "EG", None, |v| v.visible_slash24 == 4);
    assert_eq!(eg.withdrawals.unwrap().examples, vec!["10.2.0.0/16"]);
    let other = side.now("EG", Some(64501));
    assert_eq!(other.visible_slash24, 4);
    assert!(other.withdrawals.is_none());
    eprintln!(
        "scenario one ASN: AS64502 0/2 after {d_asn:?} (peers {:?}), AS64501 4/4, EG 4/6",
        w.peers
    );
    lab.announce("c2", true);
    side.wait("AS64502 back", Instant::now(), "EG", Some(64502), |v| {
        v.visible_slash24 == 2 && v.withdrawals.is_none()
    });

    // 4. The country withdraws all its routes.
    let t3 = Instant::now();
    let at3 = chrono::Utc::now();
    lab.announce("c1", false);
    lab.announce("c2", false);
    let (d_cc, eg) = side.wait("EG dark", t3, "EG", None, |v| v.visible_slash24 == 0);
    let w = eg.withdrawals.expect("withdrawal evidence");
    assert_eq!(w.examples, vec!["10.1.0.0/16", "10.2.0.0/16"]);
    assert_eq!(w.prefixes_withdrawn, 2);
    let mut peers = w.peers.clone();
    peers.sort();
    assert_eq!(
        peers,
        vec![
            format!("AS65001 {}", lab.ip(21)),
            format!("AS65002 {}", lab.ip(22))
        ]
    );
    assert!(w.first_withdrawal_at >= at3);
    assert_eq!(eg.peers_healthy, 2, "the peers that saw it stay healthy");
    assert!(d_cc < Duration::from_secs(5), "{d_cc:?}");
    let sd = side.now("SD", None);
    assert_eq!(sd.visible_slash24, 1);
    eprintln!(
        "scenario country: EG 0/6 after {d_cc:?}; evidence {} prefixes, peers {peers:?}, first withdrawal {:?} after the command; SD 1/1",
        w.prefixes_withdrawn,
        (w.first_withdrawal_at - at3).to_std().unwrap_or_default()
    );
    drop(side.rt);
}

/// A value of the collector's exposition: the first sample of `name` whose labels
/// contain every one of `labels` (`key="value"`).
fn metric(base: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let (status, body) = common::http_get(&format!("{base}/metrics"))?;
    if status != 200 {
        return None;
    }
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The real collector binary with `[bgp]`: FRR's BMP feeds it, and a country that
/// withdraws its routes shows in the detector's `bgp` series, with the source metrics.
#[test]
fn collector_binary_sees_a_withdrawal_in_its_bgp_signal() {
    if !frr::available(
        "collector_binary_sees_a_withdrawal_in_its_bgp_signal",
        false,
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut lab = Lab::new("bgpe", 98, dir.path());
    let cat = dir.path().join("catalog");
    std::fs::create_dir_all(&cat).unwrap();
    std::fs::write(
        cat.join("eg.toml"),
        "country = \"EG\"\n[[icmp]]\nprefix = \"10.1.0.0/22\"\nasn = 64501\n[[icmp]]\nprefix = \"10.2.0.0/23\"\nasn = 64502\n",
    )
    .unwrap();
    std::fs::write(
        cat.join("sd.toml"),
        "country = \"SD\"\n[[icmp]]\nprefix = \"10.3.0.0/24\"\nasn = 64503\n",
    )
    .unwrap();
    let http = common::free_port();
    let bmp = common::free_port();
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{http}\"\ncatalog = [\"{}\"]\n[detect]\nbin_secs = 2\ngrace_secs = 1\nwarmup_secs = 6\nmin_warmup_bins = 3\nrecent_window_secs = 120\nbaseline_window_secs = 600\nlate_window_secs = 60\n[bgp]\nbmp_listen = \"{}:{bmp}\"\nfull_table_min_prefixes = 3\npeer_silence_secs = 0\n",
            cat.display(),
            lab.ip(254)
        ),
    )
    .unwrap();
    let log = dir.path().join("collector.log");
    let mut collector = Proc::spawn(
        "collector",
        Command::new(env!("CARGO_BIN_EXE_blackout"))
            .args(["collector", "--config"])
            .arg(&config),
        &log,
    );
    let base = format!("http://127.0.0.1:{http}");
    common::wait_for("collector up", Duration::from_secs(30), || {
        collector.assert_running(&log);
        metric(&base, "blackout_bgp_bmp_sessions", &[])
    });
    lab.start(bmp);
    let eg_bgp = ["country=\"EG\"", "signal=\"bgp\""];
    common::wait_for("EG bgp value 1", Duration::from_secs(60), || {
        collector.assert_running(&log);
        metric(&base, "blackout_country_signal_value", &eg_bgp).filter(|v| *v == 1.0)
    });
    assert_eq!(metric(&base, "blackout_bgp_bmp_sessions", &[]), Some(1.0));
    assert_eq!(
        metric(
            &base,
            "blackout_bgp_peers",
            &["source=\"bmp\"", "state=\"healthy\""]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(&base, "blackout_bgp_prefixes", &["family=\"ipv4\""]),
        Some(3.0)
    );
    // Global-instance peers only, two of 64 slots: nothing dropped, evicted or refused.
    for (name, labels) in [
        (
            "blackout_bgp_bmp_ignored_messages_total",
            &["peer_type=\"rd_instance\""][..],
        ),
        ("blackout_bgp_peers_evicted_total", &[]),
        ("blackout_bgp_peers_refused_total", &[]),
    ] {
        assert_eq!(metric(&base, name, labels), Some(0.0), "{name}");
    }

    let t = Instant::now();
    lab.announce("c1", false);
    lab.announce("c2", false);
    common::wait_for("EG bgp value 0", Duration::from_secs(60), || {
        collector.assert_running(&log);
        metric(&base, "blackout_country_signal_value", &eg_bgp).filter(|v| *v == 0.0)
    });
    let delay = t.elapsed();
    let sd = metric(
        &base,
        "blackout_country_signal_value",
        &["country=\"SD\"", "signal=\"bgp\""],
    );
    assert_eq!(sd, Some(1.0), "only EG withdrew");
    assert!(
        metric(
            &base,
            "blackout_bgp_route_events_total",
            &["source=\"bmp\"", "kind=\"withdraw\""]
        )
        .unwrap_or(0.0)
            >= 2.0
    );
    eprintln!(
        "end to end: EG's bgp value 1 -> 0 on the collector's /metrics {delay:?} after the withdrawal (2 s bins, 1 s grace)"
    );
}
