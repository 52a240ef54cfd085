//! Unit and property tests of [`RaftStorage`] over [`MemDisk`].

use proptest::prelude::*;
use raft::Storage as _;

use super::*;

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("{index}/{term}").into_bytes().into(),
        ..Entry::default()
    }
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range.map(|i| entry(i, term)).collect()
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote,
        commit,
        ..HardState::default()
    }
}

fn conf(voters: &[u64]) -> ConfState {
    ConfState {
        voters: voters.to_vec(),
        ..ConfState::default()
    }
}

/// A bootstrapped storage (snapshot at 1, term 1) on a fresh disk.
fn bootstrapped(disk: &MemDisk) -> RaftStorage<MemDisk> {
    let (mut storage, recovered) = RaftStorage::open(disk.clone()).expect("open");
    assert!(recovered.snapshot.is_none());
    assert!(storage.is_empty());
    storage
        .bootstrap(conf(&[1, 2, 3]), b"state".to_vec())
        .expect("bootstrap");
    storage
}

fn reopen(disk: &MemDisk) -> (RaftStorage<MemDisk>, Recovered) {
    RaftStorage::open(disk.clone()).expect("reopen")
}

fn terms(storage: &RaftStorage<MemDisk>) -> Vec<(u64, u64)> {
    (storage.first()..=storage.last())
        .map(|i| (i, storage.term(i).expect("term")))
        .collect()
}

/// Record kinds are an on-disk format: they must never change.
#[test]
fn record_kinds_are_stable() {
    for (kind, byte) in [
        (RecordKind::Entry, 1u8),
        (RecordKind::HardState, 2),
        (RecordKind::InstallSnapshot, 3),
        (RecordKind::CompactLog, 4),
    ] {
        assert_eq!(kind as u8, byte);
        assert_eq!(RecordKind::from_u8(byte), Some(kind));
    }
    assert_eq!(RecordKind::from_u8(0), None);
}

#[test]
fn bootstrap_creates_snapshot_at_one() {
    let disk = MemDisk::new();
    let storage = bootstrapped(&disk);
    assert_eq!(storage.first(), 2);
    assert_eq!(storage.last(), 1);
    assert_eq!(storage.term(1).ok(), Some(1));
    let state = storage.initial_state().expect("state");
    assert_eq!(state.conf_state.voters, vec![1, 2, 3]);
    assert_eq!(state.hard_state.commit, 1);
    let (storage, recovered) = reopen(&disk);
    assert_eq!(recovered.snapshot.map(|s| s.get_metadata().index), Some(1));
    assert_eq!(storage.first(), 2);
    assert!(!storage.is_empty());
    let mut again = storage;
    assert!(again.bootstrap(conf(&[1]), vec![]).is_err());
}

#[test]
fn appended_entries_and_hard_state_survive_reopen() {
    let disk = MemDisk::new();
    let mut storage = bootstrapped(&disk);
    storage
        .persist_ready(None, &entries(2..=6, 2), Some(&hard_state(2, 1, 4)))
        .expect("persist");
    assert_eq!(
        disk.appends(),
        2,
        "one append for bootstrap, one for the Ready"
    );
    let (reopened, recovered) = reopen(&disk);
    assert_eq!(recovered.entries, 5);
    assert_eq!(terms(&reopened), terms(&storage));
    assert_eq!(reopened.hard_state(), &hard_state(2, 1, 4));
    let got = reopened
        .entries(2, 7, None, GetEntriesContext::empty(false))
        .expect("entries");
    assert_eq!(got, entries(2..=6, 2));
}

#[test]
fn append_drops_the_conflicting_suffix() {
    let disk = MemDisk::new();
    let mut storage = bootstrapped(&disk);
    storage
        .persist_ready(None, &entries(2..=8, 2), None)
        .expect("persist");
    storage
        .persist_ready(None, &entries(5..=6, 3), None)
        .expect("overwrite");
    assert_eq!(storage.last(), 6);
    assert_eq!(storage.term(4).ok(), Some(2));
    assert_eq!(storage.term(5).ok(), Some(3));
    assert!(storage.term(7).is_err());
    let (reopened, _) = reopen(&disk);
    assert_eq!(terms(&reopened), terms(&storage));
}

#[test]
fn append_refuses_a_gap_and_writes_nothing() {
    let disk = MemDisk::new();
    let mut storage = bootstrapped(&disk);
    storage
        .persist_ready(None, &entries(2..=4, 2), None)
        .expect("persist");
    let before = disk.record_count();
    let gap = storage.persist_ready(None, &entries(6..=7, 2), None);
    assert!(matches!(gap, Err(NodeError::Corrupt { .. })), "{gap:?}");
    let below = storage.persist_ready(None, &entries(1..=1, 2), None);
    assert!(matches!(below, Err(NodeError::Corrupt { .. })), "{below:?}");
    let mut holes = entries(5..=7, 2);
    holes.remove(1);
    assert!(storage.persist_ready(None, &holes, None).is_err());
    assert_eq!(disk.record_count(), before);
    assert_eq!(storage.last(), 4);
}

/// Entries 2..=30 on a disk of 4-record segments, then a snapshot at 25 keeping 5 catch-up
/// entries (nothing applied yet); the first records, up to entry 23's, are compacted away.
fn snapshot_at_25_keeping_5(disk: &MemDisk) -> RaftStorage<MemDisk> {
    let mut storage = bootstrapped(disk);
    storage
        .persist_ready(None, &entries(2..=30, 2), Some(&hard_state(2, 1, 30)))
        .expect("persist");
    storage
        .create_snapshot(25, conf(&[1, 2, 3]), b"s25".to_vec(), 5)
        .expect("snapshot");
    storage
}

#[test]
fn term_answers_for_first_index_minus_one_after_compaction() {
    let disk = MemDisk::with_segment_records(4);
    let storage = snapshot_at_25_keeping_5(&disk);
    assert_eq!(storage.first(), 21);
    assert_eq!(storage.term(20).ok(), Some(2), "term(first_index - 1)");
    assert!(matches!(
        storage.term(19),
        Err(raft::Error::Store(StorageError::Compacted))
    ));
    assert!(matches!(
        storage.entries(20, 22, None, GetEntriesContext::empty(false)),
        Err(raft::Error::Store(StorageError::Compacted))
    ));
    // After a restart the log starts right after the snapshot.
    let (reopened, recovered) = reopen(&disk);
    let snapshot = recovered.snapshot.expect("snapshot");
    assert_eq!(snapshot.get_metadata().index, 25);
    assert_eq!(&snapshot.data[..], b"s25");
    assert_eq!(reopened.first(), 26);
    assert_eq!(reopened.last(), 30);
    assert_eq!(reopened.term(25).ok(), Some(2));
    assert!(
        disk.record_count() < 35,
        "the WAL was compacted ({} records)",
        disk.record_count()
    );
}

#[test]
fn entries_respects_max_size_but_returns_at_least_one() {
    let disk = MemDisk::new();
    let mut storage = bootstrapped(&disk);
    storage
        .persist_ready(None, &entries(2..=10, 2), None)
        .expect("persist");
    let one = storage
        .entries(2, 11, Some(1), GetEntriesContext::empty(false))
        .expect("entries");
    assert_eq!(one.len(), 1);
    let size = u64::from(entry(2, 2).compute_size());
    let three = storage
        .entries(2, 11, Some(3 * size), GetEntriesContext::empty(false))
        .expect("entries");
    assert_eq!(three.len(), 3);
    assert!(matches!(
        storage.entries(2, 12, None, GetEntriesContext::empty(false)),
        Err(raft::Error::Store(StorageError::Unavailable))
    ));
}

fn snapshot_at(index: u64, term: u64, voters: &[u64], data: &[u8]) -> Snapshot {
    let mut snapshot = Snapshot::default();
    {
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(conf(voters));
    }
    snapshot.data = data.to_vec().into();
    snapshot
}

#[test]
fn installed_snapshot_replaces_the_log() {
    let disk = MemDisk::new();
    let mut storage = bootstrapped(&disk);
    storage
        .persist_ready(None, &entries(2..=10, 2), Some(&hard_state(2, 0, 3)))
        .expect("persist");
    let snapshot = snapshot_at(50, 4, &[1, 2, 3, 4], b"s50");
    storage
        .persist_ready(
            Some(&snapshot),
            &entries(51..=52, 4),
            Some(&hard_state(4, 0, 50)),
        )
        .expect("install");
    assert_eq!(storage.first(), 51);
    assert_eq!(storage.last(), 52);
    assert_eq!(storage.term(50).ok(), Some(4));
    assert_eq!(storage.hard_state().commit, 50);
    let (reopened, recovered) = reopen(&disk);
    assert_eq!(terms(&reopened), terms(&storage));
    assert_eq!(
        reopened.initial_state().expect("state").conf_state.voters,
        vec![1, 2, 3, 4]
    );
    assert_eq!(
        recovered.snapshot.map(|s| s.data.to_vec()),
        Some(b"s50".to_vec())
    );
}

#[test]
fn crash_between_snapshot_file_and_marker_keeps_a_matching_log() {
    let disk = MemDisk::new();
    let mut storage = bootstrapped(&disk);
    storage
        .persist_ready(None, &entries(2..=20, 2), Some(&hard_state(2, 1, 20)))
        .expect("persist");
    disk.inject(MemDiskFault::FailAppends(1));
    let failed = storage.create_snapshot(15, conf(&[1, 2, 3]), b"s15".to_vec(), 0);
    assert!(matches!(failed, Err(NodeError::Storage { .. })));
    let (reopened, recovered) = reopen(&disk);
    assert_eq!(recovered.snapshot.map(|s| s.get_metadata().index), Some(15));
    assert_eq!(reopened.first(), 16);
    assert_eq!(
        reopened.last(),
        20,
        "entries after a matching snapshot are kept"
    );
}

#[test]
fn crash_between_installed_snapshot_and_marker_discards_a_diverging_log() {
    let disk = MemDisk::new();
    let mut storage = bootstrapped(&disk);
    storage
        .persist_ready(None, &entries(2..=20, 2), Some(&hard_state(2, 1, 3)))
        .expect("persist");
    disk.inject(MemDiskFault::FailAppends(1));
    // The leader's snapshot at 15 has term 3: our entry 15 (term 2) diverges.
    let snapshot = snapshot_at(15, 3, &[1, 2, 3], b"s15");
    assert!(storage
        .persist_ready(Some(&snapshot), &[], Some(&hard_state(3, 0, 15)))
        .is_err());
    let (reopened, _) = reopen(&disk);
    assert_eq!(reopened.first(), 16);
    assert_eq!(reopened.last(), 15, "the diverging entries are gone");
    assert_eq!(reopened.term(15).ok(), Some(3));
    assert_eq!(reopened.hard_state().commit, 15);
}

#[test]
fn snapshot_older_than_the_membership_is_not_sent() {
    let disk = MemDisk::new();
    let mut storage = bootstrapped(&disk);
    storage
        .persist_ready(None, &entries(2..=10, 2), Some(&hard_state(2, 1, 10)))
        .expect("persist");
    assert!(
        storage.snapshot(0, 4).is_ok(),
        "the bootstrap snapshot is current"
    );
    storage.note_conf_change_applied(5);
    assert!(matches!(
        storage.snapshot(0, 4),
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable
        ))
    ));
    assert!(storage.take_snapshot_wanted());
    assert!(!storage.take_snapshot_wanted(), "the request is taken once");
    storage
        .create_snapshot(8, conf(&[1, 2, 3, 4]), b"s8".to_vec(), 100)
        .expect("snapshot");
    let sent = storage.snapshot(0, 4).expect("current snapshot");
    assert_eq!(sent.get_metadata().index, 8);
    assert_eq!(
        sent.get_metadata().get_conf_state().voters,
        vec![1, 2, 3, 4]
    );
    assert_eq!(&sent.data[..], b"s8");
    assert!(matches!(
        storage.snapshot(9, 4),
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable
        ))
    ));
}

#[test]
fn deferred_commit_is_written_with_the_next_batch_or_a_flush() {
    let disk = MemDisk::new();
    let mut storage = bootstrapped(&disk);
    storage
        .persist_ready(None, &entries(2..=5, 2), Some(&hard_state(2, 1, 1)))
        .expect("persist");
    let appends = disk.appends();
    storage.set_commit(4);
    assert!(storage.hard_state_dirty());
    assert_eq!(disk.appends(), appends, "recording a commit does not write");
    assert_eq!(reopen(&disk).0.hard_state().commit, 1);
    storage
        .persist_ready(None, &entries(6..=6, 2), None)
        .expect("persist");
    assert!(!storage.hard_state_dirty());
    assert_eq!(reopen(&disk).0.hard_state().commit, 4);
    storage.set_commit(6);
    storage.flush_hard_state().expect("flush");
    storage.flush_hard_state().expect("nothing to flush");
    assert_eq!(reopen(&disk).0.hard_state().commit, 6);
    // A commit index never goes backwards, even if a Ready carries an older one.
    storage
        .persist_ready(None, &[], Some(&hard_state(3, 2, 2)))
        .expect("persist");
    assert_eq!(storage.hard_state().commit, 6);
}

#[test]
fn corrupt_records_are_errors_not_panics() {
    let disk = MemDisk::new();
    let _ = bootstrapped(&disk);
    let mut raw = disk.clone();
    raw.append(&[(RecordKind::Entry, vec![0xff, 0xff, 0xff])])
        .expect("append");
    assert!(matches!(
        RaftStorage::open(disk.clone()),
        Err(NodeError::Corrupt { .. })
    ));
    // An entry that leaves a gap.
    let disk = MemDisk::new();
    let _ = bootstrapped(&disk);
    let mut raw = disk.clone();
    let payload = entry(9, 2).write_to_bytes().expect("encode");
    raw.append(&[(RecordKind::Entry, payload)]).expect("append");
    assert!(matches!(
        RaftStorage::open(disk.clone()),
        Err(NodeError::Corrupt { .. })
    ));
    // A marker for a snapshot that is not on disk.
    let disk = MemDisk::new();
    let mut raw = disk.clone();
    let meta = snapshot_at(5, 1, &[1], b"").take_metadata();
    raw.append(&[(
        RecordKind::CompactLog,
        meta.write_to_bytes().expect("encode"),
    )])
    .expect("append");
    assert!(matches!(
        RaftStorage::open(disk.clone()),
        Err(NodeError::Corrupt { .. })
    ));
    // An unknown record kind.
    let disk = MemDisk::new();
    let mut raw = disk.clone();
    raw.append(&[(RecordKind::HardState, vec![])])
        .expect("append");
    let (storage, _) = RaftStorage::open(disk.clone()).expect("empty hard state decodes");
    assert!(storage.is_empty());
    assert_eq!(RecordKind::from_u8(9), None);
}

// ---- Property test: the storage against a simple model, with crash/reopen steps. ----

#[derive(Debug, Clone)]
enum Op {
    /// Append `count` entries of `term` starting `back` entries before the end (conflict).
    Append {
        back: u64,
        count: u64,
        term_bump: u64,
    },
    /// Commit up to a fraction of the log.
    Commit { permille: u64 },
    /// Apply up to a fraction of the committed entries (they may leave memory).
    Apply { permille: u64 },
    /// Snapshot at a fraction of the committed prefix.
    Snapshot { permille: u64, catchup: u64 },
    /// Install a snapshot ahead of the log.
    Install { ahead: u64 },
    /// Crash and reopen.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..4, 1u64..6, 0u64..2).prop_map(|(back, count, term_bump)| Op::Append { back, count, term_bump }),
        2 => (0u64..=1000).prop_map(|permille| Op::Commit { permille }),
        2 => (0u64..=1000).prop_map(|permille| Op::Apply { permille }),
        1 => (0u64..=1000, 0u64..4).prop_map(|(permille, catchup)| Op::Snapshot { permille, catchup }),
        1 => (1u64..5).prop_map(|ahead| Op::Install { ahead }),
        1 => Just(Op::Reopen),
    ]
}

/// The model: the log as `(index, term)` from `base + 1`, the base's term, and the commit.
#[derive(Debug, Clone)]
struct Model {
    base: (u64, u64),
    log: Vec<(u64, u64)>,
    commit: u64,
    applied: u64,
    term: u64,
    snapshot: u64,
}

impl Model {
    fn last(&self) -> u64 {
        self.base.0 + self.log.len() as u64
    }

    fn term_of(&self, index: u64) -> Option<u64> {
        if index == self.base.0 {
            return Some(self.base.1);
        }
        let offset = index.checked_sub(self.base.0 + 1)?;
        self.log.get(offset as usize).map(|(_, t)| *t)
    }
}

fn check<D: Disk>(storage: &RaftStorage<D>, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(storage.first(), model.base.0 + 1);
    prop_assert_eq!(storage.last(), model.last());
    for index in model.base.0..=model.last() {
        prop_assert_eq!(
            storage.term(index).ok(),
            model.term_of(index),
            "term({})",
            index
        );
    }
    prop_assert_eq!(storage.hard_state().commit, model.commit);
    // The entries themselves, whether in memory or read back from the disk.
    let (first, last) = (storage.first(), storage.last());
    let all = storage
        .entries(first, last + 1, None, GetEntriesContext::empty(false))
        .map_err(|e| TestCaseError::fail(format!("entries {first}..={last}: {e}")))?;
    let expected: Vec<Entry> = model.log.iter().map(|&(i, t)| entry(i, t)).collect();
    prop_assert_eq!(all, expected);
    if first <= last {
        // A size limit still returns at least one entry.
        let one = storage
            .entries(first, last + 1, Some(0), GetEntriesContext::empty(false))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(one.len(), 1);
        prop_assert_eq!(one[0].index, first);
    }
    // Only applied entries leave memory.
    prop_assert!(
        storage.first_cached() <= (model.applied + 1).max(first),
        "entry {} left memory but only {} is applied",
        storage.first_cached(),
        model.applied
    );
    for index in storage.first_cached()..=last {
        prop_assert_eq!(
            storage.cached_entry(index).map(|e| (e.index, e.term)),
            model.term_of(index).map(|t| (index, t))
        );
    }
    Ok(())
}

/// A disk the property test can reopen after a crash.
trait TestDisk {
    type D: Disk;
    /// Opens the disk (again).
    fn open(&mut self) -> Self::D;
    /// Power loss: whatever was not durable is lost (any prefix of it may survive).
    fn crash(&mut self, seed: u64);
}

struct OnMemDisk(MemDisk);

impl TestDisk for OnMemDisk {
    type D = MemDisk;
    fn open(&mut self) -> MemDisk {
        self.0.clone()
    }
    fn crash(&mut self, _seed: u64) {}
}

/// The real WAL and snapshot store, on the WAL crate's fault-injecting filesystem, with
/// tiny segments so that compaction drops whole segments often.
struct OnWal(wal::FaultFs);

impl TestDisk for OnWal {
    type D = WalDisk;
    fn open(&mut self) -> WalDisk {
        let options = WalDiskOptions {
            segment_size: 1024,
            keep_snapshots: 2,
            fs: std::sync::Arc::new(self.0.clone()),
        };
        WalDisk::open("/data/wal", "/data/snap", options).expect("open the WAL")
    }
    fn crash(&mut self, seed: u64) {
        self.0.crash(wal::Crash::Seeded(seed));
    }
}

fn run_ops(ops: Vec<Op>, cache: usize) -> Result<(), TestCaseError> {
    run_ops_on(ops, cache, OnMemDisk(MemDisk::with_segment_records(3)))
}

fn run_ops_on<T: TestDisk>(ops: Vec<Op>, cache: usize, mut disks: T) -> Result<(), TestCaseError> {
    let (mut storage, _) =
        RaftStorage::open(disks.open()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    storage.set_cache_limit(cache);
    storage
        .bootstrap(conf(&[1, 2, 3]), b"state".to_vec())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut model = Model {
        base: (1, 1),
        log: Vec::new(),
        commit: 1,
        applied: 1,
        term: 1,
        snapshot: 1,
    };
    for (step, op) in ops.into_iter().enumerate() {
        let cold_before = storage.first_cached() - storage.first();
        match op {
            Op::Append {
                back,
                count,
                term_bump,
            } => {
                // Never overwrite committed entries (raft never does).
                let from = (model.last() + 1)
                    .saturating_sub(back)
                    .max(model.commit + 1)
                    .max(model.base.0 + 1);
                model.term += term_bump;
                let new: Vec<Entry> = (from..from + count).map(|i| entry(i, model.term)).collect();
                storage
                    .persist_ready(None, &new, Some(&hard_state(model.term, 0, model.commit)))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                model.log.truncate((from - model.base.0 - 1) as usize);
                model.log.extend(new.iter().map(|e| (e.index, e.term)));
            }
            Op::Commit { permille } => {
                let span = model.last() - model.commit;
                let commit = model.commit + span * permille / 1000;
                storage.set_commit(commit);
                model.commit = commit;
            }
            Op::Apply { permille } => {
                let applied = model.applied + (model.commit - model.applied) * permille / 1000;
                storage.note_applied(applied);
                model.applied = applied;
            }
            Op::Snapshot { permille, catchup } => {
                let low = model.snapshot.max(model.base.0);
                let index = low + (model.commit - low) * permille / 1000;
                storage
                    .create_snapshot(index, conf(&[1]), vec![], catchup)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                if index > model.snapshot {
                    model.snapshot = index;
                    // Catch-up entries that left memory go too once their records are
                    // compacted away: the base may move further, up to the snapshot.
                    let new_base = index.saturating_sub(catchup).max(model.base.0);
                    let base = storage.first() - 1;
                    prop_assert!(
                        (new_base..=index).contains(&base),
                        "base {} after a snapshot at {} keeping {}",
                        base,
                        index,
                        catchup
                    );
                    prop_assert!(
                        base == new_base || base < storage.first_cached(),
                        "base {} moved past entries still in memory",
                        base
                    );
                    let new_base = base;
                    if new_base > model.base.0 {
                        let term = model.term_of(new_base).unwrap_or(0);
                        model.log.drain(..(new_base - model.base.0) as usize);
                        model.base = (new_base, term);
                    }
                }
            }
            Op::Install { ahead } => {
                let index = model.last() + ahead;
                model.term += 1;
                let snapshot = snapshot_at(index, model.term, &[1], b"");
                storage
                    .persist_ready(
                        Some(&snapshot),
                        &[],
                        Some(&hard_state(model.term, 0, index)),
                    )
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                model.base = (index, model.term);
                model.log.clear();
                model.commit = index;
                model.applied = index;
                model.snapshot = index;
            }
            Op::Reopen => {
                // Everything appended was durable; a pending commit is rewritten from the
                // model (it was only in memory).
                drop(storage);
                disks.crash(step as u64);
                let (reopened, _) = RaftStorage::open(disks.open())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                storage = reopened;
                storage.set_cache_limit(cache);
                // After a restart the log starts at the snapshot.
                let snapshot = model.snapshot;
                if snapshot > model.base.0 {
                    let term = model.term_of(snapshot).unwrap_or(0);
                    model.log.drain(..(snapshot - model.base.0) as usize);
                    model.base = (snapshot, term);
                }
                model.commit = storage.hard_state().commit;
                // The state machine restarts from the snapshot.
                model.applied = snapshot;
                prop_assert!(model.commit >= snapshot);
            }
        }
        // Catch-up entries before the snapshot whose records were compacted away leave the
        // log when they leave memory.
        let base = storage.first() - 1;
        if base > model.base.0 {
            prop_assert!(
                base <= model.snapshot && base <= model.applied,
                "entries up to {} left the log; snapshot {}, applied {}",
                base,
                model.snapshot,
                model.applied
            );
            let term = model.term_of(base).unwrap_or(0);
            model.log.drain(..(base - model.base.0) as usize);
            model.base = (base, term);
        }
        check(&storage, &model)?;
        // Entries leave memory only down to the cache limit.
        let cold = storage.first_cached() - storage.first();
        if cold > cold_before {
            let cached = storage.last() + 1 - storage.first_cached();
            prop_assert!(
                cached >= cache as u64,
                "{} entries in memory, cache {}",
                cached,
                cache
            );
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn storage_matches_model_across_crashes(
        ops in proptest::collection::vec(op(), 1..60),
        cache in 1usize..6,
    ) {
        run_ops(ops, cache)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases() / 4 + 1, ..ProptestConfig::default() })]

    /// The same model test over the real WAL on a filesystem that loses unsynced bytes at
    /// every crash.
    #[test]
    fn storage_on_the_wal_matches_model_across_power_loss(
        ops in proptest::collection::vec(op(), 1..60),
        cache in 1usize..6,
    ) {
        run_ops_on(ops, cache, OnWal(wal::FaultFs::new()))?;
    }
}

/// Shrunk by `storage_matches_model_across_crashes`: a second compaction dropped the WAL
/// segments holding the first compaction's snapshot entry, so replay met the first (stale)
/// marker below the surviving log and refused it as corruption.
#[test]
fn regression_stale_compaction_marker_before_surviving_log() {
    let ops = vec![
        Op::Append {
            back: 0,
            count: 1,
            term_bump: 1,
        },
        Op::Append {
            back: 0,
            count: 3,
            term_bump: 0,
        },
        Op::Append {
            back: 0,
            count: 2,
            term_bump: 0,
        },
        Op::Append {
            back: 0,
            count: 3,
            term_bump: 0,
        },
        Op::Commit { permille: 223 },
        Op::Append {
            back: 0,
            count: 1,
            term_bump: 0,
        },
        Op::Snapshot {
            permille: 500,
            catchup: 0,
        },
        Op::Commit { permille: 250 },
        Op::Snapshot {
            permille: 667,
            catchup: 0,
        },
        Op::Reopen,
    ];
    for cache in [1, DEFAULT_CACHE_ENTRIES] {
        if let Err(e) = run_ops(ops.clone(), cache) {
            panic!("cache {cache}: {e}");
        }
    }
}

/// Shrunk by `storage_matches_model_across_crashes`: after compaction the WAL began with a
/// stale compaction marker followed by entries beyond a gap (the stretch in between was
/// covered by a newer snapshot whose marker came later); replay refused the gap.
#[test]
fn regression_stale_marker_then_gap_before_newer_marker() {
    let ops = vec![
        Op::Install { ahead: 1 },
        Op::Append {
            back: 0,
            count: 1,
            term_bump: 0,
        },
        Op::Append {
            back: 0,
            count: 1,
            term_bump: 1,
        },
        Op::Append {
            back: 0,
            count: 5,
            term_bump: 0,
        },
        Op::Commit { permille: 286 },
        Op::Snapshot {
            permille: 500,
            catchup: 0,
        },
        Op::Append {
            back: 0,
            count: 1,
            term_bump: 0,
        },
        Op::Append {
            back: 3,
            count: 5,
            term_bump: 0,
        },
        Op::Append {
            back: 3,
            count: 2,
            term_bump: 0,
        },
        Op::Append {
            back: 0,
            count: 2,
            term_bump: 0,
        },
        Op::Commit { permille: 334 },
        Op::Snapshot {
            permille: 250,
            catchup: 0,
        },
        Op::Append {
            back: 3,
            count: 2,
            term_bump: 0,
        },
        Op::Commit { permille: 800 },
        Op::Snapshot {
            permille: 858,
            catchup: 0,
        },
        Op::Reopen,
    ];
    for cache in [1, DEFAULT_CACHE_ENTRIES] {
        if let Err(e) = run_ops(ops.clone(), cache) {
            panic!("cache {cache}: {e}");
        }
    }
}

/// Shrunk by `storage_on_the_wal_matches_model_across_power_loss`: two snapshots in a row
/// wrote two compaction markers back to back; compaction then deleted the WAL segments
/// holding every entry before them, so replay met the older marker with no entries after
/// it and refused the newer marker as lying beyond the log.
#[test]
fn regression_back_to_back_markers_after_their_entries_were_compacted() {
    let ops = vec![
        Op::Install { ahead: 1 },
        Op::Append {
            back: 0,
            count: 2,
            term_bump: 1,
        },
        Op::Append {
            back: 0,
            count: 5,
            term_bump: 1,
        },
        Op::Append {
            back: 0,
            count: 4,
            term_bump: 0,
        },
        Op::Append {
            back: 0,
            count: 1,
            term_bump: 1,
        },
        Op::Append {
            back: 0,
            count: 2,
            term_bump: 1,
        },
        Op::Append {
            back: 0,
            count: 2,
            term_bump: 1,
        },
        Op::Append {
            back: 0,
            count: 2,
            term_bump: 0,
        },
        Op::Append {
            back: 0,
            count: 2,
            term_bump: 0,
        },
        Op::Append {
            back: 0,
            count: 4,
            term_bump: 0,
        },
        Op::Commit { permille: 0 },
        Op::Append {
            back: 0,
            count: 1,
            term_bump: 1,
        },
        Op::Commit { permille: 0 },
        Op::Append {
            back: 0,
            count: 4,
            term_bump: 1,
        },
        Op::Append {
            back: 1,
            count: 2,
            term_bump: 1,
        },
        Op::Append {
            back: 3,
            count: 5,
            term_bump: 0,
        },
        Op::Commit { permille: 907 },
        Op::Append {
            back: 2,
            count: 2,
            term_bump: 0,
        },
        Op::Snapshot {
            permille: 35,
            catchup: 0,
        },
        Op::Snapshot {
            permille: 965,
            catchup: 0,
        },
        Op::Append {
            back: 2,
            count: 5,
            term_bump: 0,
        },
        Op::Commit { permille: 667 },
        Op::Append {
            back: 3,
            count: 1,
            term_bump: 1,
        },
        Op::Snapshot {
            permille: 440,
            catchup: 2,
        },
        Op::Reopen,
    ];
    for cache in [1, DEFAULT_CACHE_ENTRIES] {
        if let Err(e) = run_ops_on(ops.clone(), cache, OnWal(wal::FaultFs::new())) {
            panic!("cache {cache}: {e}");
        }
    }
}

/// Entries that left memory are read back from the disk, in chunks, and a failed read is
/// answered as `Compacted` (raft then sends a snapshot) and kept for the node.
#[test]
fn applied_entries_leave_memory_and_are_read_back() {
    let disk = MemDisk::new();
    let mut storage = bootstrapped(&disk);
    storage.set_cache_limit(10);
    // 600 entries, a hard state between batches: entry records are not contiguous.
    for batch in 0..60 {
        let from = 2 + batch * 10;
        storage
            .persist_ready(
                None,
                &entries(from..=from + 9, 2),
                Some(&hard_state(2, 1, from + 9)),
            )
            .expect("append");
    }
    assert_eq!(storage.first_cached(), 2, "nothing applied: all in memory");
    storage.note_applied(500);
    // 101 entries are not applied yet: they stay, and no applied one needs to.
    assert_eq!(storage.first_cached(), 501);
    assert!(storage.cached_entry(500).is_none());
    assert!(storage.cached_entry(501).is_some());
    let reads = disk.reads();
    let all = storage
        .entries(2, 602, None, GetEntriesContext::empty(false))
        .expect("entries");
    assert_eq!(all, entries(2..=601, 2));
    assert_eq!(
        disk.reads() - reads,
        2,
        "499 entries in chunks of {READ_CHUNK}"
    );
    // The size limit stops early, reading no more chunks than needed.
    let reads = disk.reads();
    let some = storage
        .entries(2, 602, Some(1), GetEntriesContext::empty(false))
        .expect("entries");
    assert_eq!(some, entries(2..=3, 2)[..1].to_vec());
    assert_eq!(disk.reads() - reads, 1);

    disk.inject(MemDiskFault::FailReads(1));
    assert_eq!(
        storage.entries(100, 110, None, GetEntriesContext::empty(false)),
        Err(raft::Error::Store(StorageError::Compacted))
    );
    let error = storage.take_read_error().expect("the failure is kept");
    assert!(error.to_string().contains("entries 100..=109"), "{error}");
    assert!(storage.take_read_error().is_none(), "reported once");
    // Cached entries need no read.
    assert_eq!(
        storage
            .entries(595, 602, None, GetEntriesContext::empty(false))
            .expect("cached"),
        entries(595..=601, 2)
    );
    // After a restart everything after the snapshot is in memory until applied again.
    drop(storage);
    let (mut storage, _) = reopen(&disk);
    assert_eq!(storage.first_cached(), storage.first());
    storage.set_cache_limit(10);
    storage.note_applied(601);
    assert_eq!(storage.first_cached(), 592);
    assert_eq!(
        storage
            .entries(2, 602, None, GetEntriesContext::empty(false))
            .expect("entries"),
        entries(2..=601, 2)
    );
}

/// A record that does not hold the entry the log expects is corruption, not an answer.
#[test]
fn a_cold_entry_that_does_not_match_the_log_is_an_error() {
    let disk = MemDisk::new();
    let mut storage = bootstrapped(&disk);
    storage.set_cache_limit(1);
    storage
        .persist_ready(None, &entries(2..=5, 2), Some(&hard_state(2, 1, 5)))
        .expect("append");
    storage.note_applied(5);
    assert_eq!(storage.first_cached(), 5);
    // Point entry 2 at the hard state record written after it.
    storage.entry_records[0] += 4;
    let error = storage.entries_in(2, 3, None).expect_err("mismatch");
    assert!(
        error.to_string().contains("no entry record for entry 2"),
        "{error}"
    );
    storage.entry_records[0] -= 4;
    storage.terms[1] = 3;
    let error = storage.entries_in(3, 4, None).expect_err("mismatch");
    assert!(
        error.to_string().contains("not entry 3 of term 3"),
        "{error}"
    );
}

/// Catch-up entries kept in memory after a snapshot whose WAL records were compacted away
/// cannot be read back: when they would leave memory they leave the log instead, and
/// eviction goes on past them (it used to stop there until the next snapshot).
#[test]
fn catch_up_entries_without_records_leave_the_log_when_evicted() {
    let disk = MemDisk::with_segment_records(4);
    let mut storage = snapshot_at_25_keeping_5(&disk);
    storage.set_cache_limit(4);
    // Nothing applied yet (as the node reports it): all of 21..=30 is in memory, though
    // the records of 21..=23 are gone with their segment.
    assert_eq!((storage.first(), storage.first_cached()), (21, 21));
    storage.note_applied(30);
    assert_eq!(storage.first(), 24, "21..=23 left the log");
    assert_eq!(storage.term(23).ok(), Some(2), "term(first_index - 1)");
    assert_eq!(
        storage.first_cached(),
        27,
        "24..=26 read back from the disk now"
    );
    assert_eq!(
        storage
            .entries(24, 31, None, GetEntriesContext::empty(false))
            .expect("entries"),
        entries(24..=30, 2)
    );
}
