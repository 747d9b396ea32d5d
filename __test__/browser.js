'use strict'
// Browser tests: Debian's Chromium driven by playwright-core (no browser
// download). `.ci/run` installs Chromium; under CI=true a missing browser is a
// failure, elsewhere the suites that need it skip with a printed reason.

const fs = require('node:fs')

const CANDIDATES = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'].filter(Boolean)

/** Path of a Chromium binary, or null. */
function chromiumPath() {
  return CANDIDATES.find((p) => fs.existsSync(p)) ?? null
}

/**
 * Why browser tests cannot run here, or null when they can.
 * Under CI=true this throws instead: CI must have the browser.
 */
function browserSkipReason() {
  const exe = chromiumPath()
  if (exe) return null
  const reason = `no Chromium found (looked at ${CANDIDATES.join(', ')}); .ci/run installs Debian's chromium`
  if (process.env.CI === 'true') throw new Error(`browser tests need Chromium under CI: ${reason}`)
  return reason
}

/** Launches headless Chromium with the flags this machine needs; returns the playwright Browser. */
async function launchBrowser() {
  const { chromium } = require('playwright-core')
  const executablePath = chromiumPath()
  if (!executablePath) throw new Error('no Chromium binary found')
  // playwright gives the browser a fresh temporary profile of its own.
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
    ],
  })
}

module.exports = { chromiumPath, browserSkipReason, launchBrowser }
