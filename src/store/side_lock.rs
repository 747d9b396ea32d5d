//! A queue for the writers that wait for SQLite's write lock (issue 13).
//!
//! SQLite hands its write lock over by polling: every waiting connection
//! retries on its own schedule (see `busy.rs`). With 8 worker processes on
//! one file, up to 8 pool threads polled at once, each poll a context switch.
//! So a waiting durably writer first takes an exclusive `flock` on a side
//! file, `<db>-durably-lock`, and only its holder polls SQLite's lock; the
//! others sleep in the kernel and are woken one at a time as it is released.
//! The holder lets it go as soon as its `BEGIN IMMEDIATE` succeeded (or gave
//! up), so the next waiter starts polling while the transaction runs.
//!
//! It only orders durably's waiting writers; SQLite's lock stays the ground
//! truth, so a process that does not take it (another program, an older
//! durably, an inline commit on the JS thread, which never waits) is exactly
//! as safe as before. Nothing may wait on it for long:
//! - a process that dies holding it loses it (the kernel drops `flock` locks
//!   with their last descriptor);
//! - a holder that stops (SIGSTOP, a debugger) must not hang anyone: the
//!   blocking `flock` runs on a helper thread, the writer waits for it at
//!   most [`MAX_WAIT`] and then polls SQLite's lock itself (the busy timeout
//!   still applies to that, so a stopped process that holds SQLite's lock
//!   gives `DB_BUSY` as before). While the helper is still blocked, later
//!   writes do not queue behind it: they poll directly, as without a side lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::lock;

/// The longest a writer waits for the side lock before it polls SQLite's
/// lock without it. A holder keeps it while it waits for SQLite's lock,
/// a few hundred microseconds a writer ahead of it in the queue.
const MAX_WAIT: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Granted,
    Abandoned,
}

struct Request {
    state: Mutex<State>,
    done: Condvar,
}

/// The side lock of one store (its writer connection).
pub(crate) struct SideLock {
    file: Arc<File>,
    /// `None` once dropped (which ends the helper).
    requests: Mutex<Option<Sender<Arc<Request>>>>,
    /// The helper thread is blocked on a request (granted or abandoned) it has
    /// not finished.
    helper_busy: Arc<AtomicBool>,
    helper: Option<std::thread::JoinHandle<()>>,
    /// [`MAX_WAIT`] (longer in tests that must not depend on the machine's load).
    max_wait: Duration,
}

impl Drop for SideLock {
    /// Ends the helper thread and waits for it, so the side file is closed
    /// when the store is (unless the helper is still blocked on a holder that
    /// outlasted a wait: it then closes the file once it gets the lock).
    fn drop(&mut self) {
        lock(&self.requests).take();
        if let Some(h) = self.helper.take() {
            if !self.helper_busy.load(Ordering::SeqCst) {
                let _ = h.join();
            }
        }
    }
}

/// The side lock, held until dropped.
pub(crate) struct Held<'a>(&'a File);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl SideLock {
    /// Opens (creating) `<db>-durably-lock` next to the database and starts
    /// its helper thread. `None` when either is impossible (then writers
    /// simply poll SQLite's lock).
    pub(crate) fn open(db_path: &str) -> Option<SideLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(format!("{db_path}-durably-lock"))
            .ok()?;
        let file = Arc::new(file);
        let (tx, rx) = channel::<Arc<Request>>();
        let helper_busy = Arc::new(AtomicBool::new(false));
        let (f, busy) = (file.clone(), helper_busy.clone());
        let helper = std::thread::Builder::new()
            .name("durably-side-lock".into())
            .spawn(move || {
                // Ends when the store is dropped (the sender with it).
                for req in rx {
                    let locked = f.lock().is_ok();
                    let mut state = lock(&req.state);
                    if locked && *state == State::Waiting {
                        *state = State::Granted;
                    } else {
                        // Its writer went on without it: let the next one have it.
                        if locked {
                            let _ = f.unlock();
                        }
                        *state = State::Abandoned;
                    }
                    // Before its writer can see the answer: a store dropped
                    // right after a grant then waits for this thread to end.
                    busy.store(false, Ordering::SeqCst);
                    drop(state);
                    req.done.notify_all();
                }
            })
            .ok()?;
        Some(SideLock {
            file,
            requests: Mutex::new(Some(tx)),
            helper_busy,
            helper: Some(helper),
            max_wait: MAX_WAIT,
        })
    }

    /// Takes the side lock, waiting at most `wait` (capped at [`MAX_WAIT`]).
    /// `None`: not taken; the caller polls SQLite's lock without it.
    pub(crate) fn acquire(&self, wait: Duration) -> Option<Held<'_>> {
        if self.helper_busy.load(Ordering::SeqCst) {
            // Still blocked on a holder that outlasted an earlier wait.
            return None;
        }
        match self.file.try_lock() {
            Ok(()) => return Some(Held(&self.file)),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(_)) => return None,
        }
        let wait = wait.min(self.max_wait);
        if wait.is_zero() {
            return None;
        }
        let req = Arc::new(Request {
            state: Mutex::new(State::Waiting),
            done: Condvar::new(),
        });
        self.helper_busy.store(true, Ordering::SeqCst);
        let sent = lock(&self.requests)
            .as_ref()
            .is_some_and(|tx| tx.send(req.clone()).is_ok());
        if !sent {
            self.helper_busy.store(false, Ordering::SeqCst);
            return None;
        }
        let state = lock(&req.state);
        let (mut state, _) = req
            .done
            .wait_timeout_while(state, wait, |s| *s == State::Waiting)
            .unwrap_or_else(|p| p.into_inner());
        match *state {
            State::Granted => Some(Held(&self.file)),
            _ => {
                // The helper releases it when it gets it.
                *state = State::Abandoned;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A side lock whose writers wait up to 5 s, so a test of the queue does
    /// not depend on how fast a loaded machine schedules the releasing thread.
    fn patient(path: &str) -> SideLock {
        let mut side = SideLock::open(path).unwrap();
        side.max_wait = Duration::from_secs(5);
        side
    }

    /// A database path in a fresh directory (kept while the guard lives).
    fn temp_db() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db").to_string_lossy().into_owned();
        (dir, path)
    }

    /// The side file opened as another process would.
    fn side_file(path: &str) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("{path}-durably-lock"))
            .unwrap()
    }

    fn other_holder(path: &str) -> File {
        let f = side_file(path);
        f.lock().unwrap();
        f
    }

    #[test]
    fn taken_at_once_when_free_and_released_when_dropped() {
        let (_dir, path) = temp_db();
        let side = SideLock::open(&path).unwrap();
        let held = side.acquire(Duration::ZERO).expect("free");
        let probe = side_file(&path);
        assert!(matches!(probe.try_lock(), Err(TryLockError::WouldBlock)));
        drop(held);
        probe.try_lock().expect("released");
    }

    #[test]
    fn waits_in_the_queue_until_the_holder_releases() {
        let (_dir, path) = temp_db();
        let side = patient(&path);
        let holder = other_holder(&path);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            drop(holder);
        });
        let t0 = Instant::now();
        assert!(side.acquire(Duration::from_secs(5)).is_some());
        assert!(t0.elapsed() >= Duration::from_millis(4));
        t.join().unwrap();
    }

    /// A holder that never lets go (a stopped process) costs one bounded wait;
    /// later writers do not queue behind it, and once it is gone the lock
    /// works again and is not left held by the abandoned request.
    #[test]
    fn a_holder_that_never_lets_go_costs_one_bounded_wait() {
        let (_dir, path) = temp_db();
        let side = SideLock::open(&path).unwrap();
        let holder = other_holder(&path);
        let t0 = Instant::now();
        assert!(side.acquire(Duration::from_secs(60)).is_none());
        let waited = t0.elapsed();
        assert!(waited >= MAX_WAIT, "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        // The helper is still blocked: the next writer does not wait at all.
        let t1 = Instant::now();
        assert!(side.acquire(Duration::from_secs(60)).is_none());
        assert!(t1.elapsed() < MAX_WAIT, "{:?}", t1.elapsed());
        drop(holder);
        // The helper gets the lock for the abandoned request and lets it go:
        // free for another process, not kept by this one.
        let t2 = Instant::now();
        while side.helper_busy.load(Ordering::SeqCst) {
            assert!(
                t2.elapsed() < Duration::from_secs(5),
                "helper still blocked"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let probe = side_file(&path);
        probe.try_lock().expect("not left held");
        probe.unlock().unwrap();
        // And this store takes it again at once.
        assert!(side.acquire(Duration::ZERO).is_some());
    }

    /// Dropped (the store closed), it ends its helper and closes the side file.
    #[test]
    fn dropped_it_closes_the_side_file() {
        let (_dir, path) = temp_db();
        let side_path = format!("{path}-durably-lock");
        let open_fds = || {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|t| t.to_string_lossy() == side_path)
                .count()
        };
        let side = patient(&path);
        // One wait through the helper, so it has run.
        let holder = other_holder(&path);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(2));
            drop(holder);
        });
        assert!(side.acquire(Duration::from_secs(5)).is_some());
        t.join().unwrap();
        assert_eq!(open_fds(), 1);
        drop(side);
        assert_eq!(open_fds(), 0);
    }
}
