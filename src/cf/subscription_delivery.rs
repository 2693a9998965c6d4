//! Delivering a subscription's wakes: a signed POST to its webhook (retried with back-off until
//! answered; `{"done": true}` acknowledges), or a wake event appended to its wake stream; and the
//! alarm, which ends leases that ran out and takes up what is owed. One delivery runs at a time
//! per object; what it leaves owed, the alarm holds.

use super::fanout::Busy;
use super::js_error as failed;
use super::stream_object::{StreamOf, STREAMS_BINDING};
use super::subscription_object::{now_ms, Kept, Random, SubRun, SUBSCRIPTIONS_PREFIX};
use super::webhook_key::webhook_key;
use serde_json::Value;
use std::rc::Rc;
use worker::{Env, Headers, Method, Request, RequestInit, Result, State};

pub(super) async fn arm(state: &State, due: Option<u64>) -> Result<()> {
    match due {
        Some(due) => super::fanout::arm_state(state, due).await,
        None => Ok(()),
    }
}

/// A wake not yet delivered is owed to the alarm too (an eviction before its delivery).
pub(super) async fn arm_if_waking(state: &State, kept: &Kept) -> Result<()> {
    let waking = kept
        .load()
        .map_err(failed)?
        .is_some_and(|(sub, _)| sub.wake.is_some_and(|w| !w.delivered && !w.announced));
    if waking {
        arm(state, Some(now_ms().saturating_add(5_000))).await?;
    }
    Ok(())
}

/// Delivers what is owed after the request.
pub(super) fn drive_later(stream: &Rc<StreamOf>, run: &Rc<SubRun>, name: &str) {
    let (owner, run, name) = (stream.clone(), run.clone(), name.to_owned());
    stream.platform().state().wait_until(async move {
        let env = owner.platform().env().clone();
        if let Err(e) = drive(owner.platform().state(), &env, &run).await {
            worker::console_warn!("subscription {name}: {e}");
        }
    });
}

/// The alarm of a subscription object: leases that ran out, retries of deliveries.
pub(super) async fn alarm(state: &State, env: &Env, run: &Rc<SubRun>) -> Result<()> {
    let kept = Kept::open(state.storage().sql()).map_err(failed)?;
    if let Some((mut sub, base)) = kept.load().map_err(failed)? {
        let now = now_ms();
        if sub.expire(now) | sub.maybe_wake(&mut Random) {
            kept.save(&sub, &base).map_err(failed)?;
        }
    }
    drive(state, env, run).await
}

/// Delivers the current wake (webhook POST, or wake event) until nothing is owed now; arms the
/// alarm for what is owed later.
async fn drive(state: &State, env: &Env, run: &Rc<SubRun>) -> Result<()> {
    match Busy::take(&run.delivering) {
        Some(_busy) => drive_inner(state, env).await,
        None => Ok(()),
    }
}

async fn drive_inner(state: &State, env: &Env) -> Result<()> {
    let kept = Kept::open(state.storage().sql()).map_err(failed)?;
    for _ in 0..8 {
        let Some((sub, base)) = kept.load().map_err(failed)? else {
            return Ok(());
        };
        let now = now_ms();
        let Some(wake) = sub.wake.clone() else {
            return Ok(());
        };
        if let Some(url) = sub.spec.webhook.as_ref().map(|w| w.url.clone()) {
            if wake.delivered || wake.retry_at_ms.is_some_and(|at| at > now) {
                return arm(state, sub.due_ms()).await;
            }
            let callback_url = format!("{base}{SUBSCRIPTIONS_PREFIX}{}/callback", sub.id);
            let Some(note) = sub.notification(&callback_url) else {
                return Ok(());
            };
            let outcome = post_webhook(env, &url, &note).await;
            let Some((mut sub, base)) = kept.load().map_err(failed)? else {
                return Ok(());
            };
            if sub.wake.as_ref().map(|w| &w.wake_id) != Some(&wake.wake_id) {
                continue;
            }
            let now = now_ms();
            match outcome {
                Ok(done) => sub.delivered(done, now),
                Err(e) => {
                    worker::console_warn!("webhook {url}: {e}");
                    sub.delivery_failed(now);
                }
            }
            sub.maybe_wake(&mut Random);
            kept.save(&sub, &base).map_err(failed)?;
            arm(state, sub.due_ms()).await?;
        } else if let Some(wake_stream) = sub.spec.wake_stream.clone() {
            if wake.announced {
                return arm(state, sub.due_ms()).await;
            }
            let Some(event) = sub.wake_event(now) else {
                return Ok(());
            };
            let appended = append_event(env, &wake_stream, &event).await;
            let Some((mut sub, base)) = kept.load().map_err(failed)? else {
                return Ok(());
            };
            if sub.wake.as_ref().map(|w| &w.wake_id) != Some(&wake.wake_id) {
                continue;
            }
            match appended {
                // A wake stream that does not exist is not waited for: claims still work.
                Ok(()) | Err(WakeStream::Missing) => {
                    if let Some(current) = sub.wake.as_mut() {
                        current.announced = true;
                    }
                    kept.save(&sub, &base).map_err(failed)?;
                    continue;
                }
                Err(WakeStream::Failed(e)) => {
                    worker::console_warn!("wake stream {wake_stream}: {e}");
                    return arm(state, Some(now_ms().saturating_add(5_000))).await;
                }
            }
        } else {
            return Ok(());
        }
    }
    // More rounds are owed: the alarm goes on with them.
    arm(state, Some(now_ms().saturating_add(1_000))).await
}

/// Why a wake event was not appended.
enum WakeStream {
    Missing,
    Failed(worker::Error),
}

/// POSTs a signed notification; whether its answer said `{"done": true}`.
async fn post_webhook(env: &Env, url: &str, note: &Value) -> Result<bool> {
    let key = webhook_key(env).await?;
    let body = note.to_string();
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    headers.set(
        "webhook-signature",
        &key.signature(now_ms() / 1_000, body.as_bytes()),
    )?;
    // The address as a WHATWG parser reads it (what was checked), no redirects followed.
    let url = url::Url::parse(url).map_err(failed)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(body.into()))
        .with_redirect(worker::RequestRedirect::Manual);
    let request = Request::new_with_init(url.as_str(), &init)?;
    let fetch = worker::Fetch::Request(request);
    let send = fetch.send();
    let timeout = worker::Delay::from(std::time::Duration::from_millis(WEBHOOK_TIMEOUT_MS));
    futures_util::pin_mut!(send, timeout);
    let mut answer = match futures_util::future::select(send, timeout).await {
        futures_util::future::Either::Left((answer, _)) => answer?,
        futures_util::future::Either::Right(_) => return Err(failed("no answer in time")),
    };
    if !(200..300).contains(&answer.status_code()) {
        return Err(failed(format!("answered {}", answer.status_code())));
    }
    // Only a short answer is read: `{"done": true}` or not.
    let mut bytes = Vec::new();
    if let Ok(mut body) = answer.stream() {
        use futures_util::StreamExt;
        while let Some(Ok(chunk)) = body.next().await {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > WEBHOOK_ANSWER_BYTES {
                return Ok(false);
            }
        }
    }
    Ok(serde_json::from_slice::<Value>(&bytes)
        .is_ok_and(|v| v.get("done") == Some(&Value::Bool(true))))
}

/// A receiver that has not answered in this long has failed this delivery.
const WEBHOOK_TIMEOUT_MS: u64 = 10_000;
/// The most of a receiver's answer that is read.
const WEBHOOK_ANSWER_BYTES: usize = 64 * 1024;

/// Appends a wake event to the wake stream (relative path), through its object.
async fn append_event(
    env: &Env,
    wake_stream: &str,
    event: &Value,
) -> std::result::Result<(), WakeStream> {
    append_event_to(env, wake_stream, event)
        .await
        .map_err(WakeStream::Failed)?
}

async fn append_event_to(
    env: &Env,
    wake_stream: &str,
    event: &Value,
) -> Result<std::result::Result<(), WakeStream>> {
    let path = format!("/v1/stream/{wake_stream}");
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(event.to_string().into()));
    let request = Request::new_with_init(&format!("https://streams{path}"), &init)?;
    let answer = env
        .durable_object(STREAMS_BINDING)?
        .id_from_name(&path)?
        .get_stub()?
        .fetch_with_request(request)
        .await?;
    Ok(match answer.status_code() {
        200..=299 => Ok(()),
        404 | 410 => {
            worker::console_warn!("wake stream {wake_stream} does not exist: wake event skipped");
            Err(WakeStream::Missing)
        }
        status => Err(WakeStream::Failed(failed(format!("answered {status}")))),
    })
}
