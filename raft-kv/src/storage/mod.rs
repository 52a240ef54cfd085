//! Durable raft state: a [`raft::Storage`] over a record log and a snapshot store.
//!
//! # What it is for
//!
//! raft-rs reads its log through the read-only [`raft::Storage`] trait and leaves writing to
//! the application. [`RaftStorage`] is that application side: it keeps the live part of the
//! log in memory (so `entries()` and `term()` never touch the disk) and makes every change
//! durable through a [`Disk`] — in production the project's `wal` crate (a write-ahead log of
//! opaque records plus a snapshot store), in tests an in-memory [`MemDisk`].
//!
//! # What is written, and when it is durable
//!
//! The node calls [`RaftStorage::persist_ready`] once per raft `Ready`. It writes, in this
//! order, as **one** [`Disk::append`] call (one fsync):
//!
//! 1. if the `Ready` carries a snapshot from the leader: the snapshot file first (its own
//!    fsync, inside the snapshot store), then an [`RecordKind::InstallSnapshot`] marker;
//! 2. the new entries ([`RecordKind::Entry`]);
//! 3. the hard state ([`RecordKind::HardState`]: term, vote, commit) if it changed.
//!
//! When `persist_ready` returns, all of it is durable; only then does the node send the
//! messages that promise it (votes, append acknowledgements). The commit index that raft
//! reports in a `LightReady` (after `advance`) is recorded in memory and written with the
//! next batch — or at the next tick if the node is idle — never dropped (raft-rs issue 408).
//! That is safe here because the state machine lives in memory: what has been applied
//! becomes durable only through a snapshot, and recovery re-asserts `commit >= snapshot
//! index`.
//!
//! Every `snapshot_interval` applied entries the node calls [`RaftStorage::create_snapshot`]:
//! the snapshot file is saved (fsync, rename, directory fsync — the snapshot store's job),
//! then a [`RecordKind::CompactLog`] marker and the current hard state are appended, then the
//! WAL prefix that only holds entries at or below the snapshot index is dropped
//! ([`Disk::compact_prefix`], whole segments only), and the log keeps `catchup_entries`
//! entries before the snapshot (those still in memory or on disk) so slow followers can
//! still catch up from the log instead of a snapshot.
//!
//! # What stays in memory
//!
//! Every entry's term and record index stay in memory (16 bytes an entry), so `term()`
//! never touches the disk. The entries themselves are kept only for the newest part of the
//! log: while more than the cache limit ([`RaftStorage::set_cache_limit`],
//! [`DEFAULT_CACHE_ENTRIES`] by default) are held, the oldest applied ones are dropped from
//! memory and read back from the disk
//! ([`Disk::read`]) when raft asks for them: a follower that fell behind, or one
//! catching up after a restart. Followers in step and the state machine only ever ask
//! for entries still in memory. Between two snapshots the log grows to `snapshot_interval`
//! entries (100,000 by default, as etcd's `--snapshot-count`); held in full that would be
//! 20–30 MB per member.
//!
//! A read that fails (an I/O error, a record that does not decode or does not match the
//! log) is answered as `Compacted`, so raft sends the follower a snapshot instead, and is
//! kept for [`RaftStorage::take_read_error`]: the node stops on it, as on a failed write.
//!
//! # Log records
//!
//! The record index of the log is the [`Disk`]'s own sequence, independent of raft indexes.
//! Each record is `(kind: u8, payload)`; payloads are protobuf messages of `eraftpb`
//! (see [`RecordKind`]). Replay on open folds the records in order:
//!
//! - `Entry(e)`: drop every entry with index `>= e.index` (a conflicting suffix that was
//!   overwritten), then append `e`; a gap is corruption.
//! - `InstallSnapshot(meta)`: the log becomes exactly the snapshot (all entries dropped).
//! - `CompactLog(meta)`: entries `<= meta.index` are covered by a snapshot; later entries
//!   stay. The entry at `meta.index`, if present, must have `meta.term`.
//! - `HardState(hs)`: the latest one wins.
//!
//! Then the newest snapshot in the snapshot store is reconciled with the log: if it is newer
//! than the last marker (a crash between saving the file and appending the marker), entries
//! after it are kept only if the log holds the snapshot's `(index, term)` — otherwise the
//! log is replaced by the snapshot, exactly as the live install did. Finally
//! `commit = max(commit, snapshot index)`.
//!
//! # Invariants (checked, never assumed)
//!
//! - The log is contiguous: the entry at `base.index + 1 + i` has term `terms[i]` and record
//!   `entry_records[i]` (increasing), and the entries held in memory are a suffix of it.
//! - Only applied entries leave memory, and only while their records are on disk.
//! - `term(base.index)` is always answerable, so `term(first_index() - 1)` works after
//!   compaction (the pitfall of raft-rs's `MemStorage`).
//! - `base.index <= snapshot.index <= last_index()` once initialized.
//! - `append` never leaves a gap: entries that would are refused with
//!   [`NodeError::Corrupt`] before anything is written.
//!
//! # Caveats
//!
//! - After a restart the log starts at the last snapshot (`first_index = snapshot + 1`):
//!   catch-up entries kept before the restart are not reloaded.
//! - The initial `ConfState` handed to raft is the snapshot's; committed conf changes after
//!   it are replayed by the node (as etcd does), together with `Config.applied = snapshot
//!   index`, because the state machine is rebuilt from the snapshot.

mod mem;
mod wal_disk;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ops::Range;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

pub use mem::{MemDisk, MemDiskFault};
pub use wal_disk::{WalDisk, WalDiskOptions};

use crate::node::error::{BoxError, NodeError};

/// The kinds of record [`RaftStorage`] writes to its [`Disk`]. The `u8` value is the record
/// kind on disk; payloads are protobuf-encoded `eraftpb` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// Payload: an `eraftpb::Entry` (index, term, type, data, context).
    Entry = 1,
    /// Payload: an `eraftpb::HardState` (term, vote, commit).
    HardState = 2,
    /// Payload: an `eraftpb::SnapshotMetadata` (index, term, conf state). The log was
    /// replaced by this snapshot (received from the leader); its data is in the snapshot
    /// store.
    InstallSnapshot = 3,
    /// Payload: an `eraftpb::SnapshotMetadata`. A local snapshot at this index was saved to
    /// the snapshot store; entries up to it may be compacted away.
    CompactLog = 4,
}

impl RecordKind {
    /// Decodes a kind byte.
    pub fn from_u8(kind: u8) -> Option<RecordKind> {
        match kind {
            1 => Some(RecordKind::Entry),
            2 => Some(RecordKind::HardState),
            3 => Some(RecordKind::InstallSnapshot),
            4 => Some(RecordKind::CompactLog),
            _ => None,
        }
    }
}

/// One record read back from a [`Disk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskRecord {
    /// The record's index in the disk's own sequence.
    pub index: u64,
    /// The record kind byte (see [`RecordKind`]).
    pub kind: u8,
    /// The opaque payload.
    pub payload: Vec<u8>,
}

/// Metadata stored beside snapshot data in the snapshot store.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskSnapshotMeta {
    /// Raft index of the last entry the snapshot covers.
    pub index: u64,
    /// Raft term of that entry.
    pub term: u64,
    /// The `eraftpb::ConfState` in effect at `index`, protobuf-encoded.
    pub conf_state: Vec<u8>,
}

/// What [`RaftStorage`] needs from durable storage: an append-only log of opaque records
/// with one durable append per call, prefix compaction, and a snapshot store.
///
/// Contract (to ensure correctness, an implementation must):
/// - make every record of an `append` durable before returning (one fsync per call), and
///   return the consecutive record indexes it assigned;
/// - return from [`Disk::records`] every record not compacted away, in index order, and
///   from [`Disk::read`] exactly the records asked for;
/// - keep at least every record at or after `upto` in [`Disk::compact_prefix`] (it may keep
///   more: whole segments only);
/// - make a saved snapshot durable before returning from [`Disk::save_snapshot`], and
///   return the newest valid one from [`Disk::load_snapshot`];
/// - never retry a failed fsync: report the error (the node then stops).
pub trait Disk: Send {
    /// Appends records durably; returns their record indexes.
    fn append(&mut self, records: &[(RecordKind, Vec<u8>)]) -> Result<Range<u64>, BoxError>;
    /// Every record still on disk, in order.
    fn records(&mut self) -> Result<Vec<DiskRecord>, BoxError>;
    /// Drops records before `upto` (possibly fewer). Returns the new first record index.
    fn compact_prefix(&mut self, upto: u64) -> Result<u64, BoxError>;
    /// Saves a snapshot durably.
    fn save_snapshot(&mut self, meta: &DiskSnapshotMeta, data: &[u8]) -> Result<(), BoxError>;
    /// The records with indexes in `range`, in order (every one must still be on disk).
    fn read(&self, range: Range<u64>) -> Result<Vec<DiskRecord>, BoxError>;
    /// Loads the newest snapshot, if any.
    fn load_snapshot(&self) -> Result<Option<(DiskSnapshotMeta, Vec<u8>)>, BoxError>;
    /// Something that saves a snapshot exactly as [`Disk::save_snapshot`] does (durably
    /// before it returns) but can run on another thread, while this disk keeps appending.
    /// `None` (the default): snapshots are saved inline.
    fn snapshot_saver(&self) -> Option<SnapshotSaver> {
        None
    }
}

/// A thread building and saving a snapshot ([`RaftStorage::save_snapshot_in_background`]);
/// it returns the snapshot's length in bytes.
pub type SnapshotThread = std::thread::JoinHandle<Result<usize, NodeError>>;

/// Saves one snapshot durably, possibly on another thread (see [`Disk::snapshot_saver`]).
pub type SnapshotSaver =
    Box<dyn FnOnce(&DiskSnapshotMeta, &[u8]) -> Result<(), BoxError> + Send + 'static>;

/// Entries of the log [`RaftStorage`] keeps in memory by default (unapplied ones always
/// stay; see the module documentation).
pub const DEFAULT_CACHE_ENTRIES: usize = 4096;

/// Records read from the disk at once when raft asks for entries no longer in memory.
const READ_CHUNK: usize = 256;

/// The `(index, term)` of the entry just before the first one in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct LogBase {
    index: u64,
    term: u64,
}

/// What [`RaftStorage::open`] found on disk.
#[derive(Debug)]
pub struct Recovered {
    /// The newest snapshot (metadata and data) the state machine must be restored from, or
    /// `None` for a member that has never been initialized.
    pub snapshot: Option<Snapshot>,
    /// Number of entries replayed into the log after the snapshot.
    pub entries: u64,
    /// The recovered hard state.
    pub hard_state: HardState,
}

/// [`raft::Storage`] over a [`Disk`]: the in-memory live log plus durable records. See the
/// module documentation for the write order and the recovery rules.
pub struct RaftStorage<D: Disk> {
    disk: D,
    hard_state: HardState,
    /// Set when the in-memory hard state holds a commit index not yet written.
    hard_state_dirty: bool,
    base: LogBase,
    /// The term of every entry after `base`, in order: `terms.len()` is the log's length.
    terms: VecDeque<u64>,
    /// The record index of every entry after `base`, parallel to `terms`. Increasing: an
    /// entry is written after the ones before it.
    entry_records: VecDeque<u64>,
    /// The newest entries themselves: a suffix of the log (the ones before it are read
    /// back from the disk).
    entries: VecDeque<Entry>,
    /// Entries kept in memory (unapplied ones always are).
    cache_limit: usize,
    /// The applied index as the node last reported it: entries up to it may leave memory.
    applied: u64,
    /// The first record still on disk: entries written before it can no longer leave
    /// memory (they go when the base moves past them).
    first_record: u64,
    /// The first failed read of an entry from the disk (see the module documentation).
    read_error: RefCell<Option<NodeError>>,
    /// The newest snapshot's metadata (index, term, conf state); index 0 = none yet.
    snapshot_meta: SnapshotMetadata,
    /// The raft index of the newest applied conf change: a snapshot older than this does not
    /// carry the current membership and must not be sent.
    last_conf_change_index: u64,
    /// Set by `snapshot()` when raft asked for a snapshot we cannot give yet.
    snapshot_wanted: Cell<bool>,
}

/// Frees compacted entries on a short-lived thread of their own: a snapshot interval's worth
/// (100,000 by default) takes milliseconds to free, which the raft loop would otherwise
/// spend while proposals and heartbeats wait. Frees them here if no thread can be started.
fn drop_elsewhere(entries: VecDeque<Entry>) {
    if entries.len() < 1024 {
        return;
    }
    // If the thread cannot start, `spawn` drops the closure, and the entries with it.
    let _ = std::thread::Builder::new()
        .name("log-free".into())
        .spawn(move || drop(entries));
}

fn encode<M: protobuf::Message>(message: &M, what: &str) -> Result<Vec<u8>, NodeError> {
    message
        .write_to_bytes()
        .map_err(|e| NodeError::storage(format!("encoding {what}"), e))
}

fn decode<M: protobuf::Message>(payload: &[u8], what: &str, record: u64) -> Result<M, NodeError> {
    M::parse_from_bytes(payload)
        .map_err(|e| NodeError::corrupt(format!("undecodable {what} in log record {record}: {e}")))
}

fn disk_err(op: String) -> impl FnOnce(BoxError) -> NodeError {
    move |source| NodeError::Storage { op, source }
}

fn meta_to_disk(meta: &SnapshotMetadata) -> Result<DiskSnapshotMeta, NodeError> {
    Ok(DiskSnapshotMeta {
        index: meta.index,
        term: meta.term,
        conf_state: encode(meta.get_conf_state(), "conf state")?,
    })
}

fn meta_from_disk(meta: &DiskSnapshotMeta) -> Result<SnapshotMetadata, NodeError> {
    let conf_state: ConfState = ConfState::parse_from_bytes(&meta.conf_state).map_err(|e| {
        NodeError::corrupt(format!(
            "undecodable conf state of snapshot {}: {e}",
            meta.index
        ))
    })?;
    let mut out = SnapshotMetadata {
        index: meta.index,
        term: meta.term,
        ..SnapshotMetadata::default()
    };
    out.set_conf_state(conf_state);
    Ok(out)
}

/// The log being rebuilt during replay.
struct Replay {
    base: Option<LogBase>,
    entries: VecDeque<Entry>,
    entry_records: VecDeque<u64>,
    hard_state: HardState,
    marker: Option<SnapshotMetadata>,
}

impl Replay {
    fn term_at(&self, index: u64) -> Option<u64> {
        let base = self.base?;
        if index == base.index && base.term != u64::MAX {
            return Some(base.term);
        }
        let offset = index.checked_sub(base.index + 1)?;
        self.entries.get(offset as usize).map(|e| e.term)
    }

    fn push_entry(&mut self, entry: Entry, record: u64) -> Result<(), NodeError> {
        let restart = match self.base {
            None => true,
            // The head of a compacted log is provisional until a marker confirms it: the
            // records before it were compacted away. An entry that rewinds below a
            // provisional base overwrote entries whose predecessors are gone, and an entry
            // after a gap follows a stale stretch that a newer snapshot covers (its marker
            // comes later). Either way, start over from this entry; if no marker confirms
            // the new head, recovery fails at the end.
            Some(base) => {
                let last = base.index + self.entries.len() as u64;
                (base.term == u64::MAX && entry.index <= base.index) || entry.index > last + 1
            }
        };
        let base = match self.base {
            Some(base) if !restart => base,
            _ => {
                // Its predecessor's term is not known (u64::MAX) until a marker covers it.
                self.entries.clear();
                self.entry_records.clear();
                let base = LogBase {
                    index: entry.index.saturating_sub(1),
                    term: u64::MAX,
                };
                self.base = Some(base);
                base
            }
        };
        if entry.index <= base.index {
            return Err(NodeError::corrupt(format!(
                "log record {record} holds entry {} at or below the snapshot index {}",
                entry.index, base.index
            )));
        }
        let keep = (entry.index - base.index - 1) as usize;
        self.entries.truncate(keep);
        self.entry_records.truncate(keep);
        self.entries.push_back(entry);
        self.entry_records.push_back(record);
        Ok(())
    }

    fn install(&mut self, meta: SnapshotMetadata) {
        self.entries.clear();
        self.entry_records.clear();
        self.base = Some(LogBase {
            index: meta.index,
            term: meta.term,
        });
        self.marker = Some(meta);
    }

    fn compact(&mut self, meta: SnapshotMetadata, record: u64) -> Result<(), NodeError> {
        if let Some(base) = self.base {
            if meta.index < base.index {
                // A stale marker: the log around its snapshot was compacted away after a
                // newer snapshot, whose marker follows.
                return Ok(());
            }
            let last = base.index + self.entries.len() as u64;
            if meta.index > last {
                // The entries up to the marker's snapshot are gone: compaction deleted the
                // WAL segments holding them (a prefix), and what survived before this marker
                // is at most an older marker or a stretch the snapshot covers. When the
                // marker was written its snapshot covered applied, hence stored, entries, so
                // nothing else can be missing; the snapshot file is checked after replay.
                self.install(meta);
                return Ok(());
            }
            let consistent = if meta.index == base.index {
                base.term == u64::MAX || base.term == meta.term
            } else {
                self.term_at(meta.index) == Some(meta.term)
            };
            if !consistent {
                return Err(NodeError::corrupt(format!(
                    "compaction marker (log record {record}) for entry {} (term {}) does not \
                     match the log, which holds {}..={last}",
                    meta.index,
                    meta.term,
                    base.index + 1
                )));
            }
            let drop = (meta.index - base.index) as usize;
            self.entries.drain(..drop);
            self.entry_records.drain(..drop);
        }
        self.base = Some(LogBase {
            index: meta.index,
            term: meta.term,
        });
        self.marker = Some(meta);
        Ok(())
    }
}

impl<D: Disk> RaftStorage<D> {
    /// Opens the storage: replays the disk's records and reconciles them with the newest
    /// snapshot. Returns the storage and what was recovered (the snapshot the state machine
    /// must be restored from).
    pub fn open(mut disk: D) -> Result<(Self, Recovered), NodeError> {
        let records = disk
            .records()
            .map_err(disk_err("reading the raft log".into()))?;
        let first_record = records.first().map_or(0, |r| r.index);
        let mut replay = Replay {
            base: None,
            entries: VecDeque::new(),
            entry_records: VecDeque::new(),
            hard_state: HardState::default(),
            marker: None,
        };
        for record in records {
            let kind = RecordKind::from_u8(record.kind).ok_or_else(|| {
                NodeError::corrupt(format!(
                    "log record {} has unknown kind {}",
                    record.index, record.kind
                ))
            })?;
            match kind {
                RecordKind::Entry => {
                    let entry: Entry = decode(&record.payload, "entry", record.index)?;
                    replay.push_entry(entry, record.index)?;
                }
                RecordKind::HardState => {
                    replay.hard_state = decode(&record.payload, "hard state", record.index)?;
                }
                RecordKind::InstallSnapshot => {
                    let meta = decode(&record.payload, "snapshot marker", record.index)?;
                    replay.install(meta);
                }
                RecordKind::CompactLog => {
                    let meta = decode(&record.payload, "compaction marker", record.index)?;
                    replay.compact(meta, record.index)?;
                }
            }
        }

        let stored = disk
            .load_snapshot()
            .map_err(disk_err("loading the newest snapshot".into()))?;
        let mut snapshot = None;
        if let Some((disk_meta, data)) = stored {
            let meta = meta_from_disk(&disk_meta)?;
            let marker_index = replay.marker.as_ref().map_or(0, |m| m.index);
            if meta.index < marker_index {
                return Err(NodeError::corrupt(format!(
                    "the log refers to snapshot {marker_index} but the newest snapshot on disk \
                     is {}",
                    meta.index
                )));
            }
            if meta.index > marker_index {
                // Crash between saving the snapshot file and appending its marker.
                if replay.term_at(meta.index) == Some(meta.term) {
                    replay.compact(meta.clone(), 0)?;
                } else {
                    replay.install(meta.clone());
                }
            } else if replay.marker.as_ref().is_some_and(|m| m.term != meta.term) {
                return Err(NodeError::corrupt(format!(
                    "snapshot {} on disk has term {} but the log's marker says {}",
                    meta.index,
                    meta.term,
                    replay.marker.as_ref().map_or(0, |m| m.term)
                )));
            }
            let mut snap = Snapshot::default();
            snap.set_metadata(meta);
            snap.data = data.into();
            snapshot = Some(snap);
        } else if let Some(marker) = &replay.marker {
            return Err(NodeError::corrupt(format!(
                "the log refers to snapshot {} but no snapshot is on disk",
                marker.index
            )));
        }

        let base = match replay.base {
            None => LogBase::default(),
            Some(base) if base.term == u64::MAX => {
                return Err(NodeError::corrupt(format!(
                    "the log starts at entry {} with no snapshot before it",
                    base.index + 1
                )))
            }
            Some(base) => base,
        };
        let last_index = base.index + replay.entries.len() as u64;
        let terms = replay.entries.iter().map(|e| e.term).collect();
        let mut hard_state = replay.hard_state;
        hard_state.commit = hard_state.commit.max(base.index);
        hard_state.term = hard_state.term.max(base.term);
        if hard_state.commit > last_index {
            return Err(NodeError::corrupt(format!(
                "hard state commit {} is beyond the last log entry {last_index}",
                hard_state.commit
            )));
        }
        let snapshot_meta = snapshot
            .as_ref()
            .map(|s| s.get_metadata().clone())
            .unwrap_or_default();
        let storage = RaftStorage {
            disk,
            hard_state: hard_state.clone(),
            hard_state_dirty: false,
            base,
            terms,
            entries: replay.entries,
            entry_records: replay.entry_records,
            cache_limit: DEFAULT_CACHE_ENTRIES,
            // The state machine restarts from the snapshot: everything after it is applied
            // again, so it stays in memory until then.
            applied: base.index,
            first_record,
            read_error: RefCell::new(None),
            last_conf_change_index: snapshot_meta.index,
            snapshot_meta,
            snapshot_wanted: Cell::new(false),
        };
        let recovered = Recovered {
            snapshot,
            entries: storage.entries.len() as u64,
            hard_state,
        };
        Ok((storage, recovered))
    }

    /// True when the storage holds no state at all (a member that has not joined yet).
    pub fn is_empty(&self) -> bool {
        self.snapshot_meta.index == 0
            && self.terms.is_empty()
            && self.hard_state == HardState::default()
    }

    /// Initializes an empty storage for a new cluster: saves the bootstrap snapshot (the
    /// initial members and the empty state machine) at index 1, term 1, exactly as every
    /// founding member does, so members that join later always start from a snapshot.
    pub fn bootstrap(&mut self, conf_state: ConfState, data: Vec<u8>) -> Result<(), NodeError> {
        if !self.is_empty() {
            return Err(NodeError::invalid(
                "cannot bootstrap a member whose storage already holds raft state",
            ));
        }
        let mut snapshot = Snapshot::default();
        {
            let meta = snapshot.mut_metadata();
            meta.index = 1;
            meta.term = 1;
            meta.set_conf_state(conf_state);
        }
        snapshot.data = data.into();
        let hard_state = HardState {
            term: 1,
            commit: 1,
            ..HardState::default()
        };
        self.persist_ready(Some(&snapshot), &[], Some(&hard_state))?;
        Ok(())
    }

    /// Persists one `Ready`: the snapshot (if any), entries, and hard state, with a single
    /// durable append (see the module documentation for the order).
    pub fn persist_ready(
        &mut self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), NodeError> {
        // Validate first: nothing is written if the batch would corrupt the log.
        let (new_base, kept) = match snapshot {
            Some(snap) => {
                let meta = snap.get_metadata();
                (
                    LogBase {
                        index: meta.index,
                        term: meta.term,
                    },
                    0usize,
                )
            }
            None => (self.base, self.terms.len()),
        };
        let kept_after_append = match entries.first() {
            None => kept,
            Some(first) => {
                let last = new_base.index + kept as u64;
                if first.index <= new_base.index || first.index > last + 1 {
                    return Err(NodeError::corrupt(format!(
                        "refusing to append entries {}..={} to a log holding {}..={last}",
                        first.index,
                        entries.last().map_or(first.index, |e| e.index),
                        new_base.index + 1
                    )));
                }
                for (offset, pair) in entries.windows(2).enumerate() {
                    if pair[1].index != pair[0].index + 1 {
                        return Err(NodeError::corrupt(format!(
                            "refusing to append non-contiguous entries at batch position {}",
                            offset + 1
                        )));
                    }
                }
                (first.index - new_base.index - 1) as usize
            }
        };

        let mut records: Vec<(RecordKind, Vec<u8>)> = Vec::with_capacity(entries.len() + 2);
        let mut new_hard_state = hard_state
            .cloned()
            .unwrap_or_else(|| self.hard_state.clone());
        // A deferred commit index is never lost: keep the larger one.
        new_hard_state.commit = new_hard_state.commit.max(self.hard_state.commit);
        if let Some(snap) = snapshot {
            let meta = snap.get_metadata();
            let disk_meta = meta_to_disk(meta)?;
            self.disk
                .save_snapshot(&disk_meta, &snap.data)
                .map_err(disk_err(format!("saving snapshot {}", meta.index)))?;
            records.push((
                RecordKind::InstallSnapshot,
                encode(meta, "snapshot marker")?,
            ));
            new_hard_state.commit = new_hard_state.commit.max(meta.index);
            new_hard_state.term = new_hard_state.term.max(meta.term);
        }
        for entry in entries {
            records.push((RecordKind::Entry, encode(entry, "entry")?));
        }
        let write_hard_state =
            snapshot.is_some() || self.hard_state_dirty || new_hard_state != self.hard_state;
        if write_hard_state {
            records.push((
                RecordKind::HardState,
                encode(&new_hard_state, "hard state")?,
            ));
        }
        if records.is_empty() {
            return Ok(());
        }
        let range = self
            .disk
            .append(&records)
            .map_err(disk_err(format!("appending {} log records", records.len())))?;
        if range.end.saturating_sub(range.start) != records.len() as u64 {
            return Err(NodeError::corrupt(format!(
                "disk assigned record indexes {range:?} to {} records",
                records.len()
            )));
        }

        // Durable: now update memory.
        let mut record_index = range.start;
        if let Some(snap) = snapshot {
            self.base = new_base;
            self.terms.clear();
            self.entries.clear();
            self.entry_records.clear();
            self.snapshot_meta = snap.get_metadata().clone();
            self.last_conf_change_index = self.snapshot_meta.index;
            self.applied = self.applied.max(new_base.index);
            record_index += 1;
        }
        // The cached entries are a suffix: cut them where the log is cut.
        let cold = self.cold_len();
        self.terms.truncate(kept_after_append);
        self.entry_records.truncate(kept_after_append);
        self.entries
            .truncate(kept_after_append.saturating_sub(cold));
        for entry in entries {
            self.terms.push_back(entry.term);
            self.entries.push_back(entry.clone());
            self.entry_records.push_back(record_index);
            record_index += 1;
        }
        self.hard_state = new_hard_state;
        self.hard_state_dirty = false;
        self.evict();
        Ok(())
    }

    /// Records a commit index reported by a `LightReady`. It is written with the next batch
    /// (or by [`RaftStorage::flush_hard_state`]); see the module documentation.
    pub fn set_commit(&mut self, commit: u64) {
        if commit > self.hard_state.commit {
            self.hard_state.commit = commit;
            self.hard_state_dirty = true;
        }
    }

    /// True when a commit index is waiting to be written.
    pub fn hard_state_dirty(&self) -> bool {
        self.hard_state_dirty
    }

    /// Writes a pending commit index now (one durable append), if there is one.
    pub fn flush_hard_state(&mut self) -> Result<(), NodeError> {
        if !self.hard_state_dirty {
            return Ok(());
        }
        let payload = encode(&self.hard_state, "hard state")?;
        self.disk
            .append(&[(RecordKind::HardState, payload)])
            .map_err(disk_err("appending the hard state".into()))?;
        self.hard_state_dirty = false;
        Ok(())
    }

    /// Saves a local snapshot of the state at `index` (which must be applied, hence
    /// committed and in the log), then compacts the WAL and the in-memory log, keeping
    /// `catchup_entries` entries before `index` in memory for slow followers.
    pub fn create_snapshot(
        &mut self,
        index: u64,
        conf_state: ConfState,
        data: Vec<u8>,
        catchup_entries: u64,
    ) -> Result<(), NodeError> {
        let Some(meta) = self.prepare_snapshot(index, conf_state)? else {
            return Ok(());
        };
        self.disk
            .save_snapshot(&meta_to_disk(&meta)?, &data)
            .map_err(disk_err(format!("saving snapshot {index}")))?;
        self.finish_snapshot(meta, catchup_entries)
    }

    /// The first step of [`RaftStorage::create_snapshot`]: checks that a snapshot at
    /// `index` can be taken and returns its metadata (`None`: the newest snapshot is
    /// already at or past `index`).
    pub fn prepare_snapshot(
        &self,
        index: u64,
        conf_state: ConfState,
    ) -> Result<Option<SnapshotMetadata>, NodeError> {
        if index <= self.snapshot_meta.index {
            return Ok(None);
        }
        if index > self.hard_state.commit {
            return Err(NodeError::corrupt(format!(
                "snapshot at {index} beyond the commit index {}",
                self.hard_state.commit
            )));
        }
        let term = self.term_of(index).ok_or_else(|| {
            NodeError::corrupt(format!(
                "snapshot at {index}: entry not in the log ({}..={})",
                self.base.index + 1,
                self.last()
            ))
        })?;
        let mut meta = SnapshotMetadata {
            index,
            term,
            ..SnapshotMetadata::default()
        };
        meta.set_conf_state(conf_state);
        Ok(Some(meta))
    }

    /// Starts building (`make_data`) and saving the snapshot `meta` (from
    /// [`RaftStorage::prepare_snapshot`]) on a thread of its own, if the disk can
    /// ([`Disk::snapshot_saver`]); else gives `make_data` back (`Err`) for
    /// [`RaftStorage::create_snapshot`]'s inline path. Once the thread returns `Ok`, call
    /// [`RaftStorage::finish_snapshot`].
    pub fn save_snapshot_in_background<F>(
        &self,
        meta: &SnapshotMetadata,
        make_data: F,
    ) -> Result<Result<SnapshotThread, F>, NodeError>
    where
        F: FnOnce() -> Result<Vec<u8>, NodeError> + Send + 'static,
    {
        let Some(saver) = self.disk.snapshot_saver() else {
            return Ok(Err(make_data));
        };
        let disk_meta = meta_to_disk(meta)?;
        let index = meta.index;
        std::thread::Builder::new()
            .name("snapshot-save".into())
            .spawn(move || {
                let data = make_data()?;
                saver(&disk_meta, &data).map_err(disk_err(format!("saving snapshot {index}")))?;
                Ok(data.len())
            })
            .map(Ok)
            .map_err(|e| NodeError::storage("spawning the snapshot thread", e))
    }

    /// The last step of [`RaftStorage::create_snapshot`], once the snapshot file `meta`
    /// is durable: records it in the WAL and compacts the WAL and the in-memory log.
    /// Nothing happens if a newer snapshot was installed meanwhile.
    pub fn finish_snapshot(
        &mut self,
        meta: SnapshotMetadata,
        catchup_entries: u64,
    ) -> Result<(), NodeError> {
        let (index, term) = (meta.index, meta.term);
        if index <= self.snapshot_meta.index || index <= self.base.index {
            return Ok(());
        }
        let records = vec![
            (RecordKind::CompactLog, encode(&meta, "compaction marker")?),
            (
                RecordKind::HardState,
                encode(&self.hard_state, "hard state")?,
            ),
        ];
        let range = self.disk.append(&records).map_err(disk_err(format!(
            "appending the compaction marker for {index}"
        )))?;
        self.hard_state_dirty = false;
        self.snapshot_meta = meta;
        self.snapshot_wanted.set(false);

        // The first record still needed on disk: the entry after the snapshot, else the
        // marker just written.
        let after = (index - self.base.index) as usize;
        let keep_from = self
            .entry_records
            .iter()
            .skip(after)
            .copied()
            .find(|&r| r != 0)
            .unwrap_or(range.start)
            .min(range.start);
        let first_record = self
            .disk
            .compact_prefix(keep_from)
            .map_err(disk_err(format!(
                "compacting the log before record {keep_from}"
            )))?;
        self.first_record = first_record;

        // Keep catch-up entries before the snapshot, but not those that are neither in
        // memory nor on disk any more (the records compacted away). Those still in memory
        // leave the log when they would leave memory (`evict`).
        let cold = self.cold_len();
        let gone = self
            .entry_records
            .iter()
            .take(cold)
            .take_while(|&&r| r < first_record)
            .count() as u64;
        let new_base_index = index
            .saturating_sub(catchup_entries)
            .max(self.base.index + gone)
            .min(index);
        if new_base_index > self.base.index {
            let drop = (new_base_index - self.base.index) as usize;
            let new_base_term = self.term_of(new_base_index).unwrap_or(term);
            let hot_drop = drop.saturating_sub(cold).min(self.entries.len());
            let kept = self.entries.split_off(hot_drop);
            drop_elsewhere(std::mem::replace(&mut self.entries, kept));
            self.terms.drain(..drop);
            self.entry_records.drain(..drop);
            self.base = LogBase {
                index: new_base_index,
                term: new_base_term,
            };
        }
        Ok(())
    }

    /// Tells the storage that a conf change at `index` was applied: snapshots older than it
    /// no longer describe the membership and will not be sent.
    pub fn note_conf_change_applied(&mut self, index: u64) {
        self.last_conf_change_index = self.last_conf_change_index.max(index);
    }

    /// True (once) when raft asked for a snapshot the storage could not give: the node should
    /// create a fresh one.
    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    /// The newest snapshot's metadata (index 0 = none).
    pub fn snapshot_metadata(&self) -> &SnapshotMetadata {
        &self.snapshot_meta
    }

    /// The hard state as last recorded (including a deferred commit index).
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The disk underneath (for tests and metrics).
    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// Index of the first entry of the log (in memory or on disk).
    pub fn first(&self) -> u64 {
        self.base.index + 1
    }

    /// Index of the last entry.
    pub fn last(&self) -> u64 {
        self.base.index + self.terms.len() as u64
    }

    /// The term of the entry at `index`, if it is known (including the base).
    pub fn term_of(&self, index: u64) -> Option<u64> {
        if index == self.base.index {
            return Some(self.base.term);
        }
        let offset = index.checked_sub(self.base.index + 1)?;
        self.terms.get(offset as usize).copied()
    }

    /// The entry at `index`, if it is still held in memory.
    pub fn cached_entry(&self, index: u64) -> Option<&Entry> {
        let offset = index.checked_sub(self.base.index + 1 + self.cold_len() as u64)?;
        self.entries.get(offset as usize)
    }

    /// Index of the first entry held in memory (`last() + 1` when none is).
    pub fn first_cached(&self) -> u64 {
        self.first() + self.cold_len() as u64
    }

    /// Sets how many entries of the log are kept in memory (at least 1; unapplied ones
    /// always are); see the module documentation.
    pub fn set_cache_limit(&mut self, entries: usize) {
        self.cache_limit = entries.max(1);
        self.evict();
    }

    /// Tells the storage the state machine applied everything up to `applied`: those
    /// entries may leave memory.
    pub fn note_applied(&mut self, applied: u64) {
        if applied > self.applied {
            self.applied = applied;
            self.evict();
        }
    }

    /// The first failed read of an entry from the disk, if any (taken: reported once).
    pub fn take_read_error(&self) -> Option<NodeError> {
        self.read_error.borrow_mut().take()
    }

    /// The entries `low..high`, read from memory and, for those no longer held there, from
    /// the disk; stops early once they add up to more than `max_size` bytes (at least one
    /// entry is returned). `Ok(None)`: the range is not in the log.
    pub fn entries_in(
        &self,
        low: u64,
        high: u64,
        max_size: Option<u64>,
    ) -> Result<Option<Vec<Entry>>, NodeError> {
        if low <= self.base.index || high > self.last() + 1 || low > high {
            return Ok(None);
        }
        let start = (low - self.base.index - 1) as usize;
        let end = (high - self.base.index - 1) as usize;
        let cold = self.cold_len();
        let mut out = Vec::with_capacity((end - start).min(READ_CHUNK * 4));
        let mut size = 0u64;
        // Adds an entry unless the size limit is reached; false = stop.
        let mut take = |entry: Entry, out: &mut Vec<Entry>| {
            size += u64::from(entry.compute_size());
            if !out.is_empty() && max_size.is_some_and(|max| size > max) {
                return false;
            }
            out.push(entry);
            true
        };
        let mut at = start;
        // With a size limit, read a few records first: the limit may stop after them.
        let mut chunk = if max_size.is_some() { 16 } else { READ_CHUNK };
        while at < end.min(cold) {
            let chunk_end = (at + chunk).min(end.min(cold));
            chunk = (chunk * 2).min(READ_CHUNK);
            for entry in self.read_cold(at..chunk_end)? {
                if !take(entry, &mut out) {
                    return Ok(Some(out));
                }
            }
            at = chunk_end;
        }
        let hot = at.saturating_sub(cold)..end.saturating_sub(cold);
        for entry in self.entries.range(hot) {
            if !take(entry.clone(), &mut out) {
                break;
            }
        }
        Ok(Some(out))
    }

    /// Entries no longer in memory, by log offset (`0` = the entry after the base), read
    /// back from the disk and checked against the log.
    fn read_cold(&self, offsets: Range<usize>) -> Result<Vec<Entry>, NodeError> {
        let (Some(&first), Some(&last)) = (
            self.entry_records.get(offsets.start),
            self.entry_records.get(offsets.end.wrapping_sub(1)),
        ) else {
            return Ok(Vec::new());
        };
        let low = self.base.index + 1 + offsets.start as u64;
        let high = low + offsets.len() as u64 - 1;
        let what = || format!("entries {low}..={high} (log records {first}..={last})");
        let records = self
            .disk
            .read(first..last + 1)
            .map_err(disk_err(format!("reading {}", what())))?;
        let mut out = Vec::with_capacity(offsets.len());
        for offset in offsets {
            let index = self.base.index + 1 + offset as u64;
            let record = self
                .entry_records
                .get(offset)
                .and_then(|&r| records.get(r.checked_sub(first)? as usize));
            let entry = match record {
                Some(r) if r.kind == RecordKind::Entry as u8 => {
                    decode::<Entry>(&r.payload, "entry", r.index)?
                }
                _ => {
                    return Err(NodeError::corrupt(format!(
                        "reading {}: no entry record for entry {index}",
                        what()
                    )))
                }
            };
            if entry.index != index || Some(entry.term) != self.terms.get(offset).copied() {
                return Err(NodeError::corrupt(format!(
                    "reading {}: log record {} holds entry {} of term {}, not entry {index} \
                     of term {}",
                    what(),
                    self.entry_records.get(offset).copied().unwrap_or(0),
                    entry.index,
                    entry.term,
                    self.terms.get(offset).copied().unwrap_or(0)
                )));
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// Entries of the log no longer held in memory (a prefix).
    fn cold_len(&self) -> usize {
        self.terms.len() - self.entries.len()
    }

    /// Drops the oldest applied entries from memory beyond the cache limit. A catch-up
    /// entry before the snapshot whose record was compacted away cannot be read back: it
    /// leaves the log instead (raft then sends a snapshot to a follower that needs it).
    fn evict(&mut self) {
        while self.entries.len() > self.cache_limit {
            let cold = self.cold_len();
            let index = self.base.index + 1 + cold as u64;
            if index > self.applied {
                break;
            }
            let on_disk = self
                .entry_records
                .get(cold)
                .is_some_and(|&r| r >= self.first_record);
            if on_disk {
                self.entries.pop_front();
            } else if cold == 0 && index <= self.snapshot_meta.index {
                // Records increase along the log, so no entry before it is on disk either.
                let term = self.terms.pop_front().unwrap_or(self.base.term);
                self.entry_records.pop_front();
                self.entries.pop_front();
                self.base = LogBase { index, term };
            } else {
                break;
            }
        }
    }
}

impl<D: Disk> raft::Storage for RaftStorage<D> {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.snapshot_meta.get_conf_state().clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.base.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entries_in(low, high, max_size.into()) {
            Ok(Some(entries)) => Ok(entries),
            Ok(None) => Err(raft::Error::Store(StorageError::Unavailable)),
            Err(e) => {
                // Only applied entries leave memory, so only a leader sending to a follower
                // that fell behind gets here: it sends a snapshot instead, and the node
                // stops on the error it finds kept.
                tracing::error!(error = %e, "reading raft entries back from the disk failed");
                self.read_error.borrow_mut().get_or_insert(e);
                Err(raft::Error::Store(StorageError::Compacted))
            }
        }
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx < self.base.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_of(idx)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let meta = &self.snapshot_meta;
        let current = meta.index != 0
            && meta.index >= request_index
            && meta.index >= self.last_conf_change_index;
        if !current {
            self.snapshot_wanted.set(true);
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        match self.disk.load_snapshot() {
            Ok(Some((disk_meta, data))) if disk_meta.index == meta.index => {
                let mut snapshot = Snapshot::default();
                snapshot.set_metadata(meta.clone());
                snapshot.data = data.into();
                Ok(snapshot)
            }
            Ok(_) | Err(_) => {
                // The file is missing or unreadable: ask the node for a fresh snapshot
                // rather than failing raft (which would panic).
                tracing::warn!(
                    index = meta.index,
                    "snapshot file unavailable for sending; a new snapshot will be created"
                );
                self.snapshot_wanted.set(true);
                Err(raft::Error::Store(
                    StorageError::SnapshotTemporarilyUnavailable,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests;
