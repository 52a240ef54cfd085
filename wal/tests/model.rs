//! Property test: random append / sync / truncate / compact / reset / crash / reopen / read
//! sequences against the reference model in `wal::model` (a `Vec` of records with a durable
//! prefix). A crash keeps a seeded prefix of the unsynced bytes; after it the log must be the
//! durable prefix, possibly followed by a prefix of the unsynced records.
//!
//! `PROPTEST_CASES` sets the number of cases (default 96, kept small so the suite stays
//! fast; run e.g. `PROPTEST_CASES=5000 cargo test -p wal --test model` for a deeper search).
//! Shrunk failures are kept below as named regression tests.

use proptest::prelude::*;
use wal::model::{Harness, Op};
use wal::SyncPolicy;

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::collection::vec(prop_oneof![3 => 0u16..40, 1 => 0u16..400], 1..6), any::<u8>())
            .prop_map(|(sizes, kind)| Op::Append { sizes, kind }),
        2 => Just(Op::Sync),
        1 => any::<u64>().prop_map(|keep| Op::Truncate { keep }),
        1 => any::<u64>().prop_map(|upto| Op::Compact { upto }),
        1 => (0u8..3).prop_map(|skip| Op::Reset { skip }),
        2 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
        1 => Just(Op::Reopen),
        1 => (any::<u64>(), any::<u64>()).prop_map(|(keep, seed)| Op::TruncateThenCrash { keep, seed }),
        1 => (prop::collection::vec(0u16..200, 1..4), any::<bool>(), 0u16..600, any::<u64>())
            .prop_map(|(sizes, fail_sync, budget, seed)| Op::FaultyAppendThenCrash { sizes, fail_sync, budget, seed }),
        1 => (any::<u64>(), any::<u64>()).prop_map(|(start, len)| Op::Read { start, len }),
    ]
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn wal_matches_model_with_sync_never(
        segment_size in prop_oneof![Just(64u64), 128u64..1024],
        ops in prop::collection::vec(op_strategy(), 1..60),
    ) {
        if let Err(d) = Harness::run(SyncPolicy::Never, segment_size, &ops) {
            prop_assert!(false, "{}", d);
        }
    }

    #[test]
    fn wal_matches_model_with_sync_always(
        segment_size in 128u64..1024,
        ops in prop::collection::vec(op_strategy(), 1..40),
    ) {
        if let Err(d) = Harness::run(SyncPolicy::Always, segment_size, &ops) {
            prop_assert!(false, "{}", d);
        }
    }
}

/// Runs a fixed op list and panics with the divergence, for regression tests.
fn replay(sync: SyncPolicy, segment_size: u64, ops: &[Op]) {
    if let Err(d) = Harness::run(sync, segment_size, ops) {
        panic!("{d}");
    }
}

#[test]
fn regression_crash_after_rollover_keeps_sealed_segment() {
    // Unsynced records, then a rollover (which syncs the sealed segment), then a crash
    // that drops everything unsynced in the new segment.
    replay(
        SyncPolicy::Never,
        128,
        &[
            Op::Append {
                sizes: vec![30, 30],
                kind: 1,
            },
            Op::Append {
                sizes: vec![30, 30],
                kind: 2,
            },
            Op::Crash { seed: 0 },
            Op::Read { start: 0, len: 10 },
        ],
    );
}

#[test]
fn regression_truncate_to_first_record_of_a_later_segment() {
    replay(
        SyncPolicy::Never,
        64,
        &[
            Op::Append {
                sizes: vec![0, 0, 0, 0],
                kind: 0,
            },
            Op::Truncate { keep: 2 },
            Op::Append {
                sizes: vec![5],
                kind: 0,
            },
            Op::Crash { seed: 7 },
            Op::Reopen,
        ],
    );
}

#[test]
fn regression_compact_then_reset_then_crash() {
    replay(
        SyncPolicy::Never,
        64,
        &[
            Op::Append {
                sizes: vec![1, 2, 3],
                kind: 9,
            },
            Op::Sync,
            Op::Compact { upto: 3 },
            Op::Reset { skip: 2 },
            Op::Append {
                sizes: vec![4],
                kind: 9,
            },
            Op::Crash { seed: 3 },
        ],
    );
}

/// Found by proptest against a WAL that zeroed dropped frames first-to-last: a crash in the
/// middle of a truncation left zeros *before* still-valid frames, which recovery must (and
/// did) call corruption. Zeroing last-to-first keeps every interrupted state a clean prefix.
#[test]
fn regression_interrupted_truncate_leaves_a_prefix_not_a_hole() {
    replay(
        SyncPolicy::Never,
        656,
        &[
            Op::Append {
                sizes: vec![0, 0, 0, 0, 0],
                kind: 0,
            },
            Op::TruncateThenCrash {
                keep: 2817433512348,
                seed: 1281073370140779204,
            },
        ],
    );
}
