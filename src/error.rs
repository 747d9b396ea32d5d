//! The engine's errors. Each variant has a stable `code()` that reaches
//! JavaScript as `error.code`; the JS layer picks its exported class from it.

use rusqlite::ErrorCode;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input from the caller (an option, an argument, a filter).
    #[error("{0}")]
    Validation(String),
    /// No run with this id.
    #[error("run {0} not found")]
    NotFound(String),
    /// The run is in a state that does not allow the operation.
    #[error("{0}")]
    Conflict(String),
    /// The database stayed locked by another connection for the whole busy timeout.
    #[error("database is busy (locked by another connection): {0}")]
    Busy(String),
    /// The disk (or the file system quota) is full.
    #[error("database or disk is full: {0}")]
    DiskFull(String),
    /// The file or its directory cannot be written.
    #[error("database is read-only: {0}")]
    ReadOnly(String),
    /// The file is not a SQLite database, or it is damaged.
    #[error("database file is corrupt or not a SQLite database: {0}")]
    Corrupt(String),
    /// The file cannot be opened (missing directory, permissions, a directory path).
    #[error("cannot open database file: {0}")]
    CannotOpen(String),
    /// The database was written by a newer durably.
    #[error(
        "database schema version {found} is newer than this durably supports ({known}); upgrade durably"
    )]
    SchemaTooNew { found: i64, known: i64 },
    /// A value is longer than SQLite stores (`SQLITE_TOOBIG`, its length
    /// limit, about 1 GB by default); retrying cannot help.
    #[error("value too large to store: {0}")]
    TooBig(String),
    /// The database file (or its `-wal`) was deleted or replaced under this
    /// live instance: its writes would go to an unlinked file and be lost,
    /// so it refuses them. Reopen the instance.
    #[error("database file replaced under this instance, writes refused: {0}")]
    Replaced(String),
    /// The instance was closed.
    #[error("durably instance is closed")]
    Closed,
    /// Any other SQLite failure.
    #[error("sqlite error: {0}")]
    Sqlite(rusqlite::Error),
    /// A PostgreSQL failure that has no variant of its own (a constraint, a
    /// server error), with the server's message.
    #[cfg(feature = "postgres")]
    #[error("postgres error: {0}")]
    Postgres(String),
    /// The connection to PostgreSQL was lost: the server ended the session
    /// (a `FATAL`: terminated, shut down) or the connection closed. Whether a
    /// write in flight committed is unknown; a call that writes nothing (or
    /// only what it would write again the same way) can be made again.
    #[cfg(feature = "postgres")]
    #[error("postgres error: {0}")]
    ConnectionLost(String),
    /// Malformed data crossing into the engine (a bug in the JS layer, not user input).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Engine result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Stable code, exposed to JavaScript as `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Validation(_) => "VALIDATION_ERROR",
            Error::NotFound(_) => "NOT_FOUND",
            Error::Conflict(_) => "CONFLICT",
            Error::Busy(_) => "DB_BUSY",
            Error::DiskFull(_) => "DB_FULL",
            Error::ReadOnly(_) => "DB_READONLY",
            Error::Corrupt(_) => "DB_CORRUPT",
            Error::CannotOpen(_) => "DB_CANTOPEN",
            Error::SchemaTooNew { .. } => "SCHEMA_TOO_NEW",
            Error::TooBig(_) => "VALUE_TOO_LARGE",
            Error::Replaced(_) => "DB_REPLACED",
            Error::Closed => "CLOSED",
            Error::Sqlite(_) => "DB_ERROR",
            #[cfg(feature = "postgres")]
            Error::Postgres(_) => "DB_ERROR",
            #[cfg(feature = "postgres")]
            Error::ConnectionLost(_) => "DB_ERROR",
            Error::Internal(_) => "INTERNAL",
        }
    }

    /// True for a failure of the database as a whole (locked, full,
    /// read-only, damaged, replaced, closed, its connection lost): in a batch
    /// of writes, no single op is to blame, so the whole batch fails (and
    /// may be retried).
    pub fn fails_whole_batch(&self) -> bool {
        #[cfg(feature = "postgres")]
        if matches!(self, Error::ConnectionLost(_)) {
            return true;
        }
        matches!(
            self,
            Error::Busy(_)
                | Error::DiskFull(_)
                | Error::ReadOnly(_)
                | Error::Corrupt(_)
                | Error::CannotOpen(_)
                | Error::Replaced(_)
                | Error::Closed
                | Error::SchemaTooNew { .. }
        )
    }

    /// True when retrying later may succeed (lock contention).
    pub fn is_busy(&self) -> bool {
        matches!(self, Error::Busy(_))
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        let (code, extended) = match &e {
            rusqlite::Error::SqliteFailure(f, _) => (Some(f.code), f.extended_code),
            _ => (None, 0),
        };
        let msg = e.to_string();
        if extended == rusqlite::ffi::SQLITE_READONLY_DBMOVED {
            return Error::Replaced(msg);
        }
        match code {
            Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => Error::Busy(msg),
            Some(ErrorCode::DiskFull) => Error::DiskFull(msg),
            Some(ErrorCode::ReadOnly) => Error::ReadOnly(msg),
            Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::NotADatabase) => Error::Corrupt(msg),
            Some(ErrorCode::CannotOpen) => Error::CannotOpen(msg),
            Some(ErrorCode::TooBig) => Error::TooBig(msg),
            _ => Error::Sqlite(e),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Internal(format!("malformed engine message: {e}"))
    }
}
