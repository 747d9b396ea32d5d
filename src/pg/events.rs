//! Run events across machines: a process that executes (or cancels, or
//! triggers) a run publishes its events on `durably_events_<schema>`, and
//! every other process listening on the schema ([`super::listen`]) receives
//! them, so `waitForRun`, `subscribe` and `/runs/subscribe` see runs executed
//! elsewhere.
//!
//! A `NOTIFY` payload must be shorter than 8000 bytes. An event whose
//! payload fits is sent inline; a larger one (a big step output, a long log)
//! is stored in the `events` table and sent by reference, and each listener
//! reads it back by id. Rows older than [`EVENT_RETENTION`] are deleted by
//! the next large publish; a listener that reads a reference later than that
//! (it was disconnected) finds nothing and drops the event (its run's state
//! is still in `runs`/`steps`, which `waitForRun` also polls).
//!
//! Payload (all text, fields separated by a tab; the origin is a lease owner
//! id `pid:ulid` and run ids hold no tab, the JSON may hold anything):
//! - `i<origin>\t<run id>\t<event JSON>`: inline,
//! - `r<origin>\t<run id>\t<events.id>`: by reference,
//! - `m<origin>\n<run id>\t<event JSON>\n<run id>\t<event JSON>…`: several
//!   inline events of one publish, in order, packed into one notification
//!   while they fit (events publish in bursts: a flush ends steps of several
//!   runs at once); only events whose run id and JSON hold no newline (JSON
//!   text never holds a raw one unless pretty-printed) are packed.
//!
//! Delivery is what `NOTIFY` gives: at commit, in order per publishing
//! connection, at most once, nothing while a listener is disconnected.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::PgStore;
use crate::error::{Error, Result};
use crate::store::lock;

/// NOTIFY refuses payloads of 8000 bytes or more.
pub const MAX_INLINE_PAYLOAD: usize = 7999;

/// Notifies `$1` with each payload of `$2`, in array order, while some
/// process is registered for run events ([`PgStore::register_listener`]).
pub(crate) const NOTIFY_ALL_SQL: &str = "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p \
     WHERE EXISTS (SELECT 1 FROM listeners WHERE expires_at > now())";

/// How long a registration for run events lasts unless refreshed (the
/// listen connection refreshes it at each of its checks, every 10 s).
pub const LISTENER_TTL: Duration = Duration::from_secs(60);

/// How long a by-reference event stays readable.
pub const EVENT_RETENTION: Duration = Duration::from_secs(300);

/// A run event received from the events channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteEvent {
    /// The publishing process ([`PgStore::owner`] there).
    pub origin: String,
    /// The run the event is about.
    pub run_id: String,
    /// The event's JSON text, exactly as published.
    pub json: String,
}

/// Events a flush took from the outbox to send after its `COMMIT`, on its
/// connection and in its round trip ([`PgStore::take_for_flush`]). Holds the
/// publishing lock until dropped; unless [`FlushEvents::sent`] was called,
/// the events go back to the front of the outbox then (published next,
/// still in order).
pub(crate) struct FlushEvents<'a> {
    store: &'a PgStore,
    _lock: tokio::sync::MutexGuard<'a, ()>,
    events: Vec<(String, String)>,
    /// Their `NOTIFY` payloads, all inline.
    pub(crate) payloads: Vec<String>,
}

impl FlushEvents<'_> {
    /// Their `NOTIFY` was answered with success.
    pub(crate) fn sent(mut self) {
        self.events.clear();
    }
}

impl Drop for FlushEvents<'_> {
    fn drop(&mut self) {
        if !self.events.is_empty() {
            let mut q = lock(&self.store.inner.outbox);
            for e in self.events.drain(..).rev() {
                q.push_front(e);
            }
        }
    }
}

impl PgStore {
    /// Queues run events (`(run id, event JSON)`) for publishing, after the
    /// ones queued before; [`PgStore::publish_queued`] or the next flush
    /// ([`PgStore::take_for_flush`]) sends them.
    pub fn queue_events(&self, events: Vec<(String, String)>) {
        lock(&self.inner.outbox).extend(events);
    }

    /// Whether events wait in the outbox.
    pub fn events_queued(&self) -> bool {
        !lock(&self.inner.outbox).is_empty()
    }

    /// Publishes every queued event, in order (waits for a publish or a
    /// flush sending earlier ones to be answered first).
    pub async fn publish_queued(&self) -> Result<()> {
        let _lock = self.inner.publishing.lock().await;
        let events: Vec<(String, String)> = lock(&self.inner.outbox).drain(..).collect();
        let refs: Vec<(&str, &str)> = events
            .iter()
            .map(|(r, j)| (r.as_str(), j.as_str()))
            .collect();
        self.publish_events(&refs).await
    }

    /// The queued events for a flush to send in its round trip, when nobody
    /// is publishing now and every one of them is sent inline (a stored one
    /// needs its own transaction; a malformed one is reported by
    /// [`PgStore::publish_queued`]); else `None`, and they stay queued.
    pub(crate) fn take_for_flush(&self) -> Option<FlushEvents<'_>> {
        let guard = self.inner.publishing.try_lock().ok()?;
        let events: Vec<(String, String)> = {
            let mut q = lock(&self.inner.outbox);
            if q.is_empty() {
                return None;
            }
            q.drain(..).collect()
        };
        let payloads = {
            let refs: Vec<(&str, &str)> = events
                .iter()
                .map(|(r, j)| (r.as_str(), j.as_str()))
                .collect();
            let valid = refs.iter().all(|(r, _)| !r.contains('\t') && !r.is_empty());
            let pieces = pack(self.owner(), &refs);
            let n = pieces.len();
            let inline: Vec<String> = pieces
                .into_iter()
                .filter_map(|p| match p {
                    Piece::Notify(p) => Some(p),
                    Piece::Store(..) => None,
                })
                .collect();
            if valid && inline.len() == n {
                inline
            } else {
                Vec::new()
            }
        };
        // (dropped with no payloads: the events go back to the outbox)
        let taken = FlushEvents {
            store: self,
            _lock: guard,
            events,
            payloads,
        };
        (!taken.payloads.is_empty()).then_some(taken)
    }

    /// The channel of run events (`durably_events_<schema>`).
    pub fn events_channel(&self) -> &str {
        &self.inner.events_channel
    }

    /// Whether this process wants other processes' run events (on by
    /// default). While off, the listen connection drops them without
    /// decoding them or reading a by-reference event back: the JS layer
    /// turns them on only while something (waitForRun, subscribe,
    /// `/runs/subscribe`) listens, since with P processes each would
    /// otherwise handle the events of all P.
    pub fn set_remote_events(&self, on: bool) {
        self.inner.remote_events.store(on, Ordering::SeqCst);
    }

    /// See [`PgStore::set_remote_events`].
    pub fn remote_events(&self) -> bool {
        self.inner.remote_events.load(Ordering::SeqCst)
    }

    /// Whether this process wants wake-ups (on by default). The worker wants
    /// them only while its claim loop is on and it has a free slot: with P
    /// processes each busy one would otherwise receive (and its server
    /// backend send) every trigger's and keyed run end's wake-up of all P,
    /// and ignore it. While on, the listen connection listens on the wake
    /// channel and registers this process in `wakers` (schema v5); a keyed
    /// run's end sends its wake-up only while some registration is alive,
    /// so while every worker is busy none is sent at all. While off, it
    /// neither listens nor is registered; turned on again, it registers,
    /// listens, and then announces [`super::PgNotice::Resumed`] (the worker
    /// claims once: a wake-up not sent or not heard meanwhile was for a
    /// commit made before the registration, which that claim sees; see
    /// `listen.rs`'s `register_wakes_sql`).
    pub fn set_wakes_wanted(&self, on: bool) {
        if self.inner.wakes_wanted.swap(on, Ordering::SeqCst) != on {
            self.inner.wakes_changed.notify_one();
        }
    }

    /// See [`PgStore::set_wakes_wanted`].
    pub fn wakes_wanted(&self) -> bool {
        self.inner.wakes_wanted.load(Ordering::SeqCst)
    }

    /// Waits until [`PgStore::set_wakes_wanted`] changed the setting.
    pub(crate) async fn wakes_changed(&self) {
        self.inner.wakes_changed.notified().await
    }

    /// Registers this process for run events (the `listeners` table, see
    /// its migration), while [`PgStore::remote_events`] is on: publishers
    /// notify only while a registration is alive. When this returns, every
    /// event committed after it is published, and any other was committed
    /// before it (the registration waits for every publish that did not
    /// see it: the table's ACCESS EXCLUSIVE lock), so a read made after it
    /// sees the effect of every event this process will not hear. A
    /// registration with more than half its life left is kept as it is.
    pub async fn register_listener(&self) -> Result<()> {
        let _serial = self.inner.registry.lock().await;
        if !self.remote_events() {
            return Ok(());
        }
        let fresh = lock(&self.inner.registered_until)
            .is_some_and(|until| until > Instant::now() + LISTENER_TTL / 2);
        if fresh {
            return Ok(());
        }
        let until = Instant::now() + LISTENER_TTL;
        self.again_if_lost(|| self.register_once()).await?;
        *lock(&self.inner.registered_until) = Some(until);
        Ok(())
    }

    async fn register_once(&self) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.batch_execute(
            "LOCK TABLE listeners IN ACCESS EXCLUSIVE MODE; \
             DELETE FROM listeners WHERE expires_at <= now()",
        )
        .await?;
        tx.execute(
            "INSERT INTO listeners (owner, expires_at) \
             VALUES ($1, now() + make_interval(secs => $2)) \
             ON CONFLICT (owner) DO UPDATE SET expires_at = EXCLUDED.expires_at",
            &[&self.owner(), &LISTENER_TTL.as_secs_f64()],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends this process's registration, unless run events are wanted again
    /// ([`PgStore::remote_events`]) by now.
    pub async fn unregister_listener(&self) -> Result<()> {
        let _serial = self.inner.registry.lock().await;
        if self.remote_events() || lock(&self.inner.registered_until).take().is_none() {
            return Ok(());
        }
        let c = self.client().await?;
        c.execute("DELETE FROM listeners WHERE owner = $1", &[&self.owner()])
            .await?;
        Ok(())
    }

    /// Whether this process registered for run events (and has not ended it).
    pub(crate) fn is_registered(&self) -> bool {
        lock(&self.inner.registered_until).is_some()
    }

    /// Publishes run events (`(run id, event JSON)`), in order, in one
    /// transaction: inline when the payload fits a `NOTIFY`, else stored
    /// and sent by reference (see the module docs).
    pub async fn publish_events(&self, events: &[(&str, &str)]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        for (run_id, _) in events {
            if run_id.contains('\t') || run_id.is_empty() {
                return Err(Error::Validation(format!(
                    "event run id {run_id:?} must be non-empty and hold no tab"
                )));
            }
        }
        let pieces = pack(self.owner(), events);
        let mut c = self.client().await?;
        if pieces.iter().all(|p| matches!(p, Piece::Notify(_))) {
            // The usual case: one statement (its own transaction), however
            // many events.
            let all: Vec<&str> = pieces.iter().filter_map(Piece::payload).collect();
            let st = c.prepare_cached(NOTIFY_ALL_SQL).await?;
            c.execute(&st, &[&self.events_channel(), &all]).await?;
            return Ok(());
        }
        let tx = c.transaction().await?;
        let notify = tx.prepare_cached(NOTIFY_ALL_SQL).await?;
        let store = tx
            .prepare_cached(
                "WITH ins AS (INSERT INTO events (origin, run_id, payload) \
                 VALUES ($1, $2, $3) RETURNING id) \
                 SELECT pg_notify($4, 'r' || $1 || E'\\t' || $2 || E'\\t' || id) FROM ins \
                 WHERE EXISTS (SELECT 1 FROM listeners WHERE expires_at > now())",
            )
            .await?;
        // In order: each stretch of inline payloads in one statement, each
        // stored event alone.
        let mut stretch: Vec<&str> = Vec::new();
        for piece in &pieces {
            match piece {
                Piece::Notify(p) => stretch.push(p),
                Piece::Store(run_id, json) => {
                    if !stretch.is_empty() {
                        tx.execute(&notify, &[&self.events_channel(), &stretch])
                            .await?;
                        stretch.clear();
                    }
                    tx.execute(
                        &store,
                        &[&self.owner(), run_id, json, &self.events_channel()],
                    )
                    .await?;
                }
            }
        }
        if !stretch.is_empty() {
            tx.execute(&notify, &[&self.events_channel(), &stretch])
                .await?;
        }
        let secs = EVENT_RETENTION.as_secs_f64();
        tx.execute(
            "DELETE FROM events WHERE created_at < now() - make_interval(secs => $1)",
            &[&secs],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Reads a payload of the events channel: nothing when it is this
    /// process's own (unless `own`), malformed, or a reference whose row is
    /// gone; several for a packed payload.
    pub(crate) async fn decode_events(&self, payload: &str, own: bool) -> Vec<RemoteEvent> {
        if let Some(packed) = payload.strip_prefix('m') {
            let Some((origin, lines)) = packed.split_once('\n') else {
                return Vec::new();
            };
            if !own && origin == self.owner() {
                return Vec::new();
            }
            return lines
                .split('\n')
                .filter_map(|line| {
                    let (run_id, json) = line.split_once('\t')?;
                    Some(RemoteEvent {
                        origin: origin.to_string(),
                        run_id: run_id.to_string(),
                        json: json.to_string(),
                    })
                })
                .collect();
        }
        self.decode_event(payload, own).await.into_iter().collect()
    }

    /// Reads a payload of the `i` or `r` kind: `None` when it is this
    /// process's own event (unless `own`), malformed, or a reference whose
    /// row is gone.
    async fn decode_event(&self, payload: &str, own: bool) -> Option<RemoteEvent> {
        let kind = payload.chars().next()?;
        let mut parts = payload[1..].splitn(3, '\t');
        let origin = parts.next()?;
        let run_id = parts.next()?;
        let body = parts.next()?;
        if !own && origin == self.owner() {
            return None;
        }
        let json = match kind {
            'i' => body.to_string(),
            'r' => {
                let id: i64 = body.parse().ok()?;
                let c = self.client().await.ok()?;
                let row = c
                    .query_opt("SELECT payload FROM events WHERE id = $1", &[&id])
                    .await
                    .ok()??;
                row.get(0)
            }
            _ => return None,
        };
        Some(RemoteEvent {
            origin: origin.to_string(),
            run_id: run_id.to_string(),
            json,
        })
    }
}

/// What a publish sends: a notification payload, or an event too large for
/// one (stored, then sent by reference).
pub(crate) enum Piece<'a> {
    Notify(String),
    Store(&'a str, &'a str),
}

impl Piece<'_> {
    pub(crate) fn payload(&self) -> Option<&str> {
        match self {
            Piece::Notify(p) => Some(p),
            Piece::Store(..) => None,
        }
    }
}

/// The payloads of `events` in order: consecutive events packed (`m`) while
/// they fit one notification, a lone one inline (`i`), one too large for a
/// notification stored.
pub(crate) fn pack<'a>(owner: &str, events: &[(&'a str, &'a str)]) -> Vec<Piece<'a>> {
    let mut out = Vec::new();
    // The pack being filled, and how many events it holds.
    let mut pack: Option<(String, usize)> = None;
    let close = |pack: &mut Option<(String, usize)>, out: &mut Vec<Piece<'a>>| {
        if let Some((p, n)) = pack.take() {
            if n == 1 {
                // One event: the plain inline form, as long as the packed one.
                let (_, line) = p.split_once('\n').unwrap_or_default();
                let (run_id, json) = line.split_once('\t').unwrap_or_default();
                out.push(Piece::Notify(format!("i{owner}\t{run_id}\t{json}")));
            } else {
                out.push(Piece::Notify(p));
            }
        }
    };
    for &(run_id, json) in events {
        if !run_id.contains('\n') && !json.contains('\n') {
            if let Some((p, n)) = &mut pack {
                if p.len() + 1 + run_id.len() + 1 + json.len() <= MAX_INLINE_PAYLOAD {
                    p.push('\n');
                    p.push_str(run_id);
                    p.push('\t');
                    p.push_str(json);
                    *n += 1;
                    continue;
                }
            }
            close(&mut pack, &mut out);
            let p = format!("m{owner}\n{run_id}\t{json}");
            if p.len() <= MAX_INLINE_PAYLOAD {
                pack = Some((p, 1));
                continue;
            }
        }
        close(&mut pack, &mut out);
        let inline = format!("i{owner}\t{run_id}\t{json}");
        out.push(if inline.len() <= MAX_INLINE_PAYLOAD {
            Piece::Notify(inline)
        } else {
            Piece::Store(run_id, json)
        });
    }
    close(&mut pack, &mut out);
    out
}
