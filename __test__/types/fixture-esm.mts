// The same types through an ES module importer (`import` condition of "exports").
import { createDurably, defineJob, ValidationError } from 'durably'
import type { Run } from 'durably'
import durablyDefault from 'durably'

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false
type Expect<T extends true> = T

const job = defineJob({ name: 'esm', run: async (ctx) => ctx.run('one', () => 1) })
const durably = createDurably({ path: ':memory:', jobs: { job } })
const done = await durably.jobs.job.triggerAndWait()
type _out = Expect<Equal<typeof done.output, number>>
const run = await durably.getRun(done.id)
type _run = Expect<Equal<typeof run, Run | null>>
const err: ValidationError = new ValidationError('x')
void [err, durablyDefault.createDurably]
