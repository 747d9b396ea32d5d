//! Pipelining: several statements sent back to back on one connection and
//! their answers read as they come, so a batch costs one round trip instead
//! of one per statement.
//!
//! tokio-postgres sends a request when its future is first polled (the
//! statement must be prepared already) and matches the answers to the
//! requests in order. [`Pipeline::send`] polls every queued future once, in
//! queue order, so the server receives the statements in that order;
//! [`Pipeline::finish`] waits for all the answers. A statement queued after
//! a `send` goes after everything sent before it.
//!
//! On the server each statement is its own extended-protocol message with
//! its own `Sync`: inside `BEGIN … COMMIT`, a statement that fails aborts the
//! transaction, every later one fails with "current transaction is aborted",
//! and the `COMMIT` rolls back. So a batch piped as `BEGIN, ops…, COMMIT` is
//! all or nothing, as when each waited for the previous one.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use deadpool_postgres::Object;
use futures_core::Stream;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, RowStream, Statement};

/// The answer of one piped statement.
pub(crate) type Reply = std::result::Result<Vec<Row>, tokio_postgres::Error>;

type Pending<'a> = Pin<Box<dyn Future<Output = Reply> + Send + 'a>>;

/// Statements in flight on one connection, answered in order.
pub(crate) struct Pipeline<'a> {
    client: &'a Client,
    slots: Vec<(Option<Pending<'a>>, Option<Reply>)>,
    /// Per statement: the server reported it complete (`CommandComplete`),
    /// even if its reply then failed (see [`Pipeline::completed`]).
    done: Vec<Arc<AtomicBool>>,
}

/// Parameters of a piped statement, owned by the caller while it is in flight.
pub(crate) type Params<'a> = Vec<Box<dyn ToSql + Send + Sync + 'a>>;

impl<'a> Pipeline<'a> {
    pub(crate) fn new(client: &'a Client) -> Pipeline<'a> {
        Pipeline {
            client,
            slots: Vec::new(),
            done: Vec::new(),
        }
    }

    /// The completion flag of the statement queued next.
    fn next_done(&mut self) -> Arc<AtomicBool> {
        while self.done.len() <= self.slots.len() {
            self.done.push(Arc::new(AtomicBool::new(false)));
        }
        self.done[self.slots.len()].clone()
    }

    /// Per statement queued with [`Pipeline::query`]: whether the server
    /// reported it complete before its reply ended (a statement alone
    /// commits at the `Sync` after that: a session ended before it ran
    /// nothing). False for commands. Read it before [`Pipeline::finish`].
    pub(crate) fn completed(&self) -> Completed {
        Completed(self.done.clone())
    }

    /// Queues a prepared statement; returns its index in [`Pipeline::finish`]'s answers.
    pub(crate) fn query(
        &mut self,
        st: &'a Statement,
        params: &'a [Box<dyn ToSql + Send + Sync + 'a>],
    ) -> usize {
        let client = self.client;
        let done = self.next_done();
        self.push(Box::pin(async move {
            let refs = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync));
            collect(client.query_raw(st, refs).await, &done).await
        }))
    }

    /// Queues a prepared statement with borrowed parameters.
    pub(crate) fn query_refs(
        &mut self,
        st: &'a Statement,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> usize {
        let client = self.client;
        let done = self.next_done();
        self.push(Box::pin(async move {
            collect(client.query_raw(st, params.iter().copied()).await, &done).await
        }))
    }

    /// Queues a simple-protocol command (`BEGIN`, `COMMIT`, `SAVEPOINT …`).
    pub(crate) fn command(&mut self, sql: &'static str) -> usize {
        let client = self.client;
        self.push(Box::pin(async move {
            client.batch_execute(sql).await.map(|()| Vec::new())
        }))
    }

    fn push(&mut self, f: Pending<'a>) -> usize {
        self.slots.push((Some(f), None));
        self.slots.len() - 1
    }

    /// Sends everything queued (without waiting for answers). False if a
    /// statement already failed: one that could not even be sent (its
    /// parameters could not be encoded) fails here, before any `COMMIT`
    /// is queued after it.
    pub(crate) async fn send(&mut self) -> bool {
        poll_fn(|cx| {
            self.pass(cx);
            Poll::Ready(())
        })
        .await;
        !self.slots.iter().any(|(_, r)| matches!(r, Some(Err(_))))
    }

    /// Sends what is left and waits for every answer; in queue order.
    pub(crate) async fn finish(mut self) -> Vec<Reply> {
        poll_fn(|cx| {
            if self.pass(cx) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        self.slots
            .into_iter()
            .map(|(_, r)| r.expect("every piped statement answered"))
            .collect()
    }

    /// Polls every unanswered statement once, in order; true when all are answered.
    fn pass(&mut self, cx: &mut Context<'_>) -> bool {
        let mut done = true;
        for (fut, reply) in &mut self.slots {
            if let Some(f) = fut {
                match f.as_mut().poll(cx) {
                    Poll::Ready(r) => {
                        *reply = Some(r);
                        *fut = None;
                    }
                    Poll::Pending => done = false,
                }
            }
        }
        done
    }
}

/// The completion flags of a pipeline's statements ([`Pipeline::completed`]).
pub(crate) struct Completed(Vec<Arc<AtomicBool>>);

impl Completed {
    /// Whether statement `i` was reported complete by the server.
    pub(crate) fn get(&self, i: usize) -> bool {
        self.0.get(i).is_some_and(|d| d.load(Ordering::Relaxed))
    }
}

/// A statement's rows; `done` is set once the server reported it complete
/// (`rows_affected` is known from `CommandComplete` on, before `ReadyForQuery`).
async fn collect(
    stream: std::result::Result<RowStream, tokio_postgres::Error>,
    done: &AtomicBool,
) -> Reply {
    let mut stream = std::pin::pin!(stream?);
    let mut rows = Vec::new();
    loop {
        let next = poll_fn(|cx| stream.as_mut().poll_next(cx)).await;
        if stream.rows_affected().is_some() {
            done.store(true, Ordering::Relaxed);
        }
        match next {
            Some(Ok(row)) => rows.push(row),
            Some(Err(e)) => return Err(e),
            None => return Ok(rows),
        }
    }
}

/// Takes the error out of the failed reply `i`.
pub(crate) fn take_err(replies: &mut [Reply], i: usize) -> tokio_postgres::Error {
    match std::mem::replace(&mut replies[i], Ok(Vec::new())) {
        Err(e) => e,
        Ok(_) => unreachable!("reply {i} is an error"),
    }
}

/// Takes the rows out of the answered reply `i` (empty if it failed).
pub(crate) fn take_rows(replies: &mut [Reply], i: usize) -> Vec<Row> {
    std::mem::replace(&mut replies[i], Ok(Vec::new())).unwrap_or_default()
}

/// A pooled connection inside a transaction this code opened by hand (piped
/// `BEGIN`). Dropped before [`OpenTx::close`] (a future cancelled between
/// `BEGIN` and the end of the transaction), the connection is taken out of
/// the pool and closed, so no later user finds it inside the transaction.
pub(crate) struct OpenTx {
    conn: Option<Object>,
}

impl OpenTx {
    pub(crate) fn new(conn: Object) -> OpenTx {
        OpenTx { conn: Some(conn) }
    }

    /// The pooled connection (its statement cache: `prepare_cached`).
    pub(crate) fn conn(&self) -> &Object {
        self.conn.as_ref().expect("open connection")
    }

    pub(crate) fn client(&self) -> &Client {
        self.conn()
    }

    /// The transaction ended (committed or rolled back): the connection
    /// goes back to the pool.
    pub(crate) fn close(mut self) {
        self.conn.take();
    }
}

impl Drop for OpenTx {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            drop(Object::take(c));
        }
    }
}
