//! Snapshots of the collector's state, so that a restart replays only the log written
//! since the last snapshot instead of the whole retention: a month of a fleet's log takes
//! far longer to replay than a snapshot takes to load.
//!
//! `state_dir/snapshot.bin` holds the detector engine whole (open bins and the raw data of
//! the late window included, so the restored engine is the one that was saved), the
//! latest view, the ids of the accepted batches (dedup), the agents' last reports and the
//! position in the observation log it corresponds to. It is written every
//! `snapshot_interval_secs` and when the collector stops, atomically (temporary file,
//! fsync, rename, fsync of the directory), in postcard (a compact binary serde format:
//! the engine's maps have tuple keys, which JSON cannot carry).
//!
//! The file is sealed: [`SEAL`], the CRC32C of the rest (4 bytes, little endian), then
//! the body ([`MAGIC`] and the postcard). A snapshot whose checksum does not match
//! (changed bytes, a truncation) is not used; neither is an unsealed one of an earlier
//! version: both cost one full replay of the log, never a wrong state.
//!
//! A snapshot is only used when it was written by the same format with the same detector
//! settings and its log position still exists as it was; otherwise the collector says why
//! and replays the whole log, as if there were none. A snapshot is never the only copy of
//! anything: the log stays the record.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::facts::SavedCounters;
use crate::log::LogPosition;
use crate::state::State;
use blackout_detect::DetectConfig;

/// The snapshot file in the state directory.
pub const FILE: &str = "snapshot.bin";
/// First bytes of the file; changed whenever the layout of anything in it changes.
/// 02: the latest view keeps each agent's HTTP phase durations.
/// 03: the counters (batches, observations, events) follow the state.
/// 04: agents' politeness skips, in the state and the counters.
/// 05: the detector keeps each series' trail (value and baseline per bin, 7 days) for the
///     pages; the collector's own 288-point sparklines are gone. An 04 file is refused
///     (named in the log) and the log replayed, which rebuilds the trails.
/// 06: the detector's loss samples (per bin aggregate and series) and
///     `throttle_rtt_added_ms` in its settings.
/// 07: the detector keeps each agent's first bin (an agent without controls is not a
///     healthy vantage in its first bins).
/// 08: the detector's BGP state (withdrawal evidence, live readings, mechanisms). BGP
///     readings are not in the observation log: after an older file is refused and the
///     log replayed, the bgp series re-learn from the readings the BGP sources send again.
/// 09: the latest view is indexed by the detector's target index (no target ids), with
///     compact readings and its HTTP phases apart.
/// 10: the detector's bins keep two bits per agent and target (its vote), plus loss and
///     RTT per agent and target while open; the per-bin results it never read are gone.
const MAGIC: &[u8; 8] = b"BLKSNP10";
/// First bytes of a sealed file: a checksum of the body follows. Unsealed files (earlier
/// versions, whose body also lacks the seen batches' days) are refused.
pub const SEAL: &[u8; 8] = b"BLKSEAL1";
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a snapshot of this version of blackout")]
    Format { path: PathBuf },
    #[error(
        "{path}: damaged snapshot: checksum {found:08x} differs from the recorded {recorded:08x}"
    )]
    Checksum {
        path: PathBuf,
        recorded: u32,
        found: u32,
    },
    #[error("{path}: unreadable snapshot: {reason}")]
    Decode { path: PathBuf, reason: String },
    #[error("cannot encode the snapshot: {0}")]
    Encode(String),
}

/// What the snapshot was taken under: a snapshot is used only under the same.
pub fn fingerprint(detect: &DetectConfig) -> String {
    format!("blackout {} {detect:?}", env!("CARGO_PKG_VERSION"))
}

/// What a snapshot was taken under and where in the log it stands. The file holds this
/// header, then the [`State`], then the counters (postcard, field after field).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    pub fingerprint: String,
    pub taken_at: DateTime<Utc>,
    pub log: LogPosition,
}

/// A snapshot as read back.
pub type Saved = (Header, State, SavedCounters);

/// Encodes the snapshot of `state` straight into a temporary file next to `dir`'s
/// snapshot, without an encoded copy in memory (at a million targets that copy, doubled
/// while its buffer grew, was the collector's peak). The caller holds the state lock for
/// this part only: the file reaches the disk, and replaces the old one, in
/// [`Pending::commit`] after the lock is released.
pub fn begin(
    dir: &Path,
    header: &Header,
    state: &State,
    counters: &SavedCounters,
) -> Result<Pending, SnapshotError> {
    let tmp = dir.join(format!("{FILE}.tmp"));
    let io = |source| SnapshotError::Io {
        path: tmp.clone(),
        source,
    };
    let mut file = File::create(&tmp).map_err(io)?;
    // The seal's checksum is written last, over its placeholder: it covers the body,
    // known only once encoded.
    file.write_all(SEAL).map_err(io)?;
    file.write_all(&[0; 4]).map_err(io)?;
    let mut w = Crc32cWriter {
        inner: std::io::BufWriter::with_capacity(1 << 16, file),
        digest: CRC32C.digest(),
    };
    w.write_all(MAGIC).map_err(io)?;
    postcard::to_io(&(header, state, counters), &mut w)
        .map_err(|e| SnapshotError::Encode(e.to_string()))?;
    let Crc32cWriter { inner, digest } = w;
    let mut file = inner.into_inner().map_err(|e| io(e.into_error()))?;
    file.seek(SeekFrom::Start(SEAL.len() as u64)).map_err(io)?;
    file.write_all(&digest.finalize().to_le_bytes())
        .map_err(io)?;
    let bytes = file.seek(SeekFrom::End(0)).map_err(io)?;
    Ok(Pending {
        file,
        tmp,
        path: dir.join(FILE),
        dir: dir.to_path_buf(),
        bytes,
    })
}

/// A snapshot encoded into its temporary file, not yet durable nor in place.
pub struct Pending {
    file: File,
    tmp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
    /// Size of the file.
    pub bytes: u64,
}

impl Pending {
    /// Syncs the file and puts it in place of the old snapshot, atomically: a crash
    /// leaves the old one or the new one, never half of one.
    pub fn commit(self) -> Result<(), SnapshotError> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| SnapshotError::Io { path: p, source }
        };
        self.file.sync_all().map_err(io(&self.tmp))?;
        drop(self.file);
        std::fs::rename(&self.tmp, &self.path).map_err(io(&self.path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        Ok(())
    }
}

/// Passes bytes through to `inner` and checksums them on the way.
struct Crc32cWriter<'a, W: Write> {
    inner: W,
    digest: crc::Digest<'a, u32>,
}

impl<W: Write> Write for Crc32cWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The sealed file of a body.
#[cfg(test)]
fn seal(body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEAL.len() + 4 + body.len());
    out.extend_from_slice(SEAL);
    out.extend_from_slice(&CRC32C.checksum(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The body of a sealed file whose checksum matches.
fn unseal<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a [u8], SnapshotError> {
    let format = || SnapshotError::Format {
        path: path.to_path_buf(),
    };
    let rest = bytes.strip_prefix(SEAL.as_slice()).ok_or_else(format)?;
    let (sum, body) = rest.split_first_chunk::<4>().ok_or_else(format)?;
    let (recorded, found) = (u32::from_le_bytes(*sum), CRC32C.checksum(body));
    if recorded != found {
        return Err(SnapshotError::Checksum {
            path: path.to_path_buf(),
            recorded,
            found,
        });
    }
    Ok(body)
}

/// Reads the snapshot in `dir`, if there is one. The file is decoded where it was read
/// (one copy of the encoded state in memory, not two).
pub fn load(dir: &Path) -> Result<Option<Saved>, SnapshotError> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SnapshotError::Io { path, source }),
    };
    let body = unseal(&bytes, &path)?;
    let Some(body) = body.strip_prefix(MAGIC.as_slice()) else {
        return Err(SnapshotError::Format { path });
    };
    postcard::from_bytes(body)
        .map(Some)
        .map_err(|e| SnapshotError::Decode {
            path,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_body_comes_back_only_unchanged() {
        let p = Path::new("snapshot.bin");
        let body = b"BLKSNP02 any body".to_vec();
        let sealed = seal(body.clone());
        assert_eq!(unseal(&sealed, p).unwrap(), &body[..]);
        for i in SEAL.len()..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x20;
            assert!(
                matches!(unseal(&bad, p), Err(SnapshotError::Checksum { .. })),
                "byte {i}"
            );
        }
        assert!(matches!(
            unseal(&sealed[..sealed.len() - 1], p),
            Err(SnapshotError::Checksum { .. })
        ));
        // An unsealed file of an earlier version, and a cut seal.
        assert!(matches!(
            unseal(&body, p),
            Err(SnapshotError::Format { .. })
        ));
        assert!(matches!(
            unseal(&sealed[..10], p),
            Err(SnapshotError::Format { .. })
        ));
    }

    /// Sealed snapshots of earlier layouts (04: no trails in the engine; 09: cells per
    /// agent and target in the detector's bins) are refused by name, so the collector
    /// replays the log instead of misreading them.
    #[test]
    fn a_snapshot_of_the_previous_version_is_refused() {
        for old in [&b"BLKSNP04 old body"[..], b"BLKSNP09 old body"] {
            let d = tempfile::tempdir().unwrap();
            std::fs::write(d.path().join(FILE), seal(old.to_vec())).unwrap();
            let e = load(d.path()).unwrap_err();
            assert!(matches!(e, SnapshotError::Format { .. }), "{e}");
            assert!(
                e.to_string()
                    .ends_with("not a snapshot of this version of blackout")
            );
        }
    }
}
