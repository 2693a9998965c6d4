// Entry module of the Rust-objects test Worker (see wrangler.toml next to this file): the project's
// Rust Worker, its stream object exactly as the wasm build exports it (no JS RPC), and its sync
// object wrapped as the shipped Worker wraps it (with the RPC method `serve`).
import RustWorker, { StreamObject, SyncBackendDO as RustSyncBackendDO } from '@livestore-sync-rs/wasm'
import { makeSyncBackendDO } from '../../../client-ts/src/sync-backend-do.ts'

export default RustWorker
export { StreamObject }
export const SyncBackendDO = makeSyncBackendDO(RustSyncBackendDO)
