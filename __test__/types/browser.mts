// durably/browser types: the same job definitions and handles as in Node.
import { createDurably, defineJob, DurablyError } from 'durably/browser'
import type { Durably, Run } from 'durably/browser'
import { z } from 'zod'

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false
type Expect<T extends true> = T

const greet = defineJob({
  name: 'greet',
  input: z.object({ name: z.string() }),
  run: async (ctx, input) => ctx.run('hello', () => `hi ${input.name}`),
})

export async function browserTypes() {
  const durably = createDurably({ path: 'app.db', directory: 'app', lockTimeout: 1000, jobs: { greet } })
  await durably.init()
  const r = await durably.jobs.greet.triggerAndWait({ name: 'a' })
  type _output = Expect<Equal<typeof r.output, string>>
  const run = await durably.getRun(r.id)
  type _run = Expect<Equal<typeof run, Run<unknown, unknown> | null>>
  // @ts-expect-error a tab does not process runs by hand
  durably.processOne
  // @ts-expect-error not an option of the browser build
  createDurably({ busyTimeout: 10 })
  const d: Durably<{ greet: typeof greet }> = durably
  await d.close()
  if (!(new DurablyError('x', 'DB_LOCKED') instanceof Error)) throw new Error('unreachable')
}
