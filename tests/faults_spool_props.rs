//! Model-based property test of the agent spool: any sequence of pushes,
//! acknowledgements, crashes (drop and reopen), torn temporary files and unrelated files
//! loses nothing and duplicates nothing. Every batch ever pushed ends up exactly once in
//! one of: acknowledged, dropped by the disk cap (and counted), or still queued in push
//! order.

use std::collections::VecDeque;
use std::path::Path;

use blackout_agent::spool::Spool;
use blackout_model::observation::{Batch, Observation};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Push(usize),
    /// Acknowledge the front batch (as the upload loop does after a 200).
    Ack,
    /// Take the front, push `n` more batches while it is "in flight", then ack it.
    AckAfterPushes(usize),
    /// kill -9: the process state is gone, the directory stays.
    Crash,
    /// A write that died before its rename.
    TornTmp,
    /// A file that is not the spool's (an editor backup, say).
    Stray,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..20).prop_map(Op::Push),
        3 => Just(Op::Ack),
        1 => (1usize..3).prop_map(Op::AckAfterPushes),
        2 => Just(Op::Crash),
        1 => Just(Op::TornTmp),
        1 => Just(Op::Stray),
    ]
}

fn obs() -> Observation {
    serde_json::from_str(
        r#"{"agent":"a","target":"tcp:127.0.0.1:1","country":"KZ","asn":1,"signal":"tcp","measured_at":"2026-11-29T10:30:00Z","ok":true,"rtt_ms":0.5}"#,
    )
    .unwrap()
}

fn batch(id: u64, n: usize) -> Batch {
    Batch {
        batch_id: format!("b{id}"),
        agent: "a".into(),
        observations: vec![obs(); n],
        spool: None,
    }
}

/// What the spool counts against its cap: the batch's file.
fn size(b: &Batch) -> u64 {
    blackout_agent::spool::encode_file(b).len() as u64
}

/// The reference: a queue with the same cap rule (drop the oldest while over the cap,
/// never the last one).
struct Model {
    queue: VecDeque<(Batch, u64)>,
    max: u64,
    dropped: u64,
}

impl Model {
    fn push(&mut self, b: Batch) -> Vec<String> {
        let s = size(&b);
        self.queue.push_back((b, s));
        let mut gone = Vec::new();
        while self.queue.iter().map(|(_, s)| s).sum::<u64>() > self.max && self.queue.len() > 1 {
            let (b, _) = self.queue.pop_front().unwrap();
            self.dropped += b.observations.len() as u64;
            gone.push(b.batch_id);
        }
        gone
    }
}

fn spool_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".bcz")
        })
        .count()
}

fn run(ops: Vec<Op>, max_batches_of_5: u64) {
    let dir = tempfile::tempdir().unwrap();
    let max = size(&batch(0, 5)) * max_batches_of_5;
    let mut spool = Spool::open(dir.path(), max).unwrap();
    let mut model = Model {
        queue: VecDeque::new(),
        max,
        dropped: 0,
    };
    let mut next = 0u64;
    let mut acked: Vec<String> = Vec::new();
    let mut dropped_ids: Vec<String> = Vec::new();
    let mut dropped_before_crash = 0u64;
    let mut pushed: Vec<String> = Vec::new();
    let mut push =
        |spool: &mut Spool, model: &mut Model, n: usize, dropped_ids: &mut Vec<String>| {
            let b = batch(next, n);
            next += 1;
            pushed.push(b.batch_id.clone());
            spool.push(b.clone()).unwrap();
            dropped_ids.extend(model.push(b));
        };
    let mut strays = 0;
    let mut torn = 0;
    for op in ops {
        match op {
            Op::Push(n) => push(&mut spool, &mut model, n, &mut dropped_ids),
            Op::Ack => {
                let got = spool.front().unwrap();
                match (got, model.queue.pop_front()) {
                    (None, None) => {}
                    (Some((k, b)), Some((m, _))) => {
                        assert_eq!(b, m, "front differs from the model");
                        spool.ack(k).unwrap();
                        acked.push(b.batch_id);
                    }
                    (g, m) => panic!("spool front {g:?} but model front {m:?}"),
                }
            }
            Op::AckAfterPushes(k) => {
                let Some((key, b)) = spool.front().unwrap() else {
                    assert!(model.queue.is_empty());
                    continue;
                };
                assert_eq!(&b, &model.queue.front().unwrap().0);
                for _ in 0..k {
                    push(&mut spool, &mut model, 5, &mut dropped_ids);
                }
                spool.ack(key).unwrap();
                // The collector has it, whether or not the cap dropped it meanwhile.
                if let Some(i) = model
                    .queue
                    .iter()
                    .position(|(m, _)| m.batch_id == b.batch_id)
                {
                    model.queue.remove(i);
                }
                if !dropped_ids.contains(&b.batch_id) {
                    acked.push(b.batch_id);
                }
            }
            Op::Crash => {
                dropped_before_crash += spool.dropped_observations();
                drop(spool);
                spool = Spool::open(dir.path(), max).unwrap();
            }
            Op::TornTmp => {
                torn += 1;
                std::fs::write(
                    dir.path().join(format!("{:020}.tmp", 1000 + torn)),
                    b"{\"batch_id\":\"to",
                )
                .unwrap();
            }
            Op::Stray => {
                strays += 1;
                std::fs::write(dir.path().join(format!("notes-{strays}.txt")), b"x").unwrap();
            }
        }
        assert_eq!(spool.batches(), model.queue.len());
        assert_eq!(
            spool.observations(),
            model
                .queue
                .iter()
                .map(|(b, _)| b.observations.len() as u64)
                .sum::<u64>()
        );
        assert_eq!(
            spool.dropped_observations() + dropped_before_crash,
            model.dropped
        );
        assert_eq!(spool_files(dir.path()), model.queue.len());
    }
    // Drain: what is left comes out in push order, once each.
    let mut rest = Vec::new();
    spool = Spool::open(dir.path(), max).unwrap();
    while let Some((k, b)) = spool.front().unwrap() {
        spool.ack(k).unwrap();
        rest.push(b.batch_id);
    }
    let left: Vec<String> = model
        .queue
        .iter()
        .map(|(b, _)| b.batch_id.clone())
        .collect();
    assert_eq!(rest, left);
    let mut all: Vec<String> = acked
        .iter()
        .chain(&dropped_ids)
        .chain(&rest)
        .cloned()
        .collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "a batch came out twice");
    let mut p = pushed.clone();
    p.sort();
    assert_eq!(all, p, "a batch was lost");
    assert_eq!(spool_files(dir.path()), 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn no_loss_no_duplicate_without_cap(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops, 1_000_000);
    }

    #[test]
    fn no_loss_no_duplicate_with_a_tight_cap(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops, 6);
    }
}
