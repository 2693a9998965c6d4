//! Effect RPC frames: WebSocket text frames, HTTP bodies and DO-RPC calls, for every transport.
//! Decoding never panics, refuses what is over the limits, and every reply to a decoded
//! request id is valid JSON naming exactly that id.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use livestore_sync_rs::json_limits::{nests_deeper_than, MAX_JSON_DEPTH};
use livestore_sync_rs::livestore::event::MAX_EVENT_ARGS_BYTES;
use livestore_sync_rs::livestore::query::Transport;
use livestore_sync_rs::livestore::wire::{
    decode_client_message, decode_do_rpc_requests, encode_chunk, encode_defect, encode_die,
    encode_failure, encode_stream_end, encode_success, with_rpc_request_id, ClientMessage,
    DecodeError, RequestId, Rpc, SyncError, MAX_DO_RPC_MESSAGES, MAX_PUSH_BATCH_EVENTS,
};
use livestore_sync_rs::stream::seq::MAX_SAFE_INTEGER;

fuzz_target!(|data: &[u8]| {
    let Some(text) = common::text(data) else {
        return;
    };
    for transport in [Transport::Ws, Transport::Http, Transport::DoRpc] {
        check_frame(text, transport);
    }
    if let Ok(messages) = decode_do_rpc_requests(text) {
        assert!(messages.len() <= MAX_DO_RPC_MESSAGES);
        for message in messages {
            check_frame(message.get(), Transport::DoRpc);
        }
    }
});

fn check_frame(text: &str, transport: Transport) {
    match decode_client_message(text, transport) {
        Ok(ClientMessage::Request { id, rpc }) => {
            check_replies(&id);
            check_rpc(&rpc);
        }
        Ok(ClientMessage::Ack(id) | ClientMessage::Interrupt(id)) => check_replies(&id),
        Ok(ClientMessage::Ping | ClientMessage::Eof) => {}
        Err(error) => {
            let message = error.to_string();
            let defect = common::json(&encode_defect(&message));
            assert_eq!(defect["defect"].as_str(), Some(message.as_str()));
            match error {
                DecodeError::UnknownRpc { id, tag } => {
                    assert!(tag.chars().count() <= 64, "echoed tag not shortened");
                    check_replies(&id);
                }
                DecodeError::InvalidPayload { id, .. } => check_replies(&id),
                DecodeError::Malformed(_) => {}
            }
        }
    }
}

fn check_rpc(rpc: &Rpc) {
    match rpc {
        Rpc::Push(push) => {
            assert!(push.batch.len() <= MAX_PUSH_BATCH_EVENTS);
            for event in &push.batch {
                assert!(event.seq_num.get() <= MAX_SAFE_INTEGER);
                assert!(event.parent_seq_num.get() <= MAX_SAFE_INTEGER);
                if let Some(args) = &event.args {
                    assert!(args.get().len() <= MAX_EVENT_ARGS_BYTES);
                    assert!(!nests_deeper_than(args.get(), MAX_JSON_DEPTH));
                    common::valid_json(args.get());
                }
            }
        }
        Rpc::Pull(pull) => {
            if let Some(cursor) = pull.cursor.clone().into_option() {
                assert!(cursor.event_sequence_number.get() <= MAX_SAFE_INTEGER);
            }
        }
        Rpc::Ping(_) => {}
    }
}

/// Every reply shape carries the id back with the JSON type it came with.
fn check_replies(id: &RequestId) {
    let expected = match serde_json::to_value(id) {
        Ok(value) => value,
        Err(e) => panic!("request id does not serialize: {e}"),
    };
    let page = r#"{"batch":[],"pageInfo":{"_tag":"NoMore"},"backendId":"b"}"#;
    let replies = [
        encode_chunk(id, &[page]),
        encode_stream_end(id),
        encode_success(id, "{}"),
        encode_die(id, "defect"),
        encode_failure(id, &SyncError::unknown("Error", "message")),
    ];
    for reply in replies {
        assert_eq!(common::json(&reply)["requestId"], expected, "{reply}");
    }
    let value = common::json(&with_rpc_request_id(page, id));
    assert!(value["rpcRequestId"].is_string());
}
