// Server-sent events over fetch (not EventSource: it cannot send headers, and
// resuming needs our own cursor). Only `fetch` and web streams are used, so it
// runs in browsers, Node >= 20, Deno and Bun.

/**
 * Parses an SSE byte stream into `{ id, data }` messages (the `event:` and
 * `retry:` fields are read and ignored; comments are skipped). Follows the
 * WHATWG rules: lines end in \n, \r\n or \r; a blank line dispatches.
 */
export async function* sseMessages(body, signal) {
  const reader = body.getReader()
  const decoder = new TextDecoder()
  let buf = ''
  let data = []
  let id = null
  const onAbort = () => reader.cancel().catch(() => {})
  if (signal) signal.addEventListener('abort', onAbort, { once: true })
  try {
    for (;;) {
      const { value, done } = await reader.read()
      if (done) return
      buf += decoder.decode(value, { stream: true })
      for (;;) {
        const m = /\r\n|\r|\n/.exec(buf)
        if (!m) break
        // A lone \r at the end may be the first half of \r\n: wait for more.
        if (m[0] === '\r' && m.index === buf.length - 1) break
        const line = buf.slice(0, m.index)
        buf = buf.slice(m.index + m[0].length)
        if (line === '') {
          if (data.length) yield { id, data: data.join('\n') }
          data = []
          id = null
          continue
        }
        if (line.startsWith(':')) continue
        const colon = line.indexOf(':')
        const field = colon < 0 ? line : line.slice(0, colon)
        let v = colon < 0 ? '' : line.slice(colon + 1)
        if (v.startsWith(' ')) v = v.slice(1)
        if (field === 'data') data.push(v)
        else if (field === 'id') id = v
      }
    }
  } finally {
    if (signal) signal.removeEventListener('abort', onAbort)
    reader.cancel().catch(() => {})
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function pause(ms, signal) {
  return new Promise((resolve) => {
    if (signal && signal.aborted) return resolve()
    const done = () => {
      clearTimeout(timer)
      if (signal) signal.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    if (signal) signal.addEventListener('abort', done, { once: true })
  })
}
