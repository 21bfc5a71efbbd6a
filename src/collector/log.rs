//! The durable observation log: every accepted batch is appended as one JSON line and
//! synced to disk before the collector acknowledges it. On start the log is read back,
//! which restores the latest view, the set of seen batch ids and the detector's history.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use crate::observation::Batch;

pub struct ObservationLog {
    path: PathBuf,
    file: File,
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

impl ObservationLog {
    /// Opens (creating) `dir/observations.jsonl`, and returns the batches already in it.
    /// A torn last line (a crash in the middle of a write that was never acknowledged) is
    /// dropped and truncated away; corruption anywhere else is an error.
    pub fn open(dir: &Path) -> Result<(ObservationLog, Vec<Batch>), LogError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LogError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join("observations.jsonl");
        let mut batches = Vec::new();
        let mut good_len = 0u64;
        if path.exists() {
            let f = File::open(&path).map_err(io(&path))?;
            let mut reader = BufReader::new(f);
            let mut line = String::new();
            let mut n = 0;
            loop {
                line.clear();
                let read = reader.read_line(&mut line).map_err(io(&path))?;
                if read == 0 {
                    break;
                }
                n += 1;
                if !line.ends_with('\n') {
                    tracing::warn!(path = %path.display(), line = n, "dropping torn last record of the observation log");
                    break;
                }
                match serde_json::from_str::<Batch>(&line) {
                    Ok(b) => batches.push(b),
                    Err(e) => {
                        return Err(LogError::Corrupt {
                            path,
                            line: n,
                            message: e.to_string(),
                        });
                    }
                }
                good_len += read as u64;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        file.set_len(good_len).map_err(io(&path))?;
        Ok((ObservationLog { path, file }, batches))
    }

    /// Appends one batch and syncs it to disk.
    pub fn append(&mut self, batch: &Batch) -> Result<(), LogError> {
        let mut line = serde_json::to_vec(batch).expect("a batch always serialises");
        line.push(b'\n');
        let io = |source| LogError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(&line).map_err(io)?;
        self.file.sync_data().map_err(io)
    }
}
