//! The directory lock: one open `Wal` per directory; a second handle in this process is
//! refused, and the lock goes away with its holder (`lock_process.rs` tries from another
//! process: it lives in its own test binary because a fork from a concurrently running test
//! briefly shares every open descriptor, and with it this process's lock).

use std::sync::Arc;

use wal::{Crash, FaultFs, RecordRef, Wal, WalError, WalOptions, LOCK_FILE_NAME};

fn real_options() -> WalOptions {
    WalOptions {
        segment_size: 4096,
        ..WalOptions::default()
    }
}

#[test]
fn a_second_handle_in_this_process_is_refused_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = Wal::open(dir.path(), real_options()).unwrap();
    log.append(&[RecordRef::new(1, b"one")]).unwrap();
    match Wal::open(dir.path(), real_options()) {
        Err(WalError::Locked { dir: d }) => assert_eq!(d, dir.path()),
        other => panic!("expected Locked, got {other:?}"),
    }
    let err = Wal::open(dir.path(), real_options()).unwrap_err();
    assert!(err.to_string().contains("locked"), "{err}");
    // The refused opens changed nothing.
    log.append(&[RecordRef::new(1, b"two")]).unwrap();
    drop(log);
    let (log, rec) = Wal::open(dir.path(), real_options()).unwrap();
    assert_eq!(rec.next_index, 3);
    assert_eq!(log.read(1..3).unwrap().len(), 2);
    assert!(dir.path().join(LOCK_FILE_NAME).exists());
}

#[test]
fn fault_fs_locks_like_the_real_one_and_a_crash_releases_them() {
    let fs = FaultFs::new();
    let opts = WalOptions {
        segment_size: 256,
        fs: Arc::new(fs.clone()),
        ..WalOptions::default()
    };
    let (log, _) = Wal::open("/w", opts.clone()).unwrap();
    assert!(matches!(
        Wal::open("/w", opts.clone()),
        Err(WalError::Locked { .. })
    ));
    // Another directory is independent.
    let (_other, _) = Wal::open("/elsewhere", opts.clone()).unwrap();
    // Power loss ends the holder; the stale handle's drop must not unlock the new owner.
    fs.crash(Crash::DropAll);
    let (reopened, _) = Wal::open("/w", opts.clone()).unwrap();
    drop(log);
    assert!(matches!(
        Wal::open("/w", opts.clone()),
        Err(WalError::Locked { .. })
    ));
    drop(reopened);
    Wal::open("/w", opts).unwrap();
}
