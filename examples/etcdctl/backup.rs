//! `etcdctl backup --data-dir SRC --backup-dir DST [--wal-dir W] [--backup-wal-dir BW]`.
//!
//! An offline tool (it talks to no server) that copies a member's data dir consistently,
//! even while the member runs: see `raft_kv::server::backup` for how. Restore by starting
//! `etcd --force-new-cluster --data-dir DST …`, which makes a new one-member cluster (fresh
//! member and cluster ids) holding every key. `--with-v3` is accepted and changes nothing
//! (this server keeps no v3 keyspace). Errors go to stderr with exit status 1, as etcd's
//! tool does (e.g. `failed creating backup snapshot dir …: expected … to be empty`).

use std::io::Write;

/// The flags of `etcdctl backup`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupArgs {
    /// `--data-dir`: the member's data dir to read.
    pub data_dir: String,
    /// `--wal-dir`: the member's WAL dir, when not `<data-dir>/member/wal`.
    pub wal_dir: String,
    /// `--backup-dir`: where the backup goes.
    pub backup_dir: String,
    /// `--backup-wal-dir`: where the backup's WAL goes, when not `<backup-dir>/member/wal`.
    pub backup_wal_dir: String,
    /// `--with-v3`: also copy the v3 backend.
    pub with_v3: bool,
}

/// Runs the backup; returns the exit status. Informational lines go to `err`.
pub fn run(args: &BackupArgs, _out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    use raft_kv::server::backup::{backup, BackupPaths};
    if args.data_dir.is_empty() || args.backup_dir.is_empty() {
        let _ = writeln!(err, "Error:  --data-dir and --backup-dir are required");
        return 1;
    }
    let optional = |dir: &str| (!dir.is_empty()).then(|| std::path::PathBuf::from(dir));
    let paths = BackupPaths {
        data_dir: args.data_dir.clone().into(),
        wal_dir: optional(&args.wal_dir),
        backup_dir: args.backup_dir.clone().into(),
        backup_wal_dir: optional(&args.backup_wal_dir),
    };
    match backup(&paths) {
        Ok(report) => {
            let _ = writeln!(
                err,
                "backed up {} files ({} bytes) from {} to {}",
                report.files, report.bytes, args.data_dir, args.backup_dir
            );
            0
        }
        Err(error) => {
            let _ = writeln!(err, "{error}");
            1
        }
    }
}
