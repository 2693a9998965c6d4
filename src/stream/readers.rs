//! The live-reader notification: whoever waits for a log to change (a long-poll, an SSE stream, a
//! store's event-stream view) hangs on one [`Wake`], and every commit wakes them all. What they
//! then read, they read from the log: nothing is queued here.

use futures_channel::oneshot;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The readers waiting for the next change of one log.
#[derive(Default)]
pub struct Readers {
    waiting: RefCell<Vec<oneshot::Sender<()>>>,
}

impl Readers {
    /// A future that resolves at the next change (or when the log goes away).
    pub fn wait(&self) -> Wake {
        let (tx, rx) = oneshot::channel();
        let mut waiting = self.waiting.borrow_mut();
        // Readers that stopped waiting (timed out, disconnected) leave a closed channel behind.
        waiting.retain(|waiter| !waiter.is_canceled());
        waiting.push(tx);
        Wake(rx)
    }

    /// Wakes every waiting reader.
    pub fn wake(&self) {
        for waiter in self.waiting.borrow_mut().drain(..) {
            let _ = waiter.send(());
        }
    }

    /// How many readers wait (for tests and metrics).
    pub fn waiting(&self) -> usize {
        let mut waiting = self.waiting.borrow_mut();
        waiting.retain(|waiter| !waiter.is_canceled());
        waiting.len()
    }
}

/// Resolves when the log changes.
pub struct Wake(oneshot::Receiver<()>);

impl Future for Wake {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A dropped sender (the log is gone) wakes too.
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn every_waiter_wakes_once_per_change_and_gone_waiters_are_dropped() {
        let readers = Readers::default();
        let mut cx = Context::from_waker(Waker::noop());
        let mut a = readers.wait();
        let b = readers.wait();
        drop(b);
        assert_eq!(readers.waiting(), 1);
        assert!(Pin::new(&mut a).poll(&mut cx).is_pending());
        readers.wake();
        assert!(Pin::new(&mut a).poll(&mut cx).is_ready());
        assert_eq!(readers.waiting(), 0);
        let mut c = readers.wait();
        drop(readers);
        assert!(Pin::new(&mut c).poll(&mut cx).is_ready());
    }
}
