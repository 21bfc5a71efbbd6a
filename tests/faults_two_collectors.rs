//! Scale-out: one agent uploads to two collectors side by side (`collector_urls`), one
//! of which is killed with -9 and comes back. Both end up holding exactly what the agent
//! spooled, once, and give the same verdicts.

mod faults_support;

use std::time::Duration;

use faults_support::*;

/// The verdict and aggregate series of an exposition, sorted.
fn verdicts(exposition: &str) -> Vec<String> {
    let mut v: Vec<String> = exposition
        .lines()
        .filter(|l| {
            [
                "blackout_country_status",
                "blackout_country_verdict",
                "blackout_asn_status",
                "blackout_reachable_ratio",
                "blackout_targets{",
                "blackout_asn_reachable_ratio",
            ]
            .iter()
            .any(|m| l.starts_with(m))
        })
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn two_collectors_hold_the_same_observations_and_verdicts() {
    let tmp = tempfile::tempdir().unwrap();
    let (catalog, _l) = tcp_catalog(5, 3);
    let c1 = CollectorSetup::new(&tmp.path().join("c1"), &catalog, &[("a1", "tok-a1")], "");
    let c2 = CollectorSetup::new(&tmp.path().join("c2"), &catalog, &[("a1", "tok-a1")], "");
    let _p1 = c1.start();
    let mut p2 = c2.start();
    let adir = tmp.path().join("a");
    let acfg = agent_config(
        &adir,
        &c1.dir,
        "a1",
        &c1.url(),
        "tok-a1",
        &format!("collector_urls = [\"{}\"]", c2.url()),
    );
    let log = adir.join("agent.log");
    let mut agent = start_agent(&acfg, &log, &[]);
    wait_until("uploads to both", Duration::from_secs(20), || {
        ingested(&c1.url(), "a1") >= 16 && ingested(&c2.url(), "a1") >= 16
    });
    p2.kill9();
    std::thread::sleep(Duration::from_secs(3));
    let while_down = ingested(&c1.url(), "a1");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        ingested(&c1.url(), "a1") > while_down,
        "collector 1 must keep receiving while collector 2 is down"
    );
    let _p2 = c2.start();
    std::thread::sleep(Duration::from_secs(3));
    assert!(agent.term(Duration::from_secs(20)), "{}", agent.log_text());

    let n: u64 = spooled_batches(&[&log]).values().sum();
    assert!(n > 0);
    for c in [&c1, &c2] {
        assert_eq!(ingested(&c.url(), "a1"), n, "collector {} count", c.url());
        assert_eq!(assert_log_exactly_once(c), n);
    }
    let (v1, v2) = (verdicts(&scrape(&c1.url())), verdicts(&scrape(&c2.url())));
    assert!(
        v1.iter()
            .any(|l| l.starts_with("blackout_country_verdict{country=\"KZ\"}")),
        "{v1:?}"
    );
    assert_eq!(v1, v2, "the two collectors disagree");
}
