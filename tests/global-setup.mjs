// The run's global setup: a small HTTP service (the worker broker) through which test files ask for
// shared Workers (support/shared.mjs). Each distinct spec is started once, on first request, with
// `wrangler dev` on fresh state; all are stopped when the run ends. Vitest runs this setup once per
// project, in one process: the projects share one broker.
import http from 'node:http'
import { startWorker } from './support/worker.mjs'

const startBroker = async () => {
  /** spec name → Promise of the started worker */
  const workers = new Map()
  const server = http.createServer((req, res) => {
    let body = ''
    req.on('data', (d) => (body += d))
    req.on('end', async () => {
      try {
        const spec = JSON.parse(body)
        if (typeof spec?.name !== 'string') throw new Error('a worker spec needs a name')
        let started = workers.get(spec.name)
        if (!started) {
          started = startWorker(spec)
          workers.set(spec.name, started)
        }
        const { d1, doSql, logOffset, logSince, start, stop, restart, kill, processes, isRunning, ...descriptor } = await started
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify(descriptor))
      } catch (error) {
        res.writeHead(500, { 'content-type': 'text/plain' })
        res.end(String(error?.stack ?? error))
      }
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    users: 0,
    close: async () => {
      server.close()
      await Promise.all([...workers.values()].map((started) => started.then((w) => w.stop(), () => {})))
    },
  }
}

export default async function setup(project) {
  globalThis.__workerBroker ??= startBroker()
  const broker = await globalThis.__workerBroker
  broker.users += 1
  project.provide('workerBroker', broker.url)
  return async () => {
    broker.users -= 1
    if (broker.users === 0) {
      globalThis.__workerBroker = undefined
      await broker.close()
    }
  }
}
