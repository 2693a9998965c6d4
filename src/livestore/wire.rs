//! The Effect RPC JSON wire format of `@livestore/sync-cf`, both directions.
//!
//! Two flavors exist and are told apart per request by the JSON type of the request id:
//! Effect 3 clients (the npm 0.4.0 release) send string ids and expect failure causes as a
//! tree; Effect 4 clients (LiveStore main) send numeric ids, expect causes as arrays and
//! stream exits with `"value":null`. Ids are echoed with the type they came with.

use super::event::EventEncoded;
use super::query::Transport;
use crate::json_limits::{bounded_vec, nests_deeper_than, MAX_JSON_DEPTH};
use crate::stream::SeqNum;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;

/// An RPC request id, echoed exactly as received.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    /// Effect 3: a decimal string.
    Text(String),
    /// Effect 4: a number.
    Number(u64),
}

/// Which Effect RPC encoding a request expects in its replies.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Flavor {
    Effect3,
    Effect4,
}

impl RequestId {
    /// The flavor the client speaks, judged by the id's JSON type.
    pub fn flavor(&self) -> Flavor {
        match self {
            RequestId::Text(_) => Flavor::Effect3,
            RequestId::Number(_) => Flavor::Effect4,
        }
    }

    /// The id as JSON (`"0"` or `0`).
    pub fn to_json(&self) -> String {
        match self {
            RequestId::Text(s) => serde_json::to_string(s).unwrap_or_default(),
            RequestId::Number(n) => n.to_string(),
        }
    }
}

/// Effect's encoded `Option`: `{"_tag":"None"}` or `{"_tag":"Some","value":…}`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(tag = "_tag")]
pub enum EffectOption<T> {
    None,
    Some { value: T },
}

impl<T> EffectOption<T> {
    /// As a Rust `Option`.
    pub fn into_option(self) -> Option<T> {
        match self {
            EffectOption::None => None,
            EffectOption::Some { value } => Some(value),
        }
    }
}

/// The pull cursor: the last event the client has, and the backend it came from.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cursor {
    pub backend_id: String,
    pub event_sequence_number: SeqNum,
}

/// Payload of `SyncWsRpc.Pull` / `SyncHttpRpc.Pull` / `SyncDoRpc.Pull`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullRequest {
    pub store_id: String,
    #[serde(default)]
    pub payload: Option<Value>,
    /// WebSocket only; HTTP live pulls are client-side polling, DO-RPC ones `rpc_context`.
    #[serde(default)]
    pub live: bool,
    pub cursor: EffectOption<Cursor>,
    /// DO-RPC only: the calling Durable Object, to be called back with live updates.
    #[serde(default)]
    pub rpc_context: Option<RpcContext>,
}

/// The `rpcContext` of a DO-RPC pull.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpcContext {
    pub caller_context: CallerContext,
}

/// Where a DO-RPC subscriber lives: its namespace binding and its object id.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallerContext {
    pub binding_name: String,
    pub durable_object_id: String,
}

/// Payload of `SyncWsRpc.Push` / `SyncHttpRpc.Push`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushRequest {
    pub store_id: String,
    #[serde(default)]
    pub payload: Option<Value>,
    #[serde(deserialize_with = "bounded_batch")]
    pub batch: Vec<EventEncoded>,
    pub backend_id: EffectOption<String>,
}

/// Most events accepted in one push. The real client sends at most 100 (and 900 kB) per
/// push; the margin admits other clients while keeping one push's work bounded.
pub const MAX_PUSH_BATCH_EVENTS: usize = 1000;

/// A push batch, refused as soon as it has more than [`MAX_PUSH_BATCH_EVENTS`] events.
fn bounded_batch<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<EventEncoded>, D::Error> {
    let too_long = format!("a push batch holds at most {MAX_PUSH_BATCH_EVENTS} events");
    bounded_vec(d, MAX_PUSH_BATCH_EVENTS, &too_long)
}

/// Payload of `SyncHttpRpc.Ping` / `SyncDoRpc.Ping`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PingRequest {
    pub store_id: String,
    #[serde(default)]
    pub payload: Option<Value>,
}

/// A decoded RPC call.
#[derive(Clone, Debug)]
pub enum Rpc {
    Pull(PullRequest),
    Push(PushRequest),
    Ping(PingRequest),
}

impl Rpc {
    /// The store the call names.
    pub fn store_id(&self) -> &str {
        match self {
            Rpc::Pull(r) => &r.store_id,
            Rpc::Push(r) => &r.store_id,
            Rpc::Ping(r) => &r.store_id,
        }
    }

    /// The sync payload the call carries.
    pub fn payload(&self) -> Option<&Value> {
        match self {
            Rpc::Pull(r) => r.payload.as_ref(),
            Rpc::Push(r) => r.payload.as_ref(),
            Rpc::Ping(r) => r.payload.as_ref(),
        }
    }
}

/// A message from the client.
#[derive(Clone, Debug)]
pub enum ClientMessage {
    Request {
        id: RequestId,
        rpc: Rpc,
    },
    /// The client consumed a chunk. Live broadcasts do not wait for it.
    Ack(RequestId),
    /// The client stopped consuming a stream.
    Interrupt(RequestId),
    Ping,
    /// The client will send no more requests.
    Eof,
}

/// Why a frame could not be decoded, and so how it must be answered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or not an Effect RPC message at all: a connection-level `Defect`.
    #[error("{0}")]
    Malformed(String),
    /// A request naming an RPC this transport does not have: a `Defect` on sockets and HTTP,
    /// like Effect's server; a dying `Exit` of that request over DO-RPC, like LiveStore's.
    #[error("Unknown request tag: {tag}")]
    UnknownRpc { id: RequestId, tag: String },
    /// A known RPC with an invalid payload: a failed `Exit` for that request.
    #[error("invalid {rpc} payload: {message}")]
    InvalidPayload {
        id: RequestId,
        rpc: String,
        message: String,
    },
}

/// The envelope fields of any client message, parsed without touching the payload.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "_tag", borrow)]
    kind: Cow<'a, str>,
    id: Option<RequestId>,
    #[serde(rename = "requestId")]
    request_id: Option<RequestId>,
    #[serde(rename = "tag", borrow)]
    rpc: Option<Cow<'a, str>>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

/// Decodes one text frame (WebSocket) or request body (HTTP) for `transport`.
pub fn decode_client_message(
    text: &str,
    transport: Transport,
) -> Result<ClientMessage, DecodeError> {
    let env: Envelope = serde_json::from_str(text)
        .map_err(|e| DecodeError::Malformed(format!("invalid message: {e}")))?;
    let id_for = |field: Option<RequestId>, name: &str| {
        field
            .ok_or_else(|| DecodeError::Malformed(format!("{} message without `{name}`", env.kind)))
    };
    match env.kind.as_ref() {
        "Request" => {
            let id = id_for(env.id.clone(), "id")?;
            let rpc_name = env
                .rpc
                .as_deref()
                .ok_or_else(|| DecodeError::Malformed("Request message without `tag`".into()))?;
            let payload = env.payload.map(RawValue::get).unwrap_or("null");
            let invalid_because = |message: String| DecodeError::InvalidPayload {
                id: id.clone(),
                rpc: rpc_name.to_owned(),
                message,
            };
            let invalid = |e: serde_json::Error| invalid_because(e.to_string());
            // Typed fields stop at this depth anyway; raw ones (event args) would not.
            if nests_deeper_than(payload, MAX_JSON_DEPTH) {
                return Err(invalid_because(format!(
                    "JSON nested deeper than {MAX_JSON_DEPTH} levels"
                )));
            }
            let rpc = match (transport, rpc_name) {
                (Transport::Ws, "SyncWsRpc.Pull")
                | (Transport::Http, "SyncHttpRpc.Pull")
                | (Transport::DoRpc, "SyncDoRpc.Pull") => {
                    Rpc::Pull(serde_json::from_str(payload).map_err(invalid)?)
                }
                (Transport::Ws, "SyncWsRpc.Push")
                | (Transport::Http, "SyncHttpRpc.Push")
                | (Transport::DoRpc, "SyncDoRpc.Push") => {
                    Rpc::Push(serde_json::from_str(payload).map_err(invalid)?)
                }
                (Transport::Http, "SyncHttpRpc.Ping") | (Transport::DoRpc, "SyncDoRpc.Ping") => {
                    Rpc::Ping(serde_json::from_str(payload).map_err(invalid)?)
                }
                (_, other) => {
                    return Err(DecodeError::UnknownRpc {
                        id,
                        tag: short(other),
                    })
                }
            };
            Ok(ClientMessage::Request { id, rpc })
        }
        "Ack" => Ok(ClientMessage::Ack(id_for(env.request_id, "requestId")?)),
        "Interrupt" => Ok(ClientMessage::Interrupt(id_for(
            env.request_id,
            "requestId",
        )?)),
        "Ping" => Ok(ClientMessage::Ping),
        "Eof" => Ok(ClientMessage::Eof),
        other => Err(DecodeError::Malformed(format!(
            "unknown message tag `{}`",
            short(other)
        ))),
    }
}

fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

/// An error a sync RPC fails with, in LiveStore's tagged-error encoding.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "_tag")]
pub enum SyncError {
    #[serde(rename = "ServerAheadError", rename_all = "camelCase")]
    ServerAhead {
        minimum_expected_num: SeqNum,
        provided_num: SeqNum,
    },
    #[serde(rename = "BackendIdMismatchError")]
    BackendIdMismatch { expected: String, received: String },
    #[serde(rename = "UnknownError")]
    Unknown {
        cause: Defect,
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
}

impl SyncError {
    /// An `UnknownError` whose cause is an `Error` with this name and message.
    pub fn unknown(name: &str, message: impl Into<String>) -> SyncError {
        SyncError::Unknown {
            cause: Defect {
                name: name.to_owned(),
                message: message.into(),
            },
            note: None,
        }
    }
}

/// `Schema.Defect`'s encoding of an `Error`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Defect {
    pub name: String,
    pub message: String,
}

/// `{"_tag":"Chunk","requestId":…,"values":[…]}` with already-encoded values.
pub fn encode_chunk(id: &RequestId, values: &[&str]) -> String {
    let id = id.to_json();
    let len: usize = values.iter().map(|v| v.len() + 1).sum();
    let mut out = String::with_capacity(40 + id.len() + len);
    out.push_str(r#"{"_tag":"Chunk","requestId":"#);
    out.push_str(&id);
    out.push_str(r#","values":["#);
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(v);
    }
    out.push_str("]}");
    out
}

/// The successful end of a stream (no value).
pub fn encode_stream_end(id: &RequestId) -> String {
    let value = match id.flavor() {
        Flavor::Effect3 => "",
        Flavor::Effect4 => r#","value":null"#,
    };
    format!(
        r#"{{"_tag":"Exit","requestId":{},"exit":{{"_tag":"Success"{value}}}}}"#,
        id.to_json()
    )
}

/// A successful reply carrying `value_json`.
pub fn encode_success(id: &RequestId, value_json: &str) -> String {
    format!(
        r#"{{"_tag":"Exit","requestId":{},"exit":{{"_tag":"Success","value":{value_json}}}}}"#,
        id.to_json()
    )
}

/// A failed reply with a typed error (`Fail` cause).
pub fn encode_failure(id: &RequestId, error: &SyncError) -> String {
    let error = serde_json::to_string(error).unwrap_or_else(|_| "null".into());
    encode_failed_exit(id, &format!(r#"{{"_tag":"Fail","error":{error}}}"#))
}

/// A request that died with `message` (a `Die` cause), failing only that request.
pub fn encode_die(id: &RequestId, message: &str) -> String {
    let defect = serde_json::to_string(message).unwrap_or_else(|_| "\"\"".into());
    encode_failed_exit(id, &format!(r#"{{"_tag":"Die","defect":{defect}}}"#))
}

/// The end of a request the client interrupted (an `Interrupt` cause, by no fiber in
/// particular).
pub fn encode_interrupted(id: &RequestId) -> String {
    let cause = match id.flavor() {
        Flavor::Effect3 => r#"{"_tag":"Interrupt","fiberId":{"_tag":"None"}}"#,
        Flavor::Effect4 => r#"{"_tag":"Interrupt","fiberId":-1}"#,
    };
    encode_failed_exit(id, cause)
}

/// A failed `Exit` with one cause: a tree for Effect 3, an array for Effect 4.
fn encode_failed_exit(id: &RequestId, cause: &str) -> String {
    let cause = match id.flavor() {
        Flavor::Effect3 => cause.to_owned(),
        Flavor::Effect4 => format!("[{cause}]"),
    };
    format!(
        r#"{{"_tag":"Exit","requestId":{},"exit":{{"_tag":"Failure","cause":{cause}}}}}"#,
        id.to_json()
    )
}

/// A connection-level defect: the client fails every pending request of the connection.
pub fn encode_defect(message: &str) -> String {
    format!(
        r#"{{"_tag":"Defect","defect":{}}}"#,
        serde_json::to_string(message).unwrap_or_else(|_| "\"\"".into())
    )
}

/// Largest client frame accepted, as on Cloudflare's edge: bigger frames close the socket
/// with [`CLOSE_MESSAGE_TOO_BIG`] before anything is decoded. Also the HTTP body limit.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// Largest DO-RPC call, as the JSON the JS side unpacks from msgpack. The client caps the
/// msgpack at 900 kB; JSON repeats every record's keys, hence the margin.
pub const MAX_DO_RPC_REQUEST_BYTES: usize = 2 << 20;
/// Most messages in one DO-RPC call (the client sends one request per call).
pub const MAX_DO_RPC_MESSAGES: usize = 64;

/// Splits a DO-RPC call (a JSON array of RPC messages) into its messages. Any error is a
/// `Defect` for the whole call.
pub fn decode_do_rpc_requests(json: &str) -> Result<Vec<&RawValue>, DecodeError> {
    if json.len() > MAX_DO_RPC_REQUEST_BYTES {
        return Err(DecodeError::Malformed(format!(
            "request is larger than {MAX_DO_RPC_REQUEST_BYTES} bytes"
        )));
    }
    let too_long = format!("a call holds at most {MAX_DO_RPC_MESSAGES} messages");
    let mut de = serde_json::Deserializer::from_str(json);
    bounded_vec(&mut de, MAX_DO_RPC_MESSAGES, &too_long)
        .and_then(|messages| de.end().map(|()| messages))
        .map_err(|e| DecodeError::Malformed(format!("invalid request: {e}")))
}

/// WebSocket close code for an oversized message.
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;

/// The reply to a `Ping` message.
pub const PONG: &str = r#"{"_tag":"Pong"}"#;
/// The exact ping frame the client sends, answered by the runtime without waking the object.
pub const PING: &str = r#"{"_tag":"Ping"}"#;
/// The success value of an HTTP ping.
pub const HTTP_PONG_VALUE: &str = r#"{"_tag":"SyncMessage.Pong"}"#;
/// The success value of a push.
pub const PUSH_ACK_VALUE: &str = "{}";

/// A DO-RPC pull value: the `PullResponse` with the request id as `rpcRequestId` first.
pub fn with_rpc_request_id(pull_response_json: &str, id: &RequestId) -> String {
    let rest = pull_response_json
        .strip_prefix('{')
        .unwrap_or(pull_response_json);
    let id = match id {
        RequestId::Text(s) => serde_json::to_string(s).unwrap_or_default(),
        // The DO-RPC schema types rpcRequestId as a string.
        RequestId::Number(n) => format!("\"{n}\""),
    };
    if rest.starts_with('}') {
        format!(r#"{{"rpcRequestId":{id}}}"#)
    } else {
        format!(r#"{{"rpcRequestId":{id},{rest}"#)
    }
}

/// The JSON handed back to the JS side of a DO-RPC call, which packs it with msgpackr:
/// `{"stream":bool,"messages":[…]}`. A stream reply becomes a `ReadableStream` of one packed
/// message per chunk; otherwise the messages are packed as one array.
pub fn encode_do_rpc_reply(stream: bool, messages: &[String]) -> String {
    format!(
        r#"{{"stream":{stream},"messages":[{}]}}"#,
        messages.join(",")
    )
}

/// The `pageInfo` of a `PullResponse`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PageInfo {
    MoreKnown { remaining: u64 },
    NoMore,
}

impl PageInfo {
    /// The JSON encoding.
    pub fn to_json(self) -> String {
        match self {
            PageInfo::MoreKnown { remaining } => {
                format!(r#"{{"_tag":"MoreKnown","remaining":{remaining}}}"#)
            }
            PageInfo::NoMore => r#"{"_tag":"NoMore"}"#.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn decode(v: Value) -> Result<ClientMessage, DecodeError> {
        decode_client_message(&v.to_string(), Transport::Ws)
    }

    fn as_json(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn decodes_a_real_pull_request() {
        let frame = r#"{"_tag":"Request","id":"0","tag":"SyncWsRpc.Pull","traceId":"3a5b","payload":{"storeId":"s1","payload":{"authToken":"x"},"live":false,"cursor":{"_tag":"None"}},"spanId":"afec","sampled":true,"headers":[]}"#;
        let ClientMessage::Request {
            id,
            rpc: Rpc::Pull(p),
        } = decode_client_message(frame, Transport::Ws).unwrap()
        else {
            panic!("expected a pull")
        };
        assert_eq!(id, RequestId::Text("0".into()));
        assert_eq!(p.store_id, "s1");
        assert!(!p.live);
        assert_eq!(p.cursor, EffectOption::None);
        assert_eq!(p.payload, Some(json!({"authToken":"x"})));
    }

    #[test]
    fn decodes_a_cursor_and_a_push() {
        let ClientMessage::Request { rpc: Rpc::Pull(p), .. } = decode(json!({"_tag":"Request","id":"5","tag":"SyncWsRpc.Pull","payload":{"storeId":"s1","live":true,"cursor":{"_tag":"Some","value":{"backendId":"B","eventSequenceNumber":1}}},"headers":[]})).unwrap() else { panic!() };
        assert!(p.live);
        assert_eq!(
            p.cursor.into_option(),
            Some(Cursor {
                backend_id: "B".into(),
                event_sequence_number: SeqNum::new(1).unwrap()
            })
        );
        let push = r#"{"_tag":"Request","id":"2","tag":"SyncWsRpc.Push","payload":{"storeId":"s1","batch":[{"name":"todoCreated-v1","args":{"id":"t1","text":"hello 1"},"seqNum":1,"parentSeqNum":0,"clientId":"client-A","sessionId":"session-1"}],"backendId":{"_tag":"Some","value":"V4bq"}},"headers":[]}"#;
        let ClientMessage::Request {
            rpc: Rpc::Push(p), ..
        } = decode_client_message(push, Transport::Ws).unwrap()
        else {
            panic!()
        };
        assert_eq!(p.batch.len(), 1);
        assert_eq!(
            p.batch[0].args.as_ref().unwrap().get(),
            r#"{"id":"t1","text":"hello 1"}"#
        );
        assert_eq!(p.backend_id.into_option(), Some("V4bq".to_owned()));
    }

    #[test]
    fn decodes_control_messages_and_numeric_ids() {
        assert!(matches!(
            decode(json!({"_tag":"Ping"})),
            Ok(ClientMessage::Ping)
        ));
        assert!(matches!(
            decode(json!({"_tag":"Eof"})),
            Ok(ClientMessage::Eof)
        ));
        assert!(matches!(
            decode(json!({"_tag":"Ack","requestId":"0"})),
            Ok(ClientMessage::Ack(RequestId::Text(_)))
        ));
        let Ok(ClientMessage::Interrupt(id)) = decode(json!({"_tag":"Interrupt","requestId":7}))
        else {
            panic!()
        };
        assert_eq!(id, RequestId::Number(7));
        assert_eq!(id.flavor(), Flavor::Effect4);
        assert_eq!(id.to_json(), "7");
    }

    #[test]
    fn bad_frames_are_classified() {
        assert!(matches!(
            decode_client_message("not json", Transport::Ws),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode(json!([1, 2])),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode(json!({"_tag":"Bogus"})),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode(json!({"_tag":"Ack"})),
            Err(DecodeError::Malformed(_))
        ));
        let unknown =
            decode(json!({"_tag":"Request","id":"1","tag":"SyncWsRpc.Bogus","payload":{}}))
                .unwrap_err();
        assert_eq!(
            unknown,
            DecodeError::UnknownRpc {
                id: RequestId::Text("1".into()),
                tag: "SyncWsRpc.Bogus".into()
            }
        );
        assert_eq!(unknown.to_string(), "Unknown request tag: SyncWsRpc.Bogus");
        // HTTP RPCs are not WebSocket RPCs and the other way round.
        assert!(matches!(
            decode(
                json!({"_tag":"Request","id":"1","tag":"SyncHttpRpc.Ping","payload":{"storeId":"s"}})
            ),
            Err(DecodeError::UnknownRpc { .. })
        ));
        assert!(matches!(
            decode(
                json!({"_tag":"Request","id":"1","tag":"SyncWsRpc.Push","payload":{"storeId":"s","batch":"x","backendId":{"_tag":"None"}}})
            ),
            Err(DecodeError::InvalidPayload { .. })
        ));
        assert!(matches!(
            decode(json!({"_tag":"Request","id":"1","tag":"SyncWsRpc.Pull"})),
            Err(DecodeError::InvalidPayload { .. })
        ));
    }

    #[test]
    fn encodes_replies_in_the_effect3_flavor() {
        let id = RequestId::Text("3".into());
        assert_eq!(
            as_json(&encode_chunk(&id, &[r#"{"a":1}"#, r#"{"b":2}"#])),
            json!({"_tag":"Chunk","requestId":"3","values":[{"a":1},{"b":2}]})
        );
        assert_eq!(
            as_json(&encode_stream_end(&id)),
            json!({"_tag":"Exit","requestId":"3","exit":{"_tag":"Success"}})
        );
        assert_eq!(
            as_json(&encode_success(&id, PUSH_ACK_VALUE)),
            json!({"_tag":"Exit","requestId":"3","exit":{"_tag":"Success","value":{}}})
        );
        let ahead = SyncError::ServerAhead {
            minimum_expected_num: SeqNum::new(2).unwrap(),
            provided_num: SeqNum::new(1).unwrap(),
        };
        assert_eq!(
            as_json(&encode_failure(&id, &ahead)),
            json!({"_tag":"Exit","requestId":"3","exit":{"_tag":"Failure","cause":{"_tag":"Fail","error":{"_tag":"ServerAheadError","minimumExpectedNum":2,"providedNum":1}}}})
        );
        let mismatch = SyncError::BackendIdMismatch {
            expected: "A".into(),
            received: "B".into(),
        };
        assert_eq!(
            as_json(&encode_failure(&id, &mismatch))["exit"]["cause"]["error"],
            json!({"_tag":"BackendIdMismatchError","expected":"A","received":"B"})
        );
        assert_eq!(
            as_json(&encode_failure(&id, &SyncError::unknown("Error", "boom")))["exit"]["cause"]
                ["error"],
            json!({"_tag":"UnknownError","cause":{"name":"Error","message":"boom"}})
        );
        assert_eq!(
            as_json(&encode_defect("Unknown request tag: SyncWsRpc.Bogus")),
            json!({"_tag":"Defect","defect":"Unknown request tag: SyncWsRpc.Bogus"})
        );
    }

    #[test]
    fn encodes_replies_in_the_effect4_flavor() {
        let id = RequestId::Number(4);
        assert_eq!(
            as_json(&encode_stream_end(&id)),
            json!({"_tag":"Exit","requestId":4,"exit":{"_tag":"Success","value":null}})
        );
        assert_eq!(
            as_json(&encode_failure(&id, &SyncError::unknown("Error", "x")))["exit"]["cause"],
            json!([{"_tag":"Fail","error":{"_tag":"UnknownError","cause":{"name":"Error","message":"x"}}}])
        );
        assert_eq!(as_json(&encode_chunk(&id, &[]))["requestId"], json!(4));
    }

    #[test]
    fn decodes_do_rpc_requests() {
        let pull = r#"{"_tag":"Request","id":"3","tag":"SyncDoRpc.Pull","payload":{"cursor":{"_tag":"None"},"rpcContext":{"callerContext":{"bindingName":"CLIENT_DO","durableObjectId":"abc"}},"storeId":"s1"},"headers":[]}"#;
        let Ok(ClientMessage::Request {
            rpc: Rpc::Pull(p), ..
        }) = decode_client_message(pull, Transport::DoRpc)
        else {
            panic!("expected a pull")
        };
        assert_eq!(
            p.rpc_context.unwrap().caller_context,
            CallerContext {
                binding_name: "CLIENT_DO".into(),
                durable_object_id: "abc".into()
            }
        );
        let ping = json!({"_tag":"Request","id":"4","tag":"SyncDoRpc.Ping","payload":{"storeId":"s1"},"headers":[]});
        let Ok(ClientMessage::Request { rpc, .. }) =
            decode_client_message(&ping.to_string(), Transport::DoRpc)
        else {
            panic!("expected a ping")
        };
        assert_eq!(rpc.store_id(), "s1");
        // WebSocket RPC names are not DO-RPC ones.
        let ws = json!({"_tag":"Request","id":"5","tag":"SyncWsRpc.Pull","payload":{}});
        assert!(matches!(
            decode_client_message(&ws.to_string(), Transport::DoRpc),
            Err(DecodeError::UnknownRpc { .. })
        ));
    }

    #[test]
    fn dying_requests() {
        assert_eq!(
            as_json(&encode_die(
                &RequestId::Text("2".into()),
                "Unknown request tag: X"
            )),
            json!({"_tag":"Exit","requestId":"2","exit":{"_tag":"Failure","cause":{"_tag":"Die","defect":"Unknown request tag: X"}}})
        );
        assert_eq!(
            as_json(&encode_die(&RequestId::Number(2), "x"))["exit"]["cause"],
            json!([{"_tag":"Die","defect":"x"}])
        );
    }

    #[test]
    fn interrupted_requests() {
        assert_eq!(
            as_json(&encode_interrupted(&RequestId::Text("4".into()))),
            json!({"_tag":"Exit","requestId":"4","exit":{"_tag":"Failure","cause":{"_tag":"Interrupt","fiberId":{"_tag":"None"}}}})
        );
        assert_eq!(
            as_json(&encode_interrupted(&RequestId::Number(4))),
            json!({"_tag":"Exit","requestId":4,"exit":{"_tag":"Failure","cause":[{"_tag":"Interrupt","fiberId":-1}]}})
        );
    }

    #[test]
    fn do_rpc_values_and_reply() {
        let page = r#"{"batch":[],"pageInfo":{"_tag":"NoMore"},"backendId":"B"}"#;
        assert_eq!(
            as_json(&with_rpc_request_id(page, &RequestId::Text("7".into()))),
            json!({"rpcRequestId":"7","batch":[],"pageInfo":{"_tag":"NoMore"},"backendId":"B"})
        );
        assert_eq!(
            as_json(&with_rpc_request_id(page, &RequestId::Number(8)))["rpcRequestId"],
            json!("8")
        );
        assert_eq!(
            as_json(&encode_do_rpc_reply(true, &[PONG.to_owned()])),
            json!({"stream":true,"messages":[{"_tag":"Pong"}]})
        );
    }

    #[test]
    fn effect4_frames_from_livestore_main() {
        // Shapes written from LiveStore main's Effect 4 schemas: numeric ids, extra fields.
        let pull = r#"{"_tag":"Request","id":0,"tag":"SyncWsRpc.Pull","payload":{"storeId":"s1","live":true,"cursor":{"_tag":"None"}},"headers":[],"traceId":"t","spanId":"s","sampled":true}"#;
        let Ok(ClientMessage::Request { id, .. }) = decode_client_message(pull, Transport::Ws)
        else {
            panic!("expected a request")
        };
        assert_eq!(id, RequestId::Number(0));
        assert!(matches!(
            decode(json!({"_tag":"Ack","requestId":0})),
            Ok(ClientMessage::Ack(RequestId::Number(0)))
        ));
        assert!(matches!(
            decode(json!({"_tag":"Interrupt","requestId":1,"interruptors":[]})),
            Ok(ClientMessage::Interrupt(RequestId::Number(1)))
        ));
        let ahead = SyncError::ServerAhead {
            minimum_expected_num: SeqNum::new(4).unwrap(),
            provided_num: SeqNum::new(1).unwrap(),
        };
        assert_eq!(
            as_json(&encode_failure(&RequestId::Number(2), &ahead)),
            json!({"_tag":"Exit","requestId":2,"exit":{"_tag":"Failure","cause":[{"_tag":"Fail","error":{"_tag":"ServerAheadError","minimumExpectedNum":4,"providedNum":1}}]}})
        );
        assert_eq!(
            as_json(&encode_success(&RequestId::Number(3), PUSH_ACK_VALUE)),
            json!({"_tag":"Exit","requestId":3,"exit":{"_tag":"Success","value":{}}})
        );
    }

    /// A push frame whose batch is `events` (JSON texts).
    fn push_frame(events: &[String]) -> String {
        format!(
            r#"{{"_tag":"Request","id":"9","tag":"SyncWsRpc.Push","payload":{{"storeId":"s","batch":[{}],"backendId":{{"_tag":"None"}}}},"headers":[]}}"#,
            events.join(",")
        )
    }

    fn event_json(seq: u64, args: &str) -> String {
        format!(
            r#"{{"name":"e","args":{args},"seqNum":{seq},"parentSeqNum":{},"clientId":"c","sessionId":"s"}}"#,
            seq.saturating_sub(1)
        )
    }

    /// The message of the failed `Exit` a frame gets, if it gets one.
    fn invalid_payload(frame: &str) -> String {
        match decode_client_message(frame, Transport::Ws) {
            Err(DecodeError::InvalidPayload { id, message, .. }) => {
                assert_eq!(id, RequestId::Text("9".into()));
                message
            }
            other => panic!("expected an invalid payload, got {other:?}"),
        }
    }

    #[test]
    fn push_batches_are_capped() {
        let batch = |n: u64| (1..=n).map(|s| event_json(s, "{}")).collect::<Vec<_>>();
        let at_limit = push_frame(&batch(MAX_PUSH_BATCH_EVENTS as u64));
        let Ok(ClientMessage::Request {
            rpc: Rpc::Push(push),
            ..
        }) = decode_client_message(&at_limit, Transport::Ws)
        else {
            panic!("a batch at the limit is accepted")
        };
        assert_eq!(push.batch.len(), MAX_PUSH_BATCH_EVENTS);
        let over = invalid_payload(&push_frame(&batch(MAX_PUSH_BATCH_EVENTS as u64 + 1)));
        assert!(over.contains("at most 1000 events"), "{over}");
    }

    #[test]
    fn event_args_are_capped() {
        use crate::livestore::event::MAX_EVENT_ARGS_BYTES;
        // A JSON string of exactly the limit (quotes included), then one byte more.
        let args = |len: usize| format!("\"{}\"", "x".repeat(len - 2));
        let frame = push_frame(&[event_json(1, &args(MAX_EVENT_ARGS_BYTES))]);
        assert!(decode_client_message(&frame, Transport::Ws).is_ok());
        let over = invalid_payload(&push_frame(&[event_json(
            1,
            &args(MAX_EVENT_ARGS_BYTES + 1),
        )]));
        assert!(
            over.contains("900001 bytes") && over.contains("900000"),
            "{over}"
        );
    }

    #[test]
    fn deep_nesting_is_a_clear_error_not_a_stack_overflow() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        // In event args (kept as raw text, so serde_json's own limit does not apply).
        let message = invalid_payload(&push_frame(&[event_json(1, &deep(10_000))]));
        assert!(
            message.contains("nested deeper than 128 levels"),
            "{message}"
        );
        // Args as deep as the rest of the payload leaves room for are fine.
        assert!(
            decode_client_message(&push_frame(&[event_json(1, &deep(120))]), Transport::Ws).is_ok()
        );
        // In the sync payload of a pull.
        let pull = format!(
            r#"{{"_tag":"Request","id":"9","tag":"SyncWsRpc.Pull","payload":{{"storeId":"s","live":false,"cursor":{{"_tag":"None"}},"payload":{}}}}}"#,
            deep(10_000)
        );
        assert!(invalid_payload(&pull).contains("nested deeper"));
        // As the request id: not an id at all.
        let id = format!(r#"{{"_tag":"Ack","requestId":{}}}"#, deep(10_000));
        assert!(matches!(
            decode_client_message(&id, Transport::Ws),
            Err(DecodeError::Malformed(_))
        ));
        // In an envelope field nobody reads: skipped without recursion.
        let ignored = format!(r#"{{"_tag":"Ping","headers":{}}}"#, deep(100_000));
        assert!(matches!(
            decode_client_message(&ignored, Transport::Ws),
            Ok(ClientMessage::Ping)
        ));
    }

    #[test]
    fn sequence_numbers_beyond_2_pow_53_are_invalid_requests() {
        let over = 1u64 << 53;
        let message = invalid_payload(&push_frame(&[event_json(over, "{}")]));
        assert!(message.contains("beyond 2^53-1"), "{message}");
        let message = invalid_payload(&push_frame(&[format!(
            r#"{{"name":"e","seqNum":1,"parentSeqNum":{over},"clientId":"c","sessionId":"s"}}"#
        )]));
        assert!(message.contains("beyond 2^53-1"), "{message}");
        for number in ["1e400", "18446744073709551616", "1.5", "-1"] {
            let message = invalid_payload(&push_frame(&[
                event_json(1, "{}").replace(r#""seqNum":1"#, &format!(r#""seqNum":{number}"#))
            ]));
            assert!(!message.is_empty());
        }
        let pull = format!(
            r#"{{"_tag":"Request","id":"9","tag":"SyncWsRpc.Pull","payload":{{"storeId":"s","live":false,"cursor":{{"_tag":"Some","value":{{"backendId":"b","eventSequenceNumber":{over}}}}}}}}}"#
        );
        assert!(invalid_payload(&pull).contains("beyond 2^53-1"));
    }

    #[test]
    fn do_rpc_calls_are_bounded() {
        let ping =
            r#"{"_tag":"Request","id":"4","tag":"SyncDoRpc.Ping","payload":{"storeId":"s1"}}"#;
        let call = |n: usize| format!("[{}]", vec![ping; n].join(","));
        assert_eq!(decode_do_rpc_requests(&call(1)).map(|m| m.len()), Ok(1));
        assert_eq!(
            decode_do_rpc_requests(&call(MAX_DO_RPC_MESSAGES)).map(|m| m.len()),
            Ok(MAX_DO_RPC_MESSAGES)
        );
        for bad in [
            call(MAX_DO_RPC_MESSAGES + 1),
            format!("[\"{}\"]", "x".repeat(MAX_DO_RPC_REQUEST_BYTES)),
            "[] []".to_owned(),
            "{}".to_owned(),
            "[".to_owned(),
        ] {
            assert!(
                matches!(decode_do_rpc_requests(&bad), Err(DecodeError::Malformed(_))),
                "{}",
                &bad[..bad.len().min(80)]
            );
        }
    }

    #[test]
    fn page_info_json() {
        assert_eq!(
            as_json(&PageInfo::MoreKnown { remaining: 5 }.to_json()),
            json!({"_tag":"MoreKnown","remaining":5})
        );
        assert_eq!(
            as_json(&PageInfo::NoMore.to_json()),
            json!({"_tag":"NoMore"})
        );
    }
}
