//! One process at a time per embedded collection.
//!
//! qdrant-edge locks its write-ahead log, and a second process that opens
//! the same shard fails deep inside it (`Can't init WAL: WouldBlock`). This
//! lock is taken first, on a file beside the shard
//! (`collections/<collection>.lock`), so the second opener gets
//! [`RetrievalError::Locked`] naming the store and the process that holds
//! it instead. The lock is an advisory OS file lock: it goes with the file
//! handle, so a process that dies leaves no stale lock behind, and the file
//! itself (holding the last holder's process id) may stay.

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use super::RetrievalError;

/// A held lock on a collection; released when dropped.
#[derive(Debug)]
pub struct StoreLock {
    /// Holding the handle is holding the lock.
    _file: File,
}

/// The lock file of the shard directory `shard` (`…/collections/docs` →
/// `…/collections/docs.lock`).
fn lock_path(shard: &Path) -> PathBuf {
    let mut name = shard.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    shard.with_file_name(name)
}

impl StoreLock {
    /// Takes the lock of the shard directory `shard` without waiting, or
    /// answers [`RetrievalError::Locked`] when another handle holds it
    /// (another process, or an earlier open in this one).
    pub fn acquire(shard: &Path) -> Result<StoreLock, RetrievalError> {
        let path = lock_path(shard);
        let io = |source| RetrievalError::Io { path: path.display().to_string(), source };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                let mut text = String::new();
                // The holder's pid is a courtesy for the message; an
                // unreadable file only leaves it out.
                let _ = file.read_to_string(&mut text);
                return Err(RetrievalError::Locked {
                    path: shard.display().to_string(),
                    holder: text.trim().parse().ok(),
                });
            }
            Err(fs4::TryLockError::Error(e)) => return Err(io(e)),
        }
        // Ours now: record who holds it, for the next opener's message.
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(StoreLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let shard = dir.path().join("collections/docs");
        let first = StoreLock::acquire(&shard).unwrap();
        assert!(dir.path().join("collections/docs.lock").is_file());
        match StoreLock::acquire(&shard) {
            Err(RetrievalError::Locked { path, holder }) => {
                assert_eq!(path, shard.display().to_string());
                assert_eq!(holder, Some(std::process::id()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        StoreLock::acquire(&shard).unwrap();
    }
}
