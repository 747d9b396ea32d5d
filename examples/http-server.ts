// durably over HTTP: a node:http server mounting the handler at /api/durably
// with a tenant auth hook, and a client that triggers a run, follows it over
// server-sent events and lists its tenant's runs. Exits when done.
//
//   npx tsx examples/http-server.ts         (DURABLY_DB=path to choose the file)

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { z } from 'zod'
import { createDurably, createDurablyHandler, defineJob, toNodeHandler } from 'durably'

const dbPath = process.env.DURABLY_DB ?? path.join(os.tmpdir(), `durably-http-${process.pid}.db`)
if (!process.env.DURABLY_DB) {
  process.on('exit', () => ['', '-wal', '-shm'].forEach((s) => fs.rmSync(dbPath + s, { force: true })))
}

const resize = defineJob({
  name: 'resize-images',
  input: z.object({ images: z.array(z.string()) }),
  output: z.object({ resized: z.number() }),
  run: async (ctx, input) => {
    for (const [i, image] of input.images.entries()) {
      await ctx.run(`resize-${image}`, () => new Promise((r) => setTimeout(r, 20)))
      ctx.progress(i + 1, input.images.length, image)
    }
    return { resized: input.images.length }
  },
})

/** Reads `data: <json>` frames from a server-sent events response until it ends. */
async function* sse(res: Response): AsyncGenerator<{ type: string; [k: string]: unknown }> {
  const decoder = new TextDecoder()
  let buf = ''
  for await (const chunk of res.body!) {
    buf += decoder.decode(chunk, { stream: true })
    let end: number
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const frame = buf.slice(0, end)
      buf = buf.slice(end + 2)
      const data = frame
        .split('\n')
        .filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(5).trimStart())
        .join('\n')
      if (data) yield JSON.parse(data)
    }
  }
}

async function main() {
  const durably = createDurably({ path: dbPath, jobs: { resize } })
  await durably.init()

  // Every request names its tenant; runs carry it as a label and each tenant sees only its own.
  const handler = createDurablyHandler(durably, {
    auth: {
      authenticate: (request) => {
        const tenant = request.headers.get('x-tenant')
        if (!tenant) throw new Response(JSON.stringify({ error: 'x-tenant header required' }), { status: 401 })
        return { tenant }
      },
      onTrigger: (ctx, req) => ({ ...req, labels: { ...req.labels, tenant: ctx.tenant } }),
      onRunAccess: (ctx, run) => run.labels.tenant === ctx.tenant,
      scopeRuns: (ctx, filter) => ({ ...filter, labels: { ...filter.labels, tenant: ctx.tenant } }),
    },
  })
  const server = createServer(toNodeHandler(handler, '/api/durably'))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  // Shutdown: stop accepting requests; in-flight job functions get up to 10 s, then their
  // runs are handed back to `pending` for the next start.
  process.on('SIGTERM', () => {
    server.close()
    void durably.close({ timeout: 10_000 })
  })
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/durably`
  console.log(`listening    ${base}`)

  const headers = { 'content-type': 'application/json', 'x-tenant': 'acme' }
  const triggered = await fetch(`${base}/trigger`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ jobName: 'resize-images', input: { images: ['a.png', 'b.png', 'c.png'] } }),
  })
  const { runId, disposition } = (await triggered.json()) as { runId: string; disposition: string }
  console.log(`POST /trigger ${triggered.status} ${disposition}`)

  // The stream starts with the run's current state and ends after its terminal event.
  const events = await fetch(`${base}/subscribe?runId=${runId}`, { headers })
  for await (const e of sse(events)) {
    if (!e.type.startsWith('run:')) continue // step:* and log:write events come too
    const detail =
      e.type === 'run:progress'
        ? JSON.stringify(e.progress)
        : e.type === 'run:complete'
          ? JSON.stringify(e.output)
          : e.type === 'run:snapshot'
            ? (e.run as { status: string }).status
            : ''
    console.log(`SSE          ${e.type} ${detail}`.trimEnd())
  }

  const run = (await (await fetch(`${base}/run?runId=${runId}`, { headers })).json()) as {
    status: string
    isTerminal: boolean
    labels: Record<string, string>
  }
  console.log(`GET /run     ${run.status} terminal=${run.isTerminal} tenant=${run.labels.tenant}`)
  const mine = (await (await fetch(`${base}/runs`, { headers })).json()) as unknown[]
  const theirs = (await (await fetch(`${base}/runs`, { headers: { 'x-tenant': 'globex' } })).json()) as unknown[]
  console.log(`GET /runs    acme sees ${mine.length}, globex sees ${theirs.length}`)
  const hidden = await fetch(`${base}/run?runId=${runId}`, { headers: { 'x-tenant': 'globex' } })
  const anonymous = await fetch(`${base}/runs`)
  console.log(`other tenant ${hidden.status}, no tenant ${anonymous.status}`)

  await new Promise((resolve) => server.close(resolve))
  await durably.close()
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
