//! The memory of request bodies: a budget for all uploads (`body_budget_bytes`) and a
//! share of it per agent (`agent_body_budget_bytes`). An upload takes from both, so one
//! agent's uploads, whatever they do, can hold at most its share: the rest of the budget
//! stays for the other agents. Counted in KiB.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::HttpLimits;

const KIB: usize = 1024;

/// The budgets, fixed at start: one per configured agent, one for everything.
pub struct BodyBudget {
    all: Arc<Semaphore>,
    /// Each agent's share, in KiB.
    share_kib: usize,
    per_agent: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// Memory an upload holds; given back when dropped.
pub struct Reservation {
    bytes: usize,
    agent: Option<OwnedSemaphorePermit>,
    all: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    /// Bytes this reservation covers.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(KIB)).unwrap_or(u32::MAX)
}

impl BodyBudget {
    /// `agents` get their shares at once; an agent added by a reload gets its share at
    /// its first upload (only authenticated agents reach the budget).
    pub fn new(limits: &HttpLimits, agents: &[(String, [u8; 32])]) -> BodyBudget {
        BodyBudget {
            all: Arc::new(Semaphore::new(limits.body_budget_bytes / KIB)),
            share_kib: limits.agent_body_budget_bytes / KIB,
            per_agent: std::sync::Mutex::new(
                agents
                    .iter()
                    .map(|(id, _)| {
                        let share = Semaphore::new(limits.agent_body_budget_bytes / KIB);
                        (id.clone(), Arc::new(share))
                    })
                    .collect(),
            ),
        }
    }

    fn share(&self, agent: &str) -> Arc<Semaphore> {
        let mut m = self.per_agent.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(agent.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.share_kib)))
            .clone()
    }

    /// An empty reservation for `agent`'s upload.
    pub fn empty(&self) -> Reservation {
        Reservation {
            bytes: 0,
            agent: None,
            all: None,
        }
    }

    /// Grows `r` to cover `bytes` (rounded up to whole KiB), from `agent`'s share and the
    /// whole budget, without waiting; false (and `r` unchanged) when either is short.
    pub fn grow(&self, agent: &str, r: &mut Reservation, bytes: usize) -> bool {
        let more = kib(bytes).saturating_sub(kib(r.bytes));
        if more == 0 {
            return true;
        }
        let share = self.share(agent);
        let Ok(a) = share.try_acquire_many_owned(more) else {
            return false;
        };
        let Ok(b) = self.all.clone().try_acquire_many_owned(more) else {
            return false;
        };
        match &mut r.agent {
            Some(p) => p.merge(a),
            None => r.agent = Some(a),
        }
        match &mut r.all {
            Some(p) => p.merge(b),
            None => r.all = Some(b),
        }
        r.bytes = bytes.div_ceil(KIB) * KIB;
        true
    }

    /// Bytes free in the whole budget (for tests and logs).
    pub fn available_bytes(&self) -> usize {
        self.all.available_permits() * KIB
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_agent_takes_at_most_its_share() {
        let limits = HttpLimits {
            body_budget_bytes: 64 * KIB,
            agent_body_budget_bytes: 16 * KIB,
            ..HttpLimits::default()
        };
        let agents = [("a".to_string(), [0; 32]), ("b".to_string(), [1; 32])];
        let budget = BodyBudget::new(&limits, &agents);
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut r = budget.empty();
            assert!(budget.grow("a", &mut r, 4 * KIB));
            held.push(r);
        }
        let mut r = budget.empty();
        assert!(!budget.grow("a", &mut r, 1), "a's share is spent");
        assert_eq!(r.bytes(), 0);
        assert!(budget.grow("b", &mut r, 16 * KIB), "b still has its own");
        // An agent added by a reload gets its own share at its first upload, and no more.
        let mut c = budget.empty();
        assert!(budget.grow("c", &mut c, 16 * KIB));
        assert!(
            !budget.grow("c", &mut c, 16 * KIB + 1),
            "c's share is spent"
        );
        assert_eq!(budget.available_bytes(), 16 * KIB);
        drop(c);
        drop(held);
        assert_eq!(budget.available_bytes(), 48 * KIB);
        drop(r);
        assert_eq!(budget.available_bytes(), 64 * KIB);
    }

    #[test]
    fn a_reservation_grows_in_steps() {
        let limits = HttpLimits {
            body_budget_bytes: 64 * KIB,
            agent_body_budget_bytes: 16 * KIB,
            ..HttpLimits::default()
        };
        let budget = BodyBudget::new(&limits, &[("a".to_string(), [0; 32])]);
        let mut r = budget.empty();
        assert!(budget.grow("a", &mut r, 100));
        assert_eq!(r.bytes(), KIB);
        assert!(budget.grow("a", &mut r, 10 * KIB + 1));
        assert_eq!(r.bytes(), 11 * KIB);
        assert!(!budget.grow("a", &mut r, 17 * KIB));
        assert_eq!(r.bytes(), 11 * KIB);
        assert_eq!(budget.available_bytes(), 53 * KIB);
    }
}
