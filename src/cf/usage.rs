//! What this isolate has served since it started, counted as Cloudflare bills it (admin
//! `/admin/api/usage`): Worker requests, Durable Object requests, incoming WebSocket messages and
//! starts, and reads the edge cache answered. On Cloudflare each isolate counts its own; under
//! `wrangler dev` one isolate runs the Worker and its objects, so these are the totals the
//! benchmark's cost figures are computed from.

use crate::admin::model::Usage;
use std::cell::Cell;

thread_local! {
    static COUNTS: Cell<Usage> = const { Cell::new(Usage::ZERO) };
}

/// Adds to the counts.
pub(crate) fn count(add: impl FnOnce(&mut Usage)) {
    COUNTS.with(|counts| {
        let mut usage = counts.get();
        add(&mut usage);
        counts.set(usage);
    });
}

/// The counts now.
pub(crate) fn snapshot() -> Usage {
    COUNTS.with(Cell::get)
}
