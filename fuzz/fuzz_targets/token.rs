//! The token decoder: any input is refused or verified without panicking; what verifies was
//! signed with one of the keys (a mutated token never does), and a verified token's claims sign
//! back to a token that verifies to the same claims.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use livestore_sync_rs::auth::token::{sign, verify};

const KEYS: [&str; 2] = [
    "fuzz-key-one-0123456789abcdef0123",
    "fuzz-key-two-0123456789abcdef0123",
];

fuzz_target!(|data: &[u8]| {
    let keys: Vec<String> = KEYS.iter().map(|k| k.to_string()).collect();
    let mut parts = common::parts(data).filter_map(common::text);
    let Some(token) = parts.next() else {
        return;
    };
    let now = 1_000;
    if let Ok(claims) = verify(token, &keys, now) {
        assert!(claims.exp > now);
        let resigned = sign(&claims, KEYS[0]).expect("HMAC takes any key");
        assert_eq!(verify(&resigned, &keys, now), Ok(claims.clone()));
        // Flipping any one character of a verified token breaks it (or leaves it meaning the
        // same: base64url's last character can carry unused bits).
        for i in 0..token.len() {
            if !token.is_char_boundary(i) || !token.is_char_boundary(i + 1) {
                continue;
            }
            let mut bytes = token.as_bytes().to_vec();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            if let Ok(mutated) = std::str::from_utf8(&bytes) {
                if let Ok(other) = verify(mutated, &keys, now) {
                    assert_eq!(other, claims, "a mutated token verified to other claims");
                }
            }
        }
    }
});
