//! Durable Streams offsets (`offset` query, `Stream-Fork-Offset`): parsing never panics,
//! every accepted position prints in the canonical form that parses back to itself, and
//! printed offsets sort as their positions do.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use livestore_sync_rs::stream::offset::{parse_offset, Offset, ReadFrom};

fuzz_target!(|data: &[u8]| {
    let mut positions = Vec::new();
    for text in common::parts(data).filter_map(common::text).take(2) {
        match parse_offset(text) {
            Ok(ReadFrom::At(offset)) => {
                let printed = offset.to_string();
                assert_eq!(printed.len(), 33, "{printed}");
                assert_eq!(parse_offset(&printed), Ok(ReadFrom::At(offset)));
                positions.push(offset);
            }
            Ok(ReadFrom::Start) => assert_eq!(text, "-1"),
            Ok(ReadFrom::Now) => assert_eq!(text, "now"),
            Err(_) => {}
        }
    }
    if let [a, b] = positions[..] {
        assert_eq!(a.cmp(&b), a.to_string().cmp(&b.to_string()));
        assert_eq!(a.cmp(&b), a.0.get().cmp(&b.0.get()));
    }
    let _ = Offset::START;
});
