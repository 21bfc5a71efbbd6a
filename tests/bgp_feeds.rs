//! The RIS Live client and MRT import against real things: a websocket server of the
//! test's own that speaks RIS Live's JSON (messages written from its manual), and MRT
//! files written by FRR's bgpd (`dump bgp routes-mrt`, `dump bgp all`) in a network
//! namespace, fed by a GoBGP peer that announces and withdraws known prefixes.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use blackout_bgp::mrt::{MrtOrigin, read_mrt_file};
use blackout_bgp::rislive::ris_peer;
use blackout_bgp::{
    PeerKey, RisLiveSettings, RouteEvent, SourceKind, Space, Table, TableConfig, spawn_ris_live,
};
use blackout_detect::DetectConfig;
use blackout_test_support::{Netns, Proc, is_root, require, wait_until};
use blackout_tools::replay_bgp::{MrtInput, replay_with_bgp};
use futures::{SinkExt, StreamExt};
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One MRT record (RFC 6396 common header, then the body).
fn record(ts: u32, typ: u16, subtype: u16, body: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend(ts.to_be_bytes());
    r.extend(typ.to_be_bytes());
    r.extend(subtype.to_be_bytes());
    r.extend((body.len() as u32).to_be_bytes());
    r.extend(body);
    r
}

/// A TABLE_DUMP_V2 RIB dump written by hand: one IPv4 AS4 peer carrying `prefixes`.
fn rib_dump(ts: u32, peer: [u8; 4], asn: u32, prefixes: &[IpNet]) -> Vec<u8> {
    let mut pit = Vec::new();
    pit.extend([192, 0, 2, 250]); // collector BGP ID
    pit.extend(0u16.to_be_bytes()); // no view name
    pit.extend(1u16.to_be_bytes());
    pit.push(0b10); // AS4, IPv4
    pit.extend(peer);
    pit.extend(peer);
    pit.extend(asn.to_be_bytes());
    let mut out = record(ts, 13, 1, &pit);
    for (seq, p) in prefixes.iter().enumerate() {
        let IpNet::V4(p) = p else { panic!("IPv4 only") };
        let mut body = Vec::new();
        body.extend((seq as u32).to_be_bytes());
        body.push(p.prefix_len());
        body.extend(&p.network().octets()[..usize::from(p.prefix_len()).div_ceil(8)]);
        body.extend(1u16.to_be_bytes());
        let mut attrs = vec![0x40, 1, 1, 0]; // ORIGIN IGP
        attrs.extend([0x40, 2, 6, 2, 1]); // AS_PATH: a sequence of one AS4
        attrs.extend(asn.to_be_bytes());
        attrs.extend([0x40, 3, 4]); // NEXT_HOP
        attrs.extend(peer);
        body.extend(0u16.to_be_bytes()); // peer index
        body.extend(ts.to_be_bytes());
        body.extend((attrs.len() as u16).to_be_bytes());
        body.extend(attrs);
        out.extend(record(ts, 13, 2, &body));
    }
    out
}

// ---------------------------------------------------------------- RIS Live

/// Messages in RIS Live's format (https://ris-live.ripe.net/manual/, `ris_message`).
const ANNOUNCE_RRC21: &str = r#"{"type":"ris_message","data":{"timestamp":1765100000.12,"peer":"192.0.2.10","peer_asn":"64500","id":"192.0.2.10-0193a1","host":"rrc21.ripe.net","type":"UPDATE","path":[64500,64496,64511],"community":[[64500,100]],"origin":"IGP","announcements":[{"next_hop":"192.0.2.10","prefixes":["198.51.100.0/24","203.0.113.0/24"]}],"withdrawals":[]}}"#;
const ANNOUNCE_V6_RRC21: &str = r#"{"type":"ris_message","data":{"timestamp":1765100001.5,"peer":"2001:db8:7f8::a","peer_asn":"64501","id":"2001:db8:7f8::a-0193a2","host":"rrc21","type":"UPDATE","path":[64501,64511],"origin":"IGP","announcements":[{"next_hop":"2001:db8:7f8::a,fe80::1","prefixes":["2001:db8:100::/48"]}]}}"#;
const WITHDRAW_RRC21: &str = r#"{"type":"ris_message","data":{"timestamp":1765100002.0,"peer":"192.0.2.10","peer_asn":"64500","id":"192.0.2.10-0193a3","host":"rrc21.ripe.net","type":"UPDATE","path":[],"community":[],"announcements":[],"withdrawals":["203.0.113.0/24"]}}"#;
const PEER_DOWN_RRC21: &str = r#"{"type":"ris_message","data":{"timestamp":1765100003.0,"peer":"2001:db8:7f8::a","peer_asn":"64501","id":"2001:db8:7f8::a-0193a4","host":"rrc21.ripe.net","type":"RIS_PEER_STATE","state":"down"}}"#;
const MALFORMED: &str = r#"{"type":"ris_message","data":{"timestamp":1765100004.0,"peer":"192.0.2.10","peer_asn":"64500","id":"x","host":"rrc21","type":"UPDATE","announcements":[{"next_hop":"192.0.2.10","prefixes":["198.51.100.0/33"]}]}}"#;
const RIS_ERROR: &str =
    r#"{"type":"ris_error","data":{"message":"Unknown field 'hots' in ris_subscribe"}}"#;
const AFTER_RECONNECT: &str = r#"{"type":"ris_message","data":{"timestamp":1765100010.0,"peer":"192.0.2.10","peer_asn":"64500","id":"192.0.2.10-0193a5","host":"rrc21.ripe.net","type":"UPDATE","path":[64500,64496],"origin":"IGP","announcements":[{"next_hop":"192.0.2.10","prefixes":["192.0.2.128/25"]}]}}"#;

async fn next_event(rx: &mut mpsc::Receiver<RouteEvent>) -> RouteEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a route event within 10 s")
        .expect("the client is running")
}

/// A RIS Live server on loopback: for each script, one connection that takes the two
/// subscriptions (reported on the channel), sends the script's messages, and drops the
/// connection without a close frame (as a failing server or network would); the last
/// connection stays up.
async fn ris_server(
    scripts: Vec<Vec<&'static str>>,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<()>,
    mpsc::UnboundedReceiver<Vec<String>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (subs_tx, subs_rx) = mpsc::unbounded_channel::<Vec<String>>();
    let server = tokio::spawn(async move {
        let last = scripts.len() - 1;
        for (round, script) in scripts.into_iter().enumerate() {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let mut subs = Vec::new();
            // Subscriptions come first: UPDATE and RIS_PEER_STATE for the one host.
            while subs.len() < 2 {
                match ws.next().await.unwrap().unwrap() {
                    Message::Text(t) => subs.push(t.to_string()),
                    other => panic!("unexpected {other:?}"),
                }
            }
            subs_tx.send(subs).unwrap();
            for m in script {
                ws.send(Message::text(m)).await.unwrap();
            }
            if round == last {
                while let Some(Ok(_)) = ws.next().await {}
            }
        }
    });
    (addr, server, subs_rx)
}

#[tokio::test]
async fn ris_live_events_and_reconnect() {
    // The first connection replays the recorded messages and drops; the second sends
    // one more update and stays up.
    let (addr, server, mut subs_rx) = ris_server(vec![
        vec![
            ANNOUNCE_RRC21,
            ANNOUNCE_V6_RRC21,
            MALFORMED,
            "not json at all",
            RIS_ERROR,
            WITHDRAW_RRC21,
            PEER_DOWN_RRC21,
        ],
        vec![AFTER_RECONNECT],
    ])
    .await;

    let settings = RisLiveSettings {
        url: format!("ws://{addr}/v1/ws/?client=blackout-test"),
        hosts: vec!["rrc21".into()],
        backoff_min: Duration::from_millis(200),
        backoff_max: Duration::from_secs(1),
        ..RisLiveSettings::default()
    };
    let (tx, mut rx) = mpsc::channel(64);
    let client = spawn_ris_live(settings, tx).unwrap();

    let subs = subs_rx.recv().await.unwrap();
    let subs: Vec<serde_json::Value> = subs
        .iter()
        .map(|s| serde_json::from_str(s).unwrap())
        .collect();
    for s in &subs {
        assert_eq!(s["type"], "ris_subscribe");
        assert_eq!(s["data"]["host"], "rrc21");
    }
    let types: BTreeSet<&str> = subs
        .iter()
        .map(|s| s["data"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, BTreeSet::from(["UPDATE", "RIS_PEER_STATE"]));

    let v4 = ris_peer("rrc21", ip("192.0.2.10"), 64500);
    let v6 = ris_peer("rrc21", ip("2001:db8:7f8::a"), 64501);
    assert_eq!(v4.source, SourceKind::RisLive);
    let t = |s: i64, us: u32| chrono::DateTime::from_timestamp(s, us * 1000).unwrap();
    let expected = vec![
        RouteEvent::PeerUp {
            peer: v4.clone(),
            at: t(1765100000, 120_000),
        },
        RouteEvent::Announce {
            peer: v4.clone(),
            prefixes: vec![net("198.51.100.0/24"), net("203.0.113.0/24")],
            at: t(1765100000, 120_000),
        },
        RouteEvent::PeerUp {
            peer: v6.clone(),
            at: t(1765100001, 500_000),
        },
        RouteEvent::Announce {
            peer: v6.clone(),
            prefixes: vec![net("2001:db8:100::/48")],
            at: t(1765100001, 500_000),
        },
        // The malformed update, the junk and the ris_error yield nothing.
        RouteEvent::Withdraw {
            peer: v4.clone(),
            prefixes: vec![net("203.0.113.0/24")],
            at: t(1765100002, 0),
        },
        RouteEvent::PeerDown {
            peer: v6.clone(),
            at: t(1765100003, 0),
            reason: "RIS peer state down".into(),
        },
    ];
    for want in expected {
        assert_eq!(next_event(&mut rx).await, want);
    }
    // The connection drops: every peer still heard through it goes down (v6 already
    // did, by its own peer state).
    match next_event(&mut rx).await {
        RouteEvent::PeerDown { peer, reason, .. } => {
            assert_eq!(peer, v4);
            assert!(reason.starts_with("ris live connection lost"), "{reason}");
        }
        other => panic!("expected PeerDown for {v4}, got {other:?}"),
    }
    // Reconnected and subscribed again; the peer is new on this connection.
    assert_eq!(subs_rx.recv().await.unwrap().len(), 2);
    assert_eq!(
        next_event(&mut rx).await,
        RouteEvent::PeerUp {
            peer: v4.clone(),
            at: t(1765100010, 0)
        }
    );
    assert_eq!(
        next_event(&mut rx).await,
        RouteEvent::Announce {
            peer: v4,
            prefixes: vec![net("192.0.2.128/25")],
            at: t(1765100010, 0)
        }
    );
    client.abort();
    server.abort();
}

#[tokio::test]
async fn ris_live_initial_table_from_a_rib_dump() {
    // The collector's RIB dump gives the peer its table before the stream; a lost
    // connection drops it (PeerDown) and the dump is read again before the next one.
    let tmp = tempfile::tempdir().unwrap();
    let dump = tmp.path().join("rrc21-bview.mrt");
    let table = [net("198.51.100.0/24"), net("203.0.113.0/24")];
    std::fs::write(
        &dump,
        rib_dump(1_765_090_000, [192, 0, 2, 10], 64500, &table),
    )
    .unwrap();
    let (addr, server, mut subs_rx) =
        ris_server(vec![vec![WITHDRAW_RRC21], vec![AFTER_RECONNECT]]).await;
    let settings = RisLiveSettings {
        url: format!("ws://{addr}/v1/ws/?client=blackout-test"),
        hosts: vec!["rrc21".into()],
        rib_dumps: vec![("rrc21".into(), dump)],
        backoff_min: Duration::from_millis(200),
        ..RisLiveSettings::default()
    };
    let (tx, mut rx) = mpsc::channel(64);
    let client = spawn_ris_live(settings, tx).unwrap();
    let peer = ris_peer("rrc21", ip("192.0.2.10"), 64500);
    let dumped = chrono::DateTime::from_timestamp(1_765_090_000, 0).unwrap();
    let from_dump = [
        RouteEvent::PeerUp {
            peer: peer.clone(),
            at: dumped,
        },
        RouteEvent::Announce {
            peer: peer.clone(),
            prefixes: table.to_vec(),
            at: dumped,
        },
        RouteEvent::EndOfRib {
            peer: peer.clone(),
            at: dumped,
        },
    ];
    for want in &from_dump {
        assert_eq!(&next_event(&mut rx).await, want);
    }
    subs_rx.recv().await.unwrap();
    // Heard in the dump: no PeerUp of its own on the stream.
    assert_eq!(
        next_event(&mut rx).await,
        RouteEvent::Withdraw {
            peer: peer.clone(),
            prefixes: vec![net("203.0.113.0/24")],
            at: chrono::DateTime::from_timestamp(1_765_100_002, 0).unwrap(),
        }
    );
    assert!(matches!(next_event(&mut rx).await, RouteEvent::PeerDown { peer: p, .. } if p == peer));
    for want in &from_dump {
        assert_eq!(&next_event(&mut rx).await, want);
    }
    assert!(matches!(
        next_event(&mut rx).await,
        RouteEvent::Announce { peer: p, prefixes, .. } if p == peer && prefixes == [net("192.0.2.128/25")]
    ));
    client.abort();
    server.abort();
}

#[tokio::test]
async fn ris_live_bad_url_is_named() {
    let (tx, _rx) = mpsc::channel(1);
    let err = spawn_ris_live(
        RisLiveSettings {
            url: "https://ris-live.ripe.net/v1/ws/".into(),
            ..RisLiveSettings::default()
        },
        tx,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "ris_live url \"https://ris-live.ripe.net/v1/ws/\": the scheme must be wss or ws"
    );
}

// ---------------------------------------------------------------- MRT from FRR

/// A router (FRR bgpd, AS 65000) and a peer (GoBGP, AS 65001) in two namespaces; the
/// router writes MRT files into `dir`.
struct Routers {
    dir: PathBuf,
    tag: String,
    _bgpd: Proc,
    gobgpd: Option<Proc>,
    // Declared last: dropped after the processes.
    _ns: (Netns, Netns),
}

impl Routers {
    fn start(dir: &Path, bgpd: &Path, gobgpd: &Path) -> Routers {
        let tag = format!("bf{}", std::process::id() % 100_000);
        let (r, c) = (format!("{tag}r"), format!("{tag}c"));
        let ns = (Netns::loopback_only(&r), Netns::loopback_only(&c));
        let sh = |args: &[&str]| {
            let ok = Command::new("ip").args(args).status().unwrap().success();
            assert!(ok, "ip {args:?}");
        };
        sh(&[
            "link",
            "add",
            &format!("{r}0"),
            "type",
            "veth",
            "peer",
            "name",
            &format!("{c}0"),
        ]);
        sh(&["link", "set", &format!("{r}0"), "netns", &r]);
        sh(&["link", "set", &format!("{c}0"), "netns", &c]);
        for (n, v4, v6) in [
            (&r, "10.200.0.1/30", "2001:db8:ff::1/64"),
            (&c, "10.200.0.2/30", "2001:db8:ff::2/64"),
        ] {
            let dev = format!("{n}0");
            sh(&["-n", n, "addr", "add", v4, "dev", &dev]);
            sh(&["-n", n, "addr", "add", v6, "dev", &dev, "nodad"]);
            sh(&["-n", n, "link", "set", &dev, "up"]);
        }
        let vty = dir.join("vty");
        std::fs::create_dir_all(&vty).unwrap();
        let d = dir.display();
        std::fs::write(
            dir.join("bgpd.conf"),
            format!(
                "hostname router\n\
                 dump bgp all {d}/updates.mrt\n\
                 router bgp 65000\n \
                 bgp router-id 10.200.0.1\n \
                 no bgp ebgp-requires-policy\n \
                 neighbor 10.200.0.2 remote-as 65001\n \
                 address-family ipv4 unicast\n  neighbor 10.200.0.2 activate\n exit-address-family\n \
                 address-family ipv6 unicast\n  neighbor 10.200.0.2 activate\n exit-address-family\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("gobgpd.toml"),
            "[global.config]\n  as = 65001\n  router-id = \"10.200.0.2\"\n\
             [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"10.200.0.1\"\n    peer-as = 65000\n\
             [[neighbors.afi-safis]]\n  [neighbors.afi-safis.config]\n    afi-safi-name = \"ipv4-unicast\"\n\
             [[neighbors.afi-safis]]\n  [neighbors.afi-safis.config]\n    afi-safi-name = \"ipv6-unicast\"\n",
        )
        .unwrap();
        // -Z: no zebra (nothing to install routes into); -S: stay root; -P 0: no vty port.
        let bgpd = Proc::spawn(
            "bgpd",
            Command::new("ip")
                .args(["netns", "exec", &r])
                .arg(bgpd)
                .args([
                    "-f",
                    &format!("{d}/bgpd.conf"),
                    "-i",
                    &format!("{d}/bgpd.pid"),
                    "-Z",
                    "-S",
                    "-n",
                    "-P",
                    "0",
                    "--vty_socket",
                    &vty.display().to_string(),
                ]),
            &dir.join("bgpd.log"),
        );
        let gobgpd = Proc::spawn(
            "gobgpd",
            Command::new("ip")
                .args(["netns", "exec", &c])
                .arg(gobgpd)
                .args([
                    "-f",
                    &format!("{d}/gobgpd.toml"),
                    "--api-hosts",
                    "127.0.0.1:50051",
                ]),
            &dir.join("gobgpd.log"),
        );
        Routers {
            dir: dir.to_path_buf(),
            tag,
            _bgpd: bgpd,
            gobgpd: Some(gobgpd),
            _ns: ns,
        }
    }

    fn gobgp(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &format!("{}c", self.tag), "gobgp"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "gobgp {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn vtysh(&self, cmds: &[&str]) -> String {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &format!("{}r", self.tag),
            "vtysh",
            "--vty_socket",
        ])
        .arg(self.dir.join("vty"))
        .args(["-d", "bgpd"]);
        for cmd in cmds {
            c.args(["-c", cmd]);
        }
        let out = c.output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Prefixes the router carries from the peer, as `show bgp` lists them.
    fn router_has(&self, prefix: &str) -> bool {
        let family = if prefix.contains(':') { "ipv6" } else { "ipv4" };
        self.vtysh(&[&format!("show bgp {family} unicast {prefix}")])
            .contains("65001")
    }
}

fn events_of(path: &Path, origin: &MrtOrigin) -> (Vec<RouteEvent>, blackout_bgp::MrtSummary) {
    let mut events = Vec::new();
    let summary = read_mrt_file(path, origin, &mut |ev| {
        events.push(ev);
        true
    })
    .unwrap_or_else(|e| panic!("{e}"));
    (events, summary)
}

fn gzip(path: &Path) -> PathBuf {
    use std::io::Write;
    let out = path.with_extension("mrt.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&out).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all(&std::fs::read(path).unwrap()).unwrap();
    enc.finish().unwrap();
    out
}

#[test]
fn mrt_from_frr_rib_dump_and_updates() {
    if !is_root() {
        eprintln!("SKIPPED mrt_from_frr_rib_dump_and_updates: needs root for namespaces");
        return;
    }
    let Some(progs) = require(
        "mrt_from_frr_rib_dump_and_updates",
        &["vtysh", "gobgpd", "gobgp"],
    ) else {
        return;
    };
    // Debian's bgpd lives outside PATH.
    let bgpd = Path::new("/usr/lib/frr/bgpd");
    if !bgpd.is_file() {
        eprintln!("SKIPPED mrt_from_frr_rib_dump_and_updates: no /usr/lib/frr/bgpd (package frr)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut routers = Routers::start(tmp.path(), bgpd, &progs[1]);

    let announced = ["198.51.100.0/24", "203.0.113.0/24", "192.0.2.0/25"];
    wait_until("the GoBGP API", Duration::from_secs(15), || {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &format!("{}c", routers.tag),
                "gobgp",
                "neighbor",
            ])
            .output()
            .is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).contains("Establ")
            })
    });
    for p in announced {
        routers.gobgp(&["global", "rib", "add", "-a", "ipv4", p]);
    }
    routers.gobgp(&[
        "global",
        "rib",
        "add",
        "-a",
        "ipv6",
        "2001:db8:100::/48",
        "nexthop",
        "2001:db8:ff::2",
    ]);
    wait_until(
        "the router carries all four",
        Duration::from_secs(20),
        || {
            announced.iter().all(|p| routers.router_has(p))
                && routers.router_has("2001:db8:100::/48")
        },
    );
    // A one-off RIB dump (no interval): FRR writes it at once.
    let rib = tmp.path().join("rib.mrt");
    routers.vtysh(&["conf t", &format!("dump bgp routes-mrt {}", rib.display())]);
    wait_until("the RIB dump", Duration::from_secs(10), || {
        std::fs::metadata(&rib).is_ok_and(|m| m.len() > 0)
    });
    // Seconds apart, so that replay sees each state in its own second.
    std::thread::sleep(Duration::from_secs(2));
    routers.gobgp(&["global", "rib", "del", "-a", "ipv4", "203.0.113.0/24"]);
    wait_until(
        "the withdrawal reaches the router",
        Duration::from_secs(20),
        || !routers.router_has("203.0.113.0/24"),
    );
    std::thread::sleep(Duration::from_secs(2));
    // The peer goes away: the router records the session leaving Established.
    drop(routers.gobgpd.take());
    wait_until("the session is down", Duration::from_secs(20), || {
        !routers
            .vtysh(&["show bgp neighbors 10.200.0.2"])
            .contains("BGP state = Established")
    });
    // Stop bgpd so that its dump files are complete.
    drop(routers);

    let origin = MrtOrigin::new(SourceKind::Mrt, "frr");
    let peer = PeerKey {
        source: SourceKind::Mrt,
        collector: "frr".into(),
        peer_ip: ip("10.200.0.2"),
        peer_asn: 65001,
    };

    // The RIB dump: PeerUp, the four prefixes, EndOfRib, all at the dump's time.
    let (events, summary) = events_of(&rib, &origin);
    assert_eq!(summary.bad_records, 0, "{summary:?}");
    assert_eq!(summary.rib_peers, 1, "{summary:?}");
    let at = events[0].at();
    let mut prefixes = BTreeSet::new();
    assert_eq!(
        events[0],
        RouteEvent::PeerUp {
            peer: peer.clone(),
            at
        }
    );
    for ev in &events[1..events.len() - 1] {
        match ev {
            RouteEvent::Announce {
                peer: p,
                prefixes: ps,
                at: a,
            } if *p == peer && *a == at => prefixes.extend(ps.iter().copied()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        events.last().unwrap(),
        &RouteEvent::EndOfRib {
            peer: peer.clone(),
            at
        }
    );
    let want: BTreeSet<IpNet> = announced
        .iter()
        .map(|p| net(p))
        .chain([net("2001:db8:100::/48")])
        .collect();
    assert_eq!(prefixes, want);
    // Written within this test's minute.
    assert!((chrono::Utc::now() - at).num_seconds().abs() < 120, "{at}");

    // The updates (`dump bgp all`): Established, the announcements, the withdrawal,
    // the session leaving Established. Read compressed as well: same events.
    let updates = tmp.path().join("updates.mrt");
    let (events, summary) = events_of(&updates, &origin);
    assert_eq!(summary.bad_records, 0, "{summary:?}");
    let (gz_events, _) = events_of(&gzip(&updates), &origin);
    assert_eq!(gz_events, events);
    let mut seen_up = false;
    let mut carried = BTreeSet::new();
    let mut withdrawn = BTreeSet::new();
    let mut down = None;
    for ev in &events {
        assert_eq!(ev.peer(), &peer, "{ev:?}");
        match ev {
            RouteEvent::PeerUp { .. } => seen_up = true,
            RouteEvent::Announce { prefixes, .. } => {
                assert!(seen_up, "announce before the session was up: {ev:?}");
                carried.extend(prefixes.iter().copied());
            }
            RouteEvent::Withdraw { prefixes, .. } => {
                withdrawn.extend(prefixes.iter().copied());
            }
            RouteEvent::PeerDown { reason, .. } => down = Some(reason.clone()),
            RouteEvent::EndOfRib { .. } | RouteEvent::PeerAlive { .. } => {}
        }
    }
    assert!(seen_up, "{events:?}");
    assert_eq!(carried, want);
    assert_eq!(withdrawn, BTreeSet::from([net("203.0.113.0/24")]));
    let down = down.expect("a PeerDown when the session left Established");
    assert!(down.starts_with("BGP state Established ->"), "{down}");
    // Time moves forward through the file.
    assert!(events.windows(2).all(|w| w[0].at() <= w[1].at()));

    // Replayed through the table (`blackout replay --mrt`): the peer's two /24s of the
    // catalog's space visible, then one after the withdrawal, then no healthy peer.
    let space = Space::from_blocks([
        ("KZ", 65001, net("198.51.100.0/24")),
        ("KZ", 65001, net("203.0.113.0/24")),
    ]);
    let config = TableConfig {
        peer_quorum: Some(1),
        full_table_min_prefixes: 1,
        peer_silence_secs: 0,
        ..TableConfig::default()
    };
    let mut readings = Vec::new();
    let input = MrtInput::parse(&format!("frr={}", updates.display()));
    let (_engine, summaries) = replay_with_bgp(
        DetectConfig::default(),
        &mut [],
        &[input],
        Table::new(config, space),
        &mut |_| {},
        &mut |r| {
            if r.asn == Some(65001) {
                readings.push((r.visible_slash24, r.total_slash24, r.peers_healthy));
            }
        },
    )
    .unwrap();
    assert_eq!(summaries[0].withdrawn, 1);
    let full = readings.iter().position(|r| *r == (2, 2, 1));
    let half = readings.iter().position(|r| *r == (1, 2, 1));
    assert!(full.is_some() && full < half, "{readings:?}");
    assert_eq!(readings.last().map(|r| r.2), Some(0), "{readings:?}");
}

#[test]
fn mrt_bad_record_and_truncation_are_named_by_offset() {
    // Two well-formed BGP4MP records written by hand around a record whose body is
    // garbage, then a truncated header: the bad record is skipped and named, the
    // truncation ends the file with its offset.
    // BGP4MP_STATE_CHANGE_AS4 (16/5): peer AS, local AS, ifindex, AFI 1, addresses,
    // old state, new state.
    fn state_change(old: u16, new: u16) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(65001u32.to_be_bytes());
        b.extend(65000u32.to_be_bytes());
        b.extend(0u16.to_be_bytes());
        b.extend(1u16.to_be_bytes());
        b.extend([10, 200, 0, 2]);
        b.extend([10, 200, 0, 1]);
        b.extend(old.to_be_bytes());
        b.extend(new.to_be_bytes());
        b
    }
    let mut data = record(1_765_000_000, 16, 5, &state_change(5, 6));
    let bad_at = data.len() as u64;
    data.extend(record(1_765_000_001, 16, 4, &[0xde, 0xad]));
    data.extend(record(1_765_000_002, 16, 5, &state_change(6, 1)));
    let truncated_at = data.len() as u64;
    data.extend(&[0, 0, 1]);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bad.mrt");
    std::fs::write(&path, &data).unwrap();

    let origin = MrtOrigin::new(SourceKind::Mrt, "hand");
    let mut events = Vec::new();
    let err = read_mrt_file(&path, &origin, &mut |ev| {
        events.push(ev);
        true
    })
    .unwrap_err();
    let prefix = format!(
        "{}: broken MRT record at offset {truncated_at}: ",
        path.display()
    );
    assert!(err.to_string().starts_with(&prefix), "{err}");
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match e {
            RouteEvent::PeerUp { .. } => "up",
            RouteEvent::PeerDown { .. } => "down",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["up", "down"]);

    // Without the truncated tail: a summary naming the bad record by its offset.
    std::fs::write(&path, &data[..truncated_at as usize]).unwrap();
    let summary = read_mrt_file(&path, &origin, &mut |_| true).unwrap();
    assert_eq!(summary.records, 3);
    assert_eq!(summary.bad_records, 1);
    assert_eq!(summary.bad_listed[0].offset, bad_at);

    // The same file through `blackout replay --mrt`: a catalog is required (its space is
    // what BGP counts), and with one the file replays.
    let blackout = env!("CARGO_BIN_EXE_blackout");
    let mrt_arg = format!("hand={}", path.display());
    let out = Command::new(blackout)
        .args(["replay", "--mrt", &mrt_arg])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--mrt needs --catalog: the BGP signal counts the catalog's address space"),
        "{stderr}"
    );
    let catalog = tmp.path().join("kz.toml");
    std::fs::write(
        &catalog,
        "country = \"KZ\"\nname = \"test\"\n\n[[network]]\nasn = 65001\nname = \"n\"\n\n\
         [[icmp]]\nprefix = \"198.51.100.0/24\"\nasn = 65001\nhosts = [\"198.51.100.1\"]\n",
    )
    .unwrap();
    let out = Command::new(blackout)
        .args(["replay", "--mrt", &mrt_arg, "--catalog"])
        .arg(&catalog)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}
