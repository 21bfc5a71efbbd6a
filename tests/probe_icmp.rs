//! ICMP probes: echoes on loopback (the kernel answers all of 127.0.0.0/8), and adaptive
//! block probing against blocks in network namespaces where only some addresses answer,
//! and one that goes dark.

use blackout_test_support::is_root;

use blackout_test_support as common;

use common::in_netns;
use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use blackout_model::catalog::{Target, TargetKind};
use blackout_model::observation::{BlockVerdict, Failure, Phase};
use blackout_probe::icmp::{BLOCK_ENTRY_BYTES, IcmpProber};
use blackout_probe::{ProbeError, ProbeSet, ProbeSettings};

fn settings(timeout_ms: u64) -> ProbeSettings {
    ProbeSettings {
        timeout: Duration::from_millis(timeout_ms),
        ..ProbeSettings::default()
    }
}

fn block_target(block: &str, hosts: &[&str], availability: Option<f64>) -> Target {
    Target {
        id: format!("icmp:{block}"),
        country: "ZZ".into(),
        asn: 0,
        region: None,
        control: false,
        kind: TargetKind::Icmp {
            block: block.parse().unwrap(),
            hosts: hosts.iter().map(|h| h.parse().unwrap()).collect(),
            availability,
        },
    }
}

/// ICMP needs a RAW socket (root) or the ping group range; skip where neither is there.
async fn icmp_available(p: &IcmpProber) -> bool {
    match p.open(true).await {
        Ok(kind) => {
            eprintln!("icmp socket: {kind}");
            true
        }
        Err(e) => {
            eprintln!("SKIP: {e}");
            false
        }
    }
}

#[tokio::test]
async fn echo_on_loopback() {
    let p = IcmpProber::new(&settings(1000));
    if !icmp_available(&p).await {
        return;
    }
    let o = p.echo("127.0.0.1".parse().unwrap()).await.unwrap();
    assert!(o.ok && o.rtt.is_some(), "{o:?}");
    match p.echo("::1".parse().unwrap()).await {
        Ok(o) => assert!(o.ok, "{o:?}"),
        Err(e) => eprintln!("no IPv6 ICMP here: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_in_flight_on_one_socket_lose_nothing() {
    let p = Arc::new(IcmpProber::new(&settings(2000)));
    if !icmp_available(&p).await {
        return;
    }
    // 3,000 distinct addresses plus 500 echoes to one address at once: identifiers and
    // sequence numbers must keep them apart.
    let mut addrs: Vec<IpAddr> = (0..3000u32)
        .map(|i| IpAddr::V4((0x7f10_0000 + i).into()))
        .collect();
    addrs.extend(std::iter::repeat_n(
        "127.0.0.2".parse::<IpAddr>().unwrap(),
        500,
    ));
    let handles: Vec<_> = addrs
        .into_iter()
        .map(|a| {
            let p = p.clone();
            tokio::spawn(async move { p.echo(a).await.unwrap() })
        })
        .collect();
    let mut ok = 0;
    for h in handles {
        ok += h.await.unwrap().ok as usize;
    }
    assert_eq!(ok, 3500);
}

#[tokio::test]
async fn loopback_block_is_up_after_one_probe() {
    let set = ProbeSet::new(&settings(1000)).await.unwrap();
    if !icmp_available(&set.icmp).await {
        return;
    }
    let t = block_target("127.0.9.0/24", &[], None);
    let o = set.probe(&t).await.unwrap();
    let b = o.block.unwrap();
    assert!(o.ok, "{o:?}");
    // One echo decides; a second one looks for another answering address (a block known
    // through fewer than 16 addresses learns more while its budget allows).
    assert_eq!((b.verdict, b.probes, b.replies), (BlockVerdict::Up, 2, 2));
    assert!(b.belief > 0.9);
    assert_eq!(set.icmp.tracked_blocks(), 1);
    let st = set
        .icmp
        .block_state(&"127.0.9.0/24".parse().unwrap())
        .unwrap();
    eprintln!(
        "block state: {} bytes, map entry {} bytes",
        std::mem::size_of_val(&st),
        BLOCK_ENTRY_BYTES
    );
}

#[tokio::test]
async fn politeness_budget_is_enforced() {
    let s = ProbeSettings {
        icmp_max_probes_per_block_hour: 4,
        ..settings(500)
    };
    let set = ProbeSet::new(&s).await.unwrap();
    if !icmp_available(&set.icmp).await {
        return;
    }
    let t = block_target("127.0.10.0/24", &["127.0.10.1"], Some(0.9));
    // 4 per hour: a burst of 2, then nothing until the bucket refills.
    assert!(set.probe(&t).await.unwrap().ok);
    assert!(set.probe(&t).await.unwrap().ok);
    let e = set.probe(&t).await.unwrap_err();
    assert!(matches!(e, ProbeError::PolitenessBudget { .. }), "{e}");
}

// ---------------------------------------------------------------------------------------
// Network namespaces: a prober namespace P and a target namespace T joined by a veth pair.
// T answers for a block through `ip route add local`; P routes the block to T.

use blackout_test_support::Netns;

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {}", args.join(" "));
}

struct World {
    p: Netns,
    t: Netns,
}

/// Builds P <-> T. `local` are the prefixes T answers for; P routes `block` to T.
fn world(tag: &str, block: &str, local: &[&str]) -> Option<World> {
    if !is_root() || Command::new("ip").arg("-V").output().is_err() {
        eprintln!("SKIP: needs root and iproute2 for network namespaces");
        return None;
    }
    let pid = std::process::id();
    let p = Netns(format!("bo-probe-{tag}-p-{pid}"));
    let t = Netns(format!("bo-probe-{tag}-t-{pid}"));
    ip(&["netns", "add", &p.0]);
    ip(&["netns", "add", &t.0]);
    ip(&[
        "-n", &p.0, "link", "add", "vp", "type", "veth", "peer", "name", "vt", "netns", &t.0,
    ]);
    ip(&["-n", &p.0, "addr", "add", "10.255.0.1/30", "dev", "vp"]);
    ip(&["-n", &t.0, "addr", "add", "10.255.0.2/30", "dev", "vt"]);
    for ns in [&p.0, &t.0] {
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    ip(&["-n", &p.0, "link", "set", "vp", "up"]);
    ip(&["-n", &t.0, "link", "set", "vt", "up"]);
    ip(&["-n", &p.0, "route", "add", block, "via", "10.255.0.2"]);
    for l in local {
        ip(&["-n", &t.0, "route", "add", "local", l, "dev", "lo"]);
    }
    Some(World { p, t })
}

fn settings_fast() -> ProbeSettings {
    ProbeSettings {
        timeout: Duration::from_millis(500),
        // Tests run many rounds in seconds; the politeness limit is tested above.
        icmp_max_probes_per_block_hour: 10_000,
        ..ProbeSettings::default()
    }
}

#[test]
fn block_where_only_some_addresses_answer_stays_up() {
    // Hosts .1-.8 are listed; only .1-.3 answer (.0/30 covers .0-.3).
    let Some(w) = world("some", "10.66.1.0/24", &["10.66.1.0/30"]) else {
        return;
    };
    let reports = in_netns(&w.p.0, || async {
        let set = ProbeSet::new(&settings_fast()).await.unwrap();
        let hosts: Vec<String> = (1..=8).map(|i| format!("10.66.1.{i}")).collect();
        let hosts: Vec<&str> = hosts.iter().map(|s| s.as_str()).collect();
        let t = block_target("10.66.1.0/24", &hosts, Some(3.0 / 8.0));
        let mut v = Vec::new();
        for _ in 0..8 {
            v.push(set.probe(&t).await.unwrap());
        }
        v
    });
    for o in &reports {
        let b = o.block.unwrap();
        assert!(b.probes <= 16, "{b:?}");
    }
    // After the first round (belief starts at 0.5) every round ends up: unanswered
    // probes to the silent hosts are answered by more probes, not by a down verdict.
    for o in &reports[1..] {
        let b = o.block.unwrap();
        assert_eq!(b.verdict, BlockVerdict::Up, "{reports:?}");
        assert!(o.ok);
    }
    let probes: u32 = reports.iter().map(|o| o.block.unwrap().probes).sum();
    let replies: u32 = reports.iter().map(|o| o.block.unwrap().replies).sum();
    assert!(
        probes > replies,
        "some probes must have gone to silent hosts: {reports:?}"
    );
}

#[test]
fn block_that_goes_dark_is_down_within_the_round() {
    let Some(w) = world("dark", "10.66.2.0/24", &["10.66.2.0/24"]) else {
        return;
    };
    let t_ns = w.t.0.clone();
    let (before, dark, back) = in_netns(&w.p.0, move || async move {
        let set = ProbeSet::new(&settings_fast()).await.unwrap();
        let t = block_target("10.66.2.0/24", &[], None);
        // Learn the block: a few up rounds.
        let mut before = Vec::new();
        for _ in 0..3 {
            before.push(set.probe(&t).await.unwrap());
        }
        // The block goes dark: its addresses stop answering (packets are dropped, no
        // ICMP error comes back).
        ip(&[
            "-n",
            &t_ns,
            "route",
            "del",
            "local",
            "10.66.2.0/24",
            "dev",
            "lo",
        ]);
        let dark = set.probe(&t).await.unwrap();
        ip(&[
            "-n",
            &t_ns,
            "route",
            "add",
            "local",
            "10.66.2.0/24",
            "dev",
            "lo",
        ]);
        let mut back = set.probe(&t).await.unwrap();
        // From down, a reply makes the block uncertain then up within the round.
        if !back.ok {
            back = set.probe(&t).await.unwrap();
        }
        (before, dark, back)
    });
    assert!(before.iter().all(|o| o.ok), "{before:?}");
    let b = dark.block.unwrap();
    assert_eq!(b.verdict, BlockVerdict::Down, "{dark:?}");
    assert!(!dark.ok);
    assert_eq!(
        (dark.phase, dark.failure),
        (Some(Phase::IcmpEcho), Some(Failure::Timeout))
    );
    assert!(b.probes >= 2 && b.probes <= 16, "{b:?}");
    assert_eq!(b.replies, 0);
    assert!(back.ok, "{back:?}");
}

#[test]
fn one_lost_reply_does_not_make_a_block_down() {
    // Two hosts listed, one answers: the lost reply to .9 is followed by a probe to .1.
    let Some(w) = world("loss", "10.66.3.0/24", &["10.66.3.1/32"]) else {
        return;
    };
    let outs = in_netns(&w.p.0, || async {
        let set = ProbeSet::new(&settings_fast()).await.unwrap();
        let t = block_target("10.66.3.0/24", &["10.66.3.1", "10.66.3.9"], Some(0.9));
        let mut v = Vec::new();
        for _ in 0..6 {
            v.push(set.probe(&t).await.unwrap());
        }
        v
    });
    for o in &outs[1..] {
        assert_eq!(o.block.unwrap().verdict, BlockVerdict::Up, "{outs:?}");
    }
}

#[test]
fn unprivileged_dgram_socket_is_used_when_allowed() {
    let Some(w) = world("dgram", "10.66.4.0/24", &["10.66.4.0/24"]) else {
        return;
    };
    ip(&[
        "netns",
        "exec",
        &w.p.0,
        "sysctl",
        "-qw",
        "net.ipv4.ping_group_range=0 2147483647",
    ]);
    let (kind, ok) = in_netns(&w.p.0, || async {
        let p = IcmpProber::new(&settings_fast());
        let kind = p.open(true).await.unwrap();
        let ok = p.echo("10.66.4.7".parse().unwrap()).await.unwrap().ok;
        (kind, ok)
    });
    assert_eq!(kind, "dgram");
    assert!(ok);
}
