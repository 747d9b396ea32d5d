// index.d.ts inference: `tsc --noEmit` over a typed fixture (and the
// examples), with TypeScript 5 and 7. A drift in inference fails an
// `Expect<Equal<…>>` or leaves an `@ts-expect-error` unused, and tsc exits
// non-zero. Then the declaration as a consumer sees it: the package's files
// alone in a fresh project, without @types/node or `types` of its own.
import fs from 'node:fs'
import path from 'node:path'
import { execFile } from 'node:child_process'
import { createRequire } from 'node:module'
import { describe, expect, test } from 'vitest'
import helpers from './helpers.js'

const { ROOT, tempDir } = helpers
const require = createRequire(import.meta.url)
const pkg = require('../package.json')

// TypeScript 7 is the devDependency alias `typescript-7` (npm:typescript@7), whose
// "exports" hide bin/: found next to its package.json.
const binOf = (name) => path.join(path.dirname(require.resolve(`${name}/package.json`)), 'bin', 'tsc')
const TSC = { 5: binOf('typescript'), 7: binOf('typescript-7') }

/** Runs a tsc in a child process; resolves { code, out }. */
function tsc(version, args, cwd = ROOT) {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [TSC[version], ...args],
      { cwd, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => resolve({ code: error ? (error.code ?? 1) : 0, out: `${stdout}${stderr}` }),
    )
  })
}

test('the TypeScript versions are the ones this suite claims', () => {
  expect(require('typescript/package.json').version).toMatch(/^5\./)
  expect(require('typescript-7/package.json').version).toMatch(/^7\./)
})

describe.each([5, 7])('TypeScript %i', (version) => {
  test('index.d.ts infers job, handle, event and error types (tsc --noEmit over the fixture and examples)', async () => {
    const r = await tsc(version, ['--noEmit', '--pretty', 'false', '-p', path.join(ROOT, '__test__', 'types', 'tsconfig.json')])
    // The compiler's messages are the useful failure output.
    expect(r.out).toBe('')
    expect(r.code).toBe(0)
  }, 180_000)
})

/**
 * A consumer project: __test__/types/consumer/* plus node_modules/durably holding
 * the files npm would pack (package.json "files" and package.json). @types/node,
 * a dependency of the package, is installed nested under durably (where npm
 * puts it when it cannot hoist), so the consumer has none of its own.
 */
function consumerProject({ withTypesNode = true } = {}) {
  const dir = tempDir('durably-consumer-')
  const src = path.join(ROOT, '__test__', 'types', 'consumer')
  for (const f of fs.readdirSync(src)) fs.copyFileSync(path.join(src, f), path.join(dir, f))
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ private: true, type: 'module' }))
  const installed = path.join(dir, 'node_modules', 'durably')
  // Glob entries (the built addon, durably.*.node) play no part in type-checking.
  // (browser/ exists once `npm run build:browser` ran; its types are in lib/browser/.)
  for (const f of [...pkg.files.filter((f) => !f.includes('*') && fs.existsSync(path.join(ROOT, f))), 'package.json']) fs.cpSync(path.join(ROOT, f), path.join(installed, f), { recursive: true })
  if (withTypesNode) {
    fs.mkdirSync(path.join(installed, 'node_modules', '@types'), { recursive: true })
    fs.symlinkSync(path.join(ROOT, 'node_modules', '@types', 'node'), path.join(installed, 'node_modules', '@types', 'node'), 'dir')
  }
  return dir
}

describe('index.d.ts in a consumer project (strict, nodenext, skipLibCheck false, no @types/node of its own)', () => {
  test('@types/node is a dependency of the package (the declaration references it)', () => {
    expect(fs.readFileSync(path.join(ROOT, 'index.d.ts'), 'utf8')).toMatch(/^\/\/\/ <reference types="node" \/>/)
    expect(pkg.dependencies['@types/node']).toBeDefined()
  })

  // No @types at the consumer's top level: TypeScript 5's automatic inclusion
  // finds nothing, like TypeScript 7's default `types: []`.
  test.each([5, 7])('TypeScript %i: compiles as is', async (version) => {
    const dir = consumerProject()
    const r = await tsc(version, ['-p', dir, '--pretty', 'false'], dir)
    expect(r.out).toBe('')
    expect(r.code).toBe(0)
  }, 180_000)

  test('without @types/node installed it fails, naming it (so the dependency is what makes it compile)', async () => {
    const dir = consumerProject({ withTypesNode: false })
    const r = await tsc(7, ['-p', dir, '--pretty', 'false'], dir)
    expect(r.code).not.toBe(0)
    expect(r.out).toMatch(/Cannot find type definition file for 'node'/)
  }, 180_000)
})
