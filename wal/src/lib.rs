//! `wal`: the durable storage layer under tabby's Raft log — a segmented write-ahead log of
//! opaque, indexed records with group commit, plus a store for snapshot files. It knows
//! nothing of Raft.
//!
//! ```no_run
//! use wal::{RecordRef, Wal, WalOptions};
//! # fn main() -> Result<(), wal::WalError> {
//! let (log, recovery) = Wal::open("/var/lib/tabby/wal", WalOptions::default())?;
//! if let Some(torn) = &recovery.torn_tail {
//!     eprintln!("dropped a torn tail of {} bytes in {}", torn.bytes_dropped, torn.path.display());
//! }
//! let range = log.append(&[RecordRef::new(1, b"entry"), RecordRef::new(1, b"another")])?;
//! // With the default SyncPolicy::Always, the records are durable here.
//! let records = log.read(range)?;
//! # let _ = records; Ok(()) }
//! ```
//!
//! # Durability contract
//!
//! * **Acknowledged means durable.** Under [`SyncPolicy::Always`] (the default),
//!   [`Wal::append`] returns only after an `fdatasync` that covers its records. Concurrent
//!   appenders share that fsync (group commit: one thread writes and syncs for everyone
//!   waiting). Under [`SyncPolicy::Never`], only [`Wal::sync`] (and segment rollover) makes
//!   records durable.
//! * **Prefix semantics.** After a crash the log is everything that was durable, possibly
//!   followed by a prefix of what was appended after that: never a gap, a reordering or a
//!   record that was not written.
//! * **Structural changes are durable when they return**: [`Wal::truncate_suffix`],
//!   [`Wal::reset`] and [`Wal::compact_prefix`] fsync the files and directories they change.
//!   A crash *during* one of them leaves the log as it was before or after it, or (for a
//!   truncation) a prefix of the log as it was before.
//! * **Failures are fatal.** If a write or an fsync fails, the WAL is poisoned: every later
//!   write returns [`WalError::Failed`]. Fsync is never retried (after a failed fsync Linux
//!   may have dropped the dirty pages, so a retry that "succeeds" proves nothing). Reopen the
//!   WAL to recover what was durable.
//! * **Indexes**: a new WAL starts at [`WalOptions::first_index`] (default 1); every append
//!   continues at [`Wal::next_index`]; after `truncate_suffix(from)` the next append gets
//!   `from` again.
//!
//! # On-disk format
//!
//! A WAL directory holds segment files named `{seq:016x}-{first_index:016x}.wal` (names
//! sort as text in log order). Each starts with a [`format::SegmentHeader`] (magic
//! `TABBYWAL`, version, sequence number, first index, a random salt, CRC) followed by
//! [`format::Frame`]s — length, CRC32, index, type, payload, padded to 8 bytes — as written
//! out field by field in those types' docs. Segments are **preallocated**: created at their
//! full size (64 MiB by default) and filled with zeros, as a temp file that is fsync'ed,
//! renamed and followed by a directory fsync. Writing into a fully allocated file lets
//! `fdatasync` flush data without a journal commit for a size change. When a record does not
//! fit, the log rolls over to a new segment, after syncing the current one.
//!
//! The zero fill happens **off the append path** ([`Preallocation::Background`], the
//! default): once the active segment is half full, a helper thread prepares a spare file
//! (`<unique>.spare`: zeros, fsync'ed). The rollover writes the header and the first records
//! into it, fdatasyncs it, renames it to the segment's name and fsyncs the directory before
//! acknowledging those records, so the rollover costs about two syncs instead of writing
//! 64 MiB. Without a ready spare (or if it fails before its rename) the segment is created
//! inline as above. `open` deletes leftover `*.spare` files.
//!
//! The directory also holds `wal.lock`: [`Wal::open`] takes an exclusive `flock` on it for
//! the life of the `Wal`, so a second open (from this process or another) fails with
//! [`WalError::Locked`] instead of two writers interleaving.
//!
//! The snapshot format is written out in [`SnapshotMeta`]'s docs.
//!
//! # Recovery
//!
//! [`Wal::open`] reads every segment, checks every header and frame checksum, the index
//! sequence and the continuity between segments, and builds an in-memory index
//! (segment, offset) per record, so reads are one positional read per segment touched.
//!
//! * A **torn tail** — bytes after the last valid record of the *last* segment that do not
//!   form a valid record, with no valid record after them (a partial write, or garbage in
//!   zeroed preallocated space) — is zeroed (truncated) and reported in
//!   [`Recovery::torn_tail`]. Only the last segment can be torn, because a segment is synced
//!   before the next one is created.
//! * Anything else — a bad record followed by valid ones, damage in a sealed segment, a bad
//!   header, a missing segment — is an error ([`WalError::Corrupt`] naming the file and
//!   offset, or [`WalError::Gap`]). Nothing is skipped silently.
//! * [`RecoveryMode::Repair`] (opt-in) instead truncates the log at the first bad record,
//!   deletes the later segments, and reports what it did in [`Recovery::repaired`].
//!
//! # Snapshots
//!
//! [`SnapshotStore`] saves snapshots atomically (temp file, fsync, rename, directory fsync),
//! loads the newest one whose checksum verifies (falling back to the previous one, with a
//! warning, if the newest is corrupt) and keeps the N newest. Its directory may differ from
//! the WAL's (etcd's `--wal-dir`).
//!
//! # Testing seam
//!
//! All file access goes through [`FileSystem`]. [`FaultFs`] is an in-memory implementation
//! that keeps track of what is durable, so tests can crash at any point (keeping any prefix
//! of the unsynced bytes), tear writes, fail fsyncs and run out of space. [`model`] holds the
//! reference model that this crate's property tests and fuzz targets check the WAL against.
//!
//! # Performance
//!
//! `cargo bench -p wal` (see `benches/wal.rs`) measures the disk's raw 4 KiB
//! write + fdatasync rate in the same run as the WAL. On the project's 2-vCPU VM
//! (ext4 on virtio, shared with other work, so figures drift by ±30% between runs), one run
//! measured: raw overwrite 6.8k syncs/s; one appender syncing every record 9.1k rec/s
//! (64 B), 7.9k (1 KiB), 5.8k (64 KiB); 64 concurrent appenders 170k rec/s (64 B, 18.6× one
//! appender), 143k (1 KiB, 18.1×), 14k (64 KiB, disk-bandwidth bound); replay (`open`, every
//! CRC checked, index built) 2.75 GiB/s and open + full read 1.38 GiB/s from the page cache.
//!
//! Group commit hands each batch to its next leader before waking the finished batch's
//! waiters (see the `wal` module). With the fsync taken out of the picture (`WAL_BENCH_DIR`
//! on tmpfs), so that only the group-commit machinery costs, 64 appenders of 64 B records
//! went from 357k / 278k / 357k rec/s to 427k / 418k / 390k (three alternating runs of the
//! old and new code in one session, 2 vCPUs at load 8-18).
//!
//! Rollover (`rollover` suite: one appender, 64 KiB records, `SyncPolicy::Always`, 64 MiB
//! segments, same session): creating the segment inline made the rollover append take
//! 114 ms (median of 7; max 203 ms; p99.9 of all appends 130 ms); with the spare prepared
//! in the background ([`Preallocation::Background`], the default) the rollover append took
//! 4.0 ms (median of 4; max 5.6 ms; p99.9 of all appends 29 ms), i.e. about two ordinary
//! appends.
//!
//! # Caveats
//!
//! * Torn-tail detection assumes that a crash persists a *prefix* of the unsynced bytes of
//!   the last segment. If a device persisted a later sector of an in-flight write but not an
//!   earlier one, `open` reports corruption (valid records after a bad one) instead of a torn
//!   tail; [`RecoveryMode::Repair`] then cuts at the first bad record, which loses only
//!   records whose append had not returned.
//! * A frame-shaped byte sequence inside a torn record's payload cannot validate, because
//!   frame checksums are seeded with a random per-segment salt.
//! * The lock is advisory (`flock`): it stops other `Wal`s, not other programs. While a
//!   process forks, the child briefly shares the lock's descriptor (until it execs).
//! * Creating a segment writes its full size; tests should use a small
//!   [`WalOptions::segment_size`].

pub mod error;
pub mod fault;
pub mod format;
pub mod fs;
pub mod model;
pub mod snapshot;
mod spare;
mod wal;

pub use error::{Result, WalError};
pub use fault::{Crash, FaultFs};
pub use fs::{FileHandle, FileSystem, LockGuard, StdFs};
pub use snapshot::{
    decode_snapshot, encode_snapshot, LoadedSnapshot, SnapshotInfo, SnapshotMeta, SnapshotStore,
    SNAPSHOT_MAGIC, SNAPSHOT_VERSION,
};
pub use wal::{
    Preallocation, Record, RecordRef, Recovery, RecoveryMode, Repaired, SegmentInfo, SyncPolicy,
    TornTail, Wal, WalOptions, DEFAULT_SEGMENT_SIZE, LOCK_FILE_NAME, MIN_SEGMENT_SIZE, READ_WINDOW,
};
