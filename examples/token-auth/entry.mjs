// Entry module of the example Worker: re-exports the Rust Worker and declares its Durable
// Object as a class extending DurableObject that forwards to the Rust object.
import { DurableObject } from 'cloudflare:workers'
import RustWorker, { SyncBackendDO as RustSyncBackendDO } from './build/index.js'

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
