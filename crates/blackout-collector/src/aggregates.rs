//! Per-bin aggregates of the observation log, kept long after the raw observations: when
//! a day's log segment leaves the retention window (`retention_days`), it is summed up
//! per bin, country and signal into `aggregates-YYYY-MM-DD.csv.zst` before it is
//! deleted, and those files are kept for `aggregate_retention_days`.
//!
//! The file is the series format `blackout replay --signals` reads, under zstd:
//! `timestamp,entity,signal,value`, one row per bin (its start, RFC 3339), country and
//! signal with the share of observations that succeeded (`icmp`, `dns`, `http`, `tcp`)
//! and one with their mean RTT in ms where there was one (`icmp_rtt`, ...). Control
//! targets are left out (they measure the vantage points, not a country). A month of a
//! country's signals is then `zstd -dc aggregates-2026-11-*.csv.zst` away, and the
//! detector runs over it offline as over any other series.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use blackout_model::observation::{Batch, Signal};
use chrono::{DateTime, NaiveDate, Utc};

/// Days of aggregates kept when nothing else is configured: over a year, so that a
/// country's history reaches the same season last year.
pub const DEFAULT_AGGREGATE_RETENTION_DAYS: u32 = 400;

const PREFIX: &str = "aggregates-";
const SUFFIX: &str = ".csv.zst";

/// What the aggregates are cut by and how long they are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggregatePolicy {
    pub bin_secs: u64,
    /// 0: no aggregates are written (expired segments are only deleted).
    pub retention_days: u32,
}

#[derive(Debug, Default, Clone, Copy)]
struct Cell {
    n: u64,
    ok: u64,
    rtt_sum: f64,
    rtt_n: u64,
}

/// Sums of one segment, per (bin start, country, signal).
#[derive(Debug, Default)]
pub struct Summary {
    cells: BTreeMap<(i64, String, Signal), Cell>,
}

impl Summary {
    pub fn add(&mut self, batch: &Batch, bin_secs: u64) {
        let bin = bin_secs.max(1) as i64;
        for o in batch.observations.iter().filter(|o| !o.control) {
            let start = o.measured_at.timestamp().div_euclid(bin) * bin;
            let c = self
                .cells
                .entry((start, o.country.clone(), o.signal))
                .or_default();
            c.n += 1;
            c.ok += u64::from(o.ok);
            if let Some(r) = o.rtt_ms.filter(|_| o.ok) {
                c.rtt_sum += r;
                c.rtt_n += 1;
            }
        }
    }

    /// The rows, in the replay's CSV format, bins in order.
    pub fn csv(&self) -> Vec<u8> {
        let mut out = b"timestamp,entity,signal,value\n".to_vec();
        for ((start, country, signal), c) in &self.cells {
            let at = DateTime::<Utc>::from_timestamp(*start, 0)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let share = c.ok as f64 / c.n.max(1) as f64;
            let _ = writeln!(out, "{at},{country},{signal},{share:.4}");
            if c.rtt_n > 0 {
                let rtt = c.rtt_sum / c.rtt_n as f64;
                let _ = writeln!(out, "{at},{country},{signal}_rtt,{rtt:.3}");
            }
        }
        out
    }
}

/// The aggregates file of a log segment: `aggregates-` and the segment's name after
/// `observations-` (its day, and `-0` for the adopted single-file log of old versions).
pub fn file_name(segment: &str) -> Option<String> {
    let rest = segment
        .strip_prefix("observations-")?
        .strip_suffix(".jsonl")?;
    Some(format!("{PREFIX}{rest}{SUFFIX}"))
}

fn file_day(name: &str) -> Option<NaiveDate> {
    let rest = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    NaiveDate::parse_from_str(rest.get(..10)?, "%Y-%m-%d").ok()
}

/// Writes `summary` as the aggregates of `segment`, synced, through a temporary file and
/// a rename: a crash leaves no file or the whole one, and summing a segment up again
/// (a crash before it was deleted) writes the same file again.
pub fn write(dir: &Path, segment: &str, summary: &Summary) -> std::io::Result<PathBuf> {
    let name = file_name(segment).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{segment} is not a log segment"),
        )
    })?;
    let path = dir.join(name);
    let z = zstd::bulk::compress(&summary.csv(), 9)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&z)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(path)
}

/// Deletes aggregates files older than `retention_days` before `today`; returns how
/// many.
pub fn expire(dir: &Path, retention_days: u32, today: NaiveDate) -> std::io::Result<usize> {
    let oldest_kept = today - chrono::Days::new(u64::from(retention_days));
    let mut deleted = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if file_day(&name).is_some_and(|d| d < oldest_kept) {
            std::fs::remove_file(e.path())?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(country: &str, at: &str, ok: bool, rtt: Option<f64>) -> serde_json::Value {
        let mut o = serde_json::json!({
            "agent": "a", "target": "icmp:5.0.0.0/24", "country": country, "asn": 1,
            "signal": "icmp", "measured_at": at, "ok": ok
        });
        if ok {
            o["rtt_ms"] = rtt.into();
        } else {
            o["phase"] = "icmp_echo".into();
            o["failure"] = "timeout".into();
        }
        o
    }

    #[test]
    fn a_segment_sums_up_per_bin_country_and_signal() {
        let b: Batch = serde_json::from_value(serde_json::json!({
            "batch_id": "b", "agent": "a", "observations": [
                obs("KZ", "2026-11-01T10:00:01Z", true, Some(10.0)),
                obs("KZ", "2026-11-01T10:04:59Z", true, Some(30.0)),
                obs("KZ", "2026-11-01T10:03:00Z", false, None),
                obs("KZ", "2026-11-01T10:05:00Z", false, None),
                obs("IR", "2026-11-01T10:00:00Z", true, None),
            ]
        }))
        .unwrap();
        let mut s = Summary::default();
        s.add(&b, 300);
        assert_eq!(
            String::from_utf8(s.csv()).unwrap(),
            "timestamp,entity,signal,value\n\
             2026-11-01T10:00:00Z,IR,icmp,1.0000\n\
             2026-11-01T10:00:00Z,KZ,icmp,0.6667\n\
             2026-11-01T10:00:00Z,KZ,icmp_rtt,20.000\n\
             2026-11-01T10:05:00Z,KZ,icmp,0.0000\n"
        );
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "observations-2026-11-01.jsonl", &s).unwrap();
        assert!(p.ends_with("aggregates-2026-11-01.csv.zst"), "{p:?}");
        let text = zstd::decode_all(&std::fs::read(&p).unwrap()[..]).unwrap();
        assert_eq!(text, s.csv());
        assert_eq!(
            expire(d.path(), 400, "2028-01-01".parse().unwrap()).unwrap(),
            1
        );
        assert!(!p.exists());
    }
}
