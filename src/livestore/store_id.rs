//! Store ids and the event-log table names derived from them.
//!
//! The rule, for ids from the network:
//! - A store id is 1 to [`MAX_STORE_ID_BYTES`] bytes of UTF-8 without control characters;
//!   anything else is refused before any storage is touched.
//! - Its table is `eventlog_7_` plus the id with every UTF-16 unit outside `[A-Za-z0-9]`
//!   replaced by `_`, as in the TypeScript server (so both read the same tables). A table
//!   name therefore only ever holds `[A-Za-z0-9_]` and cannot break out of an SQL statement.
//! - Sanitizing is not one-to-one (`a-b`, `a_b`), and SQLite treats table names that differ
//!   only in ASCII case (`A`, `a`) as one table. Where tables are shared (D1), the first store
//!   to claim a name, compared ignoring case, owns it and every other id that maps to it is
//!   refused (`livestore_table_owners`): two stores never share a log. With DO SQLite every
//!   store has its own database, so ids never meet.

use std::fmt;

/// Longest accepted store id, in bytes. Table names stay well under SQLite's limits and
/// the id fits comfortably in a WebSocket attachment.
pub const MAX_STORE_ID_BYTES: usize = 256;

/// A validated store id: non-empty, at most [`MAX_STORE_ID_BYTES`], no control characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoreId(String);

/// Why a store id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreIdError {
    #[error("storeId must not be empty")]
    Empty,
    #[error("storeId is longer than {MAX_STORE_ID_BYTES} bytes")]
    TooLong,
    #[error("storeId must not contain control characters")]
    ControlCharacter,
}

impl StoreId {
    /// Validates a store id.
    pub fn parse(raw: &str) -> Result<StoreId, StoreIdError> {
        if raw.is_empty() {
            Err(StoreIdError::Empty)
        } else if raw.len() > MAX_STORE_ID_BYTES {
            Err(StoreIdError::TooLong)
        } else if raw.chars().any(char::is_control) {
            Err(StoreIdError::ControlCharacter)
        } else {
            Ok(StoreId(raw.to_owned()))
        }
    }

    /// The id as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The event-log table name, exactly as the TypeScript server derives it:
    /// `eventlog_7_` followed by the id with every UTF-16 code unit outside `[a-zA-Z0-9]`
    /// replaced by `_` (so a character outside the BMP becomes `__`).
    ///
    /// Different ids can share a name (`a-b`, `a_b`, and `A`, `a` for SQLite); the D1 engine
    /// detects that and refuses the second store rather than merging two logs.
    pub fn table_name(&self) -> String {
        let mut name = format!("eventlog_{}_", super::PERSISTENCE_FORMAT_VERSION);
        for c in self.0.chars() {
            if c.is_ascii_alphanumeric() {
                name.push(c);
            } else {
                for _ in 0..c.len_utf16() {
                    name.push('_');
                }
            }
        }
        name
    }
}

impl fmt::Display for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(id: &str) -> String {
        StoreId::parse(id).unwrap().table_name()
    }

    #[test]
    fn sanitizes_like_the_typescript_server() {
        assert_eq!(table("abc123"), "eventlog_7_abc123");
        assert_eq!(
            table("store-ws-1795339968239"),
            "eventlog_7_store_ws_1795339968239"
        );
        assert_eq!(table("a b.c/d"), "eventlog_7_a_b_c_d");
        // é is one UTF-16 unit, 😀 is two.
        assert_eq!(table("é😀x"), "eventlog_7____x");
        assert_eq!(table("a-b"), table("a_b"));
    }

    #[test]
    fn table_names_are_safe_sql_identifiers() {
        for id in ["x\"; DROP TABLE t; --", "'", "`", "[x]", "ü"] {
            let name = table(id);
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{name}"
            );
        }
    }

    #[test]
    fn refuses_bad_ids() {
        assert_eq!(StoreId::parse(""), Err(StoreIdError::Empty));
        assert_eq!(StoreId::parse(&"x".repeat(257)), Err(StoreIdError::TooLong));
        assert!(StoreId::parse(&"x".repeat(256)).is_ok());
        assert_eq!(StoreId::parse("a\nb"), Err(StoreIdError::ControlCharacter));
    }
}
