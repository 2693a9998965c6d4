// The JS face of the Rust Durable Streams object (`STREAMS`, one per `/v1/stream/*` path): a
// class that extends DurableObject and forwards to the Rust object, like sync-backend-do.mjs
// does for the sync object. Use it in a Worker's entry module:
//
//   import { StreamObject as Rust } from './build/index.js'
//   export const StreamObject = makeStreamObject(Rust)
import { DurableObject } from 'cloudflare:workers'

export const makeStreamObject = (RustStreamObject) =>
  class StreamObject extends DurableObject {
    constructor(ctx, env) {
      super(ctx, env)
      this.inner = new RustStreamObject(ctx, env)
    }

    fetch(request) {
      return this.inner.fetch(request)
    }

    alarm() {
      return this.inner.alarm()
    }
  }
