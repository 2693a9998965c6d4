//! Helpers shared by the fuzz targets.
#![allow(dead_code)]

/// Splits fuzz input into parts at `0xFF` bytes, which never occur in UTF-8 text, so each
/// part can still be any string.
pub fn parts(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|&b| b == 0xFF)
}

/// A part as text, if it is UTF-8 (the platform hands the decoders only valid strings).
pub fn text(part: &[u8]) -> Option<&str> {
    std::str::from_utf8(part).ok()
}

/// Parses `json`, which the code under test produced, and fails loudly if it is not JSON.
pub fn json(produced: &str) -> serde_json::Value {
    match serde_json::from_str(produced) {
        Ok(value) => value,
        Err(e) => panic!("produced invalid JSON ({e}): {produced}"),
    }
}

/// Checks that `produced` is valid JSON text (numbers of any size included) and returns
/// the items if it is an array.
pub fn valid_json(produced: &str) -> Option<usize> {
    if let Ok(items) = serde_json::from_str::<Vec<&serde_json::value::RawValue>>(produced) {
        return Some(items.len());
    }
    if let Err(e) = serde_json::from_str::<&serde_json::value::RawValue>(produced) {
        panic!("produced invalid JSON ({e}): {produced}");
    }
    None
}
