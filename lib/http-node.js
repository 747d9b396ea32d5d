'use strict'
// node:http (and Express/Connect-style) adapter for the web-standard handler:
// IncomingMessage → Request, Response → ServerResponse, streaming both ways.

/** `/api/durably/` → `/api/durably`; `/` and '' → ''. */
function normalizeBase(basePath) {
  if (typeof basePath !== 'string') return ''
  let b = basePath.trim()
  while (b.endsWith('/')) b = b.slice(0, -1)
  if (b && !b.startsWith('/')) b = `/${b}`
  return b
}

/** The route path under `base`, or null when `pathname` is outside it. */
function routePath(pathname, base) {
  if (base && pathname !== base && !pathname.startsWith(`${base}/`)) return null
  let p = pathname.slice(base.length)
  while (p.length > 1 && p.endsWith('/')) p = p.slice(0, -1)
  return p || '/'
}

function requestUrl(req) {
  const raw = typeof req.originalUrl === 'string' ? req.originalUrl : req.url || '/'
  const host = typeof req.headers.host === 'string' ? req.headers.host : ''
  const proto = req.socket && req.socket.encrypted ? 'https' : 'http'
  try {
    return new URL(raw, `${proto}://${host}`)
  } catch {
    try {
      return new URL(raw, `${proto}://localhost`)
    } catch {
      return null
    }
  }
}

function requestHeaders(req) {
  const headers = new Headers()
  for (const [k, v] of Object.entries(req.headers)) {
    try {
      if (Array.isArray(v)) for (const x of v) headers.append(k, x)
      else if (v !== undefined) headers.set(k, String(v))
    } catch {
      // HTTP/2 pseudo-headers and values Headers refuses are left out
    }
  }
  return headers
}

/**
 * The request body as a web stream, paused while the consumer is behind.
 * `req.resume()` after `discard` drops whatever is left.
 */
function requestBody(req, state) {
  let done = false
  state.discard = () => {
    done = true
  }
  return new ReadableStream({
    start(controller) {
      req.on('data', (chunk) => {
        if (done) return
        if (typeof chunk === 'string') chunk = Buffer.from(chunk)
        controller.enqueue(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength))
        if (controller.desiredSize <= 0) req.pause()
      })
      req.once('end', () => {
        if (done) return
        done = true
        controller.close()
      })
      const fail = () => {
        if (done) return
        done = true
        controller.error(new Error('request body aborted'))
      }
      req.once('error', fail)
      req.once('close', () => {
        if (!req.complete) fail()
      })
    },
    pull() {
      req.resume()
    },
    cancel() {
      // Drain and drop the rest so the socket can still carry the response.
      done = true
      req.resume()
    },
  })
}

/** A body that Express/Connect middleware (body-parser) already consumed. */
function parsedBody(req) {
  if (req.body === undefined || !req.readableEnded) return undefined
  const b = req.body
  if (typeof b === 'string' || b instanceof Uint8Array) return b
  return JSON.stringify(b)
}

function plain(res, status, message) {
  if (res.headersSent) return res.destroy()
  const body = JSON.stringify({ error: message })
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}

function waitWritable(res) {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done)
      res.off('close', done)
      resolve()
    }
    res.on('drain', done)
    res.on('close', done)
  })
}

async function writeResponse(req, res, response, method, body) {
  if (res.destroyed || res.writableEnded) {
    if (response.body) await response.body.cancel().catch(() => {})
    return
  }
  res.statusCode = response.status
  if (response.statusText) res.statusMessage = response.statusText
  const cookies = typeof response.headers.getSetCookie === 'function' ? response.headers.getSetCookie() : []
  response.headers.forEach((v, k) => {
    if (k !== 'set-cookie') res.setHeader(k, v)
  })
  if (cookies.length) res.setHeader('set-cookie', cookies)
  if (!req.complete) {
    // Answered before the body was read (e.g. 413): drop the rest and do not
    // reuse the connection, as node:http does for unread bodies.
    res.setHeader('connection', 'close')
    res.once('finish', () => {
      if (body.discard) body.discard()
      req.resume()
    })
  }
  if (!response.body || method === 'HEAD') {
    if (response.body) await response.body.cancel().catch(() => {})
    res.end()
    return
  }
  const reader = response.body.getReader()
  const onClose = () => reader.cancel().catch(() => {})
  res.once('close', onClose)
  if (String(response.headers.get('content-type')).startsWith('text/event-stream')) res.flushHeaders()
  try {
    for (;;) {
      const { value, done } = await reader.read()
      if (done) break
      if (res.destroyed) return
      if (!res.write(value)) await waitWritable(res)
    }
    res.end()
  } catch {
    res.destroy()
  } finally {
    res.off('close', onClose)
  }
}

async function serve(handler, base, req, res, next) {
  const url = requestUrl(req)
  if (!url) return plain(res, 400, 'malformed request URL')
  if (typeof next === 'function' && routePath(url.pathname, base) === null) return next()
  const aborter = new AbortController()
  const onClose = () => {
    if (!res.writableFinished) aborter.abort()
  }
  res.once('close', onClose)
  const method = req.method || 'GET'
  const init = { method, headers: requestHeaders(req), signal: aborter.signal }
  const body = { discard: null }
  if (method !== 'GET' && method !== 'HEAD') {
    const parsed = parsedBody(req)
    if (parsed !== undefined) init.body = parsed
    else {
      init.body = requestBody(req, body)
      init.duplex = 'half'
    }
  }
  let request
  try {
    request = new Request(url, init)
  } catch {
    // e.g. CONNECT/TRACE, which web Requests cannot carry
    return plain(res, 405, `method ${method} not allowed`)
  }
  const response = await handler.handle(request, base)
  await writeResponse(req, res, response, method, body)
}

/**
 * Adapts a durably handler to `node:http` / Express-style `(req, res, next?)`.
 * With `next`, requests outside `basePath` are passed on instead of 404.
 */
function toNodeHandler(handler, basePath = '') {
  if (!handler || typeof handler.handle !== 'function') {
    throw new TypeError('toNodeHandler(handler, basePath): handler must come from createDurablyHandler()')
  }
  const base = normalizeBase(basePath)
  return function durablyNodeHandler(req, res, next) {
    serve(handler, base, req, res, next).catch(() => {
      try {
        plain(res, 500, 'internal error')
      } catch {
        // the socket is gone
      }
    })
  }
}

module.exports = { toNodeHandler, normalizeBase, routePath }
