'use strict'
// A TCP proxy in front of the test PostgreSQL server, to put a client in a
// precise network window (issue 16):
//
// - hold(): what the server sends on the connections open now is kept back
//   (bytes and its end) until release(): the client does not learn that its
//   server session was terminated, so its next request goes out on a dead
//   connection and is answered by the server's FATAL only when released;
// - sawHeld(text): whether a client sent `text` on a held connection;
// - delayAccept(ms): new connections are connected to the server only after
//   `ms` (a server slow to accept: the handshake waits);
// - refuse(): every connection cut, and new ones at once (a server gone).
//
// Only for tests; plain TCP (the URL's sslmode passes through unchanged).

const net = require('node:net')

/** Starts a proxy to the server of `url`; resolves with its controls and `url` pointing at it. */
async function startProxy(url) {
  const target = new URL(url)
  const conns = new Set()
  let acceptDelay = 0
  let refusing = false
  const server = net.createServer((client) => {
    if (refusing) return client.destroy()
    const c = { client, upstream: null, held: false, kept: [], ended: false, sentHeld: '' }
    conns.add(c)
    client.on('error', () => {})
    client.pause()
    const connect = () => {
      if (client.destroyed) return
      const upstream = net.connect(Number(target.port || 5432), target.hostname)
      c.upstream = upstream
      upstream.on('error', () => {})
      upstream.on('data', (b) => {
        if (c.held) c.kept.push(b)
        else client.write(b)
      })
      upstream.on('close', () => {
        if (c.held) c.ended = true
        else client.end()
      })
      client.on('data', (b) => {
        if (c.held) c.sentHeld += b.toString('latin1')
        if (!upstream.destroyed) upstream.write(b)
      })
      client.on('close', () => {
        conns.delete(c)
        upstream.destroy()
      })
      client.resume()
    }
    if (acceptDelay > 0) setTimeout(connect, acceptDelay)
    else connect()
  })
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  const proxied = new URL(url)
  proxied.hostname = '127.0.0.1'
  proxied.port = String(server.address().port)
  return {
    url: proxied.toString(),
    /** Connections open now (at least one side). */
    count: () => conns.size,
    hold() {
      for (const c of conns) c.held = true
    },
    release() {
      for (const c of conns) {
        if (!c.held) continue
        c.held = false
        for (const b of c.kept.splice(0)) c.client.write(b)
        if (c.ended) c.client.end()
      }
    },
    sawHeld: (text) => [...conns].some((c) => c.sentHeld.includes(text)),
    delayAccept(ms) {
      acceptDelay = ms
    },
    /** Cuts every connection now, and every new one at once (a server gone). */
    refuse() {
      refusing = true
      for (const c of conns) {
        c.client.destroy()
        c.upstream?.destroy()
      }
    },
    close() {
      for (const c of conns) {
        c.client.destroy()
        c.upstream?.destroy()
      }
      return new Promise((r) => server.close(r))
    },
  }
}

module.exports = { startProxy }
