//! One collector per state directory. Two collectors appending to one log would both
//! acknowledge the same re-sent batch (each checks only what it applied itself), and a
//! restart would then count it twice; their snapshots would overwrite each other's. So
//! the collector holds an exclusive lock (`flock`) on `state_dir/lock` for as long as it
//! runs, with its pid written in the file for the operator. The kernel releases the lock
//! when the process ends, however it ends: a stale file never blocks a start.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The lock file in the state directory.
pub const FILE: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "state directory {dir} is in use by another collector (pid {holder}, see {path}): stop it, or give this collector its own state_dir"
    )]
    Held {
        dir: PathBuf,
        path: PathBuf,
        holder: String,
    },
}

/// The held lock; released when dropped.
#[derive(Debug)]
pub struct StateDirLock {
    _file: File,
}

impl StateDirLock {
    /// Takes the lock of `dir` (creating both), or says who holds it.
    pub fn acquire(dir: &Path) -> Result<StateDirLock, LockError> {
        let path = dir.join(FILE);
        let err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                // The holder writes its pid right after locking: a start that races it
                // may read nothing yet. The file is ours to read, not to trust: bounded.
                let _ = (&mut file).take(64).read_to_string(&mut text);
                let holder = match text.trim() {
                    t if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => t.to_string(),
                    _ => "unknown".to_string(),
                };
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    path,
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(err(e)),
        }
        file.set_len(0)
            .and_then(|_| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .and_then(|_| file.sync_all())
            .map_err(err)?;
        Ok(StateDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let d = tempfile::tempdir().unwrap();
        let first = StateDirLock::acquire(d.path()).unwrap();
        let e = StateDirLock::acquire(d.path()).unwrap_err().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(first);
        StateDirLock::acquire(d.path()).unwrap();
    }
}
