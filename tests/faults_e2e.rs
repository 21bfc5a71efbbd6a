//! End to end with counts: observations produced while the collector is down, the agent
//! killed with -9 once, the collector killed with -9 once; afterwards the collector
//! holds exactly what the agent spooled, none twice.
//!
//! What the agent produced is counted exactly: every batch is logged ("batch spooled")
//! only once it is durable; the agent is killed while the collector is down, so nothing
//! can be acknowledged (and deleted) between a batch's spooling and its log line; the
//! spool left by that kill adds the batches whose line the kill cut off.

mod faults_support;

use std::time::Duration;

use faults_support::*;

#[test]
fn collector_holds_exactly_what_the_agent_spooled_across_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let (catalog, _listeners) = tcp_catalog(6, 4);
    let c = CollectorSetup::new(&tmp.path().join("c"), &catalog, &[("a1", "tok-a1")], "");
    let adir = tmp.path().join("a");
    let acfg = agent_config(&adir, &c.dir, "a1", &c.url(), "tok-a1", "");
    let (log1, log2) = (adir.join("agent1.log"), adir.join("agent2.log"));

    let mut collector = c.start();
    let mut agent = start_agent(&acfg, &log1, &[]);
    wait_until("first upload", Duration::from_secs(20), || {
        ingested(&c.url(), "a1") >= 20
    });

    // The collector dies in the middle of steady uploads.
    collector.kill9();
    std::thread::sleep(Duration::from_secs(3));
    // The agent dies while the collector is down: nothing it spooled can be acked now.
    agent.kill9();
    let left_by_kill = spool_contents(&adir.join("spool"));
    assert!(
        !left_by_kill.is_empty(),
        "the outage should have left batches spooled"
    );

    let mut agent = start_agent(&acfg, &log2, &[]);
    std::thread::sleep(Duration::from_secs(3));
    let collector = c.start();
    // Let the backlog drain and a few more rounds pass, then stop the agent cleanly: it
    // spools what it holds and drains the spool before it exits.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        agent.term(Duration::from_secs(15)),
        "agent did not stop cleanly: {}",
        agent.log_text()
    );
    assert!(
        spool_contents(&adir.join("spool")).is_empty(),
        "the agent exited with batches still spooled"
    );

    let mut produced = spooled_batches(&[&log1, &log2]);
    for (id, n) in left_by_kill {
        produced.entry(id).or_insert(n);
    }
    let n: u64 = produced.values().sum();
    assert!(n >= 60, "too few observations for a meaningful test: {n}");

    let counted = ingested(&c.url(), "a1");
    let logged = assert_log_exactly_once(&c);
    println!(
        "produced (spooled) {n}, counted {counted}, logged {logged}, batches {}",
        produced.len()
    );
    assert_eq!(
        counted, n,
        "ingested counter differs from what the agent spooled"
    );
    assert_eq!(logged, n, "durable log differs from what the agent spooled");
    let logged_ids: std::collections::HashSet<String> = c
        .logged_batches()
        .iter()
        .map(|b| b["batch_id"].as_str().unwrap().to_string())
        .collect();
    // An empty batch is the agent's report that it is alive: accepted, not logged.
    let produced_ids: std::collections::HashSet<String> = produced
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(logged_ids, produced_ids);
    drop(collector);
}
