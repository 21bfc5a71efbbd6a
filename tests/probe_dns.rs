//! DNS probes against a real authoritative server (knot) and small in-test servers that
//! drop, refuse, truncate and send garbage.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use blackout_model::catalog::{DnsServer, Target, TargetKind};
use blackout_model::observation::{Failure, Phase};
use blackout_probe::{Outcome, ProbeSet, ProbeSettings};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

fn target(server: SocketAddr, qname: &str, qtype: &str) -> Target {
    Target {
        id: format!("dns:{server}/{qname}/{qtype}"),
        country: "ZZ".into(),
        asn: 0,
        region: None,
        control: false,
        kind: TargetKind::Dns {
            server: DnsServer::Addr(server),
            qname: qname.into(),
            qtype: qtype.into(),
        },
    }
}

async fn probe(server: SocketAddr, qname: &str, qtype: &str) -> Outcome {
    let settings = ProbeSettings {
        timeout: Duration::from_millis(800),
        ..ProbeSettings::default()
    };
    let set = ProbeSet::new(&settings).await.unwrap();
    set.probe(&target(server, qname, qtype)).await.unwrap()
}

fn failure(o: &Outcome) -> Option<Failure> {
    assert!(!o.ok || o.failure.is_none(), "{o:?}");
    if !o.ok {
        assert_eq!(o.phase, Some(Phase::DnsRoundTrip), "{o:?}");
    }
    o.failure
}

#[derive(Clone, Copy)]
enum Udp {
    Drop,
    Rcode(ResponseCode),
    Truncate,
    Garbage,
    OtherQuestion,
    Answer,
}

fn answer_for(query: &Message) -> Message {
    let mut r = Message::response(query.metadata.id, query.metadata.op_code);
    r.add_queries(query.queries.clone());
    let name = query.queries[0].name().clone();
    r.add_answer(Record::from_rdata(
        name,
        60,
        RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
    ));
    r
}

/// A UDP server with one behaviour, and on the same port a TCP server that answers.
async fn serve(b: Udp) -> SocketAddr {
    // The kernel picks a free UDP port; its TCP twin may be taken by another test's
    // connection (the TCP and UDP port spaces are separate), so try again on a new one.
    let (udp, tcp, addr) = loop {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        if let Ok(tcp) = TcpListener::bind(addr).await {
            break (udp, tcp, addr);
        }
    };
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        loop {
            let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                return;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let reply = match b {
                Udp::Drop => continue,
                Udp::Garbage => vec![0xde, 0xad, 0xbe, 0xef, 1, 2, 3],
                Udp::Rcode(code) => {
                    let mut r = Message::error_msg(q.metadata.id, q.metadata.op_code, code);
                    r.add_queries(q.queries.clone());
                    r.to_vec().unwrap()
                }
                Udp::Truncate => {
                    let mut r = Message::response(q.metadata.id, q.metadata.op_code);
                    r.add_queries(q.queries.clone());
                    r.metadata.truncation = true;
                    r.to_vec().unwrap()
                }
                Udp::OtherQuestion => {
                    let mut other = q.clone();
                    other.queries[0].set_name("elsewhere.test.".parse().unwrap());
                    answer_for(&other).to_vec().unwrap()
                }
                Udp::Answer => answer_for(&q).to_vec().unwrap(),
            };
            let _ = udp.send_to(&reply, peer).await;
        }
    });
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = tcp.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Ok(len) = s.read_u16().await else { return };
                let mut buf = vec![0u8; len as usize];
                if s.read_exact(&mut buf).await.is_err() {
                    return;
                }
                let Ok(q) = Message::from_vec(&buf) else {
                    return;
                };
                let r = answer_for(&q).to_vec().unwrap();
                let _ = s.write_u16(r.len() as u16).await;
                let _ = s.write_all(&r).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn answer_is_ok() {
    let a = serve(Udp::Answer).await;
    let o = probe(a, "www.kz.test.", "A").await;
    assert!(o.ok && o.rtt.is_some(), "{o:?}");
}

#[tokio::test]
async fn drop_is_a_timeout() {
    let a = serve(Udp::Drop).await;
    assert_eq!(
        failure(&probe(a, "kz.test.", "SOA").await),
        Some(Failure::Timeout)
    );
}

#[tokio::test]
async fn rcodes_map_to_the_vocabulary() {
    let cases = [
        (ResponseCode::Refused, Failure::DnsRefused),
        (ResponseCode::ServFail, Failure::DnsServfail),
        (ResponseCode::NXDomain, Failure::DnsNxdomain),
        (ResponseCode::NoError, Failure::DnsNoAnswer),
        (ResponseCode::FormErr, Failure::DnsBadResponse),
    ];
    for (code, want) in cases {
        let a = serve(Udp::Rcode(code)).await;
        assert_eq!(
            failure(&probe(a, "kz.test.", "SOA").await),
            Some(want),
            "{code:?}"
        );
    }
}

#[tokio::test]
async fn truncation_falls_back_to_tcp() {
    let a = serve(Udp::Truncate).await;
    let o = probe(a, "big.kz.test.", "A").await;
    assert!(o.ok, "{o:?}");
}

#[tokio::test]
async fn garbage_and_mismatched_answers_are_bad_responses() {
    let a = serve(Udp::Garbage).await;
    assert_eq!(
        failure(&probe(a, "kz.test.", "A").await),
        Some(Failure::DnsBadResponse)
    );
    let a = serve(Udp::OtherQuestion).await;
    assert_eq!(
        failure(&probe(a, "kz.test.", "A").await),
        Some(Failure::DnsBadResponse)
    );
}

#[tokio::test]
async fn closed_port_is_refused() {
    let a = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    assert_eq!(
        failure(&probe(a, "kz.test.", "A").await),
        Some(Failure::Refused)
    );
}

/// A knotd on loopback, killed when dropped.
struct Knot {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Knot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_knotd() -> Option<&'static str> {
    ["/usr/sbin/knotd", "/usr/bin/knotd"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

fn start_knot() -> Option<Knot> {
    let knotd = find_knotd()?;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("kz.test.zone"),
        "$ORIGIN kz.test.\n$TTL 300\n\
         @ SOA ns.kz.test. hostmaster.kz.test. 1 3600 600 86400 300\n\
         @ NS ns.kz.test.\n\
         ns A 127.0.0.1\n\
         www A 192.0.2.10\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("knot.conf"),
        format!(
            "server:\n    rundir: \"{d}\"\n    listen: 127.0.0.1@{port}\n\
             control:\n    listen: \"{d}/knot.sock\"\n\
             database:\n    storage: \"{d}/db\"\n\
             log:\n  - target: stderr\n    any: error\n\
             template:\n  - id: default\n    storage: \"{d}\"\n    file: \"%s.zone\"\n\
             zone:\n  - domain: kz.test\n"
        ),
    )
    .unwrap();
    let child = Command::new(knotd)
        .arg("-c")
        .arg(dir.path().join("knot.conf"))
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    Some(Knot {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        _dir: dir,
    })
}

#[tokio::test]
async fn real_authoritative_server() {
    let Some(knot) = start_knot() else {
        eprintln!("SKIP: knotd not installed (apt-get install knot)");
        return;
    };
    // Wait until knot serves the zone.
    let mut o = probe(knot.addr, "kz.test.", "SOA").await;
    for _ in 0..50 {
        if o.ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        o = probe(knot.addr, "kz.test.", "SOA").await;
    }
    assert!(o.ok, "knot never answered SOA: {o:?}");
    assert!(probe(knot.addr, "kz.test.", "NS").await.ok);
    assert!(probe(knot.addr, "www.kz.test.", "A").await.ok);
    assert_eq!(
        failure(&probe(knot.addr, "nope.kz.test.", "A").await),
        Some(Failure::DnsNxdomain)
    );
    assert_eq!(
        failure(&probe(knot.addr, "www.kz.test.", "AAAA").await),
        Some(Failure::DnsNoAnswer)
    );
    // Out of its zone, an authoritative-only server refuses.
    assert_eq!(
        failure(&probe(knot.addr, "example.org.", "A").await),
        Some(Failure::DnsRefused)
    );
}
