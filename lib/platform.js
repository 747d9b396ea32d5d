'use strict'
// Platform names of durably's native addon, in napi-rs's convention
// (`linux-x64-gnu`, `linux-arm64-musl`, `darwin-arm64`, `win32-x64-msvc`):
// the suffix of the prebuilt package `durably-<platform>` and of the file
// `durably.<platform>.node` that a build from source leaves in the package.
// The loader (binding.js), the install script and `npm run pack` all name
// platforms through this file, so they cannot disagree.

const fs = require('node:fs')

/** Where to get Rust, quoted in every message that asks for it. */
const RUST_URL = 'https://rustup.rs'

/** True when this Node runs on musl (Alpine) rather than glibc. */
function isMusl() {
  // Alpine's ldd is musl's; glibc's ldd script names GNU. Cheap, no child process.
  try {
    const ldd = fs.readFileSync('/usr/bin/ldd', 'latin1')
    if (ldd.includes('musl')) return true
    if (ldd.includes('GNU') || ldd.includes('glibc')) return false
  } catch {
    // no ldd (a minimal image): ask Node itself below
  }
  // A glibc Node reports the glibc it runs on; a musl Node reports none.
  const report = process.report
  if (!report || typeof report.getReport !== 'function') return false
  const before = report.excludeNetwork
  report.excludeNetwork = true
  try {
    return !report.getReport().header.glibcVersionRuntime
  } finally {
    report.excludeNetwork = before
  }
}

/** This process's platform name, e.g. `linux-x64-gnu`. */
function currentPlatform() {
  const { platform, arch } = process
  if (platform === 'linux') {
    const libc = isMusl() ? 'musl' : 'gnu'
    return arch === 'arm' ? `linux-arm-${libc}eabihf` : `linux-${arch}-${libc}`
  }
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

const ARCH_OF_CPU = {
  x86_64: 'x64',
  aarch64: 'arm64',
  i686: 'ia32',
  armv7: 'arm',
  riscv64gc: 'riscv64',
  powerpc64le: 'ppc64',
  s390x: 's390x',
}

/** The platform name of a Rust target triple: `aarch64-unknown-linux-musl` → `linux-arm64-musl`. */
function platformOfTriple(triple) {
  const [cpu, , sys, abi] = String(triple).split('-')
  const arch = ARCH_OF_CPU[cpu]
  if (arch && sys === 'linux' && abi) return `linux-${arch}-${abi}`
  if (arch && sys === 'darwin') return `darwin-${arch}`
  if (arch && sys === 'windows' && abi === 'msvc') return `win32-${arch}-msvc`
  if (arch && sys === 'freebsd') return `freebsd-${arch}`
  throw new Error(`no platform name for the Rust target '${triple}' (known CPUs: ${Object.keys(ARCH_OF_CPU).join(', ')})`)
}

/** `os`, `cpu` and `libc` fields of the package that holds a platform's prebuilt addon. */
function npmFieldsOf(platform) {
  const [os, cpu, abi] = platform.split('-')
  const fields = { os: [os], cpu: [cpu] }
  if (os === 'linux') fields.libc = [abi.startsWith('musl') ? 'musl' : 'glibc']
  return fields
}

/** The platforms that have a prebuilt package, from package.json's `napi.targets`. */
function prebuiltPlatforms(pkg) {
  return pkg.napi.targets.map(platformOfTriple)
}

module.exports = { RUST_URL, currentPlatform, platformOfTriple, npmFieldsOf, prebuiltPlatforms }
