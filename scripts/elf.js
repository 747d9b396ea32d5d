'use strict'
// Reads what a Linux addon was built for from its ELF header and dynamic
// section, without binutils: the CPU (e_machine), the shared libraries it
// needs (DT_NEEDED) and the newest glibc symbol version it asks for. `npm run
// pack` refuses an artifact built for the wrong platform, and the packaging
// test checks every packed addon with it.

const fs = require('node:fs')

const MACHINES = { 0x3e: 'x64', 0xb7: 'arm64', 0x03: 'ia32', 0x28: 'arm' }

/** Reads the `.node` file at `file`; throws when it is not a 64-bit little-endian ELF shared object. */
function readElf(file) {
  const buf = fs.readFileSync(file)
  if (buf.length < 64 || buf.readUInt32BE(0) !== 0x7f454c46) throw new Error(`${file} is not an ELF file`)
  if (buf[4] !== 2 || buf[5] !== 1) throw new Error(`${file} is not a 64-bit little-endian ELF file`)
  const type = buf.readUInt16LE(0x10)
  if (type !== 3) throw new Error(`${file} is not a shared object (e_type ${type})`)
  const machine = buf.readUInt16LE(0x12)

  const shoff = Number(buf.readBigUInt64LE(0x28))
  const shentsize = buf.readUInt16LE(0x3a)
  const shnum = buf.readUInt16LE(0x3c)
  const shstrndx = buf.readUInt16LE(0x3e)
  const section = (i) => {
    const at = shoff + i * shentsize
    return {
      nameOff: buf.readUInt32LE(at),
      type: buf.readUInt32LE(at + 4),
      offset: Number(buf.readBigUInt64LE(at + 0x18)),
      size: Number(buf.readBigUInt64LE(at + 0x20)),
      link: buf.readUInt32LE(at + 0x28),
    }
  }
  const cstr = (at) => buf.toString('latin1', at, buf.indexOf(0, at))
  const shstr = section(shstrndx)
  const sections = Array.from({ length: shnum }, (_, i) => section(i)).map((s) => ({ ...s, name: cstr(shstr.offset + s.nameOff) }))

  const dynamic = sections.find((s) => s.type === 6) // SHT_DYNAMIC
  if (!dynamic) throw new Error(`${file} has no dynamic section`)
  const dynstr = sections[dynamic.link]
  const needed = []
  for (let at = dynamic.offset; at + 16 <= dynamic.offset + dynamic.size; at += 16) {
    const tag = Number(buf.readBigInt64LE(at))
    if (tag === 0) break
    if (tag === 1) needed.push(cstr(dynstr.offset + Number(buf.readBigUInt64LE(at + 8)))) // DT_NEEDED
  }
  // Version names (GLIBC_2.28 …) live in the dynamic string table too.
  const strings = buf.toString('latin1', dynstr.offset, dynstr.offset + dynstr.size).split('\0')
  const glibc = strings
    .filter((s) => /^GLIBC_\d+(\.\d+)*$/.test(s))
    .map((s) => s.slice(6))
    .sort(compareVersions)
  return {
    machine: MACHINES[machine] ?? `e_machine ${machine}`,
    sections: sections.map((s) => s.name),
    needed,
    maxGlibc: glibc.length ? glibc[glibc.length - 1] : null,
  }
}

function compareVersions(a, b) {
  const x = a.split('.').map(Number)
  const y = b.split('.').map(Number)
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0)
  }
  return 0
}

/**
 * Throws unless the addon at `file` fits `platform` (`linux-arm64-musl` …):
 * the CPU must match, a gnu addon needs glibc's libc.so.6 (no newer than
 * `maxGlibc` when given), a musl addon needs no glibc at all.
 */
function checkAddon(file, platform, { maxGlibc } = {}) {
  const [os, cpu, abi] = platform.split('-')
  if (os !== 'linux') throw new Error(`checkAddon reads Linux addons only, not ${platform}`)
  const elf = readElf(file)
  const problems = []
  if (elf.machine !== cpu) problems.push(`built for ${elf.machine}, not ${cpu}`)
  if (abi === 'gnu') {
    if (!elf.needed.includes('libc.so.6')) problems.push(`needs no glibc (needs ${elf.needed.join(', ')})`)
    if (maxGlibc && elf.maxGlibc && compareVersions(elf.maxGlibc, maxGlibc) > 0) problems.push(`needs glibc ${elf.maxGlibc}, newer than ${maxGlibc}`)
  } else if (abi === 'musl') {
    if (elf.needed.includes('libc.so.6') || elf.maxGlibc) problems.push(`needs glibc (${elf.needed.join(', ')}; GLIBC_${elf.maxGlibc})`)
    if (!elf.needed.some((n) => n === 'libc.so' || n.startsWith('libc.musl-'))) problems.push(`needs no musl libc (needs ${elf.needed.join(', ')})`)
  } else {
    problems.push(`unknown libc '${abi}'`)
  }
  if (problems.length) throw new Error(`${file} does not fit ${platform}: ${problems.join('; ')}`)
  return elf
}

module.exports = { readElf, checkAddon, compareVersions }
