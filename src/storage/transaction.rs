//! `ctx.storage.transactionSync`, which workers-rs does not wrap: runs synchronous SQL so
//! that its writes commit together, or not at all when the body fails.

use crate::stream::StorageError;
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use worker::worker_sys::DurableObjectStorage;
use worker::Storage;

#[wasm_bindgen]
extern "C" {
    /// `ctx.storage`, seen through the one method workers-rs does not wrap.
    #[wasm_bindgen(extends = js_sys::Object)]
    type TransactionalStorage;

    /// `ctx.storage.transactionSync(fn)`: runs `fn` in a transaction, rolled back if it throws.
    #[wasm_bindgen(method, catch, js_name = transactionSync)]
    fn transaction_sync(
        this: &TransactionalStorage,
        body: &js_sys::Function,
    ) -> Result<JsValue, JsValue>;
}

/// Runs `body` in one transaction of `storage`: its writes are rolled back when it fails.
pub fn transaction<T: 'static>(
    storage: &Storage,
    body: impl FnOnce() -> Result<T, StorageError> + 'static,
) -> Result<T, StorageError> {
    let result: Rc<RefCell<Option<Result<T, StorageError>>>> = Rc::default();
    let slot = result.clone();
    let closure = Closure::once(move || -> Result<JsValue, JsValue> {
        let outcome = body();
        let failed = outcome.is_err();
        *slot.borrow_mut() = Some(outcome);
        if failed {
            // Throwing is how transactionSync is told to roll back.
            Err(JsValue::from_str("rolled back"))
        } else {
            Ok(JsValue::UNDEFINED)
        }
    });
    let raw: &DurableObjectStorage = storage.as_raw();
    let ran = raw
        .unchecked_ref::<TransactionalStorage>()
        .transaction_sync(closure.as_ref().unchecked_ref());
    let outcome = result.borrow_mut().take();
    match (outcome, ran) {
        (Some(outcome), _) => outcome,
        (None, Err(e)) => Err(StorageError(format!(
            "DO SQLite transaction: {}",
            e.as_string().unwrap_or_else(|| "failed".into())
        ))),
        (None, Ok(_)) => Err(StorageError("DO SQLite transaction did not run".into())),
    }
}
