// Entry module of the Rust-objects test Worker (see wrangler.toml next to this file): the project's
// Rust Worker and its two Durable Objects exactly as the wasm build exports them.
export { default, StreamObject, SyncBackendDO } from '@livestore-sync-rs/wasm'
