//! The browser build's only wasm-bindgen code: the store's operations for
//! the dedicated Worker that `durably/browser` starts (lib/browser/worker.mjs).
//! There is no tokio loop on wasm32: the worker's JS timers call `claim`,
//! `heartbeat` and `recoverStale` here, the page's executions call `flush`.
//! Values cross as the same JSON text (and tagged flush ops) as in Node.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasm_bindgen::prelude::*;

use crate::engine::policy;
use crate::error::Error as EngineError;
use crate::store::{
    iso, json, Clock, FlushOutcome, HeartbeatOutcome, PurgeOptions, RunFilter, SqliteStore,
    StoreOptions, Synchronous, TriggerItem, TriggerOutcome,
};

/// A JS `Error` with the engine's `code` (lib/errors.js maps it to a class).
fn to_js(e: EngineError) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    let _ = js_sys::Reflect::set(&err, &"code".into(), &e.code().into());
    err.into()
}

/// `Date.now()` as the store's clock (std has no clock on wasm32-unknown-unknown).
fn js_clock() -> Clock {
    Arc::new(|| UNIX_EPOCH + Duration::from_micros((js_sys::Date::now() * 1000.0) as u64))
}

/// Installs the OPFS "sync access handle pool" VFS as SQLite's default, in
/// the OPFS directory `directory`. Needs a dedicated Worker in a secure context.
#[wasm_bindgen(js_name = installOpfs)]
pub async fn install_opfs(directory: String) -> Result<(), JsValue> {
    use sqlite_wasm_vfs::sahpool::{install, OpfsSAHPoolCfgBuilder};
    let cfg = OpfsSAHPoolCfgBuilder::new().directory(&directory).build();
    install::<sqlite_wasm_rs::WasmOsCallback>(&cfg, true)
        .await
        .map(|_| ())
        .map_err(|e| {
            to_js(EngineError::CannotOpen(format!(
                "cannot use OPFS directory '{directory}': {e}"
            )))
        })
}

/// The newest schema version this library knows.
#[wasm_bindgen(js_name = librarySchemaVersion)]
pub fn library_schema_version() -> f64 {
    crate::store::SCHEMA_VERSION as f64
}

/// Free run slots (the engine's policy): `max` minus the runs in flight and
/// the slots reserved by claims under way.
#[wasm_bindgen(js_name = freeSlots)]
pub fn free_slots(max: u32, inflight: u32, reserved: u32) -> u32 {
    policy::free_slots(max as usize, inflight as usize, reserved as usize) as u32
}

/// Whether the claim timer claims on this turn (the engine's policy): woken
/// by a trigger or a freed slot, or the poll is due, and a slot is free.
#[wasm_bindgen(js_name = shouldClaim)]
pub fn should_claim(woken: bool, poll_due: bool, free: u32) -> bool {
    // No other process writes an OPFS database this tab holds the Web Lock of:
    // there is no cross-process change to notice.
    policy::should_claim(woken, false, poll_due, free as usize)
}

/// One open database (on the VFS installed by `installOpfs`).
#[wasm_bindgen]
pub struct BrowserStore {
    store: SqliteStore,
    jobs: RefCell<Vec<String>>,
}

fn outcome(o: &TriggerOutcome) -> String {
    match o {
        TriggerOutcome::Created { id, created_at } => format!("c{id}{created_at}"),
        TriggerOutcome::Idempotent(json) => format!("i{json}"),
        TriggerOutcome::Coalesced(json) => format!("k{json}"),
    }
}

/// Statuses, then (when an op failed) `\n[]\n[[index, code, message], …]`,
/// as lib/protocol.js `decodeFlush` reads it (no runs are claimed by a flush here).
fn encode_flush(out: FlushOutcome<()>) -> String {
    if out.errors.is_empty() {
        return out.statuses;
    }
    let errors: Vec<(usize, &str, String)> = out
        .errors
        .iter()
        .map(|e| (e.index, e.error.code(), e.error.to_string()))
        .collect();
    let errors = serde_json::to_string(&errors).unwrap_or_else(|_| "[]".into());
    format!("{}\n[]\n{errors}", out.statuses)
}

fn leases(text: &str) -> Result<Vec<(String, i64)>, JsValue> {
    serde_json::from_str(text).map_err(|e| {
        to_js(EngineError::Validation(format!(
            "leases must be [[id, generation], …]: {e}"
        )))
    })
}

#[wasm_bindgen]
impl BrowserStore {
    /// Opens (creating) `path` on the installed VFS. `synchronous`: `normal` or `full`.
    #[wasm_bindgen(constructor)]
    pub fn new(path: String, synchronous: String) -> Result<BrowserStore, JsValue> {
        let synchronous = match synchronous.as_str() {
            "full" => Synchronous::Full,
            _ => Synchronous::Normal,
        };
        let store = SqliteStore::open_with_clock(
            StoreOptions {
                path,
                synchronous,
                busy_timeout: Duration::ZERO,
            },
            js_clock(),
        )
        .map_err(to_js)?;
        Ok(BrowserStore {
            store,
            jobs: RefCell::new(Vec::new()),
        })
    }

    /// Creates or upgrades the schema; returns the version.
    pub fn migrate(&self) -> Result<f64, JsValue> {
        self.store.migrate().map(|v| v as f64).map_err(to_js)
    }

    /// The job names this instance claims and recovers.
    #[wasm_bindgen(js_name = setJobs)]
    pub fn set_jobs(&self, names: Vec<String>) {
        *self.jobs.borrow_mut() = names;
    }

    /// This instance's lease owner id.
    pub fn owner(&self) -> String {
        self.store.owner().to_string()
    }

    /// Creates a run: `c<id><createdAt>`, `i<run json>` or `k<run json>`.
    pub fn trigger(
        &self,
        job: String,
        input: String,
        idempotency_key: Option<String>,
        concurrency_key: Option<String>,
        coalesce: bool,
        labels: String,
    ) -> Result<String, JsValue> {
        let item = TriggerItem {
            job_name: &job,
            input: &input,
            idempotency_key: idempotency_key.as_deref(),
            concurrency_key: concurrency_key.as_deref(),
            coalesce,
            labels: &labels,
        };
        self.store
            .trigger(&item)
            .map(|o| outcome(&o))
            .map_err(to_js)
    }

    /// Applies a batch of tagged flush ops (lib/protocol.js) in one commit.
    pub fn flush(&self, ops: String) -> Result<String, JsValue> {
        self.store.flush(&ops).map(encode_flush).map_err(to_js)
    }

    /// Claims up to `limit` pending runs of the registered jobs: JSON array of
    /// run records with their completed `steps`.
    pub fn claim(&self, limit: u32) -> Result<String, JsValue> {
        let jobs = self.jobs.borrow();
        if jobs.is_empty() || limit == 0 {
            return Ok("[]".into());
        }
        let runs = self.store.claim(&jobs, limit as usize).map_err(to_js)?;
        Ok(json::array(runs.into_iter().map(|r| r.json)))
    }

    /// Fails a run in flight for its job's timeout (`timeoutMs`), fenced by
    /// its lease generation, with the engine's message (as the native worker
    /// does); returns what the page is told: `timeout` (failed here),
    /// `cancelled` or `lost` (the run was no longer ours).
    #[wasm_bindgen(js_name = failTimedOut)]
    pub fn fail_timed_out(
        &self,
        run: String,
        generation: f64,
        timeout_ms: u32,
    ) -> Result<String, JsValue> {
        let msg = policy::timeout_message(Duration::from_millis(timeout_ms as u64));
        let status = self
            .store
            .fail_owned(&run, generation as i64, &msg)
            .map_err(to_js)?;
        Ok(policy::timeout_outcome(status).as_str().into())
    }

    /// Renews the leases `[[id, generation], …]`; returns the runs no longer
    /// ours as `[[id, "cancelled" | "lost"], …]`.
    pub fn heartbeat(&self, runs: String) -> Result<String, JsValue> {
        let runs = leases(&runs)?;
        let lost = self.store.heartbeat(&runs).map_err(to_js)?;
        let out: Vec<(String, &str)> = lost
            .into_iter()
            .map(|o| match o {
                HeartbeatOutcome::Cancelled(id) => (id, "cancelled"),
                HeartbeatOutcome::Lost(id) => (id, "lost"),
            })
            .collect();
        Ok(serde_json::to_string(&out).unwrap_or_else(|_| "[]".into()))
    }

    /// Returns `running` runs of the registered jobs whose heartbeat is older
    /// than `staleMs` to pending, except the leases in `keep`
    /// (`[[id, generation], …]`, the runs executing here); returns how many.
    /// `staleMs` 0 recovers every running run (the tab that holds the
    /// database's Web Lock knows no one else executes them).
    #[wasm_bindgen(js_name = recoverStale)]
    pub fn recover_stale(&self, stale_ms: u32, keep: String) -> Result<u32, JsValue> {
        let keep = leases(&keep)?;
        let jobs = self.jobs.borrow();
        let now = self.store.now_time();
        let cutoff = if stale_ms == 0 {
            now + Duration::from_millis(1)
        } else {
            now.checked_sub(Duration::from_millis(stale_ms as u64))
                .unwrap_or(SystemTime::UNIX_EPOCH)
        };
        self.store
            .recover_stale_except(&jobs, &iso(cutoff), &keep)
            .map(|n| n as u32)
            .map_err(to_js)
    }

    /// `PRAGMA integrity_check`: `"ok"`, or SQLite's findings one per line
    /// (for checking a database after a crash of its tab).
    #[wasm_bindgen(js_name = integrityCheck)]
    pub fn integrity_check(&self) -> Result<String, JsValue> {
        self.store
            .read(|c| {
                let mut stmt = c.prepare("PRAGMA integrity_check")?;
                let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?.join("\n"))
            })
            .map_err(to_js)
    }

    /// One run as JSON, or undefined.
    #[wasm_bindgen(js_name = getRun)]
    pub fn get_run(&self, id: String) -> Result<Option<String>, JsValue> {
        self.store.get_run(&id).map_err(to_js)
    }

    /// Runs matching a JSON filter, newest first.
    #[wasm_bindgen(js_name = getRuns)]
    pub fn get_runs(&self, filter: String) -> Result<String, JsValue> {
        let filter: RunFilter = serde_json::from_str(&filter)
            .map_err(|e| to_js(EngineError::Validation(format!("invalid run filter: {e}"))))?;
        self.store.get_runs(&filter).map_err(to_js)
    }

    /// A run's steps (JSON array).
    #[wasm_bindgen(js_name = getSteps)]
    pub fn get_steps(&self, run_id: String) -> Result<String, JsValue> {
        self.store.get_steps(&run_id).map_err(to_js)
    }

    /// A run's persisted logs (JSON array).
    #[wasm_bindgen(js_name = getLogs)]
    pub fn get_logs(&self, run_id: String) -> Result<String, JsValue> {
        self.store.get_logs(&run_id).map_err(to_js)
    }

    /// Run counts per job and status.
    #[wasm_bindgen(js_name = runCounts)]
    pub fn run_counts(&self) -> Result<String, JsValue> {
        self.store.run_counts().map_err(to_js)
    }

    /// Cancels a run: `{"previous": status, "run": run}`.
    pub fn cancel(&self, id: String) -> Result<String, JsValue> {
        let (prev, run) = self.store.cancel(&id).map_err(to_js)?;
        let mut o = json::JsonObject::new();
        o.str("previous", Some(prev.as_str()))
            .raw("run", Some(&run));
        Ok(o.finish())
    }

    /// Failed/cancelled → pending, same run; returns the run.
    pub fn retry(&self, id: String) -> Result<String, JsValue> {
        self.store.retry(&id).map_err(to_js)
    }

    /// Deletes a terminal run; returns it.
    #[wasm_bindgen(js_name = deleteRun)]
    pub fn delete_run(&self, id: String) -> Result<String, JsValue> {
        self.store.delete_run(&id).map_err(to_js)
    }

    /// Deletes up to `limit` terminal runs finished before `olderThan` (ISO).
    pub fn purge(&self, older_than: String, limit: u32) -> Result<u32, JsValue> {
        self.store
            .purge(&PurgeOptions {
                older_than,
                limit: limit as i64,
            })
            .map(|n| n as u32)
            .map_err(to_js)
    }
}
