//! Noticing that the database file was replaced or deleted under a live
//! instance (issue 13). SQLite keeps writing through the file descriptors it
//! opened: after `mv other.db app.db`, or `rm app.db-wal`, every commit goes
//! to an unlinked file and is lost when the process exits, while other
//! processes see a different (or, without its log, damaged) database. So the
//! store records the identity (device, inode) of the file and of its `-wal`
//! when it opens them, the worker compares them on every heartbeat tick, and
//! from the first mismatch on every write fails with `DB_REPLACED`.

use std::os::unix::fs::MetadataExt;
use std::sync::{Mutex, OnceLock};

use crate::error::Error;

/// (device, inode) of a file, or `None` when it does not exist.
fn identity(path: &str) -> std::io::Result<Option<(u64, u64)>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some((m.dev(), m.ino()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The identities recorded at open, and the verdict once the file changed.
pub(crate) struct FileWatch {
    path: String,
    db: Option<(u64, u64)>,
    /// Recorded at open, or when the log first appears.
    wal: Mutex<Option<(u64, u64)>>,
    replaced: OnceLock<String>,
}

impl FileWatch {
    /// Records the file's identity now (`None`: nothing to watch, e.g. `:memory:`
    /// or a URI path).
    pub(crate) fn new(path: &str) -> Option<FileWatch> {
        if path == ":memory:" || path.starts_with("file:") {
            return None;
        }
        let db = identity(path).ok().flatten()?;
        let wal = identity(&format!("{path}-wal")).ok().flatten();
        Some(FileWatch {
            path: path.to_string(),
            db: Some(db),
            wal: Mutex::new(wal),
            replaced: OnceLock::new(),
        })
    }

    /// The error every write gets once the file was found replaced.
    pub(crate) fn refused(&self) -> Option<Error> {
        self.replaced.get().map(|m| Error::Replaced(m.clone()))
    }

    /// Compares the files with what was recorded; returns the error the first
    /// time a change is found (later calls return `None`, writes are refused).
    pub(crate) fn check(&self) -> Option<Error> {
        if self.replaced.get().is_some() {
            return None;
        }
        let why = self.what_changed()?;
        self.replaced.set(why).ok()?;
        self.refused()
    }

    fn what_changed(&self) -> Option<String> {
        let path = &self.path;
        match identity(path) {
            Ok(None) => return Some(format!("{path} was deleted")),
            Ok(now) if now != self.db => {
                return Some(format!("{path} was replaced by another file"))
            }
            _ => {}
        }
        let wal_path = format!("{path}-wal");
        let now = identity(&wal_path).ok()?;
        let mut wal = super::lock(&self.wal);
        match (*wal, now) {
            (Some(_), None) => Some(format!("{wal_path} was deleted")),
            (Some(a), Some(b)) if a != b => {
                Some(format!("{wal_path} was replaced by another file"))
            }
            (None, Some(b)) => {
                *wal = Some(b);
                None
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_a_deleted_log_and_a_replaced_file_once() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("a.db");
        let db = db.to_str().ok_or("path")?.to_string();
        std::fs::write(&db, b"x")?;
        std::fs::write(format!("{db}-wal"), b"x")?;
        let w = FileWatch::new(&db).ok_or("watch")?;
        assert!(w.check().is_none());
        std::fs::remove_file(format!("{db}-wal"))?;
        let e = w.check().ok_or("not noticed")?;
        assert_eq!(e.code(), "DB_REPLACED");
        assert!(e.to_string().contains("-wal was deleted"), "{e}");
        assert!(w.check().is_none(), "reported once");
        assert_eq!(w.refused().map(|e| e.code()), Some("DB_REPLACED"));

        let w = FileWatch::new(&db).ok_or("watch")?;
        std::fs::write(format!("{db}-new"), b"y")?;
        std::fs::rename(format!("{db}-new"), &db)?;
        let e = w.check().ok_or("not noticed")?;
        assert!(e.to_string().contains("replaced by another file"), "{e}");
        Ok(())
    }
}
