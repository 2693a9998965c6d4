// Worker entry module. The Rust code (built into build/index.js by worker-build) provides
// the fetch handler and the Durable Object logic; this module declares the Durable Object
// as a class that extends DurableObject, which workers-rs cannot do itself, so the object
// can also serve JS RPC methods. Every call is forwarded to the Rust object.
import { DurableObject } from 'cloudflare:workers'
import RustWorker, { SyncBackendDO as RustSyncBackendDO } from '../../build/index.js'

export default RustWorker

export class SyncBackendDO extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env)
    this.inner = new RustSyncBackendDO(ctx, env)
  }

  fetch(request) {
    return this.inner.fetch(request)
  }

  webSocketMessage(ws, message) {
    return this.inner.webSocketMessage(ws, message)
  }

  webSocketClose(ws, code, reason, wasClean) {
    return this.inner.webSocketClose(ws, code, reason, wasClean)
  }

  webSocketError(ws, error) {
    return this.inner.webSocketError(ws, error)
  }
}
