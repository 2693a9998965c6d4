// Entry module of the example Worker: re-exports the Rust Worker and declares its Durable
// Object as a class extending DurableObject that forwards to the Rust object. The factory
// lives with the repository's JS tools (which also provide msgpackr for DO-RPC).
import { makeSyncBackendDO } from '../../client-ts/src/sync-backend-do.mjs'
import RustWorker, { SyncBackendDO as RustSyncBackendDO } from './build/index.js'

export default RustWorker

export const SyncBackendDO = makeSyncBackendDO(RustSyncBackendDO)
