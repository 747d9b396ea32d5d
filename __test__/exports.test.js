// Module formats: `require('durably')` and `import … from 'durably'` (the
// package's own name, resolved through package.json "exports") both work in
// a fresh Node process, and index.d.ts declares exactly the runtime exports.
import fs from 'node:fs'
import path from 'node:path'
import { describe, expect, test } from 'vitest'
import helpers from './helpers.js'

const { ROOT, tempDb, spawnNode } = helpers
const FIXTURES = path.join(ROOT, '__test__', 'fixtures')

/** Runs a fixture with a fresh database file; resolves its one JSON line. */
async function runFixture(file) {
  const db = tempDb()
  const p = spawnNode(path.join(FIXTURES, file), [db])
  const { code, signal, stderr } = await p.exited
  expect({ code, signal, stderr }).toEqual({ code: 0, signal: null, stderr: '' })
  expect(p.lines).toHaveLength(1)
  return JSON.parse(p.lines[0])
}

/** The value exports index.d.ts declares (functions and classes). */
function declaredValues() {
  const dts = fs.readFileSync(path.join(ROOT, 'index.d.ts'), 'utf8')
  return [...dts.matchAll(/^export declare (?:function|class) (\w+)/gm)].map((m) => m[1])
}

const results = {}

describe('module formats', () => {
  test('require("durably") from a .cjs file runs a job', async () => {
    const r = await runFixture('module-format.cjs')
    results.cjs = r
    expect(r.resolved).toBe(path.join(ROOT, 'index.js'))
    expect(r.output).toBe(42)
    expect(r.steps).toEqual(['double'])
    expect(r.validation).toBe('VALIDATION_ERROR')
  })

  test('import { createDurably } from "durably" in a .mjs file runs a job', async () => {
    const r = await runFixture('module-format.mjs')
    results.esm = r
    expect(r.resolved).toBe(`file://${path.join(ROOT, 'index.mjs')}`)
    expect(r.output).toBe(42)
    expect(r.steps).toEqual(['double'])
    expect(r.validation).toBe('VALIDATION_ERROR')
    // ESM named exports are the very objects CommonJS gets (one class identity).
    expect(r.sameAsCjs).toBe(true)
  })

  test('both formats export the same names, and index.d.ts declares exactly those', () => {
    expect(results.cjs && results.esm).toBeTruthy()
    expect(results.esm.exports).toEqual(results.cjs.exports)
    expect([...new Set(declaredValues())].sort()).toEqual(results.cjs.exports)
  })
})

test('the HTTP handler is loaded on first use, not by require("durably")', async () => {
  // A worker that never serves HTTP does not load lib/http*.js or node:crypto
  // (4–6 MB of resident memory); the first call loads them and works.
  const r = await runFixture('lazy-http.cjs')
  expect(r.before).toEqual({ http: [], crypto: false })
  expect(r.afterInit).toEqual({ http: [], crypto: false })
  expect(r.after.http).toEqual(expect.arrayContaining(['http.js', 'http-node.js', 'http-sse.js', 'ui/serve.js']))
  expect(r.after.crypto).toBe(true)
  expect(r.badNode).toBe('TypeError: toNodeHandler(handler, basePath): handler must come from createDurablyHandler()')
  expect(r.status).toBe(200)
  expect(r.runs).toEqual([])
  expect(r.nodeHandler).toBe('function')
})

test('package.json "exports" has types, import and require conditions', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'))
  const dot = pkg.exports['.']
  // `types` first: TypeScript takes the first matching condition.
  expect(Object.keys(dot)[0]).toBe('types')
  expect(dot).toMatchObject({ types: './index.d.ts', import: './index.mjs', require: './index.js' })
  expect(pkg.types).toBe('./index.d.ts')
  for (const f of ['index.js', 'index.mjs', 'index.d.ts']) {
    expect(pkg.files).toContain(f)
    expect(fs.existsSync(path.join(ROOT, f))).toBe(true)
  }
})
