//! `LISTEN` for one process: a connection of its own (outside the pool:
//! pooled connections cannot receive notifications) on the wake, cancel and
//! events channels, turned into a stream of [`PgNotice`]s.
//!
//! The connection is re-opened when it drops (server restart, a killed
//! backend, a network cut), with a backoff from [`ListenOptions::min_backoff`]
//! doubling up to [`ListenOptions::max_backoff`]. A notification sent while
//! it was down is lost, so every (re)connect is announced as
//! [`PgNotice::Listening`]: the engine then polls once (polling stays the
//! fallback). A connection that silently stopped answering (no FIN: a cable
//! pulled) is found by a `SELECT 1` every [`ListenOptions::ping_interval`].
//!
//! ```ignore
//! let mut l = store.listen(ListenOptions::default());
//! while let Some(n) = l.recv().await {
//!     match n {
//!         PgNotice::Listening { .. } => { /* poll once */ }
//!         PgNotice::Wake { job } => { /* claim */ }
//!         PgNotice::Cancel { run_id } => { /* abort that local run */ }
//!         PgNotice::Event(ev) => { /* emit to local listeners */ }
//!         PgNotice::Disconnected { error } => { /* report */ }
//!     }
//! }
//! ```

use std::future::poll_fn;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Notification, SimpleQueryMessage};

use super::events::LISTENER_TTL;

use super::events::RemoteEvent;
use super::PgStore;

/// Timings of a [`PgListener`].
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// First wait before re-opening a dropped connection.
    pub min_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
    /// How often the open connection is checked with `SELECT 1`.
    pub ping_interval: Duration,
    /// How long that check may take before the connection counts as dead.
    pub ping_timeout: Duration,
    /// Deliver run events this process published itself (normally not: it
    /// emitted them locally already).
    pub own_events: bool,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(5),
            own_events: false,
        }
    }
}

/// What the listen connection received, or a change of its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgNotice {
    /// The connection is open and listening (`reconnect`: not the first
    /// time). Notifications may have been lost before: poll once.
    Listening {
        /// False for the first connection, true after a drop.
        reconnect: bool,
    },
    /// The connection dropped (or could not be opened); it is being retried.
    Disconnected {
        /// Why.
        error: String,
    },
    /// Runs may be claimable: of this job, or of any job when `None`.
    Wake {
        /// The job name from the payload; `None` for "any job".
        job: Option<String>,
    },
    /// Wake-ups are received again after [`PgStore::set_wakes_wanted`]
    /// turned them off and on: one may have been missed, claim once.
    Resumed,
    /// The run with this id was cancelled (abort it if it runs here).
    Cancel {
        /// The run's id.
        run_id: String,
    },
    /// A run event published by a process (see [`PgStore::publish_events`]).
    Event(RemoteEvent),
}

/// The receiving end of a listen connection; dropping it closes the
/// connection and stops its task.
pub struct PgListener {
    rx: mpsc::UnboundedReceiver<PgNotice>,
    task: JoinHandle<()>,
    pid: Arc<AtomicI32>,
}

impl PgListener {
    /// The next notice; `None` only after the task ended (it does not end
    /// on its own while this listener is alive).
    pub async fn recv(&mut self) -> Option<PgNotice> {
        self.rx.recv().await
    }

    /// The server process id of the current listen connection (0 while
    /// disconnected): for tests and diagnostics.
    pub fn backend_pid(&self) -> i32 {
        self.pid.load(Ordering::SeqCst)
    }
}

impl Drop for PgListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PgStore {
    /// Opens this process's listen connection on the wake, cancel and events
    /// channels, on the current tokio runtime (see the module docs).
    pub fn listen(&self, opts: ListenOptions) -> PgListener {
        let (tx, rx) = mpsc::unbounded_channel();
        let pid = Arc::new(AtomicI32::new(0));
        let task = tokio::spawn(run(self.clone(), opts, tx, pid.clone()));
        PgListener { rx, task, pid }
    }
}

/// Why a session ended.
enum End {
    /// The receiver is gone: stop.
    Closed,
    /// The connection failed; `listened`: it got as far as listening.
    Lost { error: String, listened: bool },
}

async fn run(
    store: PgStore,
    opts: ListenOptions,
    tx: mpsc::UnboundedSender<PgNotice>,
    pid: Arc<AtomicI32>,
) {
    let mut backoff = opts.min_backoff;
    let mut reconnect = false;
    loop {
        let end = session(&store, &opts, &tx, &pid, reconnect).await;
        pid.store(0, Ordering::SeqCst);
        match end {
            End::Closed => return,
            End::Lost { error, listened } => {
                if tx.send(PgNotice::Disconnected { error }).is_err() {
                    return;
                }
                if listened {
                    backoff = opts.min_backoff;
                    reconnect = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = tx.closed() => return,
                }
                backoff = (backoff * 2).min(opts.max_backoff);
            }
        }
    }
}

async fn session(
    store: &PgStore,
    opts: &ListenOptions,
    tx: &mpsc::UnboundedSender<PgNotice>,
    pid: &AtomicI32,
    reconnect: bool,
) -> End {
    let lost = |error: String, listened: bool| End::Lost { error, listened };
    let (client, mut conn) = match store.inner.config.connect(store.inner.tls.clone()).await {
        Ok(c) => c,
        Err(e) => {
            return lost(
                format!("cannot open the listen connection: {}", describe(e)),
                false,
            )
        }
    };
    // The connection is driven here; notifications go to `notes`.
    let (notes_tx, mut notes) = mpsc::unbounded_channel::<Notification>();
    let driver = tokio::spawn(async move {
        loop {
            match poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if notes_tx.send(n).is_err() {
                        return "listener stopped".to_string();
                    }
                }
                Some(Ok(_)) => {} // a server notice
                Some(Err(e)) => return format!("listen connection failed: {}", describe(e)),
                None => return "listen connection closed".to_string(),
            }
        }
    });
    let mut driver = driver;
    let _abort = AbortOnDrop(driver.abort_handle());
    // The channel names are made of a validated schema name: no quoting needed.
    let mut waking = store.wakes_wanted();
    let listen = format!(
        "{}LISTEN {}; LISTEN {}",
        if waking {
            format!("{}; ", register_wakes_sql(store))
        } else {
            String::new()
        },
        store.cancel_channel(),
        store.events_channel()
    );
    let setup = async {
        client.batch_execute(&listen).await?;
        let row = client.query_one("SELECT pg_backend_pid()", &[]).await?;
        Ok::<i32, tokio_postgres::Error>(row.get(0))
    };
    match tokio::time::timeout(opts.ping_timeout, setup).await {
        Ok(Ok(p)) => pid.store(p, Ordering::SeqCst),
        Ok(Err(e)) => return lost(format!("cannot LISTEN: {}", describe(e)), false),
        Err(_) => return lost("LISTEN timed out".into(), false),
    }
    if tx.send(PgNotice::Listening { reconnect }).is_err() {
        return End::Closed;
    }
    let mut ping = tokio::time::interval(opts.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            n = notes.recv() => {
                let Some(n) = n else {
                    // The driver ended (its sender is gone): its reason.
                    let why = (&mut driver)
                        .await
                        .unwrap_or_else(|e| format!("listen connection task failed: {e}"));
                    return lost(why, true);
                };
                for notice in route(store, opts, n).await {
                    if tx.send(notice).is_err() {
                        return End::Closed;
                    }
                }
            }
            _ = ping.tick() => {
                // While registered for wake-ups, the check renews the
                // registration; one found lapsed (this connection was stuck
                // past its life) is made anew, then claimed for, as a new one.
                let check = if waking { refresh_wakes_sql(store) } else { "SELECT 1".into() };
                match tokio::time::timeout(opts.ping_timeout, client.simple_query(&check)).await {
                    Ok(Ok(answer)) => {
                        let lapsed = waking
                            && !answer.iter().any(|m| matches!(m, SimpleQueryMessage::Row(_)));
                        if lapsed {
                            let sql = register_wakes_sql(store);
                            match tokio::time::timeout(opts.ping_timeout, client.batch_execute(&sql)).await {
                                Ok(Ok(())) => {}
                                Ok(Err(e)) => return lost(format!("cannot register for wake-ups: {}", describe(e)), true),
                                Err(_) => return lost("registering for wake-ups timed out".into(), true),
                            }
                            if tx.send(PgNotice::Resumed).is_err() {
                                return End::Closed;
                            }
                        }
                        // A registration for run events is kept alive (see
                        // `register_listener`: a fresh one is not rewritten).
                        if store.remote_events() && store.is_registered() {
                            let s = store.clone();
                            tokio::spawn(async move { s.register_listener().await });
                        }
                    }
                    Ok(Err(e)) => return lost(format!("listen connection check failed: {}", describe(e)), true),
                    Err(_) => return lost("listen connection check timed out".into(), true),
                }
            }
            _ = store.wakes_changed() => {
                let want = store.wakes_wanted();
                if want == waking {
                    continue;
                }
                // Listening and registered again (a keyed run's end sent no
                // wake-up while nobody was registered): what was missed
                // meanwhile is claimed now, after the registration committed.
                let (sql, what) = if want {
                    (register_wakes_sql(store), "register for wake-ups")
                } else {
                    (unregister_wakes_sql(store), "unregister from wake-ups")
                };
                match tokio::time::timeout(opts.ping_timeout, client.batch_execute(&sql)).await {
                    Ok(Ok(())) => waking = want,
                    Ok(Err(e)) => return lost(format!("cannot {what}: {}", describe(e)), true),
                    Err(_) => return lost(format!("{what}: timed out"), true),
                }
                if waking && tx.send(PgNotice::Resumed).is_err() {
                    return End::Closed;
                }
            }
            _ = tx.closed() => return End::Closed,
        }
    }
}

/// Registers this process for wake-ups (schema v5's `wakers`) and listens
/// on the wake channel, in one transaction on the listen connection. The
/// table's ACCESS EXCLUSIVE lock waits for every keyed run's end that read
/// the table without seeing this registration (it holds the ACCESS SHARE
/// lock until its commit, see `flush::COMPLETE_SQL`): once this commits,
/// each end either was committed before (the claim made next sees it) or
/// sees the registration and notifies (and the `LISTEN`, committed with
/// it, receives that). So the caller must claim once after it: the
/// listener announces [`PgNotice::Resumed`] or [`PgNotice::Listening`].
/// Expired rows (processes that died) are deleted here.
fn register_wakes_sql(store: &PgStore) -> String {
    format!(
        "BEGIN; LISTEN {}; LOCK TABLE wakers IN ACCESS EXCLUSIVE MODE; \
         DELETE FROM wakers WHERE expires_at <= now(); \
         INSERT INTO wakers (owner, expires_at) \
         VALUES ({}, now() + make_interval(secs => {})) \
         ON CONFLICT (owner) DO UPDATE SET expires_at = EXCLUDED.expires_at; COMMIT",
        store.wake_channel(),
        literal(store.owner()),
        LISTENER_TTL.as_secs()
    )
}

/// Stops listening for wake-ups and ends the registration (no lock needed:
/// a keyed run's end that still saw it only sends a wake-up for nothing).
fn unregister_wakes_sql(store: &PgStore) -> String {
    format!(
        "UNLISTEN {}; DELETE FROM wakers WHERE owner = {}",
        store.wake_channel(),
        literal(store.owner())
    )
}

/// Renews a live registration for wake-ups; answers no row when it had
/// lapsed (then it must be made anew, with the claim after it).
fn refresh_wakes_sql(store: &PgStore) -> String {
    format!(
        "UPDATE wakers SET expires_at = now() + make_interval(secs => {}) \
         WHERE owner = {} AND expires_at > now() RETURNING 1",
        LISTENER_TTL.as_secs(),
        literal(store.owner())
    )
}

/// `s` as an SQL string literal (the listen connection uses the simple query
/// protocol, one round trip for several statements, without parameters).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Aborts the connection driver when the session ends.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The server's own message when it sent one (`Display` says only "db error").
fn describe(e: tokio_postgres::Error) -> String {
    crate::error::Error::from(e).to_string()
}

/// A notification as notices (none: not for this process; several: a
/// packed payload of run events).
async fn route(store: &PgStore, opts: &ListenOptions, n: Notification) -> Vec<PgNotice> {
    let channel = n.channel();
    if channel == store.wake_channel() {
        let job = n.payload();
        return vec![PgNotice::Wake {
            job: (!job.is_empty()).then(|| job.to_string()),
        }];
    }
    if channel == store.cancel_channel() {
        return vec![PgNotice::Cancel {
            run_id: n.payload().to_string(),
        }];
    }
    if channel == store.events_channel() {
        if !store.remote_events() {
            return Vec::new();
        }
        return store
            .decode_events(n.payload(), opts.own_events)
            .await
            .into_iter()
            .map(PgNotice::Event)
            .collect();
    }
    Vec::new()
}
