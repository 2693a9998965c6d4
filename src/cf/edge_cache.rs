//! The edge cache on Cloudflare: the Worker answers repeated stream reads from `caches.default`
//! without waking the stream's object, and says how in `X-Cache` (the rules are
//! [`crate::durable_streams::edge_cache`]). The Cache API lives in each data center (and, in
//! production, only on a custom domain); under `wrangler dev` it is local.

use crate::durable_streams::edge_cache::{
    cache_key, not_modified, outgoing_cache_control, storable, CacheStatus, X_CACHE,
};
use worker::{Cache, Headers, Method, Request, RequestInit, Response, Result, SqlStorage};

/// The request header by which the Worker tells a stream's object the cache key of a read it
/// may keep; the object remembers the keys of its kept answers, so that deleting the stream can
/// drop them from the cache. A client's own value is never passed on.
pub(super) const CACHE_KEY_HEADER: &str = "x-ds-cache-key";
/// How long the object remembers a key: past the longest `max-age` plus
/// `stale-while-revalidate` it answers with.
const REMEMBER_MS: u64 = 400_000;

/// A read's way through the cache: its key (none when the cache does not serve it), and
/// whether a token authorized it.
pub(super) struct CachedRead {
    /// Whether it reads at all (`GET`, `HEAD`): only reads say `X-Cache`.
    read: bool,
    key: Option<String>,
    scoped: bool,
    if_none_match: Option<String>,
}

impl CachedRead {
    /// The way of `req`, which a token of `reach` authorized (if one did).
    pub(super) fn of(req: &Request, url: &worker::Url, reach: Option<&str>) -> Result<CachedRead> {
        let key = cache_key(
            req.method().as_ref(),
            url.path(),
            url.query().unwrap_or_default(),
            reach,
        )
        .filter(|_| cache_available());
        Ok(CachedRead {
            read: matches!(req.method(), worker::Method::Get | worker::Method::Head),
            key,
            scoped: reach.is_some(),
            if_none_match: req.headers().get("if-none-match")?,
        })
    }

    /// The cached answer, if there is one: as it was kept, or `304` when the reader has it.
    pub(super) async fn lookup(&self) -> Result<Option<Response>> {
        let Some(key) = &self.key else {
            return Ok(None);
        };
        let Some(hit) = Cache::default().get(key.as_str(), false).await? else {
            return Ok(None);
        };
        super::usage::count(|u| u.cache_hits += 1);
        let headers = self.outgoing_headers(hit.headers(), CacheStatus::Hit)?;
        if not_modified(
            self.if_none_match.as_deref(),
            headers.get("etag")?.as_deref(),
        ) {
            return Ok(Some(
                Response::empty()?.with_status(304).with_headers(headers),
            ));
        }
        Ok(Some(hit.with_headers(headers)))
    }

    /// `req` as it goes to the object: with the key its answer may be kept under, if any.
    pub(super) fn tag(&self, req: Request, url: &worker::Url) -> Result<Request> {
        if req.method() != Method::Get {
            return Ok(req);
        }
        let headers = super::copy_headers(req.headers())?;
        headers.delete(CACHE_KEY_HEADER)?;
        if let Some(key) = &self.key {
            headers.set(CACHE_KEY_HEADER, key)?;
        }
        let mut init = RequestInit::new();
        init.with_method(Method::Get).with_headers(headers);
        Request::new_with_init(url.as_str(), &init)
    }

    /// The object's answer on its way out: kept when it may be, and marked.
    pub(super) async fn finish(&self, mut response: Response) -> Result<Response> {
        if !self.read {
            return Ok(response);
        }
        let status = match &self.key {
            None => CacheStatus::Bypass,
            Some(key) => {
                let cache_control = response.headers().get("cache-control")?;
                if storable(response.status_code(), cache_control.as_deref()) {
                    if let Err(e) = keep(key, &mut response).await {
                        // The reader still gets its answer; the next one asks the object again.
                        worker::console_warn!("edge cache: {e}");
                    }
                }
                CacheStatus::Miss
            }
        };
        let headers = self.outgoing_headers(response.headers(), status)?;
        Ok(response.with_headers(headers))
    }

    /// `headers` as they leave the Worker: with `X-Cache`, and `private` for a token's read.
    fn outgoing_headers(&self, headers: &Headers, status: CacheStatus) -> Result<Headers> {
        let out = super::copy_headers(headers)?;
        out.set(X_CACHE, status.as_str())?;
        if let Some(value) = out.get("cache-control")? {
            if let Some(private) = outgoing_cache_control(&value, self.scoped) {
                out.set("cache-control", &private)?;
            }
        }
        Ok(out)
    }
}

/// Keeps a copy of `response` under `key`.
async fn keep(key: &str, response: &mut Response) -> Result<()> {
    let kept = response.cloned()?;
    // A copy of the headers: those of an object's response are immutable.
    let headers = super::copy_headers(kept.headers())?;
    Cache::default().put(key, kept.with_headers(headers)).await
}

fn int(value: u64) -> worker::SqlStorageValue {
    i64::try_from(value).unwrap_or(i64::MAX).into()
}

/// Whether the runtime has a Cache API (`Cache::default` assumes it).
fn cache_available() -> bool {
    js_sys::Reflect::get(&js_sys::global(), &"caches".into()).is_ok_and(|caches| caches.is_object())
}

/// The object side: remembers `key` (the [`CACHE_KEY_HEADER`] a read carried) when the read
/// was answered with something the Worker keeps.
pub(super) fn remember(
    sql: &SqlStorage,
    key: Option<&str>,
    status: u16,
    response_headers: &[(String, String)],
    now_ms: u64,
) -> Result<()> {
    let Some(key) = key else {
        return Ok(());
    };
    let cache_control = response_headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("cache-control"))
        .map(|(_, value)| value.as_str());
    if !storable(status, cache_control) {
        return Ok(());
    }
    sql.exec(
        "CREATE TABLE IF NOT EXISTS ds_cache_keys (key TEXT PRIMARY KEY, until_ms INTEGER NOT NULL)",
        None,
    )?;
    sql.exec(
        "DELETE FROM ds_cache_keys WHERE until_ms < ?",
        vec![int(now_ms)],
    )?;
    sql.exec(
        "INSERT OR REPLACE INTO ds_cache_keys (key, until_ms) VALUES (?, ?)",
        vec![key.into(), int(now_ms.saturating_add(REMEMBER_MS))],
    )?;
    Ok(())
}

/// The object side: the keys it remembers that may still be kept, forgotten as they are handed
/// over (one per line).
pub(super) fn hand_over(sql: &SqlStorage, now_ms: u64) -> Result<String> {
    sql.exec(
        "CREATE TABLE IF NOT EXISTS ds_cache_keys (key TEXT PRIMARY KEY, until_ms INTEGER NOT NULL)",
        None,
    )?;
    let rows = sql.exec(
        "SELECT key FROM ds_cache_keys WHERE until_ms >= ?",
        vec![int(now_ms)],
    )?;
    let mut keys = Vec::new();
    for row in rows.raw() {
        if let Some(worker::SqlStorageValue::String(key)) = row?.into_iter().next() {
            keys.push(key);
        }
    }
    sql.exec("DELETE FROM ds_cache_keys", None)?;
    Ok(keys.join("\n"))
}

/// The Worker side: drops what the cache keeps for the stream at `path` (after it was deleted
/// or created again), as its object lists it.
pub(super) async fn purge(env: &worker::Env, path: &str) -> Result<()> {
    let mut response = super::object_call::post(
        env,
        super::stream_object::STREAMS_BINDING,
        path,
        "/__ds_internal/cache-keys",
        Vec::new(),
    )
    .await?;
    if response.status_code() != 200 {
        return Ok(());
    }
    let keys = response.text().await?;
    let cache = Cache::default();
    for key in keys.lines().filter(|key| !key.is_empty()) {
        cache.delete(key, false).await?;
    }
    Ok(())
}
