//! Group commit under concurrency: many threads append at once; every returned range is
//! exclusive and holds exactly that thread's records; an acknowledged append survives a
//! crash that drops everything unsynced; concurrent appenders share fsyncs; readers running
//! beside the appenders only ever see correct records.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wal::{Crash, FaultFs, FileHandle, FileSystem, LockGuard, RecordRef, Wal, WalOptions};

/// A FaultFs whose file syncs take a millisecond and are counted, like a slow disk.
#[derive(Debug, Clone)]
struct SlowSyncFs {
    inner: FaultFs,
    file_syncs: Arc<AtomicU64>,
}

#[derive(Debug)]
struct SlowFile {
    inner: Arc<dyn FileHandle>,
    file_syncs: Arc<AtomicU64>,
}

impl FileHandle for SlowFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.inner.write_at(buf, offset)
    }
    fn file_len(&self) -> io::Result<u64> {
        self.inner.file_len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        std::thread::sleep(Duration::from_millis(1));
        self.file_syncs.fetch_add(1, Ordering::SeqCst);
        self.inner.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }
}

impl FileSystem for SlowSyncFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        Ok(Arc::new(SlowFile {
            inner: self.inner.create(path)?,
            file_syncs: self.file_syncs.clone(),
        }))
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        Ok(Arc::new(SlowFile {
            inner: self.inner.open(path)?,
            file_syncs: self.file_syncs.clone(),
        }))
    }
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
        self.inner.open_read(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        self.inner.lock_exclusive(path)
    }
}

fn payload(thread: u64, n: u64) -> Vec<u8> {
    let mut p = format!("t{thread}-n{n}-").into_bytes();
    p.resize(16 + (n % 50) as usize, thread as u8);
    p
}

#[test]
fn concurrent_appenders_share_fsyncs_and_every_ack_is_durable() {
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 40;
    let fault = FaultFs::new();
    let fs = SlowSyncFs {
        inner: fault.clone(),
        file_syncs: Arc::new(AtomicU64::new(0)),
    };
    let opts = WalOptions {
        segment_size: 2048,
        fs: Arc::new(fs.clone()),
        ..WalOptions::default()
    };
    let (log, _) = Wal::open("/w", opts.clone()).unwrap();
    let syncs_before = fs.file_syncs.load(Ordering::SeqCst);
    let log = Arc::new(log);
    let ranges: Vec<Vec<(u64, u64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let log = log.clone();
                s.spawn(move || {
                    (0..PER_THREAD)
                        .map(|n| {
                            let p = payload(t, n);
                            let r = log.append(&[RecordRef::new(t as u8, &p)]).unwrap();
                            assert_eq!(r.end, r.start + 1);
                            (r.start, n)
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let appends = THREADS * PER_THREAD;
    let syncs = fs.file_syncs.load(Ordering::SeqCst) - syncs_before;
    assert!(
        syncs < appends,
        "group commit should share fsyncs: {syncs} syncs for {appends} appends"
    );
    drop(log);
    // Every acknowledged append must survive losing everything unsynced.
    fault.crash(Crash::DropAll);
    let (log, rec) = Wal::open("/w", opts).unwrap();
    assert_eq!(rec.next_index, appends + 1);
    for (t, thread_ranges) in ranges.iter().enumerate() {
        let mut last = 0;
        for &(index, n) in thread_ranges {
            assert!(index > last, "a thread's appends are ordered");
            last = index;
            let got = &log.read(index..index + 1).unwrap()[0];
            assert_eq!((got.kind, &got.payload), (t as u8, &payload(t as u64, n)));
        }
    }
}

#[test]
fn readers_beside_appenders_see_only_correct_records() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_size: 8192,
        sync: wal::SyncPolicy::Never,
        ..WalOptions::default()
    };
    let (log, _) = Wal::open(dir.path(), opts).unwrap();
    let log = Arc::new(log);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let log = log.clone();
            s.spawn(move || {
                for n in 0..200 {
                    let p = payload(t, n);
                    log.append(&[RecordRef::new(t as u8, &p), RecordRef::new(t as u8, &p)])
                        .unwrap();
                }
            });
        }
        let log = log.clone();
        s.spawn(move || {
            let mut seen = 0;
            while seen < 1600 {
                let next = log.next_index();
                log.read_with(1..next, |index, rec| {
                    let t = u64::from(rec.kind);
                    assert!(t < 4, "record {index} has kind {t}");
                    assert!(rec.payload.starts_with(format!("t{t}-n").as_bytes()));
                })
                .unwrap();
                seen = next - 1;
            }
        });
    });
    log.sync().unwrap();
    assert_eq!(log.next_index(), 1601);
}

/// Runs `f` on a thread and fails the test if it does not finish in time (a lost wakeup in
/// the group commit would otherwise hang the suite).
fn with_watchdog(secs: u64, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => handle.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            // The closure panicked: surface its panic.
            handle.join().unwrap();
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("appenders, syncers, readers and truncations deadlocked")
        }
    }
}

#[test]
fn mixed_appenders_syncers_readers_and_truncations_never_hang_or_corrupt() {
    for policy in [wal::SyncPolicy::Always, wal::SyncPolicy::Never] {
        with_watchdog(60, move || {
            let fault = FaultFs::new();
            let opts = WalOptions {
                segment_size: 1024,
                sync: policy,
                fs: Arc::new(fault.clone()),
                ..WalOptions::default()
            };
            let (log, _) = Wal::open("/w", opts.clone()).unwrap();
            let log = Arc::new(log);
            std::thread::scope(|s| {
                for t in 0..6u64 {
                    let log = log.clone();
                    s.spawn(move || {
                        for n in 0..150 {
                            let p = payload(t, n);
                            log.append(&[RecordRef::new(t as u8, &p)]).unwrap();
                        }
                    });
                }
                for _ in 0..2 {
                    let log = log.clone();
                    s.spawn(move || {
                        for _ in 0..100 {
                            log.sync().unwrap();
                        }
                    });
                }
                let reader = log.clone();
                s.spawn(move || {
                    for _ in 0..100 {
                        let (first, next) = (reader.first_index(), reader.next_index());
                        // A concurrent truncation may shrink the log under us: only
                        // OutOfRange is an acceptable failure, and every record read must
                        // be intact.
                        let res = reader.read_with(first..next, |_, rec| {
                            let t = u64::from(rec.kind);
                            assert!(rec.payload.starts_with(format!("t{t}-n").as_bytes()));
                        });
                        assert!(
                            matches!(res, Ok(()) | Err(wal::WalError::OutOfRange { .. })),
                            "{res:?}"
                        );
                    }
                });
                let log = log.clone();
                s.spawn(move || {
                    for k in 0..10 {
                        std::thread::sleep(Duration::from_millis(2));
                        let next = log.next_index();
                        log.truncate_suffix(next.saturating_sub(3).max(log.first_index()))
                            .unwrap();
                        if k % 3 == 0 {
                            log.compact_prefix(log.next_index()).unwrap();
                        }
                    }
                });
            });
            log.sync().unwrap();
            let (first, next) = (log.first_index(), log.next_index());
            drop(log);
            fault.crash(Crash::DropAll);
            let (log, rec) = Wal::open("/w", opts).unwrap();
            assert_eq!((rec.first_index, rec.next_index), (first, next));
            log.read_with(first..next, |_, rec| {
                let t = u64::from(rec.kind);
                assert!(rec.payload.starts_with(format!("t{t}-n").as_bytes()));
            })
            .unwrap();
        });
    }
}
