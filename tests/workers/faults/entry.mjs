// Entry module of the fault-injection test Worker (see wrangler.toml next to this file).
//
// The Worker and both Durable Objects are the project's own, from the `fault-injection` build
// (build-faults/, which wrangler.toml's alias `@livestore-sync-rs/wasm` points at). On top of
// them, one test-only route arms a crash point (src/faults.rs) inside the Durable Object that will
// hit it:
//
//   POST /__faults/arm?point=<name>&store=<storeId>        in the store's SyncBackendDO
//   POST /__faults/arm?point=<name>&stream=/v1/stream/<x> in the stream's StreamObject
//   → 204, or 400 for an unknown point
//
// An armed point fires once, at its next hit in that isolate: an async one logs
// `FAULT-INJECTION stalled at <name>` and stalls until the test SIGKILLs the runtime, a synchronous
// one (inside a transaction) fails it and logs what it had written.
//
//   GET /__faults/instance?store=<storeId>   → {"instance": "<id>"}: an id the store's SyncBackendDO
//                                              drew when it was constructed, so a test sees the object
//                                              evicted (hibernated) and constructed again
// Everything else goes to the Rust Worker unchanged.

import { WorkerEntrypoint } from 'cloudflare:workers'
import RustWorker, { StreamObject as RustStreamObject, SyncBackendDO as RustSyncBackendDO } from '@livestore-sync-rs/wasm'
import { forwardTo } from '../../../client-ts/src/forward.ts'
import { makeSyncBackendDO } from '../../../client-ts/src/sync-backend-do.ts'

// worker-build puts crate-level exports on the default entrypoint's prototype; armFault does not use `this`.
const armFault = (point) => RustWorker.prototype.armFault(point)

export class SyncBackendDO extends makeSyncBackendDO(RustSyncBackendDO) {
  constructor(ctx, env) {
    super(ctx, env)
    this.instance = crypto.randomUUID()
  }
  armFault(point) {
    armFault(point)
  }
  instanceId() {
    return this.instance
  }
}

export class StreamObject extends forwardTo(RustStreamObject) {
  armFault(point) {
    armFault(point)
  }
}

export default class FaultsWorker extends WorkerEntrypoint {
  async fetch(request) {
    const url = new URL(request.url)
    if (url.pathname === '/__faults/arm' && request.method === 'POST') {
      const point = url.searchParams.get('point') ?? ''
      const store = url.searchParams.get('store')
      const stream = url.searchParams.get('stream')
      const target = store !== null ? this.env.SYNC_BACKEND_DO.getByName(store) : stream !== null ? this.env.STREAMS.getByName(stream) : undefined
      if (!target) return new Response('store or stream is required', { status: 400 })
      try {
        await target.armFault(point)
      } catch (e) {
        return new Response(String(e?.message ?? e), { status: 400 })
      }
      return new Response(null, { status: 204 })
    }
    if (url.pathname === '/__faults/instance' && url.searchParams.has('store')) {
      const store = this.env.SYNC_BACKEND_DO.getByName(url.searchParams.get('store'))
      return Response.json({ instance: await store.instanceId() })
    }
    return new RustWorker(this.ctx, this.env).fetch(request)
  }
  async queue(batch) {
    return new RustWorker(this.ctx, this.env).queue(batch)
  }
}
