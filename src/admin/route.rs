//! What an admin request asks for, from its method, path and query.

use super::model::AdminError;
use crate::livestore::store_id::StoreId;
use crate::stream::SeqNum;
use percent_encoding::percent_decode_str;

/// Where the dashboard and the API live.
pub const ADMIN_PREFIX: &str = "/admin";
const API: &str = "/admin/api/";
/// Items per list page unless `limit` says otherwise, and the most a page takes.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1_000;

/// An admin request.
#[derive(Debug, Clone, PartialEq)]
pub enum AdminRoute {
    /// `/admin` → `/admin/`.
    Redirect,
    /// The dashboard page.
    Dashboard,
    ListStores(ListQuery),
    StoreInfo(StoreId),
    /// Events after `after`, at most `limit` (all without one), as NDJSON.
    StoreEvents {
        store_id: StoreId,
        after: SeqNum,
        limit: Option<u64>,
    },
    /// The store's log as a Durable Stream (the `/v1/livestore/` read protocol, ungated).
    StoreStream(StoreId),
    ResetStore {
        store_id: StoreId,
        clear: bool,
    },
    DeleteStore(StoreId),
    ListStreams(ListQuery),
    /// A stream, by its full path (`/v1/stream/…`).
    StreamInfo(String),
    DeleteStream(String),
    /// What this isolate has served since it started.
    Usage,
}

impl AdminRoute {
    /// Whether the route needs the admin secret (everything but the page itself).
    pub fn needs_secret(&self) -> bool {
        !matches!(self, AdminRoute::Redirect | AdminRoute::Dashboard)
    }
}

/// A list page: items whose key comes after `after`, at most `limit`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListQuery {
    pub after: Option<String>,
    pub limit: usize,
}

/// Whether `path` belongs to the admin API or its page.
pub fn is_admin_path(path: &str) -> bool {
    path == ADMIN_PREFIX || path.starts_with("/admin/")
}

/// The route of an admin request (`path` must satisfy [`is_admin_path`]).
pub fn parse(method: &str, path: &str, query: &str) -> Result<AdminRoute, AdminError> {
    if path == ADMIN_PREFIX {
        return Ok(AdminRoute::Redirect);
    }
    if path == "/admin/" || path == "/admin/index.html" {
        return only(method, "GET", AdminRoute::Dashboard);
    }
    let Some(rest) = path.strip_prefix(API) else {
        return Err(AdminError::not_found("no such admin page"));
    };
    let params = Params::new(query);
    if rest == "stores" {
        return only(method, "GET", AdminRoute::ListStores(params.list()?));
    }
    if rest == "usage" {
        return only(method, "GET", AdminRoute::Usage);
    }
    if rest == "streams" {
        return only(method, "GET", AdminRoute::ListStreams(params.list()?));
    }
    if let Some(stream) = rest.strip_prefix("streams/") {
        if stream.is_empty() {
            return Err(AdminError::bad_request("no stream path"));
        }
        let path = format!("/v1/stream/{stream}");
        return match method {
            "GET" => Ok(AdminRoute::StreamInfo(path)),
            "DELETE" => Ok(AdminRoute::DeleteStream(path)),
            _ => Err(AdminError::method_not_allowed("GET or DELETE")),
        };
    }
    let Some(store) = rest.strip_prefix("stores/") else {
        return Err(AdminError::not_found("no such admin API path"));
    };
    let (encoded, action) = store.split_once('/').unwrap_or((store, ""));
    let store_id = store_id(encoded)?;
    match action {
        "" => match method {
            "GET" => Ok(AdminRoute::StoreInfo(store_id)),
            "DELETE" => Ok(AdminRoute::DeleteStore(store_id)),
            _ => Err(AdminError::method_not_allowed("GET or DELETE")),
        },
        "events" => {
            let after = match params.get("after") {
                Some(after) => after
                    .parse::<u64>()
                    .ok()
                    .and_then(SeqNum::new)
                    .ok_or_else(|| AdminError::bad_request("after must be a sequence number"))?,
                None => SeqNum::ROOT,
            };
            let limit = params
                .get("limit")
                .map(|l| {
                    l.parse::<u64>()
                        .ok()
                        .filter(|l| *l > 0)
                        .ok_or_else(|| AdminError::bad_request("limit must be a positive integer"))
                })
                .transpose()?;
            only(
                method,
                "GET",
                AdminRoute::StoreEvents {
                    store_id,
                    after,
                    limit,
                },
            )
        }
        "stream" => match method {
            "GET" | "HEAD" => Ok(AdminRoute::StoreStream(store_id)),
            _ => Err(AdminError::method_not_allowed("GET or HEAD")),
        },
        "reset" => {
            let clear = match params.get("clear") {
                None | Some("false") => false,
                Some("true") => true,
                Some(_) => return Err(AdminError::bad_request("clear must be true or false")),
            };
            only(method, "POST", AdminRoute::ResetStore { store_id, clear })
        }
        _ => Err(AdminError::not_found("no such store action")),
    }
}

fn only(method: &str, allowed: &str, route: AdminRoute) -> Result<AdminRoute, AdminError> {
    if method == allowed || (allowed == "GET" && method == "HEAD") {
        Ok(route)
    } else {
        Err(AdminError::method_not_allowed(allowed))
    }
}

fn store_id(encoded: &str) -> Result<StoreId, AdminError> {
    let decoded = percent_decode_str(encoded)
        .decode_utf8()
        .map_err(|_| AdminError::bad_request("the store id is not UTF-8 once percent-decoded"))?;
    StoreId::parse(&decoded).map_err(|e| AdminError::bad_request(format!("invalid storeId: {e}")))
}

struct Params(Vec<(String, String)>);

impl Params {
    fn new(query: &str) -> Self {
        Params(
            form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn list(&self) -> Result<ListQuery, AdminError> {
        let limit = match self.get("limit") {
            None => DEFAULT_LIMIT,
            Some(limit) => limit
                .parse::<usize>()
                .ok()
                .filter(|l| (1..=MAX_LIMIT).contains(l))
                .ok_or_else(|| {
                    AdminError::bad_request(format!("limit must be 1 to {MAX_LIMIT}"))
                })?,
        };
        let after = self
            .get("after")
            .filter(|a| !a.is_empty())
            .map(str::to_owned);
        Ok(ListQuery { after, limit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> StoreId {
        StoreId::parse(s).unwrap()
    }

    #[test]
    fn pages_and_lists() {
        assert_eq!(parse("GET", "/admin", ""), Ok(AdminRoute::Redirect));
        assert_eq!(parse("GET", "/admin/", ""), Ok(AdminRoute::Dashboard));
        assert_eq!(
            parse("GET", "/admin/api/stores", "after=b&limit=5"),
            Ok(AdminRoute::ListStores(ListQuery {
                after: Some("b".into()),
                limit: 5
            }))
        );
        assert_eq!(
            parse("GET", "/admin/api/streams", ""),
            Ok(AdminRoute::ListStreams(ListQuery {
                after: None,
                limit: DEFAULT_LIMIT
            }))
        );
        assert_eq!(parse("GET", "/admin/api/usage", ""), Ok(AdminRoute::Usage));
        assert!(AdminRoute::Usage.needs_secret());
        assert_eq!(
            parse("POST", "/admin/api/usage", "").unwrap_err().status,
            405
        );
        for limit in ["0", "1001", "x"] {
            let e = parse("GET", "/admin/api/stores", &format!("limit={limit}")).unwrap_err();
            assert_eq!(e.status, 400);
        }
    }

    #[test]
    fn store_routes_decode_the_id() {
        assert_eq!(
            parse("GET", "/admin/api/stores/a%2Fb%20c", ""),
            Ok(AdminRoute::StoreInfo(id("a/b c")))
        );
        assert_eq!(
            parse("DELETE", "/admin/api/stores/s", ""),
            Ok(AdminRoute::DeleteStore(id("s")))
        );
        assert_eq!(
            parse("GET", "/admin/api/stores/s/events", "after=4&limit=10"),
            Ok(AdminRoute::StoreEvents {
                store_id: id("s"),
                after: SeqNum::new(4).unwrap(),
                limit: Some(10)
            })
        );
        assert_eq!(
            parse("POST", "/admin/api/stores/s/reset", "clear=true"),
            Ok(AdminRoute::ResetStore {
                store_id: id("s"),
                clear: true
            })
        );
        assert_eq!(
            parse("GET", "/admin/api/stores/s/stream", "offset=-1&live=sse"),
            Ok(AdminRoute::StoreStream(id("s")))
        );
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let cases = [
            ("GET", "/admin/api/stores/s/reset", "", 405),
            ("POST", "/admin/api/stores/s", "", 405),
            ("GET", "/admin/api/stores/%ff", "", 400),
            ("GET", "/admin/api/stores/a%01", "", 400),
            ("GET", "/admin/api/stores/s/events", "after=-1", 400),
            ("GET", "/admin/api/stores/s/events", "limit=0", 400),
            ("POST", "/admin/api/stores/s/reset", "clear=yes", 400),
            ("GET", "/admin/api/stores/s/nope", "", 404),
            ("GET", "/admin/api/nope", "", 404),
            ("GET", "/admin/api/streams/", "", 400),
            ("PUT", "/admin/api/streams/a", "", 405),
        ];
        for (method, path, query, status) in cases {
            let e = parse(method, path, query).unwrap_err();
            assert_eq!(e.status, status, "{method} {path}?{query}: {e:?}");
        }
    }

    #[test]
    fn streams_by_their_full_path() {
        assert_eq!(
            parse("GET", "/admin/api/streams/a/b", ""),
            Ok(AdminRoute::StreamInfo("/v1/stream/a/b".into()))
        );
        assert_eq!(
            parse("DELETE", "/admin/api/streams/a", ""),
            Ok(AdminRoute::DeleteStream("/v1/stream/a".into()))
        );
        assert!(!AdminRoute::Dashboard.needs_secret());
        assert!(AdminRoute::StreamInfo("/v1/stream/a".into()).needs_secret());
    }
}
