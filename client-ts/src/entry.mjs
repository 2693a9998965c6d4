// Worker entry module. The Rust code (built into build/index.js by worker-build) provides
// the fetch handler and the Durable Object logic; this module declares the Durable Object
// as a class that extends DurableObject (see sync-backend-do.mjs), so it can also serve JS
// RPC methods (`rpc`, for DO-RPC clients).
import { makeStreamObject } from './stream-object.mjs'
import { makeSyncBackendDO } from './sync-backend-do.mjs'
import { StreamObject as RustStreamObject } from '../../build/index.js'
import RustWorker, { SyncBackendDO as RustSyncBackendDO } from '../../build/index.js'

export default RustWorker

export const SyncBackendDO = makeSyncBackendDO(RustSyncBackendDO)

// The Durable Streams stream object (`STREAMS`, one per `/v1/stream/*` path), forwarded to
// the Rust class the same way.
export const StreamObject = makeStreamObject(RustStreamObject)
