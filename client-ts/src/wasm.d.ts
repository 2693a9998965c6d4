// Types of what worker-build exports from the Rust crate (build/index.js). Entry modules import it as
// `@livestore-sync-rs/wasm`, an alias each wrangler.toml points at its own build (the shipped Worker's
// build/, the example's, the fault-injection test build): one entry module serves them all.
declare module '@livestore-sync-rs/wasm' {
  /** The handlers every Rust Durable Object class (`#[durable_object]`) has. */
  export interface RustDurableObject {
    fetch(request: Request): Promise<Response>
    alarm(): Promise<Response>
    webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void>
    webSocketClose(ws: WebSocket, code: number, reason: string, wasClean: boolean): Promise<void>
    webSocketError(ws: WebSocket, error: unknown): Promise<void>
  }

  /** The Rust sync Durable Object (`SyncBackendObject`): the handlers plus its DO-RPC entry. */
  export interface RustSyncBackendObject extends RustDurableObject {
    /**
     * Serves DO-RPC requests given as the JSON of the unpacked msgpack messages (`SyncBackendObject::rpc`):
     * `{"stream":false,"messages":[…]}`, or for a lone pull a stream of its messages' JSON.
     */
    rpcJson(requestsJson: string): Promise<string | ReadableStream<string>>
  }

  /** A Rust Durable Object class, constructed like a Durable Object. */
  export type RustObjectClass<T extends RustDurableObject> = new (ctx: DurableObjectState, env: WorkerEnv) => T

  /** A Worker's bindings and vars, as the runtime passes them. */
  export type WorkerEnv = Record<string, unknown>

  /** The Rust Worker's fetch handler (a WorkerEntrypoint). */
  const RustWorker: new (ctx: ExecutionContext, env: WorkerEnv) => { fetch(request: Request): Promise<Response> }
  export default RustWorker
  export const SyncBackendDO: RustObjectClass<RustSyncBackendObject>
  export const StreamObject: RustObjectClass<RustDurableObject>
}
