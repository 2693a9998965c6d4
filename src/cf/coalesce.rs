//! Long-poll readers waiting at the same position share one request to the stream's object:
//! the first read of a key goes to the object, and the reads of the same key that arrive in the
//! same isolate while it waits get a copy of its answer. A long-poll's answer depends only on
//! its position and cursor (the edge cache keeps it under the same key), so every reader gets
//! what its own request would have; an append then costs the object one answer per position
//! instead of one per reader.

use futures_util::future::{select, Either};
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use worker::{Delay, Headers, Response, Result};

/// An answer as every reader of its key gets it.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    async fn read(mut response: Response) -> Result<Answer> {
        let body = response.bytes().await?;
        Ok(Answer {
            status: response.status_code(),
            headers: response.headers().entries().collect(),
            body,
        })
    }

    fn response(&self) -> Result<Response> {
        let headers = Headers::new();
        for (name, value) in &self.headers {
            headers.append(name, value)?;
        }
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
    answer: Rc<RefCell<Option<Rc<Answer>>>>,
    /// The `resolve` of a promise each waiting reader made in its own request: the runtime runs
    /// what follows in that request, which then builds its response there (a response built in
    /// another request's context could not be sent).
    waiters: Vec<js_sys::Function>,
}

thread_local! {
    /// The reads under way, by key.
    static UNDER_WAY: RefCell<HashMap<String, UnderWay>> = RefCell::default();
}

/// Ends a key's read however it ends: its waiters hear whether an answer is there, and a read
/// dropped midway (its client went away) lets them go to read for themselves.
struct Lead<'a>(&'a str);

impl Lead<'_> {
    fn finish(&self, answer: Option<Rc<Answer>>) {
        let Some(under_way) = UNDER_WAY.with(|all| all.borrow_mut().remove(self.0)) else {
            return;
        };
        let answered = answer.is_some();
        *under_way.answer.borrow_mut() = answer;
        for resolve in under_way.waiters {
            let _ = resolve.call1(&JsValue::NULL, &JsValue::from_bool(answered));
        }
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        self.finish(None);
    }
}

/// The answer to the read `key` names: `read`'s, or a copy of the one under way if it comes
/// within `patience_ms`.
pub(super) async fn shared<F, Fut>(key: &str, patience_ms: u64, read: F) -> Result<Response>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Response>>,
{
    let joined = UNDER_WAY.with(|all| {
        let mut all = all.borrow_mut();
        match all.get_mut(key) {
            Some(under_way) => {
                let mut resolver = None;
                let promise = js_sys::Promise::new(&mut |resolve, _| resolver = Some(resolve));
                under_way.waiters.extend(resolver);
                Some((promise, under_way.answer.clone()))
            }
            None => {
                all.insert(key.to_owned(), UnderWay::default());
                None
            }
        }
    });
    if let Some((told, answer)) = joined {
        // The runtime ends a request that waits on nothing of its own as hung: a timer of this
        // request's keeps it waiting (it then reads for itself, which a long-poll never needs).
        let timer = Delay::from(Duration::from_millis(patience_ms));
        if let Either::Left((Ok(answered), _)) = select(JsFuture::from(told), timer).await {
            let answer = answer.borrow().clone();
            if let (Some(true), Some(answer)) = (answered.as_bool(), answer) {
                return answer.response();
            }
        }
        // The read it waited for failed or was dropped: it reads for itself.
        return read().await;
    }
    let lead = Lead(key);
    let answer = Rc::new(Answer::read(read().await?).await?);
    lead.finish(Some(answer.clone()));
    answer.response()
}
