//! Every byte of a small multi-segment log is flipped, one at a time (with two different
//! masks), and the log reopened. Every flip must be detected: `open` fails naming the file
//! and offset, or — only when the flip hits the last record or the zeroed space after it —
//! reports a truncated torn tail. No wrong record is ever returned.

use std::path::PathBuf;
use std::sync::Arc;

use wal::format::FRAME_ALIGN;
use wal::{FaultFs, Preallocation, Record, RecordRef, RecoveryMode, Wal, WalError, WalOptions};

struct Log {
    fs: FaultFs,
    records: Vec<Record>,
    /// (path, bytes) of every segment, oldest first.
    files: Vec<(PathBuf, Vec<u8>)>,
    /// Offset of the last record's frame in the last segment.
    last_frame: u64,
}

fn options(fs: &FaultFs, recovery: RecoveryMode) -> WalOptions {
    WalOptions {
        segment_size: 192,
        recovery,
        fs: Arc::new(fs.clone()),
        // Only segment files in the directory: every byte flipped is a log byte.
        preallocation: Preallocation::Inline,
        ..WalOptions::default()
    }
}

fn build() -> Log {
    let fs = FaultFs::new();
    let (log, _) = Wal::open("/w", options(&fs, RecoveryMode::TruncateTornTail)).unwrap();
    let mut records = Vec::new();
    for i in 0..14u64 {
        let payload: Vec<u8> = (0..(i * 5 % 23)).map(|b| (b as u8) ^ (i as u8)).collect();
        let index = log
            .append(&[RecordRef::new(i as u8, &payload)])
            .unwrap()
            .start;
        records.push(Record {
            index,
            kind: i as u8,
            payload,
        });
    }
    let segments = log.segments();
    assert!(
        segments.len() >= 3,
        "want a multi-segment log, got {segments:?}"
    );
    let last = segments.last().unwrap();
    assert!(
        last.next_index - last.first_index >= 2,
        "last segment needs 2+ records"
    );
    drop(log);
    // The last record's frame offset: reopen and find where the frame before the end begins
    // by dropping the last record in a fork.
    let probe = fs.fork();
    let (plog, _) = Wal::open("/w", options(&probe, RecoveryMode::TruncateTornTail)).unwrap();
    plog.truncate_suffix(records.last().unwrap().index).unwrap();
    drop(plog);
    let before = probe.contents(&last.path).unwrap();
    let after = fs.contents(&last.path).unwrap();
    // The first byte that differs lies in the frame's first 8 bytes (its CRC, which the
    // segment's random salt seeds and which may start with zero bytes, then its non-zero
    // payload length); frames start on FRAME_ALIGN boundaries.
    let first_diff = before.iter().zip(&after).position(|(a, b)| a != b).unwrap();
    let last_frame = (first_diff / FRAME_ALIGN * FRAME_ALIGN) as u64;
    let files = segments
        .iter()
        .map(|s| (s.path.clone(), fs.contents(&s.path).unwrap()))
        .collect();
    Log {
        fs,
        records,
        files,
        last_frame,
    }
}

#[test]
fn every_flipped_byte_is_detected_and_no_wrong_record_is_returned() {
    let log = build();
    let n_files = log.files.len();
    let (mut errors, mut torn) = (0, 0);
    for (file_no, (path, bytes)) in log.files.iter().enumerate() {
        let is_last_file = file_no + 1 == n_files;
        for offset in 0..bytes.len() {
            for mask in [0x01u8, 0xFF] {
                let fs = log.fs.fork();
                let mut bad = bytes.clone();
                bad[offset] ^= mask;
                fs.set_contents(path, bad);
                let at = format!("{} offset {offset} mask {mask:#x}", path.display());
                match Wal::open("/w", options(&fs, RecoveryMode::TruncateTornTail)) {
                    Err(WalError::Corrupt { path: p, .. }) | Err(WalError::Gap { path: p, .. }) => {
                        assert_eq!(&p, path, "{at}: error names the wrong file");
                        errors += 1;
                    }
                    Err(e) => panic!("{at}: unexpected error kind {e}"),
                    Ok((wal, rec)) => {
                        let tail = rec
                            .torn_tail
                            .unwrap_or_else(|| panic!("{at}: flip went undetected"));
                        assert!(is_last_file, "{at}: torn tail outside the last segment");
                        assert!(
                            offset as u64 >= log.last_frame,
                            "{at}: torn-tail truncation although the flip is before the last record"
                        );
                        assert_eq!(&tail.path, path);
                        let hit_last_record = tail.offset == log.last_frame;
                        let want = if hit_last_record {
                            &log.records[..log.records.len() - 1]
                        } else {
                            &log.records[..]
                        };
                        assert_eq!(rec.first_index, 1, "{at}");
                        assert_eq!(rec.next_index, want.len() as u64 + 1, "{at}");
                        let got = wal.read(rec.first_index..rec.next_index).unwrap();
                        assert_eq!(got, want, "{at}: wrong records returned");
                        torn += 1;
                    }
                }
            }
        }
    }
    // Both outcomes occur (the test exercises both branches).
    assert!(errors > 0 && torn > 0, "errors {errors}, torn {torn}");
}

#[test]
fn repair_mode_cuts_at_the_first_bad_record_and_returns_only_good_ones() {
    let log = build();
    // Flip a byte inside the first record of the second segment.
    let (path, bytes) = &log.files[1];
    let mut bad = bytes.clone();
    bad[40 + 4] ^= 0x10;
    let fs = log.fs.fork();
    fs.set_contents(path, bad);
    let err = Wal::open("/w", options(&fs, RecoveryMode::TruncateTornTail)).unwrap_err();
    match &err {
        WalError::Corrupt {
            path: p, offset, ..
        } => {
            assert_eq!((p, *offset), (path, 40));
        }
        e => panic!("unexpected {e}"),
    }
    assert!(err.to_string().contains("offset 40"), "{err}");
    let (wal, rec) = Wal::open("/w", options(&fs, RecoveryMode::Repair)).unwrap();
    let repaired = rec.repaired.expect("repair reported");
    assert_eq!((&repaired.path, repaired.offset), (path, 40));
    assert_eq!(repaired.segments_removed.len(), log.files.len() - 2);
    let got = wal.read(rec.first_index..rec.next_index).unwrap();
    assert_eq!(got, log.records[..got.len()]);
    // Appends continue after the cut, and the repaired log reopens cleanly.
    let next = wal.append(&[RecordRef::new(1, b"after repair")]).unwrap();
    assert_eq!(next.start, rec.next_index);
    drop(wal);
    let (_, again) = Wal::open("/w", options(&fs, RecoveryMode::TruncateTornTail)).unwrap();
    assert_eq!(
        (again.torn_tail, again.repaired, again.next_index),
        (None, None, next.end)
    );
}

#[test]
fn truncated_segment_files_are_detected() {
    let log = build();
    for (file_no, (path, bytes)) in log.files.iter().enumerate() {
        for len in [0, 10, 39, 41, 100] {
            let fs = log.fs.fork();
            fs.set_contents(path, bytes[..len.min(bytes.len())].to_vec());
            match Wal::open("/w", options(&fs, RecoveryMode::TruncateTornTail)) {
                Err(WalError::Corrupt { .. }) | Err(WalError::Gap { .. }) => {}
                Ok((wal, rec)) => {
                    // Only a cut inside the last segment's records can be a torn tail.
                    assert_eq!(
                        file_no + 1,
                        log.files.len(),
                        "{} cut to {len}",
                        path.display()
                    );
                    let got = wal.read(rec.first_index..rec.next_index).unwrap();
                    assert_eq!(got, log.records[..got.len()]);
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
    }
}
