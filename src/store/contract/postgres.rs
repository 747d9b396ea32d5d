//! The contract suite on the PostgreSQL store (`cargo test --features
//! postgres store::contract::postgres`, with `DURABLY_TEST_PG_URL` set, e.g.
//! by `eval "$(scripts/test-pg.sh start)"`). Each case gets a fresh schema,
//! dropped afterwards. The suite is synchronous: the adapter drives the
//! async store on a current-thread runtime shared by both workers.
//!
//! The store's clock is the database's (`now()`), not the ticking clock of
//! the SQLite opener: every transaction starts later than the previous
//! one's, so a heartbeat still visibly moves forward.

use std::sync::Arc;

use tokio::runtime::Runtime;

use super::{CResult, Handle, Row, Snapshot, Workers};
use crate::pg::tests::{skip_reason, TestSchema};
use crate::pg::PgStore;

/// A handle driven by the shared runtime.
fn handle(store: PgStore, rt: Arc<Runtime>) -> Handle<PgStore> {
    Handle {
        store,
        drive: Arc::new(move |f| rt.block_on(f)),
        snap: |h| h.run_snapshot(),
    }
}

/// Two stores (two pools, two lease owners) on one fresh schema.
fn open_pair() -> CResult<Workers<Handle<PgStore>>> {
    let schema = TestSchema::new("contract").map_err(|e| -> Box<dyn std::error::Error> { e })?;
    let rt = schema.runtime();
    let a = rt.block_on(schema.store(2))?;
    let b = rt.block_on(schema.store(2))?;
    Ok(Workers {
        a: handle(a, rt.clone()),
        b: handle(b, rt),
        keep: Box::new(schema),
    })
}

impl Handle<PgStore> {
    fn run_snapshot(&self) -> CResult<Snapshot> {
        let mut out = None;
        (self.drive)(Box::pin(async {
            out = Some(snapshot(&self.store).await);
        }));
        out.ok_or("the driver did not complete the snapshot")?
    }
}

/// Every row of every table of the store's schema: integers as numbers,
/// times as fixed-width UTC text (microseconds, so text order is time
/// order), everything else (JSON included) as its text.
async fn snapshot(store: &PgStore) -> CResult<Snapshot> {
    let c = store.client().await?;
    let tables = c
        .query(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = $1 AND table_type = 'BASE TABLE' ORDER BY 1",
            &[&store.schema()],
        )
        .await?;
    let mut snap = Snapshot::default();
    for t in tables {
        let table: String = t.get(0);
        let cols = c
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
                &[&store.schema(), &table],
            )
            .await?;
        let cols: Vec<(String, String)> = cols.iter().map(|r| (r.get(0), r.get(1))).collect();
        let select = cols
            .iter()
            .map(|(name, ty)| {
                if ty.starts_with("timestamp") {
                    format!(
                        "to_char(\"{name}\" AT TIME ZONE 'UTC', \
                         'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
                    )
                } else {
                    format!("\"{name}\"::text")
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let rows = c
            .query(&format!("SELECT {select} FROM \"{table}\""), &[])
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let mut row = Row::new();
            for (i, (name, ty)) in cols.iter().enumerate() {
                let v: Option<String> = r.get(i);
                let v = match v {
                    None => serde_json::Value::Null,
                    Some(s) if ty == "bigint" || ty == "integer" => {
                        serde_json::Value::from(s.parse::<i64>()?)
                    }
                    Some(s) => serde_json::Value::String(s),
                };
                row.insert(name.clone(), v);
            }
            out.push(row);
        }
        snap.insert(&table, out);
    }
    Ok(snap)
}

super::store_contract_suite!(Handle<PgStore>, open_pair, skip_unless: skip_reason);
