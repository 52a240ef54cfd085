//! [`MemDisk`]: an in-memory [`Disk`] for tests and the simulator.
//!
//! It behaves like a WAL whose every append was fsynced: a "crash" of the node (dropping it)
//! keeps everything appended, and a restart reopens the same `MemDisk` (it is a cheap,
//! shareable handle). Compaction is segment-granular like the real WAL (records are grouped
//! in fixed-size segments and only whole segments are dropped), so recovery is exercised
//! with stale records before the compaction point. Faults can be injected: the next
//! appends or snapshot saves fail, as a failing fsync would, or the next reads fail.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Disk, DiskRecord, DiskSnapshotMeta, RecordKind};
use crate::node::error::BoxError;

/// A fault to inject into a [`MemDisk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemDiskFault {
    /// The next `n` appends fail and write nothing.
    FailAppends(u32),
    /// The next `n` snapshot saves fail and write nothing.
    FailSnapshots(u32),
    /// The next `n` reads ([`Disk::read`]) fail, as an I/O error would.
    FailReads(u32),
}

#[derive(Debug, Default)]
struct State {
    next_index: u64,
    records: VecDeque<DiskRecord>,
    snapshot: Option<(DiskSnapshotMeta, Vec<u8>)>,
    fail_appends: u32,
    fail_snapshots: u32,
    fail_reads: u32,
    reads: u64,
    appends: u64,
    snapshots_saved: u64,
}

/// An in-memory [`Disk`]; clones share the same contents (a member's "disk" survives the
/// member). See the module documentation.
#[derive(Debug, Clone)]
pub struct MemDisk {
    state: Arc<Mutex<State>>,
    segment_records: u64,
}

impl Default for MemDisk {
    fn default() -> Self {
        MemDisk::new()
    }
}

#[derive(Debug)]
struct InjectedFault(&'static str);

impl std::fmt::Display for InjectedFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "injected fault: {}", self.0)
    }
}

impl std::error::Error for InjectedFault {}

impl MemDisk {
    /// An empty disk with 64-record segments.
    pub fn new() -> Self {
        MemDisk::with_segment_records(64)
    }

    /// An empty disk whose compaction drops whole segments of `segment_records` records.
    pub fn with_segment_records(segment_records: u64) -> Self {
        MemDisk {
            state: Arc::new(Mutex::new(State {
                next_index: 1,
                ..State::default()
            })),
            segment_records: segment_records.max(1),
        }
    }

    /// Injects a fault.
    pub fn inject(&self, fault: MemDiskFault) {
        let mut state = self.state.lock();
        match fault {
            MemDiskFault::FailAppends(n) => state.fail_appends = n,
            MemDiskFault::FailSnapshots(n) => state.fail_snapshots = n,
            MemDiskFault::FailReads(n) => state.fail_reads = n,
        }
    }

    /// Number of successful [`Disk::read`] calls.
    pub fn reads(&self) -> u64 {
        self.state.lock().reads
    }

    /// Number of successful appends (each one stands for an fsync).
    pub fn appends(&self) -> u64 {
        self.state.lock().appends
    }

    /// Number of records currently held.
    pub fn record_count(&self) -> usize {
        self.state.lock().records.len()
    }

    /// Number of snapshots saved.
    pub fn snapshots_saved(&self) -> u64 {
        self.state.lock().snapshots_saved
    }
}

impl Disk for MemDisk {
    fn append(&mut self, records: &[(RecordKind, Vec<u8>)]) -> Result<Range<u64>, BoxError> {
        let mut state = self.state.lock();
        if state.fail_appends > 0 {
            state.fail_appends -= 1;
            return Err(Arc::new(InjectedFault("append failed")));
        }
        let start = state.next_index;
        for (kind, payload) in records {
            let index = state.next_index;
            state.records.push_back(DiskRecord {
                index,
                kind: *kind as u8,
                payload: payload.clone(),
            });
            state.next_index += 1;
        }
        state.appends += 1;
        Ok(start..state.next_index)
    }

    fn records(&mut self) -> Result<Vec<DiskRecord>, BoxError> {
        Ok(self.state.lock().records.iter().cloned().collect())
    }

    fn read(&self, range: Range<u64>) -> Result<Vec<DiskRecord>, BoxError> {
        let mut state = self.state.lock();
        if state.fail_reads > 0 {
            state.fail_reads -= 1;
            return Err(Arc::new(InjectedFault("read failed")));
        }
        let first = state.records.front().map_or(state.next_index, |r| r.index);
        if range.start < first || range.end > state.next_index {
            return Err(Arc::new(InjectedFault("read out of range")));
        }
        let start = (range.start - first) as usize;
        let end = (range.end.max(range.start) - first) as usize;
        let out = state.records.range(start..end).cloned().collect();
        state.reads += 1;
        Ok(out)
    }

    fn compact_prefix(&mut self, upto: u64) -> Result<u64, BoxError> {
        let mut state = self.state.lock();
        // Whole segments only: segment k holds records [k*n + 1, (k+1)*n].
        let upto = upto.min(state.next_index);
        let segment_start =
            (upto.saturating_sub(1) / self.segment_records) * self.segment_records + 1;
        while state
            .records
            .front()
            .is_some_and(|r| r.index < segment_start)
        {
            state.records.pop_front();
        }
        Ok(state.records.front().map_or(state.next_index, |r| r.index))
    }

    fn save_snapshot(&mut self, meta: &DiskSnapshotMeta, data: &[u8]) -> Result<(), BoxError> {
        let mut state = self.state.lock();
        if state.fail_snapshots > 0 {
            state.fail_snapshots -= 1;
            return Err(Arc::new(InjectedFault("snapshot save failed")));
        }
        state.snapshot = Some((meta.clone(), data.to_vec()));
        state.snapshots_saved += 1;
        Ok(())
    }

    fn load_snapshot(&self) -> Result<Option<(DiskSnapshotMeta, Vec<u8>)>, BoxError> {
        Ok(self.state.lock().snapshot.clone())
    }
}
