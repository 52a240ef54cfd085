//! The crate's one error type, [`WalError`], grouped by what the caller must do.
//!
//! * **Fix the call** ([`WalError::InvalidOptions`], [`WalError::OutOfRange`],
//!   [`WalError::RecordTooLarge`]): deterministic, nothing was written, the log is unchanged.
//! * **Stop and investigate** ([`WalError::Corrupt`], [`WalError::Gap`],
//!   [`WalError::CorruptSnapshot`], [`WalError::NoValidSnapshot`]): data on disk is damaged.
//!   Nothing is skipped silently; an operator may reopen with
//!   [`RecoveryMode::Repair`](crate::RecoveryMode::Repair), which truncates at the first bad
//!   record and reports what it dropped.
//! * **Someone else has it** ([`WalError::Locked`]): another process (or another open
//!   [`Wal`](crate::Wal)) uses the directory; nothing was read or written.
//! * **The environment failed** ([`WalError::Io`]): a filesystem call failed (full disk,
//!   permissions, hardware). If it happened on the write path the WAL is also poisoned.
//! * **Reopen** ([`WalError::Failed`]): an earlier write or fsync failed, so the state of the
//!   file is unknown (a failed fsync may have dropped dirty pages). The WAL refuses further
//!   writes; reopening recovers everything that was durable.

use std::io;
use std::path::PathBuf;

/// Every error returned by this crate. See the [module docs](self) for how to react.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// The options passed to `open` are unusable (segment size out of bounds, `keep_n == 0`, ...).
    #[error("invalid options: {0}")]
    InvalidOptions(String),

    /// A requested index or range lies outside the records the log holds.
    #[error("index range {start}..{end} is outside the log, which holds {first}..{next}")]
    OutOfRange {
        /// First index requested.
        start: u64,
        /// One past the last index requested.
        end: u64,
        /// The log's first index.
        first: u64,
        /// The log's next index (one past its last record).
        next: u64,
    },

    /// A record's payload is larger than the format can frame.
    #[error("record payload of {len} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// Payload length that was refused.
        len: usize,
        /// Largest payload the format accepts.
        max: usize,
    },

    /// Bytes on disk are not what this crate wrote: bad checksum, bad header, impossible
    /// lengths, a record out of sequence, or a valid record found after a bad one.
    #[error("corrupt WAL data in {path} at offset {offset}: {reason}")]
    Corrupt {
        /// The file that holds the bad bytes.
        path: PathBuf,
        /// Byte offset of the first bad byte (of the bad record or header).
        offset: u64,
        /// What check failed.
        reason: String,
    },

    /// Records are missing between two segment files (a segment file was lost or removed).
    #[error("missing records: {path} starts at index {found} but the previous segment ends before {expected}")]
    Gap {
        /// The segment after the gap.
        path: PathBuf,
        /// The index the segment should start at.
        expected: u64,
        /// The index it starts at.
        found: u64,
    },

    /// A snapshot file failed its checks.
    #[error("corrupt snapshot {path}: {reason}")]
    CorruptSnapshot {
        /// The snapshot file.
        path: PathBuf,
        /// What check failed.
        reason: String,
    },

    /// Snapshot files exist but none of them is valid; nothing is returned rather than
    /// silently starting from no snapshot.
    #[error("none of the {count} snapshots in {dir} is valid (newest error: {newest_error})")]
    NoValidSnapshot {
        /// The snapshot directory.
        dir: PathBuf,
        /// How many snapshot files were tried.
        count: usize,
        /// Why the newest one was rejected.
        newest_error: String,
    },

    /// A filesystem call failed.
    #[error("I/O error during {op} on {path}: {source}")]
    Io {
        /// The operation (`"write"`, `"fdatasync"`, `"rename"`, ...).
        op: &'static str,
        /// The file or directory it was applied to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Another `Wal` (in this process or another one) has the directory open: the WAL
    /// takes an exclusive lock on `wal.lock` in its directory for as long as it is open.
    #[error("the WAL in {dir} is locked: another process (or another open Wal) is using it")]
    Locked {
        /// The WAL directory.
        dir: PathBuf,
    },

    /// An earlier write or fsync failed; the WAL refuses further writes. Reopen it.
    #[error("the WAL has failed earlier ({cause}) and refuses further writes; reopen it to recover the durable records")]
    Failed {
        /// Description of the original failure.
        cause: String,
    },
}

impl WalError {
    /// Builds an [`WalError::Io`] from an operation name and path.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> WalError {
        let path = path.into();
        move |source| WalError::Io { op, path, source }
    }

    /// True when this is an I/O error caused by a full disk (`ENOSPC`).
    pub fn is_no_space(&self) -> bool {
        matches!(self, WalError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull
            || source.raw_os_error() == Some(libc::ENOSPC))
    }
}

/// Result alias used throughout the crate.
pub type Result<T, E = WalError> = std::result::Result<T, E>;
