// durably/client and durably/react bundle without server code (esbuild's
// metafile lists every input), and the client runs where there is nothing
// but fetch and web streams: a vm context without process, require or Buffer.

import { describe, it, expect, beforeAll, afterAll } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import vm from 'node:vm'
import esbuild from 'esbuild'
import durablyPkg from '../index.js'
import helpers from './helpers.js'
import httpHelpers from './http-helpers.js'

const { defineJob } = durablyPkg
const { makeDurably, closeAll, ROOT } = helpers
const { startServer } = httpHelpers

/** Bundles `source` (TypeScript, in a temp dir under the repo) for the browser; returns { text, inputs }. */
async function bundle(source, options = {}) {
  const dir = fs.mkdtempSync(path.join(ROOT, '__test__', 'browser', '.bundle-'))
  try {
    const entry = path.join(dir, 'entry.ts')
    fs.writeFileSync(entry, source)
    const r = await esbuild.build({
      entryPoints: [entry],
      absWorkingDir: ROOT,
      bundle: true,
      write: false,
      platform: 'browser',
      metafile: true,
      logLevel: 'silent',
      define: { 'process.env.NODE_ENV': '"production"' },
      ...options,
    })
    return { text: r.outputFiles[0].text, inputs: Object.keys(r.metafile.inputs) }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

const SERVER_FILES = /^(index\.(js|mjs)|binding\.js|lib\/(durably|execution|http[^/]*|writer|values|records|job|schema|options|events|errors)\.js)$|\.node$/

describe('bundles', () => {
  it('durably/client with a type-only import of the server jobs pulls in nothing from the server', async () => {
    const { text, inputs } = await bundle(`
      import type { Durably } from 'durably'
      import { createDurablyClient } from 'durably/client'
      declare const server: Durably<{}>
      export const client = createDurablyClient<typeof server>({ baseUrl: '/api/durably' })
    `, { format: 'esm' })
    expect(inputs.filter((f) => !f.includes('.bundle-')).sort()).toEqual(['lib/client-sse.mjs', 'lib/client.mjs'])
    expect(inputs.some((f) => SERVER_FILES.test(f))).toBe(false)
    expect(text).not.toMatch(/require\(|node:|process\.|Buffer/)
    // Small: a browser pays for what it uses.
    expect(text.length).toBeLessThan(30_000)
  })

  it('durably/react pulls in React and its own two files, no server code', async () => {
    const { inputs } = await bundle(`
      import { useJob, DurablyProvider } from 'durably/react'
      export { useJob, DurablyProvider }
    `, { format: 'esm' })
    const ours = inputs.filter((f) => !f.includes('node_modules') && !f.includes('.bundle-')).sort()
    // The hooks take the client as a value: they import no client code themselves.
    expect(ours).toEqual(['lib/react-store.mjs', 'lib/react.mjs'])
    expect(inputs.some((f) => f.includes('node_modules/react/'))).toBe(true)
    expect(inputs.some((f) => SERVER_FILES.test(f))).toBe(false)
  })

  it('a plain value import from the server would be caught by the same check', async () => {
    // The guard's own test: importing the server for real drags index.js in.
    const { inputs } = await bundle(`
      import { defineJob } from 'durably'
      export const d = defineJob
    `, { format: 'esm', platform: 'node', external: ['*.node'] })
    expect(inputs.filter((f) => SERVER_FILES.test(f))).toEqual(expect.arrayContaining(['index.mjs', 'lib/durably.js']))
  })
})

describe('runtime with only fetch and web streams', () => {
  let durably
  let srv

  beforeAll(async () => {
    durably = makeDurably({
      jobs: {
        add: defineJob({
          name: 'add',
          run: async (ctx, input) => {
            const sum = await ctx.run('sum', () => input.a + input.b)
            ctx.progress(1, 1)
            return { sum }
          },
        }),
      },
    })
    await durably.init()
    srv = await startServer(durably, { sseThrottleMs: 0 })
  })

  afterAll(async () => {
    if (srv) await srv.close()
    await closeAll()
  })

  it('triggerAndWait and subscribe in a vm context without process, require or Buffer', async () => {
    const { text } = await bundle(`
      import { createDurablyClient } from 'durably/client'
      globalThis.DurablyClient = { createDurablyClient }
    `, { format: 'iife' })
    const context = vm.createContext({
      fetch,
      Headers,
      Request,
      Response,
      ReadableStream,
      TextDecoder,
      TextEncoder,
      AbortController,
      URLSearchParams,
      setTimeout,
      clearTimeout,
    })
    context.globalThis = context
    vm.runInContext(text, context)
    expect(vm.runInContext('typeof process + typeof require + typeof Buffer', context)).toBe('undefinedundefinedundefined')
    const result = await vm.runInContext(
      `(async () => {
        const client = DurablyClient.createDurablyClient({ baseUrl: ${JSON.stringify(srv.url(''))} })
        const done = await client.triggerAndWait('add', { a: 2, b: 3 }, { timeout: 10000 })
        const types = []
        for await (const e of client.subscribe(done.runId)) types.push(e.type)
        return { output: done.output, types }
      })()`,
      context,
    )
    expect(result.output).toEqual({ sum: 5 })
    // A finished run's stream: its snapshot, then the end.
    expect(result.types).toEqual(['run:snapshot'])
  })
})
