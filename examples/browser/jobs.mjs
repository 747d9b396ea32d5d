// The job: ten slow steps with progress. Nothing here is browser-specific:
// with `import { defineJob } from 'durably'` the same code runs under Node.
import { defineJob } from 'durably/browser'

export const importPhotos = defineJob({
  name: 'import-photos',
  run: async (ctx, input) => {
    const total = input.count
    let bytes = 0
    for (let i = 1; i <= total; i++) {
      // A completed step is not executed again after a reload: its stored result comes back.
      bytes += await ctx.run(`photo-${i}`, async () => {
        await new Promise((r) => setTimeout(r, input.stepMs))
        return 1000 * i
      })
      ctx.progress(i, total, `photo ${i} of ${total}`)
    }
    return { photos: total, bytes }
  },
})
