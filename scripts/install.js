'use strict'
// The published package's `install` script (`npm run pack` adds it; a
// checkout builds with `prepare` instead). Nothing to do when the addon loads,
// which is the case wherever a prebuilt package matches the platform.
// Otherwise it builds the addon from source with cargo, or, without Rust,
// leaves the install alone: `require('durably')` then throws one sentence
// naming the platform and the way out (binding.js).

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const ROOT = path.join(__dirname, '..')
const pkg = require(path.join(ROOT, 'package.json'))
const { currentPlatform } = require(path.join(ROOT, 'lib', 'platform.js'))

/** The error that loading the addon throws now, or null when it loads. */
function loadError() {
  try {
    require(path.join(ROOT, 'binding.js'))
    return null
  } catch (e) {
    return e
  }
}

function hasCargo() {
  return spawnSync('cargo', ['--version'], { stdio: 'ignore' }).status === 0
}

/**
 * npm unpacks every file with one old mtime (1985), so cargo, comparing
 * mtimes, would take the output of another durably version in a shared
 * CARGO_TARGET_DIR for up to date. Fresh mtimes make it rebuild this crate.
 */
function touchSources() {
  const now = new Date()
  const visit = (p) => {
    if (fs.statSync(p).isDirectory()) for (const e of fs.readdirSync(p)) visit(path.join(p, e))
    else fs.utimesSync(p, now, now)
  }
  for (const p of ['src', 'Cargo.toml', 'Cargo.lock', 'build.rs', '.cargo']) visit(path.join(ROOT, p))
}

/** Builds the cdylib with cargo and returns the path cargo wrote it to. */
function cargoBuild() {
  touchSources()
  const r = spawnSync('cargo', ['build', '--release', '--locked', '--features', 'node,postgres', '--message-format=json-render-diagnostics'], {
    cwd: ROOT,
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  if (r.status !== 0) throw new Error(`cargo build failed (${r.status ?? r.signal}); its output is above`)
  for (const line of r.stdout.split('\n')) {
    if (!line.startsWith('{')) continue
    const msg = JSON.parse(line)
    if (msg.reason !== 'compiler-artifact' || msg.target.name !== pkg.napi.binaryName || !msg.target.kind.includes('cdylib')) continue
    const lib = msg.filenames.find((f) => /\.(so|dylib|dll)$/.test(f))
    if (lib) return lib
  }
  throw new Error('cargo build reported no cdylib for durably')
}

/**
 * The platform npm installs for when told another one (`npm install
 * --cpu=arm64 --os=linux --libc=musl`, e.g. to bundle for a container or a
 * function): then a build here would make an addon for the wrong machine.
 * Null when npm installs for this machine.
 */
function otherTarget(platform) {
  const [os, cpu, libc] = platform.split('-')
  const wanted = { os: process.env.npm_config_os, cpu: process.env.npm_config_cpu, libc: process.env.npm_config_libc }
  const here = { os, cpu, libc: libc === 'musl' ? 'musl' : 'glibc' }
  const differs = Object.keys(here).some((k) => wanted[k] && wanted[k] !== here[k])
  return differs ? [wanted.os ?? os, wanted.cpu ?? cpu, wanted.libc ?? here.libc].join('-') : null
}

function main() {
  const platform = currentPlatform()
  const target = otherTarget(platform)
  if (target) {
    console.log(`durably: installing for ${target}, not this machine (${platform}): nothing to build here`)
    return 0
  }
  const before = loadError()
  if (!before) return 0
  if (!hasCargo()) {
    // npm shows this only with --foreground-scripts; require() repeats it.
    console.warn(before.message)
    return 0
  }
  console.log(`durably: building the native addon for ${platform} from source with cargo (${before.code}); this takes a few minutes`)
  const lib = cargoBuild()
  const dest = path.join(ROOT, `${pkg.napi.binaryName}.${platform}.node`)
  fs.copyFileSync(lib, dest)
  // Cargo's default target dir here is hundreds of MB that nothing needs any more.
  if (!process.env.CARGO_TARGET_DIR) fs.rmSync(path.join(ROOT, 'target'), { recursive: true, force: true })
  const after = loadError()
  if (after) throw after
  console.log(`durably: built ${path.basename(dest)}`)
  return 0
}

process.exitCode = main()
