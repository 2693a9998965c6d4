// Starts / stops / restarts `wrangler dev` for a Worker under test, and reads its D1 and Durable Object
// SQLite files back.
//
// Every worker gets its own persist dir (<root>/.wrangler/test-state/<name>) and its own free port;
// its output goes to <root>/.wrangler/test-logs/<name>.log. Processes are spawned in their own
// process group so that wrangler *and* its workerd children can be killed together, and an exit
// hook kills whatever is still running when the process goes away.
//
// Most test files share Workers (see shared.mjs and global-setup.mjs): the run starts one per
// configuration, on first use. `startWorker` starts a Worker of a test's own, for tests that stop,
// kill or restart it, or need vars of their own.

import { execFile, spawn } from 'node:child_process'
import fs from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { findServer } from './procs.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const TESTS_DIR = path.resolve(here, '..')

/** Repo root (where wrangler.toml lives). */
export const ROOT = path.resolve(TESTS_DIR, '..')
const WRANGLER = path.join(ROOT, 'client-ts', 'node_modules', '.bin', 'wrangler')
const D1_NAME = 'livestore-sync'
const SQLITE_HELPER = path.join(here, 'sqlite.py')

/**
 * Where the default worker keeps its event logs: `E2E_STORAGE` = `d1` (default) | `do-sqlite`.
 * startWorker passes it to the default worker as `--var SYNC_STORAGE:<value>`.
 */
export const STORAGES = ['d1', 'do-sqlite']
export const E2E_STORAGE = process.env.E2E_STORAGE ?? 'd1'
if (!STORAGES.includes(E2E_STORAGE)) {
  throw new Error(`E2E_STORAGE must be one of ${STORAGES.join(', ')}, not ${JSON.stringify(E2E_STORAGE)}`)
}

/** First start may include the Rust build. */
const START_TIMEOUT_MS = Number(process.env.E2E_START_TIMEOUT_MS ?? 300_000)
const WRANGLER_CMD_TIMEOUT_MS = 120_000

const wranglerEnv = () => ({
  ...process.env,
  CLOUDFLARE_CF_FETCH_ENABLED: 'false',
  WRANGLER_SEND_METRICS: 'false',
  NO_COLOR: '1',
  FORCE_COLOR: '0',
  // keep wrangler's own debug logs inside the project instead of ~/.config
  WRANGLER_LOG_PATH: path.join(ROOT, '.wrangler', 'test-logs', 'wrangler'),
})

// ---------------------------------------------------------------------------------------------
// process bookkeeping: pids of process groups we started and that may still be alive

const liveGroups = new Set()

const killGroup = (pid, signal) => {
  try {
    process.kill(-pid, signal)
    return true
  } catch {
    return false // ESRCH: group already gone
  }
}

const groupAlive = (pid) => killGroup(pid, 0)

let exitHooksInstalled = false
const installExitHooks = () => {
  if (exitHooksInstalled) return
  exitHooksInstalled = true
  const killAll = () => {
    for (const pid of liveGroups) killGroup(pid, 'SIGKILL')
    liveGroups.clear()
  }
  process.on('exit', killAll)
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.once(sig, () => {
      killAll()
      // re-raise with the default handler so the exit status stays meaningful
      process.kill(process.pid, sig)
    })
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Waits until every process of the group is gone (SIGTERM first, SIGKILL after `graceMs`). */
const terminateGroup = async (child, graceMs = 5_000) => {
  const pid = child.pid
  const exited = child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve()
    : new Promise((resolve) => child.once('exit', resolve))
  killGroup(pid, 'SIGTERM')
  const deadline = Date.now() + graceMs
  await Promise.race([exited, sleep(graceMs)])
  // the leader may be gone while workerd children of the group still linger
  while (groupAlive(pid) && Date.now() < deadline) await sleep(100)
  if (groupAlive(pid)) killGroup(pid, 'SIGKILL')
  await exited
  for (let i = 0; i < 50 && groupAlive(pid); i++) await sleep(100)
  liveGroups.delete(pid)
}

// ---------------------------------------------------------------------------------------------
// small helpers

export const getFreePort = () =>
  new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })

const portIsFree = (port) =>
  new Promise((resolve) => {
    const srv = net.createServer()
    srv.once('error', () => resolve(false))
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)))
  })

const waitForPortFree = async (port, timeoutMs = 15_000) => {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await portIsFree(port)) return
    await sleep(200)
  }
  throw new Error(`port ${port} still in use ${timeoutMs} ms after stopping wrangler`)
}

/** GET with node:http (independent of whatever globalThis.fetch is), no keep-alive. */
const httpGet = (url, timeoutMs) =>
  new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, timeout: timeoutMs }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d) => (body += d))
      res.on('end', () => resolve({ status: res.statusCode, body }))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', reject)
  })

const tail = (file, maxChars = 6_000) => {
  try {
    const text = fs.readFileSync(file, 'utf8')
    return text.length > maxChars ? `…${text.slice(-maxChars)}` : text
  } catch {
    return '(no log)'
  }
}

/** Runs a one-shot wrangler command (in `cwd`, default ROOT); output is appended to `logFile` too. */
const runWrangler = (args, { logFile, timeoutMs = WRANGLER_CMD_TIMEOUT_MS, cwd = ROOT } = {}) =>
  new Promise((resolve, reject) => {
    installExitHooks()
    const child = spawn(WRANGLER, args, { cwd, env: wranglerEnv(), detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
    liveGroups.add(child.pid)
    const out = []
    const err = []
    child.stdout.on('data', (d) => out.push(d))
    child.stderr.on('data', (d) => err.push(d))
    const timer = setTimeout(() => {
      killGroup(child.pid, 'SIGKILL')
      reject(new Error(`wrangler ${args.slice(0, 3).join(' ')} timed out after ${timeoutMs} ms`))
    }, timeoutMs)
    child.once('error', (e) => {
      clearTimeout(timer)
      liveGroups.delete(child.pid)
      reject(e)
    })
    child.once('close', (code) => {
      clearTimeout(timer)
      liveGroups.delete(child.pid)
      const stdout = Buffer.concat(out).toString('utf8')
      const stderr = Buffer.concat(err).toString('utf8')
      if (logFile) {
        const shown = stdout.length > 4_000 ? `${stdout.slice(0, 4_000)}… (${stdout.length} chars)` : stdout
        fs.appendFileSync(logFile, `\n$ wrangler ${args.join(' ')}\n${shown}${stderr}(exit ${code})\n`)
      }
      resolve({ code, stdout, stderr })
    })
  })

/** Extracts the JSON value from `wrangler … --json` output (tolerating stray lines before it). */
const parseJsonOutput = (stdout) => {
  try {
    return JSON.parse(stdout)
  } catch {
    const start = stdout.search(/^\s*[[{]/m)
    if (start === -1) throw new Error(`no JSON in wrangler output:\n${stdout.slice(0, 2_000)}`)
    return JSON.parse(stdout.slice(start))
  }
}

// ---------------------------------------------------------------------------------------------

/** The top-level `name` of a wrangler.toml (the DO state dir is named after it). */
const workerNameOf = (configPath) => {
  const text = fs.readFileSync(configPath, 'utf8')
  // top-level keys come before the first [table]
  const topLevel = text.split(/^\s*\[/m)[0]
  const match = topLevel.match(/^\s*name\s*=\s*"([^"]+)"/m)
  if (!match) throw new Error(`no top-level name in ${configPath}`)
  return match[1]
}

/** Runs the Python SQLite helper (Node 20 has no SQLite); see sqlite.py for `input`. */
const runSqliteHelper = (input) =>
  new Promise((resolve, reject) => {
    execFile('python3', [SQLITE_HELPER, JSON.stringify(input)], { timeout: 60_000, maxBuffer: 256 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        reject(new Error(`sqlite.py failed (${err.message.split('\n')[0]}):\n${stderr}${stdout.slice(0, 2_000)}`))
        return
      }
      try {
        resolve(JSON.parse(stdout))
      } catch {
        reject(new Error(`sqlite.py printed no JSON:\n${stdout.slice(0, 2_000)}\n${stderr}`))
      }
    })
  })

/**
 * Where a Worker of `spec` lives on disk, and how it is started: its descriptor. Plain data, so a
 * shared Worker's descriptor can travel from the run's global setup to the test files.
 *
 * @param {object} spec
 * @param {string} spec.name  picks the persist dir and log file
 * @param {string} [spec.config]  wrangler config relative to ROOT (e.g. `examples/token-auth/wrangler.toml`) or
 *   absolute (e.g. DO_RPC_TEST_CONFIG); default: ROOT's wrangler.toml, the shipped Worker. Wrangler runs in the
 *   config's directory.
 * @param {Record<string, string>} [spec.vars]  passed as `wrangler dev --var NAME:VALUE`
 * @param {'d1' | 'do-sqlite'} [spec.storage]  where the worker keeps event logs. For the shipped Worker it
 *   defaults to E2E_STORAGE and is passed as `--var SYNC_STORAGE:<storage>`; a custom worker (`config`)
 *   must say where its logs live (nothing is passed to it).
 * @param {string} [spec.scriptName]  the Worker's name instead of its config's (`wrangler dev --name`): other
 *   local dev sessions bind its Durable Objects by this name (`script_name`, through wrangler's dev registry)
 */
export const describeWorker = ({ name, config, vars = {}, storage, scriptName }) => {
  const configPath = path.resolve(ROOT, config ?? 'wrangler.toml')
  if (config) {
    if (storage === undefined) throw new Error(`worker ${name}: a custom worker (${config}) needs a storage`)
  } else {
    storage = storage ?? E2E_STORAGE
    vars = { SYNC_STORAGE: storage, ...vars }
  }
  if (!STORAGES.includes(storage)) throw new Error(`worker ${name}: unknown storage ${JSON.stringify(storage)}`)
  const workerName = scriptName ?? workerNameOf(configPath)
  const persistDir = path.join(ROOT, '.wrangler', 'test-state', name)
  return {
    name,
    configPath,
    // wrangler runs the [build] command in its cwd, and the configs' relative paths assume their own dir
    cwd: path.dirname(configPath),
    configArgs: config ? ['--config', configPath] : [],
    devArgs: scriptName ? ['--name', scriptName] : [],
    vars,
    storage,
    workerName,
    persistDir,
    logFile: path.join(ROOT, '.wrangler', 'test-logs', `${name}.log`),
    // Durable Object SQLite files: <persistDir>/v3/do/<worker name>-<class>/<hex id>.sqlite
    doDir: path.join(persistDir, 'v3', 'do', `${workerName}-SyncBackendDO`),
  }
}

/**
 * What tests read of a Worker's state, whether it is running or not: SQL on its D1 database and on its
 * Durable Objects' SQLite files, and its log. `desc` is a descriptor (describeWorker) with `url`.
 */
export const workerHandle = (desc) => {
  /**
   * Runs SQL in the local D1 database's SQLite file (no wrangler process: fast, and fine while the worker
   * is down). Reads while the worker runs; `write: true` only with the worker stopped.
   * @returns {Promise<any[]>} the rows
   */
  const d1 = async (sql, { params = [], write = false } = {}) => {
    const dir = path.join(desc.persistDir, 'v3', 'd1', 'miniflare-D1DatabaseObject')
    const res = await runSqliteHelper({ d1: true, dir, sql, params, write })
    if (res.error) throw new Error(`D1 of worker ${desc.name}: ${res.error}`)
    return res.rows
  }

  /**
   * Finds the SQLite file of the store's Durable Object (by the name miniflare records for
   * `idFromName`, the `context_7` row or the event-log table) and optionally runs SQL in it.
   * Throws if no file belongs to the store, so a lookup can never silently read nothing.
   * Reading while the worker runs is fine (read-only); `write: true` only with the worker stopped.
   *
   * @param {string} storeId
   * @param {{ sql?: string, params?: any[], write?: boolean, ifTable?: string, objectClass?: string }} [opts]
   *   `ifTable`: run `sql` only if that table exists in the file (else `rows` is []);
   *   `objectClass`: another Durable Object class of the worker (e.g. `StreamObject`, whose objects are
   *   found by the name given to idFromName, the stream path), instead of SyncBackendDO
   * @returns {Promise<{ file: string, tables: string[], rows: any[] }>}
   */
  const doSql = async (storeId, { sql, params = [], write = false, ifTable, objectClass } = {}) => {
    const dir = objectClass ? path.join(desc.persistDir, 'v3', 'do', `${desc.workerName}-${objectClass}`) : desc.doDir
    const res = await runSqliteHelper({ dir, storeId, table: eventlogTableName(storeId), sql, params, write, ifTable })
    if (res.error) throw new Error(`DO SQLite of store ${storeId} in ${dir}: ${res.error}`)
    return res
  }

  /** Current size of the log file: pass it to logSince() to get what the worker logged afterwards. */
  const logOffset = () => fs.statSync(desc.logFile).size
  /** The worker's log (wrangler dev output, workerd errors) written since `offset`. */
  const logSince = (offset) => {
    const fd = fs.openSync(desc.logFile, 'r')
    try {
      const size = fs.fstatSync(fd).size
      const buf = Buffer.alloc(Math.max(0, size - offset))
      fs.readSync(fd, buf, 0, buf.length, offset)
      return buf.toString('utf8')
    } finally {
      fs.closeSync(fd)
    }
  }

  return { ...desc, d1, doSql, logOffset, logSince }
}

/**
 * Starts a fresh worker (empty persisted state, migrations applied) on a free port; see describeWorker for
 * `spec`. Besides workerHandle's access to its state, the result controls its process: stop, start,
 * restart, kill (SIGKILL), and `processes()` (its workerd and node processes, for memory readings).
 */
export const startWorker = async (spec) => {
  installExitHooks()
  const desc = describeWorker(spec)
  const { name, cwd, configArgs, devArgs, persistDir, logFile } = desc
  const varArgs = Object.entries(desc.vars).flatMap(([k, v]) => ['--var', `${k}:${v}`])
  fs.rmSync(persistDir, { recursive: true, force: true })
  fs.mkdirSync(persistDir, { recursive: true })
  fs.mkdirSync(path.dirname(logFile), { recursive: true })
  fs.writeFileSync(
    logFile,
    `=== ${new Date().toISOString()} test worker "${name}" (config ${desc.configPath}, ` +
      `storage ${desc.storage}, vars ${JSON.stringify(desc.vars)}) ===\n`,
  )

  const port = await getFreePort()
  const inspectorPort = await getFreePort()
  const url = `http://127.0.0.1:${port}`

  const migrate = await runWrangler(
    ['d1', 'migrations', 'apply', D1_NAME, '--local', '--persist-to', persistDir, ...configArgs],
    { logFile, cwd },
  )
  if (migrate.code !== 0) {
    throw new Error(`wrangler d1 migrations apply failed (exit ${migrate.code}); log ${logFile}:\n${tail(logFile)}`)
  }

  /** @type {import('node:child_process').ChildProcess | undefined} */
  let child

  // wrangler 4 runs the [build] command again once its watcher is ready and then reloads the
  // runtime on fresh internal ports; another Worker starting at the same time can take one of them
  // first, and that start fails with "Address already in use". Such a start is tried again.
  const start = async () => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await startOnce()
      } catch (e) {
        if (attempt >= 3 || !/Address already in use/.test(e.message)) throw e
        fs.appendFileSync(logFile, `\n=== ${new Date().toISOString()} start failed on a port taken meanwhile; again ===\n`)
      }
    }
  }

  const startOnce = async () => {
    if (child) throw new Error(`worker "${name}" is already running`)
    await waitForPortFree(port)
    fs.appendFileSync(logFile, `\n=== ${new Date().toISOString()} wrangler dev on port ${port} ===\n`)
    const fd = fs.openSync(logFile, 'a')
    const args = [
      'dev',
      '--ip', '127.0.0.1',
      '--port', String(port),
      '--inspector-port', String(inspectorPort),
      '--persist-to', persistDir,
      '--show-interactive-dev-session=false',
      ...configArgs,
      ...devArgs,
      ...varArgs,
    ]
    const proc = spawn(WRANGLER, args, { cwd, env: wranglerEnv(), detached: true, stdio: ['ignore', fd, fd] })
    fs.closeSync(fd)
    liveGroups.add(proc.pid)
    child = proc
    let exitInfo
    proc.once('exit', (code, signal) => (exitInfo = { code, signal }))

    const deadline = Date.now() + START_TIMEOUT_MS
    while (true) {
      if (exitInfo) {
        child = undefined
        await terminateGroup(proc)
        throw new Error(`wrangler dev exited during start-up (${JSON.stringify(exitInfo)}); log ${logFile}:\n${tail(logFile)}`)
      }
      if (Date.now() > deadline) {
        child = undefined
        await terminateGroup(proc)
        throw new Error(`wrangler dev not ready after ${START_TIMEOUT_MS} ms; log ${logFile}:\n${tail(logFile)}`)
      }
      try {
        const res = await httpGet(`${url}/`, 5_000)
        if (res.status === 200 && res.body.startsWith('Info:')) return
      } catch {
        // not listening yet
      }
      await sleep(200)
    }
  }

  const stop = async () => {
    const proc = child
    if (!proc) return
    child = undefined
    await terminateGroup(proc)
    await waitForPortFree(port)
  }

  const restart = async () => {
    await stop()
    await start()
  }

  /**
   * A crash: SIGKILL to wrangler and workerd at once (the whole process group), no grace period.
   * Resolves once every process of the group is gone and the port is free; `start()` then brings
   * the worker back on the same persisted state.
   */
  const kill = async () => {
    const proc = child
    if (!proc) return
    child = undefined
    const exited = proc.exitCode !== null || proc.signalCode !== null
      ? Promise.resolve()
      : new Promise((resolve) => proc.once('exit', resolve))
    killGroup(proc.pid, 'SIGKILL')
    await exited
    for (let i = 0; i < 100 && groupAlive(proc.pid); i++) await sleep(50)
    liveGroups.delete(proc.pid)
    fs.appendFileSync(logFile, `\n=== ${new Date().toISOString()} SIGKILL (test crash) ===\n`)
    await waitForPortFree(port)
  }

  /** The processes of the running worker (see procs.mjs's findServer): `runtime` is the workerd that runs it. */
  const processes = () => {
    if (!child) throw new Error(`worker "${name}" is not running`)
    return findServer(port)
  }

  await start()
  return { ...workerHandle({ ...desc, url, port }), inspectorPort, start, stop, restart, kill, processes, isRunning: () => child !== undefined }
}

/**
 * wrangler config of the DO-RPC test Worker (tests/workers/do-rpc/): the project's Rust Worker and sync Durable
 * Object plus a JS client Durable Object (TestClientDO) that syncs with the real `makeDoRpcSync`.
 */
export const DO_RPC_TEST_CONFIG = path.join(TESTS_DIR, 'workers', 'do-rpc', 'wrangler.toml')

/**
 * The DO-RPC test Worker's spec (see DO_RPC_TEST_CONFIG). Like the shipped Worker, its event logs go where
 * `storage` says (default E2E_STORAGE), passed as `--var SYNC_STORAGE:<storage>`. Its TestClientDO endpoints
 * are under `<url>/__test/client/<name>/` (see client-do.mjs).
 */
export const doRpcWorkerSpec = ({ name, storage = E2E_STORAGE, vars = {} }) => ({
  name,
  config: DO_RPC_TEST_CONFIG,
  storage,
  vars: { SYNC_STORAGE: storage, ...vars },
})

/** Starts a DO-RPC test Worker of the test's own (see doRpcWorkerSpec). */
export const startDoRpcWorker = (opts) => startWorker(doRpcWorkerSpec(opts))

/**
 * wrangler config of the fault-injection test Worker (tests/workers/faults/): the project's Worker built with
 * the Cargo feature `fault-injection` (`make worker-faults`, into build-faults/), whose crash points the
 * tests arm through `<url>/__faults/arm` (see its entry.mjs). Never the shipped build.
 */
export const FAULTS_TEST_CONFIG = path.join(TESTS_DIR, 'workers', 'faults', 'wrangler.toml')

/**
 * Starts a Worker of the DO-RPC test client alone (TestClientDO, see DO_RPC_TEST_CONFIG's entry module) in a
 * `wrangler dev` of its own, bound to the sync Durable Objects of `syncWorker` (started with a `scriptName`)
 * through wrangler's dev registry, as a LiveStore app's Worker binds a sync Worker deployed apart. Its
 * memory is then not the sync Worker's.
 */
export const startDoRpcClientWorker = async ({ name, syncWorker }) => {
  const dir = path.join(ROOT, '.wrangler', 'test-configs')
  fs.mkdirSync(dir, { recursive: true })
  const config = path.join(dir, `${name}.toml`)
  const toml = (s) => JSON.stringify(s)
  fs.writeFileSync(
    config,
    [
      `name = ${toml(name)}`,
      `main = ${toml(path.join(TESTS_DIR, 'workers', 'do-rpc', 'entry.mjs'))}`,
      'compatibility_date = "2026-04-01"',
      'compatibility_flags = ["enable_request_signal", "nodejs_compat"]',
      '[alias]',
      `"@livestore-sync-rs/wasm" = ${toml(path.join(ROOT, 'build', 'index.js'))}`,
      '[[durable_objects.bindings]]',
      'name = "SYNC_BACKEND_DO"',
      'class_name = "SyncBackendDO"',
      `script_name = ${toml(syncWorker.workerName)}`,
      '[[durable_objects.bindings]]',
      'name = "TEST_CLIENT_DO"',
      'class_name = "TestClientDO"',
      '[[migrations]]',
      'tag = "v1"',
      'new_sqlite_classes = ["TestClientDO"]',
      // unused by the client, but every test Worker gets its migrations applied
      '[[d1_databases]]',
      `binding = "DB"`,
      `database_name = ${toml(D1_NAME)}`,
      'database_id = "00000000-0000-0000-0000-000000000000"',
      `migrations_dir = ${toml(path.join(ROOT, 'd1-migrations'))}`,
      '',
    ].join('\n'),
  )
  return startWorker({ name, config, storage: 'do-sqlite' })
}

/** Starts the fault-injection test Worker (see FAULTS_TEST_CONFIG), event logs where `storage` says. */
export const startFaultsWorker = ({ name, storage = E2E_STORAGE, vars = {} }) =>
  startWorker({ name, config: FAULTS_TEST_CONFIG, storage, vars: { SYNC_STORAGE: storage, ...vars } })

/** Event-log table of a store (same as util.mjs's eventlogTable; repeated here to keep the modules independent). */
const eventlogTableName = (storeId) => `eventlog_7_${storeId.replaceAll(/[^a-zA-Z0-9]/g, '_')}`
