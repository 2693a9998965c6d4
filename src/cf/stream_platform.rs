//! The platform of a stream's object: time and timers, the alarm (the sooner of the protocol's
//! time and an owed fan-out's), the object's name (kept for alarms that start it without one),
//! and the other streams' objects (a fork's source), reached through internal paths.

use super::stream_object::{is_stream_path, INTERNAL_PREFIX, STREAMS_BINDING};
use crate::durable_streams::http::Response as DsResponse;
use crate::durable_streams::platform::{AcquireRequest, Clock, ForkPoint, Platform};
use crate::storage::segments::decode_messages;
use crate::stream::{Budget, Message, SeqNum, StorageError};
use std::time::Duration;
use worker::{Date, Delay, Env, Response, Result, ScheduledTime, State};

/// The platform of a stream's object.
pub struct CfPlatform {
    pub(super) state: State,
    pub(super) env: Env,
    /// The object's name, once known (see [`CfPlatform::name`]).
    name: std::cell::RefCell<Option<String>>,
    /// When this instance of the object started (again after each eviction).
    pub(super) woke_ms: u64,
}

impl CfPlatform {
    /// The platform of the object with `state`, started now.
    pub(super) fn new(state: State, env: Env) -> CfPlatform {
        CfPlatform {
            state,
            env,
            name: std::cell::RefCell::new(None),
            woke_ms: Date::now().as_millis(),
        }
    }

    /// The object's state (its storage and hibernatable sockets).
    pub(super) fn state(&self) -> &State {
        &self.state
    }

    /// The Worker's environment.
    pub(super) fn env(&self) -> &Env {
        &self.env
    }

    /// The object's name (the path it serves): from its id, kept in its SQLite for the times the
    /// runtime starts it without one (an alarm after an eviction or a restart).
    pub(super) fn name(&self) -> Option<String> {
        if let Some(name) = self.name.borrow().clone() {
            return Some(name);
        }
        let sql = self.state.storage().sql();
        let kept = crate::storage::do_sqlite::exec(
            &sql,
            "CREATE TABLE IF NOT EXISTS ds_identity (id INTEGER PRIMARY KEY CHECK (id = 1), name TEXT NOT NULL) STRICT",
            Vec::new(),
            "create identity",
        );
        let found = match (self.state.id().name(), kept) {
            (Some(name), Ok(_)) => {
                let saved = crate::storage::do_sqlite::exec(
                    &sql,
                    "INSERT OR REPLACE INTO ds_identity (id, name) VALUES (1, ?)",
                    vec![worker::SqlStorageValue::from(name.clone())],
                    "keep identity",
                );
                if let Err(e) = saved {
                    worker::console_warn!("{e}");
                }
                Some(name)
            }
            (Some(name), Err(_)) => Some(name),
            (None, Ok(_)) => crate::storage::do_sqlite::exec(
                &sql,
                "SELECT name FROM ds_identity WHERE id = 1",
                Vec::new(),
                "read identity",
            )
            .ok()
            .and_then(|cursor| cursor.raw().next())
            .and_then(|row| row.ok())
            .and_then(|row| match row.into_iter().next() {
                Some(worker::SqlStorageValue::String(name)) => Some(name),
                _ => None,
            }),
            (None, Err(_)) => None,
        };
        self.name.borrow_mut().clone_from(&found);
        found
    }

    /// An internal call to the stream object at `path`.
    async fn call(&self, path: &str, op: &str, body: Vec<u8>) -> Result<Response> {
        let op_path = format!("{INTERNAL_PREFIX}{op}");
        super::object_call::post(&self.env, STREAMS_BINDING, path, &op_path, body).await
    }
}

pub(super) fn failed(e: impl std::fmt::Display) -> StorageError {
    StorageError(e.to_string())
}

impl Clock for CfPlatform {
    fn now_ms(&self) -> u64 {
        Date::now().as_millis()
    }

    async fn sleep(&self, ms: u64) {
        Delay::from(Duration::from_millis(ms)).await;
    }
}

impl Platform for CfPlatform {
    async fn acquire(
        &self,
        source: &str,
        request: &AcquireRequest,
    ) -> std::result::Result<std::result::Result<ForkPoint, DsResponse>, StorageError> {
        if !is_stream_path(source) {
            return Ok(Err(DsResponse::error(
                400,
                "Stream-Forked-From must be a stream path",
            )));
        }
        let body = serde_json::to_vec(request).map_err(failed)?;
        let mut response = self.call(source, "acquire", body).await.map_err(failed)?;
        let status = response.status_code();
        let bytes = response.bytes().await.map_err(failed)?;
        if status == 200 {
            serde_json::from_slice(&bytes).map(Ok).map_err(failed)
        } else {
            Ok(Err(DsResponse::new(status)
                .header("content-type", "text/plain; charset=utf-8")
                .with_body(bytes)))
        }
    }

    async fn release(&self, source: &str) -> std::result::Result<(), StorageError> {
        let response = self
            .call(source, "release", Vec::new())
            .await
            .map_err(failed)?;
        match response.status_code() {
            204 => Ok(()),
            status => Err(StorageError(format!("release answered {status}"))),
        }
    }

    async fn read_source(
        &self,
        source: &str,
        after: SeqNum,
        upto: SeqNum,
        budget: Budget,
    ) -> std::result::Result<Vec<Message>, StorageError> {
        let request = ReadRequest {
            after,
            upto,
            rows: budget.rows,
            bytes: budget.bytes,
        };
        let body = serde_json::to_vec(&request).map_err(failed)?;
        let mut response = self.call(source, "read", body).await.map_err(failed)?;
        let bytes = response.bytes().await.map_err(failed)?;
        if response.status_code() != 200 {
            return Err(StorageError(format!(
                "reading the fork's source: {}",
                String::from_utf8_lossy(&bytes)
            )));
        }
        decode_messages(&bytes)
    }

    async fn set_alarm(&self, at_ms: i64) {
        // A fan-out owed to the stream's watchers may want it sooner.
        let owed = super::fanout::due_ms_of(&self.state)
            .and_then(|due| i64::try_from(due).ok())
            .unwrap_or(i64::MAX);
        let at_ms = at_ms.min(owed);
        // Milliseconds since the epoch, well within f64's exact range.
        let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(at_ms as f64));
        if let Err(e) = self
            .state
            .storage()
            .set_alarm(ScheduledTime::new(date))
            .await
        {
            worker::console_error!("setting the stream's alarm: {e}");
        }
    }

    fn warn(&self, message: &str) {
        worker::console_warn!("{message}");
    }
}

/// A fork's read of its source.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct ReadRequest {
    pub(super) after: SeqNum,
    pub(super) upto: SeqNum,
    pub(super) rows: usize,
    pub(super) bytes: usize,
}
