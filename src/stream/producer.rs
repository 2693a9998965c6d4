//! Idempotent producers (Kafka-style fencing): each producer id has an epoch and a sequence;
//! retries are recognised as duplicates, zombies from older epochs are fenced off, and gaps
//! are refused. Decided before anything is written, and committed with the append.

/// What is remembered of a producer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ProducerState {
    pub epoch: u64,
    /// The highest sequence number accepted in `epoch`.
    pub last_seq: u64,
}

/// The producer headers of a request (`Producer-Id`, `Producer-Epoch`, `Producer-Seq`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerClaim {
    pub id: String,
    pub epoch: u64,
    pub seq: u64,
}

/// The verdict on a claim.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// New data: append it, then remember `state`.
    Accept { state: ProducerState },
    /// Already written: acknowledge without writing. `last_seq` is the highest accepted.
    Duplicate { epoch: u64, last_seq: u64 },
    /// An older epoch (a zombie): 403 with the current epoch.
    StaleEpoch { current: u64 },
    /// A new epoch, or a new producer, must start at sequence 0: 400.
    MustStartAtZero,
    /// A sequence gap: 409 with what was expected.
    Gap { expected: u64, received: u64 },
}

/// Decides a claim against the remembered state of its producer.
pub fn decide(state: Option<ProducerState>, claim: &ProducerClaim) -> Verdict {
    let accept = Verdict::Accept {
        state: ProducerState {
            epoch: claim.epoch,
            last_seq: claim.seq,
        },
    };
    let Some(state) = state else {
        return if claim.seq == 0 {
            accept
        } else {
            Verdict::MustStartAtZero
        };
    };
    if claim.epoch < state.epoch {
        Verdict::StaleEpoch {
            current: state.epoch,
        }
    } else if claim.epoch > state.epoch {
        if claim.seq == 0 {
            accept
        } else {
            Verdict::MustStartAtZero
        }
    } else if claim.seq <= state.last_seq {
        Verdict::Duplicate {
            epoch: state.epoch,
            last_seq: state.last_seq,
        }
    } else if claim.seq == state.last_seq + 1 {
        accept
    } else {
        Verdict::Gap {
            expected: state.last_seq + 1,
            received: claim.seq,
        }
    }
}

/// Why producer headers were refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("Producer-Id, Producer-Epoch and Producer-Seq must be sent together")]
    Incomplete,
    #[error("Producer-Id must not be empty")]
    EmptyId,
    #[error("{0} must be a non-negative integer no larger than 2^53-1")]
    NotAnInteger(&'static str),
}

/// Parses the three producer headers: `Ok(None)` when none is present.
pub fn parse_claim(
    id: Option<&str>,
    epoch: Option<&str>,
    seq: Option<&str>,
) -> Result<Option<ProducerClaim>, ClaimError> {
    match (id, epoch, seq) {
        (None, None, None) => Ok(None),
        (Some(id), Some(epoch), Some(seq)) => {
            if id.is_empty() {
                return Err(ClaimError::EmptyId);
            }
            Ok(Some(ProducerClaim {
                id: id.to_owned(),
                epoch: parse_integer(epoch, "Producer-Epoch")?,
                seq: parse_integer(seq, "Producer-Seq")?,
            }))
        }
        _ => Err(ClaimError::Incomplete),
    }
}

/// A decimal integer in `0..=2^53-1`: digits only (no sign, no exponent).
fn parse_integer(text: &str, header: &'static str) -> Result<u64, ClaimError> {
    if text.is_empty() || text.len() > 16 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ClaimError::NotAnInteger(header));
    }
    text.parse::<u64>()
        .ok()
        .filter(|&n| n <= super::seq::MAX_SAFE_INTEGER)
        .ok_or(ClaimError::NotAnInteger(header))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(epoch: u64, seq: u64) -> ProducerClaim {
        ProducerClaim {
            id: "p".into(),
            epoch,
            seq,
        }
    }

    fn state(epoch: u64, last_seq: u64) -> Option<ProducerState> {
        Some(ProducerState { epoch, last_seq })
    }

    #[test]
    fn new_producers_start_at_zero() {
        assert!(matches!(decide(None, &claim(0, 0)), Verdict::Accept { .. }));
        assert!(matches!(decide(None, &claim(5, 0)), Verdict::Accept { .. }));
        assert_eq!(decide(None, &claim(0, 1)), Verdict::MustStartAtZero);
    }

    #[test]
    fn sequences_within_an_epoch() {
        assert_eq!(
            decide(state(0, 2), &claim(0, 3)),
            Verdict::Accept {
                state: ProducerState {
                    epoch: 0,
                    last_seq: 3
                }
            }
        );
        assert_eq!(
            decide(state(0, 2), &claim(0, 1)),
            Verdict::Duplicate {
                epoch: 0,
                last_seq: 2
            },
            "a duplicate reports the highest accepted seq"
        );
        assert_eq!(
            decide(state(0, 2), &claim(0, 2)),
            Verdict::Duplicate {
                epoch: 0,
                last_seq: 2
            }
        );
        assert_eq!(
            decide(state(0, 2), &claim(0, 5)),
            Verdict::Gap {
                expected: 3,
                received: 5
            }
        );
    }

    #[test]
    fn epochs_fence_zombies() {
        assert_eq!(
            decide(state(3, 9), &claim(2, 10)),
            Verdict::StaleEpoch { current: 3 }
        );
        assert!(matches!(
            decide(state(3, 9), &claim(4, 0)),
            Verdict::Accept { .. }
        ));
        assert_eq!(decide(state(3, 9), &claim(4, 1)), Verdict::MustStartAtZero);
    }

    #[test]
    fn parses_headers_strictly() {
        assert_eq!(parse_claim(None, None, None), Ok(None));
        assert_eq!(
            parse_claim(Some("p"), Some("1"), Some("2")),
            Ok(Some(claim(1, 2)))
        );
        assert_eq!(
            parse_claim(Some("p"), Some("1"), None),
            Err(ClaimError::Incomplete)
        );
        assert_eq!(
            parse_claim(None, None, Some("0")),
            Err(ClaimError::Incomplete)
        );
        assert_eq!(
            parse_claim(Some(""), Some("0"), Some("0")),
            Err(ClaimError::EmptyId)
        );
        for bad in [
            "1abc",
            "0xyz",
            "1e3",
            "-1",
            "+1",
            "",
            " 1",
            "1.0",
            "9007199254740992",
        ] {
            assert!(
                parse_claim(Some("p"), Some(bad), Some("0")).is_err(),
                "epoch {bad:?}"
            );
            assert!(
                parse_claim(Some("p"), Some("0"), Some(bad)).is_err(),
                "seq {bad:?}"
            );
        }
    }
}
