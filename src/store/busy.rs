//! How a connection waits for another connection's lock.
//!
//! SQLite's own busy handler (the one `busy_timeout` installs) sleeps 1, 2,
//! 5, 10, 15, 20, 25, 25, 25, 50, 50, 100, 100… ms between attempts. A
//! durably write holds the lock for tens of microseconds, so with several
//! processes on one file a waiter sleeps through hundreds of free windows,
//! the next waiter sleeps longer still, and the lock is mostly idle while
//! everyone waits: 8 worker processes ran 30× slower than one (issue 13).
//! This handler polls at a pace matched to those lock hold times instead: a
//! few yields, then short sleeps growing to [`MAX_PAUSE`], until the
//! connection's timeout has passed.
//!
//! `sqlite3_busy_handler` takes a plain function, so the timeout and the
//! start of the current wait live in thread-locals, set by [`with_timeout`]
//! around each operation of the store (a connection is only ever used by
//! the thread holding its mutex).

use std::cell::Cell;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::error::Result;

/// Longest pause between two attempts.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
const MAX_PAUSE: Duration = Duration::from_micros(500);
/// The timeout used on a thread that never set one (the library default).
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(5000);

thread_local! {
    static TIMEOUT: Cell<Duration> = const { Cell::new(DEFAULT_TIMEOUT) };
    static STARTED: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Installs the handler on `conn` (replacing `busy_timeout`'s).
pub(crate) fn install(conn: &mut Connection) -> Result<()> {
    conn.busy_handler(Some(on_busy))?;
    Ok(())
}

/// Runs `f` with `timeout` as this thread's busy timeout, restoring the previous one after.
pub(crate) fn with_timeout<T>(timeout: Duration, f: impl FnOnce() -> T) -> T {
    struct Restore(Duration);
    impl Drop for Restore {
        fn drop(&mut self) {
            TIMEOUT.with(|t| t.set(self.0));
        }
    }
    let _restore = Restore(TIMEOUT.with(|t| t.replace(timeout)));
    f()
}

/// The pause before attempt `count + 1` of one wait.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
fn pause(count: i32) -> Option<Duration> {
    match count {
        0..=2 => None, // yield
        n => {
            let us = 20u64 << ((n - 3) / 4).min(5) as u32;
            Some(Duration::from_micros(us).min(MAX_PAUSE))
        }
    }
}

/// wasm32 (the browser build): one thread and one tab own the file, so a
/// lock is never held by someone who could release it while we wait.
#[cfg(target_arch = "wasm32")]
fn on_busy(_count: i32) -> bool {
    false
}

/// `true`: try again; `false`: give up with SQLITE_BUSY.
#[cfg(not(target_arch = "wasm32"))]
fn on_busy(count: i32) -> bool {
    let now = Instant::now();
    let started = if count == 0 {
        STARTED.with(|s| s.set(Some(now)));
        now
    } else {
        STARTED.with(|s| s.get()).unwrap_or(now)
    };
    let timeout = TIMEOUT.with(|t| t.get());
    if now.duration_since(started) >= timeout {
        return false;
    }
    match pause(count) {
        None => std::thread::yield_now(),
        Some(d) => std::thread::sleep(d),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_the_cap() {
        assert_eq!(pause(0), None);
        assert_eq!(pause(3), Some(Duration::from_micros(20)));
        assert_eq!(pause(7), Some(Duration::from_micros(40)));
        assert_eq!(pause(1000), Some(MAX_PAUSE));
    }

    #[test]
    fn gives_up_after_the_timeout() {
        with_timeout(Duration::from_millis(20), || {
            let t0 = Instant::now();
            let mut n = 0;
            while on_busy(n) {
                n += 1;
            }
            let waited = t0.elapsed();
            assert!(waited >= Duration::from_millis(20), "{waited:?}");
            // (How often it polled depends on the machine's load; the schedule is tested above.)
            assert!(waited < Duration::from_secs(2), "{waited:?}");
            assert!(n > 1, "polled only {n} times");
        });
        // Zero: give up at once.
        with_timeout(Duration::ZERO, || assert!(!on_busy(0)));
    }
}
