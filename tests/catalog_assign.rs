//! Fleet assignment: coverage, balance, and minimal movement when agents come and go.

use std::collections::{BTreeSet, HashMap};

use blackout_collector::assign::{Share, agents_for, assign, assign_ids};
use blackout_model::catalog::{Target, TargetKind};
use proptest::prelude::*;

fn targets(n: usize, controls: usize) -> Vec<Target> {
    (0..n + controls)
        .map(|i| Target {
            id: format!("icmp:10.{}.{}.0/24", i / 256, i % 256),
            country: if i < n { "KZ".into() } else { "ZZ".into() },
            asn: 9198,
            region: None,
            control: i >= n,
            kind: TargetKind::Tcp {
                address: "192.0.2.1:443".parse().unwrap(),
            },
        })
        .collect()
}

fn agents(ids: &[u32]) -> Vec<String> {
    ids.iter().map(|i| format!("agent-{i}")).collect()
}

/// target index -> set of agents probing it.
fn owners(a: &HashMap<String, Vec<usize>>) -> HashMap<usize, BTreeSet<String>> {
    let mut m: HashMap<usize, BTreeSet<String>> = HashMap::new();
    for (agent, idx) in a {
        for &i in idx {
            m.entry(i).or_default().insert(agent.clone());
        }
    }
    m
}

fn agent_set() -> impl Strategy<Value = Vec<u32>> {
    proptest::collection::btree_set(0u32..1000, 1..12).prop_map(|s| s.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_target_gets_min_k_agents_and_controls_get_all(
        ids in agent_set(), k in 0usize..5, n in 0usize..300, controls in 0usize..4
    ) {
        let ts = targets(n, controls);
        let ags = agents(&ids);
        let a = assign(&ts, &ags, k);
        prop_assert_eq!(a.len(), ags.len());
        let o = owners(&a);
        for (i, t) in ts.iter().enumerate() {
            let have = o.get(&i).map_or(0, |s| s.len());
            let want = if t.control { ags.len() } else { k.max(1).min(ags.len()) };
            prop_assert_eq!(have, want, "target {}", i);
        }
        for v in a.values() {
            prop_assert!(v.windows(2).all(|w| w[0] < w[1]), "indices ascending, no repeats");
        }
        // agents_for names the same agents as the bulk assignment.
        for (i, t) in ts.iter().enumerate().take(20).filter(|(_, t)| !t.control) {
            let one: BTreeSet<String> = agents_for(&t.id, &ags, k).into_iter().map(String::from).collect();
            prop_assert_eq!(Some(&one), o.get(&i));
        }
    }

    #[test]
    fn an_agent_taking_its_share_by_the_rule_gets_what_the_collector_assigns(
        ids in agent_set(), k in 0usize..5, n in 0usize..300, controls in 0usize..4
    ) {
        let ts = targets(n, controls);
        let ags = agents(&ids);
        let a = assign(&ts, &ags, k);
        for agent in &ags {
            let share = Share::new(agent, &ags, k);
            let mine: Vec<usize> = ts
                .iter()
                .enumerate()
                .filter(|(_, t)| share.takes(&t.id, t.control))
                .map(|(i, _)| i)
                .collect();
            prop_assert_eq!(&mine, &a[agent], "agent {}", agent);
        }
    }

    #[test]
    fn joining_agent_only_takes_targets(ids in agent_set(), newcomer in 1000u32..2000, k in 1usize..4) {
        let ts = targets(400, 2);
        let before = owners(&assign(&ts, &agents(&ids), k));
        let mut more = ids.clone();
        more.push(newcomer);
        let after = owners(&assign(&ts, &agents(&more), k));
        let new = format!("agent-{newcomer}");
        for (i, t) in ts.iter().enumerate() {
            if t.control {
                continue;
            }
            let gone: Vec<_> = before[&i].difference(&after[&i]).collect();
            let came: Vec<_> = after[&i].difference(&before[&i]).collect();
            // Either nothing moved, or the newcomer took exactly one place.
            prop_assert!(came.is_empty() || came == vec![&new], "target {}: {:?}", i, came);
            prop_assert!(gone.len() <= 1);
            prop_assert_eq!(gone.len(), came.len().min(usize::from(before[&i].len() == k)));
        }
    }

    #[test]
    fn leaving_agent_moves_only_its_targets(ids in agent_set(), k in 1usize..4, which in any::<prop::sample::Index>()) {
        prop_assume!(ids.len() >= 2);
        let ts = targets(400, 0);
        let ags = agents(&ids);
        let before = owners(&assign(&ts, &ags, k));
        let leaver = ags[which.index(ags.len())].clone();
        let rest: Vec<String> = ags.iter().filter(|a| **a != leaver).cloned().collect();
        let after = owners(&assign(&ts, &rest, k));
        for i in 0..ts.len() {
            if before[&i].contains(&leaver) {
                // Everyone else stays; one replacement at most.
                prop_assert!(before[&i].iter().filter(|a| **a != leaver).all(|a| after[&i].contains(a)));
            } else {
                prop_assert_eq!(&before[&i], &after[&i], "target {} moved though its agents stayed", i);
            }
        }
    }
}

#[test]
fn load_is_balanced() {
    // 20,000 targets, 10 agents, k = 3: 6,000 each on average.
    let ids: Vec<(String, bool)> = (0..20_000).map(|i| (format!("icmp:{i}"), false)).collect();
    let ags = agents(&(0..10).collect::<Vec<_>>());
    let a = assign_ids(ids.iter().map(|(s, c)| (s.as_str(), *c)), &ags, 3);
    let mean = 20_000.0 * 3.0 / 10.0;
    for (agent, v) in &a {
        let dev = (v.len() as f64 - mean).abs() / mean;
        // Binomial sd is ~0.8 % here; 5 % is six sd: fails only if hashing is skewed.
        assert!(dev < 0.05, "{agent} has {} targets, mean {mean}", v.len());
    }
}

#[test]
fn duplicate_agent_ids_count_once_and_no_agents_means_no_work() {
    let ts = targets(50, 1);
    let a = assign(&ts, &["a".to_string(), "a".to_string(), "b".to_string()], 2);
    assert_eq!(a.len(), 2);
    assert_eq!(a["a"].len(), 51);
    assert!(assign(&ts, &[], 2).is_empty());
}

#[test]
fn assignment_is_stable_across_calls_and_orders() {
    let ts = targets(500, 0);
    let mut ags = agents(&[5, 1, 9, 3]);
    let a = assign(&ts, &ags, 2);
    ags.reverse();
    assert_eq!(a, assign(&ts, &ags, 2));
}
