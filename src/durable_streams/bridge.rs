//! The rules of the SSE bridge, platform-free.
//!
//! The Worker holds a live SSE reader's `text/event-stream` response. It catches the reader up
//! with plain `GET`s (one read budget each, at the pace the client takes them), and at the tail
//! opens a WebSocket to the stream's object. The object keeps the reader's [`Position`] in that
//! socket's attachment, so it can sleep (hibernate) between appends; after each change it reads
//! once per position, encodes the events once ([`deliver`]) and sends the same frame to every
//! reader there. A reader one read cannot bring to the tail is sent back to catching up
//! ([`CLOSE_RESUME`]); keep-alives, recycling and token expiry are the Worker's, so an idle
//! stream costs its object nothing.

use super::cursor::next_cursor;
use super::read::{read_round, ReadRound, Readable};
use super::sse::{round, Round};
use crate::stream::{SeqNum, StorageError};

/// The object closes a reader's socket with this when the event stream is over (the stream is
/// closed and delivered, or gone).
pub const CLOSE_ENDED: u16 = 1000;
/// The object closes a reader's socket with this when the reader is behind: it catches up with
/// `GET`s and connects again.
pub const CLOSE_RESUME: u16 = 4000;

/// Where a bridged reader stands: the offset it has read up to and the cursor it sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub from: SeqNum,
    pub cursor: Option<u64>,
}

impl Position {
    /// As kept in a socket's attachment: a few bytes, far under the runtime's 16 KiB.
    pub fn to_attachment(&self) -> String {
        match self.cursor {
            Some(cursor) => format!("{}:{cursor}", self.from.get()),
            None => self.from.get().to_string(),
        }
    }

    /// The position an attachment holds, if it holds one.
    pub fn from_attachment(text: &str) -> Option<Position> {
        let (from, cursor) = match text.split_once(':') {
            Some((from, cursor)) => (from, Some(cursor.parse().ok()?)),
            None => (text, None),
        };
        Some(Position {
            from: SeqNum::new(from.parse().ok()?)?,
            cursor,
        })
    }
}

/// A frame from the object to the Worker (a binary message of these bytes, which the Worker
/// writes on without decoding the events): the offset after its events, a line feed, the events.
pub fn encode_frame(next: SeqNum, events: &str) -> String {
    let mut frame = String::with_capacity(events.len() + 21);
    frame.push_str(&next.get().to_string());
    frame.push('\n');
    frame.push_str(events);
    frame
}

/// The offset and events of a frame, if it is one.
pub fn decode_frame(frame: &str) -> Option<(SeqNum, &str)> {
    let (head, events) = frame.split_once('\n')?;
    Some((frame_head(head)?, events))
}

/// The offset a frame's first line names (the Worker reads only that line into Rust; the
/// events go on to the client as they are).
pub fn frame_head(head: &str) -> Option<SeqNum> {
    SeqNum::new(head.parse().ok()?)
}

/// What comes after a frame is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// The readers stay, at the frame's offset.
    Stay,
    /// The readers are behind: close with [`CLOSE_RESUME`].
    Resume,
    /// The stream is closed and delivered: close with [`CLOSE_ENDED`].
    End,
}

/// What the readers at one position get after a change of the log.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Nothing new for them.
    Nothing,
    /// The stream is gone (or is another stream now): close with [`CLOSE_ENDED`].
    Gone,
    /// Send `frame`; they stand at `next` after it.
    Send {
        frame: String,
        next: SeqNum,
        then: Then,
    },
}

/// The delivery for the readers at `at`: one read, whatever their number.
pub async fn deliver(
    log: &impl Readable,
    now_ms: u64,
    at: Position,
) -> Result<Delivery, StorageError> {
    let view = match log.view(false).await? {
        Ok(view) => view,
        Err(_) => return Ok(Delivery::Gone),
    };
    if at.from > view.tail {
        // Deleted and created again, shorter: not the stream they were reading.
        return Ok(Delivery::Gone);
    }
    if at.from == view.tail && !view.closed {
        return Ok(Delivery::Nothing);
    }
    let ReadRound {
        events,
        next,
        at_tail,
        done,
    } = read_round(log, &view, at.from, next_cursor(now_ms, at.cursor), true).await?;
    let events = events.unwrap_or_default();
    let then = if done {
        Then::End
    } else if at_tail {
        Then::Stay
    } else {
        Then::Resume
    };
    Ok(Delivery::Send {
        frame: encode_frame(next, &events),
        next,
        then,
    })
}

/// A catch-up `GET`'s answer, as the Worker turns it into events.
#[derive(Clone, Copy, Debug)]
pub struct Page<'a> {
    /// The offset it was read from.
    pub from: SeqNum,
    /// Its `Stream-Next-Offset`.
    pub next: SeqNum,
    pub up_to_date: bool,
    pub closed: bool,
    pub body: &'a [u8],
}

impl Page<'_> {
    /// Whether the event stream ends with this page.
    pub fn done(&self) -> bool {
        self.up_to_date && self.closed
    }

    /// The events of this page, if it has any: data when it read messages, a control event
    /// then, or when `first` (a new event stream says where it stands) or done.
    pub fn events(
        &self,
        content_type: &str,
        now_ms: u64,
        cursor: Option<u64>,
        first: bool,
    ) -> Option<String> {
        let read = self.next != self.from;
        (read || first || self.done()).then(|| {
            round(
                content_type,
                &Round {
                    body: read.then_some(self.body),
                    next: self.next,
                    at_tail: self.up_to_date,
                    done: self.done(),
                    cursor: next_cursor(now_ms, cursor),
                },
            )
        })
    }
}

/// The control event a quiet event stream at `at` sends now and then.
pub fn keep_alive(content_type: &str, now_ms: u64, at: Position) -> String {
    round(
        content_type,
        &Round {
            body: None,
            next: at.from,
            at_tail: true,
            done: false,
            cursor: next_cursor(now_ms, at.cursor),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable_streams::http::Response;
    use crate::durable_streams::read::{View, READ_BUDGET};
    use crate::stream::readers::{Readers, Wake};
    use crate::stream::{Budget, Message};
    use std::cell::{Cell, RefCell};

    fn seq(n: u64) -> SeqNum {
        SeqNum::new(n).unwrap_or(SeqNum::ROOT)
    }

    #[test]
    fn positions_round_trip_through_attachments() {
        for at in [
            Position {
                from: seq(0),
                cursor: None,
            },
            Position {
                from: seq(42),
                cursor: Some(7),
            },
            Position {
                from: seq(u64::MAX >> 1),
                cursor: Some(u64::MAX),
            },
        ] {
            assert_eq!(Position::from_attachment(&at.to_attachment()), Some(at));
        }
        for bad in ["", "x", "1:", "1:x", ":3", "-1"] {
            assert_eq!(Position::from_attachment(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn frames_round_trip() {
        let frame = encode_frame(seq(12), "event: data\ndata:[1]\n\n");
        assert_eq!(
            decode_frame(&frame),
            Some((seq(12), "event: data\ndata:[1]\n\n"))
        );
        assert_eq!(decode_frame("no offset"), None);
        assert_eq!(decode_frame("x\nevents"), None);
    }

    /// A log in memory, counting its reads.
    struct Log {
        content_type: &'static str,
        messages: RefCell<Vec<Vec<u8>>>,
        closed: Cell<bool>,
        gone: Cell<bool>,
        reads: Cell<usize>,
        readers: Readers,
    }

    impl Log {
        fn new(content_type: &'static str, messages: &[&str]) -> Log {
            Log {
                content_type,
                messages: RefCell::new(messages.iter().map(|m| m.as_bytes().to_vec()).collect()),
                closed: Cell::new(false),
                gone: Cell::new(false),
                reads: Cell::new(0),
                readers: Readers::default(),
            }
        }
    }

    impl Readable for Log {
        async fn view(&self, _access: bool) -> Result<Result<View, Response>, StorageError> {
            if self.gone.get() {
                return Ok(Err(Response::error(404, "gone")));
            }
            Ok(Ok(View {
                content_type: self.content_type.into(),
                tail: seq(self.messages.borrow().len() as u64),
                closed: self.closed.get(),
                incarnation: "1".into(),
            }))
        }

        async fn messages(
            &self,
            after: SeqNum,
            upto: SeqNum,
            budget: Budget,
        ) -> Result<Vec<Message>, StorageError> {
            self.reads.set(self.reads.get() + 1);
            Ok(self
                .messages
                .borrow()
                .iter()
                .enumerate()
                .map(|(i, data)| Message::new(seq(i as u64 + 1), data.clone()))
                .filter(|m| m.seq > after && m.seq <= upto)
                .take(budget.rows)
                .collect())
        }

        fn changed(&self) -> Wake {
            self.readers.wait()
        }
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(out) => out,
            std::task::Poll::Pending => panic!("the log in memory never waits"),
        }
    }

    #[test]
    fn readers_at_the_tail_get_the_new_messages_with_their_control_event() {
        let log = Log::new("application/json", &["1", "2", "3"]);
        let at = Position {
            from: seq(1),
            cursor: None,
        };
        let Ok(Delivery::Send { frame, next, then }) = block_on(deliver(&log, 0, at)) else {
            panic!("expected a frame");
        };
        assert_eq!((next, then), (seq(3), Then::Stay));
        let (offset, events) = decode_frame(&frame).unwrap_or((seq(0), ""));
        assert_eq!(offset, seq(3));
        assert!(
            events.starts_with("event: data\ndata:[2,3]\n\nevent: control\n"),
            "{events}"
        );
        assert!(events.contains("\"upToDate\":true"), "{events}");
        assert!(events.contains("\"streamCursor\""), "{events}");
        assert_eq!(log.reads.get(), 1);
        let at = Position {
            from: seq(3),
            cursor: None,
        };
        assert_eq!(block_on(deliver(&log, 0, at)), Ok(Delivery::Nothing));
        assert_eq!(log.reads.get(), 1, "nothing new, nothing read");
    }

    #[test]
    fn a_closed_stream_ends_its_readers_and_a_gone_one_drops_them() {
        let log = Log::new("text/plain", &["a", "b"]);
        log.closed.set(true);
        let at = Position {
            from: seq(2),
            cursor: None,
        };
        let Ok(Delivery::Send { frame, then, .. }) = block_on(deliver(&log, 0, at)) else {
            panic!("expected the closing control event");
        };
        assert_eq!(then, Then::End);
        assert!(frame.contains("\"streamClosed\":true"), "{frame}");
        assert!(!frame.contains("event: data"), "{frame}");
        log.gone.set(true);
        assert_eq!(block_on(deliver(&log, 0, at)), Ok(Delivery::Gone));
        log.gone.set(false);
        let ahead = Position {
            from: seq(5),
            cursor: None,
        };
        assert_eq!(block_on(deliver(&log, 0, ahead)), Ok(Delivery::Gone));
    }

    #[test]
    fn a_reader_one_read_cannot_bring_to_the_tail_resumes_by_catching_up() {
        let many: Vec<String> = (0..READ_BUDGET.rows + 5).map(|i| i.to_string()).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let log = Log::new("application/json", &refs);
        let at = Position {
            from: seq(0),
            cursor: None,
        };
        let Ok(Delivery::Send { next, then, .. }) = block_on(deliver(&log, 0, at)) else {
            panic!("expected a frame");
        };
        assert_eq!(next, seq(READ_BUDGET.rows as u64));
        assert_eq!(then, Then::Resume);
    }

    #[test]
    fn binary_streams_send_base64_and_keep_alives_say_where_the_reader_is() {
        let log = Log::new("application/octet-stream", &["\u{1}\u{2}"]);
        let at = Position {
            from: seq(0),
            cursor: Some(3),
        };
        let Ok(Delivery::Send { frame, .. }) = block_on(deliver(&log, 0, at)) else {
            panic!("expected a frame");
        };
        assert!(frame.contains("data:AQI=\n"), "{frame}");
        let alive = keep_alive(
            "text/plain",
            0,
            Position {
                from: seq(7),
                cursor: None,
            },
        );
        assert!(alive.starts_with("event: control\n"), "{alive}");
        assert!(alive.contains("\"upToDate\":true"), "{alive}");
        assert!(!alive.contains("event: data"), "{alive}");
    }

    #[test]
    fn catch_up_pages_become_events() {
        let page = Page {
            from: seq(0),
            next: seq(2),
            up_to_date: false,
            closed: false,
            body: b"[1,2]",
        };
        let events = page
            .events("application/json", 0, None, false)
            .unwrap_or_default();
        assert!(
            events.starts_with("event: data\ndata:[1,2]\n\n"),
            "{events}"
        );
        assert!(!events.contains("upToDate"), "{events}");
        let empty = Page {
            from: seq(2),
            next: seq(2),
            up_to_date: true,
            closed: false,
            body: b"[]",
        };
        assert_eq!(empty.events("application/json", 0, None, false), None);
        let first = empty
            .events("application/json", 0, None, true)
            .unwrap_or_default();
        assert!(
            first.starts_with("event: control\n") && first.contains("upToDate"),
            "{first}"
        );
        let end = Page {
            closed: true,
            ..empty
        };
        assert!(end.done());
        let last = end
            .events("application/json", 0, None, false)
            .unwrap_or_default();
        assert!(last.contains("\"streamClosed\":true"), "{last}");
    }
}
