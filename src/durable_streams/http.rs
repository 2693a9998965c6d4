//! A request's parts as the protocol reads them, and the response it answers with (before the
//! edge adds the headers every stream response carries).

use std::collections::BTreeMap;

/// The parts of a request the protocol looks at.
pub struct Request<'a> {
    pub method: &'a str,
    /// The stream's URL without query (for `Location`).
    pub url: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    /// Headers with lowercase names.
    pub headers: &'a BTreeMap<String, String>,
    pub body: &'a [u8],
}

impl Request<'_> {
    /// The value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A plain-text error.
    pub fn error(status: u16, message: impl Into<String>) -> Response {
        Response::new(status)
            .header("content-type", "text/plain; charset=utf-8")
            .with_body(message.into().into_bytes())
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: Vec<u8>) -> Response {
        self.body = body;
        self
    }

    /// The first value of header `name` (lowercase).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// 404.
pub fn not_found() -> Response {
    Response::error(404, "stream not found")
}

/// 410.
pub fn gone() -> Response {
    Response::error(410, "stream was deleted")
}
