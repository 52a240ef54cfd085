//! [`WalDisk`]: the production [`Disk`] — the project's `wal` crate for records and its
//! `SnapshotStore` for snapshot files (the two directories may differ, like etcd's
//! `--wal-dir` and `--data-dir`).
//!
//! Snapshot files carry the raft `ConfState` (protobuf) in the store's opaque `extra`
//! field; see `wal::SnapshotMeta` for the file layout.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use super::{Disk, DiskRecord, DiskSnapshotMeta, RecordKind, SnapshotSaver};
use crate::node::error::{BoxError, NodeError};

/// Options of a [`WalDisk`].
#[derive(Debug, Clone)]
pub struct WalDiskOptions {
    /// WAL segment size in bytes.
    pub segment_size: u64,
    /// Snapshot files kept (the newest wins; older ones are a fallback if it is corrupt).
    pub keep_snapshots: usize,
    /// The filesystem (tests use `wal::FaultFs`).
    pub fs: Arc<dyn wal::FileSystem>,
}

impl Default for WalDiskOptions {
    fn default() -> Self {
        WalDiskOptions {
            segment_size: wal::DEFAULT_SEGMENT_SIZE,
            keep_snapshots: 3,
            fs: Arc::new(wal::StdFs),
        }
    }
}

/// The `wal` crate as a [`Disk`].
#[derive(Debug)]
pub struct WalDisk {
    wal: wal::Wal,
    snapshots: wal::SnapshotStore,
    recovery: wal::Recovery,
}

fn boxed(e: wal::WalError) -> BoxError {
    Arc::new(e)
}

impl WalDisk {
    /// Opens (creating if needed) a WAL in `wal_dir` and a snapshot store in `snap_dir`.
    pub fn open(
        wal_dir: impl AsRef<Path>,
        snap_dir: impl AsRef<Path>,
        options: WalDiskOptions,
    ) -> Result<WalDisk, NodeError> {
        let wal_dir = wal_dir.as_ref();
        let snap_dir = snap_dir.as_ref();
        let (wal, recovery) = wal::Wal::open(
            wal_dir,
            wal::WalOptions {
                segment_size: options.segment_size,
                sync: wal::SyncPolicy::Always,
                fs: Arc::clone(&options.fs),
                ..wal::WalOptions::default()
            },
        )
        .map_err(|e| NodeError::storage(format!("opening the WAL in {}", wal_dir.display()), e))?;
        if let Some(torn) = &recovery.torn_tail {
            tracing::warn!(
                path = %torn.path.display(),
                bytes = torn.bytes_dropped,
                "WAL had a torn tail (an append that never returned); it was truncated"
            );
        }
        let snapshots =
            wal::SnapshotStore::open(snap_dir, options.keep_snapshots.max(1), options.fs).map_err(
                |e| {
                    NodeError::storage(
                        format!("opening the snapshot store in {}", snap_dir.display()),
                        e,
                    )
                },
            )?;
        Ok(WalDisk {
            wal,
            snapshots,
            recovery,
        })
    }

    /// What the WAL found when it was opened.
    pub fn recovery(&self) -> &wal::Recovery {
        &self.recovery
    }

    /// The WAL.
    pub fn wal(&self) -> &wal::Wal {
        &self.wal
    }
}

impl Disk for WalDisk {
    fn append(&mut self, records: &[(RecordKind, Vec<u8>)]) -> Result<Range<u64>, BoxError> {
        let refs: Vec<wal::RecordRef<'_>> = records
            .iter()
            .map(|(kind, payload)| wal::RecordRef::new(*kind as u8, payload))
            .collect();
        self.wal.append(&refs).map_err(boxed)
    }

    fn records(&mut self) -> Result<Vec<DiskRecord>, BoxError> {
        let range = self.wal.first_index()..self.wal.next_index();
        let records = self.wal.read(range).map_err(boxed)?;
        Ok(records
            .into_iter()
            .map(|r| DiskRecord {
                index: r.index,
                kind: r.kind,
                payload: r.payload,
            })
            .collect())
    }

    fn read(&self, range: Range<u64>) -> Result<Vec<DiskRecord>, BoxError> {
        let mut out =
            Vec::with_capacity(usize::try_from(range.end.saturating_sub(range.start)).unwrap_or(0));
        self.wal
            .read_with(range, |index, record| {
                out.push(DiskRecord {
                    index,
                    kind: record.kind,
                    payload: record.payload.to_vec(),
                })
            })
            .map_err(boxed)?;
        Ok(out)
    }

    fn compact_prefix(&mut self, upto: u64) -> Result<u64, BoxError> {
        self.wal.compact_prefix(upto).map_err(boxed)
    }

    fn save_snapshot(&mut self, meta: &DiskSnapshotMeta, data: &[u8]) -> Result<(), BoxError> {
        let meta = wal::SnapshotMeta {
            index: meta.index,
            term: meta.term,
            extra: meta.conf_state.clone(),
        };
        self.snapshots.save(&meta, data).map(|_| ()).map_err(boxed)
    }

    fn snapshot_saver(&self) -> Option<SnapshotSaver> {
        let snapshots = self.snapshots.clone();
        Some(Box::new(move |meta: &DiskSnapshotMeta, data: &[u8]| {
            let meta = wal::SnapshotMeta {
                index: meta.index,
                term: meta.term,
                extra: meta.conf_state.clone(),
            };
            snapshots.save(&meta, data).map(|_| ()).map_err(boxed)
        }))
    }

    fn load_snapshot(&self) -> Result<Option<(DiskSnapshotMeta, Vec<u8>)>, BoxError> {
        let loaded = self.snapshots.load_newest().map_err(boxed)?;
        Ok(loaded.map(|(meta, data)| {
            (
                DiskSnapshotMeta {
                    index: meta.index,
                    term: meta.term,
                    conf_state: meta.extra,
                },
                data,
            )
        }))
    }
}
