//! CORS for the sync endpoint: preflight answers and the header every response carries.
//! (`@livestore/sync-cf` answers preflights but forgets the header on actual responses.)

/// The header added to every response when CORS is enabled.
pub const ALLOW_ORIGIN: (&str, &str) = ("Access-Control-Allow-Origin", "*");

/// Headers of a preflight answer (status 204). Echoes the requested headers, since the
/// LiveStore HTTP client sends tracing headers (`traceparent`, `b3`) that a fixed list misses.
pub fn preflight_headers(requested_headers: Option<&str>) -> Vec<(&'static str, String)> {
    vec![
        (ALLOW_ORIGIN.0, ALLOW_ORIGIN.1.to_owned()),
        (
            "Access-Control-Allow-Methods",
            "GET, POST, OPTIONS".to_owned(),
        ),
        (
            "Access-Control-Allow-Headers",
            requested_headers
                .filter(|h| !h.trim().is_empty())
                .unwrap_or("*")
                .to_owned(),
        ),
        ("Access-Control-Max-Age", "86400".to_owned()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflight_echoes_requested_headers() {
        let h = preflight_headers(Some("content-type, traceparent, b3"));
        assert!(h.contains(&(
            "Access-Control-Allow-Headers",
            "content-type, traceparent, b3".into()
        )));
        assert!(h.contains(&("Access-Control-Allow-Origin", "*".into())));
        assert!(h
            .iter()
            .any(|(k, v)| *k == "Access-Control-Allow-Methods" && v.contains("POST")));
        assert!(preflight_headers(None).contains(&("Access-Control-Allow-Headers", "*".into())));
    }
}
