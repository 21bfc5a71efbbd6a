//! Per-bin aggregates of the observation log, kept long after the raw observations: when
//! a day's log segment leaves the retention window (`retention_days`), it is summed up
//! per bin, entity (country, network, region) and signal into
//! `aggregates-YYYY-MM-DD.csv.zst` before it is deleted, and those files are kept for
//! `aggregate_retention_days`.
//!
//! The file is the series format `blackout replay --signals` reads, under zstd:
//! `timestamp,entity,signal,value`, one row per bin (its start, RFC 3339), entity and
//! signal with the share of observations that succeeded (`icmp`, `dns`, `http`, `tcp`)
//! and one with their mean RTT in ms where there was one (`icmp_rtt`, ...). Entities are
//! written as the detector names them: `KZ`, `KZ/AS9198` (observations of ASN 0, origin
//! unknown, count for the country only), `KZ/Almaty` (quoted when the name holds a comma
//! or a quote). Control targets are left out (they measure the vantage points, not a
//! country). A month of a country's or a network's signals is then `zstd -dc
//! aggregates-2026-11-*.csv.zst` away, and the detector runs over it offline as over
//! any other series.

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

/// Sums of one segment, per (bin start, entity, signal).
#[derive(Debug, Default)]
pub struct Summary {
    cells: BTreeMap<(i64, String, Signal), Cell>,
}

/// A CSV field: quoted when it must be.
fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

impl Summary {
    pub fn add(&mut self, batch: &Batch, bin_secs: u64) {
        let bin = bin_secs.max(1) as i64;
        for o in batch.observations.iter().filter(|o| !o.control) {
            let start = o.measured_at.timestamp().div_euclid(bin) * bin;
            let asn = (o.asn != 0).then(|| format!("{}/AS{}", o.country, o.asn));
            let region = o
                .region
                .as_deref()
                .filter(|r| !r.is_empty())
                .map(|r| format!("{}/{r}", o.country));
            let entities = std::iter::once(o.country.clone()).chain(asn).chain(region);
            for entity in entities {
                let c = self.cells.entry((start, entity, o.signal)).or_default();
                c.n += 1;
                c.ok += u64::from(o.ok);
                if let Some(r) = o.rtt_ms.filter(|_| o.ok) {
                    c.rtt_sum += r;
                    c.rtt_n += 1;
                }
            }
        }
    }

    /// The rows, in the replay's CSV format, bins in order.
    pub fn csv(&self) -> Vec<u8> {
        let mut out = b"timestamp,entity,signal,value\n".to_vec();
        for ((start, entity, signal), c) in &self.cells {
            let entity = csv_field(entity);
            let at = DateTime::<Utc>::from_timestamp(*start, 0)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let share = c.ok as f64 / c.n.max(1) as f64;
            let _ = writeln!(out, "{at},{entity},{signal},{share:.4}");
            if c.rtt_n > 0 {
                let rtt = c.rtt_sum / c.rtt_n as f64;
                let _ = writeln!(out, "{at},{entity},{signal}_rtt,{rtt:.3}");
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
            "agent": "a", "target": "icmp:5.0.0.0/24", "country": country, "asn": 0,
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

    /// A network's and a region's history is kept as its country's is, in the names the
    /// detector and `replay --signals` use.
    #[test]
    fn networks_and_regions_get_their_own_rows() {
        let mut a = obs("KZ", "2026-11-01T10:00:01Z", true, Some(10.0));
        a["asn"] = 9198.into();
        a["region"] = "Almaty".into();
        let mut b = obs("KZ", "2026-11-01T10:01:00Z", false, None);
        b["asn"] = 9198.into();
        b["region"] = "Shymkent, South".into();
        let mut c = obs("KZ", "2026-11-01T10:02:00Z", true, Some(30.0));
        c["asn"] = 48503.into();
        let batch: Batch = serde_json::from_value(serde_json::json!({
            "batch_id": "b", "agent": "a", "observations": [a, b, c]
        }))
        .unwrap();
        let mut s = Summary::default();
        s.add(&batch, 300);
        assert_eq!(
            String::from_utf8(s.csv()).unwrap(),
            "timestamp,entity,signal,value\n\
             2026-11-01T10:00:00Z,KZ,icmp,0.6667\n\
             2026-11-01T10:00:00Z,KZ,icmp_rtt,20.000\n\
             2026-11-01T10:00:00Z,KZ/AS48503,icmp,1.0000\n\
             2026-11-01T10:00:00Z,KZ/AS48503,icmp_rtt,30.000\n\
             2026-11-01T10:00:00Z,KZ/AS9198,icmp,0.5000\n\
             2026-11-01T10:00:00Z,KZ/AS9198,icmp_rtt,10.000\n\
             2026-11-01T10:00:00Z,KZ/Almaty,icmp,1.0000\n\
             2026-11-01T10:00:00Z,KZ/Almaty,icmp_rtt,10.000\n\
             2026-11-01T10:00:00Z,\"KZ/Shymkent, South\",icmp,0.0000\n"
        );
    }
}
