// The JS face of a Rust sync Durable Object (a `#[durable_object]` built on `SyncBackendObject`, with an
// `rpcJson` method): the runtime's handlers forwarded to Rust, plus the DO-RPC method `rpc` that
// `makeDoRpcSync` calls. Use it in a Worker's entry module:
//
//   import RustWorker, { SyncBackendDO as Rust } from '@livestore-sync-rs/wasm'
//   export default RustWorker
//   export const SyncBackendDO = makeSyncBackendDO(Rust)
import { Packr, Unpackr } from 'msgpackr'
import { forwardTo } from './forward'
import type { RustObjectClass, RustSyncBackendObject } from '@livestore-sync-rs/wasm'

// The same options as Effect RPC's msgpack serialization (`RpcSerialization.msgPack`).
const packr = new Packr({ useRecords: true })
const unpackr = new Unpackr({ useRecords: true })

// An Effect RPC Ack frame as clients send it: `{"_tag":"Ack","requestId":"12"}` (Effect 3) or with a
// numeric id (Effect 4).
const ACK = /^\{"_tag":"Ack","requestId":(?:"\d+"|\d+)\}$/

/** The reply `rpcJson` returns: the messages, and whether the client expects them as a stream. */
interface RpcReply {
  stream: boolean
  messages: unknown[]
}

export const makeSyncBackendDO = (Rust: RustObjectClass<RustSyncBackendObject>) =>
  class SyncBackendDO extends forwardTo(Rust) {
    webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
      // Clients Ack every chunk they receive and the server has nothing to do with an Ack: drop them
      // here instead of crossing into wasm (a broadcast to N sockets brings N).
      if (typeof message === 'string' && message.length < 64 && ACK.test(message)) return Promise.resolve()
      return super.webSocketMessage(ws, message)
    }

    // DO-RPC (`makeDoRpcSync` from @livestore/sync-cf, used by @livestore/adapter-cloudflare): Effect
    // RPC messages in msgpackr's record encoding. The Rust object works on JSON; this method unpacks
    // the request and packs the reply the way the client expects: a stream reply is a ReadableStream
    // of one packed [message] per chunk, otherwise one packed array.
    async rpc(payload: Uint8Array): Promise<Uint8Array | ReadableStream<Uint8Array>> {
      const decoded = unpackr.unpackMultiple(payload) as unknown[]
      const requests = decoded.length === 1 && Array.isArray(decoded[0]) ? decoded[0] : decoded
      const reply = JSON.parse(await this.inner.rpcJson(JSON.stringify(requests))) as RpcReply
      if (!reply.stream) return packr.pack(reply.messages)
      return new ReadableStream<Uint8Array>({
        start(controller) {
          for (const message of reply.messages) controller.enqueue(packr.pack([message]))
          controller.close()
        },
      })
    }
  }
