//! The ICMP echo engine against the kernel: loopback (every address of 127.0.0.0/8 and
//! ::1 answer), and network namespaces for what loopback cannot do: echoes nobody
//! answers, routers that answer with ICMP errors, and forged foreign and stale replies.

use blackout_test_support::is_root;

use blackout_test_support as common;

use common::in_netns;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blackout_model::observation::Failure;
use blackout_probe::ProbeSettings;
use blackout_probe::echo::{EchoEngine, EchoResult, EngineConfig};
use blackout_probe::icmp::IcmpProber;

fn settings(timeout_ms: u64) -> ProbeSettings {
    ProbeSettings {
        timeout: Duration::from_millis(timeout_ms),
        ..ProbeSettings::default()
    }
}

fn config(timeout_ms: u64) -> EngineConfig {
    EngineConfig {
        timeout: Duration::from_millis(timeout_ms),
        recv_buffer: blackout_probe::DEFAULT_ICMP_RECV_BUFFER_BYTES,
    }
}

fn open(v4: bool, timeout_ms: u64) -> Option<EchoEngine> {
    match EchoEngine::open(v4, &config(timeout_ms)) {
        Ok(e) => Some(e),
        Err(e) => {
            eprintln!("SKIP: no ICMP socket: {e}");
            None
        }
    }
}

fn burst(engine: &EchoEngine, addrs: &[IpAddr], max_in_flight: usize) -> Vec<EchoResult> {
    let mut out = vec![None; addrs.len()];
    engine.burst(addrs, max_in_flight, |i, r| {
        assert!(out[i].is_none(), "result {i} twice");
        out[i] = Some(r);
    });
    out.into_iter()
        .map(|r| r.expect("every echo has a result"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_in_flight_are_all_answered() {
    let p = Arc::new(IcmpProber::new(&settings(3000)));
    let Ok(engine) = p.engine(true).await else {
        eprintln!("SKIP: no ICMP socket");
        return;
    };
    let addrs: Vec<IpAddr> = (0..20_000u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x7f20_0000 + i)))
        .collect();
    // One future per echo, all started at once.
    let handles: Vec<_> = addrs
        .iter()
        .map(|&a| {
            let p = p.clone();
            tokio::spawn(async move { p.echo(a).await.unwrap() })
        })
        .collect();
    let mut ok = 0;
    for h in handles {
        ok += h.await.unwrap().ok as usize;
    }
    assert_eq!(ok, addrs.len());
    // The burst path, everything in flight at once.
    let results = tokio::task::spawn_blocking(move || {
        let r = burst(&engine, &addrs, addrs.len());
        (r, engine.in_flight())
    })
    .await
    .unwrap();
    let replies = results
        .0
        .iter()
        .filter(|r| matches!(r, EchoResult::Reply(_)))
        .count();
    assert_eq!((replies, results.1), (20_000, 0));
}

#[tokio::test]
async fn ipv6_loopback_answers() {
    if !std::path::Path::new("/proc/net/if_inet6").exists() {
        eprintln!("SKIP: no IPv6 here");
        return;
    }
    let Some(engine) = open(false, 1000) else {
        return;
    };
    let one: IpAddr = "::1".parse().unwrap();
    let r = engine.echo(one).await;
    assert!(matches!(r, EchoResult::Reply(_)), "{r:?}");
    // Many echoes to one address: sequence numbers keep them apart.
    let engine = Arc::new(engine);
    let e = engine.clone();
    let results = tokio::task::spawn_blocking(move || burst(&e, &vec![one; 500], 100))
        .await
        .unwrap();
    assert!(
        results.iter().all(|r| matches!(r, EchoResult::Reply(_))),
        "{results:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Network namespaces.

struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let ns = Netns(format!("bo-echo-{tag}-{}", std::process::id()));
        sh(&format!(
            "ip netns add {0} && ip -n {0} link set lo up",
            ns.0
        ));
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn sh(script: &str) {
    let st = Command::new("sh")
        .args(["-ec", script])
        .status()
        .expect("run sh");
    assert!(st.success(), "{script}");
}

fn netns_ok(needs: &[&str]) -> bool {
    if !is_root() {
        eprintln!("SKIP: needs root for network namespaces");
        return false;
    }
    for prog in needs {
        if Command::new(prog).arg("-V").output().is_err() {
            eprintln!("SKIP: {prog} is not installed");
            return false;
        }
    }
    true
}

#[test]
fn unanswered_echoes_time_out_on_time() {
    if !netns_ok(&["ip"]) {
        return;
    }
    // P routes the block to T, which does not forward: packets vanish without a word.
    let ns = Netns::new("timeout-p");
    let t = Netns::new("timeout-t");
    sh(&format!(
        "ip -n {p} link add vp type veth peer name vt netns {t} && \
         ip -n {p} addr add 10.255.2.1/30 dev vp && ip -n {t} addr add 10.255.2.2/30 dev vt && \
         ip -n {p} link set vp up && ip -n {t} link set vt up && \
         ip -n {p} route add 10.77.0.0/24 via 10.255.2.2",
        p = ns.0,
        t = t.0
    ));
    let (single, elapsed, many) = in_netns(&ns.0, || async {
        let engine = Arc::new(open(true, 300).expect("root has RAW sockets"));
        let t0 = Instant::now();
        let single = engine.echo("10.77.0.9".parse().unwrap()).await;
        let elapsed = t0.elapsed();
        let addrs: Vec<IpAddr> = (10..60u32)
            .map(|i| IpAddr::V4(Ipv4Addr::new(10, 77, 0, i as u8)))
            .collect();
        let e = engine.clone();
        let many = tokio::task::spawn_blocking(move || burst(&e, &addrs, 16))
            .await
            .unwrap();
        (single, elapsed, many)
    });
    assert_eq!(single, EchoResult::Timeout);
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_millis(450),
        "{elapsed:?}"
    );
    assert!(many.iter().all(|r| *r == EchoResult::Timeout), "{many:?}");
}

#[test]
fn router_errors_and_local_refusals_are_unreachable() {
    if !netns_ok(&["ip", "nft"]) {
        return;
    }
    // P -> router R, whose firewall rejects the block with ICMP host unreachable (route
    // errors are rate-limited to a burst of 5, a firewall reject is not once
    // icmp_ratelimit is 0); P itself refuses to send to a prohibited prefix.
    let p = Netns::new("unr-p");
    let r = Netns::new("unr-r");
    sh(&format!(
        "ip -n {p} link add vp type veth peer name vr netns {r} && \
         ip -n {p} addr add 10.255.1.1/30 dev vp && ip -n {r} addr add 10.255.1.2/30 dev vr && \
         ip -n {p} link set vp up && ip -n {r} link set vr up && \
         ip -n {p} route add 10.78.0.0/24 via 10.255.1.2 && \
         ip -n {p} route add prohibit 10.79.0.0/24 && \
         ip netns exec {r} sysctl -qw net.ipv4.ip_forward=1 net.ipv4.icmp_ratelimit=0 && \
         ip -n {r} route add 10.78.0.0/24 via 10.255.1.1 && \
         ip netns exec {r} nft -f - <<'EOF'\n\
         table ip r {{\n\
           chain through {{\n\
             type filter hook forward priority 0;\n\
             ip daddr 10.78.0.0/24 reject with icmp type host-unreachable\n\
           }}\n\
         }}\n\
         EOF",
        p = p.0,
        r = r.0
    ));
    // RAW first; then, with unprivileged ping allowed in P, a DGRAM socket, whose ICMP
    // errors come through the socket's error queue.
    for (kind, sysctl) in [("raw", None), ("dgram", Some("0 2147483647"))] {
        if let Some(range) = sysctl {
            sh(&format!(
                "ip netns exec {} sysctl -qw net.ipv4.ping_group_range='{range}'",
                p.0
            ));
        }
        let (got, single, routed, refused) = in_netns(&p.0, || async {
            let engine = Arc::new(open(true, 1000).expect("root has ICMP sockets"));
            let got = engine.kind().as_str();
            let single = engine.echo("10.78.0.5".parse().unwrap()).await;
            let e = engine.clone();
            let (routed, refused) = tokio::task::spawn_blocking(move || {
                let routed: Vec<IpAddr> = (1..21u8)
                    .map(|i| IpAddr::V4(Ipv4Addr::new(10, 78, 0, i)))
                    .collect();
                let refused: Vec<IpAddr> = (1..5u8)
                    .map(|i| IpAddr::V4(Ipv4Addr::new(10, 79, 0, i)))
                    .collect();
                (burst(&e, &routed, 8), burst(&e, &refused, 8))
            })
            .await
            .unwrap();
            (got, single, routed, refused)
        });
        assert_eq!(got, kind);
        assert_eq!(single, EchoResult::Unreachable, "{kind}");
        assert_eq!(single.outcome().failure, Some(Failure::Unreachable));
        assert!(
            routed.iter().all(|r| *r == EchoResult::Unreachable),
            "{kind}: {routed:?}"
        );
        assert!(
            refused
                .iter()
                .all(|r| r.outcome().failure == Some(Failure::Unreachable)),
            "{kind}: {refused:?}"
        );
    }
}

/// Forges echo replies from 127.0.0.5 with a TTL of 7, which the namespace's firewall
/// lets through while it drops the kernel's own replies.
fn forge_reply(
    sock: &socket2::Socket,
    request: &[u8],
    ident: u16,
    token: Option<u64>,
    generation_delta: u32,
) {
    let mut p = request.to_vec();
    p[0] = 0;
    p[2..4].copy_from_slice(&[0, 0]);
    p[4..6].copy_from_slice(&ident.to_be_bytes());
    if let Some(t) = token {
        p[8..16].copy_from_slice(&t.to_be_bytes());
    }
    let g = u32::from_be_bytes(p[16..20].try_into().unwrap()).wrapping_add(generation_delta);
    p[16..20].copy_from_slice(&g.to_be_bytes());
    let sum = {
        let mut s: u32 = p
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    };
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    let to = socket2::SockAddr::from(SocketAddr::from(([127, 0, 0, 5], 0)));
    sock.send_to(&p, &to).expect("send forged reply");
}

#[test]
fn foreign_and_stale_replies_are_ignored() {
    if !netns_ok(&["ip", "nft"]) {
        return;
    }
    let ns = Netns::new("forge");
    sh(&format!(
        "ip netns exec {0} nft -f - <<'EOF'\n\
         table ip t {{\n\
           chain out {{\n\
             type filter hook output priority 0;\n\
             icmp type echo-reply ip ttl != 7 drop\n\
           }}\n\
         }}\n\
         EOF",
        ns.0
    ));
    let results = in_netns(&ns.0, || async {
        use socket2::{Domain, Protocol, Socket, Type};
        let engine = Arc::new(open(true, 3000).expect("root has RAW sockets"));
        // A second RAW socket sees the engine's request arrive on lo (the kernel's reply
        // is dropped by the firewall) and forges answers to it.
        let spy = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).unwrap();
        spy.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        spy.bind(&SocketAddr::from(([127, 0, 0, 5], 0)).into())
            .unwrap();
        spy.set_ttl_v4(7).unwrap();
        let e = engine.clone();
        let pending = tokio::spawn(async move { e.echo("127.0.0.5".parse().unwrap()).await });
        let request = loop {
            let mut buf = [0u8; 512];
            let n = (&spy).read(&mut buf).expect("the engine's request");
            let data = &buf[..n];
            let ihl = ((data[0] & 0x0f) as usize) * 4;
            if data[ihl] == 8 {
                break data[ihl..].to_vec();
            }
        };
        let ident = u16::from_be_bytes([request[4], request[5]]);
        let mut seen = Vec::new();
        // Another pinger's identifier, a foreign token, a stale generation.
        for (id, token, delta) in [
            (ident.wrapping_add(1), None, 0),
            (ident, Some(0x0123_4567_89ab_cdef), 0),
            (ident, None, u32::MAX),
        ] {
            forge_reply(&spy, &request, id, token, delta);
            tokio::time::sleep(Duration::from_millis(100)).await;
            seen.push((pending.is_finished(), engine.in_flight()));
        }
        // The genuine article completes the echo.
        forge_reply(&spy, &request, ident, None, 0);
        let r = tokio::time::timeout(Duration::from_secs(2), pending)
            .await
            .expect("answered before the timeout")
            .unwrap();
        (seen, r, engine.in_flight())
    });
    let (seen, r, left) = results;
    assert_eq!(seen, vec![(false, 1); 3]);
    assert!(matches!(r, EchoResult::Reply(_)), "{r:?}");
    assert_eq!(left, 0);
}

/// User + system CPU of this process so far, from /proc/self/stat (clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    Duration::from_millis((f[0] + f[1]) * 10)
}

/// The sustained goal's echo path: one future per echo, as block rounds send them, at
/// 7,000 echoes/s. Prints CPU per echo for the whole process (test harness and pacing
/// included, and on loopback the kernel's work of answering too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement (5 s): cargo test --test probe_icmp_echo -- --ignored --nocapture sustained"]
async fn sustained_rate_cpu_per_echo() {
    const RATE: u64 = 7000;
    const SECS: u64 = 5;
    let p = Arc::new(IcmpProber::new(&settings(1000)));
    if p.open(true).await.is_err() {
        eprintln!("SKIP: no ICMP socket");
        return;
    }
    let (cpu0, t0) = (cpu_time(), Instant::now());
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut handles = Vec::with_capacity((RATE * SECS) as usize);
    for ms in 0..SECS * 1000 {
        tick.tick().await;
        for k in 0..RATE / 1000 {
            let a = IpAddr::V4(Ipv4Addr::from(0x7f30_0000 + (ms * 7 + k) as u32));
            let p = p.clone();
            handles.push(tokio::spawn(async move { p.echo(a).await.unwrap().ok }));
        }
    }
    let mut ok = 0;
    for h in handles.drain(..) {
        ok += h.await.unwrap() as usize;
    }
    let (cpu, wall) = (cpu_time() - cpu0, t0.elapsed());
    let n = RATE * SECS;
    eprintln!(
        "{n} echoes in {wall:?} ({:.0}/s), {ok} answered, CPU {cpu:?}: {:.1} us per echo, {:.1} % of one core",
        n as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / n as f64,
        cpu.as_secs_f64() * 100.0 / wall.as_secs_f64()
    );
    assert_eq!(ok as u64, n);
}
