//! The rules of the edge cache, platform-free: which stream reads the Worker may answer from its
//! cache (`caches.default`) without asking the stream's object, under which key, and which
//! answers it keeps.
//!
//! Only reads that name an offset qualify (catch-up and long-poll; never `offset=now`, SSE or
//! anything but `GET`), and only answers the object marks `public` are kept: a catch-up that
//! stops before the tail (immutable for its offset), a closed stream's last page, a long-poll
//! `200` (keyed by its cursor, as a CDN would). At-tail reads and `204`s are `no-cache` or
//! `no-store` and go to the object every time, so a reader always sees its own writes. Reads
//! that a token opened are keyed by the token's reach (its project and stream), and their
//! answers say `private` to anything in front.

use super::read::ReadQuery;
use crate::stream::offset::{parse_offset, ReadFrom};

/// The header that says how a read was answered.
pub const X_CACHE: &str = "x-cache";

/// How the edge answered a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// From the cache, without the object.
    Hit,
    /// Looked up, not there: the object answered (and the answer was kept if it may be).
    Miss,
    /// Not a read the cache serves.
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Bypass => "BYPASS",
        }
    }
}

/// The cache key of a read of the stream at `path` with `query`, or `None` when the read is not
/// one the cache serves. `scope` is the reach of the token that authorized it, if one did.
pub fn cache_key(method: &str, path: &str, query: &str, scope: Option<&str>) -> Option<String> {
    if method != "GET" {
        return None;
    }
    let ReadQuery {
        offsets,
        live,
        cursor,
    } = ReadQuery::parse(query);
    let [offset] = offsets.as_slice() else {
        return None;
    };
    match parse_offset(offset) {
        Ok(ReadFrom::Start | ReadFrom::At(_)) => {}
        Ok(ReadFrom::Now) | Err(_) => return None,
    }
    let mut key = form_urlencoded::Serializer::new(String::new());
    key.append_pair("offset", offset);
    match live.as_deref() {
        None | Some("") | Some("false") => {}
        Some("long-poll") => {
            key.append_pair("live", "long-poll");
            if let Some(cursor) = &cursor {
                key.append_pair("cursor", cursor);
            }
        }
        Some(_) => return None,
    }
    if let Some(scope) = scope {
        key.append_pair("scope", scope);
    }
    Some(format!("{}{}", key_prefix(path), key.finish()))
}

/// What every cache key of the stream at `path` starts with.
pub fn key_prefix(path: &str) -> String {
    format!("https://edge-cache.invalid{path}?")
}

/// Whether an answer of `status` with `cache_control` may be kept.
pub fn storable(status: u16, cache_control: Option<&str>) -> bool {
    status == 200
        && cache_control.is_some_and(|value| {
            value
                .split(',')
                .any(|directive| directive.trim().eq_ignore_ascii_case("public"))
        })
}

/// The `Cache-Control` an answer leaves the Worker with: a read a token authorized is `private`
/// to any cache in front, whatever the Worker's own cache did with it.
pub fn outgoing_cache_control(cache_control: &str, scoped: bool) -> Option<String> {
    if !scoped {
        return None;
    }
    let kept: Vec<&str> = cache_control
        .split(',')
        .map(str::trim)
        .filter(|d| !d.eq_ignore_ascii_case("public") && !d.is_empty())
        .collect();
    Some(if kept.is_empty() {
        "private".to_owned()
    } else {
        format!("private, {}", kept.join(", "))
    })
}

/// Whether `if_none_match` names `etag` (a list, or `*`).
pub fn not_modified(if_none_match: Option<&str>, etag: Option<&str>) -> bool {
    match (if_none_match, etag) {
        (Some(wanted), Some(etag)) => wanted
            .split(',')
            .map(str::trim)
            .any(|candidate| candidate == "*" || candidate == etag),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/v1/stream/a";

    #[test]
    fn only_reads_from_an_offset_have_a_key() {
        let key = |method, query| cache_key(method, PATH, query, None);
        assert_eq!(
            key("GET", "offset=-1").as_deref(),
            Some("https://edge-cache.invalid/v1/stream/a?offset=-1")
        );
        assert_eq!(
            key("GET", "cursor=9&offset=0000000000000000_0000000000000004&live=long-poll&x=1")
                .as_deref(),
            Some("https://edge-cache.invalid/v1/stream/a?offset=0000000000000000_0000000000000004&live=long-poll&cursor=9")
        );
        for (method, query) in [
            ("HEAD", "offset=-1"),
            ("POST", "offset=-1"),
            ("GET", ""),
            ("GET", "offset=now"),
            ("GET", "offset=-1&offset=-1"),
            ("GET", "offset=junk"),
            ("GET", "offset=-1&live=sse"),
            ("GET", "offset=-1&live=other"),
        ] {
            assert_eq!(key(method, query), None, "{method} {query}");
        }
    }

    #[test]
    fn a_token_scope_is_part_of_the_key() {
        let open = cache_key("GET", PATH, "offset=-1", None);
        let scoped = cache_key("GET", PATH, "offset=-1", Some("p:*"));
        let other = cache_key("GET", PATH, "offset=-1", Some("p:a"));
        assert_ne!(open, scoped);
        assert_ne!(scoped, other);
    }

    #[test]
    fn only_public_answers_are_kept() {
        assert!(storable(
            200,
            Some("public, max-age=60, stale-while-revalidate=300")
        ));
        assert!(storable(200, Some("max-age=20, Public")));
        assert!(!storable(200, Some("no-cache")));
        assert!(!storable(200, Some("no-store")));
        assert!(!storable(200, None));
        assert!(!storable(204, Some("public, max-age=20")));
        assert!(!storable(304, Some("public, max-age=60")));
    }

    #[test]
    fn scoped_answers_leave_private() {
        assert_eq!(
            outgoing_cache_control("public, max-age=60", true).as_deref(),
            Some("private, max-age=60")
        );
        assert_eq!(
            outgoing_cache_control("public", true).as_deref(),
            Some("private")
        );
        assert_eq!(outgoing_cache_control("public, max-age=60", false), None);
    }

    #[test]
    fn if_none_match_names_the_etag() {
        assert!(not_modified(Some("\"a\""), Some("\"a\"")));
        assert!(not_modified(Some("\"b\", \"a\""), Some("\"a\"")));
        assert!(not_modified(Some("*"), Some("\"a\"")));
        assert!(!not_modified(Some("\"b\""), Some("\"a\"")));
        assert!(!not_modified(None, Some("\"a\"")));
        assert!(!not_modified(Some("\"a\""), None));
    }
}
