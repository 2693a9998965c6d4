//! Requests to Durable Objects, one way for all of them: through JS RPC where the object offers
//! it, `fetch` otherwise (found out per binding).
//!
//! The shipped entry module wraps every Rust object in a class that extends `DurableObject`
//! (`client-ts/src/forward.ts`), whose RPC method `serve(request)` is the object's `fetch`. An RPC
//! call costs the runtime less than a `fetch` subrequest (no HTTP round through the runtime's
//! loopback; under `wrangler dev`, none of the 2–3 ms of work per `fetch` in wrangler's own
//! processes either). A Worker built on the Rust API alone has objects without that method:
//! the first call finds out (the runtime refuses it before the object sees anything) and every
//! later one goes by `fetch`. WebSocket upgrades always go by `fetch` (a socket cannot cross RPC).

use std::cell::RefCell;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use worker::{Env, Method, ObjectNamespace, Request, RequestInit, Response, Result};

#[wasm_bindgen]
extern "C" {
    /// An object stub, as JS RPC sees it.
    type ServingStub;
    #[wasm_bindgen(method, catch, js_name = serve)]
    fn serve(
        this: &ServingStub,
        request: &worker::web_sys::Request,
    ) -> std::result::Result<js_sys::Promise, JsValue>;
}

thread_local! {
    /// By binding, whether its objects answer `serve` (absent until a call finds out).
    static RPC: RefCell<Vec<(String, bool)>> = const { RefCell::new(Vec::new()) };
}

fn offered(binding: &str) -> Option<bool> {
    RPC.with(|rpc| {
        rpc.borrow()
            .iter()
            .find(|(b, _)| b == binding)
            .map(|(_, offered)| *offered)
    })
}

fn learn(binding: &str, offered: bool) {
    RPC.with(|rpc| {
        let mut rpc = rpc.borrow_mut();
        match rpc.iter_mut().find(|(b, _)| b == binding) {
            Some(entry) => entry.1 = offered,
            None => rpc.push((binding.to_owned(), offered)),
        }
    });
}

/// Whether `error` is the runtime's refusal of an RPC method the object does not have (which
/// it gives before running anything of the object's).
fn not_offered(error: &JsValue) -> bool {
    let Some(error) = error.dyn_ref::<js_sys::TypeError>() else {
        return false;
    };
    let message = String::from(error.message());
    message.contains("does not implement the method") || message.contains("does not support RPC")
}

/// Sends `req` to the object `name` of the namespace bound as `binding`.
pub(super) async fn send(env: &Env, binding: &str, name: &str, req: Request) -> Result<Response> {
    send_in(&env.durable_object(binding)?, binding, name, req).await
}

/// Sends `req` to the object `name` of `namespace`, bound as `binding`.
pub(super) async fn send_in(
    namespace: &ObjectNamespace,
    binding: &str,
    name: &str,
    req: Request,
) -> Result<Response> {
    let id = namespace.id_from_name(name)?;
    let upgrade = req.headers().has("upgrade")?;
    let known = offered(binding);
    if upgrade || known == Some(false) {
        return id.get_stub()?.fetch_with_request(req).await;
    }
    // Until a call has found out, a copy is kept for `fetch` (once per binding and isolate).
    let spare = match known {
        None => Some(req.clone()?),
        Some(_) => None,
    };
    let stub: ServingStub = id.get_stub()?.into_rpc();
    let called = match stub.serve(req.inner()) {
        Ok(promise) => JsFuture::from(promise).await,
        Err(e) => Err(e),
    };
    match called {
        Ok(answer) => {
            learn(binding, true);
            Ok(Response::from(
                answer.unchecked_into::<worker::web_sys::Response>(),
            ))
        }
        Err(e) if not_offered(&e) => {
            learn(binding, false);
            match spare {
                Some(spare) => id.get_stub()?.fetch_with_request(spare).await,
                None => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// An internal `POST` of `body` to `path` at the object `name` of `binding`.
pub(super) async fn post(
    env: &Env,
    binding: &str,
    name: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<Response> {
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(js_sys::Uint8Array::from(body.as_slice()).into()));
    let request = Request::new_with_init(&format!("https://object{path}"), &init)?;
    send(env, binding, name, request).await
}
