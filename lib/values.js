'use strict'
// Stored values: JSON text an operator can read. Plain JSON takes the fast
// path (one check walk, then the engine's own JSON.stringify, no tags). Other
// values are written as small tagged objects: {"$t": "<Type>", "v": …}.
//
//   undefined            {"$t":"undefined"}        (also inside objects/arrays)
//   NaN, ±Infinity, -0   {"$t":"Number","v":"NaN"}
//   BigInt               {"$t":"BigInt","v":"123"}
//   Date                 {"$t":"Date","v":"2024-01-01T00:00:00.000Z"} (invalid Date: v null)
//   Map                  {"$t":"Map","v":[[key, value], …]}
//   Set                  {"$t":"Set","v":[item, …]}
//   Uint8Array / Buffer  {"$t":"Uint8Array"|"Buffer","v":"<base64>"}
//   an object with its own "$t" key   {"$t":"Object","v":{…}}
//
// Functions, symbols, cycles, class instances (their prototype would be
// lost), WeakMap/WeakSet, Promises and other typed arrays are refused with a
// ValidationError naming the path, e.g. `result.users[3].callback`.

const { ValidationError } = require('./errors')

const TAG = '$t'
const TAG_TEXT = '"$t"'
const MAX_PLAIN_DEPTH = 512

function isPlain(v, depth) {
  switch (typeof v) {
    case 'string':
    case 'boolean':
      return true
    case 'number':
      return Number.isFinite(v) && (v !== 0 || 1 / v > 0)
    case 'object': {
      if (v === null) return true
      if (depth > MAX_PLAIN_DEPTH) return false // maybe a cycle: let the slow path say
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length; i++) if (!isPlain(v[i], depth + 1)) return false
        return true
      }
      const proto = Object.getPrototypeOf(v)
      if (proto !== Object.prototype && proto !== null) return false
      for (const k in v) {
        if (k === TAG || !isPlain(v[k], depth + 1)) return false
      }
      return true
    }
    default:
      return false
  }
}

function keyPath(path, key) {
  return /^[A-Za-z_$][\w$]*$/.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`
}

function refuse(path, what) {
  throw new ValidationError(`${path} ${what}`)
}

function describe(v) {
  const ctor = v && v.constructor && typeof v.constructor.name === 'string' ? v.constructor.name : 'unknown'
  return ctor
}

function tag(t, v) {
  return v === undefined ? { [TAG]: t } : { [TAG]: t, v }
}

function toTagged(v, path, stack) {
  switch (typeof v) {
    case 'string':
    case 'boolean':
      return v
    case 'undefined':
      return tag('undefined')
    case 'number':
      if (Number.isNaN(v)) return tag('Number', 'NaN')
      if (v === Infinity) return tag('Number', 'Infinity')
      if (v === -Infinity) return tag('Number', '-Infinity')
      if (v === 0 && 1 / v < 0) return tag('Number', '-0')
      return v
    case 'bigint':
      return tag('BigInt', v.toString())
    case 'function':
      return refuse(path, 'is a function, which cannot be stored')
    case 'symbol':
      return refuse(path, 'is a symbol, which cannot be stored')
    default:
      break
  }
  if (v === null) return null
  if (stack.includes(v)) refuse(path, 'is a circular reference, which cannot be stored')
  stack.push(v)
  try {
    if (Array.isArray(v)) {
      const out = new Array(v.length)
      for (let i = 0; i < v.length; i++) out[i] = toTagged(v[i], `${path}[${i}]`, stack)
      return out
    }
    const proto = Object.getPrototypeOf(v)
    if (proto === Object.prototype || proto === null) {
      const out = {}
      for (const k of Object.keys(v)) out[k] = toTagged(v[k], keyPath(path, k), stack)
      return Object.prototype.hasOwnProperty.call(v, TAG) ? tag('Object', out) : out
    }
    if (v instanceof Date) return tag('Date', Number.isNaN(v.getTime()) ? null : v.toISOString())
    if (proto === Map.prototype) {
      let i = 0
      const entries = []
      for (const [k, val] of v) {
        entries.push([toTagged(k, `${path}<key ${i}>`, stack), toTagged(val, `${path}<value ${i}>`, stack)])
        i++
      }
      return tag('Map', entries)
    }
    if (proto === Set.prototype) {
      let i = 0
      const items = []
      for (const it of v) items.push(toTagged(it, `${path}<item ${i++}>`, stack))
      return tag('Set', items)
    }
    if (Buffer.isBuffer(v)) return tag('Buffer', v.toString('base64'))
    if (proto === Uint8Array.prototype) {
      return tag('Uint8Array', Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64'))
    }
    if (typeof v.then === 'function') {
      return refuse(path, 'is a Promise, which cannot be stored (did you forget an await?)')
    }
    return refuse(
      path,
      `is a ${describe(v)} instance, which cannot be stored (its prototype would be lost); convert it to a plain value`,
    )
  } finally {
    stack.pop()
  }
}

/**
 * Encodes a value as stored JSON text. `path` names the value in errors
 * (`input`, `result`, `output`, `data`).
 */
function encode(value, path) {
  if (isPlain(value, 0)) return JSON.stringify(value)
  return JSON.stringify(toTagged(value, path, []))
}

function revive(v) {
  if (v === null || typeof v !== 'object') return v
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) v[i] = revive(v[i])
    return v
  }
  const t = v[TAG]
  if (typeof t === 'string') {
    const x = v.v
    switch (t) {
      case 'undefined':
        return undefined
      case 'Number':
        return x === '-0' ? -0 : Number(x)
      case 'BigInt':
        return BigInt(x)
      case 'Date':
        return new Date(x === null ? NaN : x)
      case 'Map':
        return new Map(x.map(([k, val]) => [revive(k), revive(val)]))
      case 'Set':
        return new Set(x.map(revive))
      case 'Buffer':
        return Buffer.from(x, 'base64')
      case 'Uint8Array': {
        const b = Buffer.from(x, 'base64')
        return new Uint8Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength))
      }
      case 'Object':
        return reviveProps(x)
      default:
        break
    }
  }
  return reviveProps(v)
}

function reviveProps(o) {
  for (const k of Object.keys(o)) o[k] = revive(o[k])
  return o
}

/** Decodes stored JSON text (null/undefined text → null). */
function decode(text) {
  if (text == null) return null
  const v = JSON.parse(text)
  return text.includes(TAG_TEXT) ? revive(v) : v
}

/** Revives an already parsed value whose source text contained tags. */
function reviveParsed(v, hadTags) {
  return hadTags ? revive(v) : v
}

module.exports = { encode, decode, reviveParsed, isPlain: (v) => isPlain(v, 0), TAG_TEXT }
