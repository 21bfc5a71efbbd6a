//! The durable observation log: every accepted batch is appended as one JSON line and
//! synced to disk before the collector acknowledges it. On start the log is read back,
//! which restores the latest view, the set of seen batch ids and the detector's history.
//!
//! The log is cut into one segment per UTC day of arrival,
//! `observations-YYYY-MM-DD.jsonl`, so that retention is a file deletion: segments older
//! than `retention_days` are removed at start and whenever a new day begins, and only
//! the kept ones are replayed. Retention must cover the collector's `max_age_secs`:
//! a batch re-sent after its segment is gone is then refused as too old instead of
//! being counted a second time.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};

use blackout_model::observation::Batch;

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
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
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

/// Reads one segment's batches. A torn last line (a crash in the middle of a write that
/// was never acknowledged) is dropped and truncated away; corruption anywhere else is
/// an error.
fn read_segment(path: &Path, from: u64, on_batch: &mut dyn FnMut(Batch)) -> Result<(), LogError> {
    let mut f = File::open(path).map_err(io(path))?;
    if from > 0 {
        f.seek(SeekFrom::Start(from)).map_err(io(path))?;
    }
    let mut reader = BufReader::new(f);
    let mut line = String::new();
    // Line numbers in errors count from the position read from.
    let mut n = 0;
    let mut good_len = from;
    loop {
        line.clear();
        let read = reader.read_line(&mut line).map_err(io(path))?;
        if read == 0 {
            return Ok(());
        }
        n += 1;
        if !line.ends_with('\n') {
            tracing::warn!(path = %path.display(), line = n, "dropping torn last record of the observation log");
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io(path))?;
            f.set_len(good_len).map_err(io(path))?;
            f.sync_all().map_err(io(path))?;
            return Ok(());
        }
        match serde_json::from_str::<Batch>(&line) {
            Ok(b) => on_batch(b),
            Err(e) => {
                return Err(LogError::Corrupt {
                    path: path.to_path_buf(),
                    line: n,
                    message: e.to_string(),
                });
            }
        }
        good_len += read as u64;
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
        let log = Self::open_replaying(dir, retention_days, now, None, &mut |b| batches.push(b))?;
        Ok((log, batches))
    }

    /// As [`Self::open_with_retention`], handing each kept batch to `on_batch` as it is
    /// read, oldest first: a month of a busy collector's log does not fit in memory at
    /// once, one batch at a time does. With `from`, only the batches appended after that
    /// position are replayed (a snapshot holds the effect of those before it; check the
    /// position with [`Self::can_resume_from`] first).
    pub fn open_replaying(
        dir: &Path,
        retention_days: u32,
        now: DateTime<Utc>,
        from: Option<&LogPosition>,
        on_batch: &mut dyn FnMut(Batch),
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
        let (log, kept) = {
            let mut log = ObservationLog {
                dir: dir.to_path_buf(),
                retention_days,
                day: today,
                path: PathBuf::new(),
                file: File::open(dir).map_err(io(dir))?,
                len: 0,
            };
            let kept = log.expire(today)?;
            log.switch_to(today)?;
            (log, kept)
        };
        for p in &kept {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            let offset = match from {
                // Segment names sort in the order they were written.
                Some(pos) if *name < *pos.segment => continue,
                Some(pos) if *name == *pos.segment => pos.offset,
                _ => 0,
            };
            read_segment(p, offset, on_batch)?;
        }
        Ok(log)
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

    /// Deletes segments older than the retention; returns the kept ones, oldest first.
    fn expire(&self, today: NaiveDate) -> Result<Vec<PathBuf>, LogError> {
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
        kept.sort();
        Ok(kept.into_iter().map(|(_, _, p)| p).collect())
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
        let mut line = serde_json::to_vec(batch).expect("a batch always serialises");
        line.push(b'\n');
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

    #[test]
    fn corruption_in_the_middle_names_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let now = at("2026-11-01T10:00:00Z");
        std::fs::write(
            d.path().join("observations-2026-11-01.jsonl"),
            "{\"batch_id\":\"x\",\"agent\":\"a\",\"observations\":[]}\nnot json\n{}\n",
        )
        .unwrap();
        let e = ObservationLog::open_with_retention(d.path(), 35, now)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("observations-2026-11-01.jsonl:2:"), "{e}");
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
