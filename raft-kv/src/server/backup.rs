//! `etcdctl backup`: a consistent copy of a member's data dir, taken without stopping it.
//!
//! The member keeps appending to its WAL, occasionally writes a snapshot and then drops the
//! WAL prefix the snapshot covers. A copy is consistent when its newest snapshot plus its
//! WAL form a gap-free history, which this order guarantees:
//!
//! 1. copy the WAL segments (a segment still being appended is copied up to wherever the
//!    writer was; the copy's torn tail is truncated when it is opened, exactly as after a
//!    crash);
//! 2. then copy the snapshots: any prefix missing from the copied WAL was dropped only
//!    after a snapshot covering it was durable, so that snapshot (or a newer one) is there
//!    now;
//! 3. copy the identity;
//! 4. verify: open the copy as the member would (WAL recovery, snapshot/log consistency).
//!    A copy that races with a segment rotation or deletion (a file vanishing mid-copy,
//!    a gap) is discarded and taken again, up to [`ATTEMPTS`] times.
//!
//! The backup is a data dir of its own. Start it with `etcd --force-new-cluster --data-dir
//! BACKUP …`: the member replays it and becomes a new one-member cluster with fresh member
//! and cluster ids, holding every key (see [`super::run`]). Unlike etcd's tool, the log is
//! copied as is (no rewriting); membership entries in it are superseded by the forced
//! one-member configuration.
//!
//! Like etcd's, the tool refuses a backup dir whose `member/snap` is not empty.

use std::fs;
use std::path::{Path, PathBuf};

use super::datadir::{create_private_dir, identity_path, make_private, member_dir, sync_dir};
use super::ServerError;
use crate::storage::{RaftStorage, WalDisk, WalDiskOptions};

/// Copies attempted before giving up.
pub const ATTEMPTS: usize = 5;

/// Where a backup reads from and writes to.
#[derive(Clone, Debug)]
pub struct BackupPaths {
    /// The member's data dir.
    pub data_dir: PathBuf,
    /// The member's WAL dir, when not `<data-dir>/member/wal`.
    pub wal_dir: Option<PathBuf>,
    /// The backup's data dir.
    pub backup_dir: PathBuf,
    /// The backup's WAL dir, when not `<backup-dir>/member/wal`.
    pub backup_wal_dir: Option<PathBuf>,
}

impl BackupPaths {
    fn source_wal(&self) -> PathBuf {
        self.wal_dir
            .clone()
            .unwrap_or_else(|| member_dir(&self.data_dir).join("wal"))
    }

    fn target_wal(&self) -> PathBuf {
        self.backup_wal_dir
            .clone()
            .unwrap_or_else(|| member_dir(&self.backup_dir).join("wal"))
    }
}

/// What a backup copied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupReport {
    /// Files copied (in the successful attempt).
    pub files: usize,
    /// Bytes copied.
    pub bytes: u64,
    /// Attempts made (1 unless the copy raced with the member).
    pub attempts: usize,
}

/// Files of a live directory that are not data: the WAL's lock file and its prepared
/// spare segment (zeros, renamed into a segment only at rollover).
fn is_scratch_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == wal::LOCK_FILE_NAME || name.ends_with(".spare")
}

fn copy_dir_files(from: &Path, to: &Path, report: &mut BackupReport) -> Result<(), ServerError> {
    create_private_dir(to)?;
    let entries = fs::read_dir(from).map_err(|e| ServerError::io("read directory", from, e))?;
    let mut names: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ServerError::io("read directory", from, e))?;
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if is_file && !is_scratch_file(&entry.path()) {
            names.push(entry.path());
        }
    }
    names.sort();
    for source in names {
        let Some(name) = source.file_name() else {
            continue;
        };
        let target = to.join(name);
        let bytes = fs::copy(&source, &target).map_err(|e| ServerError::io("copy", &source, e))?;
        make_private(&target)?;
        fs::File::open(&target)
            .and_then(|f| f.sync_all())
            .map_err(|e| ServerError::io("fsync", &target, e))?;
        report.files += 1;
        report.bytes += bytes;
    }
    sync_dir(to)
}

fn check_empty_snap_dir(snap: &Path) -> Result<(), ServerError> {
    match fs::read_dir(snap) {
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            if names.is_empty() {
                return Ok(());
            }
            names.sort();
            let listed: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
            Err(ServerError::InvalidConfig {
                message: format!(
                    "failed creating backup snapshot dir {}: expected {:?} to be empty, got [{}]",
                    snap.display(),
                    snap.display().to_string(),
                    listed.join(" ")
                ),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ServerError::io("read directory", snap, e)),
    }
}

fn verify(wal: &Path, snap: &Path) -> Result<(), ServerError> {
    let disk =
        WalDisk::open(wal, snap, WalDiskOptions::default()).map_err(|e| ServerError::DataDir {
            path: wal.to_path_buf(),
            detail: e.to_string(),
        })?;
    RaftStorage::open(disk)
        .map(|_| ())
        .map_err(|e| ServerError::DataDir {
            path: wal.to_path_buf(),
            detail: e.to_string(),
        })
}

/// Takes a backup (see the module docs).
pub fn backup(paths: &BackupPaths) -> Result<BackupReport, ServerError> {
    let source_member = member_dir(&paths.data_dir);
    let source_identity = identity_path(&paths.data_dir);
    if !source_identity.exists() {
        return Err(ServerError::DataDir {
            path: paths.data_dir.clone(),
            detail: "not a member's data dir (no member/identity)".to_string(),
        });
    }
    let target_snap = member_dir(&paths.backup_dir).join("snap");
    check_empty_snap_dir(&target_snap)?;
    let mut last_error = None;
    for attempt in 1..=ATTEMPTS {
        let mut report = BackupReport {
            attempts: attempt,
            ..BackupReport::default()
        };
        let _ = fs::remove_dir_all(paths.target_wal());
        let _ = fs::remove_dir_all(&target_snap);
        let copied = copy_dir_files(&paths.source_wal(), &paths.target_wal(), &mut report)
            .and_then(|()| copy_dir_files(&source_member.join("snap"), &target_snap, &mut report))
            .and_then(|()| {
                let identity = identity_path(&paths.backup_dir);
                fs::copy(&source_identity, &identity)
                    .map_err(|e| ServerError::io("copy", &source_identity, e))?;
                sync_dir(&member_dir(&paths.backup_dir))
            })
            .and_then(|()| verify(&paths.target_wal(), &target_snap));
        match copied {
            Ok(()) => return Ok(report),
            Err(error) => {
                tracing::warn!(attempt, %error, "backup copy raced with the member; retrying");
                last_error = Some(error);
                std::thread::sleep(std::time::Duration::from_millis(100 * attempt as u64));
            }
        }
    }
    let _ = fs::remove_dir_all(paths.target_wal());
    let _ = fs::remove_dir_all(&target_snap);
    Err(last_error.unwrap_or_else(|| ServerError::Cluster("backup failed".to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_used_backup_dir_and_a_foreign_source() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src");
        let paths = BackupPaths {
            data_dir: source.clone(),
            wal_dir: None,
            backup_dir: dir.path().join("dst"),
            backup_wal_dir: None,
        };
        assert!(matches!(backup(&paths), Err(ServerError::DataDir { .. })));
        fs::create_dir_all(dir.path().join("dst/member/snap")).unwrap();
        fs::write(dir.path().join("dst/member/snap/db"), b"x").unwrap();
        let message = check_empty_snap_dir(&dir.path().join("dst/member/snap"))
            .unwrap_err()
            .to_string();
        assert!(message.contains("to be empty, got [\"db\"]"), "{message}");
    }

    #[test]
    fn the_wal_lock_and_spare_segments_are_not_copied() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("from"), dir.path().join("to"));
        fs::create_dir_all(&from).unwrap();
        fs::write(from.join("0000000000000001-0000000000000001.wal"), b"seg").unwrap();
        fs::write(from.join(wal::LOCK_FILE_NAME), b"").unwrap();
        fs::write(from.join("1234-1.spare"), vec![0u8; 4096]).unwrap();
        let mut report = BackupReport::default();
        copy_dir_files(&from, &to, &mut report).unwrap();
        let mut copied: Vec<String> = fs::read_dir(&to)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        copied.sort();
        assert_eq!(copied, ["0000000000000001-0000000000000001.wal"]);
        assert_eq!((report.files, report.bytes), (1, 3));
    }
}
