//! Long-poll readers waiting at the same position share one request to the stream's object:
//! the first read of a key goes to the object, and the reads of the same key that arrive in the
//! same isolate while it waits get a copy of its answer. A long-poll's answer depends only on
//! its position and cursor (the edge cache keeps it under the same key), so every reader gets
//! what its own request would have; an append then costs the object one answer per position
//! instead of one per reader.
//!
//! Readers of a live stream do not all ask again before the answer comes: many come a little
//! after. A `200` answer is therefore kept in the isolate for a few seconds (as the edge cache
//! keeps it for longer, and for the same reason: it is the answer to that key for good), within
//! a bound on entries and bytes, and dropped when the stream is deleted or created again here.

use crate::durable_streams::edge_cache::{CacheStatus, X_CACHE};
use crate::durable_streams::recent::{Limits, Recent};
use futures_util::future::{select, Either};
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use worker::{Date, Delay, Headers, Response, Result};

/// An answer as every reader of its key gets it.
struct Answer {
    status: u16,
    /// Copied for each reader (a response's headers are its own).
    headers: Headers,
    body: Vec<u8>,
}

impl Answer {
    async fn read(mut response: Response) -> Result<Answer> {
        let body = response.bytes().await?;
        Ok(Answer {
            status: response.status_code(),
            headers: super::copy_headers(response.headers())?,
            body,
        })
    }

    fn response(&self) -> Result<Response> {
        let headers = super::copy_headers(&self.headers)?;
        let response = if self.body.is_empty() {
            Response::empty()?
        } else {
            Response::from_bytes(self.body.clone())?
        };
        Ok(response.with_status(self.status).with_headers(headers))
    }
}

/// A read under way: where its answer will be, and how to tell each reader waiting for it.
#[derive(Default)]
struct UnderWay {
    /// Which read it is (a later read of the key may replace one that never ended).
    id: u64,
    /// When it started: a read older than the readers' patience is taken as lost (the runtime
    /// abandons a request whose client left without running what would end it).
    started_ms: u64,
    answer: Rc<RefCell<Option<Rc<Answer>>>>,
    /// The `resolve` of a promise each waiting reader made in its own request: the runtime runs
    /// what follows in that request, which then builds its response there (a response built in
    /// another request's context could not be sent).
    waiters: Vec<js_sys::Function>,
}

thread_local! {
    /// The reads under way, by key.
    static UNDER_WAY: RefCell<HashMap<String, UnderWay>> = RefCell::default();
    /// Answers kept after their read ended.
    static RECENT: RefCell<Recent<Answer>> = RefCell::new(Recent::new(RECENT_LIMITS));
}

/// What the isolate keeps of answers after their read ended.
const RECENT_LIMITS: Limits = Limits {
    ttl_ms: 5_000,
    entries: 256,
    bytes: 4 << 20,
};

/// Drops the answers kept for the stream whose keys start with `prefix` (it was deleted or
/// created again).
pub(super) fn forget(prefix: &str) {
    RECENT.with(|recent| recent.borrow_mut().forget_prefix(prefix));
}

/// Ends a key's read however it ends: its waiters hear whether an answer is there, and a read
/// dropped midway (its client went away) lets them go to read for themselves.
struct Lead<'a> {
    key: &'a str,
    id: u64,
}

/// Removes the read `id` of `key` (if it is still the one under way) and tells its waiters.
fn finish(key: &str, id: u64, answer: Option<Rc<Answer>>) {
    let ended = UNDER_WAY.with(|all| {
        let mut all = all.borrow_mut();
        match all.get(key) {
            Some(under_way) if under_way.id == id => all.remove(key),
            _ => None,
        }
    });
    if let Some(under_way) = ended {
        tell(under_way, answer);
    }
}

fn tell(under_way: UnderWay, answer: Option<Rc<Answer>>) {
    let answered = answer.is_some();
    *under_way.answer.borrow_mut() = answer;
    for resolve in under_way.waiters {
        let _ = resolve.call1(&JsValue::NULL, &JsValue::from_bool(answered));
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        finish(self.key, self.id, None);
    }
}

/// Whether this isolate answers a read of `key` by itself: it keeps the answer, or a read is
/// under way that a reader arriving now would wait for.
pub(super) fn answered_here(key: &str, patience_ms: u64) -> bool {
    let now = Date::now().as_millis();
    RECENT.with(|recent| recent.borrow_mut().get(key, now).is_some())
        || UNDER_WAY.with(|all| {
            all.borrow()
                .get(key)
                .is_some_and(|under_way| now.saturating_sub(under_way.started_ms) <= patience_ms)
        })
}

thread_local! {
    static NEXT_ID: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The answer to the read `key` names: `read`'s, or a copy of the one under way if it comes
/// within `patience_ms`.
pub(super) async fn shared<F, Fut>(key: &str, patience_ms: u64, read: F) -> Result<Response>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Response>>,
{
    let now = Date::now().as_millis();
    if let Some(answer) = RECENT.with(|recent| recent.borrow_mut().get(key, now)) {
        // Answered at the edge without the object, as a hit of the edge cache is.
        super::usage::count(|u| u.cache_hits += 1);
        let mut response = answer.response()?;
        response
            .headers_mut()
            .set(X_CACHE, CacheStatus::Hit.as_str())?;
        return Ok(response);
    }
    let (id, joined, replaced) = UNDER_WAY.with(|all| {
        let mut all = all.borrow_mut();
        if let Some(under_way) = all.get_mut(key) {
            if now.saturating_sub(under_way.started_ms) <= patience_ms {
                let mut resolver = None;
                let promise = js_sys::Promise::new(&mut |resolve, _| resolver = Some(resolve));
                under_way.waiters.extend(resolver);
                let joined = (promise, under_way.answer.clone());
                return (under_way.id, Some(joined), None);
            }
        }
        let id = NEXT_ID.with(|next| {
            let id = next.get().wrapping_add(1);
            next.set(id);
            id
        });
        let fresh = UnderWay {
            id,
            started_ms: now,
            ..UnderWay::default()
        };
        (id, None, all.insert(key.to_owned(), fresh))
    });
    if let Some(lost) = replaced {
        tell(lost, None);
    }
    if let Some((told, answer)) = joined {
        // The runtime ends a request that waits on nothing of its own as hung: a timer of this
        // request's keeps it waiting (it then reads for itself, which a long-poll never needs).
        let timer = Delay::from(Duration::from_millis(patience_ms));
        match select(JsFuture::from(told), timer).await {
            Either::Left((Ok(answered), _)) => {
                let answer = answer.borrow().clone();
                if let (Some(true), Some(answer)) = (answered.as_bool(), answer) {
                    return answer.response();
                }
            }
            // The read it waited for never ended: it is lost, and goes.
            Either::Right(_) => finish(key, id, None),
            Either::Left((Err(_), _)) => {}
        }
        // The read it waited for failed or was lost: it reads for itself.
        return read().await;
    }
    let lead = Lead { key, id };
    let answer = Rc::new(Answer::read(read().await?).await?);
    if answer.status == 200 {
        let (size, now) = (answer.body.len(), Date::now().as_millis());
        RECENT.with(|recent| recent.borrow_mut().keep(key, answer.clone(), size, now));
    }
    finish(lead.key, lead.id, Some(answer.clone()));
    answer.response()
}
