//! The admin API and its dashboard (platform-free parts): routes, the bearer check, the JSON
//! shapes and errors. Behind `ADMIN_SECRET` (`Authorization: Bearer …`; off when unset):
//!
//! | method | path | what |
//! |---|---|---|
//! | `GET` | `/admin/` | the dashboard page (static; it asks for the secret) |
//! | `GET` | `/admin/api/stores?after=&limit=` | stores, in name order, a page at a time |
//! | `GET` | `/admin/api/stores/<storeId>` | a store's info |
//! | `GET` | `/admin/api/stores/<storeId>/events?after=&limit=` | its events as NDJSON, streamed |
//! | `GET` | `/admin/api/stores/<storeId>/stream?offset=&live=` | its log as a Durable Stream |
//! | `POST` | `/admin/api/stores/<storeId>/reset[?clear=true]` | a new backendId (and no events) |
//! | `DELETE` | `/admin/api/stores/<storeId>` | the store and everything it keeps |
//! | `GET` | `/admin/api/streams?after=&limit=` | Durable Streams, in path order |
//! | `GET`/`DELETE` | `/admin/api/streams/<path after /v1/stream/>` | a stream's info / delete it |
//!
//! Store ids are percent-encoded in paths, as in `/v1/livestore/<storeId>`.

pub mod auth;
pub mod model;
pub mod route;

/// The dashboard page: one file, no framework.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");
