//! Which streams a subscription reaches: stream names as subscriptions give them, glob patterns
//! (`*` one whole segment, `**` zero or more), and the projects a subscription names, which
//! decide whose tokens it needs.

/// A stream path as subscriptions name it (relative to `/v1/stream/`): segments without `.`,
/// `..` or empties, none reserved.
pub fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 1024
        && name
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != ".." && s != "__ds")
}

/// Whether `pattern` is a valid glob: segments, `*` one whole segment, `**` (last) any rest.
pub fn valid_pattern(pattern: &str) -> bool {
    !pattern.is_empty()
        && pattern.len() <= 1024
        && pattern.split('/').all(|s| {
            !s.is_empty() && s != "." && s != ".." && (!s.contains('*') || s == "*" || s == "**")
        })
}

/// Whether stream `name` matches `pattern`: `*` is one whole segment, `**` zero or more.
pub fn matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').collect();
    let name: Vec<&str> = name.split('/').collect();
    glob(&pattern, &name)
}

fn glob(pattern: &[&str], name: &[&str]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        // Zero segments, or one more and `**` again (patterns are at most 1 KB: shallow).
        Some((&"**", rest)) => {
            glob(rest, name)
                || name
                    .split_first()
                    .is_some_and(|(_, names)| glob(pattern, names))
        }
        Some((part, rest)) => match name.split_first() {
            Some((segment, names)) if *part == "*" || part == segment => glob(rest, names),
            _ => false,
        },
    }
}

/// The projects (first path segments) a subscription names literally: its pattern's, unless
/// that is a wildcard, and its explicit streams'. A project with tokens is reached only by a
/// subscription created with one of its tokens, so a wildcard does not reach it.
pub fn named_projects<'a>(
    pattern: Option<&'a str>,
    streams: &'a [String],
    wake_stream: Option<&'a str>,
) -> Vec<&'a str> {
    let mut projects: Vec<&str> = pattern
        .and_then(|p| p.split('/').next())
        .filter(|first| !first.contains('*'))
        .into_iter()
        .chain(streams.iter().filter_map(|s| s.split('/').next()))
        .chain(wake_stream.and_then(|w| w.split('/').next()))
        .collect();
    projects.sort_unstable();
    projects.dedup();
    projects
}

/// Whether a subscription with `pattern` may follow `stream` of a project with tokens: only
/// when the pattern names that project literally (it was authorized for it).
pub fn reaches_guarded(pattern: &str, stream: &str) -> bool {
    pattern.split('/').next() == stream.split('/').next()
        && !pattern.split('/').next().unwrap_or("*").contains('*')
}
