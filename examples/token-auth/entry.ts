// Entry module of the example Worker: re-exports the Rust Worker (this example's build, through the
// `@livestore-sync-rs/wasm` alias of its wrangler.toml) and declares its Durable Object as a class
// extending DurableObject that forwards to the Rust object. The factory is the repository's
// (client-ts/, which also provides msgpackr for DO-RPC).
import RustWorker, { SyncBackendDO as RustSyncBackendDO } from '@livestore-sync-rs/wasm'
import { makeSyncBackendDO } from '../../client-ts/src/sync-backend-do'

export default RustWorker

export const SyncBackendDO = makeSyncBackendDO(RustSyncBackendDO)
