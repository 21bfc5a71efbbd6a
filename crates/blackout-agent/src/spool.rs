//! The durable spool: every batch is on disk before it is uploaded, and leaves the disk
//! only when the collector has acknowledged it. An agent cut off from its collector for
//! days (an in-country vantage point during a shutdown) keeps measuring and uploads later.
//!
//! One file per batch, `NNNNNNNNNNNNNNNNNNNN.bcz`, written to a `.tmp` file, synced and
//! renamed, so a crash (kill -9, power loss) leaves either the whole batch or none of it.
//! Only the index lives in memory; batches are read back when their turn to upload comes.
//!
//! A file holds the batch in the compact encoding the wire and the collector's log use
//! ([`blackout_model::compact`]) under zstd: ~6 bytes per ICMP block observation against
//! ~230 as JSON, so the same `spool_max_bytes` holds some forty times the hours of a cut
//! (the in-country vantage point's data is the spool's reason to exist). What the compact
//! form rounds (time to the microsecond, RTTs to 10 us) is what the collector keeps anyway.
//! Files of earlier versions (`NNNN.json`, the batch as JSON) are still read and sent.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use blackout_model::observation::{Batch, SpoolStatus};

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spool {path}: not a batch: {message}")]
    Corrupt { path: PathBuf, message: String },
}

/// The bytes a batch takes in a spool file: zstd of its compact encoding.
pub fn encode_file(batch: &Batch) -> Vec<u8> {
    let raw = blackout_model::compact::encode(batch);
    zstd::bulk::compress(&raw, ZSTD_LEVEL).expect("zstd compresses into memory")
}

/// A batch back from the bytes of a spool file (`.bcz`).
pub fn decode_file(data: &[u8]) -> Result<Batch, String> {
    let raw = zstd::stream::decode_all(data).map_err(|e| format!("zstd: {e}"))?;
    blackout_model::compact::decode(&raw).map_err(|e| e.to_string())
}

/// A spool file's batch, whatever its version (`.bcz`, or `.json` of earlier ones): for
/// the operator's tools and the tests that look into a spool.
pub fn read_file(path: &Path) -> Result<Batch, SpoolError> {
    let data = std::fs::read(path).map_err(io_err(path))?;
    let corrupt = |message: String| SpoolError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    if path.extension().is_some_and(|x| x == "json") {
        serde_json::from_slice(&data).map_err(|e| corrupt(e.to_string()))
    } else {
        decode_file(&data).map_err(corrupt)
    }
}

/// What `blackout-agent spool DIR` prints: every batch of a spool directory as one JSON
/// line, oldest first, or with `summary` the bytes on disk against the same batches as
/// JSON. Reads only: safe beside a running agent (a file acknowledged meanwhile is
/// skipped).
pub fn show(dir: &Path, summary: bool, out: &mut impl Write) -> Result<(), SpoolError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "bcz" || x == "json"))
        .collect();
    files.sort();
    let (mut batches, mut observations, mut disk, mut json) = (0u64, 0u64, 0u64, 0u64);
    for p in &files {
        let Ok(meta) = std::fs::metadata(p) else {
            continue;
        };
        let b = match read_file(p) {
            Ok(b) => b,
            Err(SpoolError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                continue;
            }
            Err(e) => return Err(e),
        };
        let text = serde_json::to_vec(&b).expect("a batch always serialises");
        batches += 1;
        observations += b.observations.len() as u64;
        disk += meta.len();
        json += text.len() as u64;
        if !summary {
            out.write_all(&text)
                .and_then(|()| out.write_all(b"\n"))
                .map_err(io_err(Path::new("stdout")))?;
        }
    }
    if summary {
        let per = |bytes: u64| bytes as f64 / observations.max(1) as f64;
        writeln!(
            out,
            "{batches} batches, {observations} observations; on disk {disk} B ({:.1} B per observation); as JSON {json} B ({:.1} B per observation)",
            per(disk),
            per(json)
        )
        .map_err(io_err(Path::new("stdout")))?;
    }
    Ok(())
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    /// A `.json` file of an earlier version (else `.bcz`).
    legacy_json: bool,
    bytes: u64,
    observations: u64,
    batch_id: String,
    /// Only when the spool has no directory (the in-process agent of `standalone`).
    batch: Option<Batch>,
}

/// Names one spooled batch, for [`Spool::ack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolKey(u64);

/// The oldest spooled batch on its way to a collector: the bytes the spool holds go out
/// as they are, not parsed and serialised again (at 7,000 observations a second that was
/// a large part of an agent's CPU).
#[derive(Debug)]
pub struct Outgoing {
    pub key: SpoolKey,
    pub batch_id: String,
    pub observations: u64,
    body: Body,
}

#[derive(Debug)]
enum Body {
    /// A batch's JSON as an earlier version wrote it to disk (no `spool` member).
    Json(Vec<u8>),
    /// Read back from a compact file, or kept by the in-memory spool.
    Batch(Batch),
}

impl Outgoing {
    /// The upload body: the batch's JSON with the spool's status as its first member.
    pub fn json(&self, status: SpoolStatus) -> Vec<u8> {
        let head = serde_json::to_vec(&status).expect("a status always serialises");
        match &self.body {
            Body::Json(data) => {
                // `data` is an object with members (checked when read back).
                let mut out = Vec::with_capacity(data.len() + head.len() + 16);
                out.extend_from_slice(b"{\"spool\":");
                out.extend_from_slice(&head);
                out.push(b',');
                out.extend_from_slice(&data[1..]);
                out
            }
            Body::Batch(b) => {
                let mut b = b.clone();
                b.spool = Some(status);
                serde_json::to_vec(&b).expect("a batch always serialises")
            }
        }
    }

    /// The upload body in the compact encoding ([`blackout_model::compact`]), with the
    /// spool's status, compressed with zstd.
    pub fn compact_zstd(&self, status: SpoolStatus) -> Result<Vec<u8>, serde_json::Error> {
        let mut b = self.batch()?;
        b.spool = Some(status);
        let raw = blackout_model::compact::encode(&b);
        Ok(zstd::bulk::compress(&raw, ZSTD_LEVEL).expect("zstd compresses into memory"))
    }

    /// The batch itself, for a collector in the same process or to split it.
    pub fn batch(&self) -> Result<Batch, serde_json::Error> {
        match &self.body {
            Body::Json(data) => serde_json::from_slice(data),
            Body::Batch(b) => Ok(b.clone()),
        }
    }
}

/// zstd's default level. Level 19 made ICMP block batches ~14 % smaller still
/// (`bench/wire.sh`: 5.5 against 6.4 bytes per observation), not worth a compressor that
/// many times slower in an agent that sends 7,000 observations a second.
const ZSTD_LEVEL: i32 = 3;

/// What reading a spooled batch back checks without building its observations.
#[derive(serde::Deserialize)]
struct Shape {
    #[allow(dead_code)]
    batch_id: serde::de::IgnoredAny,
    observations: Vec<serde::de::IgnoredAny>,
}

#[derive(Debug)]
pub struct Spool {
    dir: Option<PathBuf>,
    max_bytes: u64,
    queue: VecDeque<Entry>,
    bytes: u64,
    next_seq: u64,
    dropped_observations: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Spool {
    /// An in-memory spool: same queue discipline, no durability.
    pub fn in_memory(max_bytes: u64) -> Spool {
        Spool {
            dir: None,
            max_bytes,
            queue: VecDeque::new(),
            bytes: 0,
            next_seq: 0,
            dropped_observations: 0,
        }
    }

    /// Opens `dir`, picking up every batch a previous run left unacknowledged.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut found = Vec::new();
        for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let e = e.map_err(io_err(dir))?;
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                // A write that crashed before its rename: never acknowledged, never complete.
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            let (stem, legacy_json) = match name.strip_suffix(".bcz") {
                Some(stem) => (Some(stem), false),
                None => (name.strip_suffix(".json"), true),
            };
            let Some(seq) = stem.and_then(|s| s.parse::<u64>().ok()) else {
                continue;
            };
            let bytes = std::fs::metadata(&path).map_err(io_err(&path))?.len();
            let batch = match read_file(&path) {
                Ok(b) => b,
                Err(SpoolError::Io { path, source }) => {
                    return Err(SpoolError::Io { path, source });
                }
                Err(e) => {
                    // Renamed only after a sync, so this is disk damage or a foreign file:
                    // keep it aside for a human and go on, rather than refuse to start.
                    let aside = path.with_extension("corrupt");
                    tracing::error!(path = %path.display(), error = %e, "spool file is not a batch; moved aside");
                    std::fs::rename(&path, &aside).map_err(io_err(&path))?;
                    continue;
                }
            };
            found.push(Entry {
                seq,
                legacy_json,
                bytes,
                observations: batch.observations.len() as u64,
                batch_id: batch.batch_id,
                batch: None,
            });
        }
        found.sort_by_key(|e| e.seq);
        let mut s = Spool {
            dir: Some(dir.to_path_buf()),
            max_bytes,
            next_seq: found.last().map_or(0, |e| e.seq + 1),
            bytes: found.iter().map(|e| e.bytes).sum(),
            queue: found.into(),
            dropped_observations: 0,
        };
        s.enforce_cap()?;
        Ok(s)
    }

    fn path_of(dir: &Path, e: &Entry) -> PathBuf {
        let ext = if e.legacy_json { "json" } else { "bcz" };
        dir.join(format!("{:020}.{ext}", e.seq))
    }

    /// Stores a batch durably at the back of the queue. When this returns `Ok`, the
    /// batch is on disk (file and directory entry synced).
    pub fn push(&mut self, batch: Batch) -> Result<(), SpoolError> {
        let (id, n) = (batch.batch_id.clone(), batch.observations.len());
        if let Err(e) = self.store(batch) {
            // Lost for good: counted, so that the collector shows the loss.
            self.dropped_observations += n as u64;
            return Err(e);
        }
        // Tests count what the agent produced from these lines, so it is logged only
        // once the batch is durable.
        let dir = self.dir.as_deref().map(|d| d.display().to_string());
        tracing::debug!(batch = %id, observations = n, spool = dir.as_deref().unwrap_or("memory"), "batch spooled");
        Ok(())
    }

    /// Puts back the parts of a batch split after the collector found it too large; not
    /// new observations, so not logged as spooled.
    pub fn requeue(&mut self, batch: Batch) -> Result<(), SpoolError> {
        self.store(batch)
    }

    fn store(&mut self, mut batch: Batch) -> Result<(), SpoolError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let observations = batch.observations.len() as u64;
        let batch_id = batch.batch_id.clone();
        // The status is the sender's, added when the batch leaves (see `Outgoing::json`).
        batch.spool = None;
        let (bytes, keep) = match &self.dir {
            Some(dir) => {
                let data = encode_file(&batch);
                let path = dir.join(format!("{seq:020}.bcz"));
                let tmp = path.with_extension("tmp");
                let written = (|| {
                    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
                    f.write_all(&data).map_err(io_err(&tmp))?;
                    f.sync_all().map_err(io_err(&tmp))?;
                    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
                    File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(io_err(dir))
                })();
                if let Err(e) = written {
                    // Nothing half-written stays behind: a full disk gets its space back
                    // for the next batch, and a batch that is not known to be durable is
                    // not in the queue (it would be uploaded from memory of nothing).
                    let _ = std::fs::remove_file(&tmp);
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
                (data.len() as u64, None)
            }
            None => {
                // Estimate: the in-memory spool only needs a bound, not an exact size.
                (observations * 200 + 64, Some(batch))
            }
        };
        self.bytes += bytes;
        self.queue.push_back(Entry {
            seq,
            legacy_json: false,
            bytes,
            observations,
            batch_id,
            batch: keep,
        });
        self.enforce_cap()
    }

    /// Drops the oldest batches (never the newest) until under the disk cap.
    fn enforce_cap(&mut self) -> Result<(), SpoolError> {
        while self.bytes > self.max_bytes && self.queue.len() > 1 {
            let e = self.queue.pop_front().expect("len > 1");
            self.bytes -= e.bytes;
            self.dropped_observations += e.observations;
            tracing::warn!(
                observations = e.observations,
                max_bytes = self.max_bytes,
                "spool full: dropped the oldest batch"
            );
            if let Some(dir) = &self.dir {
                let p = Self::path_of(dir, &e);
                std::fs::remove_file(&p).map_err(io_err(&p))?;
            }
        }
        Ok(())
    }

    /// The oldest unacknowledged batch, with the key [`Spool::ack`] takes.
    ///
    /// A batch file that cannot be read back is moved aside (`.corrupt`), counted as
    /// dropped, and the next one is returned: one damaged file must not stop the upload
    /// of everything queued behind it.
    pub fn front(&mut self) -> Result<Option<(SpoolKey, Batch)>, SpoolError> {
        loop {
            let Some(out) = self.front_outgoing()? else {
                return Ok(None);
            };
            match out.batch() {
                Ok(b) => return Ok(Some((out.key, b))),
                Err(err) => self.set_aside(&err.to_string())?,
            }
        }
    }

    /// The oldest unacknowledged batch as it is stored, for the upload: a compact file is
    /// decoded (cheap), a JSON one of an earlier version only checked for the shape of a
    /// batch, not parsed into observations. A file that fails is handled as in
    /// [`Spool::front`].
    pub fn front_outgoing(&mut self) -> Result<Option<Outgoing>, SpoolError> {
        loop {
            let Some(e) = self.queue.front() else {
                return Ok(None);
            };
            let key = SpoolKey(e.seq);
            let dir = match (&self.dir, &e.batch) {
                (_, Some(b)) => {
                    return Ok(Some(Outgoing {
                        key,
                        batch_id: e.batch_id.clone(),
                        observations: e.observations,
                        body: Body::Batch(b.clone()),
                    }));
                }
                (Some(dir), None) => dir.clone(),
                (None, None) => unreachable!("in-memory entries keep their batch"),
            };
            let p = Self::path_of(&dir, e);
            let data = std::fs::read(&p).map_err(io_err(&p))?;
            if !e.legacy_json {
                match decode_file(&data) {
                    Ok(b) => {
                        return Ok(Some(Outgoing {
                            key,
                            batch_id: e.batch_id.clone(),
                            observations: b.observations.len() as u64,
                            body: Body::Batch(b),
                        }));
                    }
                    Err(err) => {
                        self.set_aside(&err)?;
                        continue;
                    }
                }
            }
            match serde_json::from_slice::<Shape>(&data) {
                Ok(shape) if data.first() == Some(&b'{') => {
                    return Ok(Some(Outgoing {
                        key,
                        batch_id: e.batch_id.clone(),
                        observations: shape.observations.len() as u64,
                        body: Body::Json(data),
                    }));
                }
                Ok(_) => self.set_aside("not a JSON object")?,
                Err(err) => self.set_aside(&err.to_string())?,
            }
        }
    }

    /// Moves the front batch's file aside (`.corrupt`, for a human) and counts its
    /// observations as dropped.
    fn set_aside(&mut self, error: &str) -> Result<(), SpoolError> {
        let e = self.queue.pop_front().expect("front exists");
        self.bytes -= e.bytes;
        self.dropped_observations += e.observations;
        if let Some(dir) = &self.dir {
            let p = Self::path_of(dir, &e);
            tracing::error!(path = %p.display(), %error, "spooled batch is unreadable; moved aside");
            std::fs::rename(&p, p.with_extension("corrupt")).map_err(io_err(&p))?;
        }
        Ok(())
    }

    /// Removes the batch `key` names: the collector has it (or refused it for good).
    ///
    /// By key, not "the front": while a batch is on its way, the disk cap may have
    /// dropped it and made a younger, never-sent batch the front.
    pub fn ack(&mut self, key: SpoolKey) -> Result<(), SpoolError> {
        let Some(i) = self.queue.iter().position(|e| e.seq == key.0) else {
            return Ok(());
        };
        let e = self.queue.remove(i).expect("index from position");
        self.bytes -= e.bytes;
        if let Some(dir) = &self.dir {
            let p = Self::path_of(dir, &e);
            std::fs::remove_file(&p).map_err(io_err(&p))?;
        }
        Ok(())
    }

    pub fn batches(&self) -> usize {
        self.queue.len()
    }

    pub fn observations(&self) -> u64 {
        self.queue.iter().map(|e| e.observations).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Observations dropped because the spool was full, or because a batch could not
    /// be written to it (a full disk).
    pub fn dropped_observations(&self) -> u64 {
        self.dropped_observations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(id: &str, n: usize) -> Batch {
        let o: blackout_model::observation::Observation = serde_json::from_str(
            r#"{"agent":"a","target":"t","country":"KZ","asn":1,"signal":"icmp","measured_at":"2022-01-05T10:30:00Z","ok":true}"#,
        )
        .unwrap();
        Batch {
            batch_id: id.into(),
            agent: "a".into(),
            observations: vec![o; n],
            spool: None,
        }
    }

    #[test]
    fn outgoing_body_is_the_stored_batch_with_the_status_first() {
        let d = tempfile::tempdir().unwrap();
        let status = SpoolStatus {
            observations: 7,
            dropped_observations: 2,
            catalog_refusals: 0,
            politeness_skips: 0,
        };
        let mut on_disk = Spool::open(d.path(), 1 << 20).unwrap();
        let mut in_memory = Spool::in_memory(1 << 20);
        for s in [&mut on_disk, &mut in_memory] {
            // A status on the batch itself is the sender's to set, not the spool's.
            let mut b = batch("b1", 3);
            b.spool = Some(SpoolStatus {
                observations: 99,
                dropped_observations: 99,
                catalog_refusals: 0,
                politeness_skips: 0,
            });
            s.push(b).unwrap();
            let out = s.front_outgoing().unwrap().unwrap();
            assert_eq!((out.batch_id.as_str(), out.observations), ("b1", 3));
            let sent: Batch = serde_json::from_slice(&out.json(status)).unwrap();
            assert_eq!(
                sent,
                Batch {
                    spool: Some(status),
                    ..batch("b1", 3)
                }
            );
            assert_eq!(out.batch().unwrap(), batch("b1", 3));
        }
    }

    #[test]
    fn survives_reopen_in_order_and_cleans_torn_writes() {
        let d = tempfile::tempdir().unwrap();
        {
            let mut s = Spool::open(d.path(), 1 << 20).unwrap();
            s.push(batch("b1", 2)).unwrap();
            s.push(batch("b2", 3)).unwrap();
            s.push(batch("b3", 1)).unwrap();
            let (k, _) = s.front().unwrap().unwrap();
            s.ack(k).unwrap();
        }
        std::fs::write(d.path().join("00000000000000000099.tmp"), b"{\"half").unwrap();
        let mut s = Spool::open(d.path(), 1 << 20).unwrap();
        assert_eq!(s.batches(), 2);
        assert_eq!(s.observations(), 4);
        let (k, b) = s.front().unwrap().unwrap();
        assert_eq!(b.batch_id, "b2");
        s.ack(k).unwrap();
        s.push(batch("b4", 1)).unwrap();
        assert_eq!(s.front().unwrap().unwrap().1.batch_id, "b3");
        assert!(!d.path().join("00000000000000000099.tmp").exists());
    }

    #[test]
    fn cap_drops_oldest_and_counts() {
        let d = tempfile::tempdir().unwrap();
        let one = encode_file(&batch("b0", 10)).len() as u64;
        let mut s = Spool::open(d.path(), one * 2 + 10).unwrap();
        for i in 0..5 {
            s.push(batch(&format!("b{i}"), 10)).unwrap();
        }
        assert_eq!(s.batches(), 2);
        assert_eq!(s.dropped_observations(), 30);
        assert_eq!(s.front().unwrap().unwrap().1.batch_id, "b3");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2);
    }

    #[test]
    fn ack_of_a_batch_the_cap_dropped_in_flight_keeps_the_next() {
        let d = tempfile::tempdir().unwrap();
        let one = encode_file(&batch("b0", 10)).len() as u64;
        let mut s = Spool::open(d.path(), one * 2 + 10).unwrap();
        s.push(batch("b0", 10)).unwrap();
        s.push(batch("b1", 10)).unwrap();
        let (sent, b) = s.front().unwrap().unwrap();
        assert_eq!(b.batch_id, "b0");
        // While b0 is on its way, the cap drops it.
        s.push(batch("b2", 10)).unwrap();
        s.ack(sent).unwrap();
        assert_eq!(s.batches(), 2, "b1 was never sent and must stay");
        assert_eq!(s.front().unwrap().unwrap().1.batch_id, "b1");
    }

    #[test]
    fn unreadable_batch_is_moved_aside_and_counted() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(d.path(), 1 << 20).unwrap();
        s.push(batch("b0", 3)).unwrap();
        s.push(batch("b1", 2)).unwrap();
        std::fs::write(d.path().join(format!("{:020}.bcz", 0)), b"garbage").unwrap();
        let (_, b) = s.front().unwrap().unwrap();
        assert_eq!(b.batch_id, "b1");
        assert_eq!(s.dropped_observations(), 3);
        assert!(d.path().join(format!("{:020}.corrupt", 0)).exists());
        drop(s);
        std::fs::write(d.path().join(format!("{:020}.json", 7)), b"{}").unwrap();
        // A valid zstd frame around something that is not a batch.
        std::fs::write(
            d.path().join(format!("{:020}.bcz", 8)),
            zstd::bulk::compress(b"not compact", 3).unwrap(),
        )
        .unwrap();
        let s = Spool::open(d.path(), 1 << 20).unwrap();
        assert_eq!(s.batches(), 1);
        assert_eq!(s.next_seq, 2, "a corrupt file does not count as a batch");
        assert!(d.path().join(format!("{:020}.corrupt", 8)).exists());
    }

    /// An agent upgraded with batches spooled by an earlier version (JSON files) reads
    /// and sends them, in order with the new ones.
    #[test]
    fn json_files_of_an_earlier_version_are_read_and_sent() {
        let d = tempfile::tempdir().unwrap();
        for (seq, id) in [(3u64, "old1"), (4, "old2")] {
            let data = serde_json::to_vec(&batch(id, 2)).unwrap();
            std::fs::write(d.path().join(format!("{seq:020}.json")), data).unwrap();
        }
        let mut s = Spool::open(d.path(), 1 << 20).unwrap();
        s.push(batch("new", 1)).unwrap();
        assert_eq!(s.batches(), 3);
        let mut ids = Vec::new();
        while let Some(out) = s.front_outgoing().unwrap() {
            let status = SpoolStatus {
                observations: 0,
                dropped_observations: 0,
                catalog_refusals: 0,
                politeness_skips: 0,
            };
            let sent: Batch = serde_json::from_slice(&out.json(status)).unwrap();
            let compact = blackout_model::compact::decode(
                &zstd::stream::decode_all(&out.compact_zstd(status).unwrap()[..]).unwrap(),
            )
            .unwrap();
            assert_eq!(sent, compact);
            ids.push(sent.batch_id.clone());
            s.ack(out.key).unwrap();
        }
        assert_eq!(ids, ["old1", "old2", "new"]);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    /// What the compact files buy: a batch of ICMP block observations as an agent spools
    /// them, on disk, against the same batch as JSON (the earlier format).
    #[test]
    fn block_observations_take_a_few_bytes_each_on_disk() {
        let mut obs = Vec::new();
        for i in 0..2_000u32 {
            let o: blackout_model::observation::Observation = serde_json::from_str(&format!(
                r#"{{"agent":"a","target":"icmp:10.{}.{}.0/24","country":"KZ","asn":9198,"signal":"icmp","measured_at":"2022-01-05T10:30:{:02}.{:06}Z","ok":true,"rtt_ms":{}.{},"block":{{"verdict":"up","probes":1,"replies":1,"belief":0.99}}}}"#,
                i / 256,
                i % 256,
                i / 40,
                (i * 7919) % 1_000_000,
                20 + i % 30,
                i % 100,
            ))
            .unwrap();
            obs.push(o);
        }
        let b = Batch {
            batch_id: "b".into(),
            agent: "a".into(),
            observations: obs,
            spool: None,
        };
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(d.path(), 1 << 30).unwrap();
        s.push(b.clone()).unwrap();
        let per_obs = s.bytes() as f64 / 2_000.0;
        let json = serde_json::to_vec(&b).unwrap().len() as f64 / 2_000.0;
        eprintln!("spool file: {per_obs:.1} B per observation; as JSON {json:.1} B");
        assert!(
            per_obs * 10.0 < json,
            "{per_obs:.1} B against {json:.1} B as JSON"
        );
        // What comes back is what the compact form keeps (the belief as `f32`).
        let kept = blackout_model::compact::decode(&blackout_model::compact::encode(&b)).unwrap();
        assert_eq!(s.front().unwrap().unwrap().1, kept);
    }
}
