//! The worker's background tasks. Database calls run on tokio's blocking
//! pool so the async threads stay free for timers and wake-ups.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{LostReason, Shared};
use crate::error::{Error, Result};
use crate::store::{iso, lock};

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Error::Internal(format!("worker task failed: {e}"))))
}

/// Sleeps for `d`; returns early, with true, once the worker is closed.
/// (The notification is armed before the flag is read, so a close between
/// the two is never missed.)
async fn sleep_unless_closed(sh: &Shared, d: Duration) -> bool {
    let closed = sh.closed_notify.notified();
    tokio::pin!(closed);
    closed.as_mut().enable();
    if sh.closed.load(Ordering::SeqCst) {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = closed => {}
    }
    sh.closed.load(Ordering::SeqCst)
}

/// The claim loop: runs while `running`; exits when stopped.
pub(super) async fn claim_loop(sh: Arc<Shared>) {
    loop {
        claim_while_running(&sh).await;
        sh.loop_alive.store(false, Ordering::SeqCst);
        // A start() that raced with this exit saw loop_alive still true and
        // did not spawn a loop: carry on in its place.
        if sh.running.load(Ordering::SeqCst)
            && !sh.closed.load(Ordering::SeqCst)
            && !sh.loop_alive.swap(true, Ordering::SeqCst)
        {
            continue;
        }
        return;
    }
}

async fn claim_while_running(sh: &Arc<Shared>) {
    let watch = match sh.store.side_connection() {
        Ok(c) => c.map(|c| Arc::new(std::sync::Mutex::new(c))),
        Err(e) => {
            sh.sink.error("watch", &e);
            None
        }
    };
    let mut last_version: Option<i64> = None;
    let mut last_poll: Option<Instant> = None;
    let mut woken = true;
    while sh.running.load(Ordering::SeqCst) && !sh.closed.load(Ordering::SeqCst) {
        if sh.store.is_replaced() {
            // The heartbeat task reported it; claims would only fail again.
            tokio::select! {
                _ = tokio::time::sleep(sh.cfg.polling_interval) => {}
                _ = sh.closed_notify.notified() => {}
                _ = sh.wake.notified() => {}
            }
            continue;
        }
        let poll_due = last_poll.is_none_or(|t| t.elapsed() >= sh.cfg.polling_interval);
        if poll_due {
            last_poll = Some(Instant::now());
            let sh2 = sh.clone();
            if let Err(e) = blocking(move || recover_stale(&sh2)).await {
                sh.sink.error("recover", &e);
            }
        }
        let mut changed = false;
        if let Some(w) = &watch {
            let w = w.clone();
            let version = blocking(move || {
                Ok(lock(&w).query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0))?)
            })
            .await;
            match version {
                Ok(v) => {
                    changed = last_version != Some(v);
                    last_version = Some(v);
                }
                Err(e) => sh.sink.error("watch", &e),
            }
        }
        if (woken || changed || poll_due) && sh.free_slots() > 0 {
            let sh2 = sh.clone();
            let w = watch.clone();
            let claimed = blocking(move || {
                let jobs = sh2.job_set();
                let pending = match &w {
                    Some(w) => sh2.store.has_pending(Some(&lock(w)), &jobs.names)?,
                    None => true,
                };
                if !pending {
                    return Ok(Vec::new());
                }
                sh2.claim(usize::MAX)
            })
            .await;
            match claimed {
                Ok(runs) if !runs.is_empty() => {
                    sh.sink.runs(runs);
                    // There may be more: go round again at once.
                    woken = true;
                    continue;
                }
                Ok(_) => {}
                Err(e) => sh.sink.error("claim", &e),
            }
        }
        let closed = sh.closed_notify.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        if sh.closed.load(Ordering::SeqCst) {
            break;
        }
        woken = tokio::select! {
            _ = sh.wake.notified() => true,
            _ = tokio::time::sleep(sh.cfg.check_interval) => false,
            _ = closed => false,
        };
    }
}

pub(super) fn recover_stale(sh: &Shared) -> Result<usize> {
    let jobs = sh.job_set();
    if jobs.names.is_empty() {
        return Ok(0);
    }
    let cutoff = sh
        .store
        .now_time()
        .checked_sub(sh.cfg.stale_threshold)
        .unwrap_or(std::time::UNIX_EPOCH);
    let cutoff = iso(cutoff);
    // Read first so an idle poll never takes the write lock.
    if !sh.store.has_stale(None, &jobs.names, &cutoff)? {
        return Ok(0);
    }
    // Never reclaim a run this worker is executing: it is alive, only its
    // heartbeat is late (the heartbeat task renews it at its next tick).
    let mine: Vec<(String, i64)> = lock(&sh.inflight)
        .iter()
        .filter(|(_, f)| !f.gone)
        .map(|(id, f)| (id.clone(), f.generation))
        .collect();
    sh.store.recover_stale_except(&jobs.names, &cutoff, &mine)
}

/// Heartbeats for runs in flight, and job timeouts.
pub(super) async fn heartbeats(sh: Arc<Shared>) {
    let tick = sh.cfg.heartbeat_interval.min(Duration::from_millis(250));
    let mut last_beat = Instant::now();
    loop {
        if sleep_unless_closed(&sh, tick).await {
            return;
        }
        if let Some(e) = sh.store.check_file() {
            sh.sink.error("file", &e);
        }
        if sh.store.is_replaced() {
            // Every write would fail: no heartbeats, timeouts or claims to report again and again.
            continue;
        }
        let sh2 = sh.clone();
        if let Err(e) = blocking(move || enforce_timeouts(&sh2)).await {
            sh.sink.error("timeout", &e);
        }
        if last_beat.elapsed() < sh.cfg.heartbeat_interval {
            continue;
        }
        last_beat = Instant::now();
        let beating: Vec<(String, i64)> = lock(&sh.inflight)
            .iter()
            .filter(|(_, f)| !f.gone)
            .map(|(id, f)| (id.clone(), f.generation))
            .collect();
        if beating.is_empty() {
            continue;
        }
        let store = sh.store.clone();
        match blocking(move || store.heartbeat(&beating)).await {
            Ok(lost) => {
                for outcome in lost {
                    let (id, reason) = match outcome {
                        crate::store::HeartbeatOutcome::Cancelled(id) => {
                            (id, LostReason::Cancelled)
                        }
                        crate::store::HeartbeatOutcome::Lost(id) => (id, LostReason::Lost),
                    };
                    if let Some(f) = lock(&sh.inflight).get_mut(&id) {
                        f.gone = true;
                    }
                    sh.sink.lost(&id, reason);
                }
            }
            Err(e) => sh.sink.error("heartbeat", &e),
        }
    }
}

fn enforce_timeouts(sh: &Shared) -> Result<()> {
    let now = Instant::now();
    let expired: Vec<(String, i64, Duration)> = lock(&sh.inflight)
        .iter()
        .filter(|(_, f)| !f.gone && f.deadline.is_some_and(|d| d <= now))
        .map(|(id, f)| (id.clone(), f.generation, f.timeout.unwrap_or_default()))
        .collect();
    for (id, generation, timeout) in expired {
        let msg = format!("run timed out after {} ms", timeout.as_millis());
        let status = sh.store.fail_owned(&id, generation, &msg)?;
        // The JS side may be stuck: free the slot now; its late writes are fenced.
        lock(&sh.inflight).remove(&id);
        sh.wake.notify_one();
        let reason = match status {
            crate::store::OpStatus::Ok => LostReason::Timeout,
            crate::store::OpStatus::Cancelled => LostReason::Cancelled,
            // (a timeout's fail op holds no user value)
            crate::store::OpStatus::Lost
            | crate::store::OpStatus::TooBig
            | crate::store::OpStatus::Failed => LostReason::Lost,
        };
        sh.sink.lost(&id, reason);
    }
    Ok(())
}

/// Passive WAL checkpoints off the commit path (the writer has autocheckpoint off).
pub(super) async fn checkpoints(sh: Arc<Shared>) {
    let conn = match sh.store.side_connection() {
        Ok(Some(c)) => Arc::new(std::sync::Mutex::new(c)),
        Ok(None) => return,
        Err(e) => {
            sh.sink.error("checkpoint", &e);
            return;
        }
    };
    loop {
        if sleep_unless_closed(&sh, sh.cfg.checkpoint_interval).await {
            return;
        }
        let c = conn.clone();
        let store = sh.store.clone();
        if let Err(e) = blocking(move || store.checkpoint(&lock(&c))).await {
            sh.sink.error("checkpoint", &e);
        }
    }
}
