#![deny(clippy::all)]
//! durably's native engine.
//!
//! ## Design
//!
//! - [`store`] owns every SQL statement. One writer connection per process
//!   (behind a mutex) does all writes inside `BEGIN IMMEDIATE` transactions;
//!   a reader connection serves queries; every write of an executing worker is
//!   guarded by the run's `lease_generation` (fencing).
//! - [`worker`] is the tokio side: the claim loop (woken by local triggers, a
//!   cheap `PRAGMA data_version` check for other processes, and the polling
//!   interval), heartbeats, stale recovery, job timeouts and the WAL
//!   checkpointer. It hands claimed runs to a callback and never touches JS.
//! - [`engine`] owns a store and its worker behind typed operations and holds
//!   every wake/claim/retention decision ([`engine::policy`]); it is generic
//!   over the [`store::Store`] interface (SQLite here, PostgreSQL in `pg`
//!   behind the `postgres` feature) and knows nothing of Node.
//! - `binding` is the only napi-aware code: it converts arguments, results and
//!   errors, wraps the JS dispatch function in a ThreadsafeFunction, and
//!   delegates every call to the engine.
//!
//! Step results are committed by the JS layer through one synchronous call
//! per batch (`flush`), so a batch of steps from several runs in flight shares
//! one transaction (group commit) and costs one boundary crossing.

// The engine runs the worker's tokio tasks; the browser build (wasm32) drives
// the store from JS timers instead (src/browser.rs, lib/browser/worker.mjs)
// and compiles only the engine's decisions (`engine::policy`).
pub mod engine;
pub mod error;
#[cfg(feature = "postgres")]
pub mod pg;
pub mod store;
// The tokio loop needs threads; the browser build (wasm32) drives claims and
// heartbeats from JS timers through `browser` instead.
#[cfg(not(target_arch = "wasm32"))]
pub mod worker;

#[cfg(all(feature = "browser", target_arch = "wasm32"))]
mod browser;

#[cfg(feature = "node")]
mod binding;
