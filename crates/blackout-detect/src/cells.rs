//! What a bin keeps of each agent's observations of each target.
//!
//! A target's verdict in a bin is a vote among the healthy agents that observed it, and a
//! vote needs only which of up, down or unsure the agent's observations said: two bits
//! per agent ([`Votes`]). Those bits are all a closed bin keeps, since re-evaluating it
//! with late data recomputes levels only (the latency and loss of a bin are taken once,
//! at its close). An open bin also keeps each agent's probes, replies and best RTT per
//! target ([`Extras`]), dropped at the close: at 4.2M targets and 20 agents the bins of
//! the late window cost 8 bytes per target each, not one map entry per agent and target.

use rustc_hash::FxHashMap as FxMap;
use serde::{Deserialize, Serialize};

/// An agent's vote on a target in a bin. Ordered so that adding observations is `max`:
/// one answer makes the target up for that agent whatever else it saw, else one failure
/// makes it down, else it was measured and unsure. That is the aggregation's reading of
/// the counts of answers, failures and unsure rounds, of which only `> 0` ever mattered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Vote {
    Unsure = 1,
    Down = 2,
    Up = 3,
}

impl Vote {
    fn from_bits(b: u64) -> Option<Vote> {
        match b & 3 {
            1 => Some(Vote::Unsure),
            2 => Some(Vote::Down),
            3 => Some(Vote::Up),
            _ => None,
        }
    }
}

/// Slots per word: two bits each.
const SLOTS_PER_WORD: usize = 32;
/// The low bit of every slot.
const LOW_BITS: u64 = 0x5555_5555_5555_5555;

/// The votes of a bin: per target (its engine index) `stride` words, two bits per agent
/// slot. Slots are the bin's agents in the order they first appeared in it, so a fleet of
/// up to 32 agents costs one word per target; a wider one widens every row (rare: once per
/// 32 agents, per bin).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Votes {
    /// The engine's agent index of each slot.
    slots: Vec<u32>,
    stride: usize,
    words: Vec<u64>,
}

/// Which slots of a row's word hold a vote: the low bit of each.
fn present(w: u64) -> u64 {
    (w | (w >> 1)) & LOW_BITS
}

impl Votes {
    /// The engine's agent index of `slot`.
    pub(crate) fn agent(&self, slot: usize) -> u32 {
        self.slots[slot]
    }

    pub(crate) fn slots(&self) -> usize {
        self.slots.len()
    }

    /// The slot of `agent`, given one if it has none.
    pub(crate) fn slot(&mut self, agent: u32) -> usize {
        if let Some(s) = self.slots.iter().position(|&a| a == agent) {
            return s;
        }
        let s = self.slots.len();
        self.slots.push(agent);
        let need = s / SLOTS_PER_WORD + 1;
        if need > self.stride {
            self.widen(need);
        }
        s
    }

    fn widen(&mut self, stride: usize) {
        let rows = self.rows();
        let mut words = vec![0u64; rows * stride];
        if self.stride > 0 {
            for (new, old) in words
                .chunks_exact_mut(stride)
                .zip(self.words.chunks_exact(self.stride))
            {
                new[..old.len()].copy_from_slice(old);
            }
        }
        self.words = words;
        self.stride = stride;
    }

    /// Number of targets with a row (some rows may be empty).
    pub(crate) fn rows(&self) -> usize {
        self.words.len().checked_div(self.stride).unwrap_or(0)
    }

    pub(crate) fn row(&self, target: u32) -> &[u64] {
        let i = target as usize * self.stride;
        &self.words[i..i + self.stride]
    }

    /// Adds `vote` of `slot` on `target`, growing the rows to at least `rows_hint` when
    /// `target` has none yet (the engine's target count: rows are not grown one by one).
    /// Returns whether the slot had no vote on the target before.
    pub(crate) fn raise(&mut self, target: u32, slot: usize, vote: Vote, rows_hint: usize) -> bool {
        let t = target as usize;
        if t >= self.rows() {
            self.words.resize(rows_hint.max(t + 1) * self.stride, 0);
        }
        let w = &mut self.words[t * self.stride + slot / SLOTS_PER_WORD];
        let shift = 2 * (slot % SLOTS_PER_WORD);
        let old = (*w >> shift) & 3;
        let new = old.max(vote as u64);
        *w = (*w & !(3 << shift)) | (new << shift);
        old == 0
    }

    /// Where `slot`'s entry sits among the entries of the slots that voted on the row:
    /// entries are kept in slot order.
    fn position(row: &[u64], slot: usize) -> usize {
        let (j, b) = (slot / SLOTS_PER_WORD, 2 * (slot % SLOTS_PER_WORD));
        let before: u32 = row[..j].iter().map(|w| present(*w).count_ones()).sum();
        (before + (present(row[j]) & ((1u64 << b) - 1)).count_ones()) as usize
    }

    /// The slots that voted on a row, in slot order, with their votes.
    pub(crate) fn voters(row: &[u64]) -> impl Iterator<Item = (usize, Vote)> + '_ {
        row.iter().enumerate().flat_map(|(j, &w)| {
            let mut m = present(w);
            std::iter::from_fn(move || {
                if m == 0 {
                    return None;
                }
                let b = m.trailing_zeros();
                m &= m - 1;
                let v = Vote::from_bits(w >> b)?;
                Some((j * SLOTS_PER_WORD + b as usize / 2, v))
            })
        })
    }

    /// Gives the unused capacity back (at the close, after the rows grew with the bin).
    pub(crate) fn shrink(&mut self) {
        self.words.shrink_to_fit();
    }
}

/// One agent's loss sample and best RTT of one target in an open bin. Samples are a few
/// probes a round, so 16 bits hold a bin's; a sum that would not fit moves to
/// [`Extras`]'s `wide` and leaves [`WIDE`] here.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct Extra {
    probes: u16,
    replies: u16,
    /// Infinite until an answer with an RTT.
    pub(crate) rtt_ms: f32,
}

/// `probes` of an [`Extra`] whose sample is in `wide`.
const WIDE: u16 = u16::MAX;

impl Default for Extra {
    fn default() -> Extra {
        Extra {
            probes: 0,
            replies: 0,
            rtt_ms: f32::INFINITY,
        }
    }
}

/// An open bin's [`Extra`]s: per target the entries of the slots that voted on it, in
/// slot order (the row of votes says which), in one allocation sized to them. 8 bytes
/// per agent and target, 16 per target, against ~50 per agent and target in a hash map.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Extras {
    rows: Vec<Option<Box<[Extra]>>>,
    /// Loss samples too large for an [`Extra`], by target and slot: probes and replies.
    wide: FxMap<(u32, u32), (u32, u32)>,
}

impl Extras {
    /// Adds one observation of `slot` on `target`: its loss sample (probes sent and
    /// answered) and RTT. `votes` is the target's row of votes, already raised; `new`:
    /// the slot had no vote on the target before, so its entry is inserted.
    pub(crate) fn add(
        &mut self,
        target: u32,
        votes: &[u64],
        slot: usize,
        new: bool,
        sample: Option<(u32, u32)>,
        rtt_ms: Option<f32>,
    ) {
        let x = self.entry(target, votes, slot, new);
        if let Some(r) = rtt_ms {
            x.rtt_ms = x.rtt_ms.min(r);
        }
        let Some((sent, answered)) = sample else {
            return;
        };
        let narrow = (x.probes != WIDE)
            .then(|| {
                let p = u16::try_from(x.probes as u32 + sent).ok()?;
                let r = u16::try_from(x.replies as u32 + answered).ok()?;
                (p != WIDE).then_some((p, r))
            })
            .flatten();
        match narrow {
            Some((p, r)) => {
                x.probes = p;
                x.replies = r;
            }
            None => {
                let (p, r) = if x.probes == WIDE {
                    (0, 0)
                } else {
                    (x.probes as u32, x.replies as u32)
                };
                x.probes = WIDE;
                let w = self.wide.entry((target, slot as u32)).or_insert((p, r));
                w.0 = w.0.saturating_add(sent);
                w.1 = w.1.saturating_add(answered);
            }
        }
    }

    /// Probes sent and answered of `x`, the entry of `slot` on `target`.
    pub(crate) fn sample(&self, target: u32, slot: usize, x: &Extra) -> (u32, u32) {
        if x.probes == WIDE {
            self.wide
                .get(&(target, slot as u32))
                .copied()
                .unwrap_or_default()
        } else {
            (x.probes as u32, x.replies as u32)
        }
    }

    fn entry(&mut self, target: u32, votes: &[u64], slot: usize, new: bool) -> &mut Extra {
        let t = target as usize;
        if t >= self.rows.len() {
            self.rows.resize(t + 1, None);
        }
        let pos = Votes::position(votes, slot);
        let row = &mut self.rows[t];
        if new {
            let old = row.take().unwrap_or_default();
            let mut grown = Vec::with_capacity(old.len() + 1);
            grown.extend_from_slice(&old[..pos]);
            grown.push(Extra::default());
            grown.extend_from_slice(&old[pos..]);
            *row = Some(grown.into_boxed_slice());
        }
        match row {
            Some(r) => &mut r[pos],
            None => unreachable!("an entry was just inserted or the slot had one"),
        }
    }

    /// The entries of `target`'s row, in the order of [`Votes::voters`].
    pub(crate) fn row(&self, target: u32) -> &[Extra] {
        self.rows
            .get(target as usize)
            .and_then(|r| r.as_deref())
            .unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn votes_merge_as_the_counts_did_and_rows_widen_past_32_agents() {
        let mut v = Votes::default();
        let a = v.slot(7);
        assert!(v.raise(3, a, Vote::Unsure, 10));
        assert_eq!(v.rows(), 10);
        assert!(!v.raise(3, a, Vote::Down, 10));
        assert!(!v.raise(3, a, Vote::Unsure, 10));
        let b = v.slot(9);
        assert_eq!(v.slot(7), a);
        v.raise(3, b, Vote::Up, 10);
        v.raise(3, b, Vote::Down, 10);
        let got: Vec<_> = Votes::voters(v.row(3)).collect();
        assert_eq!(got, vec![(a, Vote::Down), (b, Vote::Up)]);
        assert!(Votes::voters(v.row(2)).next().is_none());
        // 40 agents: the rows widen and keep what they held.
        for agent in 100..138 {
            let s = v.slot(agent);
            v.raise(3, s, Vote::Up, 10);
        }
        assert_eq!(v.slots(), 40);
        let got: Vec<_> = Votes::voters(v.row(3)).collect();
        assert_eq!(got.len(), 40);
        assert_eq!(got[..2], [(a, Vote::Down), (b, Vote::Up)]);
        assert_eq!(got[39], (39, Vote::Up));
        assert_eq!(v.agent(39), 137);
    }

    #[test]
    fn extras_stay_in_slot_order_whatever_order_agents_come_in() {
        let mut v = Votes::default();
        let mut x = Extras::default();
        let slots: Vec<usize> = (0..40).map(|a| v.slot(a)).collect();
        // Slots arrive out of order on target 5.
        for &s in [33usize, 2, 39, 0, 17].iter() {
            let new = v.raise(5, slots[s], Vote::Up, 6);
            x.add(
                5,
                v.row(5),
                slots[s],
                new,
                Some((s as u32, 0)),
                Some(s as f32),
            );
        }
        let new = v.raise(5, 17, Vote::Down, 6);
        assert!(!new);
        x.add(5, v.row(5), 17, new, Some((1, 1)), Some(100.0));
        let order: Vec<usize> = Votes::voters(v.row(5)).map(|(s, _)| s).collect();
        assert_eq!(order, vec![0, 2, 17, 33, 39]);
        let got: Vec<((u32, u32), f32)> = order
            .iter()
            .zip(x.row(5))
            .map(|(&s, e)| (x.sample(5, s, e), e.rtt_ms))
            .collect();
        assert_eq!(
            got,
            vec![
                ((0, 0), 0.0),
                ((2, 0), 2.0),
                ((18, 1), 17.0),
                ((33, 0), 33.0),
                ((39, 0), 39.0)
            ]
        );
        assert!(x.row(4).is_empty() && x.row(99).is_empty());
    }

    /// Sums past 16 bits move to the wide table and go on adding there, exactly.
    #[test]
    fn large_loss_samples_are_kept_whole() {
        let mut v = Votes::default();
        let mut x = Extras::default();
        let (a, b) = (v.slot(1), v.slot(2));
        let mut want = [(0u32, 0u32); 2];
        for (i, (sent, answered)) in [(60_000u32, 59_000u32), (5_535, 10), (1, 1), (7, 3)]
            .into_iter()
            .enumerate()
        {
            for (k, s) in [a, b].into_iter().enumerate() {
                let (sent, answered) = if k == 0 {
                    (sent, answered)
                } else {
                    (1, i as u32 % 2)
                };
                let new = v.raise(0, s, Vote::Up, 1);
                x.add(0, v.row(0), s, new, Some((sent, answered)), None);
                want[k].0 += sent;
                want[k].1 += answered;
            }
        }
        let row = x.row(0);
        assert_eq!(x.sample(0, a, &row[0]), want[0]);
        assert_eq!(x.sample(0, b, &row[1]), want[1]);
        assert_eq!(want[0].0, 65_543);
        assert_eq!(x.wide.len(), 1);
    }
}
