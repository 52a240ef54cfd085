//! End-to-end behaviour of `Wal` on the real filesystem and on `FaultFs`: append, read,
//! reopen, rollover, truncate, compact, reset, options and error answers.

use std::path::Path;
use std::sync::Arc;

use wal::{
    Crash, FaultFs, FileSystem, Preallocation, Record, RecordRef, RecoveryMode, SyncPolicy, Wal,
    WalError, WalOptions, READ_WINDOW,
};

fn small(fs: &FaultFs) -> WalOptions {
    WalOptions {
        segment_size: 256,
        fs: Arc::new(fs.clone()),
        ..WalOptions::default()
    }
}

/// `small` without the spare-segment helper: for tests that count syncs or bytes, which a
/// background thread would consume at unpredictable times.
fn small_inline(fs: &FaultFs) -> WalOptions {
    WalOptions {
        preallocation: Preallocation::Inline,
        ..small(fs)
    }
}

fn payload(i: u64) -> Vec<u8> {
    format!("record-{i}-{}", "x".repeat((i % 7) as usize)).into_bytes()
}

fn append_n(log: &Wal, n: u64) {
    for _ in 0..n {
        let i = log.next_index();
        let p = payload(i);
        let r = log.append(&[RecordRef::new((i % 3) as u8, &p)]).unwrap();
        assert_eq!(r, i..i + 1);
    }
}

fn check_records(log: &Wal, range: std::ops::Range<u64>) {
    let got = log.read(range.clone()).unwrap();
    let want: Vec<Record> = range
        .map(|i| Record {
            index: i,
            kind: (i % 3) as u8,
            payload: payload(i),
        })
        .collect();
    assert_eq!(got, want);
}

#[test]
fn new_wal_on_real_disk_round_trips_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        segment_size: 4096,
        ..WalOptions::default()
    };
    let (log, rec) = Wal::open(dir.path(), opts.clone()).unwrap();
    assert!(rec.created);
    assert_eq!((rec.first_index, rec.next_index), (1, 1));
    append_n(&log, 100);
    let batch: Vec<Vec<u8>> = (101..111).map(payload).collect();
    let refs: Vec<RecordRef<'_>> = batch
        .iter()
        .zip(101u64..)
        .map(|(p, i)| RecordRef::new((i % 3) as u8, p))
        .collect();
    assert_eq!(log.append(&refs).unwrap(), 101..111);
    check_records(&log, 1..111);
    assert!(log.segments().len() > 1, "4 KiB segments must roll over");
    drop(log);
    let (log, rec) = Wal::open(dir.path(), opts).unwrap();
    assert!(!rec.created);
    assert_eq!(
        (rec.first_index, rec.next_index, rec.torn_tail),
        (1, 111, None)
    );
    check_records(&log, 1..111);
    check_records(&log, 50..51);
    assert_eq!(log.read(7..7).unwrap(), vec![]);
}

#[test]
fn segment_names_sort_as_text_and_files_are_preallocated() {
    let fs = FaultFs::new();
    let (log, _) = Wal::open("/w", small(&fs)).unwrap();
    append_n(&log, 40);
    let names: Vec<String> = fs
        .paths()
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    for info in log.segments() {
        let len = fs.contents(&info.path).unwrap().len();
        assert!(len >= 256, "{} is {len} bytes", info.path.display());
    }
}

#[test]
fn first_index_option_starts_a_new_log_after_a_snapshot() {
    let fs = FaultFs::new();
    let opts = WalOptions {
        first_index: 1000,
        ..small(&fs)
    };
    let (log, rec) = Wal::open("/w", opts.clone()).unwrap();
    assert_eq!((rec.first_index, rec.next_index), (1000, 1000));
    append_n(&log, 3);
    drop(log);
    let (log, rec) = Wal::open(
        "/w",
        WalOptions {
            first_index: 5,
            ..opts
        },
    )
    .unwrap();
    assert_eq!((rec.first_index, rec.next_index), (1000, 1003));
    check_records(&log, 1000..1003);
}

#[test]
fn truncate_suffix_reuses_indexes_and_survives_crash() {
    let fs = FaultFs::new();
    let (log, _) = Wal::open("/w", small(&fs)).unwrap();
    append_n(&log, 30);
    log.truncate_suffix(12).unwrap();
    assert_eq!(log.next_index(), 12);
    let r = log.append(&[RecordRef::new(9, b"new twelve")]).unwrap();
    assert_eq!(r, 12..13);
    drop(log);
    fs.crash(Crash::DropAll);
    let (log, rec) = Wal::open("/w", small(&fs)).unwrap();
    assert_eq!(rec.next_index, 13);
    assert_eq!(rec.torn_tail, None);
    check_records(&log, 1..12);
    assert_eq!(log.read(12..13).unwrap()[0].payload, b"new twelve");
}

#[test]
fn truncate_then_crash_never_resurrects_dropped_records() {
    for seed in 0..50 {
        let fs = FaultFs::new();
        let opts = WalOptions {
            sync: SyncPolicy::Never,
            ..small(&fs)
        };
        let (log, _) = Wal::open("/w", opts.clone()).unwrap();
        append_n(&log, 20);
        log.truncate_suffix(5).unwrap();
        append_n(&log, 2);
        drop(log);
        fs.crash(Crash::Seeded(seed));
        let (log, _) = Wal::open("/w", opts).unwrap();
        let next = log.next_index();
        assert!((5..=7).contains(&next), "seed {seed}: next {next}");
        check_records(&log, 1..next);
    }
}

#[test]
fn compact_prefix_deletes_whole_segments_only() {
    let fs = FaultFs::new();
    let (log, _) = Wal::open("/w", small(&fs)).unwrap();
    append_n(&log, 40);
    let segs = log.segments();
    assert!(segs.len() >= 3);
    let upto = segs[2].first_index + 1;
    let first = log.compact_prefix(upto).unwrap();
    assert_eq!(first, segs[2].first_index);
    assert_eq!(log.first_index(), first);
    assert!(matches!(log.read(1..3), Err(WalError::OutOfRange { .. })));
    check_records(&log, first..41);
    // Never the last segment.
    let last = log.compact_prefix(u64::MAX).unwrap();
    assert_eq!(log.segments().len(), 1);
    assert_eq!(last, log.segments()[0].first_index);
    drop(log);
    fs.crash(Crash::DropAll);
    let (log, rec) = Wal::open("/w", small(&fs)).unwrap();
    assert_eq!(rec.first_index, last);
    check_records(&log, last..41);
}

#[test]
fn reset_restarts_the_log_durably() {
    let fs = FaultFs::new();
    let (log, _) = Wal::open("/w", small(&fs)).unwrap();
    append_n(&log, 25);
    log.reset(500).unwrap();
    assert_eq!((log.first_index(), log.next_index()), (500, 500));
    append_n(&log, 2);
    drop(log);
    fs.crash(Crash::DropAll);
    let (log, rec) = Wal::open("/w", small(&fs)).unwrap();
    assert_eq!((rec.first_index, rec.next_index), (500, 502));
    check_records(&log, 500..502);
    assert_eq!(rec.segments, 1);
}

#[test]
fn reset_interrupted_after_new_segment_is_completed_by_open() {
    let fs = FaultFs::new();
    let (log, _) = Wal::open("/w", small_inline(&fs)).unwrap();
    append_n(&log, 25);
    // Let the new segment's creation (fsync + directory fsync) succeed, then fail the
    // directory fsync after the old segments were removed.
    fs.fail_syncs_after(Some(2));
    assert!(log.reset(100).is_err());
    assert!(log.has_failed());
    drop(log);
    fs.fail_syncs_after(None);
    fs.crash(Crash::DropAll);
    let (log, rec) = Wal::open("/w", small_inline(&fs)).unwrap();
    assert_eq!((rec.first_index, rec.next_index), (100, 100));
    assert!(!rec.removed_obsolete_segments.is_empty());
    assert_eq!(log.segments().len(), 1);
}

#[test]
fn out_of_range_requests_are_answers_not_failures() {
    let fs = FaultFs::new();
    let (log, _) = Wal::open("/w", small(&fs)).unwrap();
    append_n(&log, 5);
    assert!(matches!(log.read(0..2), Err(WalError::OutOfRange { .. })));
    assert!(matches!(log.read(3..7), Err(WalError::OutOfRange { .. })));
    #[allow(clippy::reversed_empty_ranges)] // reason: checking that a reversed range is refused
    let reversed = log.read(4..3);
    assert!(matches!(reversed, Err(WalError::OutOfRange { .. })));
    assert!(matches!(
        log.truncate_suffix(7),
        Err(WalError::OutOfRange { .. })
    ));
    assert!(!log.has_failed());
    log.truncate_suffix(6).unwrap();
    assert_eq!(log.append(&[]).unwrap(), 6..6);
    check_records(&log, 1..6);
}

#[test]
fn invalid_options_are_refused() {
    let fs = FaultFs::new();
    for size in [0, 63, u64::from(u32::MAX) + 1] {
        let opts = WalOptions {
            segment_size: size,
            ..small(&fs)
        };
        assert!(matches!(
            Wal::open("/w", opts),
            Err(WalError::InvalidOptions(_))
        ));
    }
}

#[test]
fn record_larger_than_a_segment_gets_its_own_segment() {
    let fs = FaultFs::new();
    let (log, _) = Wal::open("/w", small(&fs)).unwrap();
    append_n(&log, 2);
    let big = vec![0xAB; 1000];
    let r = log.append(&[RecordRef::new(1, &big)]).unwrap();
    append_n(&log, 2);
    drop(log);
    let (log, _) = Wal::open("/w", small(&fs)).unwrap();
    assert_eq!(log.read(r.clone()).unwrap()[0].payload, big);
    check_records(&log, 1..3);
    check_records(&log, r.end..r.end + 2);
}

#[test]
fn failed_fsync_poisons_the_wal_and_reopen_recovers_durable_records() {
    let fs = FaultFs::new();
    let (log, _) = Wal::open("/w", small_inline(&fs)).unwrap();
    append_n(&log, 3);
    fs.fail_syncs_after(Some(0));
    let err = log.append(&[RecordRef::new(0, b"lost")]).unwrap_err();
    assert!(
        matches!(
            err,
            WalError::Io {
                op: "fdatasync",
                ..
            }
        ),
        "{err}"
    );
    assert!(log.has_failed());
    // Never retried, even once the disk "recovers".
    fs.fail_syncs_after(None);
    assert!(matches!(
        log.append(&[RecordRef::new(0, b"x")]),
        Err(WalError::Failed { .. })
    ));
    assert!(matches!(log.sync(), Err(WalError::Failed { .. })));
    assert!(matches!(
        log.truncate_suffix(2),
        Err(WalError::Failed { .. })
    ));
    drop(log);
    fs.crash(Crash::DropAll);
    let (log, rec) = Wal::open("/w", small_inline(&fs)).unwrap();
    assert_eq!(rec.next_index, 4);
    check_records(&log, 1..4);
}

#[test]
fn no_space_at_rollover_fails_cleanly_and_loses_nothing_durable() {
    let fs = FaultFs::new();
    let (log, _) = Wal::open("/w", small_inline(&fs)).unwrap();
    append_n(&log, 3);
    let used: u64 = fs
        .paths()
        .iter()
        .map(|p| fs.contents(p).unwrap().len() as u64)
        .sum();
    fs.set_capacity(Some(used + 100));
    let mut last_ok = log.next_index();
    let err = loop {
        let i = log.next_index();
        let p = payload(i);
        match log.append(&[RecordRef::new((i % 3) as u8, &p)]) {
            Ok(_) => last_ok = i + 1,
            Err(e) => break e,
        }
    };
    assert!(err.is_no_space(), "{err}");
    drop(log);
    fs.set_capacity(None);
    fs.crash(Crash::DropAll);
    let (log, rec) = Wal::open("/w", small_inline(&fs)).unwrap();
    assert_eq!(rec.next_index, last_ok);
    assert!(rec.removed_temp_files.len() <= 1);
    check_records(&log, 1..last_ok);
}

#[test]
fn torn_write_is_truncated_and_reported_on_reopen() {
    let fs = FaultFs::new();
    // Large enough segments that the torn append does not roll over.
    let small = |fs: &FaultFs| WalOptions {
        segment_size: 4096,
        ..small_inline(fs)
    };
    let (log, _) = Wal::open("/w", small(&fs)).unwrap();
    append_n(&log, 4);
    fs.tear_writes_after(Some(30));
    assert!(log.append(&[RecordRef::new(0, &[7u8; 100])]).is_err());
    drop(log);
    fs.tear_writes_after(None);
    fs.crash(Crash::KeepAll);
    let (log, rec) = Wal::open("/w", small(&fs)).unwrap();
    let torn = rec.torn_tail.expect("torn tail reported");
    assert_eq!(torn.bytes_dropped, 30);
    assert_eq!(rec.next_index, 5);
    check_records(&log, 1..5);
    drop(log);
    // The truncation is durable: a second open finds a clean log.
    let (_, rec) = Wal::open("/w", small(&fs)).unwrap();
    assert_eq!(rec.torn_tail, None);
}

#[test]
fn leftover_temp_files_are_removed() {
    let fs = FaultFs::new();
    let (log, _) = Wal::open("/w", small(&fs)).unwrap();
    append_n(&log, 2);
    drop(log);
    let tmp = Path::new("/w/00000000000000ff-0000000000000003.wal.tmp");
    fs.set_contents(tmp, vec![1, 2, 3]);
    let (_, rec) = Wal::open("/w", small(&fs)).unwrap();
    assert_eq!(rec.removed_temp_files, vec![tmp.to_path_buf()]);
    assert!(!fs.paths().contains(&tmp.to_path_buf()));
}

#[test]
fn a_missing_middle_segment_is_a_gap_error() {
    let fs = FaultFs::new();
    let (log, _) = Wal::open("/w", small(&fs)).unwrap();
    append_n(&log, 40);
    let segs = log.segments();
    drop(log);
    fs.remove_file(&segs[1].path).unwrap();
    fs.sync_dir(Path::new("/w")).unwrap();
    let err = Wal::open("/w", small(&fs)).unwrap_err();
    assert!(matches!(err, WalError::Gap { .. }), "{err}");
    let (log, rec) = Wal::open(
        "/w",
        WalOptions {
            recovery: RecoveryMode::Repair,
            ..small(&fs)
        },
    )
    .unwrap();
    let repaired = rec.repaired.expect("repair reported");
    assert_eq!(repaired.path, segs[0].path);
    assert_eq!(rec.next_index, segs[0].next_index);
    check_records(&log, 1..rec.next_index);
}

#[test]
fn wal_and_its_records_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Wal>();
    assert_send_sync::<wal::SnapshotStore>();
    assert_send_sync::<WalError>();
}

/// `read_with` reads in windows of about `READ_WINDOW` bytes: a read spanning many windows
/// and several segments, with records smaller and larger than a window, sees every record
/// once, in order, and so does every sub-range that starts or ends inside a window.
#[test]
fn reads_span_windows_and_segments() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        segment_size: 3 * READ_WINDOW as u64,
        sync: SyncPolicy::Never,
        ..WalOptions::default()
    };
    let (log, _) = Wal::open(dir.path(), options.clone()).unwrap();
    let size = |i: u64| match i % 5 {
        0 => READ_WINDOW + 100,
        1 => READ_WINDOW / 3,
        _ => 1000 + i as usize,
    };
    let body = |i: u64| vec![(i % 251) as u8; size(i)];
    for i in 1..=40u64 {
        assert_eq!(
            log.append(&[RecordRef::new(7, &body(i))]).unwrap(),
            i..i + 1
        );
    }
    assert!(log.segments().len() > 3, "{:?}", log.segments());
    drop(log);
    let (log, _) = Wal::open(dir.path(), options).unwrap();
    for (start, end) in [
        (1, 41),
        (2, 41),
        (1, 2),
        (6, 7),
        (7, 33),
        (40, 41),
        (12, 12),
    ] {
        let mut seen = Vec::new();
        log.read_with(start..end, |index, rec| {
            assert_eq!(rec.kind, 7);
            assert_eq!(rec.payload.len(), size(index), "record {index}");
            assert!(rec.payload.iter().all(|&b| b == (index % 251) as u8));
            seen.push(index);
        })
        .unwrap();
        assert_eq!(seen, (start..end).collect::<Vec<_>>(), "{start}..{end}");
    }
    assert!(matches!(
        log.read_with(0..3, |_, _| {}),
        Err(WalError::OutOfRange { .. })
    ));
    assert!(matches!(
        log.read_with(30..42, |_, _| {}),
        Err(WalError::OutOfRange { .. })
    ));
    assert!(matches!(
        log.read_with(50..50, |_, _| {}),
        Err(WalError::OutOfRange { .. })
    ));
}
