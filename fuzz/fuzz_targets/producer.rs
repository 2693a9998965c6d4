//! Idempotent-producer headers (`Producer-Id`, `Producer-Epoch`, `Producer-Seq`) and the
//! fencing decision: parsing never panics and only admits safe integers; the decision is
//! total over every remembered state.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use livestore_sync_rs::stream::producer::{decide, parse_claim, ProducerState, Verdict};
use livestore_sync_rs::stream::seq::MAX_SAFE_INTEGER;

fuzz_target!(|data: &[u8]| {
    let Some((&present, rest)) = data.split_first() else {
        return;
    };
    let mut parts = common::parts(rest).map(common::text);
    let mut header = |bit: u8| {
        let value = parts.next().flatten();
        value.filter(|_| present & bit != 0)
    };
    let (id, epoch, seq) = (header(1), header(2), header(4));
    let Ok(Some(claim)) = parse_claim(id, epoch, seq) else {
        return;
    };
    assert!(!claim.id.is_empty());
    assert!(claim.epoch <= MAX_SAFE_INTEGER && claim.seq <= MAX_SAFE_INTEGER);
    assert_eq!(epoch.and_then(|e| e.parse().ok()), Some(claim.epoch));
    assert_eq!(seq.and_then(|s| s.parse().ok()), Some(claim.seq));
    // Any remembered state, including values no valid claim could have left.
    let number = |bytes: &[u8]| {
        let mut padded = [0u8; 8];
        for (slot, byte) in padded.iter_mut().zip(bytes) {
            *slot = *byte;
        }
        u64::from_le_bytes(padded)
    };
    let tail = common::parts(rest).last().unwrap_or_default();
    let state = (present & 8 != 0).then(|| ProducerState {
        epoch: number(tail),
        last_seq: number(tail.get(8..).unwrap_or_default()),
    });
    match decide(state, &claim) {
        Verdict::Accept { state: accepted } => {
            assert_eq!(
                (accepted.epoch, accepted.last_seq),
                (claim.epoch, claim.seq)
            );
        }
        Verdict::Duplicate { last_seq, .. } => assert!(claim.seq <= last_seq),
        Verdict::StaleEpoch { current } => assert!(claim.epoch < current),
        Verdict::MustStartAtZero => assert_ne!(claim.seq, 0),
        Verdict::Gap { expected, received } => assert_ne!(expected, received),
    }
});
