'use strict'
// `npm run build` (and `prepare`, so `npm install` in a checkout or a git
// dependency): builds the native addon from source with `napi build`, after
// checking that Rust is there. Without this check a missing toolchain shows
// up as napi's "Internal Error: cargo metadata failed to run".
//
//   node scripts/build.js [--debug] [more napi build options]

const { spawnSync } = require('node:child_process')
const path = require('node:path')
const { RUST_URL } = require('../lib/platform')

const ROOT = path.join(__dirname, '..')

/** cargo's version line, or null when cargo cannot be run. */
function cargoVersion() {
  const r = spawnSync('cargo', ['--version'], { encoding: 'utf8' })
  return r.status === 0 ? r.stdout.trim() : null
}

function main(argv) {
  if (!cargoVersion()) {
    console.error(
      `durably: building the native addon needs Rust, and cargo was not found on PATH.\n` +
        `Install Rust from ${RUST_URL} (on Linux or macOS: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh),\n` +
        `open a new shell so that cargo is on PATH, and run the command again.`,
    )
    return 1
  }
  const debug = argv.includes('--debug')
  const rest = argv.filter((a) => a !== '--debug')
  const args = ['build', '--platform', '--features', 'node,postgres', '--no-js', '--dts', 'binding.d.ts', ...(debug ? [] : ['--release']), ...rest]
  const cli = path.dirname(require.resolve('@napi-rs/cli/package.json', { paths: [ROOT] }))
  const napi = path.join(cli, require(path.join(cli, 'package.json')).bin.napi)
  const r = spawnSync(process.execPath, [napi, ...args], { cwd: ROOT, stdio: 'inherit' })
  return r.status ?? 1
}

process.exitCode = main(process.argv.slice(2))
