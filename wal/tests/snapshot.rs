//! SnapshotStore: atomic durable save, CRC-checked load of the newest valid snapshot with
//! fallback, pruning to the N newest, and separate WAL / snapshot directories.

use std::path::Path;
use std::sync::Arc;

use wal::{
    Crash, FaultFs, FileSystem, RecordRef, SnapshotMeta, SnapshotStore, StdFs, Wal, WalError,
    WalOptions,
};

fn meta(index: u64) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term: index / 10 + 1,
        extra: format!("conf-{index}").into_bytes(),
    }
}

fn data(index: u64) -> Vec<u8> {
    (0..100 + index).map(|i| (i * 7 + index) as u8).collect()
}

#[test]
fn save_and_load_on_the_real_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path().join("snap"), 2, Arc::new(StdFs)).unwrap();
    assert_eq!(store.load_newest().unwrap(), None);
    store.save(&meta(10), &data(10)).unwrap();
    store.save(&meta(20), &data(20)).unwrap();
    assert_eq!(store.load_newest().unwrap(), Some((meta(20), data(20))));
    store.save(&meta(30), &data(30)).unwrap();
    let indexes: Vec<u64> = store.list().unwrap().iter().map(|i| i.index).collect();
    assert_eq!(indexes, vec![20, 30], "keeps the 2 newest");
    assert_eq!(store.metas().unwrap(), vec![meta(20), meta(30)]);
}

#[test]
fn saved_snapshot_survives_a_crash_and_an_interrupted_save_leaves_the_old_one() {
    let fs = FaultFs::new();
    let store = SnapshotStore::open("/snap", 3, Arc::new(fs.clone())).unwrap();
    store.save(&meta(5), &data(5)).unwrap();
    fs.crash(Crash::DropAll);
    let store = SnapshotStore::open("/snap", 3, Arc::new(fs.clone())).unwrap();
    assert_eq!(store.load_newest().unwrap(), Some((meta(5), data(5))));

    // The temp file's fsync fails: the save errors out and the old snapshot stays newest.
    fs.fail_syncs_after(Some(0));
    assert!(store.save(&meta(9), &data(9)).is_err());
    fs.fail_syncs_after(None);
    for seed in 0..20 {
        let fs = fs.fork();
        fs.crash(Crash::Seeded(seed));
        let store = SnapshotStore::open("/snap", 3, Arc::new(fs.clone())).unwrap();
        assert_eq!(store.load_newest().unwrap(), Some((meta(5), data(5))));
        assert!(fs
            .paths()
            .iter()
            .all(|p| !p.to_string_lossy().ends_with(".tmp")));
    }
}

#[test]
fn corrupt_newest_falls_back_to_the_previous_one() {
    let fs = FaultFs::new();
    let store = SnapshotStore::open("/snap", 3, Arc::new(fs.clone())).unwrap();
    store.save(&meta(1), &data(1)).unwrap();
    let newest = store.save(&meta(2), &data(2)).unwrap();
    let mut bytes = fs.contents(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs.set_contents(&newest, bytes);
    let loaded = store.load_newest_report().unwrap().unwrap();
    assert_eq!((loaded.meta, loaded.data), (meta(1), data(1)));
    assert_eq!(loaded.skipped.len(), 1);
    assert_eq!(loaded.skipped[0].0, newest);
    assert!(matches!(
        store.load(&newest),
        Err(WalError::CorruptSnapshot { .. })
    ));
}

#[test]
fn all_snapshots_corrupt_is_an_error_not_an_empty_answer() {
    let fs = FaultFs::new();
    let store = SnapshotStore::open("/snap", 3, Arc::new(fs.clone())).unwrap();
    let p = store.save(&meta(1), &data(1)).unwrap();
    fs.set_contents(&p, b"TABBYSNP garbage".to_vec());
    assert!(matches!(
        store.load_newest(),
        Err(WalError::NoValidSnapshot { count: 1, .. })
    ));
}

#[test]
fn a_snapshot_renamed_to_another_index_is_rejected() {
    let fs = FaultFs::new();
    let store = SnapshotStore::open("/snap", 3, Arc::new(fs.clone())).unwrap();
    let p = store.save(&meta(1), &data(1)).unwrap();
    let renamed = Path::new("/snap/0000000000000063-0000000000000001.snap");
    fs.rename(&p, renamed).unwrap();
    assert!(matches!(
        store.load(renamed),
        Err(WalError::CorruptSnapshot { .. })
    ));
}

#[test]
fn keep_n_must_be_positive() {
    assert!(matches!(
        SnapshotStore::open("/snap", 0, Arc::new(FaultFs::new())),
        Err(WalError::InvalidOptions(_))
    ));
}

#[test]
fn wal_and_snapshots_in_different_directories_both_recover() {
    let fs = FaultFs::new();
    let opts = WalOptions {
        segment_size: 512,
        fs: Arc::new(fs.clone()),
        ..WalOptions::default()
    };
    let (log, _) = Wal::open("/data/wal-elsewhere", opts.clone()).unwrap();
    let store = SnapshotStore::open("/data/member/snap", 2, Arc::new(fs.clone())).unwrap();
    for i in 0..10u8 {
        log.append(&[RecordRef::new(1, &[i; 20])]).unwrap();
    }
    store.save(&meta(10), &data(10)).unwrap();
    log.compact_prefix(11).unwrap();
    drop(log);
    fs.crash(Crash::DropAll);
    let (log, rec) = Wal::open("/data/wal-elsewhere", opts).unwrap();
    assert_eq!(rec.next_index, 11);
    assert!(rec.first_index <= 11);
    let store = SnapshotStore::open("/data/member/snap", 2, Arc::new(fs.clone())).unwrap();
    assert_eq!(store.load_newest().unwrap().unwrap().0, meta(10));
    drop(log);
}
