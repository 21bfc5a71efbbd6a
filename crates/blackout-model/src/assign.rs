//! Fleet assignment: which agent probes which target.
//!
//! Rendezvous (highest-random-weight) hashing: every (agent, target) pair gets a fixed
//! pseudo-random score, and a target goes to the `k` agents with the highest scores.
//! That makes the assignment
//! - covering: every target has min(k, agents) distinct agents;
//! - balanced: each agent gets about k/n of the targets (the scores are uniform);
//! - stable: when an agent joins, a target moves only if the newcomer enters its top k
//!   (it then replaces exactly one agent); when an agent leaves, only the targets it had
//!   move, each to the next agent in its ranking. Nothing else is reshuffled.
//! - pure: no state, no clock, no randomness; the collector recomputes it from the live
//!   agent list on every `GET /api/v1/catalog?agent=ID`, and agents need not agree on
//!   anything but that list.
//!
//! Because it is pure, an agent can also take its share itself ([`Share`]): the collector
//! then sends the catalog as written (prefixes) with the fleet and `k`
//! (`?agent=ID&share=rule`), a few kilobytes where the list of an agent's blocks is
//! ~80 bytes per block.
//!
//! Control targets (vantage health) go to every agent: each agent must judge its own
//! connectivity.

use std::collections::HashMap;

#[cfg(feature = "catalog")]
use crate::catalog::Target;

/// FNV-1a, then a splitmix64 finaliser: fixed across processes, versions and platforms
/// (unlike `std`'s hasher, whose algorithm is unspecified).
fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The score of `agent` (pre-hashed) for a target (pre-hashed); ties cannot reorder
/// between calls because agents are compared by (score, id).
fn score(agent: u64, target: u64) -> u64 {
    mix(agent ^ target.rotate_left(17))
}

/// Assigns targets to agents. Returns, for every distinct agent id in `agents`, the
/// indices into `targets` it should probe, ascending. Each non-control target goes to
/// min(k, agents) agents (k below 1 counts as 1: a target nobody probes is a blind
/// spot); each control target goes to every agent.
#[cfg(feature = "catalog")]
pub fn assign(targets: &[Target], agents: &[String], k: usize) -> HashMap<String, Vec<usize>> {
    assign_ids(
        targets.iter().map(|t| (t.id.as_str(), t.control)),
        agents,
        k,
    )
}

/// `assign` on (target id, is control) pairs, for callers that hold ids only.
pub fn assign_ids<'a>(
    targets: impl IntoIterator<Item = (&'a str, bool)>,
    agents: &[String],
    k: usize,
) -> HashMap<String, Vec<usize>> {
    let mut ids: Vec<&str> = agents.iter().map(String::as_str).collect();
    ids.sort_unstable();
    ids.dedup();
    let hashed: Vec<(u64, &str)> = ids.iter().map(|a| (hash(a.as_bytes()), *a)).collect();
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); ids.len()];
    let k = k.max(1).min(ids.len());
    let mut top: Vec<(u64, usize)> = Vec::with_capacity(k + 1);
    for (i, (id, control)) in targets.into_iter().enumerate() {
        if ids.is_empty() {
            break;
        }
        if control {
            for v in &mut out {
                v.push(i);
            }
            continue;
        }
        let th = hash(id.as_bytes());
        top.clear();
        for (a, &(ah, _)) in hashed.iter().enumerate() {
            let s = score(ah, th);
            // Keep the k best, highest first; equal scores fall back to the agent order.
            if top.len() < k || s > top[top.len() - 1].0 {
                let pos = top.partition_point(|&(ts, _)| ts >= s);
                top.insert(pos, (s, a));
                top.truncate(k);
            }
        }
        for &(_, a) in &top {
            out[a].push(i);
        }
    }
    ids.into_iter().map(str::to_string).zip(out).collect()
}

/// One agent's share of a fleet's assignment, decided target by target: the same answer
/// as [`assign_ids`] gives for that agent, without the list of every target.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    /// The fleet's agents, hashed, in id order (ties go to the earlier one, as in
    /// [`assign_ids`]).
    hashed: Vec<u64>,
    me: usize,
    k: usize,
}

impl Share {
    /// `me`'s share among `fleet` (which need not hold `me`: it is added) with `k`
    /// agents per target.
    pub fn new(me: &str, fleet: &[String], k: usize) -> Share {
        let mut ids: Vec<&str> = fleet.iter().map(String::as_str).collect();
        ids.push(me);
        ids.sort_unstable();
        ids.dedup();
        let me = ids.binary_search(&me).expect("me was added");
        let k = k.max(1).min(ids.len());
        Share {
            hashed: ids.iter().map(|a| hash(a.as_bytes())).collect(),
            me,
            k,
        }
    }

    /// Whether this agent probes the target with this id.
    pub fn takes(&self, target_id: &str, control: bool) -> bool {
        if control || self.k >= self.hashed.len() {
            return true;
        }
        let th = hash(target_id.as_bytes());
        let mine = score(self.hashed[self.me], th);
        let mut above = 0;
        for (i, &h) in self.hashed.iter().enumerate() {
            if i == self.me {
                continue;
            }
            let s = score(h, th);
            if s > mine || (s == mine && i < self.me) {
                above += 1;
                if above >= self.k {
                    return false;
                }
            }
        }
        true
    }
}

/// The agents that probe one target, in rendezvous order (best first): what the collector
/// needs to know which agents' silence about a target matters.
pub fn agents_for<'a>(target_id: &str, agents: &'a [String], k: usize) -> Vec<&'a str> {
    let th = hash(target_id.as_bytes());
    let mut scored: Vec<(u64, &str)> = agents
        .iter()
        .map(|a| (score(hash(a.as_bytes()), th), a.as_str()))
        .collect();
    scored.sort_unstable_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(y.1)));
    scored.dedup_by(|x, y| x.1 == y.1);
    scored.truncate(k.max(1));
    scored.into_iter().map(|(_, a)| a).collect()
}
