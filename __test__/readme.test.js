// Every code block of README.md is checked, so the README cannot rot.
//
// Convention (README authors: read this)
// --------------------------------------
// - ```ts / ```js blocks are type-checked (tsc: strict, nodenext, against the
//   package's own index.d.ts imported as 'durably'; ts blocks as .mts, js blocks
//   as .mjs with checkJs) and then RUN with node, each in its own temp directory.
//   A run must exit 0 on its own (it is killed after 30 s).
// - Free names a block uses but does not declare (`durably`, `syncUsers`, `api`,
//   `failedRunId`, `handler`, …) are imported from __test__/readme-harness.mts,
//   which holds honest stubs and a real instance with runs in each state. Add a
//   name there when a new block needs one. After the block, the harness's
//   teardown() closes `durably` and fails the block on any `worker:error`.
// - A block that cannot run gets an HTML comment on the line right before its
//   opening fence (blank lines allowed in between), with a reason:
//     <!-- readme: typecheck-only (reason) -->   type-checked, not run
//     <!-- readme: skip (reason) -->             not checked at all (e.g. browser code,
//                                                a framework file, a signature sketch)
//   Any other `<!-- readme:` comment is an error, so a typo cannot skip a check.
// - ```sh blocks: every command must be `npm install|ci|test`, `npm run <script>`
//   (the script must exist), `npx <bin> <file>` or `node <file>` (the bin and the
//   file must exist), or `npx durably <command> …` (parsed as the CLI parses it:
//   known command, known options, valid arguments). Anything else needs a skip marker.
// - The ```sql block is the schema: executed on a fresh SQLite file, its
//   sqlite_master must equal the engine's after migrate() (comments and
//   whitespace aside).
// - ```json blocks are stored values: decoding and re-encoding with lib/values.js
//   must give back the same text.
// - Blocks in any other language need a skip marker.
//
// Cost: one tsc invocation for all blocks (it also emits the JS that is run).
import fs from 'node:fs'
import path from 'node:path'
import { execFile } from 'node:child_process'
import { createRequire } from 'node:module'
import { parseArgs } from 'node:util'
import { beforeAll, describe, expect, test } from 'vitest'
import helpers from './helpers.js'

const { ROOT, tempDir, sql } = helpers
const require = createRequire(import.meta.url)
const pkg = require('../package.json')
const { createDurably } = require('..')
const values = require('../lib/values.js')

const README = path.join(ROOT, 'README.md')
const HARNESS = path.join(ROOT, '__test__', 'readme-harness.mts')
const DONE = '__readme_block_done__'
const MARKER = /^<!--\s*readme:\s*(typecheck-only|skip)\s*\((.+)\)\s*-->$/

/** Splits markdown into fenced code blocks with their marker. Throws on a malformed marker. */
function parseBlocks(text) {
  const lines = text.split('\n')
  const blocks = []
  let pendingMarker = null
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i].trim()
    if (l.startsWith('<!--') && /^<!--\s*readme:/.test(l)) {
      const m = MARKER.exec(l)
      if (!m) throw new Error(`README.md:${i + 1}: malformed readme marker ${JSON.stringify(l)}`)
      pendingMarker = { kind: m[1], reason: m[2], line: i + 1 }
      continue
    }
    const open = /^```(\S*)\s*$/.exec(lines[i])
    if (open) {
      const start = i + 1
      let end = start
      while (end < lines.length && !/^```\s*$/.test(lines[end])) end++
      if (end === lines.length) throw new Error(`README.md:${i + 1}: unclosed code block`)
      blocks.push({
        line: i + 1, // the opening fence; the code starts on line + 1
        lang: open[1],
        code: lines.slice(start, end).join('\n'),
        mode: pendingMarker ? pendingMarker.kind : 'run',
        reason: pendingMarker?.reason,
      })
      pendingMarker = null
      i = end
      continue
    }
    if (pendingMarker && l !== '') {
      throw new Error(`README.md:${pendingMarker.line}: a readme marker must be followed by a code block`)
    }
  }
  return blocks
}

// ---- harness names ---------------------------------------------------------------

/** Names exported by the harness: { values, types }. */
function harnessExports(source) {
  const valueNames = new Set()
  const typeNames = new Set()
  for (const m of source.matchAll(/^export (?:async )?(?:const|let|function|class) ([\w$]+)/gm)) valueNames.add(m[1])
  for (const m of source.matchAll(/^export (?:interface|type) ([\w$]+)/gm)) typeNames.add(m[1])
  for (const m of source.matchAll(/^export \{([^}]*)\} from/gm)) {
    for (const n of m[1].split(',')) if (n.trim()) valueNames.add(n.trim().split(/\s+as\s+/).pop())
  }
  return { valueNames, typeNames }
}

/** Top-level-ish names a block declares itself (so they must not be imported). */
function declaredNames(code) {
  const names = new Set()
  for (const m of code.matchAll(/\b(?:const|let|var|function|class)\s+([\w$]+)/g)) names.add(m[1])
  for (const m of code.matchAll(/\b(?:const|let|var)\s*[{[]([^=]*?)[}\]]\s*=/g)) {
    for (const part of m[1].split(',')) {
      const n = part.split(':').pop().split('=')[0].replace('...', '').trim()
      if (/^[\w$]+$/.test(n)) names.add(n)
    }
  }
  for (const m of code.matchAll(/^import\s+(?:type\s+)?([\w$]+)?\s*,?\s*(?:\{([^}]*)\})?\s*from/gm)) {
    if (m[1]) names.add(m[1])
    for (const n of (m[2] ?? '').split(',')) if (n.trim()) names.add(n.trim().split(/\s+as\s+/).pop())
  }
  return names
}

/** Harness names the block uses (not as `.property`) and does not declare. */
function namesFromHarness(code, { valueNames, typeNames }, isTs) {
  const declared = declaredNames(code)
  const candidates = isTs ? [...valueNames, ...typeNames] : [...valueNames]
  return candidates.filter(
    (n) => !declared.has(n) && new RegExp(`(?<![.\\w$])${n.replace('$', '\\$')}(?![\\w$])`).test(code),
  )
}

// ---- the TypeScript project the blocks are checked in -------------------------------

const PREFIX_LINES = 1 // the harness import line put before each block

/** Writes block files into `dir`; returns their descriptions. */
function writeBlockFiles(dir, blocks, exportsOf) {
  return blocks.map((b) => {
    const isTs = b.lang === 'ts'
    const file = `${b.name}.${isTs ? 'mts' : 'mjs'}`
    const names = namesFromHarness(b.code, exportsOf, isTs)
    const inScopeDurably = names.includes('durably') || declaredNames(b.code).has('durably')
    const head =
      `import * as __harness from './readme-harness.mjs';` +
      (names.length ? ` import { ${names.join(', ')} } from './readme-harness.mjs';` : '')
    const teardown = `;await __harness.teardown([${inScopeDurably ? 'durably' : ''}])`
    const tail = b.mode === 'run' ? `\n${teardown}\nconsole.log('${DONE}')\n` : '\n'
    fs.writeFileSync(path.join(dir, file), `${head}\n${b.code}${tail}`)
    return { ...b, file, names }
  })
}

function linkModule(dir, name, target) {
  const link = path.join(dir, 'node_modules', name)
  fs.mkdirSync(path.dirname(link), { recursive: true })
  fs.symlinkSync(target, link, 'dir')
}

/** Runs tsc once over the project; resolves { code, diagnostics: Map<file, string[]>, other: string[] }. */
function runTsc(dir) {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [require.resolve('typescript/bin/tsc'), '-p', dir, '--pretty', 'false'],
      { cwd: dir, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const diagnostics = new Map()
        const other = []
        let last = null
        for (const line of `${stdout}${stderr}`.split('\n')) {
          if (!line.trim()) continue
          const m = /^(.+?)\((\d+),(\d+)\): (error|warning) (TS\d+): (.*)$/.exec(line)
          if (m) {
            const file = path.basename(m[1])
            last = { file, line: Number(m[2]), col: Number(m[3]), text: `${m[5]}: ${m[6]}` }
            if (!diagnostics.has(file)) diagnostics.set(file, [])
            diagnostics.get(file).push(last)
          } else if (last && /^\s/.test(line)) {
            last.text += `\n${line}`
          } else {
            other.push(line)
          }
        }
        resolve({ code: error ? (error.code ?? 1) : 0, diagnostics, other })
      },
    )
  })
}

// ---- the checks --------------------------------------------------------------------

const readmeText = fs.readFileSync(README, 'utf8')
const blocks = parseBlocks(readmeText).map((b) => ({ ...b, name: `block-L${b.line}` }))
const codeBlocks = blocks.filter((b) => ['ts', 'js'].includes(b.lang) && b.mode !== 'skip')

// Two blocks that must FAIL, compiled and run with the README's: they prove the
// checker can fail (a type error is reported; a throwing block does not pass).
const SELF_TEST = [
  { name: 'selftest-type-error', lang: 'ts', mode: 'typecheck-only', line: 0, code: "const n: number = 'x'" },
  { name: 'selftest-throws', lang: 'js', mode: 'run', line: 0, code: "throw new Error('selftest')" },
]

let project // { dir, files, tsc }

beforeAll(async () => {
  const dir = tempDir('durably-readme-')
  linkModule(dir, 'durably', ROOT)
  linkModule(dir, 'zod', path.join(ROOT, 'node_modules', 'zod'))
  linkModule(dir, '@types/node', path.join(ROOT, 'node_modules', '@types', 'node'))
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ private: true, type: 'module' }))
  fs.writeFileSync(
    path.join(dir, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        target: 'ES2022',
        module: 'nodenext',
        moduleResolution: 'nodenext',
        lib: ['ES2022'],
        types: ['node'],
        strict: true,
        // index.d.ts itself is checked with skipLibCheck false by types.test.js.
        skipLibCheck: true,
        allowJs: true,
        checkJs: true,
        outDir: 'out',
        rootDir: '.',
        noEmitOnError: false,
        esModuleInterop: true,
      },
      include: ['*.mts', '*.mjs'],
    }),
  )
  const harnessSource = fs.readFileSync(HARNESS, 'utf8')
  fs.writeFileSync(path.join(dir, 'readme-harness.mts'), harnessSource)
  const exportsOf = harnessExports(harnessSource)
  const files = writeBlockFiles(dir, [...codeBlocks, ...SELF_TEST], exportsOf)
  project = { dir, files, tsc: await runTsc(dir) }
}, 180_000)

/**
 * tsc reports no type errors at all while any file has a syntax error, so a
 * clean block means nothing unless the self-test's type error was reported.
 */
function typeCheckRan() {
  const sentinel = project.tsc.diagnostics.get('selftest-type-error.mts') ?? []
  return sentinel.some((d) => d.text.startsWith('TS2322'))
}

/** tsc's messages for a block, with README line numbers. */
function blockDiagnostics(b) {
  return (project.tsc.diagnostics.get(b.file) ?? []).map(
    (d) => `README.md:${b.line + d.line - PREFIX_LINES}:${d.col} ${d.text}`,
  )
}

/** Runs a block's emitted JS in its own directory; resolves { code, signal, stdout, stderr }. */
function runBlock(b) {
  const cwd = path.join(project.dir, `run-${b.name}`)
  fs.mkdirSync(cwd)
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [path.join(project.dir, 'out', b.file.replace(/\.mts$/, '.mjs'))],
      { cwd, timeout: 30_000, killSignal: 'SIGKILL' },
      (error, stdout, stderr) =>
        resolve({ code: error ? (error.code ?? null) : 0, signal: error?.signal ?? null, stdout, stderr }),
    )
  })
}

describe('README code blocks', () => {
  test('every block is in a known language or marked skip, and markers are well-formed', () => {
    const unknown = blocks.filter((b) => b.mode !== 'skip' && !['ts', 'js', 'sh', 'sql', 'json'].includes(b.lang))
    expect(unknown.map((b) => `README.md:${b.line} \`\`\`${b.lang}`)).toEqual([])
    const marked = blocks.filter((b) => b.mode !== 'run')
    expect(marked.filter((b) => !b.reason.trim()).map((b) => b.line)).toEqual([])
    expect(() => parseBlocks('<!-- readme: typecheckonly -->\n```ts\nx\n```\n')).toThrow(/malformed readme marker/)
    expect(() => parseBlocks('<!-- readme: skip (why) -->\ntext\n```ts\nx\n```\n')).toThrow(/followed by a code block/)
  })

  test('the checker itself fails on a type error and on a throwing block', async () => {
    const [typeError, throws] = project.files.filter((f) => f.name.startsWith('selftest'))
    expect(blockDiagnostics(typeError).join('\n')).toMatch(/TS2322/)
    const r = await runBlock(throws)
    expect(r.code).not.toBe(0)
    expect(r.stderr).toMatch(/selftest/)
    expect(r.stdout).not.toContain(DONE)
  }, 60_000)

  test('the harness and nothing else outside the blocks has type errors', () => {
    const harness = (project.tsc.diagnostics.get('readme-harness.mts') ?? []).map((d) => `${d.line}: ${d.text}`)
    const blockFiles = new Set(project.files.map((f) => f.file))
    const elsewhere = [...project.tsc.diagnostics.keys()].filter((f) => f !== 'readme-harness.mts' && !blockFiles.has(f))
    expect({ harness, elsewhere, other: project.tsc.other }).toEqual({ harness: [], elsewhere: [], other: [] })
  })

  for (const b of codeBlocks) {
    const what = b.mode === 'run' ? 'type-checks and runs' : `type-checks (not run: ${b.reason})`
    test(`README.md:${b.line} \`\`\`${b.lang} ${what}`, async () => {
      const file = project.files.find((f) => f.name === b.name)
      expect(blockDiagnostics(file)).toEqual([])
      expect(typeCheckRan(), 'tsc skipped type-checking: fix the syntax errors reported for other blocks first').toBe(true)
      if (b.mode !== 'run') return
      const r = await runBlock(file)
      const context = `README.md:${b.line}, names from the harness: ${file.names.join(', ')}\n${r.stdout}`
      expect({ code: r.code, signal: r.signal, stderr: r.stderr }, context).toEqual({ code: 0, signal: null, stderr: '' })
      expect(r.stdout).toContain(DONE)
    }, 60_000)
  }

  for (const b of blocks.filter((x) => x.lang === 'sh' && x.mode !== 'skip')) {
    test(`README.md:${b.line} \`\`\`sh names real npm scripts and files`, () => {
      const problems = []
      for (const raw of b.code.split('\n')) {
        const line = raw.replace(/(^|\s)#.*$/, '').trim()
        for (const cmd of line.split(/&&|\|\||;/).map((c) => c.trim()).filter(Boolean)) {
          const problem = checkShellCommand(cmd.split(/\s+/))
          if (problem) problems.push(`${cmd}: ${problem}`)
        }
      }
      expect(problems).toEqual([])
    })
  }

  const sqlBlocks = blocks.filter((b) => b.lang === 'sql' && b.mode !== 'skip')
  test('the README has exactly one schema (```sql) block', () => {
    expect(sqlBlocks.length).toBe(1)
  })
  for (const b of sqlBlocks) {
    test(`README.md:${b.line} \`\`\`sql executes on a fresh SQLite and equals the engine's schema`, async () => {
      const readmeDb = path.join(project.dir, 'readme-schema.db')
      sql(readmeDb, b.code, { script: true })
      const engineDb = path.join(project.dir, 'engine-schema.db')
      const d = createDurably({ path: engineDb })
      await d.migrate()
      await d.close()
      const query = 'SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type, name'
      const normalize = (rows) => rows.map(([type, name, tbl, text]) => [type, name, tbl, normalizeSql(text)])
      expect(normalize(sql(readmeDb, query))).toEqual(normalize(sql(engineDb, query)))
    })
  }

  for (const b of blocks.filter((x) => x.lang === 'json' && x.mode !== 'skip')) {
    test(`README.md:${b.line} \`\`\`json is what durably stores for the value it decodes to`, () => {
      const text = b.code.trim()
      expect(values.encode(values.decode(text), 'value')).toBe(text)
    })
  }
})

/** Why a shell command in a README block is wrong, or null. */
function checkShellCommand([cmd, ...args]) {
  const exists = (f) => fs.existsSync(path.join(ROOT, f))
  if (cmd === 'npm') {
    const [sub, script] = args
    if (sub === 'install' || sub === 'ci') return null
    if (sub === 'test') return pkg.scripts.test ? null : 'no "test" script'
    if (sub === 'run') return pkg.scripts[script] ? null : `no "${script}" script in package.json`
    return `unchecked npm command (mark the block skip if it is right)`
  }
  if (cmd === 'npx' && args[0] === 'durably') return checkCliCommand(args.slice(1))
  if (cmd === 'npx') {
    const [bin, file] = args
    if (!exists(path.join('node_modules', '.bin', bin))) return `no ${bin} in node_modules/.bin`
    return file && !exists(file) ? `no file ${file}` : null
  }
  if (cmd === 'node') return args[0] && exists(args[0]) ? null : `no file ${args[0]}`
  return 'unchecked command (mark the block skip if it is right)'
}

/** Why `npx durably …` is wrong: the package's bin, then the command and its options as the CLI parses them. */
function checkCliCommand([name, ...rest]) {
  if (!pkg.bin?.durably || !fs.existsSync(path.join(ROOT, pkg.bin.durably))) return 'package.json has no durably bin'
  const { COMMANDS } = require('../lib/cli/commands.js')
  const { COMMON } = require('../lib/cli/main.js')
  const command = COMMANDS[name]
  if (!command) return `no durably command ${JSON.stringify(name)}`
  try {
    const options = { ...COMMON, ...command.options }
    const { values, positionals } = parseArgs({ args: rest, options, allowPositionals: true, strict: true })
    command.check?.(values, positionals, Error)
  } catch (err) {
    return err.message
  }
  return null
}

/** SQL text without comments, whitespace normalized: formatting is free, structure is not. */
function normalizeSql(text) {
  return text
    .replace(/--[^\n]*/g, ' ')
    .replace(/\s+/g, ' ')
    .replace(/\s*([(),])\s*/g, '$1')
    .trim()
}

