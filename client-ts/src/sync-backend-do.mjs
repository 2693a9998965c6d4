// The JS face of a Rust sync Durable Object. workers-rs cannot declare a class that extends
// DurableObject, which JS RPC needs; this factory does, and forwards every call to the Rust
// object (a `#[durable_object]` built on `SyncBackendObject`, with an `rpcJson` method).
// Use it in a Worker's entry module:
//
//   import RustWorker, { SyncBackendDO as Rust } from './build/index.js'
//   export default RustWorker
//   export const SyncBackendDO = makeSyncBackendDO(Rust)
import { DurableObject } from 'cloudflare:workers'
import { Packr, Unpackr } from 'msgpackr'

// The same options as Effect RPC's msgpack serialization (`RpcSerialization.msgPack`).
const packr = new Packr({ useRecords: true })
const unpackr = new Unpackr({ useRecords: true })

// An Effect RPC Ack frame as clients send it: `{"_tag":"Ack","requestId":"12"}` (Effect 3) or
// with a numeric id (Effect 4).
const ACK = /^\{"_tag":"Ack","requestId":(?:"\d+"|\d+)\}$/

export const makeSyncBackendDO = (RustSyncBackendDO) =>
  class SyncBackendDO extends DurableObject {
    constructor(ctx, env) {
      super(ctx, env)
      this.inner = new RustSyncBackendDO(ctx, env)
    }

    fetch(request) {
      return this.inner.fetch(request)
    }

    webSocketMessage(ws, message) {
      // Clients Ack every chunk they receive and the server has nothing to do with an Ack:
      // drop them here instead of crossing into wasm (a broadcast to N sockets brings N).
      if (typeof message === 'string' && message.length < 64 && ACK.test(message)) return
      return this.inner.webSocketMessage(ws, message)
    }

    webSocketClose(ws, code, reason, wasClean) {
      return this.inner.webSocketClose(ws, code, reason, wasClean)
    }

    webSocketError(ws, error) {
      return this.inner.webSocketError(ws, error)
    }

    // DO-RPC (`makeDoRpcSync` from @livestore/sync-cf, used by @livestore/adapter-cloudflare):
    // Effect RPC messages in msgpackr's record encoding. The Rust object works on JSON; this
    // method unpacks the request and packs the reply the way the client expects: a stream
    // reply is a ReadableStream of one packed [message] per chunk, otherwise one packed array.
    async rpc(payload) {
      const decoded = unpackr.unpackMultiple(payload)
      const requests = decoded.length === 1 && Array.isArray(decoded[0]) ? decoded[0] : decoded
      const reply = JSON.parse(await this.inner.rpcJson(JSON.stringify(requests)))
      if (!reply.stream) return packr.pack(reply.messages)
      return new ReadableStream({
        start(controller) {
          for (const message of reply.messages) controller.enqueue(packr.pack([message]))
          controller.close()
        },
      })
    }
  }
