//! Durable Streams JSON mode: a POST body is split into messages (one array level
//! flattened), which reads join back. Never panics; refuses bodies over the nesting and
//! message-count limits; every message is valid JSON and reads return a valid array of them.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use livestore_sync_rs::durable_streams::json::{
    join_messages, split_messages, JsonError, MAX_JSON_MESSAGES,
};
use livestore_sync_rs::json_limits::{nests_deeper_than, MAX_JSON_DEPTH};

fuzz_target!(|data: &[u8]| {
    let Some((&flag, body)) = data.split_first() else {
        return;
    };
    let allow_empty = flag & 1 != 0;
    match split_messages(body, allow_empty) {
        Ok(messages) => {
            assert!(messages.len() <= MAX_JSON_MESSAGES);
            assert!(allow_empty || !messages.is_empty());
            for message in &messages {
                assert!(!nests_deeper_than(message, MAX_JSON_DEPTH), "{message}");
                common::valid_json(message);
            }
            let joined = join_messages(messages.iter().map(String::as_str));
            assert_eq!(common::valid_json(&joined), Some(messages.len()));
        }
        Err(JsonError::EmptyArray) => assert!(!allow_empty),
        Err(_) => {}
    }
});
