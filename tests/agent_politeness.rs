//! A block the agent skips for politeness is a fact, counted and shown, not an ERROR
//! naming one block: against the real agent and collector, ICMP on loopback.

mod faults_support;

use std::time::Duration;

use faults_support::*;

#[test]
fn politeness_skips_are_counted_and_shown_not_logged_as_errors() {
    if !blackout_test_support::is_root() {
        eprintln!("SKIP: needs root for ICMP sockets");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Two loopback blocks that always answer (one echo per round each), and a TCP target
    // so that batches (which carry the agent's counts) keep flowing while blocks are
    // skipped.
    let catalog = "country = \"KZ\"\nname = \"test\"\n\n[[network]]\nasn = 64500\nname = \"n\"\n\n\
                   [[icmp]]\nprefix = \"127.0.40.0/24\"\nasn = 64500\nhosts = [\"127.0.40.1\"]\n\n\
                   [[icmp]]\nprefix = \"127.0.41.0/24\"\nasn = 64500\nhosts = [\"127.0.41.1\"]\n\n\
                   [[tcp]]\naddress = \"127.0.0.1:9\"\nasn = 64500\n";
    let c = CollectorSetup::new(tmp.path(), catalog, &[("a1", "tok-a1")], "");
    let _collector = c.start();
    // 1 s rounds against a limit of 4 echoes per block and hour: after the burst, every
    // round is over the budget.
    let cfg = agent_config(
        &tmp.path().join("agent"),
        tmp.path(),
        "a1",
        &c.url(),
        "tok-a1",
        "icmp_max_probes_per_block_hour = 4",
    );
    let out = std::process::Command::new(COLLECTOR)
        .args(["check-config", "--agent"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("note: key `round_secs`") && text.contains("skipped"),
        "check-config says the round is too short: {text}"
    );
    let log = tmp.path().join("agent.log");
    let agent = start_agent(&cfg, &log, &[]);
    let t0 = std::time::Instant::now();
    loop {
        let skips = metric_sum(
            &scrape(&c.url()),
            "blackout_agent_politeness_skips_total",
            &["agent=\"a1\""],
        );
        if skips >= 4.0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "no politeness skips reported ({skips}); agent log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(agent);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("probe could not run"),
        "a politeness skip is not an error: {text}"
    );
    assert!(
        text.contains("shorter than"),
        "the agent warns at start that its round is too short"
    );
}
