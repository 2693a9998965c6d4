// The JS face of a Rust Durable Object. workers-rs cannot declare a class that extends
// DurableObject, which JS RPC needs (and which lets a subclass add JS methods); this factory does,
// and forwards the runtime's handlers to the Rust object (and `fetch` as the RPC method `serve`).
import { DurableObject } from 'cloudflare:workers'
import type { RustDurableObject, RustObjectClass, WorkerEnv } from '@livestore-sync-rs/wasm'

/** A class extending DurableObject whose handlers are those of a `Rust` object built alongside it. */
export const forwardTo = <T extends RustDurableObject>(Rust: RustObjectClass<T>) =>
  class ForwardingObject extends DurableObject<WorkerEnv> {
    /** The Rust object this one forwards to. */
    protected readonly inner: T

    constructor(ctx: DurableObjectState, env: WorkerEnv) {
      super(ctx, env)
      this.inner = new Rust(ctx, env)
    }

    fetch(request: Request): Promise<Response> {
      return this.inner.fetch(request)
    }

    /**
     * `fetch` as a JS RPC method: the Worker sends its requests to the object this way (see
     * src/cf/object_call.rs), which costs the runtime less than a `fetch` subrequest.
     */
    serve(request: Request): Promise<Response> {
      return this.inner.fetch(request)
    }

    async alarm(): Promise<void> {
      await this.inner.alarm()
    }

    webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
      return this.inner.webSocketMessage(ws, message)
    }

    webSocketClose(ws: WebSocket, code: number, reason: string, wasClean: boolean): Promise<void> {
      return this.inner.webSocketClose(ws, code, reason, wasClean)
    }

    webSocketError(ws: WebSocket, error: unknown): Promise<void> {
      return this.inner.webSocketError(ws, error)
    }
  }
