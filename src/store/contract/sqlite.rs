//! The contract suite on the SQLite [`SqliteStore`]: its opener, its
//! snapshot, and the suite itself (`cargo test --lib store::contract`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::{CResult, Driver, Handle, Row, Snapshot, Workers};
use crate::store::{poll_once, Clock, SqliteStore, StoreOptions};

/// A clock that moves 1 ms forward on every reading, from the real time.
fn ticking_clock() -> Clock {
    let start = SystemTime::now();
    let ticks = Arc::new(AtomicU64::new(0));
    Arc::new(move || start + Duration::from_millis(ticks.fetch_add(1, Ordering::SeqCst)))
}

/// A blocking store's futures complete on their first poll.
fn poll_once_driver() -> Driver {
    Arc::new(|f| {
        let _ = poll_once(async {
            f.await;
            Ok(())
        });
    })
}

fn handle(store: SqliteStore) -> Handle<SqliteStore> {
    Handle {
        store,
        drive: poll_once_driver(),
        snap: snapshot,
    }
}

/// Two stores (two connections pairs, two lease owners) on one fresh file.
pub(crate) fn open_pair() -> CResult<Workers<Handle<SqliteStore>>> {
    let dir = tempfile::tempdir()?;
    let path = dir
        .path()
        .join("contract.db")
        .to_string_lossy()
        .into_owned();
    let clock = ticking_clock();
    let a = SqliteStore::open_with_clock(StoreOptions::new(path.clone()), clock.clone())?;
    a.migrate()?;
    let b = SqliteStore::open_with_clock(StoreOptions::new(path), clock)?;
    Ok(Workers {
        a: handle(a),
        b: handle(b),
        keep: Box::new(dir),
    })
}

/// Every row of every table, read on the store's reader connection.
fn snapshot(h: &Handle<SqliteStore>) -> CResult<Snapshot> {
    Ok(h.store.read(|c| {
        let tables: Vec<String> = c
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' ORDER BY name",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut snap = Snapshot::default();
        for table in tables {
            let mut st = c.prepare(&format!("SELECT * FROM \"{table}\""))?;
            let cols: Vec<String> = st.column_names().map(|s| s.to_string()).collect();
            let rows = st
                .query_map([], |r| {
                    let mut row = Row::new();
                    for (i, col) in cols.iter().enumerate() {
                        row.insert(col.clone(), value(r.get_ref(i)?));
                    }
                    Ok(row)
                })?
                .collect::<rusqlite::Result<Vec<Row>>>()?;
            snap.insert(&table, rows);
        }
        Ok(snap)
    })?)
}

fn value(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => json!(i),
        ValueRef::Real(f) => json!(f),
        ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::String(format!("blob:{b:?}")),
    }
}

super::store_contract_suite!(Handle<SqliteStore>, open_pair);
