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
const MAGIC: &[u8; 8] = b"BLKSNP03";

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
    Ok(out)
}

/// Reads the snapshot in `dir`, if there is one.
pub fn load(dir: &Path) -> Result<Option<Saved>, SnapshotError> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SnapshotError::Io { path, source }),
    };
    let Some(body) = bytes.strip_prefix(MAGIC.as_slice()) else {
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
