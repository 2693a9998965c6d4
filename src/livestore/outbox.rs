//! Flow control of one WebSocket: which frame may go now.
//!
//! A WebSocket `send` in Workers has no back-pressure: what is sent faster than the client reads
//! piles up in the runtime's memory. LiveStore's client acknowledges every `Chunk` it gets (an
//! `Ack` with the chunk's request id), so a socket keeps at most [`WINDOW_BYTES`] of chunks in
//! flight and queues the rest until Acks come back. A catch-up waits for room before it reads the
//! next page; a broadcast queues its frames, which share one encoding of each push's page, and a
//! reader that falls too far behind ([`MAX_QUEUED_PAGE_BYTES`] of pages it has not taken) is
//! dropped (it reconnects and catches up from its cursor).

use std::collections::{HashMap, VecDeque};

/// Bytes of unacknowledged chunks a socket may have in flight (always at least one chunk).
pub const WINDOW_BYTES: usize = 4 << 20;
/// Bytes of distinct broadcast pages a socket may have waiting before it is dropped.
pub const MAX_QUEUED_PAGE_BYTES: usize = 16 << 20;
/// Chunks in flight after which the Acks are counted even though the window has room, so that
/// what is kept per chunk in flight stays small (counting them costs a few calls into JS).
pub const ACK_BATCH: usize = 64;

/// A frame waiting for room.
struct Queued<T> {
    id: String,
    size: usize,
    page: Option<u64>,
    /// Whether the client Acks it (a chunk); other frames (an `Exit`) go in order, uncounted.
    counted: bool,
    item: T,
}

/// The socket fell too far behind: drop it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overflow;

/// One socket's frames in flight and waiting. `T` is what the edge needs to send a frame.
pub struct Outbox<T> {
    /// Sizes of the unacknowledged chunks of each request id (by its JSON), oldest first.
    in_flight: HashMap<String, VecDeque<usize>>,
    in_flight_bytes: usize,
    in_flight_frames: usize,
    /// How many Acks of each id were counted so far.
    acked: HashMap<String, u64>,
    queue: VecDeque<Queued<T>>,
    /// The broadcast pages the queue refers to: how many frames and their size.
    pages: HashMap<u64, (usize, usize)>,
    page_bytes: usize,
}

impl<T> Default for Outbox<T> {
    fn default() -> Self {
        Outbox {
            in_flight: HashMap::new(),
            in_flight_bytes: 0,
            in_flight_frames: 0,
            acked: HashMap::new(),
            queue: VecDeque::new(),
            pages: HashMap::new(),
            page_bytes: 0,
        }
    }
}

impl<T> Outbox<T> {
    /// Records that the client has acknowledged `total` chunks of request `id` so far (a count
    /// that only grows): frees their room.
    pub fn acked(&mut self, id: &str, total: u64) {
        let seen = self.acked.entry(id.to_owned()).or_insert(0);
        let fresh = total.saturating_sub(*seen);
        *seen = (*seen).max(total);
        let Some(sizes) = self.in_flight.get_mut(id) else {
            return;
        };
        for _ in 0..fresh {
            match sizes.pop_front() {
                Some(size) => {
                    self.in_flight_bytes -= size;
                    self.in_flight_frames -= 1;
                }
                None => break,
            }
        }
        if sizes.is_empty() {
            self.in_flight.remove(id);
        }
    }

    /// The ids with chunks in flight, whose Acks are worth counting.
    pub fn unacknowledged(&self) -> impl Iterator<Item = &str> {
        self.in_flight.keys().map(String::as_str)
    }

    /// Whether the Acks are worth counting now: frames wait for room, or [`ACK_BATCH`] chunks are
    /// in flight.
    pub fn wants_acks(&self) -> bool {
        !self.queue.is_empty() || self.in_flight_frames >= ACK_BATCH
    }

    /// Whether a chunk of `size` bytes for request `id` may go at once (nothing waits and the
    /// window has room); if so it counts as in flight from now on, and the caller sends it.
    /// Spares a broadcast the queue and page bookkeeping when the client keeps up.
    pub fn send_now(&mut self, id: &str, size: usize) -> bool {
        if !self.queue.is_empty()
            || (self.in_flight_bytes > 0 && self.in_flight_bytes + size > WINDOW_BYTES)
        {
            return false;
        }
        self.count_in_flight(id, size);
        true
    }

    fn count_in_flight(&mut self, id: &str, size: usize) {
        self.in_flight_bytes += size;
        self.in_flight_frames += 1;
        match self.in_flight.get_mut(id) {
            Some(sizes) => sizes.push_back(size),
            None => {
                self.in_flight.insert(id.to_owned(), VecDeque::from([size]));
            }
        }
    }

    /// Queues a frame of `size` bytes for request `id`; `page` names the broadcast page it
    /// carries (frames of one page share it). `Err` when the socket has fallen too far behind.
    pub fn enqueue(
        &mut self,
        id: &str,
        size: usize,
        page: Option<u64>,
        item: T,
    ) -> Result<(), Overflow> {
        if let Some(page) = page {
            let (frames, _) = self.pages.entry(page).or_insert_with(|| {
                self.page_bytes += size;
                (0, size)
            });
            *frames += 1;
            if self.page_bytes > MAX_QUEUED_PAGE_BYTES {
                return Err(Overflow);
            }
        }
        self.queue.push_back(Queued {
            id: id.to_owned(),
            size,
            page,
            counted: true,
            item,
        });
        Ok(())
    }

    /// Queues a frame the client does not Ack (an `Exit`, a failure): it goes after what waits
    /// before it, and takes no room.
    pub fn enqueue_uncounted(&mut self, item: T) {
        self.queue.push_back(Queued {
            id: String::new(),
            size: 0,
            page: None,
            counted: false,
            item,
        });
    }

    /// The next frame that may go now (it counts as in flight from then on), if any.
    pub fn pop_ready(&mut self) -> Option<T> {
        let front = self.queue.front()?;
        if front.counted
            && self.in_flight_bytes > 0
            && self.in_flight_bytes + front.size > WINDOW_BYTES
        {
            return None;
        }
        let queued = self.queue.pop_front()?;
        self.release_page(queued.page);
        if !queued.counted {
            return Some(queued.item);
        }
        self.count_in_flight(&queued.id, queued.size);
        Some(queued.item)
    }

    fn release_page(&mut self, page: Option<u64>) {
        let Some(page) = page else { return };
        if let Some((frames, size)) = self.pages.get_mut(&page) {
            *frames -= 1;
            if *frames == 0 {
                self.page_bytes -= *size;
                self.pages.remove(&page);
            }
        }
    }

    /// Whether frames wait for room (then Acks are worth hearing about at once).
    pub fn is_waiting(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Forgets request `id` (the client interrupted it: it will not Ack what it still gets):
    /// its room is freed and its waiting frames are returned, unsent.
    pub fn forget(&mut self, id: &str) -> Vec<T> {
        if let Some(sizes) = self.in_flight.remove(id) {
            self.in_flight_bytes -= sizes.iter().sum::<usize>();
            self.in_flight_frames -= sizes.len();
        }
        let (dropped, kept): (VecDeque<_>, VecDeque<_>) =
            self.queue.drain(..).partition(|q| q.id == id);
        self.queue = kept;
        dropped
            .into_iter()
            .map(|queued| {
                self.release_page(queued.page);
                queued.item
            })
            .collect()
    }

    /// Whether request `id` has frames in flight or waiting.
    pub fn has(&self, id: &str) -> bool {
        self.in_flight.contains_key(id) || self.queue.iter().any(|q| q.counted && q.id == id)
    }

    /// Bytes in flight (for tests and metrics).
    pub fn in_flight_bytes(&self) -> usize {
        self.in_flight_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: usize = 1 << 20;

    fn drain(outbox: &mut Outbox<u32>) -> Vec<u32> {
        std::iter::from_fn(|| outbox.pop_ready()).collect()
    }

    #[test]
    fn chunks_go_while_the_window_has_room_and_acks_free_it() {
        let mut outbox: Outbox<u32> = Outbox::default();
        for n in 0..6 {
            outbox.enqueue("\"1\"", MB, None, n).unwrap();
        }
        assert_eq!(drain(&mut outbox), [0, 1, 2, 3], "4 MB in flight");
        assert!(outbox.is_waiting());
        outbox.acked("\"1\"", 1);
        assert_eq!(drain(&mut outbox), [4]);
        outbox.acked("\"1\"", 1);
        assert_eq!(drain(&mut outbox), Vec::<u32>::new(), "an Ack counts once");
        outbox.acked("\"1\"", 3);
        assert_eq!(drain(&mut outbox), [5]);
        assert!(!outbox.is_waiting());
        outbox.acked("\"1\"", 6);
        assert_eq!(outbox.in_flight_bytes(), 0);
        assert_eq!(outbox.unacknowledged().count(), 0);
    }

    #[test]
    fn uncounted_frames_go_in_order_and_take_no_room() {
        let mut outbox: Outbox<u32> = Outbox::default();
        for n in 0..5 {
            outbox.enqueue("1", MB, None, n).unwrap();
        }
        outbox.enqueue_uncounted(99);
        assert_eq!(drain(&mut outbox), [0, 1, 2, 3]);
        outbox.acked("1", 1);
        assert_eq!(drain(&mut outbox), [4, 99], "the Exit after the last chunk");
        outbox.acked("1", 5);
        assert_eq!(outbox.in_flight_bytes(), 0);
    }

    #[test]
    fn a_chunk_larger_than_the_window_goes_alone() {
        let mut outbox: Outbox<u32> = Outbox::default();
        outbox.enqueue("1", 9 * MB, None, 1).unwrap();
        outbox.enqueue("1", 1, None, 2).unwrap();
        assert_eq!(drain(&mut outbox), [1]);
        outbox.acked("1", 1);
        assert_eq!(drain(&mut outbox), [2]);
    }

    #[test]
    fn acks_count_per_request_id() {
        let mut outbox: Outbox<u32> = Outbox::default();
        outbox.enqueue("1", 3 * MB, None, 1).unwrap();
        outbox.enqueue("2", MB, None, 2).unwrap();
        outbox.enqueue("2", MB, None, 3).unwrap();
        assert_eq!(drain(&mut outbox), [1, 2]);
        outbox.acked("2", 1);
        assert_eq!(drain(&mut outbox), [3]);
        outbox.acked("1", 1);
        assert_eq!(outbox.in_flight_bytes(), MB);
    }

    #[test]
    fn acks_are_wanted_when_frames_wait_or_a_batch_of_chunks_is_in_flight() {
        let mut outbox: Outbox<u32> = Outbox::default();
        for n in 0..ACK_BATCH as u32 - 1 {
            outbox.enqueue("1", 100, None, n).unwrap();
        }
        outbox.enqueue_uncounted(999);
        assert_eq!(drain(&mut outbox).len(), ACK_BATCH);
        assert!(!outbox.wants_acks(), "{} chunks in flight", ACK_BATCH - 1);
        outbox.enqueue("1", 100, None, 1000).unwrap();
        assert!(outbox.wants_acks(), "a frame waits");
        drain(&mut outbox);
        assert!(outbox.wants_acks(), "{ACK_BATCH} chunks in flight");
        outbox.acked("1", 10);
        assert!(!outbox.wants_acks());
        // an interrupted request's chunks no longer count
        outbox.acked("1", 0);
        drop(outbox.forget("1"));
        assert!(!outbox.wants_acks());
        assert_eq!(outbox.in_flight_bytes(), 0);
        // a full window: the next chunk waits, and Acks are wanted for it
        outbox.enqueue("2", WINDOW_BYTES, None, 1).unwrap();
        outbox.enqueue("2", 1, None, 2).unwrap();
        assert_eq!(drain(&mut outbox), [1]);
        assert!(outbox.wants_acks());
    }

    #[test]
    fn frames_of_one_page_count_it_once_and_a_reader_too_far_behind_overflows() {
        let mut outbox: Outbox<u32> = Outbox::default();
        // 200 live pulls of one socket get one 900 kB page: one page's worth waiting
        for n in 0..200 {
            outbox.enqueue(&n.to_string(), 900_000, Some(7), n).unwrap();
        }
        assert_eq!(drain(&mut outbox).len(), 4);
        // a socket that stops reading: distinct pages pile up until it overflows
        let mut page = 8;
        while outbox.enqueue("0", 900_000, Some(page), 0).is_ok() {
            page += 1;
        }
        assert_eq!(page, 8 + (MAX_QUEUED_PAGE_BYTES / 900_000) as u64 - 1);
    }

    #[test]
    fn a_chunk_goes_at_once_only_when_nothing_waits_and_the_window_has_room() {
        let mut outbox: Outbox<u32> = Outbox::default();
        assert!(outbox.send_now("1", 3 * MB));
        assert!(!outbox.send_now("1", 2 * MB), "over the window");
        outbox.enqueue("1", 2 * MB, None, 7).unwrap();
        assert!(!outbox.send_now("2", 1), "a frame waits: it goes first");
        assert_eq!(drain(&mut outbox), Vec::<u32>::new());
        outbox.acked("1", 1);
        assert_eq!(drain(&mut outbox), [7]);
        assert!(outbox.send_now("2", MB));
        assert_eq!(outbox.in_flight_bytes(), 3 * MB);
        assert!(outbox.has("2"));
    }

    #[test]
    fn forgetting_an_interrupted_request_frees_its_room_and_drops_its_frames() {
        let mut outbox: Outbox<u32> = Outbox::default();
        outbox.enqueue("1", 3 * MB, None, 1).unwrap();
        outbox.enqueue("1", 3 * MB, Some(1), 2).unwrap();
        outbox.enqueue("2", 3 * MB, Some(1), 3).unwrap();
        assert_eq!(drain(&mut outbox), [1]);
        assert!(outbox.has("1") && outbox.has("2") && !outbox.has("3"));
        assert_eq!(outbox.forget("1"), [2]);
        assert!(!outbox.has("1"));
        assert_eq!(drain(&mut outbox), [3]);
        assert_eq!(outbox.in_flight_bytes(), 3 * MB);
    }
}
