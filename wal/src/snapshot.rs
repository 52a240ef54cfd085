//! [`SnapshotStore`]: durable, checksummed snapshot files, kept apart from the WAL (the two
//! directories may differ, like etcd's `--data-dir` and `--wal-dir`).
//!
//! * `save` is atomic: the snapshot is written to a temp file, fsync'ed, renamed to its final
//!   name and the directory fsync'ed. A crash leaves either the old set of snapshots or the
//!   new one, plus at most a temp file that the next `open` removes.
//! * `load_newest` returns the newest snapshot whose checksum verifies; if the newest is
//!   corrupt it logs a warning and falls back to the previous one (and reports what it
//!   skipped through [`SnapshotStore::load_newest_report`]). If snapshot files exist but none
//!   is valid, it is an error, never a silent "no snapshot".
//! * After each save, only the `keep_n` newest snapshots are kept.
//!
//! Caveat: a snapshot is read whole into memory; it is meant for state-machine snapshots of
//! the size etcd v2 keeps (tens of MB), not for bulk data.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Result, WalError};
use crate::fs::FileSystem;

/// The 8 magic bytes at the start of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"TABBYSNP";
/// The snapshot format version this crate writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;
const SNAP_HEADER_LEN: usize = 44;
/// Bytes of a snapshot file written between two fdatasyncs while it is saved.
const SAVE_SYNC_CHUNK: usize = 1 << 20;

/// What a snapshot covers, stored beside its data.
///
/// On disk, a snapshot file `{index:016x}-{term:016x}.snap` (names sort by index) holds:
///
/// ```text
/// offset      size  field
///      0         8  magic      b"TABBYSNP"
///      8         4  version    u32 LE, = 1
///     12         4  reserved   zero
///     16         8  index      u64 LE
///     24         8  term       u64 LE
///     32         4  extra_len  u32 LE
///     36         8  data_len   u64 LE
///     44         e  extra      opaque (e.g. a serialized ConfState)
///   44+e         d  data       the snapshot bytes
/// 44+e+d         4  crc        u32 LE: CRC32 (IEEE, crc32fast) of bytes 0..44+e+d
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct SnapshotMeta {
    /// Index of the last log entry the snapshot includes.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// Opaque caller data (e.g. a serialized raft `ConfState`).
    pub extra: Vec<u8>,
}

/// A snapshot file as listed (from its name; not yet verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The file.
    pub path: PathBuf,
    /// Index from the name.
    pub index: u64,
    /// Term from the name.
    pub term: u64,
}

/// A snapshot loaded by [`SnapshotStore::load_newest_report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedSnapshot {
    /// Its metadata.
    pub meta: SnapshotMeta,
    /// Its data.
    pub data: Vec<u8>,
    /// The file it came from.
    pub path: PathBuf,
    /// Newer snapshot files that were rejected, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Saves and loads snapshots in one directory. See the [module docs](crate::snapshot).
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    dir: PathBuf,
    keep_n: usize,
    fs: Arc<dyn FileSystem>,
}

fn snapshot_file_name(index: u64, term: u64) -> String {
    format!("{index:016x}-{term:016x}.snap")
}

fn parse_snapshot_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".snap")?;
    let (index, term) = stem.split_once('-')?;
    if index.len() != 16 || term.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(index, 16).ok()?,
        u64::from_str_radix(term, 16).ok()?,
    ))
}

/// Encodes a snapshot file (layout in [`SnapshotMeta`]'s docs).
pub fn encode_snapshot(meta: &SnapshotMeta, data: &[u8]) -> Result<Vec<u8>> {
    let extra_len = u32::try_from(meta.extra.len()).map_err(|_| WalError::RecordTooLarge {
        len: meta.extra.len(),
        max: u32::MAX as usize,
    })?;
    let mut out = Vec::with_capacity(SNAP_HEADER_LEN + meta.extra.len() + data.len() + 4);
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&meta.index.to_le_bytes());
    out.extend_from_slice(&meta.term.to_le_bytes());
    out.extend_from_slice(&extra_len.to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&meta.extra);
    out.extend_from_slice(data);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Decodes and verifies a snapshot file's bytes. `Err` carries the reason.
pub fn decode_snapshot(bytes: &[u8]) -> std::result::Result<(SnapshotMeta, Vec<u8>), String> {
    let take = |at: usize, n: usize| -> std::result::Result<&[u8], String> {
        bytes
            .get(at..at.saturating_add(n))
            .ok_or_else(|| format!("file too short ({} bytes)", bytes.len()))
    };
    let u32_at = |at| take(at, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let u64_at = |at| {
        take(at, 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    if take(0, 8)? != SNAPSHOT_MAGIC {
        return Err("bad magic (not a tabby snapshot)".to_owned());
    }
    let version = u32_at(8)?;
    if version != SNAPSHOT_VERSION {
        return Err(format!("unsupported snapshot version {version}"));
    }
    let extra_len = u32_at(32)? as usize;
    let data_len = usize::try_from(u64_at(36)?).map_err(|_| "data length overflows".to_owned())?;
    let body_end = SNAP_HEADER_LEN
        .checked_add(extra_len)
        .and_then(|n| n.checked_add(data_len))
        .ok_or_else(|| "lengths overflow".to_owned())?;
    if bytes.len() != body_end.saturating_add(4) {
        return Err(format!(
            "length mismatch: header says {} bytes, file has {}",
            body_end.saturating_add(4),
            bytes.len()
        ));
    }
    let stored = u32_at(body_end)?;
    if crc32fast::hash(take(0, body_end)?) != stored {
        return Err("checksum mismatch".to_owned());
    }
    if take(12, 4)? != [0u8; 4] {
        return Err("non-zero reserved bytes".to_owned());
    }
    let meta = SnapshotMeta {
        index: u64_at(16)?,
        term: u64_at(24)?,
        extra: take(SNAP_HEADER_LEN, extra_len)?.to_vec(),
    };
    Ok((meta, take(SNAP_HEADER_LEN + extra_len, data_len)?.to_vec()))
}

impl SnapshotStore {
    /// Opens (creating if needed) the snapshot directory `dir`, keeping the `keep_n` newest
    /// snapshots after each save. Removes temp files left by an interrupted save.
    pub fn open(
        dir: impl AsRef<Path>,
        keep_n: usize,
        fs: Arc<dyn FileSystem>,
    ) -> Result<SnapshotStore> {
        if keep_n == 0 {
            return Err(WalError::InvalidOptions(
                "keep_n must be at least 1".to_owned(),
            ));
        }
        let dir = dir.as_ref().to_path_buf();
        fs.create_dir_all(&dir)
            .map_err(WalError::io("create directory", &dir))?;
        let names = fs
            .list(&dir)
            .map_err(WalError::io("list directory", &dir))?;
        let mut removed = false;
        for name in names {
            if name
                .strip_suffix(".tmp")
                .is_some_and(|stem| parse_snapshot_file_name(stem).is_some())
            {
                let path = dir.join(&name);
                fs.remove_file(&path)
                    .map_err(WalError::io("remove temp file", &path))?;
                removed = true;
            }
        }
        if removed {
            fs.sync_dir(&dir)
                .map_err(WalError::io("fsync directory", &dir))?;
        }
        Ok(SnapshotStore { dir, keep_n, fs })
    }

    /// The snapshot directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Snapshot files present, oldest (lowest index) first, as named; not verified.
    pub fn list(&self) -> Result<Vec<SnapshotInfo>> {
        let names = self
            .fs
            .list(&self.dir)
            .map_err(WalError::io("list directory", &self.dir))?;
        let mut infos: Vec<SnapshotInfo> = names
            .iter()
            .filter_map(|n| {
                parse_snapshot_file_name(n).map(|(index, term)| SnapshotInfo {
                    path: self.dir.join(n),
                    index,
                    term,
                })
            })
            .collect();
        infos.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(infos)
    }

    /// Metadata of every valid snapshot, oldest first (corrupt ones are skipped with a
    /// warning).
    pub fn metas(&self) -> Result<Vec<SnapshotMeta>> {
        let mut out = Vec::new();
        for info in self.list()? {
            match self.load(&info.path) {
                Ok((meta, _)) => out.push(meta),
                Err(e) => tracing::warn!(error = %e, "skipping corrupt snapshot"),
            }
        }
        Ok(out)
    }

    /// Atomically and durably saves a snapshot, then prunes to the `keep_n` newest.
    /// Returns the snapshot's path.
    pub fn save(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<PathBuf> {
        let bytes = encode_snapshot(meta, data)?;
        let path = self.dir.join(snapshot_file_name(meta.index, meta.term));
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let written = (|| -> Result<()> {
            let file = self.fs.create(&tmp).map_err(WalError::io("create", &tmp))?;
            // Written and synced a chunk at a time: a WAL fdatasync on the same disk (an
            // ext4 journal commit) then never waits behind the whole file's writeback.
            let mut offset = 0usize;
            for chunk in bytes.chunks(SAVE_SYNC_CHUNK) {
                file.write_all_at(chunk, offset as u64)
                    .map_err(WalError::io("write", &tmp))?;
                offset += chunk.len();
                if offset < bytes.len() {
                    file.sync_data().map_err(WalError::io("fdatasync", &tmp))?;
                }
            }
            file.sync_all().map_err(WalError::io("fsync", &tmp))?;
            self.fs
                .rename(&tmp, &path)
                .map_err(WalError::io("rename", &tmp))?;
            self.fs
                .sync_dir(&self.dir)
                .map_err(WalError::io("fsync directory", &self.dir))
        })();
        if let Err(e) = written {
            // Best effort: `open` removes leftover temp files anyway.
            let _ = self.fs.remove_file(&tmp);
            return Err(e);
        }
        let infos = self.list()?;
        let excess = infos.len().saturating_sub(self.keep_n);
        for info in infos.iter().take(excess) {
            self.fs
                .remove_file(&info.path)
                .map_err(WalError::io("remove old snapshot", &info.path))?;
        }
        if excess > 0 {
            self.fs
                .sync_dir(&self.dir)
                .map_err(WalError::io("fsync directory", &self.dir))?;
        }
        Ok(path)
    }

    /// Loads and verifies one snapshot file.
    pub fn load(&self, path: &Path) -> Result<(SnapshotMeta, Vec<u8>)> {
        let file = self
            .fs
            .open_read(path)
            .map_err(WalError::io("open snapshot", path))?;
        let len = file
            .file_len()
            .map_err(WalError::io("stat snapshot", path))?;
        let len = usize::try_from(len).map_err(|_| WalError::CorruptSnapshot {
            path: path.to_path_buf(),
            reason: "file too large for memory".to_owned(),
        })?;
        let mut bytes = vec![0u8; len];
        file.read_exact_at(&mut bytes, 0)
            .map_err(WalError::io("read snapshot", path))?;
        let (meta, data) = decode_snapshot(&bytes).map_err(|reason| WalError::CorruptSnapshot {
            path: path.to_path_buf(),
            reason,
        })?;
        if let Some((index, term)) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_snapshot_file_name)
        {
            if (index, term) != (meta.index, meta.term) {
                return Err(WalError::CorruptSnapshot {
                    path: path.to_path_buf(),
                    reason: format!(
                        "contents say index {} term {}, the name says index {index} term {term}",
                        meta.index, meta.term
                    ),
                });
            }
        }
        Ok((meta, data))
    }

    /// The newest valid snapshot, falling back (with a warning) past corrupt ones.
    /// `Ok(None)` only when there are no snapshot files at all.
    pub fn load_newest(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>> {
        Ok(self.load_newest_report()?.map(|l| (l.meta, l.data)))
    }

    /// Like [`load_newest`](Self::load_newest), also reporting the file used and the newer
    /// files that were rejected.
    pub fn load_newest_report(&self) -> Result<Option<LoadedSnapshot>> {
        let infos = self.list()?;
        let mut skipped: Vec<(PathBuf, String)> = Vec::new();
        for info in infos.iter().rev() {
            match self.load(&info.path) {
                Ok((meta, data)) => {
                    return Ok(Some(LoadedSnapshot {
                        meta,
                        data,
                        path: info.path.clone(),
                        skipped,
                    }))
                }
                Err(e) => {
                    tracing::warn!(path = %info.path.display(), error = %e,
                        "snapshot is not usable; falling back to the previous one");
                    skipped.push((info.path.clone(), e.to_string()));
                }
            }
        }
        match skipped.into_iter().next() {
            None => Ok(None),
            Some((_, newest_error)) => Err(WalError::NoValidSnapshot {
                dir: self.dir.clone(),
                count: infos.len(),
                newest_error,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let meta = SnapshotMeta {
            index: 10,
            term: 3,
            extra: vec![1, 2, 3],
        };
        let bytes = encode_snapshot(&meta, b"state").unwrap();
        assert_eq!(decode_snapshot(&bytes).unwrap(), (meta, b"state".to_vec()));
    }

    #[test]
    fn every_flipped_byte_is_rejected() {
        let meta = SnapshotMeta {
            index: 7,
            term: 2,
            extra: vec![9; 5],
        };
        let bytes = encode_snapshot(&meta, b"some snapshot data").unwrap();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(decode_snapshot(&bad).is_err(), "flip at {i} accepted");
        }
        for cut in 0..bytes.len() {
            assert!(
                decode_snapshot(&bytes[..cut]).is_err(),
                "truncation at {cut} accepted"
            );
        }
    }

    #[test]
    fn names_sort_by_index() {
        assert!(snapshot_file_name(9, 100) < snapshot_file_name(10, 1));
        assert_eq!(
            parse_snapshot_file_name(&snapshot_file_name(5, 6)),
            Some((5, 6))
        );
    }
}
