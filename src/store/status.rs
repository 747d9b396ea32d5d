//! The run status vocabulary, written once. SQL literals spell the same
//! words (`status = 'running'`); a test checks they match these names.

use std::fmt;
use std::str::FromStr;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::error::Error;

/// Where a run is in its life: `pending` → `running` → one of the three
/// terminal statuses (`completed`, `failed`, `cancelled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// Waiting to be claimed.
    Pending,
    /// Claimed by a worker under a lease.
    Running,
    /// Finished with an output.
    Completed,
    /// Finished with an error.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl RunStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [RunStatus; 5] = [
        RunStatus::Pending,
        RunStatus::Running,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    /// The name as stored and as the JS layer sees it.
    pub const fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// Completed, failed or cancelled: the run will not execute again unless retried.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled
        )
    }

    /// The names of [`RunStatus::ALL`], comma-separated (for error messages).
    pub fn names() -> String {
        RunStatus::ALL.map(RunStatus::as_str).join(", ")
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        RunStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                Error::Validation(format!(
                    "unknown status '{s}' (expected one of {})",
                    RunStatus::names()
                ))
            })
    }
}

impl FromSql for RunStatus {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let s = value.as_str()?;
        s.parse()
            .map_err(|e: Error| FromSqlError::Other(Box::new(std::io::Error::other(e.to_string()))))
    }
}

impl ToSql for RunStatus {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() -> crate::error::Result<()> {
        for st in RunStatus::ALL {
            assert_eq!(st.as_str().parse::<RunStatus>()?, st);
            assert_eq!(st.to_string(), st.as_str());
        }
        let err = "done".parse::<RunStatus>().unwrap_err();
        assert_eq!(err.code(), "VALIDATION_ERROR");
        assert!(err.to_string().contains("'done'"));
        assert_eq!(
            RunStatus::ALL.map(RunStatus::is_terminal),
            [false, false, true, true, true]
        );
        Ok(())
    }

    /// Every status word a store SQL literal compares with is a [`RunStatus`]
    /// name (the SQL cannot use the enum, so this keeps the two in step).
    #[test]
    fn sql_literals_only_use_known_statuses() {
        let sources = [
            include_str!("claim.rs"),
            include_str!("flush.rs"),
            include_str!("manage.rs"),
            include_str!("query.rs"),
            include_str!("trigger.rs"),
        ];
        let mut seen = 0;
        for src in sources {
            for (i, _) in src.match_indices("status = '") {
                let rest = &src[i + "status = '".len()..];
                let word = &rest[..rest.find('\'').unwrap_or(0)];
                assert!(
                    word.parse::<RunStatus>().is_ok(),
                    "unknown status word '{word}' in a store SQL literal"
                );
                seen += 1;
            }
        }
        assert!(seen > 10, "found only {seen} status comparisons");
    }
}
