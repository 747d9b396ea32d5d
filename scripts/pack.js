'use strict'
// `npm run pack`: the tarballs to publish, napi-rs style. One package per
// platform holding its prebuilt addon (`durably-linux-x64-gnu` …, folders in
// npm/), and the main package, which lists them all in optionalDependencies
// with its exact version and carries the Rust sources plus an install script
// that builds from source where no prebuilt package matches.
//
//   npm run pack -- [--out DIR] [--targets all|host|linux-x64-gnu,linux-arm64-musl,…] [--reuse-host] [--without-browser]
//
// Addons are built with cargo-zigbuild (zig from PyPI: `pip install ziglang
// cargo-zigbuild`, plus `rustup target add <triple>`), glibc ones against
// glibc GLIBC_FLOOR so that they load on every distribution Node 20 supports.
// --reuse-host packs the host platform's addon already built by `npm install`
// (`npm run build`) instead: quick, but linked against this machine's glibc.
// Writes DIR/pack.json naming each tarball.
// The main package ships the durably/browser bundle (browser/, built by
// `npm run build:browser`); pack refuses to run without it. --without-browser
// (for local tests on a machine without the wasm toolchain, never a release)
// packs without it and drops the `./browser` export, so no export points at a
// missing file.

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const { currentPlatform, npmFieldsOf, platformOfTriple } = require('../lib/platform')
const { checkAddon, readElf } = require('./elf')

const ROOT = path.join(__dirname, '..')
/** Node 20's own Linux binaries need glibc 2.28: prebuilt gnu addons need no more. */
const GLIBC_FLOOR = '2.28'

function parseArgs(argv) {
  const o = { out: path.join(ROOT, 'dist'), targets: 'all', reuseHost: false, withoutBrowser: false }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--out') o.out = path.resolve(argv[++i])
    else if (a === '--targets') o.targets = argv[++i]
    else if (a === '--reuse-host') o.reuseHost = true
    else if (a === '--without-browser') o.withoutBrowser = true
    else throw new Error(`unknown option '${a}' (known: --out DIR, --targets LIST, --reuse-host, --without-browser)`)
  }
  return o
}

function run(cmd, args, options = {}) {
  const r = spawnSync(cmd, args, { cwd: ROOT, stdio: 'inherit', ...options })
  if (r.error) throw new Error(`${cmd} could not be run: ${r.error.message}`)
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status ?? r.signal})`)
  return r
}

function output(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8' })
  return r.status === 0 ? r.stdout : null
}

/** mtime (ms) of the newest file the addon is built from. */
function newestSource() {
  let newest = 0
  const visit = (p) => {
    const st = fs.statSync(p)
    if (st.isDirectory()) for (const e of fs.readdirSync(p)) visit(path.join(p, e))
    else newest = Math.max(newest, st.mtimeMs)
  }
  for (const p of ['src', 'Cargo.toml', 'Cargo.lock', 'build.rs', '.cargo']) visit(path.join(ROOT, p))
  return newest
}

/** Throws with the install commands when cargo-zigbuild or the Rust target is missing. */
function checkCrossTools(triple) {
  const missing = []
  if (!output('cargo-zigbuild', ['--version'])) missing.push('cargo-zigbuild and zig (pip install ziglang cargo-zigbuild)')
  const installed = output('rustup', ['target', 'list', '--installed'])
  if (installed !== null && !installed.split('\n').includes(triple)) missing.push(`the Rust target (rustup target add ${triple})`)
  if (missing.length) {
    throw new Error(`building ${platformOfTriple(triple)} needs ${missing.join(' and ')}; or pack fewer targets with --targets`)
  }
}

/** Builds the addon for `triple` with cargo-zigbuild and returns its path. */
function crossBuild(triple) {
  checkCrossTools(triple)
  const platform = platformOfTriple(triple)
  const env = { ...process.env }
  let zigTarget = triple
  if (platform.endsWith('-gnu')) zigTarget = `${triple}.${GLIBC_FLOOR}`
  // Rust links musl statically by default, and a static musl cannot make a
  // cdylib: link musl dynamically, as the Node that loads the addon does.
  if (platform.endsWith('-musl')) env[`CARGO_TARGET_${triple.toUpperCase().replace(/-/g, '_')}_RUSTFLAGS`] = '-C target-feature=-crt-static'
  console.log(`== ${platform}: cargo zigbuild --target ${zigTarget}`)
  run('cargo', ['zigbuild', '--release', '--locked', '--features', 'node,postgres', '--target', zigTarget], { env })
  const targetDir = process.env.CARGO_TARGET_DIR ? path.resolve(process.env.CARGO_TARGET_DIR) : path.join(ROOT, 'target')
  return { file: path.join(targetDir, triple, 'release', 'libdurably.so'), maxGlibc: GLIBC_FLOOR }
}

/** The host addon that `npm run build` left in the checkout, if it is a current release build. */
function hostBuild(platform) {
  const file = path.join(ROOT, `durably.${platform}.node`)
  if (!fs.existsSync(file)) throw new Error(`--reuse-host: ${path.basename(file)} is missing: run npm run build`)
  if (fs.statSync(file).mtimeMs < newestSource()) throw new Error(`--reuse-host: ${path.basename(file)} is older than the Rust sources: run npm run build`)
  if (readElf(file).sections.includes('.debug_info')) throw new Error(`--reuse-host: ${path.basename(file)} is a debug build: run npm run build`)
  return { file, maxGlibc: null }
}

function npmPack(dir, out) {
  const r = spawnSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', out], { cwd: dir, encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`npm pack in ${dir} failed: ${r.stderr}`)
  return JSON.parse(r.stdout)[0].filename
}

/** Stages npm/<platform>/ with the addon and packs it. */
function packPlatform(pkg, platform, addon, stageRoot, out) {
  const folder = path.join(ROOT, 'npm', platform)
  const manifest = JSON.parse(fs.readFileSync(path.join(folder, 'package.json'), 'utf8'))
  const name = `${pkg.name}-${platform}`
  const binary = `${pkg.napi.binaryName}.${platform}.node`
  const expected = { name, version: pkg.version, main: binary, files: [binary], license: pkg.license, engines: pkg.engines, ...npmFieldsOf(platform) }
  for (const [k, v] of Object.entries(expected)) {
    if (JSON.stringify(manifest[k]) !== JSON.stringify(v)) {
      throw new Error(`npm/${platform}/package.json: ${k} is ${JSON.stringify(manifest[k])}, expected ${JSON.stringify(v)}`)
    }
  }
  const stage = path.join(stageRoot, platform)
  fs.cpSync(folder, stage, { recursive: true })
  fs.copyFileSync(path.join(ROOT, 'LICENSE'), path.join(stage, 'LICENSE'))
  fs.copyFileSync(addon, path.join(stage, binary))
  return npmPack(stage, out)
}

/** Stages the main package: its `files`, package.json for users (install script, optionalDependencies). */
function packMain(pkg, stageRoot, out, { withoutBrowser }) {
  const stage = path.join(stageRoot, 'main')
  fs.mkdirSync(stage, { recursive: true })
  const files = pkg.files.filter((f) => !f.endsWith('.node') && !(withoutBrowser && f === 'browser/'))
  if (!withoutBrowser && !fs.existsSync(path.join(ROOT, 'browser', 'index.mjs'))) {
    throw new Error('browser/ (the durably/browser bundle) is missing: run npm run build:browser before npm run pack (or --without-browser for a local test package)')
  }
  for (const f of [...files, 'README.md', 'LICENSE', 'CHANGELOG.md']) {
    fs.cpSync(path.join(ROOT, f), path.join(stage, f), { recursive: true })
  }
  const published = {}
  for (const [k, v] of Object.entries(pkg)) {
    if (k === 'devDependencies' || k === 'overrides') continue
    if (k === 'files') published.files = files
    else if (k === 'scripts') published.scripts = { install: 'node scripts/install.js' }
    else if (k === 'exports' && withoutBrowser) published.exports = Object.fromEntries(Object.entries(v).filter(([sub]) => sub !== './browser'))
    else published[k] = v
  }
  published.optionalDependencies = Object.fromEntries(pkg.napi.targets.map((t) => [`${pkg.name}-${platformOfTriple(t)}`, pkg.version]))
  fs.writeFileSync(path.join(stage, 'package.json'), `${JSON.stringify(published, null, 2)}\n`)
  return npmPack(stage, out)
}

function main(argv) {
  const o = parseArgs(argv)
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'))
  const host = currentPlatform()
  const byPlatform = new Map(pkg.napi.targets.map((t) => [platformOfTriple(t), t]))
  let wanted = [...byPlatform.keys()]
  if (o.targets === 'host') wanted = [host]
  else if (o.targets !== 'all') wanted = o.targets.split(',').map((p) => p.trim())
  for (const p of wanted) {
    if (!byPlatform.has(p)) throw new Error(`no prebuilt target '${p}' (package.json napi.targets: ${[...byPlatform.keys()].join(', ')})`)
  }

  fs.mkdirSync(o.out, { recursive: true })
  const stageRoot = fs.mkdtempSync(path.join(o.out, '.stage-'))
  try {
    const result = { version: pkg.version, main: null, platforms: {} }
    for (const platform of wanted) {
      const { file, maxGlibc } = o.reuseHost && platform === host ? hostBuild(platform) : crossBuild(byPlatform.get(platform))
      const elf = checkAddon(file, platform, { maxGlibc })
      console.log(`== ${platform}: ${elf.machine}, needs ${elf.needed.join(' ')}${elf.maxGlibc ? `, glibc ≥ ${elf.maxGlibc}` : ''}`)
      result.platforms[platform] = packPlatform(pkg, platform, file, stageRoot, o.out)
    }
    result.main = packMain(pkg, stageRoot, o.out, o)
    result.browser = !o.withoutBrowser
    fs.writeFileSync(path.join(o.out, 'pack.json'), `${JSON.stringify(result, null, 2)}\n`)
    for (const f of [result.main, ...Object.values(result.platforms)]) {
      console.log(`${f}  ${(fs.statSync(path.join(o.out, f)).size / 1024).toFixed(0)} KiB`)
    }
  } finally {
    fs.rmSync(stageRoot, { recursive: true, force: true })
  }
}

try {
  main(process.argv.slice(2))
} catch (e) {
  console.error(`npm run pack: ${e.message}`)
  process.exitCode = 1
}
