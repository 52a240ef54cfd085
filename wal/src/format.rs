//! The on-disk format of WAL segments: a [`SegmentHeader`] followed by [`Frame`]s, and the
//! scanner ([`scan_segment`]) that recovery and the `wal_decode` fuzz target run over raw
//! segment bytes.
//!
//! Everything is little-endian. A segment file is preallocated (filled with zeros up to its
//! capacity) when it is created, so the bytes after the last frame are zeros unless a write
//! was torn. The scanner never panics and never trusts a length before checking it against
//! the buffer.
//!
//! Invariants the writer keeps and the scanner checks:
//! * frames start right after the header and follow each other with no gap, each starting at
//!   a multiple of [`FRAME_ALIGN`];
//! * the n-th frame of a segment carries index `first_index + n`;
//! * every byte of a frame, padding included, is covered by its CRC, which is seeded with the
//!   segment's random salt (a frame copied from another segment, or a frame-shaped payload,
//!   does not validate);
//! * after the last frame, the segment holds only zeros.

use std::fmt;

/// The 8 magic bytes at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"TABBYWAL";
/// The format version this crate writes and reads.
pub const SEGMENT_VERSION: u32 = 1;
/// Length of [`SegmentHeader`] on disk; frames start at this offset.
pub const SEGMENT_HEADER_LEN: usize = 40;
/// Length of a frame's fixed header, before the payload.
pub const FRAME_HEADER_LEN: usize = 24;
/// Frames start at, and are padded to, multiples of this many bytes.
pub const FRAME_ALIGN: usize = 8;
/// The frame type of a record (the only one in version 1). Zero never appears in a valid
/// frame, so zeroed preallocated space never decodes.
pub const FRAME_TYPE_RECORD: u8 = 1;
/// Segment header flag: this segment starts a fresh log; every older segment is obsolete
/// (written by [`Wal::reset`](crate::Wal::reset)).
pub const FLAG_RESET: u32 = 1;
/// The largest payload a frame can carry (the whole frame must fit a segment, whose offsets
/// are 32-bit).
pub const MAX_PAYLOAD_LEN: usize =
    (u32::MAX as usize) - SEGMENT_HEADER_LEN - FRAME_HEADER_LEN - FRAME_ALIGN;

/// The header at offset 0 of every segment file.
///
/// ```text
/// offset size field
///      0    8 magic        b"TABBYWAL"
///      8    4 version      u32 LE, = 1
///     12    4 flags        u32 LE, bit 0 = FLAG_RESET, other bits zero
///     16    8 seq          u64 LE, the segment's sequence number (also in its file name)
///     24    8 first_index  u64 LE, index of the segment's first record (also in its name)
///     32    4 salt         u32 LE, random; seeds the CRC of every frame in this segment
///     36    4 header_crc   u32 LE, CRC32 (IEEE, crc32fast) of bytes 0..36
///     40      frames...
/// ```
///
/// The file is named `{seq:016x}-{first_index:016x}.wal`, so names sort as text in log order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Flag bits ([`FLAG_RESET`]).
    pub flags: u32,
    /// Sequence number, strictly increasing across the segments of one log.
    pub seq: u64,
    /// Index of the first record stored in this segment.
    pub first_index: u64,
    /// Seed for the CRC of every frame of the segment.
    pub salt: u32,
}

/// Why bytes failed to decode, with the offset (relative to the segment start) of the
/// offending structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Offset in the segment.
    pub offset: u64,
    /// What check failed.
    pub reason: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "offset {}: {}", self.offset, self.reason)
    }
}

fn le_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(src) = buf.get(at..at + 4) {
        b.copy_from_slice(src);
    }
    u32::from_le_bytes(b)
}

fn le_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(src) = buf.get(at..at + 8) {
        b.copy_from_slice(src);
    }
    u64::from_le_bytes(b)
}

impl SegmentHeader {
    /// Encodes the header (see the type docs for the layout).
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        out[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&self.flags.to_le_bytes());
        out[16..24].copy_from_slice(&self.seq.to_le_bytes());
        out[24..32].copy_from_slice(&self.first_index.to_le_bytes());
        out[32..36].copy_from_slice(&self.salt.to_le_bytes());
        let crc = crc32fast::hash(&out[0..36]);
        out[36..40].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and checks a header from the start of `buf`.
    pub fn decode(buf: &[u8]) -> Result<SegmentHeader, DecodeError> {
        let err = |reason: &str| DecodeError {
            offset: 0,
            reason: reason.to_owned(),
        };
        let Some(head) = buf.get(..SEGMENT_HEADER_LEN) else {
            return Err(err("file shorter than the segment header"));
        };
        if head[0..8] != SEGMENT_MAGIC {
            return Err(err("bad magic (not a tabby WAL segment)"));
        }
        if le_u32(head, 36) != crc32fast::hash(&head[0..36]) {
            return Err(err("segment header checksum mismatch"));
        }
        let version = le_u32(head, 8);
        if version != SEGMENT_VERSION {
            return Err(err(&format!("unsupported segment version {version}")));
        }
        let flags = le_u32(head, 12);
        if flags & !FLAG_RESET != 0 {
            return Err(err(&format!("unknown segment flags {flags:#x}")));
        }
        Ok(SegmentHeader {
            flags,
            seq: le_u64(head, 16),
            first_index: le_u64(head, 24),
            salt: le_u32(head, 32),
        })
    }

    /// The segment's file name: `{seq:016x}-{first_index:016x}.wal`.
    pub fn file_name(&self) -> String {
        segment_file_name(self.seq, self.first_index)
    }
}

/// The file name of segment `seq` whose first record is `first_index`.
pub fn segment_file_name(seq: u64, first_index: u64) -> String {
    format!("{seq:016x}-{first_index:016x}.wal")
}

/// Parses a segment file name back into `(seq, first_index)`.
pub fn parse_segment_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".wal")?;
    let (seq, first) = stem.split_once('-')?;
    if seq.len() != 16 || first.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(seq, 16).ok()?,
        u64::from_str_radix(first, 16).ok()?,
    ))
}

/// Total on-disk length of a frame carrying `payload_len` bytes (header, payload, padding).
pub const fn frame_len(payload_len: usize) -> usize {
    (FRAME_HEADER_LEN + payload_len).div_ceil(FRAME_ALIGN) * FRAME_ALIGN
}

/// One record as framed on disk.
///
/// ```text
/// offset size field
///      0    4 crc          u32 LE: CRC32 (IEEE, crc32fast) with initial value = segment salt,
///                          over bytes 4..frame_len (rest of header, payload, padding)
///      4    4 payload_len  u32 LE
///      8    8 index        u64 LE: the record's index
///     16    1 frame_type   = FRAME_TYPE_RECORD (1); 0 marks zeroed (unused) space
///     17    1 kind         the caller's record type
///     18    6 reserved     zero
///     24    n payload
///   24+n    p padding      zeros, so that frame_len = 24 + n + p is a multiple of 8
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The record's index.
    pub index: u64,
    /// The caller's record type.
    pub kind: u8,
    /// The record's payload.
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// Appends the encoded frame to `out` (see the type docs for the layout).
    /// The payload must be at most [`MAX_PAYLOAD_LEN`] bytes (the caller checks).
    pub fn encode_into(&self, out: &mut Vec<u8>, salt: u32) {
        let start = out.len();
        let total = frame_len(self.payload.len());
        out.reserve(total);
        out.extend_from_slice(&[0u8; 4]);
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.index.to_le_bytes());
        out.push(FRAME_TYPE_RECORD);
        out.push(self.kind);
        out.extend_from_slice(&[0u8; 6]);
        out.extend_from_slice(self.payload);
        out.resize(start + total, 0);
        let mut hasher = crc32fast::Hasher::new_with_initial(salt);
        hasher.update(&out[start + 4..start + total]);
        let crc = hasher.finalize();
        out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes the frame at the start of `buf` under `salt`; returns it and its total length.
    /// Does not check the index sequence (the caller does).
    pub fn decode(buf: &[u8], salt: u32) -> Result<(Frame<'_>, usize), &'static str> {
        let Some(head) = buf.get(..FRAME_HEADER_LEN) else {
            return Err("truncated frame header");
        };
        if head[16] != FRAME_TYPE_RECORD {
            return Err(if head.iter().all(|&b| b == 0) {
                "zeroed space where a frame should start"
            } else {
                "bad frame type"
            });
        }
        if head[18..24].iter().any(|&b| b != 0) {
            return Err("non-zero reserved bytes in frame header");
        }
        let payload_len = le_u32(head, 4) as usize;
        if payload_len > MAX_PAYLOAD_LEN {
            return Err("frame length out of bounds");
        }
        let total = frame_len(payload_len);
        let Some(frame) = buf.get(..total) else {
            return Err("frame runs past the end of the segment");
        };
        let mut hasher = crc32fast::Hasher::new_with_initial(salt);
        hasher.update(&frame[4..]);
        if hasher.finalize() != le_u32(head, 0) {
            return Err("frame checksum mismatch");
        }
        Ok((
            Frame {
                index: le_u64(head, 8),
                kind: head[17],
                payload: &frame[FRAME_HEADER_LEN..FRAME_HEADER_LEN + payload_len],
            },
            total,
        ))
    }
}

/// How the frames of a scanned segment end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanEnd {
    /// After the last valid frame there are only zeros.
    Clean,
    /// Bytes after the last valid frame are not zeros and do not decode.
    Garbage {
        /// Offset of the first bad byte range (= the end of the last valid frame).
        offset: u64,
        /// Why the frame there was rejected.
        reason: &'static str,
        /// One past the last non-zero byte of the segment.
        garbage_end: u64,
        /// A valid frame (for this segment's salt) starts somewhere after `offset`: the bad
        /// bytes are in the middle of the log, not a torn tail.
        valid_frame_after: bool,
    },
}

/// The result of scanning one segment's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentScan {
    /// The decoded header.
    pub header: SegmentHeader,
    /// Offsets of the valid frames, in order; frame `n` holds index `first_index + n`.
    pub offsets: Vec<u32>,
    /// Offset one past the last valid frame.
    pub end: u64,
    /// What follows the last valid frame.
    pub tail: ScanEnd,
}

/// Scans a whole segment: header, then frames until the first one that does not decode or
/// does not carry the expected index, then classifies what follows. Never panics.
pub fn scan_segment(buf: &[u8]) -> Result<SegmentScan, DecodeError> {
    let header = SegmentHeader::decode(buf)?;
    if buf.len() > u32::MAX as usize {
        return Err(DecodeError {
            offset: 0,
            reason: "segment larger than 4 GiB".to_owned(),
        });
    }
    let mut offsets = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    let mut expected = header.first_index;
    let mut failure: Option<&'static str> = None;
    while pos < buf.len() {
        let rest = &buf[pos..];
        match Frame::decode(rest, header.salt) {
            Ok((frame, len)) if frame.index == expected => {
                offsets.push(pos as u32);
                pos += len;
                expected = expected.wrapping_add(1);
            }
            Ok(_) => {
                failure = Some("frame index out of sequence");
                break;
            }
            Err(reason) => {
                failure = Some(reason);
                break;
            }
        }
    }
    let end = pos as u64;
    let garbage_end = buf
        .get(pos..)
        .and_then(|rest| rest.iter().rposition(|&b| b != 0))
        .map(|last| pos + last + 1);
    let tail = match (garbage_end, failure) {
        (None, _) => ScanEnd::Clean,
        (Some(garbage_end), reason) => ScanEnd::Garbage {
            offset: end,
            reason: reason.unwrap_or("unexpected bytes after the last frame"),
            garbage_end: garbage_end as u64,
            // A checksummed frame with the wrong index is never a torn write.
            valid_frame_after: reason == Some("frame index out of sequence")
                || valid_frame_after(buf, pos, header.salt),
        },
    };
    Ok(SegmentScan {
        header,
        offsets,
        end,
        tail,
    })
}

/// True when a frame that validates under `salt` starts at an aligned offset after `pos`.
fn valid_frame_after(buf: &[u8], pos: usize, salt: u32) -> bool {
    let mut at = pos + FRAME_ALIGN;
    while at + FRAME_HEADER_LEN <= buf.len() {
        if buf[at + 16] == FRAME_TYPE_RECORD && Frame::decode(&buf[at..], salt).is_ok() {
            return true;
        }
        at += FRAME_ALIGN;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(first: u64, payloads: &[&[u8]], capacity: usize) -> Vec<u8> {
        let header = SegmentHeader {
            flags: 0,
            seq: 7,
            first_index: first,
            salt: 0xDEAD_BEEF,
        };
        let mut buf = header.encode().to_vec();
        for (i, p) in payloads.iter().enumerate() {
            Frame {
                index: first + i as u64,
                kind: 3,
                payload: p,
            }
            .encode_into(&mut buf, header.salt);
        }
        buf.resize(capacity.max(buf.len()), 0);
        buf
    }

    #[test]
    fn header_round_trips_and_names_sort_in_log_order() {
        let h = SegmentHeader {
            flags: FLAG_RESET,
            seq: 0x1_0000,
            first_index: 42,
            salt: 9,
        };
        assert_eq!(SegmentHeader::decode(&h.encode()).unwrap(), h);
        assert_eq!(
            parse_segment_file_name(&h.file_name()),
            Some((0x1_0000, 42))
        );
        assert!(segment_file_name(9, 100) < segment_file_name(10, 1));
        assert_eq!(parse_segment_file_name("0001-0002.wal"), None);
        assert_eq!(
            parse_segment_file_name("zzzzzzzzzzzzzzzz-0000000000000001.wal"),
            None
        );
    }

    #[test]
    fn frame_lengths_are_aligned() {
        assert_eq!(frame_len(0), 24);
        assert_eq!(frame_len(1), 32);
        assert_eq!(frame_len(8), 32);
        assert_eq!(frame_len(9), 40);
    }

    #[test]
    fn scan_reads_back_frames_and_a_clean_tail() {
        let buf = segment(5, &[b"a", b"", b"hello world"], 512);
        let scan = scan_segment(&buf).unwrap();
        assert_eq!(scan.offsets.len(), 3);
        assert_eq!(scan.tail, ScanEnd::Clean);
        let (frame, _) = Frame::decode(&buf[scan.offsets[2] as usize..], 0xDEAD_BEEF).unwrap();
        assert_eq!(
            (frame.index, frame.kind, frame.payload),
            (7, 3, &b"hello world"[..])
        );
    }

    #[test]
    fn torn_last_frame_is_garbage_without_a_valid_frame_after() {
        let mut buf = segment(1, &[b"aaaa", b"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"], 512);
        let scan = scan_segment(&buf).unwrap();
        let second = scan.offsets[1] as usize;
        // Tear: zero the second half of the second frame.
        for b in &mut buf[second + 30..second + 56] {
            *b = 0;
        }
        let scan = scan_segment(&buf).unwrap();
        assert_eq!(scan.offsets.len(), 1);
        match scan.tail {
            ScanEnd::Garbage {
                offset,
                valid_frame_after,
                ..
            } => {
                assert_eq!(offset, second as u64);
                assert!(!valid_frame_after);
            }
            ScanEnd::Clean => panic!("torn frame not detected"),
        }
    }

    #[test]
    fn flipped_middle_frame_has_a_valid_frame_after() {
        let mut buf = segment(1, &[b"aaaa", b"bbbb", b"cccc"], 512);
        let first = SEGMENT_HEADER_LEN;
        buf[first + 25] ^= 0x01;
        let scan = scan_segment(&buf).unwrap();
        assert!(scan.offsets.is_empty());
        assert!(matches!(
            scan.tail,
            ScanEnd::Garbage {
                valid_frame_after: true,
                ..
            }
        ));
    }

    #[test]
    fn frames_do_not_validate_under_another_salt() {
        let buf = segment(1, &[b"x"], 128);
        assert!(Frame::decode(&buf[SEGMENT_HEADER_LEN..], 1).is_err());
    }

    #[test]
    fn short_and_garbage_inputs_are_errors_not_panics() {
        assert!(scan_segment(&[]).is_err());
        assert!(scan_segment(&[0u8; 39]).is_err());
        assert!(scan_segment(&[0xFFu8; 100]).is_err());
        let mut buf = segment(1, &[], 64);
        buf.truncate(SEGMENT_HEADER_LEN + 3);
        buf[SEGMENT_HEADER_LEN] = 1;
        let scan = scan_segment(&buf).unwrap();
        assert!(matches!(scan.tail, ScanEnd::Garbage { .. }));
    }
}
