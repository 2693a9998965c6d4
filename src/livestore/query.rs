//! Decoding of the sync request's query string (`storeId`, `payload`, `transport`).
//!
//! The client encodes `payload` twice: `encodeURIComponent(JSON.stringify(payload))`, then
//! `URLSearchParams` form-encodes that string again. Decoding undoes both, then parses JSON.

use super::store_id::{StoreId, StoreIdError};
use percent_encoding::percent_decode_str;
use serde_json::Value;

/// How a client talks to the sync backend.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Effect RPC over a WebSocket.
    Ws,
    /// Effect RPC over `POST`, one request per call.
    Http,
    /// Effect RPC (msgpack) over Durable Object JS RPC, from another Durable Object. Never
    /// named in a URL.
    DoRpc,
}

impl Transport {
    /// The name of this transport (the query value for `ws` and `http`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Http => "http",
            Transport::DoRpc => "do-rpc",
        }
    }
}

/// The parameters of a sync request.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncParams {
    pub store_id: StoreId,
    pub payload: Option<Value>,
    pub transport: Transport,
}

/// Why a query is not a valid sync request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("missing query parameter `storeId`")]
    MissingStoreId,
    #[error("missing query parameter `transport` (expected `ws` or `http`)")]
    MissingTransport,
    #[error("unsupported transport `{0}` (expected `ws` or `http`)")]
    UnknownTransport(String),
    #[error("invalid storeId: {0}")]
    InvalidStoreId(#[from] StoreIdError),
    #[error("invalid payload: {0}")]
    InvalidPayload(String),
}

/// Parses a query string (without the leading `?`). `Ok(None)` when it names neither a store
/// nor a transport, i.e. the request is not meant for sync at all.
pub fn parse_sync_query(query: &str) -> Result<Option<SyncParams>, QueryError> {
    let (mut store_id, mut payload, mut transport) = (None, None, None);
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        // First occurrence wins, like URLSearchParams.get.
        let slot = match key.as_ref() {
            "storeId" => &mut store_id,
            "payload" => &mut payload,
            "transport" => &mut transport,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(value.into_owned());
        }
    }
    if store_id.is_none() && transport.is_none() {
        return Ok(None);
    }
    let store_id = StoreId::parse(&store_id.ok_or(QueryError::MissingStoreId)?)?;
    let transport = match transport.as_deref() {
        None => return Err(QueryError::MissingTransport),
        Some("ws") => Transport::Ws,
        Some("http") => Transport::Http,
        Some(other) => return Err(QueryError::UnknownTransport(truncate(other))),
    };
    let payload = payload.as_deref().map(decode_payload).transpose()?;
    Ok(Some(SyncParams {
        store_id,
        payload,
        transport,
    }))
}

/// Undoes the client's `encodeURIComponent` and parses the JSON.
pub(crate) fn decode_payload(form_decoded: &str) -> Result<Value, QueryError> {
    let json = percent_decode_str(form_decoded)
        .decode_utf8()
        .map_err(|_| QueryError::InvalidPayload("not UTF-8 after percent-decoding".into()))?;
    serde_json::from_str(&json).map_err(|e| QueryError::InvalidPayload(e.to_string()))
}

/// Keeps echoed user input short in error messages.
fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_the_real_clients_query() {
        // Captured from @livestore/sync-cf 0.4.0.
        let q = "storeId=store-ws-1795339968239&payload=%257B%2522authToken%2522%253A%2522secret%2520%2526%2520%25C3%25BC%252F%253F%253D%2522%257D&transport=ws";
        let p = parse_sync_query(q).unwrap().unwrap();
        assert_eq!(p.store_id.as_str(), "store-ws-1795339968239");
        assert_eq!(p.transport, Transport::Ws);
        assert_eq!(p.payload, Some(json!({"authToken": "secret & ü/?="})));
    }

    #[test]
    fn payload_is_optional_and_plus_is_a_space() {
        let p = parse_sync_query("storeId=my+store&transport=http")
            .unwrap()
            .unwrap();
        assert_eq!(p.store_id.as_str(), "my store");
        assert_eq!(p.transport, Transport::Http);
        assert_eq!(p.payload, None);
    }

    #[test]
    fn no_sync_params_is_not_a_sync_request() {
        assert_eq!(parse_sync_query(""), Ok(None));
        assert_eq!(parse_sync_query("foo=bar"), Ok(None));
    }

    #[test]
    fn partial_or_bad_params_are_errors() {
        assert_eq!(
            parse_sync_query("transport=ws"),
            Err(QueryError::MissingStoreId)
        );
        assert_eq!(
            parse_sync_query("storeId=a"),
            Err(QueryError::MissingTransport)
        );
        assert_eq!(
            parse_sync_query("storeId=a&transport=sse"),
            Err(QueryError::UnknownTransport("sse".into()))
        );
        assert!(matches!(
            parse_sync_query("storeId=&transport=ws"),
            Err(QueryError::InvalidStoreId(StoreIdError::Empty))
        ));
        assert!(matches!(
            parse_sync_query("storeId=a&transport=ws&payload=%257Bnot"),
            Err(QueryError::InvalidPayload(_))
        ));
        assert!(matches!(
            parse_sync_query("storeId=a&transport=ws&payload=%25FF"),
            Err(QueryError::InvalidPayload(_))
        ));
    }

    #[test]
    fn first_value_wins() {
        let p = parse_sync_query("storeId=a&storeId=b&transport=ws&transport=http")
            .unwrap()
            .unwrap();
        assert_eq!(p.store_id.as_str(), "a");
        assert_eq!(p.transport, Transport::Ws);
    }
}
