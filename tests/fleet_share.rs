//! Fleet assignment with the rule of the share (`?share=rule`): the collector sends the
//! catalog as written with the fleet and `k`, and each real agent (fetch mode) takes its
//! share itself. Each block ends up probed by exactly the agents the collector's own
//! assignment names, and the answer is a small fraction of the list of blocks.

mod faults_support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use blackout_model::assign::assign_ids;
use faults_support::*;

const AGENTS: [(&str, &str); 3] = [("a1", "t1"), ("a2", "t2"), ("a3", "t3")];

/// 64 ICMP blocks on loopback (127.0.64.0/18: every address answers), one entry.
const CATALOG: &str = "country = \"KZ\"\nname = \"test\"\n\n[[network]]\nasn = 64500\nname = \"n\"\n\n[[icmp]]\nprefix = \"127.0.64.0/18\"\nasn = 64500\n";

fn get(url: &str) -> String {
    let (status, body) = blackout_test_support::http_get(url).expect("collector answers");
    assert_eq!(status, 200, "{url}: {body}");
    body
}

#[test]
fn agents_take_their_share_by_the_rule_and_cover_every_block_k_times() {
    if !blackout_test_support::is_root() {
        eprintln!("SKIP: needs root for ICMP sockets");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let c = CollectorSetup::new(tmp.path(), CATALOG, &AGENTS, "assign_k = 2");
    let _collector = c.start();
    let base = c.url();

    let mut agents = Vec::new();
    for (id, token) in AGENTS {
        let dir = tmp.path().join(id);
        std::fs::create_dir_all(&dir).unwrap();
        // Fetch mode: no `catalog` key; the share is refreshed every second.
        let cfg = dir.join("agent.toml");
        std::fs::write(
            &cfg,
            format!(
                "agent_id = \"{id}\"\ncollector_url = \"{base}\"\ntoken = \"{token}\"\nspool_dir = \"spool\"\nround_secs = 1\ntimeout_ms = 300\nupload_interval_secs = 1\ncatalog_refresh_secs = 1\nallow_reserved = true\nicmp_max_probes_per_block_hour = 100000\n"
            ),
        )
        .unwrap();
        let mut cmd = Command::new(AGENT);
        cmd.args(["--log-format", "json", "run", "--config"])
            .arg(&cfg);
        agents.push(spawn(cmd, &dir.join("agent.log")));
    }
    // Every agent reports: from then on the fleet is the three of them.
    wait_until(
        "all three agents reporting",
        Duration::from_secs(20),
        || {
            let text = scrape(&base);
            AGENTS
                .iter()
                .all(|(id, _)| ingested(&base, id) > 0 && text.contains(&format!("agent=\"{id}\"")))
        },
    );

    // The answer by the rule: the catalog as written, the fleet and k.
    let rule: serde_json::Value =
        serde_json::from_str(&get(&format!("{base}api/v1/catalog?agent=a1&share=rule"))).unwrap();
    assert_eq!(rule["assignment"]["k"], 2, "{rule}");
    assert_eq!(rule["assignment"]["agent"], "a1");
    assert_eq!(
        rule["assignment"]["fleet"],
        serde_json::json!(["a1", "a2", "a3"]),
        "{rule}"
    );
    assert_eq!(rule["files"][0]["icmp"][0]["prefix"], "127.0.64.0/18");
    let rule_bytes = rule.to_string().len();
    let list_bytes = get(&format!("{base}api/v1/catalog?agent=a1")).len();
    println!("a1's share of 64 blocks: {list_bytes} B as a list, {rule_bytes} B by the rule");
    assert!(
        rule_bytes * 3 < list_bytes,
        "the rule ({rule_bytes} B) should be much smaller than the list ({list_bytes} B)"
    );

    // Agents refresh their share every second: after that, each block is probed by
    // exactly the two agents the collector's assignment names.
    std::thread::sleep(Duration::from_secs(4));
    let since = chrono::Utc::now();
    std::thread::sleep(Duration::from_secs(5));
    for a in &mut agents {
        assert!(
            a.term(Duration::from_secs(20)),
            "clean stop: {}",
            a.log_text()
        );
    }
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for batch in c.logged_batches() {
        for o in batch["observations"].as_array().unwrap() {
            let at: chrono::DateTime<chrono::Utc> =
                o["measured_at"].as_str().unwrap().parse().unwrap();
            if at >= since {
                seen.entry(o["target"].as_str().unwrap().to_string())
                    .or_default()
                    .insert(o["agent"].as_str().unwrap().to_string());
            }
        }
    }
    let ids: Vec<String> = (0..64)
        .map(|i| format!("icmp:127.0.{}.0/24", 64 + i))
        .collect();
    let fleet: Vec<String> = AGENTS.iter().map(|(a, _)| a.to_string()).collect();
    let want = assign_ids(ids.iter().map(|s| (s.as_str(), false)), &fleet, 2);
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (agent, idx) in &want {
        for &i in idx {
            expected
                .entry(ids[i].clone())
                .or_default()
                .insert(agent.clone());
        }
    }
    assert_eq!(seen.len(), 64, "every block probed: {seen:?}");
    assert_eq!(seen, expected);
}
