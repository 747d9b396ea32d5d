'use strict'
// Stored values: JSON text an operator can read. Plain JSON takes the fast
// path (one check walk, then the engine's own JSON.stringify, no tags). Other
// values are written as small tagged objects: {"$t": "<Type>", "v": …}.
//
//   undefined            {"$t":"undefined"}        (also inside objects/arrays; array holes too)
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
// Symbol-keyed and non-enumerable properties are not stored (as in JSON);
// null-prototype objects come back as plain objects.

const { ValidationError } = require('./errors')

const TAG = '$t'
// Every tagged text contains `"$t":`. We look for `$t"` rather than `"$t"`:
// `"` is the most frequent character of JSON text and makes the search ~100×
// slower, `$` is rare. A false positive only costs a revive walk.
const TAG_TEXT = '$t"'
const MAX_PLAIN_DEPTH = 512
// V8's longest string: no stored text can be longer. Shapes whose text would
// be are refused before the walk, which could otherwise run out of memory
// (a sparse array of length 2**32-1 is one line of code and 4 billion holes).
const MAX_TEXT = 2 ** 29 - 24
// Arrays longer than this get their holes counted before the walk.
const HOLE_CHECK_LENGTH = 1 << 20
// Each hole is stored as this tag.
const HOLE_TEXT = '{"$t":"undefined"},'.length

const OBJECT_PROTO = Object.prototype
const ARRAY_PROTO = Array.prototype
const getProto = Object.getPrototypeOf
const hasOwn = Object.prototype.hasOwnProperty

// ---- the fast-path check ----------------------------------------------------
//
// True when JSON.stringify(v) stores v exactly: only strings, finite numbers
// other than -0, booleans, null, arrays (no holes) and objects whose
// prototype is Object.prototype or null, without a "$t" key. Strings are
// tested inline in the loops: they are the most frequent leaves. Measured
// with bench/values.js (the walk costs ~10–20% of JSON.stringify).

function isPlain(v, depth) {
  if (typeof v === 'string') return true
  if (typeof v === 'number') return v - v === 0 && (v !== 0 || 1 / v > 0)
  if (typeof v === 'object') return v === null || isPlainObject(v, depth)
  return typeof v === 'boolean'
}

function isPlainObject(v, depth) {
  if (depth > MAX_PLAIN_DEPTH) return false // maybe a cycle: let the slow path say
  if (Array.isArray(v)) {
    if (getProto(v) !== ARRAY_PROTO) return false
    for (let i = 0; i < v.length; i++) {
      const x = v[i]
      if (typeof x !== 'string' && !isPlain(x, depth + 1)) return false
    }
    return true
  }
  const proto = getProto(v)
  if (proto !== OBJECT_PROTO && proto !== null) return false
  for (const k in v) {
    const x = v[k]
    if (k === TAG || (typeof x !== 'string' && !isPlain(x, depth + 1))) return false
  }
  return true
}

// ---- the tagged (slow) path -------------------------------------------------

function keyPath(path, key) {
  return /^[A-Za-z_$][\w$]*$/.test(key) ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`
}

/** How a Map key appears in a path: `cache.get("u1")`, `cache.get(<key 2>)`. */
function mapKeyText(k, i) {
  switch (typeof k) {
    case 'string':
      return JSON.stringify(k)
    case 'number':
    case 'boolean':
    case 'undefined':
      return Object.is(k, -0) ? '-0' : String(k)
    case 'bigint':
      return `${k}n`
    default:
      return k === null ? 'null' : `<key ${i}>`
  }
}

function refuse(path, what) {
  throw new ValidationError(`${path} ${what}`)
}

/** "a User instance", "an Int32Array instance", "an object with a custom prototype". */
function instanceName(v) {
  let name
  try {
    const c = v.constructor
    name = typeof c === 'function' && typeof c.name === 'string' && c.name ? c.name : null
  } catch {
    name = null
  }
  if (!name) name = Object.prototype.toString.call(v).slice(8, -1)
  if (name === 'Object') return 'an object with a custom prototype' // Object.create(proto)
  return `${/^[AEIO]/.test(name) ? 'an' : 'a'} ${name} instance`
}

function tag(t, v) {
  return v === undefined ? { [TAG]: t } : { [TAG]: t, v }
}

function setProp(out, k, value) {
  // `out[k] = …` with k "__proto__" would set the prototype instead.
  if (k === '__proto__') Object.defineProperty(out, k, { value, enumerable: true, writable: true, configurable: true })
  else out[k] = value
}

function toTagged(v, path, seen) {
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
  if (seen.has(v)) refuse(path, 'is a circular reference, which cannot be stored')
  seen.add(v)
  try {
    const proto = getProto(v)
    if (Array.isArray(v)) {
      if (proto !== ARRAY_PROTO) {
        return refuse(path, `is ${instanceName(v)} (an Array subclass), which cannot be stored (its prototype would be lost)`)
      }
      if (v.length > HOLE_CHECK_LENGTH) checkArraySize(v, path)
      const out = new Array(v.length)
      for (let i = 0; i < v.length; i++) out[i] = toTagged(v[i], `${path}[${i}]`, seen)
      return out
    }
    if (proto === OBJECT_PROTO || proto === null) {
      const out = {}
      for (const k of Object.keys(v)) setProp(out, k, toTagged(v[k], keyPath(path, k), seen))
      return hasOwn.call(v, TAG) ? tag('Object', out) : out
    }
    if (proto === Date.prototype) return tag('Date', Number.isNaN(v.getTime()) ? null : v.toISOString())
    if (proto === Map.prototype) {
      let i = 0
      const entries = []
      for (const [k, val] of v) {
        const kt = mapKeyText(k, i)
        entries.push([toTagged(k, `${path}.<key ${i}>`, seen), toTagged(val, `${path}.get(${kt})`, seen)])
        i++
      }
      return tag('Map', entries)
    }
    if (proto === Set.prototype) {
      let i = 0
      const items = []
      for (const it of v) items.push(toTagged(it, `${path}.<item ${i++}>`, seen))
      return tag('Set', items)
    }
    if (Buffer.isBuffer(v) || proto === Uint8Array.prototype) checkBytesSize(v, path)
    if (Buffer.isBuffer(v)) return tag('Buffer', v.toString('base64'))
    if (proto === Uint8Array.prototype) {
      return tag('Uint8Array', Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64'))
    }
    if (v instanceof WeakMap || v instanceof WeakSet) {
      return refuse(path, `is ${instanceName(v)}, which cannot be stored (its entries cannot be read)`)
    }
    if (typeof v.then === 'function') {
      return refuse(path, 'is a Promise, which cannot be stored (did you forget an await?)')
    }
    if (ArrayBuffer.isView(v) || v instanceof ArrayBuffer) {
      return refuse(
        path,
        `is ${instanceName(v)}, which cannot be stored (only Uint8Array and Buffer are; convert it, e.g. Array.from(x))`,
      )
    }
    return refuse(
      path,
      `is ${instanceName(v)}, which cannot be stored (its prototype would be lost); convert it to a plain value`,
    )
  } finally {
    seen.delete(v)
  }
}

/** Refuses an array whose text would exceed MAX_TEXT, counting its holes without visiting them. */
function checkArraySize(v, path) {
  // Own keys of a sparse array are its present indices: cheap even for length 2**32-1.
  const present = Math.min(Object.keys(v).length, v.length)
  const holes = v.length - present
  const atLeast = holes * HOLE_TEXT + present * 2
  if (atLeast > MAX_TEXT) {
    refuse(
      path,
      `is an array of length ${v.length} (${holes} of them holes), too large to store: ` +
        `its text would be at least ${atLeast} characters (the limit is ${MAX_TEXT})`,
    )
  }
}

function checkBytesSize(v, path) {
  const chars = Math.ceil(v.byteLength / 3) * 4
  if (chars > MAX_TEXT) {
    refuse(path, `is ${v.byteLength} bytes, too large to store: its base64 text would exceed ${MAX_TEXT} characters`)
  }
}

/**
 * Encodes a value as stored JSON text. `path` names the value in errors
 * (`input`, `result`, `output`, `data`). Throws ValidationError.
 */
function encode(value, path) {
  try {
    if (isPlain(value, 0)) return JSON.stringify(value)
    return JSON.stringify(toTagged(value, path, new Set()))
  } catch (err) {
    if (err instanceof RangeError) {
      if (/string length/i.test(err.message)) {
        throw new ValidationError(`${path} is too large to store: its text would exceed ${MAX_TEXT} characters`)
      }
      throw new ValidationError(`${path} is nested too deeply to be stored`)
    }
    throw err
  }
}

// ---- decoding ---------------------------------------------------------------

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
        break // unknown tag (a newer version wrote it): leave the object as it is
    }
  }
  return reviveProps(v)
}

function reviveProps(o) {
  // JSON.parse made every key an own data property, so `o[k] =` never hits a setter.
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

/**
 * UTF-8 size of an encoded value when it is over `max` bytes, else 0. (A
 * string of n UTF-16 units is at most 3n bytes, so short values skip the count.)
 */
function oversize(text, max) {
  if (text.length * 3 <= max) return 0
  const bytes = Buffer.byteLength(text, 'utf8')
  return bytes > max ? bytes : 0
}

module.exports = { encode, decode, reviveParsed, isPlain: (v) => isPlain(v, 0), TAG_TEXT, oversize }
