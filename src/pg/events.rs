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
//! - `r<origin>\t<run id>\t<events.id>`: by reference.
//!
//! Delivery is what `NOTIFY` gives: at commit, in order per publishing
//! connection, at most once, nothing while a listener is disconnected.

use std::time::Duration;

use super::PgStore;
use crate::error::{Error, Result};

/// NOTIFY refuses payloads of 8000 bytes or more.
pub const MAX_INLINE_PAYLOAD: usize = 7999;

/// Notifies `$1` with each payload of `$2`, in array order.
const NOTIFY_ALL_SQL: &str = "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p";

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

impl PgStore {
    /// The channel of run events (`durably_events_<schema>`).
    pub fn events_channel(&self) -> &str {
        &self.inner.events_channel
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
        let owner = self.owner();
        let inline: Vec<Option<String>> = events
            .iter()
            .map(|(run_id, json)| {
                let p = format!("i{owner}\t{run_id}\t{json}");
                (p.len() <= MAX_INLINE_PAYLOAD).then_some(p)
            })
            .collect();
        let mut c = self.client().await?;
        if inline.iter().all(Option::is_some) {
            // The usual case: one statement (its own transaction), however
            // many events.
            let all: Vec<&str> = inline.iter().flatten().map(String::as_str).collect();
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
                 SELECT pg_notify($4, 'r' || $1 || E'\\t' || $2 || E'\\t' || id) FROM ins",
            )
            .await?;
        // In order: each stretch of inline events in one statement, each
        // stored one alone.
        let mut stretch: Vec<&str> = Vec::new();
        for ((run_id, json), payload) in events.iter().zip(&inline) {
            if let Some(p) = payload {
                stretch.push(p);
                continue;
            }
            if !stretch.is_empty() {
                tx.execute(&notify, &[&self.events_channel(), &stretch])
                    .await?;
                stretch.clear();
            }
            tx.execute(&store, &[&owner, run_id, json, &self.events_channel()])
                .await?;
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

    /// Reads a payload of the events channel: `None` when it is this
    /// process's own event (unless `own`), malformed, or a reference whose
    /// row is gone.
    pub(crate) async fn decode_event(&self, payload: &str, own: bool) -> Option<RemoteEvent> {
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
