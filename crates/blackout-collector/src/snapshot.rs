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
use std::io::Write;
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
const MAGIC: &[u8; 8] = b"BLKSNP08";
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

pub fn encode(
    header: &Header,
    state: &State,
    counters: &SavedCounters,
) -> Result<Vec<u8>, SnapshotError> {
    let body = postcard::to_stdvec(&(header, state, counters))
        .map_err(|e| SnapshotError::Encode(e.to_string()))?;
    let mut out = Vec::with_capacity(MAGIC.len() + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&body);
    Ok(seal(out))
}

/// The sealed file of a body.
fn seal(body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEAL.len() + 4 + body.len());
    out.extend_from_slice(SEAL);
    out.extend_from_slice(&CRC32C.checksum(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The body of a sealed file whose checksum matches.
fn unseal(bytes: &[u8], path: &Path) -> Result<Vec<u8>, SnapshotError> {
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
    Ok(body.to_vec())
}

/// Reads the snapshot in `dir`, if there is one.
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

/// Replaces the snapshot in `dir` with `bytes`, atomically: a crash leaves the old one
/// or the new one, never half of one.
pub fn write(dir: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    let path = dir.join(FILE);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| SnapshotError::Io { path: p, source }
    };
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_body_comes_back_only_unchanged() {
        let p = Path::new("snapshot.bin");
        let body = b"BLKSNP02 any body".to_vec();
        let sealed = seal(body.clone());
        assert_eq!(unseal(&sealed, p).unwrap(), body);
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

    /// A sealed snapshot of the previous layout (no trails in the engine) is refused by
    /// name, so the collector replays the log instead of misreading it.
    #[test]
    fn a_snapshot_of_the_previous_version_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE), seal(b"BLKSNP04 old body".to_vec())).unwrap();
        let e = load(d.path()).unwrap_err();
        assert!(matches!(e, SnapshotError::Format { .. }), "{e}");
        assert!(
            e.to_string()
                .ends_with("not a snapshot of this version of blackout")
        );
    }
}
