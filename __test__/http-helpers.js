'use strict'
// Helpers for the HTTP suites: a real node:http server on 127.0.0.1 through
// toNodeHandler, JSON requests with fetch, and a streaming SSE reader.

const http = require('node:http')
const { createDurablyHandler, toNodeHandler } = require('..')

const BASE = '/api/durably'

/** Serves `createDurablyHandler(durably, options)` under BASE on an ephemeral port. */
async function startServer(durably, options, basePath = BASE) {
  const handler = createDurablyHandler(durably, options)
  const server = http.createServer(toNodeHandler(handler, basePath))
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const origin = `http://127.0.0.1:${server.address().port}`
  return {
    server,
    handler,
    origin,
    url: (p) => origin + basePath + p,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

/** fetch + parsed JSON body: { status, body, headers }. */
async function call(url, { method = 'GET', body, headers = {} } = {}) {
  const init = { method, headers: { ...headers } }
  if (body !== undefined) {
    init.body = typeof body === 'string' ? body : JSON.stringify(body)
    init.headers['content-type'] = 'application/json'
  }
  const res = await fetch(url, init)
  const text = await res.text()
  let parsed
  try {
    parsed = text ? JSON.parse(text) : undefined
  } catch {
    parsed = text
  }
  return { status: res.status, body: parsed, headers: res.headers }
}

/**
 * Opens an SSE stream and parses `data:` frames as they arrive.
 * Returns { status, headers, events, ended, next(pred, timeout), close() }.
 */
async function openSse(url, { headers = {} } = {}) {
  const ac = new AbortController()
  const res = await fetch(url, { headers, signal: ac.signal })
  const events = []
  const waiters = []
  const notify = () => {
    for (const w of [...waiters]) w.check()
  }
  const sse = {
    status: res.status,
    headers: res.headers,
    events,
    frames: [],
    ids: [],
    isEnded: false,
    ended: null,
    close() {
      ac.abort()
      return sse.ended
    },
    /** Resolves with the first event (from `from` on) that satisfies `pred`. */
    next(pred, { timeout = 10_000, from = 0 } = {}) {
      return new Promise((resolve, reject) => {
        const w = {
          check() {
            const e = events.slice(from).find(pred)
            if (e) {
              clearTimeout(w.timer)
              waiters.splice(waiters.indexOf(w), 1)
              resolve(e)
            } else if (sse.isEnded) {
              clearTimeout(w.timer)
              waiters.splice(waiters.indexOf(w), 1)
              reject(new Error(`SSE ended before the expected event (got ${events.map((x) => x.type).join(', ')})`))
            }
          },
          timer: setTimeout(() => {
            waiters.splice(waiters.indexOf(w), 1)
            reject(new Error(`timed out waiting for an SSE event (got ${events.map((x) => x.type).join(', ')})`))
          }, timeout),
        }
        waiters.push(w)
        w.check()
      })
    },
  }
  if (res.status !== 200 || !res.body) {
    sse.body = await res.text().catch(() => '')
    sse.isEnded = true
    sse.ended = Promise.resolve()
    return sse
  }
  sse.ended = (async () => {
    const decoder = new TextDecoder()
    let buf = ''
    try {
      for await (const chunk of res.body) {
        buf += decoder.decode(chunk, { stream: true })
        let i
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const frame = buf.slice(0, i)
          buf = buf.slice(i + 2)
          sse.frames.push(frame)
          // `id: …` names an event; a frame without data (`retry: …`) carries none.
          const lines = frame.split('\n')
          const id = lines.find((l) => l.startsWith('id: '))
          const data = lines.find((l) => l.startsWith('data: '))
          if (lines.some((l) => !/^(id|data|retry): /.test(l))) throw new Error(`bad SSE frame ${JSON.stringify(frame)}`)
          if (id) sse.ids.push(id.slice(4))
          if (data) events.push(JSON.parse(data.slice(6)))
        }
        notify()
      }
    } catch (err) {
      if (err.name !== 'AbortError' && !ac.signal.aborted) sse.error = err
    } finally {
      sse.isEnded = true
      notify()
    }
  })()
  return sse
}

/** A promise with its resolve function, to hold a job at a known point. */
function gate() {
  let open
  const promise = new Promise((r) => (open = r))
  return { promise, open }
}

module.exports = { BASE, startServer, call, openSse, gate }
