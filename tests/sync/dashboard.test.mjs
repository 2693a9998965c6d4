// The dashboard at /admin/ in a real browser (Debian's Chromium, driven by playwright-core): opened with
// the secret in the URL fragment, it lists a store a real 0.4.0 client pushed to, shows its info and
// events, tails a new push live, and resets the store, after which the client meets
// BackendIdMismatchError and syncs again as LiveStore does. Screenshots go to .wrangler/test-logs/.

import fs from 'node:fs'
import path from 'node:path'
import { chromium } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { clientPool } from '../support/livestore-client.mjs'
import { sharedDoRpcWorker } from '../support/shared.mjs'
import { makeEvents, storedRows, uniqueStoreId } from '../support/util.mjs'
import { ROOT } from '../support/worker.mjs'

const TEST_TIMEOUT_MS = 90_000
const SECRET = 'admin-test-secret'
const SHOTS = path.join(ROOT, '.wrangler', 'test-logs')
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

let worker
let browser
const clients = clientPool()

beforeAll(async () => {
  worker = await sharedDoRpcWorker({ vars: { ADMIN_SECRET: SECRET } })
  if (!fs.existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: run make setup (Debian package chromium)`)
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
  fs.mkdirSync(SHOTS, { recursive: true })
}, TEST_TIMEOUT_MS)

afterAll(async () => {
  await clients.closeAll()
  await browser?.close()
})

/** A page with its uncaught errors collected. */
const openPage = async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } })
  const errors = []
  page.on('pageerror', (e) => errors.push(e.message))
  return { page, errors }
}

const shot = (page, name) => page.screenshot({ path: path.join(SHOTS, `dashboard-${name}.png`), fullPage: true })

describe('dashboard', () => {
  test('asks for the secret, refuses a wrong one, and keeps a right one for the tab', async () => {
    const { page, errors } = await openPage()
    try {
      await page.goto(`${worker.url}/admin/`)
      await page.locator('#secret').waitFor()
      await page.fill('#secret', 'wrong')
      await page.click('#login-form button')
      await expect.poll(() => page.locator('#login-error').textContent()).toMatch(/wrong/)
      expect(await page.locator('#app').isHidden()).toBe(true)
      await page.fill('#secret', SECRET)
      await page.click('#login-form button')
      await page.locator('#app').waitFor()
      await page.reload()
      await page.locator('#app').waitFor() // kept in sessionStorage
      expect(errors, `uncaught in the page: ${errors.join(" | ")}`).toEqual([])
    } finally {
      await page.close()
    }
  }, TEST_TIMEOUT_MS)

  test('shows a store a client pushed to, tails a new push live, and resets it; the client re-syncs', async () => {
    const storeId = uniqueStoreId('dashboard')
    const client = await clients.open({ url: `${worker.url}/sync`, storeId, transport: 'ws' })
    await client.push(makeEvents(1, 3, { argsFor: (n) => ({ id: `t${n}`, text: `todo ${n}` }) }))
    await client.pullAll()
    const before = await client.backendId()

    const { page, errors } = await openPage()
    try {
      await page.goto(`${worker.url}/admin/#secret=${encodeURIComponent(SECRET)}`)
      await page.locator('#app').waitFor()
      expect(new URL(page.url()).hash, 'the secret leaves the address bar').toBe('')

      await page.fill('[data-testid=filter]', storeId)
      const item = page.locator(`[data-testid=list-item][data-key="${storeId}"]`)
      await item.waitFor()
      await expect.poll(() => item.locator('.sub').textContent()).toMatch(/^3 events/)
      await item.click()
      await expect.poll(() => page.locator('[data-testid=info-events]').textContent()).toBe('3')
      expect(await page.locator('[data-testid=info-backend-id]').textContent()).toBe(before)
      await expect.poll(() => page.locator('[data-testid=events] tbody tr').count()).toBe(3)
      expect(await page.locator('[data-testid=events] tbody tr').first().textContent()).toContain('todo 1')
      await shot(page, 'store')

      await page.click('[data-testid=tail-toggle]')
      await page.locator('[data-live=on]').waitFor()
      await client.push(makeEvents(4, 4, { argsFor: () => ({ id: 't4', text: 'pushed while tailing' }) }))
      const tailed = page.locator('[data-testid=tail] tr[data-seq="4"]')
      await tailed.waitFor({ timeout: 15_000 })
      expect(await tailed.textContent()).toContain('pushed while tailing')
      await shot(page, 'tail')

      await page.click('[data-testid=reset]')
      await page.click('[data-testid=confirm-ok]')
      await page.locator('[data-testid=notice]').waitFor()
      const after = await page.locator('[data-testid=info-backend-id]').textContent()
      expect(after).not.toBe(before)
      expect(await page.locator('[data-testid=info-events]').textContent()).toBe('4')

      // The client meets the new backend as LiveStore expects, then syncs again from the server.
      await expect(client.push(makeEvents(5, 5))).rejects.toMatchObject({ _tag: 'BackendIdMismatchError', expected: after })
      const fresh = await clients.open({ url: `${worker.url}/sync`, storeId, transport: 'ws' })
      const pages = await fresh.pullAll()
      expect(pages.flatMap((p) => p.batch.map((i) => i.eventEncoded.seqNum))).toEqual([1, 2, 3, 4])
      expect(await fresh.backendId()).toBe(after)
      await fresh.push(makeEvents(5, 5))
      expect((await storedRows(worker, storeId)).length).toBe(5)

      await page.click('#refresh')
      await expect.poll(() => page.locator('[data-testid=info-events]').textContent()).toBe('5')
      await shot(page, 'reset')
      expect(errors, `uncaught in the page: ${errors.join(" | ")}`).toEqual([])
    } finally {
      await page.close()
    }
  }, TEST_TIMEOUT_MS)

  test('shows a stream with its metadata and producers, and tails an append live', async () => {
    const name = `dashboard/${uniqueStoreId('stream')}`
    const url = `${worker.url}/v1/stream/${name}`
    expect((await fetch(url, { method: 'PUT', headers: { 'content-type': 'application/json' } })).status).toBe(201)
    const append = (seq, body) =>
      fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'producer-id': 'writer-1', 'producer-epoch': '0', 'producer-seq': String(seq) },
        body: JSON.stringify(body),
      })
    expect((await append(0, { hello: 'world' })).status).toBeLessThan(300)

    const { page, errors } = await openPage()
    try {
      await page.goto(`${worker.url}/admin/#secret=${encodeURIComponent(SECRET)}`)
      await page.click('[data-testid=tab-streams]')
      await page.fill('[data-testid=filter]', name)
      const item = page.locator(`[data-testid=list-item][data-key="/v1/stream/${name}"]`)
      await item.waitFor()
      await item.click()
      await expect.poll(() => page.locator('[data-testid=stream-messages]').textContent()).toBe('1')
      expect(await page.locator('#detail').textContent()).toContain('writer-1')

      await page.click('[data-testid=tail-toggle]')
      await page.locator('[data-live=on]').waitFor()
      expect((await append(1, { live: 'append while tailing' })).status).toBeLessThan(300)
      await expect.poll(() => page.locator('[data-testid=tail]').textContent(), { timeout: 15_000 }).toContain('append while tailing')
      await shot(page, 'stream')
      expect(errors, `uncaught in the page: ${errors.join(" | ")}`).toEqual([])
    } finally {
      await page.close()
    }
  }, TEST_TIMEOUT_MS)
})
