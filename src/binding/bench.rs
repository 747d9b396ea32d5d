//! Benchmark support for `npm run bench` (not part of the public API).

use napi_derive::napi;

use super::convert::{to_js, JsCode};
use crate::store::ceiling::ceiling;
use crate::store::Synchronous;

/// The `ceiling` scenario: `runs * stepsPerRun` step writes (run update +
/// step insert, one transaction each) on a fresh store at `path` with the
/// library's pragmas (`synchronous` is `normal` or `full`); returns writes/s.
/// Blocks the calling thread for the whole measurement.
#[napi(catch_unwind)]
pub fn bench_ceiling(
    path: String,
    synchronous: String,
    runs: u32,
    steps_per_run: u32,
) -> napi::Result<f64, JsCode> {
    let sync = match synchronous.as_str() {
        "full" => Synchronous::Full,
        _ => Synchronous::Normal,
    };
    ceiling(&path, sync, runs as usize, steps_per_run as usize)
        .map(|c| c.per_second())
        .map_err(to_js)
}
