//! A network cut between agent and collector, made with a network namespace: the agent
//! runs in its own namespace joined to the collector's by a veth pair; the link goes
//! down for a while and comes back. Everything the agent spooled arrives, once.

mod faults_support;

use std::process::Command;
use std::time::Duration;

use faults_support::*;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes the namespace (after killing what runs in it) and the veth pair, even when
/// the test fails.
struct Net {
    ns: String,
    host_if: String,
}

impl Drop for Net {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.ns])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

#[test]
fn cut_and_heal_between_agent_and_collector_loses_nothing() {
    if !is_root() || Command::new("ip").arg("-V").output().is_err() {
        println!("SKIP: needs root and iproute2 to make network namespaces");
        return;
    }
    let id = std::process::id() % 10_000;
    let net = Net {
        ns: format!("bofaults{id}"),
        host_if: format!("bfh{id}"),
    };
    let ns_if = format!("bfn{id}");
    let octet = id % 250;
    let (host_ip, ns_ip) = (format!("10.213.{octet}.1"), format!("10.213.{octet}.2"));
    ip(&["netns", "add", &net.ns]);
    ip(&[
        "link",
        "add",
        &net.host_if,
        "type",
        "veth",
        "peer",
        "name",
        &ns_if,
    ]);
    ip(&["link", "set", &ns_if, "netns", &net.ns]);
    ip(&["addr", "add", &format!("{host_ip}/30"), "dev", &net.host_if]);
    ip(&["link", "set", &net.host_if, "up"]);
    ip(&[
        "-n",
        &net.ns,
        "addr",
        "add",
        &format!("{ns_ip}/30"),
        "dev",
        &ns_if,
    ]);
    ip(&["-n", &net.ns, "link", "set", &ns_if, "up"]);
    ip(&["-n", &net.ns, "link", "set", "lo", "up"]);

    let tmp = tempfile::tempdir().unwrap();
    // Inside the namespace nothing listens on these loopback ports: every probe is a
    // (refused) observation, which is all this test needs.
    let (catalog, _l) = tcp_catalog(0, 8);
    let c = CollectorSetup::new_on(
        &tmp.path().join("c"),
        &catalog,
        &[("in-ns", "tok-ns")],
        "",
        &host_ip,
    );
    let _collector = c.start();
    let adir = tmp.path().join("a");
    let acfg = agent_config(&adir, &c.dir, "in-ns", &c.url(), "tok-ns", "");
    let log = adir.join("agent.log");
    let mut agent = start_agent(&acfg, &log, &["ip", "netns", "exec", &net.ns]);
    wait_until("uploads through the veth", Duration::from_secs(20), || {
        ingested(&c.url(), "in-ns") >= 16
    });

    ip(&["link", "set", &net.host_if, "down"]);
    std::thread::sleep(Duration::from_secs(1));
    let during = ingested(&c.url(), "in-ns");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        ingested(&c.url(), "in-ns"),
        during,
        "data crossed a cut link"
    );
    assert!(
        !spool_contents(&adir.join("spool")).is_empty(),
        "the agent should be spooling during the cut"
    );
    ip(&["link", "set", &net.host_if, "up"]);

    let n_before_heal = during;
    wait_until("uploads after the heal", Duration::from_secs(30), || {
        ingested(&c.url(), "in-ns") > n_before_heal + 40
    });
    assert!(
        agent.term(Duration::from_secs(20)),
        "agent did not stop cleanly: {}",
        agent.log_text()
    );
    assert!(
        spool_contents(&adir.join("spool")).is_empty(),
        "batches left in the spool"
    );
    let n: u64 = spooled_batches(&[&log]).values().sum();
    let counted = ingested(&c.url(), "in-ns");
    let logged = assert_log_exactly_once(&c);
    println!("spooled {n}, counted {counted}, logged {logged}");
    assert_eq!(counted, n);
    assert_eq!(logged, n);
}
