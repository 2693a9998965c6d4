//! Assembly of `PullResponse` values: at most [`MAX_EVENTS_PER_RESPONSE`] events and at most
//! [`MAX_RESPONSE_BYTES`] of JSON each (the client's and Cloudflare's message limits).
//!
//! Each event is encoded once; a response's size is the sum of its parts, so splitting is
//! linear in the number of events.

use super::wire::PageInfo;

/// Most events in one `PullResponse`.
pub const MAX_EVENTS_PER_RESPONSE: usize = 100;
/// Most bytes of JSON in one `PullResponse`.
pub const MAX_RESPONSE_BYTES: usize = 900_000;

const BATCH_OPEN: &str = r#"{"batch":["#;
const PAGE_INFO_KEY: &str = r#"],"pageInfo":"#;
const BACKEND_ID_KEY: &str = r#","backendId":"#;
/// The longest `pageInfo` there can be (largest safe `remaining`).
const LONGEST_PAGE_INFO: &str = r#"{"_tag":"MoreKnown","remaining":9007199254740991}"#;

/// One encoded `PullResponse` and how many events it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullPage {
    /// The `PullResponse` JSON.
    pub json: String,
    /// Number of events in its batch.
    pub events: usize,
}

/// Splits a sequence of encoded batch items into `PullResponse` JSON values.
pub struct ResponseBuilder {
    backend_id_json: String,
    /// Total events this sequence will carry, for `MoreKnown.remaining`; `None` makes every
    /// response `NoMore` (live broadcasts).
    total: Option<u64>,
    emitted: u64,
    items: Vec<String>,
    items_bytes: usize,
}

impl ResponseBuilder {
    /// A catch-up of exactly `total` events: responses count `remaining` down, the last one
    /// is `NoMore`.
    pub fn catch_up(backend_id: &str, total: u64) -> Self {
        Self::new(backend_id, Some(total))
    }

    /// Live updates: every response is `NoMore`.
    pub fn live(backend_id: &str) -> Self {
        Self::new(backend_id, None)
    }

    fn new(backend_id: &str, total: Option<u64>) -> Self {
        ResponseBuilder {
            backend_id_json: serde_json::to_string(backend_id).unwrap_or_default(),
            total,
            emitted: 0,
            items: Vec::new(),
            items_bytes: 0,
        }
    }

    /// Largest batch item that fits in a response on its own.
    pub fn max_item_bytes(&self) -> usize {
        MAX_RESPONSE_BYTES.saturating_sub(self.overhead())
    }

    fn overhead(&self) -> usize {
        BATCH_OPEN.len()
            + PAGE_INFO_KEY.len()
            + LONGEST_PAGE_INFO.len()
            + BACKEND_ID_KEY.len()
            + self.backend_id_json.len()
            + 1
    }

    /// Adds an item, emitting the current response first if the item would not fit in it.
    pub fn push(&mut self, item: String, emit: &mut impl FnMut(PullPage)) {
        let separator = usize::from(!self.items.is_empty());
        let full = self.items.len() >= MAX_EVENTS_PER_RESPONSE
            || self.overhead() + self.items_bytes + separator + item.len() > MAX_RESPONSE_BYTES;
        if full && !self.items.is_empty() {
            let remaining = self
                .total
                .map(|total| total.saturating_sub(self.emitted + self.items.len() as u64));
            let page_info = match remaining {
                Some(remaining) if remaining > 0 => PageInfo::MoreKnown { remaining },
                _ => PageInfo::NoMore,
            };
            emit(self.take(page_info));
        }
        self.items_bytes += usize::from(!self.items.is_empty()) + item.len();
        self.items.push(item);
    }

    /// Emits the last response (`NoMore`). A catch-up with no events emits one empty response.
    pub fn finish(mut self, emit: &mut impl FnMut(PullPage)) {
        if !self.items.is_empty() || (self.total.is_some() && self.emitted == 0) {
            emit(self.take(PageInfo::NoMore));
        }
    }

    fn take(&mut self, page_info: PageInfo) -> PullPage {
        let page_info = page_info.to_json();
        let mut out = String::with_capacity(
            self.overhead() + self.items_bytes - LONGEST_PAGE_INFO.len() + page_info.len(),
        );
        out.push_str(BATCH_OPEN);
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(item);
        }
        out.push_str(PAGE_INFO_KEY);
        out.push_str(&page_info);
        out.push_str(BACKEND_ID_KEY);
        out.push_str(&self.backend_id_json);
        out.push('}');
        let events = self.items.len();
        self.emitted += events as u64;
        self.items.clear();
        self.items_bytes = 0;
        PullPage { json: out, events }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn item(n: usize, pad: usize) -> String {
        json!({"n": n, "pad": "x".repeat(pad)}).to_string()
    }

    fn run(builder: ResponseBuilder, items: Vec<String>) -> Vec<Value> {
        let mut builder = builder;
        let mut out = Vec::new();
        let mut emit = |page: PullPage| {
            let len = page.json.len();
            assert!(len <= MAX_RESPONSE_BYTES, "response of {len} bytes");
            let value = serde_json::from_str::<Value>(&page.json).unwrap();
            assert_eq!(value["batch"].as_array().unwrap().len(), page.events);
            out.push(value);
        };
        for i in items {
            builder.push(i, &mut emit);
        }
        builder.finish(&mut emit);
        out
    }

    fn sizes(responses: &[Value]) -> Vec<usize> {
        responses
            .iter()
            .map(|r| r["batch"].as_array().unwrap().len())
            .collect()
    }

    #[test]
    fn empty_catch_up_is_one_empty_no_more() {
        let r = run(ResponseBuilder::catch_up("B", 0), vec![]);
        assert_eq!(
            r,
            vec![json!({"batch":[],"pageInfo":{"_tag":"NoMore"},"backendId":"B"})]
        );
    }

    #[test]
    fn splits_by_count_and_counts_remaining_down() {
        let items: Vec<String> = (0..250).map(|n| item(n, 10)).collect();
        let r = run(ResponseBuilder::catch_up("B", 250), items);
        assert_eq!(sizes(&r), vec![100, 100, 50]);
        assert_eq!(
            r[0]["pageInfo"],
            json!({"_tag":"MoreKnown","remaining":150})
        );
        assert_eq!(r[1]["pageInfo"], json!({"_tag":"MoreKnown","remaining":50}));
        assert_eq!(r[2]["pageInfo"], json!({"_tag":"NoMore"}));
        let ns: Vec<u64> = r
            .iter()
            .flat_map(|r| {
                r["batch"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["n"].as_u64().unwrap())
            })
            .collect();
        assert_eq!(ns, (0..250).collect::<Vec<_>>());
    }

    #[test]
    fn splits_by_bytes() {
        // 20 kB events: 44 fit in 900 kB, as the TypeScript server splits them.
        let items: Vec<String> = (0..120).map(|n| item(n, 20_000)).collect();
        let r = run(
            ResponseBuilder::catch_up("V4bqjYhXdNWYzB-ejyWfx", 120),
            items,
        );
        assert_eq!(sizes(&r), vec![44, 44, 32]);
        assert_eq!(r[0]["pageInfo"]["remaining"], json!(76));
    }

    #[test]
    fn an_item_of_the_maximum_size_fits_alone() {
        let builder = ResponseBuilder::catch_up("B", 3);
        let max = builder.max_item_bytes();
        let big = |n: usize| {
            let s = item(n, 0);
            let pad = max - s.len();
            item(n, pad)
        };
        let items = vec![big(0), item(1, 5), big(2)];
        assert!(items.iter().all(|i| i.len() <= max));
        let r = run(builder, items);
        assert_eq!(sizes(&r), vec![1, 1, 1]);
    }

    #[test]
    fn live_responses_are_all_no_more() {
        let items: Vec<String> = (0..150).map(|n| item(n, 1)).collect();
        let r = run(ResponseBuilder::live("B"), items);
        assert_eq!(sizes(&r), vec![100, 50]);
        assert!(r.iter().all(|r| r["pageInfo"] == json!({"_tag":"NoMore"})));
        assert!(run(ResponseBuilder::live("B"), vec![]).is_empty());
    }
}
