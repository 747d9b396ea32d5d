// Serves the package root on http://127.0.0.1:8080 (a secure context, as OPFS
// needs) for the example: `npm run build:browser && node examples/browser/serve.mjs`,
// then open http://127.0.0.1:8080/examples/browser/
import fs from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const TYPES = { '.mjs': 'text/javascript', '.js': 'text/javascript', '.html': 'text/html', '.wasm': 'application/wasm' }
const port = Number(process.env.PORT ?? 8080)

http
  .createServer((req, res) => {
    let file = path.join(ROOT, path.normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname)))
    if (file.endsWith(path.sep)) file = path.join(file, 'index.html')
    if (!file.startsWith(ROOT + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404).end('not found')
      return
    }
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream' })
    fs.createReadStream(file).pipe(res)
  })
  .listen(port, '127.0.0.1', () => console.log(`http://127.0.0.1:${port}/examples/browser/`))
