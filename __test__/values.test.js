// Issue 6: faithful values and replay safety in ctx.run.
// - the round-trip table, direct (encode/decode) and through a real crash
//   and replay (a child process commits the values, is SIGKILLed, and this
//   process resumes the runs: every value comes back from the database);
// - unstorable values fail with a ValidationError naming step and path;
// - replay safety: reordered steps, lenient mode, duplicate names, parallel steps.
import path from 'node:path'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import {
  defineJob,
  ReplayMismatchError,
  RunFailedError,
  ValidationError,
  withLogPersistence,
} from '../index.js'
import values from '../lib/values.js'
import helpers from './helpers.js'
import table from './fixtures/values-table.js'

const { encode, decode, isPlain } = values
const { makeDurably, closeAll, testStore, storeArg, storeSql, spawnNode, sleep } = helpers
const { makeTable, TOP_LEVEL, DATE } = table
const __dirname = import.meta.dirname

afterEach(closeAll)

// ---- what must come back ------------------------------------------------------

const isNegZero = (x) => Object.is(x, -0)

/**
 * One check per key of makeTable(), given the object holding the key (so a
 * missing key is told from an undefined one). Each check asserts the type,
 * not only the printed value.
 */
const CHECKS = {
  json: (o) => expect(o.json).toStrictEqual(makeTable().json),
  undef: (o) => {
    expect(Object.keys(o)).toContain('undef')
    expect(o.undef).toBeUndefined()
  },
  nestedUndef: (o) => {
    const v = o.nestedUndef
    expect(Object.keys(v)).toEqual(['a', 'b', 'c'])
    expect(v.a).toBeUndefined()
    expect(v.b).toHaveLength(3)
    expect(Object.keys(v.b)).toEqual(['0', '1', '2'])
    expect([v.b[0], v.b[1], v.b[2]]).toStrictEqual([undefined, 1, undefined])
    expect(Object.keys(v.c)).toEqual(['d'])
    expect(v.c.d).toBeUndefined()
  },
  sparse: (o) => {
    // Holes come back as undefined elements (present, not holes).
    expect(Array.isArray(o.sparse)).toBe(true)
    expect(o.sparse).toHaveLength(5)
    expect(Object.keys(o.sparse)).toEqual(['0', '1', '2', '3', '4'])
    expect(o.sparse[0]).toBe('first')
    expect(o.sparse[1]).toBeUndefined()
    expect(o.sparse[3]).toBe(3)
  },
  date: (o) => {
    expect(o.date).toBeInstanceOf(Date)
    expect(o.date.toISOString()).toBe(DATE)
  },
  beforeEpoch: (o) => {
    expect(o.beforeEpoch).toBeInstanceOf(Date)
    expect(o.beforeEpoch.getTime()).toBe(-1)
  },
  invalidDate: (o) => {
    expect(o.invalidDate).toBeInstanceOf(Date)
    expect(Number.isNaN(o.invalidDate.getTime())).toBe(true)
  },
  bigint: (o) => {
    expect(typeof o.bigint).toBe('bigint')
    expect(o.bigint).toBe(12345678901234567890123456789n)
  },
  negBigint: (o) => {
    expect(typeof o.negBigint).toBe('bigint')
    expect(o.negBigint).toBe(-1n)
  },
  zeroBigint: (o) => {
    expect(typeof o.zeroBigint).toBe('bigint')
    expect(o.zeroBigint).toBe(0n)
  },
  map: (o) => {
    const m = o.map
    expect(m).toBeInstanceOf(Map)
    const e = [...m]
    expect(e.map(([k]) => k).slice(0, 5)).toStrictEqual(['s', 2, true, null, 3n]) // key types kept, in order
    expect(e[0][1]).toBe(1)
    expect(e[1][1]).toBe('two')
    expect(e[2][1]).toBeNull()
    expect(m.has(null)).toBe(true)
    expect(m.get(null)).toBeUndefined()
    expect(m.get(3n)).toBeInstanceOf(Date)
    expect(m.get(3n).toISOString()).toBe(DATE)
    expect(e[5][0]).toStrictEqual({ k: 'obj' }) // an object key (a new object, equal)
    expect(e[5][1][0]).toBe(1)
    expect(Number.isNaN(e[5][1][1])).toBe(true)
  },
  nestedMap: (o) => {
    const inner = o.nestedMap.get('inner')
    expect(o.nestedMap).toBeInstanceOf(Map)
    expect(inner).toBeInstanceOf(Map)
    const set = inner.get(1)
    expect(set).toBeInstanceOf(Set)
    const [deepest] = [...set]
    expect(deepest).toBeInstanceOf(Map)
    expect(deepest.get(NaN)).toBe('NaN key')
  },
  emptyMap: (o) => {
    expect(o.emptyMap).toBeInstanceOf(Map)
    expect(o.emptyMap.size).toBe(0)
  },
  set: (o) => {
    expect(o.set).toBeInstanceOf(Set)
    const items = [...o.set]
    expect(items.slice(0, 4)).toStrictEqual([1, 'a', 2n, undefined])
    expect(items).toHaveLength(5)
    expect(items[4]).toBeInstanceOf(Date)
    expect(items[4].getTime()).toBe(5)
  },
  emptySet: (o) => {
    expect(o.emptySet).toBeInstanceOf(Set)
    expect(o.emptySet.size).toBe(0)
  },
  u8: (o) => {
    expect(o.u8).toBeInstanceOf(Uint8Array)
    expect(Buffer.isBuffer(o.u8)).toBe(false)
    expect([...o.u8]).toEqual([0, 1, 127, 128, 254, 255])
  },
  u8view: (o) => {
    expect(o.u8view).toBeInstanceOf(Uint8Array)
    expect(Buffer.isBuffer(o.u8view)).toBe(false)
    expect([...o.u8view]).toEqual([7, 6, 5]) // the view's bytes, not the whole buffer
  },
  emptyU8: (o) => {
    expect(o.emptyU8).toBeInstanceOf(Uint8Array)
    expect(o.emptyU8.length).toBe(0)
  },
  buffer: (o) => {
    expect(Buffer.isBuffer(o.buffer)).toBe(true)
    expect(o.buffer.toString('utf8')).toBe('héllo\u0000')
  },
  nan: (o) => expect(Number.isNaN(o.nan)).toBe(true),
  inf: (o) => expect(o.inf).toBe(Infinity),
  ninf: (o) => expect(o.ninf).toBe(-Infinity),
  negZero: (o) => expect(isNegZero(o.negZero)).toBe(true),
  numbers: (o) => {
    const [a, b, c, d, e] = o.numbers
    expect(o.numbers).toHaveLength(5)
    expect(Number.isNaN(a)).toBe(true)
    expect(isNegZero(b)).toBe(true)
    expect([c, d, e]).toEqual([Infinity, -Infinity, 1])
  },
  ownTag: (o) => {
    // An object that merely has a "$t" key stays that object.
    expect(o.ownTag).toStrictEqual({ $t: 'Date', v: DATE })
    expect(o.ownTag).not.toBeInstanceOf(Date)
  },
  ownTagNested: (o) => {
    const v = o.ownTagNested
    expect(v).not.toBeInstanceOf(Map)
    expect(Object.keys(v)).toEqual(['$t', 'v', 'extra'])
    expect(v.$t).toBe('Map')
    expect(v.v).toStrictEqual([[1, 2]])
    expect(v.extra).toBeInstanceOf(Date) // values under it are still revived
    expect(v.extra.getTime()).toBe(1)
  },
  ownTagOnly: (o) => expect(o.ownTagOnly).toStrictEqual({ $t: 'undefined' }),
  nullProto: (o) => {
    // Null-prototype objects come back as plain objects.
    const v = o.nullProto
    expect(Object.getPrototypeOf(v)).toBe(Object.prototype)
    expect(Object.keys(v)).toEqual(['a', 'when', 'inner'])
    expect(v.a).toBe(1)
    expect(v.when).toBeInstanceOf(Date)
    expect(isNegZero(v.inner.deep)).toBe(true)
  },
  protoKey: (o) => {
    // An own "__proto__" key stays an own key; the prototype is untouched.
    const v = o.protoKey
    expect(Object.getPrototypeOf(v)).toBe(Object.prototype)
    expect(Object.keys(v)).toEqual(['__proto__', 'k', 'when'])
    expect(Object.getOwnPropertyDescriptor(v, '__proto__').value).toStrictEqual({ polluted: true })
    expect(v.polluted).toBeUndefined()
    expect(v.when).toBeInstanceOf(Date)
    expect(v.when.getTime()).toBe(0)
  },
  loneSurrogate: (o) => expect(o.loneSurrogate).toBe('x\ud800y'),
}

/** The whole table as it must come back. */
function checkTable(v) {
  expect(v).not.toBeNull()
  expect(typeof v).toBe('object')
  expect(Object.keys(v)).toEqual(Object.keys(makeTable()))
  for (const check of Object.values(CHECKS)) check(v)
}

/** One check per top-level step result of TOP_LEVEL. */
const TOP_CHECKS = {
  undefined: (v) => expect(v).toBeUndefined(),
  null: (v) => expect(v).toBeNull(),
  string: (v) => expect(v).toBe('plain'),
  number: (v) => expect(v).toBe(1.5),
  true: (v) => expect(v).toBe(true),
  negZero: (v) => expect(isNegZero(v)).toBe(true),
  nan: (v) => expect(Number.isNaN(v)).toBe(true),
  inf: (v) => expect(v).toBe(Infinity),
  ninf: (v) => expect(v).toBe(-Infinity),
  bigint: (v) => {
    expect(typeof v).toBe('bigint')
    expect(v).toBe(2n ** 70n)
  },
  date: (v) => {
    expect(v).toBeInstanceOf(Date)
    expect(v.toISOString()).toBe(DATE)
  },
  invalidDate: (v) => {
    expect(v).toBeInstanceOf(Date)
    expect(Number.isNaN(v.getTime())).toBe(true)
  },
  map: (v) => {
    expect(v).toBeInstanceOf(Map)
    expect([...v]).toStrictEqual([[1, { a: 1 }]])
  },
  set: (v) => {
    expect(v).toBeInstanceOf(Set)
    expect([...v]).toStrictEqual(['x'])
  },
  u8: (v) => {
    expect(v).toBeInstanceOf(Uint8Array)
    expect(Buffer.isBuffer(v)).toBe(false)
    expect([...v]).toEqual([1, 2, 3])
  },
  buffer: (v) => {
    expect(Buffer.isBuffer(v)).toBe(true)
    expect([...v]).toEqual([4, 5])
  },
  arrayOfUndefined: (v) => {
    expect(v).toHaveLength(1)
    expect(Object.keys(v)).toEqual(['0'])
    expect(v[0]).toBeUndefined()
  },
  ownTag: (v) => expect(v).toStrictEqual({ $t: 'BigInt', v: '1' }),
  emptyObject: (v) => expect(v).toStrictEqual({}),
}

/** The stored text of each table entry: the documented tag format. */
const STORED = {
  undef: '{"$t":"undefined"}',
  nestedUndef: '{"a":{"$t":"undefined"},"b":[{"$t":"undefined"},1,{"$t":"undefined"}],"c":{"d":{"$t":"undefined"}}}',
  sparse: '["first",{"$t":"undefined"},{"$t":"undefined"},3,{"$t":"undefined"}]',
  date: '{"$t":"Date","v":"2024-02-29T12:34:56.789Z"}',
  beforeEpoch: '{"$t":"Date","v":"1969-12-31T23:59:59.999Z"}',
  invalidDate: '{"$t":"Date","v":null}',
  bigint: '{"$t":"BigInt","v":"12345678901234567890123456789"}',
  negBigint: '{"$t":"BigInt","v":"-1"}',
  zeroBigint: '{"$t":"BigInt","v":"0"}',
  map:
    '{"$t":"Map","v":[["s",1],[2,"two"],[true,null],[null,{"$t":"undefined"}],' +
    '[{"$t":"BigInt","v":"3"},{"$t":"Date","v":"2024-02-29T12:34:56.789Z"}],[{"k":"obj"},[1,{"$t":"Number","v":"NaN"}]]]}',
  nestedMap:
    '{"$t":"Map","v":[["inner",{"$t":"Map","v":[[1,{"$t":"Set","v":[{"$t":"Map","v":[[{"$t":"Number","v":"NaN"},"NaN key"]]}]}]]}]]}',
  emptyMap: '{"$t":"Map","v":[]}',
  set: '{"$t":"Set","v":[1,"a",{"$t":"BigInt","v":"2"},{"$t":"undefined"},{"$t":"Date","v":"1970-01-01T00:00:00.005Z"}]}',
  emptySet: '{"$t":"Set","v":[]}',
  u8: '{"$t":"Uint8Array","v":"AAF/gP7/"}',
  u8view: '{"$t":"Uint8Array","v":"BwYF"}',
  emptyU8: '{"$t":"Uint8Array","v":""}',
  buffer: '{"$t":"Buffer","v":"aMOpbGxvAA=="}',
  nan: '{"$t":"Number","v":"NaN"}',
  inf: '{"$t":"Number","v":"Infinity"}',
  ninf: '{"$t":"Number","v":"-Infinity"}',
  negZero: '{"$t":"Number","v":"-0"}',
  numbers:
    '[{"$t":"Number","v":"NaN"},{"$t":"Number","v":"-0"},{"$t":"Number","v":"Infinity"},{"$t":"Number","v":"-Infinity"},1]',
  ownTag: '{"$t":"Object","v":{"$t":"Date","v":"2024-02-29T12:34:56.789Z"}}',
  ownTagNested: '{"$t":"Object","v":{"$t":"Map","v":[[1,2]],"extra":{"$t":"Date","v":"1970-01-01T00:00:00.001Z"}}}',
  ownTagOnly: '{"$t":"Object","v":{"$t":"undefined"}}',
  nullProto: '{"a":1,"when":{"$t":"Date","v":"2024-02-29T12:34:56.789Z"},"inner":{"deep":{"$t":"Number","v":"-0"}}}',
  protoKey: '{"__proto__":{"polluted":true},"k":1,"when":{"$t":"Date","v":"1970-01-01T00:00:00.000Z"}}',
}

// ---- direct encode / decode ------------------------------------------------------

describe('encode/decode round trip', () => {
  it('the checks cover every table entry and fail on what plain JSON would give back', () => {
    expect(Object.keys(CHECKS).sort()).toEqual(Object.keys(makeTable()).sort())
    expect(TOP_LEVEL.map(([n]) => n).sort()).toEqual(Object.keys(TOP_CHECKS).sort())
    // What a naive JSON store returns: each check must reject it (else it proves nothing).
    const naive = JSON.parse(JSON.stringify(makeTable(), (_, x) => (typeof x === 'bigint' ? String(x) : x)))
    Object.assign(naive, {
      ownTag: new Date(DATE), // a tag-aware store that does not escape own "$t" keys
      ownTagNested: new Map([[1, 2]]),
      buffer: new Uint8Array(Buffer.from('héllo\u0000')), // type confusion between the two byte kinds
      u8: Buffer.from([0, 1, 127, 128, 254, 255]),
    })
    delete naive.ownTagOnly // → undefined
    const passing = Object.keys(CHECKS).filter((k) => {
      try {
        CHECKS[k](naive)
        return true
      } catch {
        return false
      }
    })
    expect(passing).toEqual(['json', 'loneSurrogate'])
    expect(() => TOP_CHECKS.undefined(null)).toThrow()
    expect(() => TOP_CHECKS.negZero(0)).toThrow()
    expect(() => TOP_CHECKS.u8(Buffer.from([1, 2, 3]))).toThrow()
  })

  it.each(Object.keys(STORED))('%s: stored as the documented tagged JSON and decoded with its type', (key) => {
    const value = makeTable()[key]
    const text = encode(value, 'result')
    expect(text).toBe(STORED[key])
    expect(JSON.parse(text)).toBeDefined() // plain, readable JSON text
    CHECKS[key]({ [key]: decode(text) })
  })

  it('the whole table round-trips in one value', () => {
    const text = encode(makeTable(), 'result')
    checkTable(decode(text))
    // Plain JSON parts stay untagged in the text.
    expect(text).toContain(`"json":${JSON.stringify(makeTable().json)}`)
  })

  it.each(TOP_LEVEL)('top-level %s', (name, make) => {
    TOP_CHECKS[name](decode(encode(make(), 'result')))
  })

  it('plain JSON takes the fast path: the text is exactly JSON.stringify, without tags', () => {
    const plain = [
      makeTable().json,
      { id: 1, name: 'x', tags: ['a', 'b'], nested: { deeper: [{ ok: true, n: null }] } },
      Array.from({ length: 100 }, (_, i) => ({ i, s: String(i) })),
      'str',
      12.5,
      0,
      null,
      true,
      [],
      {},
      Object.assign(Object.create(null), { a: [1] }),
      { s: 'a "$t" inside a string is not a tag', $tx: 1 },
    ]
    for (const v of plain) {
      expect(isPlain(v)).toBe(true)
      expect(encode(v, 'result')).toBe(JSON.stringify(v))
    }
    // A text without tags decodes to exactly what JSON.parse gives.
    const text = JSON.stringify(plain)
    expect(decode(text)).toStrictEqual(JSON.parse(text))
  })

  it('everything JSON.stringify would change is kept off the fast path', () => {
    const notPlain = [
      undefined,
      { a: undefined },
      [1, undefined],
      new Array(2),
      NaN,
      -0,
      [Infinity],
      { d: new Date(0) },
      1n,
      new Map(),
      new Set(),
      new Uint8Array(1),
      Buffer.alloc(1),
      { $t: 'x' },
      { f() {} },
      [Symbol('s')],
      new (class Point {})(),
      new (class Items extends Array {})(),
      { toJSON: () => 'x' },
    ]
    for (const v of notPlain) expect(isPlain(v)).toBe(false)
  })

  it('deep plain values are stored exactly; absurdly deep ones fail with a ValidationError', () => {
    let deep = 'leaf'
    for (let i = 0; i < 2000; i++) deep = { d: deep }
    expect(encode(deep, 'result')).toBe(JSON.stringify(deep)) // past the fast path's depth limit: same text
    let tooDeep = []
    for (let i = 0; i < 200_000; i++) tooDeep = [tooDeep]
    expect(() => encode(tooDeep, 'result')).toThrow(ValidationError)
    expect(() => encode(tooDeep, 'result')).toThrow('result is nested too deeply to be stored')
  })

  it('shared references are stored twice (not a cycle); symbol keys and non-enumerable properties are dropped', () => {
    const shared = { when: new Date(0) }
    const back = decode(encode({ a: shared, b: shared }, 'result'))
    expect(back.a).toStrictEqual(shared)
    expect(back.b).toStrictEqual(shared)
    expect(back.a).not.toBe(back.b)

    const o = { a: 1n, [Symbol('k')]: 'dropped' }
    Object.defineProperty(o, 'hidden', { value: 'dropped', enumerable: false })
    const text = encode(o, 'result')
    expect(text).toBe('{"a":{"$t":"BigInt","v":"1"}}')
    expect(Reflect.ownKeys(decode(text))).toEqual(['a'])
    expect(encode({ a: 1, [Symbol('k')]: 2 }, 'result')).toBe('{"a":1}') // same on the fast path
  })

  it('an unknown tag (written by a newer version) is left as it is; null text decodes to null', () => {
    expect(decode('{"$t":"Temporal.Instant","v":"x"}')).toStrictEqual({ $t: 'Temporal.Instant', v: 'x' })
    expect(decode(null)).toBeNull()
    expect(decode('null')).toBeNull()
  })
})

// ---- unstorable values -------------------------------------------------------------

class User {
  constructor() {
    this.name = 'u'
  }
}
const withUser3 = (callback) => ({ users: [{ id: 0 }, { id: 1 }, { id: 2 }, { id: 3, callback }] })
const AT = 'result.users[3].callback'

/** [label, make the step's result, path, what the message says about it] */
const UNSTORABLE = [
  ['function', () => withUser3(() => 1), AT, 'is a function, which cannot be stored'],
  ['symbol', () => withUser3(Symbol('s')), AT, 'is a symbol, which cannot be stored'],
  [
    'cycle',
    () => {
      const v = withUser3(null)
      v.users[3].callback = v
      return v
    },
    AT,
    'is a circular reference, which cannot be stored',
  ],
  ['class instance', () => withUser3(new User()), AT, 'is a User instance, which cannot be stored (its prototype would be lost)'],
  ['WeakMap', () => withUser3(new WeakMap()), AT, 'is a WeakMap instance, which cannot be stored'],
  ['WeakSet', () => withUser3(new WeakSet()), AT, 'is a WeakSet instance, which cannot be stored'],
  ['Promise', () => withUser3(Promise.resolve(1)), AT, 'is a Promise, which cannot be stored (did you forget an await?)'],
  ['Int32Array', () => withUser3(new Int32Array(2)), AT, 'is an Int32Array instance, which cannot be stored'],
  ['Float64Array', () => withUser3(new Float64Array(2)), AT, 'is a Float64Array instance, which cannot be stored'],
  ['Uint8ClampedArray', () => withUser3(new Uint8ClampedArray(2)), AT, 'is a Uint8ClampedArray instance'],
  ['BigInt64Array', () => withUser3(new BigInt64Array(2)), AT, 'is a BigInt64Array instance'],
  ['Uint16Array', () => withUser3(new Uint16Array(2)), AT, 'is a Uint16Array instance'],
  ['DataView', () => withUser3(new DataView(new ArrayBuffer(2))), AT, 'is a DataView instance'],
  ['ArrayBuffer', () => withUser3(new ArrayBuffer(2)), AT, 'is an ArrayBuffer instance'],
  ['Array subclass', () => withUser3(new (class Items extends Array {})()), AT, 'is an Items instance (an Array subclass)'],
  ['Error', () => withUser3(new Error('x')), AT, 'is an Error instance, which cannot be stored'],
  ['Date subclass', () => withUser3(new (class Moment extends Date {})(0)), AT, 'is a Moment instance'],
  ['boxed String', () => withUser3(new String('x')), AT, 'is a String instance'],
  ['Object.create(proto)', () => withUser3(Object.create({ greet() {} })), AT, 'is an object with a custom prototype'],
  ['function at top level', () => () => 1, 'result', 'is a function'],
  ['symbol at top level', () => Symbol('top'), 'result', 'is a symbol'],
  [
    'function in a Map value',
    () => withUser3(new Map([['k', { fn: () => 1 }]])),
    `${AT}.get("k").fn`,
    'is a function',
  ],
  ['function as a Map key', () => withUser3(new Map([[() => 1, 'v']])), `${AT}.<key 0>`, 'is a function'],
  ['symbol in a Set', () => withUser3(new Set([1, Symbol('s')])), `${AT}.<item 1>`, 'is a symbol'],
  ['odd key', () => withUser3({ 'a b': () => 1 }), `${AT}["a b"]`, 'is a function'],
  ['inside a Date-bearing value', () => ({ at: new Date(0), list: [1n, { f: Math.max }] }), 'result.list[1].f', 'is a function'],
]

describe('unstorable values', () => {
  it.each(UNSTORABLE)('%s → ValidationError naming the step and the path; nothing stored', async (_, make, at, what) => {
    const d = makeDurably()
    let caught
    let after = false
    const job = d.register({
      j: defineJob({
        name: 'unstorable',
        run: async (ctx) => {
          await ctx.run('before', () => new Date(0))
          try {
            await ctx.run('save', make)
          } catch (err) {
            caught = err
            throw err
          }
          after = true
        },
      }),
    }).j
    const events = []
    d.on('run:fail', (e) => events.push(e))
    await d.start()
    const { id } = await job.trigger(null)
    const err = await d.waitForRun(id, { timeout: 10_000 }).catch((e) => e)

    const message = `step 'save' returned a value that cannot be stored: ${at} ${what}`
    expect(caught).toBeInstanceOf(ValidationError)
    expect(caught.code).toBe('VALIDATION_ERROR')
    expect(caught.message.startsWith(message)).toBe(true)
    expect(after).toBe(false)
    expect(err).toBeInstanceOf(RunFailedError)
    const run = await d.getRun(id)
    expect(run.status).toBe('failed')
    expect(run.error).toBe(caught.message)
    expect(run.output).toBeNull()
    expect(events.map((e) => e.failedStepName)).toEqual(['save'])
    // The failed step keeps its error, no output; the step before it is intact.
    const steps = await d.getSteps(id)
    expect(steps.map((s) => [s.name, s.status])).toEqual([
      ['before', 'completed'],
      ['save', 'failed'],
    ])
    expect(steps[0].output).toBeInstanceOf(Date)
    expect(steps[1].output).toBeNull()
    expect(steps[1].error).toBe(caught.message)
  })

  it('trigger input: ValidationError naming `input.<path>`; no run is written', async () => {
    const d = makeDurably()
    const job = d.register({ j: defineJob({ name: 'bad-input', run: async () => null }) }).j
    await expect(job.trigger({ x: () => 1 })).rejects.toThrow(ValidationError)
    await expect(job.trigger({ x: () => 1 })).rejects.toThrow('input.x is a function, which cannot be stored')
    await expect(job.trigger({ x: { list: [1, Symbol('s')] } })).rejects.toThrow('input.x.list[1] is a symbol')
    await expect(job.trigger(new User())).rejects.toThrow('input is a User instance')
    await expect(
      job.batchTrigger([{ input: { ok: new Date(0) } }, { input: { x: new WeakMap() } }]),
    ).rejects.toThrow('batchTrigger item 1: input.x is a WeakMap instance')
    expect(await d.getRuns()).toEqual([])
    // The same values without the bad part are accepted and stored faithfully.
    const ok = await job.trigger({ x: { list: [1, 2n] }, at: new Date(0) })
    const stored = await d.getRun(ok.id)
    expect(stored.input.x.list[1]).toBe(2n)
    expect(stored.input.at).toBeInstanceOf(Date)
  })

  it('job output: the run fails naming `output.<path>`; no output is stored', async () => {
    const d = makeDurably()
    const job = d.register({
      j: defineJob({
        name: 'bad-output',
        run: async (ctx) => {
          await ctx.run('fine', () => 1n)
          return { y: new WeakMap(), at: new Date(0) }
        },
      }),
    }).j
    await d.start()
    const { id } = await job.trigger(null)
    const err = await d.waitForRun(id, { timeout: 10_000 }).catch((e) => e)
    expect(err).toBeInstanceOf(RunFailedError)
    const run = await d.getRun(id)
    expect(run.status).toBe('failed')
    expect(run.error).toBe(
      "job 'bad-output' returned an output that cannot be stored: output.y is a WeakMap instance, " +
        'which cannot be stored (its entries cannot be read)',
    )
    expect(run.output).toBeNull()
    expect(storeSql(d, `SELECT output FROM runs WHERE id = '${id}'`)).toEqual([[null]])
    const steps = await d.getSteps(id)
    expect(steps.map((s) => [s.name, s.status, s.output])).toEqual([['fine', 'completed', 1n]])
  })

  it('log data: the log line is not stored and worker:error names `data.<path>`; the run goes on', async () => {
    const d = makeDurably()
    d.use(withLogPersistence())
    const errors = []
    d.on('worker:error', (e) => errors.push(e.error))
    const job = d.register({
      j: defineJob({
        name: 'bad-log',
        run: async (ctx) => {
          ctx.log.info('bad', { f: () => 1 })
          ctx.log.info('good', { at: new Date(0), n: -0 })
          return ctx.run('after', () => 'done')
        },
      }),
    }).j
    await d.start()
    const { id } = await job.trigger(null)
    const run = await d.waitForRun(id, { timeout: 10_000 })
    expect(run.output).toBe('done')
    expect(errors).toHaveLength(1)
    expect(errors[0]).toBeInstanceOf(ValidationError)
    expect(errors[0].message).toBe('data.f is a function, which cannot be stored')
    const logs = await d.getLogs(id)
    expect(logs.map((l) => l.message)).toEqual(['good'])
    expect(logs[0].data.at).toBeInstanceOf(Date)
    expect(isNegZero(logs[0].data.n)).toBe(true)
  })
})

// ---- through a real crash and replay ---------------------------------------------------

describe('through a real crash and replay', () => {
  const store = testStore()
  const ready = {}
  const doneOrder = []
  let childPid

  // One child runs version A of four jobs, commits their first steps, and is
  // SIGKILLed while every run is blocked in a later step.
  beforeAll(async () => {
    const p = spawnNode(path.join(__dirname, 'fixtures', 'values-crash.js'), [storeArg(store)], {
      onLine: (line) => {
        const m = /^ready (\S+) (\S+)$/.exec(line)
        if (m) ready[m[1]] = m[2]
        const d = /^done parallel p(\d)$/.exec(line)
        if (d) doneOrder.push(Number(d[1]))
      },
    })
    childPid = p.child.pid
    const all = new Promise((resolve, reject) => {
      const t = setInterval(() => {
        if (Object.keys(ready).length === 4) resolve(clearInterval(t))
      }, 10)
      p.exited.then(({ code, stderr }) => {
        clearInterval(t)
        reject(new Error(`child exited early (${code}): ${p.lines.join('\n')}\n${stderr}`))
      })
      setTimeout(() => reject(new Error(`child not ready in time: ${p.lines.join('\n')}\n${p.stderr()}`)), 20_000)
    })
    try {
      await all
    } finally {
      p.child.kill('SIGKILL')
    }
    const { signal } = await p.exited
    expect(signal).toBe('SIGKILL')
  })

  /** A new instance on the same store that reclaims the killed child's runs of `def` quickly. */
  async function resume(def) {
    const d = makeDurably({ ...store, pollingInterval: 20, heartbeatInterval: 100, staleThreshold: 300 })
    d.register({ job: def })
    await d.start()
    return d
  }

  const mustNotRun = (name) => () => {
    throw new Error(`step ${name} ran again instead of replaying`)
  }

  it('every supported value comes back from the database with its type (input, steps, step results, logs)', async () => {
    const id = ready['values-table']
    // As an operator reads it: readable JSON with the documented tags.
    const [[stored]] = storeSql(store, `SELECT CAST(output AS TEXT) FROM steps WHERE run_id = '${id}' AND name = 'table'`)
    expect(stored).toBe(encode(makeTable(), 'result'))
    expect(JSON.parse(stored).date).toStrictEqual({ $t: 'Date', v: DATE })

    let input
    const top = {}
    let seenInStep2
    const versionB = defineJob({
      name: 'values-table',
      run: async (ctx, inp) => {
        input = inp
        for (const [name] of TOP_LEVEL) top[name] = await ctx.run(`top-${name}`, mustNotRun(`top-${name}`))
        const t = await ctx.run('table', mustNotRun('table'))
        await ctx.run('after-log', mustNotRun('after-log'))
        await ctx.run('consume', () => {
          seenInStep2 = t // step 2 receives step 1's value, as read from the DB
          return 'consumed'
        })
        return { table: t, top }
      },
    })
    const d = await resume(versionB)
    const run = await d.waitForRun(id, { timeout: 20_000 })

    checkTable(seenInStep2)
    checkTable(input)
    for (const [name] of TOP_LEVEL) TOP_CHECKS[name](top[name])
    expect(Object.keys(top)).toEqual(TOP_LEVEL.map(([n]) => n)) // top.undefined is a key, too

    // The output written by this process, read back from the DB.
    checkTable(run.output.table)
    for (const [name] of TOP_LEVEL) TOP_CHECKS[name](run.output.top[name])
    // Step records and log data, read back.
    const steps = await d.getSteps(id)
    checkTable(steps.find((s) => s.name === 'table').output)
    for (const [name] of TOP_LEVEL) TOP_CHECKS[name](steps.find((s) => s.name === `top-${name}`).output)
    expect(steps.find((s) => s.name === 'consume').output).toBe('consumed')
    const logs = await d.getLogs(id)
    expect(logs.map((l) => l.message)).toEqual(['the table'])
    checkTable(logs[0].data)
  })

  it("strict: steps reordered by new code fail the run with a message naming both steps", async () => {
    const id = ready['reorder-strict']
    const calls = []
    let caught
    const versionB = defineJob({
      name: 'reorder-strict',
      run: async (ctx) => {
        try {
          await ctx.run('b', () => calls.push('b'))
        } catch (err) {
          caught = err
        }
        // Even when the job swallows the error, nothing further runs and the run fails.
        await ctx.run('a', () => calls.push('a'))
        await ctx.run('c', () => calls.push('c'))
        return 'should not complete'
      },
    })
    const d = await resume(versionB)
    const err = await d.waitForRun(id, { timeout: 20_000 }).catch((e) => e)
    expect(err).toBeInstanceOf(RunFailedError)
    expect(err.message).toMatch(/^replay mismatch at step 0: the job now calls 'b' where the stored run has 'a' /)
    expect(err.message).toContain("replay: 'lenient'")
    expect(caught).toBeInstanceOf(ReplayMismatchError)
    expect(caught.code).toBe('REPLAY_MISMATCH')
    expect(caught).toMatchObject({ stepName: 'b', stepIndex: 0, storedStepName: 'a', storedIndex: 1 })
    expect(calls).toEqual([])
    const run = await d.getRun(id)
    expect(run.status).toBe('failed')
    expect(run.output).toBeNull()
    // The stored steps are untouched.
    const steps = await d.getSteps(id)
    expect(steps.map((s) => [s.name, s.index, s.status])).toEqual([
      ['a', 0, 'completed'],
      ['b', 1, 'completed'],
    ])
  })

  it("lenient: the same reordering replays by name and the run completes", async () => {
    const id = ready['reorder-lenient']
    const calls = []
    const versionB = defineJob({
      name: 'reorder-lenient',
      replay: 'lenient',
      run: async (ctx) => {
        const b = await ctx.run('b', () => calls.push('b'))
        const a = await ctx.run('a', () => calls.push('a'))
        const c = await ctx.run('c', () => (calls.push('c'), 'c now'))
        return { a, b, c }
      },
    })
    const d = await resume(versionB)
    const run = await d.waitForRun(id, { timeout: 20_000 })
    expect(calls).toEqual(['c'])
    expect(run.output.a.from).toBe('a')
    expect(run.output.a.at).toBeInstanceOf(Date)
    expect(run.output.b).toStrictEqual({ from: 'b', n: 2n })
    expect(run.output.c).toBe('c now')
  })

  it('parallel steps completing in different orders replay to the same values', async () => {
    const id = ready['parallel']
    // The child finished p4, p2, p0 in that order (reverse of the call order);
    // each is stored at the position it was called at.
    expect(doneOrder).toEqual([4, 2, 0])
    const before = storeSql(store, `SELECT name, "index", CAST(output AS TEXT) FROM steps WHERE run_id = '${id}' ORDER BY "index"`)
    expect(before.map(([n, i]) => [n, i])).toEqual([
      ['p0', 0],
      ['p2', 2],
      ['p4', 4],
    ])
    const fromChild = Object.fromEntries(before.map(([n, , text]) => [n, decode(text)]))
    expect(fromChild.p4.at.getTime()).toBeLessThanOrEqual(fromChild.p2.at.getTime())
    expect(fromChild.p2.at.getTime()).toBeLessThanOrEqual(fromChild.p0.at.getTime())

    let attempt = 0
    const executed = []
    const results = []
    const versionB = defineJob({
      name: 'parallel', // replay: 'strict' (the default)
      run: async (ctx) => {
        attempt++
        const out = await Promise.all(
          Array.from({ length: 6 }, (_, i) =>
            ctx.run(`p${i}`, async () => {
              executed.push(`p${i}`)
              await sleep(Math.random() * 40)
              return { i, at: new Date(), r: Math.random(), big: BigInt(i) * 10n ** 20n, pid: process.pid }
            }),
          ),
        )
        results.push(out)
        if (attempt === 1) throw new Error('fail once, so that a retry replays all six steps')
        return out
      },
    })
    const d = await resume(versionB)
    await expect(d.waitForRun(id, { timeout: 20_000 })).rejects.toThrow('fail once')
    expect(executed.sort()).toEqual(['p1', 'p3', 'p5']) // the child's steps replayed

    await d.retry(id)
    const run = await d.waitForRun(id, { timeout: 20_000 })
    expect(attempt).toBe(2)
    expect(executed).toHaveLength(3) // nothing ran again on the second replay

    // Same values in both executions and in the output, with their types.
    expect(results[1]).toStrictEqual(results[0])
    expect(run.output).toStrictEqual(results[0])
    for (let i = 0; i < 6; i++) {
      const v = run.output[i]
      expect(v.i).toBe(i)
      expect(v.at).toBeInstanceOf(Date)
      expect(typeof v.big).toBe('bigint')
      expect(v.pid).toBe(i % 2 === 0 ? childPid : process.pid)
      if (i % 2 === 0) expect(v).toStrictEqual(fromChild[`p${i}`])
    }
    const steps = await d.getSteps(id)
    expect(steps.map((s) => [s.name, s.index, s.status])).toEqual(
      Array.from({ length: 6 }, (_, i) => [`p${i}`, i, 'completed']),
    )
  })
})

// ---- replay safety without a crash -----------------------------------------------------

describe('replay safety', () => {
  it('a step name used twice in a loop throws at the second call, without running it', async () => {
    const d = makeDurably()
    const calls = []
    let second
    const job = d.register({
      j: defineJob({
        name: 'dup-loop',
        run: async (ctx) => {
          for (let i = 0; i < 3; i++) {
            try {
              await ctx.run('item', () => (calls.push(i), i)) // the classic bug: no index in the name
            } catch (err) {
              second = { i, err }
              throw err
            }
          }
        },
      }),
    }).j
    await d.start()
    const { id } = await job.trigger(null)
    await expect(d.waitForRun(id, { timeout: 10_000 })).rejects.toThrow(
      `ctx.run: step name 'item' is used twice in one execution of run ${id}`,
    )
    expect(calls).toEqual([0])
    expect(second.i).toBe(1)
    expect(second.err).toBeInstanceOf(ValidationError)
    const steps = await d.getSteps(id)
    expect(steps.map((s) => [s.name, s.index, s.status, s.output])).toEqual([['item', 0, 'completed', 0]])
  })

  it('a duplicate inside Promise.all is refused at call time and takes no position', async () => {
    const d = makeDurably()
    const calls = []
    let outcome
    const job = d.register({
      j: defineJob({
        name: 'dup-parallel',
        run: async (ctx) => {
          const first = ctx.run('x', async () => (calls.push('x1'), 1))
          const dup = ctx.run('x', async () => (calls.push('x2'), 2))
          outcome = await dup.then(
            () => 'resolved',
            (e) => e,
          )
          const y = await ctx.run('y', () => 'y')
          return [await first, y]
        },
      }),
    }).j
    await d.start()
    const { id } = await job.trigger(null)
    const run = await d.waitForRun(id, { timeout: 10_000 })
    expect(outcome).toBeInstanceOf(ValidationError)
    expect(calls).toEqual(['x1'])
    expect(run.output).toEqual([1, 'y'])
    const steps = await d.getSteps(id)
    expect(steps.map((s) => [s.name, s.index])).toEqual([
      ['x', 0],
      ['y', 1],
    ])
  })

  /** A job whose step list is `plan.steps` (changed between attempts), failing when `plan.fail` is set. */
  function changingJob(name, plan, calls) {
    return defineJob({
      name,
      run: async (ctx) => {
        const out = {}
        for (const s of plan.steps) out[s] = await ctx.run(s, () => (calls.push(s), `${s}@${plan.version}`))
        if (plan.fail) throw new Error('planned failure')
        return out
      },
    })
  }

  async function failThenRetryWith(plan, nextSteps, options = {}) {
    const d = makeDurably()
    const calls = []
    const job = d.register({ j: { ...changingJob('changing', plan, calls), ...options } }).j
    await d.start()
    const { id } = await job.trigger(null)
    await expect(d.waitForRun(id, { timeout: 10_000 })).rejects.toThrow('planned failure')
    Object.assign(plan, { steps: nextSteps, fail: false, version: 2 })
    calls.length = 0
    await d.retry(id)
    const result = await d.waitForRun(id, { timeout: 10_000 }).then(
      (run) => ({ run }),
      (err) => ({ err }),
    )
    return { ...result, calls, steps: await d.getSteps(id) }
  }

  it('retry after a code change: an inserted, removed or renamed step is a mismatch; appended steps are fine', async () => {
    const inserted = await failThenRetryWith({ steps: ['a', 'b'], fail: true, version: 1 }, ['a', 'x', 'b'])
    expect(inserted.err.message).toMatch(/^replay mismatch at step 1: the job now calls 'x' where the stored run has 'b'/)
    expect(inserted.calls).toEqual([])

    const removed = await failThenRetryWith({ steps: ['a', 'b', 'c'], fail: true, version: 1 }, ['a', 'c'])
    expect(removed.err.message).toMatch(/^replay mismatch at step 1: the job now calls 'c' where the stored run has 'b'/)

    const renamed = await failThenRetryWith({ steps: ['a', 'b'], fail: true, version: 1 }, ['a', 'b2'])
    expect(renamed.err.message).toMatch(/the job now calls 'b2' where the stored run has 'b'/)

    const appended = await failThenRetryWith({ steps: ['a', 'b'], fail: true, version: 1 }, ['a', 'b', 'c'])
    expect(appended.err).toBeUndefined()
    expect(appended.calls).toEqual(['c'])
    expect(appended.run.output).toEqual({ a: 'a@1', b: 'b@1', c: 'c@2' }) // a and b replayed from the first attempt
  })

  it("lenient: the same code changes replay by name", async () => {
    const lenient = { replay: 'lenient' }
    const r = await failThenRetryWith({ steps: ['a', 'b'], fail: true, version: 1 }, ['b', 'x', 'a'], lenient)
    expect(r.err).toBeUndefined()
    expect(r.calls).toEqual(['x'])
    expect(r.run.output).toEqual({ b: 'b@1', x: 'x@2', a: 'a@1' })
  })

  it('a step stored at another position with nothing stored at this one is a mismatch too', async () => {
    // p0 and p2 complete, p1 fails: stored p0@0, p2@2. New code calls p0, p2 one after the other.
    const d = makeDurably()
    let version = 1
    const calls = []
    const job = d.register({
      j: defineJob({
        name: 'gap',
        run: async (ctx) => {
          if (version === 1) {
            return Promise.all([
              ctx.run('p0', () => 'p0'),
              ctx.run('p1', async () => {
                await sleep(100)
                throw new Error('p1 failed')
              }),
              ctx.run('p2', () => 'p2'),
            ])
          }
          const p0 = await ctx.run('p0', () => calls.push('p0'))
          const p2 = await ctx.run('p2', () => calls.push('p2'))
          return [p0, p2]
        },
      }),
    }).j
    await d.start()
    const { id } = await job.trigger(null)
    await expect(d.waitForRun(id, { timeout: 10_000 })).rejects.toThrow('p1 failed')
    expect((await d.getSteps(id)).map((s) => [s.name, s.index, s.status])).toEqual([
      ['p0', 0, 'completed'],
      ['p1', 1, 'failed'],
      ['p2', 2, 'completed'],
    ])
    version = 2
    await d.retry(id)
    await expect(d.waitForRun(id, { timeout: 10_000 })).rejects.toThrow(
      "replay mismatch: step 'p2' is called at position 1 but was stored at position 2",
    )
    expect(calls).toEqual([])
  })
})
