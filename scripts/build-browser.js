'use strict'
// `npm run build:browser`: the `durably/browser` bundle in browser/ (shipped
// in the package): the Rust store compiled to wasm32-unknown-unknown
// (`--features browser`, src/browser.rs) with its wasm-bindgen glue, the
// dedicated Worker (lib/browser/worker.mjs) and the page's module
// (lib/browser/index.mjs bundled with esbuild). Installs what is missing of
// the toolchain (never part of `npm install`): the wasm32 target, and
// wasm-bindgen-cli at exactly the wasm-bindgen version of Cargo.lock. SQLite's
// C source is compiled for wasm32 by clang (Debian: apt-get install clang).
//
//   node scripts/build-browser.js [--debug]

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const zlib = require('node:zlib')

const ROOT = path.join(__dirname, '..')
const OUT = path.join(ROOT, 'browser')
const TARGET = 'wasm32-unknown-unknown'

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: ROOT, stdio: 'inherit', ...opts })
  if (r.error) throw new Error(`${cmd} could not run: ${r.error.message}`)
  return r.status
}

function output(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8' })
  return r.status === 0 ? r.stdout.trim() : null
}

/** Retries a slow download a few times (rustup times out now and then). */
function retried(what, fn) {
  for (let i = 1; i <= 3; i++) {
    if (fn() === 0) return
    console.error(`${what} failed (try ${i} of 3)`)
  }
  throw new Error(`${what} failed three times`)
}

/** The wasm-bindgen crate version locked in Cargo.lock (the CLI must match it exactly). */
function lockedWasmBindgen() {
  const lock = fs.readFileSync(path.join(ROOT, 'Cargo.lock'), 'utf8')
  const m = /\[\[package\]\]\nname = "wasm-bindgen"\nversion = "([^"]+)"/.exec(lock)
  if (!m) throw new Error('Cargo.lock has no wasm-bindgen package (is the browser feature in Cargo.toml?)')
  return m[1]
}

function ensureToolchain() {
  const targets = output('rustup', ['target', 'list', '--installed'])
  if (targets === null) throw new Error('rustup not found: the browser build needs Rust from https://rustup.rs')
  if (!targets.split('\n').includes(TARGET)) {
    retried(`rustup target add ${TARGET}`, () => run('rustup', ['target', 'add', TARGET]))
  }
  const want = lockedWasmBindgen()
  const have = output('wasm-bindgen', ['--version'])
  if (have !== `wasm-bindgen ${want}`) {
    console.log(`== installing wasm-bindgen-cli ${want} (found: ${have ?? 'none'}; takes minutes)`)
    retried('cargo install wasm-bindgen-cli', () => run('cargo', ['install', 'wasm-bindgen-cli', '--version', want]))
  }
  if (output('clang', ['--version']) === null) {
    throw new Error(
      "clang not found: SQLite's C source is compiled for wasm32 by clang (Debian/Ubuntu: apt-get install clang; macOS: Xcode's clang)",
    )
  }
}

function gzipSize(file) {
  return zlib.gzipSync(fs.readFileSync(file), { level: 9 }).length
}

async function main(argv) {
  const debug = argv.includes('--debug')
  ensureToolchain()
  const profile = debug ? 'debug' : 'release'
  const cargoArgs = ['build', '--lib', '--target', TARGET, '--features', 'browser', ...(debug ? [] : ['--release'])]
  const env = {
    ...process.env,
    // getrandom (ulid's ids) takes its randomness from crypto.getRandomValues.
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS: '--cfg getrandom_backend="wasm_js"',
  }
  if (run('cargo', cargoArgs, { env }) !== 0) return 1
  const wasm = path.join(ROOT, 'target', TARGET, profile, 'durably.wasm')
  fs.rmSync(OUT, { recursive: true, force: true })
  fs.mkdirSync(OUT)
  const bindgen = ['--target', 'web', '--out-dir', OUT, '--out-name', 'durably_wasm', '--no-typescript', wasm]
  if (run('wasm-bindgen', bindgen) !== 0) return 1
  fs.copyFileSync(path.join(ROOT, 'lib', 'browser', 'worker.mjs'), path.join(OUT, 'worker.mjs'))
  const esbuild = require('esbuild')
  await esbuild.build({
    entryPoints: [path.join(ROOT, 'lib', 'browser', 'index.mjs')],
    outfile: path.join(OUT, 'index.mjs'),
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    alias: {
      'node:async_hooks': path.join(ROOT, 'lib', 'browser', 'shims', 'async_hooks.js'),
      'node:util': path.join(ROOT, 'lib', 'browser', 'shims', 'util.js'),
    },
    inject: [path.join(ROOT, 'lib', 'browser', 'shims', 'buffer.js')],
    banner: { js: '// durably/browser: built by `npm run build:browser` from lib/browser/index.mjs (do not edit)' },
    logLevel: 'warning',
  })
  const wasmOut = path.join(OUT, 'durably_wasm_bg.wasm')
  const raw = fs.statSync(wasmOut).size
  const mb = (n) => `${(n / 1024 / 1024).toFixed(2)} MB`
  console.log(`durably/browser built in browser/: wasm ${mb(raw)} raw, ${mb(gzipSize(wasmOut))} gzipped`)
  return 0
}

main(process.argv.slice(2)).then(
  (code) => (process.exitCode = code),
  (err) => {
    console.error(`durably: build:browser failed: ${err.message}`)
    process.exitCode = 1
  },
)
