// The command-line tool (cli/, `livestore-sync`) against the real Worker: creating a project, rotating
// and retiring its keys through the config API, minting tokens the Worker accepts, and tailing a stream
// and a LiveStore store live.

import { execFile, execFileSync, spawn } from 'node:child_process'
import path from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { clientPool } from '../support/livestore-client.mjs'
import { sharedDefaultWorker } from '../support/shared.mjs'
import { makeEvents, uniqueStoreId } from '../support/util.mjs'
import { ROOT } from '../support/worker.mjs'

const ADMIN = 'cli-admin-secret'
const BIN = path.join(ROOT, 'target', 'debug', 'livestore-sync')
const run = promisify(execFile)

let worker
const clients = clientPool()

beforeAll(async () => {
  // Up to date after `make builds`; built here when the file runs alone.
  execFileSync('cargo', ['build', '-q', '-p', 'livestore-sync-cli'], { cwd: ROOT, stdio: 'inherit' })
  worker = await sharedDefaultWorker({ vars: { ADMIN_SECRET: ADMIN } })
}, 300_000)

afterAll(async () => {
  await clients.closeAll()
})

const cli = async (...args) => {
  const { stdout, stderr } = await run(BIN, [...args, '--url', worker.url], { env: { ...process.env, ADMIN_SECRET: '' } })
  return { stdout, stderr, lines: stdout.trim().split('\n') }
}

const cliFails = async (...args) => {
  try {
    await cli(...args)
  } catch (e) {
    return e
  }
  throw new Error(`livestore-sync ${args.join(' ')} succeeded`)
}

/** Runs `livestore-sync tail …` until it exits (after --limit messages); its stdout. */
const tail = (...args) =>
  new Promise((resolve, reject) => {
    const child = spawn(BIN, [...args, '--url', worker.url])
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    const timer = setTimeout(() => {
      child.kill()
      reject(new Error(`tail did not end: ${out} ${err}`))
    }, 30_000)
    child.on('exit', (code) => {
      clearTimeout(timer)
      code === 0 ? resolve(out) : reject(new Error(`tail exited ${code}: ${err}`))
    })
  })

/** The JSON values of pretty-printed output (one after another). */
const values = (text) => {
  const out = []
  let depth = 0
  let start = 0
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '{') depth++ === 0 && (start = i)
    else if (text[i] === '}' && --depth === 0) out.push(JSON.parse(text.slice(start, i + 1)))
  }
  return out
}

describe('livestore-sync', () => {
  test('--help explains the commands; a mistake says what is wrong and exits 1', async () => {
    const { stdout } = await cli('--help')
    for (const word of ['project create', 'project rotate', 'project retire', 'token', 'tail', '--store', '--ttl']) {
      expect(stdout).toContain(word)
    }
    const unknown = await cliFails('frobnicate')
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toMatch(/unknown command/)
    const noSecret = await cliFails('project', 'create', 'nope')
    expect(noSecret.stderr).toMatch(/admin-secret/)
  })

  test('project create / rotate / retire, tokens the Worker accepts, and a live tail of a stream', async () => {
    const project = `cli-${Date.now().toString(36)}-${process.pid}`
    const created = await cli('project', 'create', project, '--admin-secret', ADMIN)
    expect(JSON.parse(created.lines[0])).toEqual({ project, signingKeys: 1, corsOrigins: [], public: false })
    const secret = created.lines.at(-1)
    expect(secret.length).toBeGreaterThanOrEqual(43)

    const token = async (...args) => (await cli('token', project, '--secret', secret, ...args)).lines[0]
    const write = await token('--scope', 'write', '--ttl', '10m')
    const url = `${worker.url}/v1/stream/${project}/events`
    const put = await fetch(url, { method: 'PUT', headers: { authorization: `Bearer ${write}`, 'content-type': 'application/json' } })
    expect(put.status).toBe(201)
    const appendWith = (t, body) =>
      fetch(url, { method: 'POST', headers: { authorization: `Bearer ${t}`, 'content-type': 'application/json' }, body: JSON.stringify(body) })
    expect((await appendWith(write, { n: 1 })).status).toBeLessThan(300)
    expect((await fetch(`${url}?offset=-1`)).status).toBe(401)

    const reading = tail('tail', `${project}/events`, '--token', await token('--stream', 'events'), '--limit', '3')
    await new Promise((r) => setTimeout(r, 500))
    expect((await appendWith(write, { n: 2 })).status).toBeLessThan(300)
    expect((await appendWith(write, { n: 3, text: 'quoted "text"' })).status).toBeLessThan(300)
    expect(values(await reading)).toEqual([{ n: 1 }, { n: 2 }, { n: 3, text: 'quoted "text"' }])

    const rotated = await cli('project', 'rotate', project, '--admin-secret', ADMIN)
    expect(JSON.parse(rotated.lines[0]).signingKeys).toBe(2)
    const newSecret = rotated.lines.at(-1)
    expect(newSecret).not.toBe(secret)
    expect((await appendWith(write, { n: 4 })).status, 'the old key still verifies').toBeLessThan(300)
    const manage = (await cli('token', project, '--secret', newSecret, '--scope', 'manage')).lines[0]
    const retired = await cli('project', 'retire', project, '--token', manage)
    expect(JSON.parse(retired.lines[0]).signingKeys).toBe(1)
    expect((await appendWith(write, { n: 5 })).status, 'retired').toBe(401)
    const fresh = (await cli('token', project, '--secret', newSecret, '--scope', 'write')).lines[0]
    expect((await appendWith(fresh, { n: 5 })).status).toBeLessThan(300)
    expect(JSON.parse((await cli('project', 'show', project, '--token', manage)).stdout)).toMatchObject({ project, signingKeys: 1 })
  })

  test('a live tail of a LiveStore store', async () => {
    const storeId = uniqueStoreId('cli tail')
    const client = await clients.open({ url: `${worker.url}/sync`, storeId, transport: 'ws' })
    await client.push(makeEvents(1, 1, { argsFor: () => ({ text: 'first' }) }))
    const reading = tail('tail', '--store', storeId, '--limit', '2')
    await new Promise((r) => setTimeout(r, 500))
    await client.push(makeEvents(2, 2, { argsFor: () => ({ text: 'second' }) }))
    const events = values(await reading)
    expect(events.map((e) => [e.seqNum, e.args.text])).toEqual([
      [1, 'first'],
      [2, 'second'],
    ])
  })
})
