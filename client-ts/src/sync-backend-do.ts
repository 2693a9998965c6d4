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

// Live updates to Effect 4 DO-RPC clients (LiveStore main, `syncUpdateRpc(bytes, storeId)`) are packed
// as their `handleSyncUpdateRpc` unpacks them; the Rust object calls this to do it.
;(globalThis as { __livestoreSyncPackRpc?: (value: unknown) => Uint8Array }).__livestoreSyncPackRpc = (value) =>
  packr.pack(value)

// An Effect RPC Ack frame as clients send it: `{"_tag":"Ack","requestId":"12"}` (Effect 3) or with a
// numeric id (Effect 4). The capture is the request id's JSON.
const ACK = /^\{"_tag":"Ack","requestId":("\d+"|\d+)\}$/

/**
 * What the Rust object keeps on a socket for flow control (src/cf/ws.rs): how many chunks of each
 * request id the client has acknowledged, and whether frames wait for room.
 */
interface FlowControlled {
  __acks?: Map<string, number>
  __wake?: boolean
}

/** A non-stream DO-RPC reply: its messages, packed as one array. */
interface RpcReply {
  messages: unknown[]
}

export const makeSyncBackendDO = (Rust: RustObjectClass<RustSyncBackendObject>) =>
  class SyncBackendDO extends forwardTo(Rust) {
    webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
      // Clients Ack every chunk they receive (a broadcast to N sockets brings N). Counted here,
      // without crossing into wasm; handed over only while the socket's frames wait for room.
      const ack = typeof message === 'string' && message.length < 64 ? ACK.exec(message) : null
      if (ack) {
        const socket = ws as WebSocket & FlowControlled
        const acks = (socket.__acks ??= new Map())
        acks.set(ack[1], (acks.get(ack[1]) ?? 0) + 1)
        if (!socket.__wake) return Promise.resolve()
      }
      return super.webSocketMessage(ws, message)
    }

    // DO-RPC (`makeDoRpcSync` from @livestore/sync-cf, used by @livestore/adapter-cloudflare): Effect
    // RPC messages in msgpackr's record encoding. The Rust object works on JSON; this method unpacks
    // the request and packs the reply the way the client expects: a pull's reply is a ReadableStream
    // of one packed [message] per chunk, taken from Rust as the caller reads it (a catch-up holds
    // about one page in memory); anything else one packed array.
    async rpc(payload: Uint8Array): Promise<Uint8Array | ReadableStream<Uint8Array>> {
      const decoded = unpackr.unpackMultiple(payload) as unknown[]
      const requests = decoded.length === 1 && Array.isArray(decoded[0]) ? decoded[0] : decoded
      const reply = await this.inner.rpcJson(JSON.stringify(requests))
      if (typeof reply === 'string') return packr.pack((JSON.parse(reply) as RpcReply).messages)
      return reply.pipeThrough(
        new TransformStream<string, Uint8Array>({
          transform(message, controller) {
            controller.enqueue(packr.pack([JSON.parse(message)]))
          },
        }),
      )
    }
  }
