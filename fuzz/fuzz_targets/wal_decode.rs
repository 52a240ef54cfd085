//! Arbitrary bytes as a WAL segment: the scanner and a full `Wal::open` (both recovery
//! modes) must answer Ok or Err, never panic; whatever `open` accepts must read back.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use wal::format::{scan_segment, SegmentHeader};
use wal::{FaultFs, RecoveryMode, Wal, WalOptions};

fn open_and_read(segment: &[u8], recovery: RecoveryMode) {
    let fs = FaultFs::new();
    fs.set_contents(
        Path::new("/fuzz/0000000000000001-0000000000000001.wal"),
        segment.to_vec(),
    );
    let options = WalOptions {
        segment_size: 4096,
        recovery,
        fs: Arc::new(fs),
        ..WalOptions::default()
    };
    if let Ok((wal, rec)) = Wal::open("/fuzz", options) {
        let records = wal
            .read(rec.first_index..rec.next_index)
            .expect("records accepted by open must read back");
        assert_eq!(records.len() as u64, rec.next_index - rec.first_index);
    }
}

fuzz_target!(|data: &[u8]| {
    // The raw bytes, header included.
    let _ = scan_segment(data);
    open_and_read(data, RecoveryMode::TruncateTornTail);
    // The bytes behind a valid header (salt 0), to reach the frame decoder.
    let header = SegmentHeader {
        flags: 0,
        seq: 1,
        first_index: 1,
        salt: 0,
    };
    let mut segment = header.encode().to_vec();
    segment.extend_from_slice(data);
    let _ = scan_segment(&segment);
    open_and_read(&segment, RecoveryMode::TruncateTornTail);
    open_and_read(&segment, RecoveryMode::Repair);
});
