//! Store ids and their event-log table names: validation is exactly the documented rule,
//! a table name only ever holds `[A-Za-z0-9_]` and equals the TypeScript server's, and two
//! ids share a table name only in the documented ways.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use livestore_sync_rs::livestore::store_id::{StoreId, MAX_STORE_ID_BYTES};

const PREFIX: &str = "eventlog_7_";

fuzz_target!(|data: &[u8]| {
    let mut ids = common::parts(data).filter_map(common::text);
    let (Some(a), b) = (ids.next(), ids.next()) else {
        return;
    };
    let a = check(a);
    if let (Some(a), Some(b)) = (a, b.and_then(check)) {
        // Tables are shared exactly when SQLite sees one name: equal ignoring ASCII case.
        let same_table = a.table_name().eq_ignore_ascii_case(&b.table_name());
        assert_eq!(same_table, same_sanitized(a.as_str(), b.as_str()));
    }
});

/// Validates one id and the invariants of its table name.
fn check(raw: &str) -> Option<StoreId> {
    let valid =
        !raw.is_empty() && raw.len() <= MAX_STORE_ID_BYTES && !raw.chars().any(char::is_control);
    let Ok(id) = StoreId::parse(raw) else {
        assert!(!valid, "refused a valid id {raw:?}");
        return None;
    };
    assert!(valid, "accepted an invalid id {raw:?}");
    let table = id.table_name();
    assert!(
        table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "{table}"
    );
    // `storeId.replaceAll(/[^a-zA-Z0-9]/g, '_')`: JavaScript works on UTF-16 units.
    let js: String = raw
        .encode_utf16()
        .map(|unit| match u8::try_from(unit) {
            Ok(b) if b.is_ascii_alphanumeric() => char::from(b),
            _ => '_',
        })
        .collect();
    assert_eq!(table, format!("{PREFIX}{js}"));
    Some(id)
}

/// The collision classes, spelled out: per UTF-16 unit, both are letters or digits equal
/// ignoring case, or both are something else.
fn same_sanitized(a: &str, b: &str) -> bool {
    let class = |unit: u16| match u8::try_from(unit) {
        Ok(b) if b.is_ascii_alphanumeric() => Some(b.to_ascii_lowercase()),
        _ => None,
    };
    a.encode_utf16().map(class).eq(b.encode_utf16().map(class))
}
