//! The durable observation log: every accepted batch is appended as one record and
//! synced to disk before the collector acknowledges it. On start the log is read back,
//! which restores the latest view, the set of seen batch ids and the detector's history.
//!
//! A record is one line, `<crc> <body>\n`: the CRC32C of the body's bytes in 8 lower-case
//! hex digits, a space, the batch. The body is `z` and the batch in the compact encoding
//! ([`blackout_model::compact`]) under zstd, in base64 (standard alphabet, no padding):
//! about 9 bytes per ICMP block observation against 235 as JSON. Records of earlier
//! versions, whose body is the batch as JSON, are still read, and so are their bare JSON
//! lines (no checksum: only damage that breaks their JSON is seen). A batch read back
//! from a compact record has the compact encoding's precision (`measured_at` to the
//! microsecond, `rtt_ms` to 10 us, `belief` as `f32`).
//!
//! The checksum tells a damaged record (changed bytes on the disk) from a good one, so
//! that one bad record costs that record, not the start of the collector: damaged
//! records are set aside (logged with file and offset, counted) and the rest is replayed.
//!
//! The log is cut into one segment per UTC day of arrival,
//! `observations-YYYY-MM-DD.jsonl`, so that retention is a file deletion: segments older
//! than `retention_days` are removed at start and whenever a new day begins, and only
//! the kept ones are replayed. Retention must cover the collector's `max_age_secs`:
//! a batch re-sent after its segment is gone is then refused as too old instead of
//! being counted a second time. With an [`AggregatePolicy`], a segment is summed up per
//! bin, country and signal before it is deleted, and those sums are kept far longer
//! ([`crate::aggregates`]).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};

use blackout_model::observation::Batch;

use crate::aggregates::{self, AggregatePolicy};

/// CRC-32C (Castagnoli), the checksum of each record.
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Segments kept when nothing else is configured: more than the default `max_age_secs`
/// (30 days), so that dedup outlives every batch the collector still accepts.
pub const DEFAULT_RETENTION_DAYS: u32 = 35;

const PREFIX: &str = "observations-";
const SUFFIX: &str = ".jsonl";
/// The single-file log of earlier versions; adopted as a segment on open.
const LEGACY: &str = "observations.jsonl";

/// A point in the log: a segment file name and a byte offset in it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogPosition {
    pub segment: String,
    pub offset: u64,
}

pub struct ObservationLog {
    dir: PathBuf,
    retention_days: u32,
    day: NaiveDate,
    path: PathBuf,
    file: File,
    len: u64,
    /// Damaged records set aside while the log was read back at open.
    damaged_at_open: u64,
    aggregates: Option<AggregatePolicy>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why a line of the log is not a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("no `<crc> ` prefix")]
    Frame,
    #[error("checksum {found:08x} differs from the record's {recorded:08x}")]
    Checksum { recorded: u32, found: u32 },
    #[error("not a batch: {0}")]
    Json(String),
    #[error("not a compact batch: {0}")]
    Compact(String),
}

/// First byte of a compact record's body (a JSON body starts with `{`).
const COMPACT_BODY: u8 = b'z';
/// Largest batch a compact record may decode to: far above any batch a collector takes
/// (`max_body_bytes`), a bound for damaged records.
const MAX_DECODED_RECORD_BYTES: u64 = 1 << 30;
/// zstd level of the records: the default, as the agents'.
const ZSTD_LEVEL: i32 = 3;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

/// One record as written to the log: checksum, space, `z` + base64 of the zstd of the
/// compact batch, newline.
pub fn encode_record(batch: &Batch) -> Vec<u8> {
    use base64::Engine;
    let raw = blackout_model::compact::encode(batch);
    let z = zstd::bulk::compress(&raw, ZSTD_LEVEL).expect("zstd compresses into memory");
    let mut body = Vec::with_capacity(z.len() * 4 / 3 + 4);
    body.push(COMPACT_BODY);
    body.resize(1 + base64::encoded_len(z.len(), false).unwrap_or(0), 0);
    let n = B64
        .encode_slice(&z, &mut body[1..])
        .expect("the buffer has the encoded length");
    body.truncate(1 + n);
    framed(&body)
}

/// A record of earlier versions, whose body is the batch as JSON (for tests and tools
/// that write logs as those versions did).
pub fn encode_json_record(batch: &Batch) -> Vec<u8> {
    framed(&serde_json::to_vec(batch).expect("a batch always serialises"))
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(body.len() + 10);
    line.extend_from_slice(format!("{:08x} ", CRC32C.checksum(body)).as_bytes());
    line.extend_from_slice(body);
    line.push(b'\n');
    line
}

fn decode_compact_body(body: &[u8]) -> Result<Batch, RecordError> {
    use base64::Engine;
    use std::io::Read;
    let bad = |e: String| RecordError::Compact(e);
    let z = B64.decode(body).map_err(|e| bad(e.to_string()))?;
    let mut raw = Vec::new();
    zstd::stream::read::Decoder::new(&z[..])
        .map_err(|e| bad(e.to_string()))?
        .take(MAX_DECODED_RECORD_BYTES + 1)
        .read_to_end(&mut raw)
        .map_err(|e| bad(e.to_string()))?;
    if raw.len() as u64 > MAX_DECODED_RECORD_BYTES {
        return Err(bad(format!(
            "decodes to more than {MAX_DECODED_RECORD_BYTES} bytes"
        )));
    }
    blackout_model::compact::decode(&raw).map_err(|e| bad(e.to_string()))
}

/// The batch of one line of the log (without its newline): a checksummed record (compact
/// or JSON), or a bare JSON line of an earlier version.
pub fn decode_record(line: &[u8]) -> Result<Batch, RecordError> {
    let json = if line.first() == Some(&b'{') {
        line
    } else {
        let (head, json) = line.split_at_checked(9).ok_or(RecordError::Frame)?;
        let hex = head.strip_suffix(b" ").ok_or(RecordError::Frame)?;
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(RecordError::Frame);
        }
        let recorded = std::str::from_utf8(hex)
            .ok()
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or(RecordError::Frame)?;
        let found = CRC32C.checksum(json);
        if found != recorded {
            return Err(RecordError::Checksum { recorded, found });
        }
        if let Some(body) = json.strip_prefix(&[COMPACT_BODY]) {
            return decode_compact_body(body);
        }
        json
    };
    serde_json::from_slice(json).map_err(|e| RecordError::Json(e.to_string()))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn segment_name(day: NaiveDate) -> String {
    format!("{PREFIX}{}{SUFFIX}", day.format("%Y-%m-%d"))
}

/// The day of a segment file name (`observations-YYYY-MM-DD[-anything].jsonl`).
fn segment_day(name: &str) -> Option<NaiveDate> {
    let rest = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    NaiveDate::parse_from_str(rest.get(..10)?, "%Y-%m-%d").ok()
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Reads one segment's batches from byte `from` on; returns how many damaged records it
/// set aside. A torn last line (a crash in the middle of a write that was never
/// acknowledged) is dropped and truncated away. A damaged complete line anywhere is set
/// aside: logged with its file and offset, counted, skipped; the lines after it are read.
/// Lines are bytes, not text: a damaged one need not be UTF-8.
fn read_segment(
    path: &Path,
    from: u64,
    day: NaiveDate,
    on_batch: &mut dyn FnMut(Batch, NaiveDate),
) -> Result<u64, LogError> {
    let mut f = File::open(path).map_err(io(path))?;
    if from > 0 {
        f.seek(SeekFrom::Start(from)).map_err(io(path))?;
    }
    let mut reader = BufReader::new(f);
    let mut line = Vec::new();
    let mut offset = from;
    let mut damaged = 0;
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line).map_err(io(path))?;
        if read == 0 {
            return Ok(damaged);
        }
        let Some(record) = line.strip_suffix(b"\n") else {
            tracing::warn!(path = %path.display(), offset, bytes = read, "dropping torn last record of the observation log");
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io(path))?;
            f.set_len(offset).map_err(io(path))?;
            f.sync_all().map_err(io(path))?;
            return Ok(damaged);
        };
        match decode_record(record) {
            Ok(b) => on_batch(b, day),
            Err(e) => {
                damaged += 1;
                tracing::warn!(path = %path.display(), offset, bytes = read, reason = %e, "setting aside a damaged record of the observation log");
            }
        }
        offset += read as u64;
    }
}

impl ObservationLog {
    /// Opens (creating) the log in `dir` with the default retention, and returns the
    /// batches it keeps, oldest first.
    pub fn open(dir: &Path) -> Result<(ObservationLog, Vec<Batch>), LogError> {
        Self::open_with_retention(dir, DEFAULT_RETENTION_DAYS, Utc::now())
    }

    /// Opens the log in `dir`, deletes the segments older than `retention_days` before
    /// `now`, and returns the batches of the others, oldest first.
    pub fn open_with_retention(
        dir: &Path,
        retention_days: u32,
        now: DateTime<Utc>,
    ) -> Result<(ObservationLog, Vec<Batch>), LogError> {
        let mut batches = Vec::new();
        let log =
            Self::open_replaying(dir, retention_days, now, None, &mut |b, _| batches.push(b))?;
        Ok((log, batches))
    }

    /// As [`Self::open_with_retention`], handing each kept batch to `on_batch` as it is
    /// read, oldest first, with the UTC day it arrived (its segment's): a month of a busy
    /// collector's log does not fit in memory at once, one batch at a time does. With
    /// `from`, only the batches appended after that position are replayed (a snapshot
    /// holds the effect of those before it; check the position with
    /// [`Self::can_resume_from`] first). Damaged records are set aside and counted
    /// ([`Self::damaged_at_open`]).
    pub fn open_replaying(
        dir: &Path,
        retention_days: u32,
        now: DateTime<Utc>,
        from: Option<&LogPosition>,
        on_batch: &mut dyn FnMut(Batch, NaiveDate),
    ) -> Result<ObservationLog, LogError> {
        Self::open_replaying_with(dir, retention_days, None, now, from, on_batch)
    }

    /// As [`Self::open_replaying`]; with `aggregates`, each segment that expires (now or
    /// later) is summed up into its aggregates file first.
    pub fn open_replaying_with(
        dir: &Path,
        retention_days: u32,
        aggregates: Option<AggregatePolicy>,
        now: DateTime<Utc>,
        from: Option<&LogPosition>,
        on_batch: &mut dyn FnMut(Batch, NaiveDate),
    ) -> Result<ObservationLog, LogError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let legacy = dir.join(LEGACY);
        if legacy.exists() {
            let day = std::fs::metadata(&legacy)
                .and_then(|m| m.modified())
                .map(|t| DateTime::<Utc>::from(t).date_naive())
                .unwrap_or_else(|_| now.date_naive());
            // `-0` sorts before the day's own segment, which is younger.
            let to = dir.join(format!("{PREFIX}{}-0{SUFFIX}", day.format("%Y-%m-%d")));
            std::fs::rename(&legacy, &to).map_err(io(&legacy))?;
            sync_dir(dir)?;
            tracing::info!(from = %legacy.display(), to = %to.display(), "adopted the single-file log as a segment");
        }
        let today = now.date_naive();
        let mut log = ObservationLog {
            dir: dir.to_path_buf(),
            retention_days,
            day: today,
            path: PathBuf::new(),
            file: File::open(dir).map_err(io(dir))?,
            len: 0,
            damaged_at_open: 0,
            aggregates,
        };
        for (day, p) in log.expire(today)? {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            let offset = match from {
                // Segment names sort in the order they were written.
                Some(pos) if *name < *pos.segment => continue,
                Some(pos) if *name == *pos.segment => pos.offset,
                _ => 0,
            };
            log.damaged_at_open += read_segment(&p, offset, day, on_batch)?;
        }
        // Only now: reading may have cut a torn tail off today's segment, and the next
        // append (and the position a snapshot records) starts where the good records end.
        log.switch_to(today)?;
        Ok(log)
    }

    /// Damaged records set aside while the log was read back at open.
    pub fn damaged_at_open(&self) -> u64 {
        self.damaged_at_open
    }

    /// Whether replaying from `pos` on top of a snapshot taken there gives the state a
    /// full replay would: the segment is still as long as it was (not cut back or
    /// replaced), or it is gone because it expired, with everything before it.
    pub fn can_resume_from(
        dir: &Path,
        pos: &LogPosition,
        retention_days: u32,
        now: DateTime<Utc>,
    ) -> bool {
        match std::fs::metadata(dir.join(&pos.segment)) {
            Ok(m) => m.len() >= pos.offset,
            Err(_) => segment_day(&pos.segment).is_some_and(|day| {
                day < now.date_naive() - chrono::Days::new(u64::from(retention_days))
            }),
        }
    }

    /// Where the next batch will be appended.
    pub fn position(&self) -> LogPosition {
        LogPosition {
            segment: self
                .path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            offset: self.len,
        }
    }

    /// Deletes segments older than the retention; returns the kept ones with their days,
    /// oldest first.
    fn expire(&self, today: NaiveDate) -> Result<Vec<(NaiveDate, PathBuf)>, LogError> {
        let oldest_kept = today - chrono::Days::new(u64::from(self.retention_days));
        let mut kept = Vec::new();
        let mut deleted = 0usize;
        for e in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let e = e.map_err(io(&self.dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(day) = segment_day(&name) else {
                continue;
            };
            if day < oldest_kept {
                if !self.summarize(&e.path()) {
                    continue;
                }
                std::fs::remove_file(e.path()).map_err(io(&e.path()))?;
                deleted += 1;
            } else {
                kept.push((day, name, e.path()));
            }
        }
        if deleted > 0 {
            sync_dir(&self.dir)?;
            tracing::info!(
                segments = deleted,
                retention_days = self.retention_days,
                "deleted expired observation log segments"
            );
        }
        if let Some(p) = self.aggregates.filter(|p| p.retention_days > 0) {
            match aggregates::expire(&self.dir, p.retention_days, today) {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    files = n,
                    aggregate_retention_days = p.retention_days,
                    "deleted expired aggregates"
                ),
                Err(e) => tracing::error!(error = %e, "cannot delete expired aggregates"),
            }
        }
        kept.sort();
        Ok(kept.into_iter().map(|(day, _, p)| (day, p)).collect())
    }

    /// Sums an expiring segment up into its day's aggregates file (when the policy asks
    /// for them); false when that failed, and the segment must stay for another try.
    fn summarize(&self, path: &Path) -> bool {
        let Some(policy) = self.aggregates.filter(|p| p.retention_days > 0) else {
            return true;
        };
        let mut summary = aggregates::Summary::default();
        let read = File::open(path).and_then(|f| {
            for line in BufReader::new(f).split(b'\n') {
                // Damaged records were counted when the segment was replayed.
                if let Ok(b) = decode_record(&line?) {
                    summary.add(&b, policy.bin_secs);
                }
            }
            Ok(())
        });
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        match read.and_then(|_| aggregates::write(&self.dir, &name, &summary)) {
            Ok(to) => {
                tracing::info!(segment = %path.display(), aggregates = %to.display(), "summed up an expiring log segment");
                true
            }
            Err(e) => {
                tracing::error!(segment = %path.display(), error = %e, "cannot sum up an expiring log segment; keeping it");
                false
            }
        }
    }

    fn switch_to(&mut self, day: NaiveDate) -> Result<(), LogError> {
        let path = self.dir.join(segment_name(day));
        let existed = path.exists();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        if !existed {
            sync_dir(&self.dir)?;
        }
        self.len = file.metadata().map_err(io(&path))?.len();
        self.file = file;
        self.path = path;
        self.day = day;
        Ok(())
    }

    /// Appends one batch and syncs it to disk.
    pub fn append(&mut self, batch: &Batch) -> Result<(), LogError> {
        self.append_at(batch, Utc::now())
    }

    /// Appends one batch into the segment of `now`'s day (starting it, and expiring old
    /// ones, when the day changed) and syncs it to disk.
    pub fn append_at(&mut self, batch: &Batch, now: DateTime<Utc>) -> Result<(), LogError> {
        let today = now.date_naive();
        if today > self.day {
            self.switch_to(today)?;
            self.expire(today)?;
        }
        let line = encode_record(batch);
        let written = self
            .file
            .write_all(&line)
            .and_then(|_| self.file.sync_data());
        if let Err(source) = written {
            // A half-written line in the middle of the log would make it unreadable at
            // the next start: cut it off (best effort; the batch is not acknowledged).
            let _ = self.file.set_len(self.len);
            return Err(LogError::Io {
                path: self.path.clone(),
                source,
            });
        }
        self.len += line.len() as u64;
        Ok(())
    }

    /// The segment files, oldest first.
    pub fn segments(&self) -> Result<Vec<PathBuf>, LogError> {
        let mut v: Vec<(NaiveDate, PathBuf)> = std::fs::read_dir(&self.dir)
            .map_err(io(&self.dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((segment_day(&e.file_name().to_string_lossy())?, e.path())))
            .collect();
        v.sort();
        Ok(v.into_iter().map(|(_, p)| p).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(id: &str) -> Batch {
        Batch {
            batch_id: id.into(),
            agent: "a".into(),
            observations: Vec::new(),
            spool: None,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn ids(v: &[Batch]) -> Vec<&str> {
        v.iter().map(|b| b.batch_id.as_str()).collect()
    }

    #[test]
    fn segments_per_day_and_retention_keeps_only_recent_days() {
        let d = tempfile::tempdir().unwrap();
        let (mut log, old) =
            ObservationLog::open_with_retention(d.path(), 2, at("2026-11-01T10:00:00Z")).unwrap();
        assert!(old.is_empty());
        log.append_at(&batch("d1"), at("2026-11-01T23:59:59Z"))
            .unwrap();
        log.append_at(&batch("d2"), at("2026-11-02T00:00:01Z"))
            .unwrap();
        log.append_at(&batch("d3"), at("2026-11-03T12:00:00Z"))
            .unwrap();
        assert_eq!(log.segments().unwrap().len(), 3);
        // Day 4 starts: day 1 is now older than two days.
        log.append_at(&batch("d4"), at("2026-11-04T00:00:00Z"))
            .unwrap();
        let names: Vec<String> = log
            .segments()
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "observations-2026-11-02.jsonl",
                "observations-2026-11-03.jsonl",
                "observations-2026-11-04.jsonl"
            ]
        );
        drop(log);
        let (_, kept) =
            ObservationLog::open_with_retention(d.path(), 2, at("2026-11-04T08:00:00Z")).unwrap();
        assert_eq!(ids(&kept), ["d2", "d3", "d4"]);
        // A restart after a long pause expires at open, before replay.
        let (log, kept) =
            ObservationLog::open_with_retention(d.path(), 2, at("2026-11-06T08:00:00Z")).unwrap();
        assert_eq!(ids(&kept), ["d4"]);
        assert_eq!(
            log.segments().unwrap().len(),
            2,
            "day 4 kept, day 6 started"
        );
    }

    #[test]
    fn torn_tail_is_cut_and_appends_continue_cleanly() {
        let d = tempfile::tempdir().unwrap();
        let now = at("2026-11-01T10:00:00Z");
        let (mut log, _) = ObservationLog::open_with_retention(d.path(), 35, now).unwrap();
        log.append_at(&batch("b1"), now).unwrap();
        let seg = log.segments().unwrap().pop().unwrap();
        drop(log);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"{\"batch_id\":\"b2\",\"ag").unwrap();
        drop(f);
        let (mut log, kept) = ObservationLog::open_with_retention(d.path(), 35, now).unwrap();
        assert_eq!(ids(&kept), ["b1"]);
        log.append_at(&batch("b3"), now).unwrap();
        drop(log);
        let (_, kept) = ObservationLog::open_with_retention(d.path(), 35, now).unwrap();
        assert_eq!(ids(&kept), ["b1", "b3"]);
    }

    fn one_segment(d: &Path) -> PathBuf {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        assert_eq!(v.len(), 1, "{v:?}");
        v.pop().unwrap()
    }

    #[test]
    fn records_carry_a_checksum_and_json_records_and_bare_json_lines_are_still_read() {
        let mut b = batch("b1");
        b.observations = (0..50)
            .map(|i| {
                serde_json::from_value(serde_json::json!({
                    "agent": "a", "target": format!("icmp:5.0.{i}.0/24"), "country": "KZ",
                    "asn": 1, "signal": "icmp", "measured_at": "2026-11-01T10:00:00.25Z",
                    "ok": true, "rtt_ms": 1.5,
                    "block": {"belief": 0.5, "verdict": "up", "probes": 1, "replies": 1}
                }))
                .unwrap()
            })
            .collect();
        let line = encode_record(&b);
        let text = String::from_utf8(line.clone()).unwrap();
        let (crc, body) = text.trim_end().split_once(' ').unwrap();
        assert_eq!(crc.len(), 8, "{text}");
        assert!(body.starts_with('z'), "{text}");
        assert_eq!(
            u32::from_str_radix(crc, 16).unwrap(),
            CRC32C.checksum(body.as_bytes())
        );
        assert_eq!(decode_record(&line[..line.len() - 1]).unwrap(), b);
        let json_line = encode_json_record(&b);
        assert!(
            line.len() * 10 < json_line.len(),
            "{} {}",
            line.len(),
            json_line.len()
        );
        assert_eq!(decode_record(&json_line[..json_line.len() - 1]).unwrap(), b);
        // The check value of CRC-32C ("123456789").
        assert_eq!(CRC32C.checksum(b"123456789"), 0xe306_9283);
        assert_eq!(
            decode_record(&json_line[9..json_line.len() - 1]).unwrap(),
            b,
            "older, unframed"
        );
        for at in [12, 40] {
            let mut bad = line.clone();
            bad[at] ^= 0x01;
            assert!(matches!(
                decode_record(&bad[..bad.len() - 1]),
                Err(RecordError::Checksum { .. })
            ));
        }
        // A body that passes its checksum but is no compact batch (written by a bug, or a
        // checksum collision) is an error, not a panic.
        let forged = framed(b"zAAAA");
        assert!(matches!(
            decode_record(&forged[..forged.len() - 1]),
            Err(RecordError::Compact(_))
        ));
        assert_eq!(decode_record(b"xyz"), Err(RecordError::Frame));
        assert_eq!(decode_record(b""), Err(RecordError::Frame));
    }

    #[test]
    fn damaged_records_in_the_middle_are_set_aside_and_the_rest_replayed() {
        let d = tempfile::tempdir().unwrap();
        let now = at("2026-11-01T10:00:00Z");
        let (mut log, _) = ObservationLog::open_with_retention(d.path(), 35, now).unwrap();
        for id in ["b1", "b2", "b3", "b4"] {
            log.append_at(&batch(id), now).unwrap();
        }
        drop(log);
        let seg = one_segment(d.path());
        let mut bytes = std::fs::read(&seg).unwrap();
        let starts: Vec<usize> = std::iter::once(0)
            .chain(
                bytes
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c == b'\n')
                    .map(|(i, _)| i + 1),
            )
            .collect();
        // b2: one base64 digit changed for another (still base64); b3: one byte that is
        // not UTF-8.
        let p = starts[1] + 12;
        bytes[p] = if bytes[p] == b'A' { b'B' } else { b'A' };
        bytes[starts[2] + 12] = 0xff;
        std::fs::write(&seg, &bytes).unwrap();
        let (log, kept) = ObservationLog::open_with_retention(d.path(), 35, now).unwrap();
        assert_eq!(ids(&kept), ["b1", "b4"]);
        assert_eq!(log.damaged_at_open(), 2);
        // The damaged bytes stay where they are (set aside, not rewritten) and appends go on.
        assert_eq!(log.position().offset, bytes.len() as u64);
    }

    #[test]
    fn a_torn_tail_of_any_bytes_is_cut_and_the_append_position_follows() {
        let d = tempfile::tempdir().unwrap();
        let now = at("2026-11-01T10:00:00Z");
        let (mut log, _) = ObservationLog::open_with_retention(d.path(), 35, now).unwrap();
        log.append_at(&batch("b1"), now).unwrap();
        let good = log.position();
        drop(log);
        let seg = one_segment(d.path());
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"1234abcd {\"batch_id\":\"b\xff\xfe").unwrap();
        drop(f);
        let (mut log, kept) = ObservationLog::open_with_retention(d.path(), 35, now).unwrap();
        assert_eq!(ids(&kept), ["b1"]);
        assert_eq!(log.damaged_at_open(), 0);
        // A snapshot taken now records where the good records end.
        assert_eq!(log.position(), good);
        log.append_at(&batch("b2"), now).unwrap();
        let after = log.position();
        drop(log);
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), after.offset);
        // Resuming at the recorded position reads exactly the batch appended there.
        let mut resumed = Vec::new();
        ObservationLog::open_replaying(d.path(), 35, now, Some(&good), &mut |b, _| resumed.push(b))
            .unwrap();
        assert_eq!(ids(&resumed), ["b2"]);
    }

    #[test]
    fn an_expiring_segment_is_summed_up_and_the_sums_outlive_it() {
        let d = tempfile::tempdir().unwrap();
        let policy = AggregatePolicy {
            bin_secs: 600,
            retention_days: 10,
        };
        let mut log = ObservationLog::open_replaying_with(
            d.path(),
            2,
            Some(policy),
            at("2026-11-01T10:00:00Z"),
            None,
            &mut |_, _| {},
        )
        .unwrap();
        let mut b = batch("d1");
        b.observations = vec![
            serde_json::from_value(serde_json::json!({
                "agent": "a", "target": "icmp:5.0.0.0/24", "country": "KZ", "asn": 1,
                "signal": "icmp", "measured_at": "2026-11-01T10:01:00Z", "ok": true, "rtt_ms": 4.0
            }))
            .unwrap(),
        ];
        log.append_at(&b, at("2026-11-01T10:02:00Z")).unwrap();
        log.append_at(&batch("d4"), at("2026-11-04T00:00:00Z"))
            .unwrap();
        let sums = d.path().join("aggregates-2026-11-01.csv.zst");
        let text = zstd::decode_all(&std::fs::read(&sums).unwrap()[..]).unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "timestamp,entity,signal,value\n\
             2026-11-01T10:00:00Z,KZ,icmp,1.0000\n\
             2026-11-01T10:00:00Z,KZ,icmp_rtt,4.000\n\
             2026-11-01T10:00:00Z,KZ/AS1,icmp,1.0000\n\
             2026-11-01T10:00:00Z,KZ/AS1,icmp_rtt,4.000\n"
        );
        assert_eq!(
            log.segments().unwrap().len(),
            1,
            "day 1's raw segment is gone"
        );
        log.append_at(&batch("d11"), at("2026-11-11T00:00:00Z"))
            .unwrap();
        assert!(sums.exists(), "kept for 10 days");
        log.append_at(&batch("d12"), at("2026-11-12T00:00:00Z"))
            .unwrap();
        assert!(!sums.exists(), "older than 10 days");
    }

    #[test]
    fn single_file_log_is_adopted_and_replayed_first() {
        let d = tempfile::tempdir().unwrap();
        let now = Utc::now();
        std::fs::write(
            d.path().join(LEGACY),
            "{\"batch_id\":\"old\",\"agent\":\"a\",\"observations\":[]}\n",
        )
        .unwrap();
        let (mut log, kept) = ObservationLog::open_with_retention(d.path(), 35, now).unwrap();
        assert_eq!(ids(&kept), ["old"]);
        log.append_at(&batch("new"), now).unwrap();
        drop(log);
        let (_, kept) = ObservationLog::open_with_retention(d.path(), 35, now).unwrap();
        assert_eq!(ids(&kept), ["old", "new"]);
        assert!(!d.path().join(LEGACY).exists());
    }
}
