// The shipped Worker's entry module. The Rust code (built by worker-build into build/index.js, imported
// through the `@livestore-sync-rs/wasm` alias of wrangler.toml) provides the fetch handler and the
// Durable Objects' logic; the classes declared here extend DurableObject and forward to it, so the
// sync object can also serve JS RPC (`rpc`, for DO-RPC clients).
import RustWorker, { StreamObject as RustStreamObject, SyncBackendDO as RustSyncBackendDO } from '@livestore-sync-rs/wasm'
import { forwardTo } from './forward'
import { makeSyncBackendDO } from './sync-backend-do'

export default RustWorker

/** The sync Durable Object (`SYNC_BACKEND_DO`), one per store. */
export const SyncBackendDO = makeSyncBackendDO(RustSyncBackendDO)

/** The Durable Streams stream object (`STREAMS`), one per `/v1/stream/*` path. */
export const StreamObject = forwardTo(RustStreamObject)
