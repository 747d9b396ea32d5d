import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['__test__/**/*.test.{js,mjs,ts}'],
    // Native addons and temp files stay in their own process per suite.
    pool: 'forks',
    globalSetup: ['__test__/global-setup.mjs'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
  },
})
