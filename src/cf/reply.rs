//! Replies that stream out of the object (HTTP bodies, DO-RPC reply streams): the RPC runs as a
//! task that sends its messages through a channel of one, so it waits while the reader has not
//! taken the last one, and stops when the reader goes away.

use crate::livestore::sync::Gone;
use futures_channel::mpsc;
use futures_util::{SinkExt, Stream};

/// How many messages wait between the RPC and its reader (a message is at most one page).
const IN_FLIGHT: usize = 1;

/// The sending end, held by the RPC.
pub(super) struct Channel(mpsc::Sender<String>);

impl Channel {
    /// Hands one message to the reader, waiting for room; `Err` when the reader is gone.
    pub async fn send(&mut self, message: String) -> Result<(), Gone> {
        self.0.send(message).await.map_err(|_| Gone)
    }
}

/// A channel and the stream its reader takes the messages from.
pub(super) fn channel() -> (Channel, impl Stream<Item = String>) {
    let (tx, rx) = mpsc::channel(IN_FLIGHT - 1);
    (Channel(tx), rx)
}
