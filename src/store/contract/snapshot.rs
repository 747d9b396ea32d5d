//! Every row of every table, to prove a refused write changed nothing.

use std::collections::BTreeMap;

/// One row: column name → value (text as a string, integers as numbers,
/// NULL as null).
pub(crate) type Row = BTreeMap<String, serde_json::Value>;

/// The full contents of a database: table name → its rows, in a stable order.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Snapshot {
    /// Table name → rows, sorted by their JSON text.
    pub tables: BTreeMap<String, Vec<Row>>,
}

impl Snapshot {
    /// Adds a table's rows (sorted here, so backends need not order them).
    pub fn insert(&mut self, table: &str, mut rows: Vec<Row>) {
        rows.sort_by_cached_key(|r| serde_json::to_string(r).unwrap_or_default());
        self.tables.insert(table.to_string(), rows);
    }

    /// The rows of `table` (none if it does not exist).
    pub fn rows(&self, table: &str) -> &[Row] {
        self.tables.get(table).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The `runs` row of `id`.
    pub fn run(&self, id: &str) -> Option<&Row> {
        self.rows("runs")
            .iter()
            .find(|r| col_text(r, "id") == Some(id))
    }

    /// The rows of `table` (`steps`, `logs`) that belong to run `id`.
    pub fn of_run(&self, table: &str, id: &str) -> Vec<&Row> {
        self.rows(table)
            .iter()
            .filter(|r| col_text(r, "run_id") == Some(id))
            .collect()
    }

    /// The same snapshot without anything that belongs to run `id`.
    pub fn without_run(&self, id: &str) -> Snapshot {
        let mut out = Snapshot::default();
        for (table, rows) in &self.tables {
            let keep = rows
                .iter()
                .filter(|r| {
                    let own = if table == "runs" { "id" } else { "run_id" };
                    col_text(r, own) != Some(id)
                })
                .cloned()
                .collect();
            out.tables.insert(table.clone(), keep);
        }
        out
    }

    /// Rows only in `self` (`-`) and only in `after` (`+`), one line each.
    pub fn diff(&self, after: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        let names: std::collections::BTreeSet<&String> =
            self.tables.keys().chain(after.tables.keys()).collect();
        for t in names {
            let (old, new) = (self.rows(t), after.rows(t));
            for r in old.iter().filter(|r| !new.contains(r)) {
                out.push(format!(
                    "- {t} {}",
                    serde_json::to_string(r).unwrap_or_default()
                ));
            }
            for r in new.iter().filter(|r| !old.contains(r)) {
                out.push(format!(
                    "+ {t} {}",
                    serde_json::to_string(r).unwrap_or_default()
                ));
            }
        }
        out
    }
}

/// A text column's value.
pub(crate) fn col_text<'a>(row: &'a Row, col: &str) -> Option<&'a str> {
    row.get(col).and_then(|v| v.as_str())
}

/// A JSON text column, parsed (null if NULL or not JSON).
pub(crate) fn col_json(row: &Row, col: &str) -> serde_json::Value {
    col_text(row, col)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(serde_json::Value::Null)
}
