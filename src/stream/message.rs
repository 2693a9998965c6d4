//! A message: an entry that is just bytes at a position (a Durable Streams message).

use super::seq::SeqNum;
use super::store::Entry;

/// Bytes at a position of a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub seq: SeqNum,
    pub data: Vec<u8>,
}

impl Message {
    /// The message `data` at `seq`.
    pub fn new(seq: SeqNum, data: Vec<u8>) -> Self {
        Message { seq, data }
    }
}

impl Entry for Message {
    fn seq(&self) -> SeqNum {
        self.seq
    }
    fn size(&self) -> usize {
        self.data.len()
    }
}
