// Workers shared by the test files of a run: each configuration is started once, on first use, by the
// run's global setup (global-setup.mjs) and stopped when the run ends. Tests that stop, kill or restart
// their Worker, or need vars of their own, start one with startWorker instead.
import { inject } from 'vitest'
import { doRpcWorkerSpec, E2E_STORAGE, workerHandle } from './worker.mjs'

/**
 * The shared Worker of `spec` (see worker.mjs's describeWorker; `name` is derived from it): a workerHandle
 * with its `url`. Its state is shared with every other test file: use unique store ids and stream paths.
 */
export const sharedWorker = async (spec) => {
  const broker = inject('workerBroker')
  if (!broker) throw new Error('no worker broker: run the tests through vitest.config.mjs (its globalSetup starts it)')
  const res = await fetch(`${broker}/worker`, { method: 'POST', body: JSON.stringify(spec) })
  const text = await res.text()
  if (res.status !== 200) throw new Error(`starting shared worker ${JSON.stringify(spec)} failed:\n${text}`)
  return workerHandle(JSON.parse(text))
}

/** The shipped Worker, event logs in `storage` (default E2E_STORAGE), other vars as given. */
export const sharedDefaultWorker = ({ storage = E2E_STORAGE, vars = {} } = {}) =>
  sharedWorker({ name: sharedName('default', storage, vars), storage, vars })

/** The DO-RPC test Worker (the shipped Worker plus TestClientDO), event logs in `storage`. */
export const sharedDoRpcWorker = ({ storage = E2E_STORAGE, vars = {} } = {}) =>
  sharedWorker(doRpcWorkerSpec({ name: sharedName('do-rpc', storage, vars), storage, vars }))

/** The token the shared token-auth Worker accepts (its var AUTH_TOKEN). */
export const TOKEN_AUTH_TOKEN = 'test-token'

/** The example Worker of examples/token-auth (its event logs are in DO SQLite), accepting TOKEN_AUTH_TOKEN. */
export const sharedTokenAuthWorker = () =>
  sharedWorker({
    name: 'shared-token-auth',
    config: 'examples/token-auth/wrangler.toml',
    storage: 'do-sqlite',
    vars: { AUTH_TOKEN: TOKEN_AUTH_TOKEN },
  })

const sharedName = (kind, storage, vars) => {
  const suffix = Object.entries(vars)
    .map(([k, v]) => `${k}-${v}`.toLowerCase().replaceAll(/[^a-z0-9]+/g, '-'))
    .join('-')
  return ['shared', kind, storage, suffix].filter(Boolean).join('-')
}
