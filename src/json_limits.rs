//! Limits on JSON that comes from the network.
//!
//! - Nesting: serde_json gives up typed parsing at 128 levels, but values kept as raw text
//!   (event `args`, Durable Streams JSON messages, fields the decoders skip) are passed over
//!   without any limit. Such values would be stored and handed to clients whose parsers may
//!   give up on them (or overflow their stacks), so they are refused up front, with the same
//!   bound.
//! - Array lengths: arrays whose length is capped are refused as soon as they pass the cap,
//!   before the rest is parsed and collected.

use serde::de::{Deserialize, Deserializer, Error as _, SeqAccess, Visitor};
use std::marker::PhantomData;

/// Deepest nesting of arrays and objects accepted in a request's JSON: serde_json's own
/// recursion limit (it parses up to 127 levels into typed values and refuses the 128th).
pub const MAX_JSON_DEPTH: usize = 128;

/// Whether the arrays and objects of `json` nest deeper than `limit`. A linear scan without
/// recursion or allocation; meant for text already known to be valid JSON (for anything
/// else the answer is meaningless, but still computed in bounded time and memory).
pub fn nests_deeper_than(json: &str, limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Deserializes an array into a `Vec`, failing with `too_long` once it has more than `max`
/// items.
pub fn bounded_vec<'de, D, T>(d: D, max: usize, too_long: &str) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Bounded<'m, T> {
        max: usize,
        too_long: &'m str,
        item: PhantomData<T>,
    }
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Bounded<'_, T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "an array of at most {} items", self.max)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element()? {
                if items.len() == self.max {
                    return Err(A::Error::custom(self.too_long));
                }
                items.push(item);
            }
            Ok(items)
        }
    }
    d.deserialize_seq(Bounded {
        max,
        too_long,
        item: PhantomData,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn counts_arrays_and_objects_but_not_strings() {
        assert!(!nests_deeper_than("1", 0));
        assert!(nests_deeper_than("[]", 0));
        assert!(!nests_deeper_than(r#"{"a":[{"b":[]}]}"#, 4));
        assert!(nests_deeper_than(r#"{"a":[{"b":[]}]}"#, 3));
        assert!(!nests_deeper_than(r#"["[[[[{{{{", "\"[[[", "\\"]"#, 1));
        assert!(nests_deeper_than(r#"["\\", ["x"]]"#, 1));
        assert!(!nests_deeper_than(&nested(MAX_JSON_DEPTH), MAX_JSON_DEPTH));
        assert!(nests_deeper_than(
            &nested(MAX_JSON_DEPTH + 1),
            MAX_JSON_DEPTH
        ));
        assert!(!nests_deeper_than("[][][][]", 1), "siblings do not add up");
    }

    #[test]
    fn bounded_arrays_stop_at_their_cap() {
        let parse = |json: &str| {
            bounded_vec::<_, u8>(&mut serde_json::Deserializer::from_str(json), 2, "too long")
                .map_err(|e| e.to_string())
        };
        assert_eq!(parse("[1,2]"), Ok(vec![1, 2]));
        assert!(parse("[1,2,3]").is_err_and(|e| e.starts_with("too long")));
        // The cap is hit before the bad item after it is even looked at.
        assert!(parse(r#"[1,2,3,"x"]"#).is_err_and(|e| e.starts_with("too long")));
        assert!(parse(r#"[1,"x"]"#).is_err_and(|e| !e.starts_with("too long")));
    }

    #[test]
    fn typed_parsing_stops_at_the_same_bound() {
        // Whatever serde_json parses into a tree is within the limit; it stops at the limit.
        for depth in [
            1,
            100,
            MAX_JSON_DEPTH - 1,
            MAX_JSON_DEPTH,
            MAX_JSON_DEPTH + 1,
            10_000,
        ] {
            let text = nested(depth);
            let parsed = serde_json::from_str::<serde_json::Value>(&text).is_ok();
            assert_eq!(parsed, depth < MAX_JSON_DEPTH, "{depth}");
            assert_eq!(
                nests_deeper_than(&text, MAX_JSON_DEPTH),
                depth > MAX_JSON_DEPTH
            );
        }
    }
}
