//! The collector's observation log reader (replay at start) on a segment file of
//! arbitrary bytes: complete records, torn and damaged ones. Never a panic (a hang is
//! caught by libFuzzer's timeout); what it reports is consistent with the file:
//! - an error names a line that exists;
//! - after a successful open, the file is what was there cut at a record boundary, the
//!   append position is its end, and no more batches came back than there are lines;
//! - a torn last record is all the damage a crash can do: if the file without it opens,
//!   the file with it opens too, to the same batches;
//! - a batch appended after the open is read back last at the next open.
#![no_main]

use std::path::{Path, PathBuf};

use blackout_collector::log::{LogError, ObservationLog};
use blackout_model::observation::Batch;
use libfuzzer_sys::fuzz_target;

const SEGMENT: &str = "observations-2026-12-07.jsonl";

fn now() -> chrono::DateTime<chrono::Utc> {
    "2026-12-07T12:00:00Z".parse().unwrap()
}

/// A fresh directory holding one segment with `data`.
fn dir_with(name: &str, data: &[u8]) -> PathBuf {
    // tmpfs when there is one: the log syncs every file it touches.
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("blackout-fuzz-log-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(SEGMENT), data).unwrap();
    dir
}

fn open(dir: &Path) -> Result<(ObservationLog, Vec<Batch>), LogError> {
    ObservationLog::open_with_retention(dir, 35, now())
}

fn ids(v: &[Batch]) -> Vec<&str> {
    v.iter().map(|b| b.batch_id.as_str()).collect()
}

fuzz_target!(|data: &[u8]| {
    let lines = data.split_inclusive(|b| *b == b'\n').count();
    let dir = dir_with("all", data);
    let got = open(&dir);
    let after = std::fs::read(dir.join(SEGMENT)).unwrap();
    match &got {
        Err(LogError::Corrupt { line, .. }) => {
            assert!(*line >= 1 && *line <= lines, "line {line} of {lines}");
            assert_eq!(after, data, "a refused log is left as it was");
        }
        Err(LogError::Io { .. }) => {}
        Ok((log, batches)) => {
            assert!(batches.len() <= lines);
            assert!(data.starts_with(&after), "the log was only cut, never rewritten");
            assert!(after.is_empty() || after.ends_with(b"\n"), "cut at a record boundary");
            let pos = log.position();
            assert_eq!(pos.segment, SEGMENT);
            // Finding 1 (README.md, not fixed here: the log's format is being rewritten on
            // another branch): after a torn tail is cut away at open, the append position
            // still counts the cut bytes. Checked only where it holds, so that the run
            // goes on to look for anything else.
            if after.len() == data.len() {
                assert_eq!(pos.offset, after.len() as u64);
            } else {
                assert_eq!(pos.offset, data.len() as u64, "finding 1 changed");
            }
        }
    }
    // A torn tail alone must never stop a start that the records before it allow.
    if let Some(cut) = data.iter().rposition(|b| *b == b'\n').map(|i| i + 1)
        && cut < data.len()
    {
        let head_dir = dir_with("head", &data[..cut]);
        if let Ok((_, head)) = open(&head_dir) {
            match &got {
                Ok((_, all)) => assert_eq!(ids(all), ids(&head)),
                Err(e) => panic!("records open alone, but a torn tail after them stops the start: {e}"),
            }
        }
        let _ = std::fs::remove_dir_all(&head_dir);
    }
    if let Ok((mut log, before)) = got {
        let extra = Batch {
            batch_id: "fuzz-appended".into(),
            agent: "fuzz".into(),
            observations: Vec::new(),
            spool: None,
        };
        log.append_at(&extra, now()).unwrap();
        drop(log);
        let (_, again) = open(&dir).expect("a log the reader accepted and appended to opens again");
        let mut want = ids(&before);
        want.push("fuzz-appended");
        assert_eq!(ids(&again), want);
    }
    let _ = std::fs::remove_dir_all(&dir);
});
