//! Preconditions of an append: what must hold for entries to be written, checked under the
//! writer lock against the log's cached state, in one order whatever the protocol:
//!
//! 1. the expected tail (LiveStore: the batch's first `parentSeqNum` is the head);
//! 2. the log is open (Durable Streams: not closed);
//! 3. the content type matches;
//! 4. the idempotent producer's claim (a duplicate is answered before the next rule);
//! 5. `Stream-Seq` advances.

use super::producer::{decide, ProducerClaim, ProducerState, Verdict};
use super::seq::SeqNum;
use super::store::Header;

/// One condition an append sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition<'a> {
    /// The tail is exactly this.
    ExpectTail(SeqNum),
    /// The log is not closed.
    Open,
    /// The appended data has this content type, which the log must accept.
    ContentType(&'a str),
    /// An idempotent producer's claim.
    Producer(&'a ProducerClaim),
    /// A `Stream-Seq` that must sort after the last one accepted.
    StreamSeq(&'a str),
}

/// Why an append was refused; nothing was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The tail is not the expected one.
    TailMoved {
        tail: SeqNum,
        expected: SeqNum,
    },
    Closed,
    ContentType,
    /// The producer's claim is not new data: a duplicate, a stale epoch, a gap, or a sequence that
    /// had to start at 0 (`Verdict::Accept` never appears here).
    Producer(Verdict),
    StreamSeq,
}

/// What an admitted append must write besides its entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Admission {
    /// The producer's new state.
    pub producer: Option<ProducerState>,
}

/// Whether `next` may follow `last` as a `Stream-Seq`: strictly greater, compared byte-wise (so
/// `"10"` does not follow `"2"`, but `"10"` follows `"09"`).
pub fn stream_seq_advances(last: Option<&str>, next: &str) -> bool {
    last.is_none_or(|last| next.as_bytes() > last.as_bytes())
}

/// Checks `conditions` against the log's state (`producer`: the stored state of the claiming
/// producer, when a condition names one).
pub fn check<H: Header>(
    conditions: &[Precondition<'_>],
    header: Option<&H>,
    tail: SeqNum,
    producer: Option<ProducerState>,
) -> Result<Admission, Refusal> {
    let find = |pick: fn(&Precondition<'_>) -> bool| conditions.iter().find(|c| pick(c));
    if let Some(Precondition::ExpectTail(expected)) =
        find(|c| matches!(c, Precondition::ExpectTail(_)))
    {
        if *expected != tail {
            return Err(Refusal::TailMoved {
                tail,
                expected: *expected,
            });
        }
    }
    if find(|c| matches!(c, Precondition::Open)).is_some() && header.is_some_and(H::closed) {
        return Err(Refusal::Closed);
    }
    if let Some(Precondition::ContentType(content_type)) =
        find(|c| matches!(c, Precondition::ContentType(_)))
    {
        if !header.is_some_and(|h| h.accepts_content_type(content_type)) {
            return Err(Refusal::ContentType);
        }
    }
    let mut admission = Admission::default();
    if let Some(Precondition::Producer(claim)) = find(|c| matches!(c, Precondition::Producer(_))) {
        match decide(producer, claim) {
            Verdict::Accept { state } => admission.producer = Some(state),
            refused => return Err(Refusal::Producer(refused)),
        }
    }
    if let Some(Precondition::StreamSeq(seq)) = find(|c| matches!(c, Precondition::StreamSeq(_))) {
        if !stream_seq_advances(header.and_then(H::last_stream_seq), seq) {
            return Err(Refusal::StreamSeq);
        }
    }
    Ok(admission)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Meta {
        closed: bool,
        content_type: Option<String>,
        last_seq: Option<String>,
    }

    impl Header for Meta {
        fn closed(&self) -> bool {
            self.closed
        }
        fn accepts_content_type(&self, content_type: &str) -> bool {
            self.content_type.as_deref() == Some(content_type)
        }
        fn last_stream_seq(&self) -> Option<&str> {
            self.last_seq.as_deref()
        }
    }

    fn seq(n: u64) -> SeqNum {
        SeqNum::new(n).unwrap()
    }

    fn claim(epoch: u64, seq: u64) -> ProducerClaim {
        ProducerClaim {
            id: "p".into(),
            epoch,
            seq,
        }
    }

    #[test]
    fn stream_seq_compares_bytes() {
        assert!(stream_seq_advances(None, "1"));
        assert!(!stream_seq_advances(Some("2"), "10"));
        assert!(stream_seq_advances(Some("09"), "10"));
        assert!(!stream_seq_advances(Some("5"), "5"));
        assert!(!stream_seq_advances(Some("b"), "B"), "case-sensitive");
    }

    #[test]
    fn the_expected_tail() {
        let header = Meta::default();
        assert_eq!(
            check(
                &[Precondition::ExpectTail(seq(3))],
                Some(&header),
                seq(3),
                None
            ),
            Ok(Admission::default())
        );
        assert_eq!(
            check(
                &[Precondition::ExpectTail(seq(2))],
                Some(&header),
                seq(3),
                None
            ),
            Err(Refusal::TailMoved {
                tail: seq(3),
                expected: seq(2)
            })
        );
    }

    #[test]
    fn closed_comes_before_content_type_which_comes_before_stream_seq() {
        let header = Meta {
            closed: true,
            content_type: Some("application/json".into()),
            last_seq: Some("5".into()),
        };
        let all = [
            Precondition::StreamSeq("4"),
            Precondition::ContentType("text/plain"),
            Precondition::Open,
        ];
        assert_eq!(
            check(&all, Some(&header), seq(0), None),
            Err(Refusal::Closed)
        );
        let open = Meta {
            closed: false,
            ..header
        };
        assert_eq!(
            check(&all, Some(&open), seq(0), None),
            Err(Refusal::ContentType)
        );
        assert_eq!(
            check(
                &[
                    Precondition::StreamSeq("4"),
                    Precondition::ContentType("application/json")
                ],
                Some(&open),
                seq(0),
                None
            ),
            Err(Refusal::StreamSeq)
        );
        assert!(check(&[Precondition::StreamSeq("6")], Some(&open), seq(0), None).is_ok());
    }

    #[test]
    fn a_duplicate_is_answered_before_stream_seq_and_an_accepted_claim_is_admitted() {
        let header = Meta {
            last_seq: Some("9".into()),
            ..Meta::default()
        };
        let stored = Some(ProducerState {
            epoch: 0,
            last_seq: 4,
        });
        let duplicate = claim(0, 4);
        assert_eq!(
            check(
                &[
                    Precondition::StreamSeq("1"),
                    Precondition::Producer(&duplicate)
                ],
                Some(&header),
                seq(0),
                stored
            ),
            Err(Refusal::Producer(Verdict::Duplicate {
                epoch: 0,
                last_seq: 4
            }))
        );
        let next = claim(0, 5);
        assert_eq!(
            check(
                &[Precondition::Producer(&next)],
                Some(&header),
                seq(0),
                stored
            ),
            Ok(Admission {
                producer: Some(ProducerState {
                    epoch: 0,
                    last_seq: 5
                })
            })
        );
        assert_eq!(
            check(
                &[Precondition::Producer(&claim(0, 7))],
                Some(&header),
                seq(0),
                stored
            ),
            Err(Refusal::Producer(Verdict::Gap {
                expected: 5,
                received: 7
            }))
        );
    }
}
