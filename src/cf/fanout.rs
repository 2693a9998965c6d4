//! A stream's side of pub/sub: after an append, it tells its watchers (estuaries' session
//! streams, subscriptions: objects of the streams namespace) its new tail, with the new messages
//! when they are small. Inline for a few watchers; above `ESTUARY_FANOUT_QUEUE_THRESHOLD`
//! (default 100) through the `FANOUT` queue, [`QUEUE_BATCH`] watchers per message, whose consumer
//! ([`consume`]) retries what fails and dead-letters what keeps failing.
//!
//! A fan-out is owed before it starts: the alarm is armed (and `due_ms` kept) before the append
//! is answered, and `notified` moves only once every watcher was told (or the queue took it), so
//! an eviction or a crash in the middle makes the alarm tell them again. Telling a watcher twice
//! is harmless: each copies by source position (see [`crate::durable_streams::estuary`]).

use super::js_error as failed;
use super::stream_object::{StreamOf, STREAMS_BINDING};
use crate::durable_streams::fanout::{queue_sends, Notice, QueuedNotice};
use crate::storage::watchers::Watchers;
use crate::stream::{Budget, SeqNum, StorageError};
use std::cell::Cell;
use std::rc::Rc;
use worker::{Date, Env, MessageExt, Response, Result, ScheduledTime};

/// The queue binding for large fan-outs.
pub const FANOUT_QUEUE: &str = "FANOUT";
/// Where watchers take notices.
pub(super) const NOTIFY_PATH: &str = "/__ds_internal/notify";
/// A fan-out not finished this long after it was owed is made again by the alarm.
const RETRY_MS: u64 = 5_000;
/// Watchers told at once.
const CONCURRENT: usize = 50;
/// Watchers read from storage at once.
const PAGE: usize = 500;

/// A flag held while a piece of work runs; let go when the work ends or is dropped (a request
/// the runtime cancels must not leave it set).
pub(super) struct Busy<'a>(&'a Cell<bool>);

impl<'a> Busy<'a> {
    /// The flag, unless it is held already.
    pub(super) fn take(flag: &'a Cell<bool>) -> Option<Busy<'a>> {
        (!flag.replace(true)).then_some(Busy(flag))
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// What an object keeps in memory about its fan-out.
#[derive(Default)]
pub(super) struct FanOutRun {
    running: Cell<bool>,
    again: Cell<bool>,
    /// Whether the stream has watchers, once known (changes go through this object).
    watched: Cell<Option<bool>>,
    /// Whether this instance of the object looked for a fan-out owed by an earlier one.
    resumed: Cell<bool>,
}

impl FanOutRun {
    /// Forgets what it knew about the watchers (after one was added or removed).
    pub(super) fn changed(&self) {
        self.watched.set(None);
    }
}

/// The time a watcher may be unknown to the session it names (a subscribe between its watch
/// and its link) before a `404` from it means it is gone.
const PRUNE_GRACE_MS: u64 = 60_000;

fn watchers(stream: &StreamOf) -> std::result::Result<Watchers, StorageError> {
    Watchers::open(stream.platform().state().storage().sql())
}

/// Arms an object's alarm for `due_ms` unless it is set sooner (and still to come).
pub(super) async fn arm_state(state: &worker::State, due_ms: u64) -> Result<()> {
    let storage = state.storage();
    let due = i64::try_from(due_ms).unwrap_or(i64::MAX);
    let now = i64::try_from(Date::now().as_millis()).unwrap_or(i64::MAX);
    if let Some(current) = storage.get_alarm().await? {
        if current <= due && current > now {
            return Ok(());
        }
    }
    let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(due as f64));
    storage.set_alarm(ScheduledTime::new(date)).await
}

async fn arm(stream: &StreamOf, due_ms: u64) -> Result<()> {
    arm_state(stream.platform().state(), due_ms).await
}

/// When the fan-out wants the alarm (`None`: nothing owed), never in the past: a fan-out
/// running now keeps its own time. [`super::stream_object::CfPlatform`] keeps the sooner of
/// this and the protocol's own time.
pub(super) fn due_ms_of(state: &worker::State) -> Option<u64> {
    let due = Watchers::open(state.storage().sql()).ok()?.owed().ok()?.1?;
    Some(due.max(Date::now().as_millis().saturating_add(1_000)))
}

/// Whether a fan-out is owed (its time may have passed: the object was evicted or crashed).
fn owed(state: &worker::State) -> bool {
    Watchers::open(state.storage().sql())
        .and_then(|w| w.owed())
        .is_ok_and(|(_, due)| due.is_some())
}

/// How far every watcher has been told, as of a log whose tail is `tail` (a mark past the tail
/// is an earlier stream's at this path, deleted or expired, so nothing of this one was told),
/// and when the alarm is to try again.
fn owed_of(table: &Watchers, tail: u64) -> std::result::Result<(u64, Option<u64>), StorageError> {
    let (notified, due) = table.owed()?;
    Ok((if notified > tail { 0 } else { notified }, due))
}

/// Forgets the watchers of a stream that was deleted.
/// Subscriptions stop following it (told after the request); estuaries keep their link, and
/// a stream created again at the path starts with no watchers.
pub(super) fn forget(stream: &StreamOf, run: &FanOutRun, env: &Env) {
    run.changed();
    let table = match watchers(stream) {
        Ok(table) => table,
        Err(e) => return worker::console_warn!("forgetting watchers: {e}"),
    };
    let mut subscriptions = Vec::new();
    let mut after = String::new();
    while let Ok(page) = table.page(&after, PAGE) {
        let Some(last) = page.last() else { break };
        after = last.clone();
        subscriptions.extend(
            page.into_iter()
                .filter(|name| super::subscription_object::is_subscription_object(Some(name))),
        );
    }
    if let Err(e) = table.clear() {
        worker::console_warn!("forgetting watchers: {e}");
    }
    let Some(source) = stream.platform().name() else {
        return;
    };
    let env = env.clone();
    stream.platform().state().wait_until(async move {
        for name in subscriptions {
            if let Err(e) = super::subscription_links::unlink(&env, &name, &source).await {
                worker::console_warn!("unlinking {source} from {name}: {e}");
            }
        }
    });
}

/// After a write: when the stream has watchers and they were not told of its tail, owes them
/// a fan-out (the alarm armed before the write is answered) and starts it after the request.
pub(super) async fn after_write(
    stream: &Rc<StreamOf>,
    run: &Rc<FanOutRun>,
    env: &Env,
) -> Result<()> {
    if run.watched.get() == Some(false) {
        return Ok(());
    }
    let table = watchers(stream).map_err(failed)?;
    let watched = table.count().map_err(failed)? > 0;
    run.watched.set(Some(watched));
    if !watched {
        return Ok(());
    }
    let tail = stream.log().tail().await.map_err(failed)?.get();
    let (notified, due) = owed_of(&table, tail).map_err(failed)?;
    if notified == tail {
        return Ok(());
    }
    // Owed before the write is answered: a crash from here on leaves the alarm to tell them.
    let now = Date::now().as_millis();
    if due.is_none_or(|due| due <= now) {
        let due = now.saturating_add(RETRY_MS);
        table.set_owed(notified, Some(due)).map_err(failed)?;
        arm(stream, due).await?;
    }
    start(stream, run, env);
    Ok(())
}

/// At the first request of an instance of the object: a fan-out an earlier instance owes (it
/// was evicted or crashed in the middle) starts again.
pub(super) fn resume_once(stream: &Rc<StreamOf>, run: &Rc<FanOutRun>, env: &Env) {
    if run.resumed.replace(true) {
        return;
    }
    if owed(stream.platform().state()) {
        start(stream, run, env);
    }
}

/// The alarm's part: a fan-out owed goes on, within the alarm.
pub(super) async fn on_alarm(stream: &Rc<StreamOf>, run: &FanOutRun, env: &Env) -> Result<()> {
    if !owed(stream.platform().state()) {
        return Ok(());
    }
    match Busy::take(&run.running) {
        Some(_busy) => fan_out(stream, run, env).await,
        None => {
            run.again.set(true);
            Ok(())
        }
    }
}

/// Runs the fan-out after the request (or joins the one running).
pub(super) fn start(stream: &Rc<StreamOf>, run: &Rc<FanOutRun>, env: &Env) {
    if run.running.get() {
        run.again.set(true);
        return;
    }
    let (owner, run2, env) = (stream.clone(), run.clone(), env.clone());
    stream.platform().state().wait_until(async move {
        let Some(_busy) = Busy::take(&run2.running) else {
            run2.again.set(true);
            return;
        };
        if let Err(e) = fan_out(&owner, &run2, &env).await {
            worker::console_warn!("fan-out: {e}");
        }
    });
}

/// Tells every watcher until none is owed anything; a failure leaves it owed for the alarm.
pub(super) async fn fan_out(stream: &Rc<StreamOf>, run: &FanOutRun, env: &Env) -> Result<()> {
    let Some(source) = stream.platform().name() else {
        return Ok(());
    };
    loop {
        run.again.set(false);
        let table = watchers(stream).map_err(failed)?;
        let tail = stream.log().tail().await.map_err(failed)?;
        let (notified, _) = owed_of(&table, tail.get()).map_err(failed)?;
        if notified == tail.get() {
            table.set_owed(notified, None).map_err(failed)?;
            return Ok(());
        }
        // This round holds the alarm as a lease: cut short, it is made again.
        let due = Date::now().as_millis().saturating_add(RETRY_MS);
        table.set_owed(notified, Some(due)).map_err(failed)?;
        arm(stream, due).await?;
        // The newest messages ride along (a session that is up to date needs only those).
        let after =
            SeqNum::new(notified.max(tail.get().saturating_sub(64))).unwrap_or(SeqNum::ROOT);
        let budget = Budget {
            rows: 64,
            bytes: crate::durable_streams::fanout::NOTICE_MESSAGE_BYTES,
        };
        let messages = stream
            .read_for_fork(after, tail, budget)
            .await
            .unwrap_or_default();
        let notice = Notice::new(&source, tail, &messages);
        if tell_all(&table, &notice, env).await? {
            table.set_owed(tail.get(), None).map_err(failed)?;
        } else {
            // Owed still; the alarm of this round tries again.
            return Ok(());
        }
        if !run.again.get() {
            return Ok(());
        }
    }
}

/// Tells every watcher `notice`; whether all of them took it (watchers that answer `404`, gone
/// for good, are dropped).
async fn tell_all(table: &Watchers, notice: &Notice, env: &Env) -> Result<bool> {
    let queue = match (
        table.count().map_err(failed)? > queue_threshold(env),
        env.queue(FANOUT_QUEUE),
    ) {
        (true, Ok(queue)) => Some(queue),
        _ => None,
    };
    let mut all = true;
    let mut after = String::new();
    loop {
        let page = table.page(&after, PAGE).map_err(failed)?;
        let Some(last) = page.last() else {
            return Ok(all);
        };
        after = last.clone();
        if let Some(queue) = &queue {
            for messages in queue_sends(notice, &page) {
                let count = messages.len() as u64;
                let sent = queue.send_batch(messages).await;
                match sent {
                    Ok(()) => super::usage::count(|u| u.fanout_queued += count),
                    Err(e) => {
                        worker::console_warn!("fan-out queue: {e}");
                        all = false;
                    }
                }
            }
            continue;
        }
        for (i, names) in page.chunks(CONCURRENT).enumerate() {
            if i > 0 {
                // Some watchers told, the others not yet (the crash tests stop here).
                crate::faults::crash_point(crate::faults::CrashPoint::FanoutMidway).await;
            }
            let told =
                futures_util::future::join_all(names.iter().map(|name| notify(env, name, notice)))
                    .await;
            for (name, status) in names.iter().zip(told) {
                match status {
                    Ok(200..=299) => {}
                    Ok(404) => {
                        let before = Date::now().as_millis().saturating_sub(PRUNE_GRACE_MS);
                        table.remove_if_added_before(name, before).map_err(failed)?;
                    }
                    Ok(status) => {
                        worker::console_warn!("fan-out to {name}: {status}");
                        all = false;
                    }
                    Err(e) => {
                        worker::console_warn!("fan-out to {name}: {e}");
                        all = false;
                    }
                }
            }
        }
    }
}

fn queue_threshold(env: &Env) -> u64 {
    env.var("ESTUARY_FANOUT_QUEUE_THRESHOLD")
        .ok()
        .and_then(|v| v.to_string().trim().parse().ok())
        .unwrap_or(100)
}

/// Sends `notice` to the watcher object `name`; its status.
pub(super) async fn notify(env: &Env, name: &str, notice: &Notice) -> Result<u16> {
    let body = serde_json::to_string(notice)?;
    let response = internal_call(env, name, NOTIFY_PATH, body).await?;
    Ok(response.status_code())
}

/// A POST of `body` to the internal `path` of the stream object named `name`.
pub(super) async fn internal_call(
    env: &Env,
    name: &str,
    path: &str,
    body: String,
) -> Result<Response> {
    super::object_call::post(env, STREAMS_BINDING, name, path, body.into_bytes()).await
}

/// The queue's consumer: tells each watcher of each message; a message whose watchers did not
/// all take it is retried (the queue's `max_retries`, then its dead-letter queue). The
/// dead-letter queue's consumer tries once more and logs what still fails: the watchers it
/// names catch up at the source's next append (a notice makes a session copy everything after
/// its mark), so a dead letter delays copies and loses none.
pub async fn consume(batch: worker::MessageBatch<QueuedNotice>, env: &Env) -> Result<()> {
    let dead = batch.queue().ends_with("-dlq");
    for message in batch.messages()? {
        let queued = message.body();
        let told = futures_util::future::join_all(
            queued
                .watchers
                .iter()
                .map(|name| notify(env, name, &queued.notice)),
        )
        .await;
        // A watcher gone for good (404) is dropped by the source's next inline fan-out.
        let ok = told
            .iter()
            .all(|status| matches!(status, Ok(200..=299 | 404)));
        if dead {
            super::usage::count(|u| u.fanout_dead_letters += 1);
            if !ok {
                worker::console_error!(
                    "dead letter: {} watchers of {} not told of {}",
                    queued.watchers.len(),
                    queued.notice.source,
                    queued.notice.tail
                );
            }
            message.ack();
        } else if ok {
            message.ack();
        } else {
            message.retry();
        }
    }
    Ok(())
}
