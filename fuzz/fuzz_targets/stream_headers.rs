//! Durable Streams request headers and their companions: `Stream-TTL`, `Stream-Expires-At`
//! (RFC 3339), `Stream-Closed`, `Content-Type`, `Stream-Seq`, `Stream-Cursor`, plus the SSE
//! framing and base64 that carry message data out. Never panics; parsed timestamps print
//! and parse back; SSE data cannot end its event early; base64 round-trips.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use livestore_sync_rs::durable_streams::bridge::{decode_frame, encode_frame, Position};
use livestore_sync_rs::durable_streams::cursor::{next_cursor, parse_cursor, CURSOR_EPOCH_MS};
use livestore_sync_rs::durable_streams::headers::{
    format_rfc3339_ms, is_closed_flag, needs_base64, normalize_content_type, parse_expiry,
    parse_rfc3339_ms, Expiry,
};
use livestore_sync_rs::durable_streams::sse::{base64_decode, base64_encode, data_event};
use livestore_sync_rs::stream::condition::stream_seq_advances;
use livestore_sync_rs::stream::seq::MAX_SAFE_INTEGER;

/// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z: the years RFC 3339 prints.
const FIRST_MS: i64 = -62_167_219_200_000;
const LAST_MS: i64 = 253_402_300_799_999;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let parts: Vec<&[u8]> = common::parts(rest).collect();
    let text = |i: usize| parts.get(i).and_then(|p| common::text(p));
    let a = text(0).unwrap_or_default();
    let b = text(1).unwrap_or_default();

    let ttl = (flags & 1 != 0).then_some(a);
    let expires = (flags & 2 != 0).then_some(b);
    match parse_expiry(ttl, expires) {
        Ok(Expiry::Ttl { seconds }) => assert!(seconds <= MAX_SAFE_INTEGER),
        Ok(Expiry::At { unix_ms }) => assert_eq!(parse_rfc3339_ms(b), Some(unix_ms)),
        Ok(Expiry::None) => assert!(ttl.is_none() && expires.is_none()),
        Err(_) => {}
    }
    for candidate in [a, b] {
        if let Some(ms) = parse_rfc3339_ms(candidate) {
            if (FIRST_MS..=LAST_MS).contains(&ms) {
                let printed = format_rfc3339_ms(ms);
                assert_eq!(
                    parse_rfc3339_ms(&printed),
                    Some(ms),
                    "{candidate} -> {printed}"
                );
            }
        }
    }
    let mut raw_ms = [0u8; 8];
    for (slot, byte) in raw_ms.iter_mut().zip(rest) {
        *slot = *byte;
    }
    let any_ms = i64::from_le_bytes(raw_ms);
    let printed = format_rfc3339_ms(any_ms);
    if (FIRST_MS..=LAST_MS).contains(&any_ms) {
        assert_eq!(parse_rfc3339_ms(&printed), Some(any_ms), "{printed}");
    }

    let _ = is_closed_flag(Some(a));
    let content_type = normalize_content_type(a);
    assert_eq!(normalize_content_type(&content_type), content_type);
    let _ = needs_base64(&content_type);
    assert!(!(stream_seq_advances(Some(a), b) && stream_seq_advances(Some(b), a)));

    let now_ms = (any_ms as u64).wrapping_add(CURSOR_EPOCH_MS);
    let cursor = next_cursor(now_ms, parse_cursor(a));
    if let Ok(sent) = a.parse::<u64>() {
        assert_ne!(
            cursor, sent,
            "the cursor a client sent must never be echoed"
        );
    }

    // The bridge's attachments and frames: what parses prints back the same.
    if let Some(at) = Position::from_attachment(a) {
        assert_eq!(Position::from_attachment(&at.to_attachment()), Some(at));
    }
    if let Some((next, events)) = decode_frame(a) {
        assert_eq!(
            decode_frame(&encode_frame(next, events)),
            Some((next, events))
        );
    }

    let event = data_event(a);
    let body = event
        .strip_suffix("\n\n")
        .unwrap_or_else(|| panic!("{event:?}"));
    assert!(!body.contains('\r') && !body.contains("\n\n"), "{event:?}");
    assert!(body.lines().skip(1).all(|line| line.starts_with("data:")));

    let encoded = base64_encode(rest);
    assert_eq!(base64_decode(&encoded).as_deref(), Some(rest));
    if let Some(decoded) = base64_decode(b) {
        assert_eq!(base64_encode(&decoded).len(), b.len());
    }
});
