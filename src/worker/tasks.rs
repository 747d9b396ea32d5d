//! The worker's background tasks. A blocking store's calls run on tokio's
//! blocking pool (see [`call`]) so the async threads stay free for timers
//! and wake-ups.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{call, LostReason, Shared};
use crate::engine::policy;
use crate::error::Result;
use crate::store::{lock, HeartbeatOutcome, Store};

/// Sleeps for `d`; returns early, with true, once the worker is closed.
/// (The notification is armed before the flag is read, so a close between
/// the two is never missed.)
async fn sleep_unless_closed<S>(sh: &Shared<S>, d: Duration) -> bool {
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
pub(super) async fn claim_loop<S: Store>(sh: Arc<Shared<S>>) {
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

async fn claim_while_running<S: Store>(sh: &Arc<Shared<S>>) {
    let watch = match sh.store.side() {
        Ok(c) => c,
        Err(e) => {
            sh.sink.error("watch", &e);
            None
        }
    };
    let mut last_token: Option<i64> = None;
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
            let side = watch.clone();
            let recovered = call(sh, move |sh| async move { recover_stale(&sh, side).await });
            if let Err(e) = recovered.await {
                sh.sink.error("recover", &e);
            }
        }
        let mut changed = false;
        if let Some(w) = &watch {
            // On this thread when that cannot wait (SQLite: almost always),
            // sparing a hop to a blocking thread every check interval.
            let token = match sh.store.change_token_now(w) {
                Some(token) => token,
                None => {
                    let w = w.clone();
                    call(sh, move |sh| async move { sh.store.change_token(&w).await }).await
                }
            };
            match token {
                Ok(Some(token)) => {
                    changed = last_token != Some(token);
                    last_token = Some(token);
                }
                Ok(None) => {}
                Err(e) => sh.sink.error("watch", &e),
            }
        }
        if policy::should_claim(woken, changed, poll_due, sh.free_slots()) {
            let w = watch.clone();
            let claimed = call(sh, move |sh| async move {
                let jobs = sh.job_set();
                if w.is_some() && !sh.store.has_pending(w.as_ref(), &jobs.names).await? {
                    return Ok(Vec::new());
                }
                sh.claim(usize::MAX).await
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

/// Stale recovery of this worker's jobs, never touching the runs it
/// executes (they are alive, only their heartbeat may be late: the heartbeat
/// task renews it at its next tick). Reads first, so an idle poll never
/// takes the write lock. Awaits the store on the calling task (the claim
/// loop runs it through [`call`]).
pub(super) async fn recover_stale<S: Store>(
    sh: &Shared<S>,
    side: Option<S::Side>,
) -> Result<usize> {
    let jobs = sh.job_set();
    if jobs.names.is_empty() {
        return Ok(0);
    }
    let threshold = sh.cfg.stale_threshold;
    if !sh
        .store
        .has_stale(side.as_ref(), &jobs.names, threshold)
        .await?
    {
        return Ok(0);
    }
    let mine = sh.held();
    sh.store.recover_stale(&jobs.names, threshold, &mine).await
}

/// Heartbeats for runs in flight, and job timeouts.
pub(super) async fn heartbeats<S: Store>(sh: Arc<Shared<S>>) {
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
        if let Err(e) = enforce_timeouts(&sh).await {
            sh.sink.error("timeout", &e);
        }
        if last_beat.elapsed() < sh.cfg.heartbeat_interval {
            continue;
        }
        last_beat = Instant::now();
        let beating = sh.held();
        if beating.is_empty() {
            continue;
        }
        match call(
            &sh,
            move |sh| async move { sh.store.heartbeat(&beating).await },
        )
        .await
        {
            Ok(lost) => {
                for outcome in lost {
                    let (id, reason) = match outcome {
                        HeartbeatOutcome::Cancelled(id) => (id, LostReason::Cancelled),
                        HeartbeatOutcome::Lost(id) => (id, LostReason::Lost),
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

async fn enforce_timeouts<S: Store>(sh: &Arc<Shared<S>>) -> Result<()> {
    let now = Instant::now();
    let expired: Vec<(String, i64, Duration)> = lock(&sh.inflight)
        .iter()
        .filter(|(_, f)| !f.gone && f.deadline.is_some_and(|d| d <= now))
        .map(|(id, f)| (id.clone(), f.generation, f.timeout.unwrap_or_default()))
        .collect();
    for (id, generation, timeout) in expired {
        let msg = policy::timeout_message(timeout);
        let run = id.clone();
        let status = call(sh, move |sh| async move {
            sh.store.fail_owned(&run, generation, &msg).await
        })
        .await?;
        // The JS side may be stuck: free the slot now; its late writes are fenced.
        lock(&sh.inflight).remove(&id);
        sh.update_wakes();
        sh.wake.notify_one();
        sh.sink.lost(&id, policy::timeout_outcome(status));
    }
    Ok(())
}

/// The store's upkeep off the commit path (SQLite: passive WAL checkpoints;
/// the writer has autocheckpoint off).
pub(super) async fn upkeep<S: Store>(sh: Arc<Shared<S>>) {
    let side = match sh.store.side() {
        Ok(Some(c)) => c,
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
        if !sh.store.upkeep_due() {
            continue; // nothing to do: no hop to a blocking thread
        }
        let s = side.clone();
        if let Err(e) = call(&sh, move |sh| async move { sh.store.upkeep(&s).await }).await {
            sh.sink.error("checkpoint", &e);
        }
    }
}
