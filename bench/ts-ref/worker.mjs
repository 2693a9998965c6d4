// The TypeScript reference for `make bench`: the real, unmodified @livestore/sync-cf 0.4.0 server
// (`makeWorker` + `makeDurableObject`), with no hooks and no logging of our own.
//
// No per-event logging: the package's Durable Object logs at Debug level on every push
// ("Broadcasted to N WebSocket clients", Effect logger → console.log in Workers), which in
// wrangler dev costs ~4 ms of CPU per push in wrangler's node process alone. console.log is
// silenced here (Debug level only goes there; info/warn/error logging is untouched).
//
// Two Durable Object classes, one per storage engine of the package, both SQLite-backed:
//   SyncBackendDO    storage: DO SQLite (the package's default)
//   SyncBackendD1DO  storage: D1, binding DB
// The var SYNC_STORAGE (`do-sqlite` | `d1`, passed by the harness as `--var`) picks which one
// serves the sync requests; everything else (GET / info text, 400s) is makeWorker's.
import { makeDurableObject, makeWorker } from '@livestore/sync-cf/cf-worker'

console.log = () => {}

export class SyncBackendDO extends makeDurableObject({ storage: { _tag: 'do-sqlite' } }) {}

export class SyncBackendD1DO extends makeDurableObject({ storage: { _tag: 'd1', binding: 'DB' } }) {}

const doSqliteWorker = makeWorker({ syncBackendBinding: 'SYNC_BACKEND_DO' })
const d1Worker = makeWorker({ syncBackendBinding: 'SYNC_BACKEND_D1_DO' })

export default {
  fetch: (request, env, ctx) => (env.SYNC_STORAGE === 'd1' ? d1Worker : doSqliteWorker).fetch(request, env, ctx),
}
