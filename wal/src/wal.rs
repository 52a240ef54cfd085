//! [`Wal`]: the segmented, group-committed write-ahead log. The crate docs state the
//! durability contract and recovery rules; this module's comments explain the mechanics.
//!
//! # Concurrency
//! All methods take `&self`. One mutex guards the in-memory state ([`State`]); file I/O is
//! done *outside* it by a single *leader* thread at a time (`State::leader`):
//!
//! 1. An appender encodes its frames (CRC included) into the shared pending buffer while
//!    holding the mutex, which fixes their indexes and offsets, then waits.
//! 2. If no leader is active, the waiter becomes leader: it takes *every* pending frame,
//!    releases the mutex, does one `pwrite` per segment and one `fdatasync`, re-locks and
//!    advances the durable watermark. Appenders that arrived meanwhile form the next batch:
//!    the finishing leader wakes exactly one of them to lead it, in one write and one sync
//!    (group commit), and that new leader wakes the finished batch's waiters once it has
//!    taken its batch, so its I/O does not wait for all of them to pass through the mutex
//!    (with no next batch, the finishing leader wakes them itself). Waiters sleep on one of
//!    two condition variables chosen by the parity of their batch number, so a commit wakes
//!    only the threads it completed, not the whole queue.
//! 3. `truncate_suffix` and `reset` hold the leader role for their whole duration, so no
//!    frame is written while they rewrite the tail.
//!
//! Invariants (checked where they could break):
//! * `durable_next <= written_next <= next_index`; records below `written_next` are in their
//!   files, below `durable_next` they are synced.
//! * Only the last segment can hold unsynced bytes: before a segment is created, the previous
//!   one is synced. Hence a crash can only tear the tail of the last segment.
//! * A segment file exists under its final name only once its header and zero fill are
//!   durable (temp file, fsync, rename, directory fsync; or a spare prepared by the helper
//!   thread, see [`crate::spare`]), and its records are acknowledged only after the
//!   directory fsync.
//! * Segments are contiguous: each starts at the index where the previous one ends, except a
//!   segment flagged `FLAG_RESET`, which makes every older one obsolete.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::error::{Result, WalError};
use crate::format::{
    frame_len, parse_segment_file_name, scan_segment, Frame, ScanEnd, SegmentHeader, FLAG_RESET,
    MAX_PAYLOAD_LEN, SEGMENT_HEADER_LEN,
};
use crate::fs::{FileHandle, FileSystem, LockGuard, StdFs};
use crate::spare::{Spare, SparePool, SPARE_SUFFIX};

/// Default segment size: 64 MiB, as etcd.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 * 1024 * 1024;
/// Smallest accepted segment size (a header and one empty frame).
pub const MIN_SEGMENT_SIZE: u64 = 64;

const HEADER: u64 = SEGMENT_HEADER_LEN as u64;
const ZERO_CHUNK: usize = 1 << 20;
/// About how many bytes [`Wal::read_with`] reads at a time (a window always holds at least
/// one whole record).
pub const READ_WINDOW: usize = 4 << 20;
const MAX_SPARE_BUFFER: usize = 4 << 20;
/// How many more batches a group-commit leader writes, after the one holding its own
/// records, before it hands the role to a waiter (see `wait_for`). Bounds how much longer
/// the leader's own append takes than its records needed.
const EXTRA_BATCHES: u32 = 4;

/// When `append` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// `append` returns once its records are durable (fdatasync'ed, shared with concurrent
    /// appenders through group commit).
    #[default]
    Always,
    /// `append` returns once its records are written to the OS; only [`Wal::sync`] (and
    /// segment rollover) makes them durable. For tests and for callers that batch syncs.
    Never,
}

/// How the next segment file is prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preallocation {
    /// A helper thread keeps one spare segment file zero-filled and synced ahead of need;
    /// a rollover renames it into place (one write, one fdatasync, one rename and one
    /// directory fsync on the append path). The default.
    #[default]
    Background,
    /// Each rollover creates and zero-fills the next segment on the append path (a 64 MiB
    /// segment costs about half a second there). Deterministic: for fault-injection tests
    /// that count syncs or bytes.
    Inline,
}

/// Name of the lock file in the WAL directory.
pub const LOCK_FILE_NAME: &str = "wal.lock";

/// What `open` does with bad bytes it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Truncate a torn tail of the last segment (reported in [`Recovery::torn_tail`]); any
    /// other damage is a [`WalError::Corrupt`] or [`WalError::Gap`] error.
    #[default]
    TruncateTornTail,
    /// Opt-in: truncate the log at the first bad record wherever it is, delete every later
    /// segment, and report it in [`Recovery::repaired`]. Loses the records after the damage.
    Repair,
}

/// Options for [`Wal::open`].
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Preallocated size of each segment file, in bytes (default 64 MiB). A record larger
    /// than a segment gets a segment of its own, sized to fit.
    pub segment_size: u64,
    /// When `append` returns (default [`SyncPolicy::Always`]).
    pub sync: SyncPolicy,
    /// What `open` does with damage (default [`RecoveryMode::TruncateTornTail`]).
    pub recovery: RecoveryMode,
    /// The filesystem (default [`StdFs`]; tests use [`FaultFs`](crate::FaultFs)).
    pub fs: Arc<dyn FileSystem>,
    /// Index of the first record of a brand-new (empty) WAL, e.g. one past a snapshot
    /// (default 1). Ignored when the directory already holds a log.
    pub first_index: u64,
    /// How the next segment is prepared (default [`Preallocation::Background`]).
    pub preallocation: Preallocation,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: DEFAULT_SEGMENT_SIZE,
            sync: SyncPolicy::Always,
            recovery: RecoveryMode::TruncateTornTail,
            fs: Arc::new(StdFs),
            first_index: 1,
            preallocation: Preallocation::Background,
        }
    }
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Record {
    /// The record's index.
    pub index: u64,
    /// The caller's record type.
    pub kind: u8,
    /// The caller's bytes.
    pub payload: Vec<u8>,
}

/// A record to append, or one lent to a [`Wal::read_with`] callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordRef<'a> {
    /// The caller's record type.
    pub kind: u8,
    /// The caller's bytes (at most [`MAX_PAYLOAD_LEN`](crate::format::MAX_PAYLOAD_LEN)).
    pub payload: &'a [u8],
}

impl<'a> RecordRef<'a> {
    /// A record of type `kind` carrying `payload`.
    pub fn new(kind: u8, payload: &'a [u8]) -> Self {
        RecordRef { kind, payload }
    }
}

/// A torn tail that `open` truncated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The (last) segment file.
    pub path: PathBuf,
    /// Offset where the valid records end; everything from here on was zeroed.
    pub offset: u64,
    /// How many non-zero bytes were dropped.
    pub bytes_dropped: u64,
}

/// What [`RecoveryMode::Repair`] cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// The segment holding the first bad record (or the last good segment, if a segment
    /// header or the sequence of segments was bad).
    pub path: PathBuf,
    /// Offset of the first bad byte in `path`; the log now ends there.
    pub offset: u64,
    /// Why the bytes were rejected.
    pub reason: String,
    /// Later segment files that were deleted.
    pub segments_removed: Vec<PathBuf>,
}

/// What [`Wal::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// Index of the first record in the log.
    pub first_index: u64,
    /// One past the last record (the index the next append gets).
    pub next_index: u64,
    /// A torn tail that was truncated, if any.
    pub torn_tail: Option<TornTail>,
    /// What [`RecoveryMode::Repair`] dropped, if anything.
    pub repaired: Option<Repaired>,
    /// Leftover temporary files (from a crash during segment creation) that were removed.
    pub removed_temp_files: Vec<PathBuf>,
    /// Segments made obsolete by a [`Wal::reset`] that was interrupted, now removed.
    pub removed_obsolete_segments: Vec<PathBuf>,
    /// Number of segment files in the log after recovery.
    pub segments: usize,
    /// True when the directory held no log and a new one was created.
    pub created: bool,
}

/// Public description of one segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The file.
    pub path: PathBuf,
    /// Its sequence number.
    pub seq: u64,
    /// Index of its first record.
    pub first_index: u64,
    /// One past its last record.
    pub next_index: u64,
}

/// One segment in memory.
#[derive(Debug)]
struct Segment {
    seq: u64,
    salt: u32,
    first_index: u64,
    path: PathBuf,
    /// `None` only while a leader is creating the file.
    file: Option<Arc<dyn FileHandle>>,
    /// Preallocated length of the file.
    capacity: u64,
    /// Offset of each live record's frame; record `first_index + n` is at `offsets[n]`.
    offsets: Vec<u32>,
    /// End of the last frame (including frames still pending).
    tail: u64,
}

impl Segment {
    fn next_index(&self) -> u64 {
        self.first_index + self.offsets.len() as u64
    }
    fn info(&self) -> SegmentInfo {
        SegmentInfo {
            path: self.path.clone(),
            seq: self.seq,
            first_index: self.first_index,
            next_index: self.next_index(),
        }
    }
}

/// A segment file to create before writing its first chunk.
#[derive(Debug)]
struct NewSegment {
    header: SegmentHeader,
    path: PathBuf,
    capacity: u64,
}

/// Encoded frames waiting for the leader, all for one segment, contiguous from `offset`.
#[derive(Debug)]
struct Chunk {
    seq: u64,
    path: PathBuf,
    create: Option<NewSegment>,
    offset: u64,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct State {
    /// Oldest first; the last one is the active segment. Never empty.
    segments: VecDeque<Segment>,
    next_index: u64,
    written_next: u64,
    durable_next: u64,
    pending: Vec<Chunk>,
    spare_bufs: Vec<Vec<u8>>,
    leader: bool,
    /// How many times a leader has taken the pending chunks; batch `takes - 1` is the one
    /// in flight while `leader` is set, batch `takes` is the one forming in `pending`.
    takes: u64,
    /// `next_index` when the last batch was taken.
    taken_next: u64,
    /// Bumped when a truncation or reset starts: frames read outside the lock before the
    /// change may since have been zeroed or overwritten.
    rewrites: u64,
    /// A finished batch whose waiters are not woken yet: the next leader wakes them once it
    /// has taken its own batch (see `release_leader`).
    unannounced: Option<u64>,
    failed: Option<String>,
    next_seq: u64,
}

impl State {
    fn first_index(&self) -> u64 {
        self.segments
            .front()
            .map_or(self.next_index, |s| s.first_index)
    }
    fn segment_mut(&mut self, seq: u64) -> Option<&mut Segment> {
        self.segments.iter_mut().rev().find(|s| s.seq == seq)
    }
    fn check_failed(&self) -> Result<()> {
        match &self.failed {
            Some(cause) => Err(WalError::Failed {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// The write-ahead log. `Send + Sync`; share it (e.g. in an `Arc`) between appenders.
/// See the [crate docs](crate) for the durability contract.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    fs: Arc<dyn FileSystem>,
    segment_size: u64,
    sync_policy: SyncPolicy,
    state: Mutex<State>,
    /// Waiters of batch `n` sleep on `batch_done[n % 2]`.
    batch_done: [Condvar; 2],
    /// Notified whenever the leader role is released (for exclusive operations).
    idle: Condvar,
    /// Serializes truncate / compact / reset.
    maintenance: Mutex<()>,
    /// The helper preparing spare segments ([`Preallocation::Background`]).
    spares: Option<SparePool>,
    /// The directory lock, held for the life of the `Wal`.
    _lock: Box<dyn LockGuard>,
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Before the lock is released: no helper may touch the directory afterwards.
        if let Some(spares) = &self.spares {
            spares.shutdown();
        }
    }
}

fn new_salt(seq: u64) -> u32 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(seq);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    let h = hasher.finish();
    (h ^ (h >> 32)) as u32
}

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> WalError {
    WalError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

/// Writes zeros over `[from, to)`, forward, in 1 MiB pieces.
fn zero_range(file: &dyn FileHandle, path: &Path, from: u64, to: u64) -> Result<()> {
    let zeros = vec![
        0u8;
        usize::try_from(to.saturating_sub(from))
            .unwrap_or(ZERO_CHUNK)
            .min(ZERO_CHUNK)
    ];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)
            .map_err(WalError::io("write (zero fill)", path))?;
        at += n as u64;
    }
    Ok(())
}

impl Wal {
    /// Opens (or creates) the log in `dir`, recovering it as the [crate docs](crate) describe.
    pub fn open(dir: impl AsRef<Path>, options: WalOptions) -> Result<(Wal, Recovery)> {
        if options.segment_size < MIN_SEGMENT_SIZE || options.segment_size > u64::from(u32::MAX) {
            return Err(WalError::InvalidOptions(format!(
                "segment_size {} must be between {MIN_SEGMENT_SIZE} and {}",
                options.segment_size,
                u32::MAX
            )));
        }
        let dir = dir.as_ref().to_path_buf();
        let fs = options.fs.clone();
        fs.create_dir_all(&dir)
            .map_err(WalError::io("create directory", &dir))?;
        let lock_path = dir.join(LOCK_FILE_NAME);
        let lock = fs.lock_exclusive(&lock_path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                WalError::Locked { dir: dir.clone() }
            } else {
                WalError::io("lock", &lock_path)(e)
            }
        })?;
        let mut names = fs
            .list(&dir)
            .map_err(WalError::io("list directory", &dir))?;
        // Spare segments are only trusted by the process that prepared them.
        names.retain(|name| {
            if !name.ends_with(SPARE_SUFFIX) {
                return true;
            }
            let path = dir.join(name);
            if let Err(e) = fs.remove_file(&path) {
                tracing::warn!(error = %e, path = %path.display(), "could not remove a leftover spare segment");
            }
            false
        });

        let mut recovery = Recovery {
            first_index: options.first_index,
            next_index: options.first_index,
            torn_tail: None,
            repaired: None,
            removed_temp_files: Vec::new(),
            removed_obsolete_segments: Vec::new(),
            segments: 0,
            created: false,
        };

        // Leftovers of an interrupted segment creation.
        for name in &names {
            if let Some(stem) = name.strip_suffix(".tmp") {
                if parse_segment_file_name(stem).is_some() {
                    let path = dir.join(name);
                    fs.remove_file(&path)
                        .map_err(WalError::io("remove temp file", &path))?;
                    recovery.removed_temp_files.push(path);
                }
            }
        }
        if !recovery.removed_temp_files.is_empty() {
            fs.sync_dir(&dir)
                .map_err(WalError::io("fsync directory", &dir))?;
        }

        let mut listed: Vec<(u64, u64, PathBuf)> = names
            .iter()
            .filter_map(|n| parse_segment_file_name(n).map(|(s, f)| (s, f, dir.join(n))))
            .collect();
        listed.sort_by(|a, b| a.2.cmp(&b.2));
        for pair in listed.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Err(corrupt(
                    &pair[1].2,
                    0,
                    "two segment files share a sequence number",
                ));
            }
        }
        let next_seq = listed.last().map_or(1, |l| l.0 + 1);

        let mut segments: VecDeque<Segment> = VecDeque::new();
        let mut obsolete: Vec<PathBuf> = Vec::new();
        let mut cut_from: Option<usize> = None;
        let mut repair_zero: Option<(Arc<dyn FileHandle>, PathBuf, u64, u64)> = None;
        let mut torn_zero: Option<(Arc<dyn FileHandle>, PathBuf, u64, u64)> = None;
        let mut buf: Vec<u8> = Vec::new();
        let repair = options.recovery == RecoveryMode::Repair;

        for (i, (seq, first, path)) in listed.iter().enumerate() {
            let is_last = i + 1 == listed.len();
            // A segment that cannot be used at all: in Repair mode the log ends before it.
            let mut unusable = |err: WalError, segments: &VecDeque<Segment>| -> Result<()> {
                match (repair, segments.back()) {
                    (true, Some(prev)) => {
                        recovery.repaired = Some(Repaired {
                            path: prev.path.clone(),
                            offset: prev.tail,
                            reason: err.to_string(),
                            segments_removed: Vec::new(),
                        });
                        cut_from = Some(i);
                        Ok(())
                    }
                    _ => Err(err),
                }
            };
            let file = fs.open(path).map_err(WalError::io("open segment", path))?;
            let len = file
                .file_len()
                .map_err(WalError::io("stat segment", path))?;
            if len > u64::from(u32::MAX) {
                unusable(corrupt(path, 0, "segment larger than 4 GiB"), &segments)?;
                break;
            }
            buf.clear();
            buf.resize(len as usize, 0);
            file.read_exact_at(&mut buf, 0)
                .map_err(WalError::io("read segment", path))?;
            let scan = match scan_segment(&buf) {
                Ok(scan) => scan,
                Err(e) => {
                    unusable(corrupt(path, e.offset, e.reason), &segments)?;
                    break;
                }
            };
            if scan.header.seq != *seq || scan.header.first_index != *first {
                unusable(
                    corrupt(path, 0, "segment header does not match the file name"),
                    &segments,
                )?;
                break;
            }
            if scan.header.flags & FLAG_RESET != 0 {
                obsolete.extend(segments.drain(..).map(|s| s.path));
            } else if let Some(prev) = segments.back() {
                if prev.next_index() != *first {
                    unusable(
                        WalError::Gap {
                            path: path.clone(),
                            expected: prev.next_index(),
                            found: *first,
                        },
                        &segments,
                    )?;
                    break;
                }
            }
            let mut stop_here = false;
            if let ScanEnd::Garbage {
                offset,
                reason,
                garbage_end,
                valid_frame_after,
            } = scan.tail
            {
                if is_last && !valid_frame_after {
                    recovery.torn_tail = Some(TornTail {
                        path: path.clone(),
                        offset,
                        bytes_dropped: garbage_end - offset,
                    });
                    torn_zero = Some((file.clone(), path.clone(), offset, garbage_end));
                } else if repair {
                    recovery.repaired = Some(Repaired {
                        path: path.clone(),
                        offset,
                        reason: reason.to_owned(),
                        segments_removed: Vec::new(),
                    });
                    repair_zero = Some((file.clone(), path.clone(), offset, garbage_end));
                    cut_from = Some(i + 1);
                    stop_here = true;
                } else if valid_frame_after {
                    return Err(corrupt(
                        path,
                        offset,
                        format!("{reason}; valid records follow, so this is not a torn tail"),
                    ));
                } else {
                    return Err(corrupt(
                        path,
                        offset,
                        format!("{reason}, in a sealed segment (only the last segment may have a torn tail)"),
                    ));
                }
            }
            segments.push_back(Segment {
                seq: *seq,
                salt: scan.header.salt,
                first_index: *first,
                path: path.clone(),
                file: Some(file),
                capacity: len,
                offsets: scan.offsets,
                tail: scan.end,
            });
            if stop_here {
                break;
            }
        }

        // Repair: drop every segment after the cut (newest first, so a crash leaves a prefix).
        if let Some(cut) = cut_from {
            let mut removed = Vec::new();
            for (_, _, path) in listed.iter().skip(cut).rev() {
                fs.remove_file(path)
                    .map_err(WalError::io("remove segment", path))?;
                removed.push(path.clone());
            }
            removed.reverse();
            if !removed.is_empty() {
                fs.sync_dir(&dir)
                    .map_err(WalError::io("fsync directory", &dir))?;
            }
            if let Some(r) = recovery.repaired.as_mut() {
                r.segments_removed = removed;
            }
        }
        for (file, path, from, to) in repair_zero.into_iter().chain(torn_zero) {
            zero_range(file.as_ref(), &path, from, to)?;
            file.sync_data().map_err(WalError::io("fdatasync", &path))?;
        }
        if !obsolete.is_empty() {
            for path in &obsolete {
                fs.remove_file(path)
                    .map_err(WalError::io("remove obsolete segment", path))?;
            }
            fs.sync_dir(&dir)
                .map_err(WalError::io("fsync directory", &dir))?;
            recovery.removed_obsolete_segments = obsolete;
        }

        let wal = Wal {
            dir: dir.clone(),
            fs: fs.clone(),
            segment_size: options.segment_size,
            sync_policy: options.sync,
            state: Mutex::new(State {
                segments: VecDeque::new(),
                next_index: options.first_index,
                written_next: options.first_index,
                durable_next: options.first_index,
                pending: Vec::new(),
                spare_bufs: Vec::new(),
                leader: false,
                takes: 0,
                taken_next: options.first_index,
                rewrites: 0,
                unannounced: None,
                failed: None,
                next_seq,
            }),
            batch_done: [Condvar::new(), Condvar::new()],
            idle: Condvar::new(),
            maintenance: Mutex::new(()),
            spares: None,
            _lock: lock,
        };

        if segments.is_empty() {
            let header = SegmentHeader {
                flags: 0,
                seq: next_seq,
                first_index: options.first_index,
                salt: new_salt(next_seq),
            };
            let new = NewSegment {
                path: dir.join(header.file_name()),
                header,
                capacity: options.segment_size,
            };
            let file = wal.create_segment(&new)?;
            segments.push_back(Segment {
                seq: header.seq,
                salt: header.salt,
                first_index: header.first_index,
                path: new.path,
                file: Some(file),
                capacity: new.capacity,
                offsets: Vec::new(),
                tail: HEADER,
            });
            recovery.created = true;
        } else if let Some(last) = segments.back() {
            // Data read back may still sit only in the page cache (after a process crash
            // under SyncPolicy::Never): make it durable before calling it durable.
            if let Some(file) = &last.file {
                file.sync_data()
                    .map_err(WalError::io("fdatasync", &last.path))?;
            }
        }

        {
            let mut st = wal.state.lock();
            let next = segments
                .back()
                .map_or(options.first_index, Segment::next_index);
            st.next_seq = st.next_seq.max(segments.back().map_or(0, |s| s.seq + 1));
            st.segments = segments;
            st.next_index = next;
            st.written_next = next;
            st.durable_next = next;
            st.taken_next = next;
            recovery.first_index = st.first_index();
            recovery.next_index = next;
            recovery.segments = st.segments.len();
        }
        let mut wal = wal;
        if options.preallocation == Preallocation::Background {
            let spares = SparePool::new(fs.clone(), dir.clone(), options.segment_size);
            if wal
                .state
                .lock()
                .segments
                .back()
                .is_some_and(|s| s.tail > s.capacity / 2)
            {
                spares.request();
            }
            wal.spares = Some(spares);
        }
        Ok((wal, recovery))
    }

    /// Appends `batch` with consecutive indexes starting at [`next_index`](Self::next_index)
    /// and returns the index range it got. Under [`SyncPolicy::Always`] it returns once the
    /// records are durable; concurrent callers share one write and one fdatasync.
    ///
    /// Errors: [`WalError::RecordTooLarge`] (nothing appended), [`WalError::Failed`] or
    /// [`WalError::Io`] (the WAL is now poisoned; reopen it).
    pub fn append(&self, batch: &[RecordRef<'_>]) -> Result<Range<u64>> {
        if let Some(big) = batch.iter().find(|r| r.payload.len() > MAX_PAYLOAD_LEN) {
            return Err(WalError::RecordTooLarge {
                len: big.payload.len(),
                max: MAX_PAYLOAD_LEN,
            });
        }
        let mut st = self.state.lock();
        st.check_failed()?;
        let start = st.next_index;
        if batch.is_empty() {
            return Ok(start..start);
        }
        self.enqueue(&mut st, batch);
        let end = st.next_index;
        self.wait_for(&mut st, end, self.sync_policy == SyncPolicy::Always)?;
        Ok(start..end)
    }

    /// Makes every record appended so far durable.
    pub fn sync(&self) -> Result<()> {
        let mut st = self.state.lock();
        let end = st.next_index;
        self.wait_for(&mut st, end, true)
    }

    /// Durably drops every record with index `>= from`; [`next_index`](Self::next_index)
    /// becomes `from` and the next append reuses it. `from` must lie in
    /// `first_index()..=next_index()`.
    pub fn truncate_suffix(&self, from: u64) -> Result<()> {
        let _maintenance = self.maintenance.lock();
        let mut st = self.state.lock();
        self.become_exclusive(&mut st)?;
        let result = self.truncate_exclusive(&mut st, from);
        if let Err(e) = &result {
            if !matches!(e, WalError::OutOfRange { .. }) {
                st.failed = Some(e.to_string());
            }
        }
        self.release_exclusive(&mut st);
        result
    }

    /// Deletes whole segments whose records are all below `upto` (never the last segment)
    /// and returns the new [`first_index`](Self::first_index), which may stay below `upto`.
    pub fn compact_prefix(&self, upto: u64) -> Result<u64> {
        let _maintenance = self.maintenance.lock();
        let mut removed = Vec::new();
        let new_first = {
            let mut st = self.state.lock();
            st.check_failed()?;
            while st.segments.len() >= 2 {
                let second = &st.segments[1];
                if second.first_index <= upto
                    && second.file.is_some()
                    && second.first_index <= st.durable_next
                {
                    if let Some(seg) = st.segments.pop_front() {
                        removed.push(seg);
                    }
                } else {
                    break;
                }
            }
            st.first_index()
        };
        // Oldest first: a crash leaves a suffix of the log, which is still a valid log.
        for i in 0..removed.len() {
            if let Err(e) = self.fs.remove_file(&removed[i].path) {
                let err = WalError::io("remove segment", &removed[i].path)(e);
                let mut st = self.state.lock();
                for seg in removed.drain(i..).rev() {
                    st.segments.push_front(seg);
                }
                return Err(err);
            }
        }
        if !removed.is_empty() {
            self.fs
                .sync_dir(&self.dir)
                .map_err(WalError::io("fsync directory", &self.dir))?;
        }
        Ok(new_first)
    }

    /// Durably discards the whole log and restarts it empty at `next_index` (e.g. after
    /// installing a snapshot that is ahead of the log). Crash-safe: a new segment flagged
    /// `FLAG_RESET` is made durable before the old ones are deleted.
    pub fn reset(&self, next_index: u64) -> Result<()> {
        let _maintenance = self.maintenance.lock();
        let mut st = self.state.lock();
        self.become_exclusive(&mut st)?;
        let seq = st.next_seq;
        st.next_seq += 1;
        let header = SegmentHeader {
            flags: FLAG_RESET,
            seq,
            first_index: next_index,
            salt: new_salt(seq),
        };
        let new = NewSegment {
            path: self.dir.join(header.file_name()),
            header,
            capacity: self.segment_size,
        };
        let old: Vec<Segment> = st.segments.drain(..).collect();
        st.segments.push_back(Segment {
            seq,
            salt: header.salt,
            first_index: next_index,
            path: new.path.clone(),
            file: None,
            capacity: new.capacity,
            offsets: Vec::new(),
            tail: HEADER,
        });
        st.next_index = next_index;
        st.written_next = next_index;
        st.durable_next = next_index;
        st.taken_next = next_index;
        st.rewrites += 1;
        let result = MutexGuard::unlocked(&mut st, || -> Result<Arc<dyn FileHandle>> {
            let file = self.create_segment(&new)?;
            for seg in &old {
                self.fs
                    .remove_file(&seg.path)
                    .map_err(WalError::io("remove segment", &seg.path))?;
            }
            self.fs
                .sync_dir(&self.dir)
                .map_err(WalError::io("fsync directory", &self.dir))?;
            Ok(file)
        });
        let result = match result {
            Ok(file) => {
                if let Some(seg) = st.segment_mut(seq) {
                    seg.file = Some(file);
                }
                Ok(())
            }
            Err(e) => {
                st.failed = Some(e.to_string());
                Err(e)
            }
        };
        self.release_exclusive(&mut st);
        result
    }

    /// Reads the records with indexes in `range`, verifying each checksum again.
    pub fn read(&self, range: Range<u64>) -> Result<Vec<Record>> {
        let mut out = Vec::with_capacity(
            usize::try_from(range.end.saturating_sub(range.start))
                .unwrap_or(0)
                .min(1 << 16),
        );
        self.read_with(range, |index, rec| {
            out.push(Record {
                index,
                kind: rec.kind,
                payload: rec.payload.to_vec(),
            });
        })?;
        Ok(out)
    }

    /// Calls `visit(index, record)` for each record in `range`, in order, lending the payload
    /// from an internal buffer (no allocation per record).
    ///
    /// The records are read in windows of about [`READ_WINDOW`] bytes, so reading a whole
    /// log needs one window of memory, not the log's size. On an error, `visit` may already
    /// have been called for a prefix of the range (every record it got is correct).
    pub fn read_with(
        &self,
        range: Range<u64>,
        mut visit: impl FnMut(u64, RecordRef<'_>),
    ) -> Result<()> {
        /// One window planned under the lock: `count` records at `start..end` of a segment.
        struct Window {
            file: Arc<dyn FileHandle>,
            path: PathBuf,
            salt: u32,
            count: usize,
            start: u64,
            end: u64,
        }
        let mut buf = Vec::new();
        let mut next = range.start;
        // The `rewrites` count under which `next..range.end` was last seen written.
        let mut written_as = None;
        loop {
            // Bytes are read outside the lock; if a truncation or reset rewrote the tail
            // meanwhile, they may be stale, so plan and read the window again (the rest of
            // the range may now be out of range).
            let window = loop {
                let (rewrites, window) = {
                    let mut st = self.state.lock();
                    let (first, last) = (st.first_index(), st.next_index);
                    if next > range.end || next < first || range.end > last {
                        return Err(WalError::OutOfRange {
                            start: next,
                            end: range.end,
                            first,
                            next: last,
                        });
                    }
                    if range.is_empty() {
                        return Ok(());
                    }
                    if written_as != Some(st.rewrites) {
                        // First window, or the log was rewritten since: wait until the
                        // rest of the range is written (not just enqueued), then plan again.
                        let before = st.rewrites;
                        self.wait_for(&mut st, range.end, false)?;
                        if st.rewrites == before {
                            written_as = Some(before);
                        }
                        continue;
                    }
                    let k = st.segments.partition_point(|s| s.next_index() <= next);
                    let Some(seg) = st.segments.get(k) else {
                        return Err(corrupt(&self.dir, 0, "internal: no segment for record"));
                    };
                    let i = (next - seg.first_index) as usize;
                    let limit = (range.end.min(seg.next_index()) - seg.first_index) as usize;
                    let (Some(&start), Some(after), Some(file)) = (
                        seg.offsets.get(i),
                        seg.offsets.get(i + 1..limit),
                        seg.file.clone(),
                    ) else {
                        return Err(corrupt(&seg.path, 0, "internal: missing record position"));
                    };
                    let start = u64::from(start);
                    // Whole records up to the window size (at least one), within the range
                    // and this segment.
                    let fits =
                        after.partition_point(|&o| u64::from(o) - start <= READ_WINDOW as u64);
                    let j = i + 1 + fits;
                    let window = Window {
                        file,
                        path: seg.path.clone(),
                        salt: seg.salt,
                        count: j - i,
                        start,
                        end: seg.offsets.get(j).map_or(seg.tail, |&o| u64::from(o)),
                    };
                    (st.rewrites, window)
                };
                buf.clear();
                buf.resize((window.end - window.start) as usize, 0);
                window
                    .file
                    .read_exact_at(&mut buf, window.start)
                    .map_err(WalError::io("read segment", &window.path))?;
                if self.state.lock().rewrites == rewrites {
                    break window;
                }
            };
            let mut pos = 0;
            for _ in 0..window.count {
                let offset = window.start + pos as u64;
                let (frame, len) = Frame::decode(buf.get(pos..).unwrap_or(&[]), window.salt)
                    .map_err(|reason| corrupt(&window.path, offset, reason))?;
                if frame.index != next {
                    return Err(corrupt(
                        &window.path,
                        offset,
                        format!("expected record {next}, found {}", frame.index),
                    ));
                }
                visit(next, RecordRef::new(frame.kind, frame.payload));
                pos += len;
                next += 1;
            }
            if next == range.end {
                return Ok(());
            }
        }
    }

    /// Index of the first record in the log.
    pub fn first_index(&self) -> u64 {
        self.state.lock().first_index()
    }

    /// One past the last record: the index the next append gets.
    pub fn next_index(&self) -> u64 {
        self.state.lock().next_index
    }

    /// The segment files of the log, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.state
            .lock()
            .segments
            .iter()
            .map(Segment::info)
            .collect()
    }

    /// The directory holding the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True once a write or fsync failed; every later write is refused.
    pub fn has_failed(&self) -> bool {
        self.state.lock().failed.is_some()
    }

    /// Encodes `batch` into the pending chunks, planning segment rollovers as needed.
    fn enqueue(&self, st: &mut State, batch: &[RecordRef<'_>]) {
        let State {
            segments,
            pending,
            spare_bufs,
            next_index,
            next_seq,
            ..
        } = st;
        for rec in batch {
            let flen = frame_len(rec.payload.len()) as u64;
            let roll = segments
                .back()
                .is_none_or(|a| a.tail + flen > a.capacity && a.tail > HEADER);
            if roll {
                let seq = *next_seq;
                *next_seq += 1;
                let header = SegmentHeader {
                    flags: 0,
                    seq,
                    first_index: *next_index,
                    salt: new_salt(seq),
                };
                let path = self.dir.join(header.file_name());
                let capacity = self.segment_size.max(HEADER + flen);
                segments.push_back(Segment {
                    seq,
                    salt: header.salt,
                    first_index: *next_index,
                    path: path.clone(),
                    file: None,
                    capacity,
                    offsets: Vec::new(),
                    tail: HEADER,
                });
                pending.push(Chunk {
                    seq,
                    path: path.clone(),
                    create: Some(NewSegment {
                        header,
                        path,
                        capacity,
                    }),
                    offset: HEADER,
                    buf: spare_bufs.pop().unwrap_or_default(),
                });
            }
            let Some(active) = segments.back_mut() else {
                return;
            };
            if pending.last().is_none_or(|c| c.seq != active.seq) {
                pending.push(Chunk {
                    seq: active.seq,
                    path: active.path.clone(),
                    create: None,
                    offset: active.tail,
                    buf: spare_bufs.pop().unwrap_or_default(),
                });
            }
            let Some(chunk) = pending.last_mut() else {
                return;
            };
            Frame {
                index: *next_index,
                kind: rec.kind,
                payload: rec.payload,
            }
            .encode_into(&mut chunk.buf, active.salt);
            active.offsets.push(active.tail as u32);
            let half = active.capacity / 2;
            if active.tail <= half && active.tail + flen > half {
                // Half full: time to prepare the next segment in the background.
                if let Some(spares) = &self.spares {
                    spares.request();
                }
            }
            active.tail += flen;
            active.capacity = active.capacity.max(active.tail);
            *next_index += 1;
        }
    }

    /// Waits until every record below `end` is written (and durable if `durable`), leading
    /// the I/O when nobody else is.
    ///
    /// Also returns once a truncation or reset has started since the call: those first make
    /// everything pending durable, so the records were done before they were rewritten (and
    /// the watermarks may now stay below `end` for good).
    fn wait_for(&self, st: &mut MutexGuard<'_, State>, end: u64, durable: bool) -> Result<()> {
        let rewrites = st.rewrites;
        loop {
            let done = if durable {
                st.durable_next >= end
            } else {
                st.written_next >= end
            };
            if done || st.rewrites != rewrites {
                return Ok(());
            }
            st.check_failed()?;
            if st.leader {
                // Our records are either in the batch being written, or in the next one.
                let batch = if end > st.taken_next {
                    st.takes
                } else {
                    st.takes.wrapping_sub(1)
                };
                self.batch_done[(batch % 2) as usize].wait(st);
            } else {
                st.leader = true;
                let mut result = self.lead(st, durable);
                // Our records are done now. While more are pending, keep leading a few
                // batches: this thread is already on a CPU, while a woken waiter would
                // first wait its turn in the run queue behind every appender the finished
                // batch released (64 appenders on 2 CPUs), and the disk would idle.
                let mut extra = 0;
                while result.is_ok()
                    && extra < EXTRA_BATCHES
                    && !st.pending.is_empty()
                    && st.rewrites == rewrites
                {
                    // `lead` wakes the finished batch's waiters before taking the next.
                    st.unannounced = Some(st.takes.wrapping_sub(1));
                    result = self.lead(st, durable);
                    extra += 1;
                }
                self.release_leader(st);
                result?;
            }
        }
    }

    /// Gives up the leader role after one batch. If another batch is pending, wakes one of
    /// its waiters to lead it *first*, and leaves waking this batch's waiters to that new
    /// leader once it has taken its batch (`announce`, at the start of `lead`): every woken
    /// waiter must re-acquire the state mutex to return, and a next leader queued behind
    /// all of them would start its write and fdatasync only after that convoy (a real cost
    /// with 64 appenders on 2 CPUs). Otherwise wakes this batch's waiters now.
    fn release_leader(&self, st: &mut MutexGuard<'_, State>) {
        st.leader = false;
        let batch = st.takes.wrapping_sub(1);
        let next = &self.batch_done[((batch + 1) % 2) as usize];
        if st.failed.is_some() {
            self.announce(st);
            self.batch_done[(batch % 2) as usize].notify_all();
            next.notify_all();
        } else if !st.pending.is_empty() {
            self.announce(st);
            st.unannounced = Some(batch);
            next.notify_one();
        } else {
            self.announce(st);
            self.batch_done[(batch % 2) as usize].notify_all();
        }
        self.idle.notify_all();
    }

    /// Wakes the waiters of a finished batch that `release_leader` left to the next leader.
    /// Called with the state locked by whoever takes the leader role, before it takes a new
    /// batch (whose future waiters may sleep on the same condition variable).
    fn announce(&self, st: &mut MutexGuard<'_, State>) {
        if let Some(batch) = st.unannounced.take() {
            self.batch_done[(batch % 2) as usize].notify_all();
        }
    }

    /// Gives up the leader role after an exclusive operation: wakes everybody.
    fn release_exclusive(&self, st: &mut MutexGuard<'_, State>) {
        st.leader = false;
        st.unannounced = None;
        for cond in &self.batch_done {
            cond.notify_all();
        }
        self.idle.notify_all();
    }

    /// Takes the leader role and flushes everything pending, durably. The caller must clear
    /// `leader` and notify when done.
    fn become_exclusive(&self, st: &mut MutexGuard<'_, State>) -> Result<()> {
        loop {
            st.check_failed()?;
            if !st.leader {
                st.leader = true;
                self.announce(st);
                break;
            }
            self.idle.wait(st);
        }
        while !st.pending.is_empty() || st.durable_next < st.next_index {
            if let Err(e) = self.lead(st, true) {
                self.release_exclusive(st);
                return Err(e);
            }
        }
        Ok(())
    }

    /// The leader's work: write every pending chunk (creating segments on the way), then
    /// fdatasync if `force_sync` or the policy says so. Called with `leader` set.
    fn lead(&self, st: &mut MutexGuard<'_, State>, force_sync: bool) -> Result<()> {
        let sync = force_sync || self.sync_policy == SyncPolicy::Always;
        self.announce(st);
        let chunks = std::mem::take(&mut st.pending);
        let target = st.next_index;
        st.takes = st.takes.wrapping_add(1);
        st.taken_next = target;
        let dirty = if st.durable_next < st.written_next {
            st.segments
                .iter()
                .rev()
                .find_map(|s| s.file.clone().map(|f| (f, s.path.clone())))
        } else {
            None
        };
        if chunks.is_empty() && (dirty.is_none() || !sync) {
            st.written_next = target;
            return Ok(());
        }
        let mut files: Vec<Option<Arc<dyn FileHandle>>> = chunks
            .iter()
            .map(|c| {
                if c.create.is_some() {
                    None
                } else {
                    st.segment_mut(c.seq).and_then(|s| s.file.clone())
                }
            })
            .collect();
        let io = MutexGuard::unlocked(st, || self.write_chunks(&chunks, &mut files, dirty, sync));
        for (chunk, file) in chunks.iter().zip(&files) {
            if chunk.create.is_some() {
                if let (Some(file), Some(seg)) = (file, st.segment_mut(chunk.seq)) {
                    seg.file = Some(file.clone());
                }
            }
        }
        for chunk in chunks {
            let mut buf = chunk.buf;
            if buf.capacity() <= MAX_SPARE_BUFFER && st.spare_bufs.len() < 4 {
                buf.clear();
                st.spare_bufs.push(buf);
            }
        }
        match io {
            Ok(()) => {
                st.written_next = target;
                if sync {
                    st.durable_next = target;
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, dir = %self.dir.display(), "WAL write failed; refusing further writes");
                st.failed = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn write_chunks(
        &self,
        chunks: &[Chunk],
        files: &mut [Option<Arc<dyn FileHandle>>],
        mut dirty: Option<(Arc<dyn FileHandle>, PathBuf)>,
        sync: bool,
    ) -> Result<()> {
        for (chunk, file) in chunks.iter().zip(files.iter_mut()) {
            if let Some(new) = &chunk.create {
                // Seal the previous segment first: only the last segment may hold unsynced
                // bytes, so a crash can never leave a hole before a newer segment.
                if let Some((f, path)) = dirty.take() {
                    f.sync_data().map_err(WalError::io("fdatasync", &path))?;
                }
                let spare = self.spares.as_ref().and_then(|p| p.take(new.capacity));
                if let Some(spare) = spare {
                    // Header and records are in, durable, under the segment's name; or
                    // `None`: the spare failed before its rename, create the segment inline.
                    if let Some(f) = self.activate_spare(spare, new, chunk)? {
                        *file = Some(f);
                        continue;
                    }
                }
                *file = Some(self.create_segment(new)?);
            }
            let Some(f) = file.as_ref() else {
                return Err(corrupt(
                    &chunk.path,
                    chunk.offset,
                    "internal: segment file missing",
                ));
            };
            f.write_all_at(&chunk.buf, chunk.offset)
                .map_err(WalError::io("write", &chunk.path))?;
            dirty = Some((f.clone(), chunk.path.clone()));
        }
        if sync {
            if let Some((f, path)) = dirty {
                f.sync_data().map_err(WalError::io("fdatasync", &path))?;
            }
        }
        Ok(())
    }

    /// Turns a prepared spare into segment `new` holding `chunk` (see [`crate::spare`]):
    /// header and records written, fdatasync, rename, directory fsync. `Ok(None)`: the
    /// spare failed before its rename (it is abandoned; the caller creates the segment
    /// inline). An error after the rename is fatal.
    fn activate_spare(
        &self,
        spare: Spare,
        new: &NewSegment,
        chunk: &Chunk,
    ) -> Result<Option<Arc<dyn FileHandle>>> {
        let prepared = (|| -> std::io::Result<()> {
            spare.file.write_all_at(&new.header.encode(), 0)?;
            spare.file.write_all_at(&chunk.buf, chunk.offset)?;
            spare.file.sync_data()?;
            self.fs.rename(&spare.path, &new.path)
        })();
        if let Err(e) = prepared {
            tracing::warn!(error = %e, path = %spare.path.display(), "spare segment failed; creating the segment inline");
            let _ = self.fs.remove_file(&spare.path);
            return Ok(None);
        }
        self.fs
            .sync_dir(&self.dir)
            .map_err(WalError::io("fsync directory", &self.dir))?;
        Ok(Some(spare.file))
    }

    /// Asks the background helper for a spare segment now (it normally starts one when the
    /// active segment is half full) and waits up to `timeout` until it is ready; returns
    /// whether one is. Always false under [`Preallocation::Inline`]. For tests and
    /// benchmarks that want the next rollover to find a spare.
    pub fn wait_for_spare(&self, timeout: std::time::Duration) -> bool {
        self.spares.as_ref().is_some_and(|p| p.wait_ready(timeout))
    }

    /// Creates a segment durably: temp file, header + zero fill, fsync, rename, directory
    /// fsync. Zero fill (rather than a sparse file) means later fdatasyncs flush data only.
    fn create_segment(&self, new: &NewSegment) -> Result<Arc<dyn FileHandle>> {
        let tmp = temp_path(&new.path);
        let result = (|| -> Result<Arc<dyn FileHandle>> {
            let file = self.fs.create(&tmp).map_err(WalError::io("create", &tmp))?;
            file.write_all_at(&new.header.encode(), 0)
                .map_err(WalError::io("write", &tmp))?;
            zero_range(file.as_ref(), &tmp, HEADER, new.capacity.max(HEADER))?;
            file.sync_all().map_err(WalError::io("fsync", &tmp))?;
            self.fs
                .rename(&tmp, &new.path)
                .map_err(WalError::io("rename", &tmp))?;
            self.fs
                .sync_dir(&self.dir)
                .map_err(WalError::io("fsync directory", &self.dir))?;
            Ok(file)
        })();
        if result.is_err() {
            // Best effort: recovery removes leftover temp files anyway.
            let _ = self.fs.remove_file(&tmp);
        }
        result
    }

    fn truncate_exclusive(&self, st: &mut MutexGuard<'_, State>, from: u64) -> Result<()> {
        let (first, next) = (st.first_index(), st.next_index);
        if from < first || from > next {
            return Err(WalError::OutOfRange {
                start: from,
                end: from,
                first,
                next,
            });
        }
        if from == next {
            return Ok(());
        }
        let Some(k) = st
            .segments
            .iter()
            .rposition(|s| s.first_index <= from && from < s.next_index())
        else {
            return Err(WalError::OutOfRange {
                start: from,
                end: from,
                first,
                next,
            });
        };
        let removed: Vec<Segment> = st.segments.drain(k + 1..).collect();
        let Some(seg) = st.segments.get_mut(k) else {
            return Err(corrupt(&self.dir, 0, "internal: segment vanished"));
        };
        let i = (from - seg.first_index) as usize;
        let mut frames: Vec<(u64, u64)> = Vec::with_capacity(seg.offsets.len() - i);
        for n in i..seg.offsets.len() {
            let start = u64::from(seg.offsets[n]);
            let end = seg.offsets.get(n + 1).map_or(seg.tail, |&o| u64::from(o));
            frames.push((start, end));
        }
        seg.offsets.truncate(i);
        seg.tail = frames.first().map_or(seg.tail, |f| f.0);
        let file = seg.file.clone();
        let path = seg.path.clone();
        st.next_index = from;
        st.written_next = from;
        st.durable_next = from;
        st.taken_next = from;
        st.rewrites += 1;
        MutexGuard::unlocked(st, || -> Result<()> {
            // Newest first, so a crash leaves a prefix of the old log.
            for seg in removed.iter().rev() {
                self.fs
                    .remove_file(&seg.path)
                    .map_err(WalError::io("remove segment", &seg.path))?;
            }
            if !removed.is_empty() {
                self.fs
                    .sync_dir(&self.dir)
                    .map_err(WalError::io("fsync directory", &self.dir))?;
            }
            let Some(file) = file else {
                return Err(corrupt(&path, 0, "internal: segment file missing"));
            };
            // Zero the dropped frames last to first: if this is interrupted, what remains is
            // a prefix of the old log followed by one torn frame, never valid frames after
            // zeros.
            let zeros = vec![0u8; ZERO_CHUNK];
            for &(start, end) in frames.iter().rev() {
                let mut hi = end;
                while hi > start {
                    let lo = hi.saturating_sub(ZERO_CHUNK as u64).max(start);
                    file.write_all_at(&zeros[..(hi - lo) as usize], lo)
                        .map_err(WalError::io("write (truncate)", &path))?;
                    hi = lo;
                }
            }
            file.sync_data().map_err(WalError::io("fdatasync", &path))
        })
    }
}
