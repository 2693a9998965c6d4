//! Named crash points for the crash tests (`tests/crash/crash-points.test.mjs`).
//!
//! Only a build with the `fault-injection` feature (the test Worker in `tests/workers/faults/`,
//! built by `make worker-faults`) can arm them. In every other build, the shipped Worker
//! included, [`crash_point`] and [`crash_point_sync`] are empty and compile to nothing, and
//! nothing can arm them.
//!
//! An armed point fires once. An async one logs `FAULT-INJECTION stalled at <point>` and then
//! stalls, so that the test can SIGKILL the runtime at exactly that moment. A synchronous one
//! (inside a transaction, where a stall could not be observed: the runtime discards an
//! unfinished transaction's writes whatever its code) fails instead, logging
//! `FAULT-INJECTION failed at <point> (<what the transaction had written>)`, so the test can
//! check that the writes before it were rolled back.

use crate::stream::StorageError;

/// The places where the crash tests stop the Worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// D1 has committed a push's events; the head in `context_7` is not updated yet.
    D1AfterInsert,
    /// The same with the event log in the Durable Object's own SQLite, where a trigger has
    /// already moved the head in the same statement (the test checks it agrees).
    SqliteAfterInsert,
    /// A Durable Streams append has written its messages and not yet the producer state, inside
    /// the operation's transaction (a failing point).
    StreamAfterData,
    /// A Durable Streams operation (of any kind: the tests arm it just before an append) has
    /// committed; its reply is not sent yet.
    StreamAfterCommit,
    /// A cold segment is written to R2; the index does not name it yet and its rows are still in
    /// SQLite.
    StreamColdAfterPut,
    /// The same for a LiveStore store's events kept in DO SQLite.
    StoreColdAfterPut,
    /// A stream's fan-out has told its first watchers of an append and not the others.
    FanoutMidway,
}

impl CrashPoint {
    /// Every crash point.
    pub const ALL: [CrashPoint; 7] = [
        CrashPoint::D1AfterInsert,
        CrashPoint::SqliteAfterInsert,
        CrashPoint::StreamAfterData,
        CrashPoint::StreamAfterCommit,
        CrashPoint::StreamColdAfterPut,
        CrashPoint::StoreColdAfterPut,
        CrashPoint::FanoutMidway,
    ];

    /// The name the tests arm it by.
    pub fn name(self) -> &'static str {
        match self {
            CrashPoint::D1AfterInsert => "d1-after-insert",
            CrashPoint::SqliteAfterInsert => "sqlite-after-insert",
            CrashPoint::StreamAfterData => "stream-after-data",
            CrashPoint::StreamAfterCommit => "stream-after-commit",
            CrashPoint::StreamColdAfterPut => "stream-cold-after-put",
            CrashPoint::StoreColdAfterPut => "store-cold-after-put",
            CrashPoint::FanoutMidway => "fanout-midway",
        }
    }

    /// The point called `name`.
    pub fn parse(name: &str) -> Option<CrashPoint> {
        CrashPoint::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// Stalls here if `point` is armed (fault-injection builds only; a no-op otherwise).
#[inline]
pub async fn crash_point(point: CrashPoint) {
    #[cfg(all(feature = "fault-injection", target_arch = "wasm32"))]
    armed::stall(point).await;
    #[cfg(not(all(feature = "fault-injection", target_arch = "wasm32")))]
    let _ = point;
}

/// A failing point for synchronous code, such as the body of a transaction: if `point` is armed
/// it fails, logging `witness()` (what the transaction has written so far), so that the
/// transaction rolls back (fault-injection builds only; `Ok` otherwise).
#[inline]
pub fn crash_point_sync(
    point: CrashPoint,
    witness: impl FnOnce() -> String,
) -> Result<(), StorageError> {
    #[cfg(all(feature = "fault-injection", target_arch = "wasm32"))]
    return armed::fail(point, witness);
    #[cfg(not(all(feature = "fault-injection", target_arch = "wasm32")))]
    {
        let _ = (point, witness);
        Ok(())
    }
}

#[cfg(all(feature = "fault-injection", target_arch = "wasm32"))]
mod armed {
    use super::CrashPoint;
    use crate::stream::StorageError;
    use std::cell::RefCell;
    use std::time::Duration;
    use wasm_bindgen::prelude::*;

    /// An async point goes on as if nothing happened after this long; the test kills the
    /// runtime within a second of the log line.
    const STALL: Duration = Duration::from_secs(120);

    thread_local! {
        static ARMED: RefCell<Vec<CrashPoint>> = const { RefCell::new(Vec::new()) };
    }

    /// Arms a crash point for its next hit in this isolate. Exported to the test Worker's
    /// entry module only (this module exists only in fault-injection builds).
    #[wasm_bindgen(js_name = armFault)]
    pub fn arm_fault(name: &str) -> Result<(), JsValue> {
        let point = CrashPoint::parse(name)
            .ok_or_else(|| JsValue::from_str(&format!("unknown crash point {name}")))?;
        ARMED.with(|armed| armed.borrow_mut().push(point));
        Ok(())
    }

    /// Disarms `point` and says whether it was armed.
    fn fire(point: CrashPoint) -> bool {
        ARMED.with(|armed| {
            let mut armed = armed.borrow_mut();
            let found = armed.iter().position(|p| *p == point);
            found.map(|i| armed.remove(i)).is_some()
        })
    }

    pub async fn stall(point: CrashPoint) {
        if fire(point) {
            worker::console_log!("FAULT-INJECTION stalled at {}", point.name());
            worker::Delay::from(STALL).await;
            worker::console_log!("FAULT-INJECTION resumed after {}", point.name());
        }
    }

    pub fn fail(point: CrashPoint, witness: impl FnOnce() -> String) -> Result<(), StorageError> {
        if !fire(point) {
            return Ok(());
        }
        worker::console_log!("FAULT-INJECTION failed at {} ({})", point.name(), witness());
        Err(StorageError(format!(
            "fault injection: failed at {}",
            point.name()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for point in CrashPoint::ALL {
            assert_eq!(CrashPoint::parse(point.name()), Some(point));
        }
        assert_eq!(CrashPoint::parse("nowhere"), None);
    }

    #[test]
    fn points_are_no_ops_without_the_feature() {
        for point in CrashPoint::ALL {
            assert_eq!(crash_point_sync(point, || unreachable!()), Ok(()));
            futures::executor::block_on(crash_point(point));
        }
    }
}
