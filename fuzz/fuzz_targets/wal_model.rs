//! Model-based fuzzing of the WAL: arbitrary sequences of append / sync / truncate /
//! compact / reset / crash / reopen / read (and faults during appends and truncations) run
//! against `wal::model::Harness`, which panics on any divergence from the reference model.
//! A crash keeps a seeded prefix of the unsynced bytes. Replay a finding as a named
//! regression test in wal/tests/model.rs.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use wal::model::{Harness, Op};
use wal::SyncPolicy;

#[derive(Arbitrary, Debug)]
enum FuzzOp {
    Append {
        sizes: Vec<u8>,
        kind: u8,
        big: bool,
    },
    Sync,
    Truncate {
        keep: u64,
    },
    Compact {
        upto: u64,
    },
    Reset {
        skip: u8,
    },
    Crash {
        seed: u64,
    },
    Reopen,
    Read {
        start: u64,
        len: u64,
    },
    TruncateThenCrash {
        keep: u64,
        seed: u64,
    },
    FaultyAppendThenCrash {
        sizes: Vec<u8>,
        fail_sync: bool,
        budget: u16,
        seed: u64,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    always: bool,
    segment_size: u16,
    ops: Vec<FuzzOp>,
}

fn sizes(raw: Vec<u8>, big: bool) -> Vec<u16> {
    let scale = if big { 8 } else { 1 };
    let mut v: Vec<u16> = raw
        .into_iter()
        .take(8)
        .map(|s| u16::from(s) * scale)
        .collect();
    if v.is_empty() {
        v.push(0);
    }
    v
}

impl From<FuzzOp> for Op {
    fn from(op: FuzzOp) -> Op {
        match op {
            FuzzOp::Append {
                sizes: s,
                kind,
                big,
            } => Op::Append {
                sizes: sizes(s, big),
                kind,
            },
            FuzzOp::Sync => Op::Sync,
            FuzzOp::Truncate { keep } => Op::Truncate { keep },
            FuzzOp::Compact { upto } => Op::Compact { upto },
            FuzzOp::Reset { skip } => Op::Reset { skip: skip % 4 },
            FuzzOp::Crash { seed } => Op::Crash { seed },
            FuzzOp::Reopen => Op::Reopen,
            FuzzOp::Read { start, len } => Op::Read { start, len },
            FuzzOp::TruncateThenCrash { keep, seed } => Op::TruncateThenCrash { keep, seed },
            FuzzOp::FaultyAppendThenCrash {
                sizes: s,
                fail_sync,
                budget,
                seed,
            } => Op::FaultyAppendThenCrash {
                sizes: sizes(s, false),
                fail_sync,
                budget,
                seed,
            },
        }
    }
}

fuzz_target!(|input: Input| {
    let ops: Vec<Op> = input.ops.into_iter().take(64).map(Op::from).collect();
    let sync = if input.always {
        SyncPolicy::Always
    } else {
        SyncPolicy::Never
    };
    let segment_size = 64 + u64::from(input.segment_size % 4032);
    if let Err(divergence) = Harness::run(sync, segment_size, &ops) {
        panic!("WAL diverged from the model: {divergence}\nops: {ops:#?}");
    }
});
