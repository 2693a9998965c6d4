//! A first-come, first-served async mutex for a single-threaded runtime (a Durable Object).
//!
//! Durable Object handlers take `&self` and interleave at every `.await`, so writers that
//! await storage must queue explicitly. Waiters are served in arrival order, and a waiter
//! whose future is dropped passes the lock on instead of leaking it.

use futures_channel::oneshot;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The mutex. Not `Sync`: it is meant for one isolate thread.
#[derive(Default)]
pub struct AsyncMutex {
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    locked: bool,
    waiters: VecDeque<oneshot::Sender<()>>,
}

/// Holds the lock until dropped.
pub struct Guard<'a> {
    mutex: &'a AsyncMutex,
}

impl AsyncMutex {
    /// A new, unlocked mutex.
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for the lock.
    pub fn lock(&self) -> Acquire<'_> {
        let mut state = self.state.borrow_mut();
        let step = if state.locked {
            let (tx, rx) = oneshot::channel();
            state.waiters.push_back(tx);
            Step::Waiting(rx)
        } else {
            state.locked = true;
            Step::Owned
        };
        Acquire { mutex: self, step }
    }

    /// Whether someone holds the lock (for tests and assertions).
    pub fn is_locked(&self) -> bool {
        self.state.borrow().locked
    }

    /// Hands the lock to the next live waiter, or unlocks.
    fn release(&self) {
        let mut state = self.state.borrow_mut();
        while let Some(waiter) = state.waiters.pop_front() {
            if waiter.send(()).is_ok() {
                return; // ownership passed on; `locked` stays true
            }
        }
        state.locked = false;
    }
}

/// The future returned by [`AsyncMutex::lock`].
pub struct Acquire<'a> {
    mutex: &'a AsyncMutex,
    step: Step,
}

enum Step {
    /// The lock is ours but no guard was handed out yet.
    Owned,
    /// Queued behind the holder.
    Waiting(oneshot::Receiver<()>),
    /// The guard was handed out and now owns the lock.
    Done,
}

impl<'a> Future for Acquire<'a> {
    type Output = Guard<'a>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Guard<'a>> {
        if let Step::Waiting(rx) = &mut self.step {
            // An error means the sender was dropped, which only happens with the mutex
            // itself; either way the lock is ours now.
            if Pin::new(rx).poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        self.step = Step::Done;
        Poll::Ready(Guard { mutex: self.mutex })
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.step, Step::Done) {
            Step::Owned => self.mutex.release(),
            Step::Waiting(mut rx) => {
                rx.close();
                // The lock may have been handed to us after our last poll: pass it on.
                if let Ok(Some(())) = rx.try_recv() {
                    self.mutex.release();
                }
            }
            Step::Done => {}
        }
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.mutex.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::executor::LocalPool;
    use futures::task::LocalSpawnExt;
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::task::Poll;

    #[test]
    fn uncontended_lock_is_immediate() {
        let m = AsyncMutex::new();
        let g = block_on(m.lock());
        assert!(m.is_locked());
        drop(g);
        assert!(!m.is_locked());
    }

    #[test]
    fn waiters_are_served_in_order() {
        let m = Rc::new(AsyncMutex::new());
        let order = Rc::new(RefCell::new(Vec::new()));
        let mut pool = LocalPool::new();
        let first = block_on(m.lock());
        for i in 0..5 {
            let (m, order) = (m.clone(), order.clone());
            pool.spawner()
                .spawn_local(async move {
                    let _g = m.lock().await;
                    order.borrow_mut().push(i);
                })
                .unwrap();
        }
        pool.run_until_stalled();
        assert!(
            order.borrow().is_empty(),
            "nobody may enter while the lock is held"
        );
        drop(first);
        pool.run_until_stalled();
        assert_eq!(*order.borrow(), vec![0, 1, 2, 3, 4]);
        assert!(!m.is_locked());
    }

    #[test]
    fn dropped_waiter_does_not_leak_the_lock() {
        let m = AsyncMutex::new();
        let first = block_on(m.lock());
        let mut waiter = Box::pin(m.lock());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(waiter.as_mut().poll(&mut cx), Poll::Pending));
        // The lock is handed to the waiter, which is then dropped before it polls again.
        drop(first);
        drop(waiter);
        assert!(!m.is_locked());
        let _again = block_on(m.lock());
        assert!(m.is_locked());
    }

    #[test]
    fn unpolled_acquire_releases_on_drop() {
        let m = AsyncMutex::new();
        drop(m.lock());
        assert!(!m.is_locked());
    }
}
