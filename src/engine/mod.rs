//! The engine of one durably instance, without napi: it owns the store and
//! the worker and offers typed operations (trigger, batch, flush, claim,
//! release, cancel, retry, delete, purge, retention…). The binding converts
//! arguments and results and delegates here; the JS layer executes job
//! functions and reports their writes.
//!
//! Generic over the [`Store`]: `Engine<SqliteStore>` (blocking, with the
//! non-waiting fast paths of [`SyncStore`] for the JS thread) and
//! `Engine<PgStore>` (async, cargo feature `postgres`) share every decision.
//! The decisions themselves are plain functions in [`policy`].
//!
//! Wake-ups: a non-waiting trigger that wrote wakes the claim loop itself; a
//! waiting one ([`Engine::trigger`]) leaves it to the caller, which wakes
//! ([`Engine::wake`]) once it announced the run, so the run's start cannot
//! overtake its announcement.

pub mod policy;

// The engine runs the worker's tokio tasks; the browser build (wasm32)
// drives the store from JS timers and uses only `policy`.
#[cfg(not(target_arch = "wasm32"))]
mod instance;
#[cfg(not(target_arch = "wasm32"))]
pub use instance::{Engine, EngineConfig};

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;
