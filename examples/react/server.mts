// The example's server: durably + its HTTP handler under /api/durably, and
// the React app (app.tsx) bundled with esbuild at start-up.
//   npx tsx examples/react/server.mts     then open http://localhost:3000
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'
import { createDurably, createDurablyHandler, toNodeHandler, withLogPersistence } from 'durably'
import { jobs } from './jobs.mts'

const here = path.dirname(fileURLToPath(import.meta.url))
const durably = createDurably({ path: process.env.DURABLY_DB ?? path.join(os.tmpdir(), 'durably-react-example.db'), jobs })
durably.use(withLogPersistence())
await durably.init()

const bundle = await build({
  entryPoints: [path.join(here, 'app.tsx')],
  bundle: true,
  write: false,
  format: 'esm',
  jsx: 'automatic',
  define: { 'process.env.NODE_ENV': '"development"' },
})
const appJs = bundle.outputFiles[0].text
const page = `<!doctype html><html><head><meta charset="utf-8"><title>durably + React</title></head>
<body><div id="root"></div><script type="module" src="/app.js"></script></body></html>`

const api = toNodeHandler(createDurablyHandler(durably), '/api/durably')
const server = http.createServer((req, res) => {
  if (req.url?.startsWith('/api/durably')) return api(req, res)
  if (req.url === '/app.js') return res.writeHead(200, { 'content-type': 'text/javascript' }).end(appJs)
  if (req.url === '/' || req.url?.startsWith('/?')) return res.writeHead(200, { 'content-type': 'text/html' }).end(page)
  if (req.url === '/favicon.ico') return res.writeHead(204).end()
  res.writeHead(404).end()
})
server.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  const { port } = server.address() as { port: number }
  console.log(`listening on http://127.0.0.1:${port}`)
})

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    server.closeAllConnections()
    server.close()
    void durably.close()
  })
}
