'use strict'
// Resumable `/subscribe` streams. Each stream keeps the events it carried
// (bounded). When its client goes away, the stream goes on reading the run's
// events for `resumeMs`, so a client that reconnects with the id of the last
// event it saw (`after=` or the SSE `Last-Event-ID` header) gets exactly the
// events after it, none lost and none repeated, and then the live ones.

const { HttpError } = require('./http-request')

// Events a stream remembers for a resuming client; older ones are forgotten
// (a client resuming before them gets a fresh snapshot instead).
const MAX_HISTORY = 5_000
// Idle streams kept at once per handler; the oldest is dropped beyond this.
const MAX_IDLE = 1_000

const CURSOR = /^(?:([0-9a-z]{1,32})\.)?(\d{1,16})$/

/**
 * The resume cursor of a request: `after=<id>` or the `Last-Event-ID`
 * header, where an id is `<epoch>.<sequence>` (as sent in `id:` lines) or a
 * bare sequence. Null when neither is given.
 */
function resumeCursor(params, headers) {
  const all = params.getAll('after')
  if (all.length > 1) throw new HttpError(400, 'after query parameter given more than once')
  const raw = all.length ? all[0] : headers.get('last-event-id')
  if (raw === null || raw === '') return null
  const m = CURSOR.exec(raw.trim())
  if (!m || Number(m[2]) > Number.MAX_SAFE_INTEGER) {
    throw new HttpError(400, `invalid ${all.length ? 'after' : 'Last-Event-ID'}: expected an event id such as "ab12cd34.42"`)
  }
  return { epoch: m[1] ?? null, sequence: Number(m[2]) }
}

/**
 * One run's event stream (from `durably.subscribe`) feeding SSE channels: the
 * client that opened it, and clients resuming from it. A resuming client may
 * arrive before the server noticed its old connection broke, so a feed
 * serves several channels at once rather than being handed over.
 */
class RunFeed {
  /**
   * `first` is the stream's first item (the snapshot). `feeds` is the
   * handler's registry, `end(channel)` ends a channel once the run ended,
   * `prepare(event, replaying)` turns an event into what is sent.
   */
  constructor(reader, first, { feeds, end, prepare }) {
    this.reader = reader
    this.runId = first.runId
    this.run = first.run
    this.history = [first]
    // Every event of the run with a higher sequence than `from` is in history.
    this.from = first.sequence
    this.done = false
    this.closed = false
    this.channels = new Set()
    this.feeds = feeds
    this.endChannel = end
    this.prepare = prepare
    this.timer = null
    feeds.add(this)
    this.pump()
  }

  /** Whether a client that saw everything up to `sequence` can resume here. */
  covers(sequence) {
    return !this.closed && sequence >= this.from
  }

  async pump() {
    try {
      for (;;) {
        const { value, done } = await this.reader.read()
        if (done) break
        if (value.type === 'worker:error') continue
        this.history.push(value)
        if (this.history.length > MAX_HISTORY) this.from = Math.max(this.from, this.history.shift().sequence)
        if (this.channels.size) for (const e of this.prepare(value, false)) for (const ch of this.channels) ch.send(e)
      }
    } catch {
      // the stream errored (the instance closed): end like a finished run
    }
    this.done = true
    for (const ch of [...this.channels]) this.endChannel(ch)
    // Kept for the resume window even so: its client may have gone away
    // before the last events reached it, without the server noticing yet.
    this.feeds.idle(this)
  }

  /** Sends `channel` the history after `after` (all of it when null), then the live events. */
  attach(channel, after) {
    this.feeds.busy(this)
    for (const e of this.history) {
      if (after !== null && !(e.sequence > after)) continue
      for (const out of this.prepare(e, true)) channel.send(out)
    }
    if (this.done) {
      this.endChannel(channel)
      this.feeds.idle(this)
      return
    }
    this.channels.add(channel)
    channel.onEnd(() => {
      this.channels.delete(channel)
      if (this.channels.size === 0) this.feeds.idle(this)
    })
  }

  close() {
    if (this.closed) return
    this.closed = true
    this.reader.cancel().catch(() => {})
  }
}

/**
 * The feeds of one handler, by run id. A feed without a channel (its client
 * went away, or its run ended) is kept `resumeMs` for a resuming client,
 * then closed.
 */
class Feeds {
  constructor(resumeMs) {
    this.resumeMs = resumeMs
    this.byRun = new Map()
    // idle feeds, oldest first
    this.idleOrder = new Set()
  }

  add(feed) {
    let set = this.byRun.get(feed.runId)
    if (!set) this.byRun.set(feed.runId, (set = new Set()))
    set.add(feed)
  }

  idle(feed) {
    if (feed.closed || this.idleOrder.has(feed)) return
    if (this.resumeMs <= 0) return this.drop(feed)
    this.idleOrder.add(feed)
    feed.timer = setTimeout(() => this.drop(feed), this.resumeMs)
    if (typeof feed.timer.unref === 'function') feed.timer.unref()
    if (this.idleOrder.size > MAX_IDLE) this.drop(this.idleOrder.values().next().value)
  }

  busy(feed) {
    if (!this.idleOrder.delete(feed)) return
    clearTimeout(feed.timer)
  }

  drop(feed) {
    this.busy(feed)
    const set = this.byRun.get(feed.runId)
    if (set && set.delete(feed) && set.size === 0) this.byRun.delete(feed.runId)
    feed.close()
  }

  /** A feed of `runId` from which a client at `sequence` can resume, or null. */
  find(runId, sequence) {
    const set = this.byRun.get(runId)
    if (!set) return null
    for (const feed of set) if (feed.covers(sequence)) return feed
    return null
  }
}

module.exports = { RunFeed, Feeds, resumeCursor }
