//! The peer port from arbitrary bytes: what a member does with an inbound connection.
//!
//! The input is `[config byte] ++ stream bytes`. The stream is served by the real
//! `peer::serve_peer_stream` on an in-memory connection, with a recording handler whose
//! member id, cluster id and removed set come from the config byte. Checked against a
//! model of the wire format:
//! * the handshake decodes exactly when the model says so, re-encodes to the same 30
//!   bytes, and the one-byte verdict is the model's (cluster mismatch, removed, wrong
//!   member, accepted);
//! * a members query gets `verdict 0, u32 length, the JSON`;
//! * the frames handed to the handler are exactly the model's length-prefixed frames,
//!   in order, and stop at the first frame from a removed sender or a truncated one;
//! * every frame that decodes as a raft `Message` (protobuf) re-encodes and decodes to an
//!   equal message.
//!
//! Memory: a frame header may claim up to `MAX_FRAME` (1 GiB); run with
//! `-malloc_limit_mb=512` (scripts/fuzz.sh does) so that allocating what a header claims
//! before the bytes arrive is a finding.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use parking_lot::Mutex;
use protobuf::{Message as _, UnknownFields};
use raft::eraftpb::Message;
use raft_kv::server::peer::{serve_peer_stream, ConnectionKind, Handshake, PeerHandler, MAX_FRAME};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Recorder {
    id: u64,
    cluster: u64,
    removed: Vec<u64>,
    frames: Mutex<Vec<(u64, Bytes)>>,
}

impl PeerHandler for Recorder {
    fn local_id(&self) -> u64 {
        self.id
    }
    fn cluster_id(&self) -> u64 {
        self.cluster
    }
    fn is_removed(&self, id: u64) -> bool {
        self.removed.contains(&id)
    }
    fn on_raft_frame(&self, from: u64, frame: Bytes) {
        self.frames.lock().push((from, frame));
    }
    fn members_json(&self) -> Bytes {
        Bytes::from_static(br#"{"clusterID":"1","members":[]}"#)
    }
    fn on_removed(&self) {}
    fn snapshot_sent(&self, _to: u64, _delivered: bool) {}
}

fn raft_round_trip(frame: &[u8]) {
    if let Ok(mut message) = Message::parse_from_bytes(frame) {
        let encoded = message.write_to_bytes().expect("a decoded message encodes");
        let mut again = Message::parse_from_bytes(&encoded).expect("an encoded message decodes");
        // rust-protobuf 2 keeps an emptied unknown-field map (a repeated sub-message field
        // is cleared, not merged) as `Some({})`, which its derived `PartialEq` tells apart
        // from a fresh `None`; both encode the same bytes, so compare with that normalised.
        normalise_unknown_fields(&mut message);
        normalise_unknown_fields(&mut again);
        assert_eq!(again, message);
    }
}

/// Turns every empty unknown-field map of a raft message into `None`.
fn normalise_unknown_fields(message: &mut Message) {
    fn clean(fields: &mut UnknownFields) {
        if fields.fields.as_ref().is_some_and(|map| map.is_empty()) {
            fields.fields = None;
        }
    }
    clean(&mut message.unknown_fields);
    for entry in message.entries.iter_mut() {
        clean(&mut entry.unknown_fields);
    }
    if let Some(snapshot) = message.snapshot.as_mut() {
        clean(&mut snapshot.unknown_fields);
        if let Some(metadata) = snapshot.metadata.as_mut() {
            clean(&mut metadata.unknown_fields);
            if let Some(conf_state) = metadata.conf_state.as_mut() {
                clean(&mut conf_state.unknown_fields);
            }
        }
    }
}

/// The frames a well-behaved server hands on: length-prefixed, in order, until the end,
/// a truncated frame or an oversized length.
fn model_frames(mut rest: &[u8]) -> Vec<Bytes> {
    let mut frames = Vec::new();
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len > MAX_FRAME || rest.len() - 4 < len {
            break;
        }
        frames.push(Bytes::copy_from_slice(&rest[4..4 + len]));
        rest = &rest[4 + len..];
    }
    frames
}

fuzz_target!(|data: &[u8]| {
    let Some((&config, stream)) = data.split_first() else {
        return;
    };
    for frame in model_frames(stream.get(30..).unwrap_or(&[])) {
        raft_round_trip(&frame);
    }
    raft_round_trip(stream);

    let recorder = Arc::new(Recorder {
        id: [0, 1, 2, 3][usize::from(config & 3)],
        cluster: [0, 0x10, 0x20, 0x30][usize::from(config >> 2 & 3)],
        removed: if config & 0x10 != 0 {
            vec![2]
        } else {
            Vec::new()
        },
        frames: Mutex::new(Vec::new()),
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let answer = runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let serving = tokio::spawn(serve_peer_stream(server, recorder.clone()));
        let mut answer = Vec::new();
        let io = async {
            client.write_all(stream).await?;
            client.shutdown().await?;
            client.read_to_end(&mut answer).await
        };
        let _ = tokio::time::timeout(Duration::from_secs(60), io).await;
        drop(client);
        let _ = tokio::time::timeout(Duration::from_secs(60), serving).await;
        answer
    });

    let Some(raw) = stream.get(..30) else {
        assert!(answer.is_empty(), "an answer to a short handshake");
        assert!(recorder.frames.lock().is_empty());
        return;
    };
    let raw: &[u8; 30] = raw.try_into().expect("30 bytes");
    let expected_kind = match (raw[..5] == *b"TBPR\x01", raw[5]) {
        (true, 1) => Some(ConnectionKind::Raft),
        (true, 2) => Some(ConnectionKind::Members),
        _ => None,
    };
    let handshake = Handshake::decode(raw);
    assert_eq!(handshake.map(|h| h.kind), expected_kind);
    let Some(handshake) = handshake else {
        assert!(answer.is_empty(), "an answer to a foreign handshake");
        return;
    };
    assert_eq!(&handshake.encode(), raw, "handshake round trip");

    let word = |at: usize| u64::from_be_bytes(raw[at..at + 8].try_into().expect("8 bytes"));
    let (cluster, from, to) = (word(6), word(14), word(22));
    let verdict: u8 = if handshake.kind == ConnectionKind::Members {
        0
    } else if recorder.cluster != 0 && cluster != 0 && cluster != recorder.cluster {
        1
    } else if recorder.removed.contains(&from) {
        2
    } else if recorder.id != 0 && to != 0 && to != recorder.id {
        3
    } else {
        0
    };
    assert_eq!(answer.first(), Some(&verdict), "verdict");
    let frames = recorder.frames.lock().clone();
    if handshake.kind == ConnectionKind::Members {
        let json = recorder.members_json();
        let mut expected = vec![0u8];
        expected.extend_from_slice(&(json.len() as u32).to_be_bytes());
        expected.extend_from_slice(&json);
        assert_eq!(answer, expected);
        assert!(frames.is_empty());
        return;
    }
    assert_eq!(
        answer.len(),
        1,
        "only the verdict is written on a raft stream"
    );
    let expected: Vec<Bytes> = if verdict != 0 || recorder.removed.contains(&from) {
        Vec::new()
    } else {
        model_frames(&stream[30..])
    };
    let got: Vec<Bytes> = frames
        .iter()
        .map(|(f, b)| {
            assert_eq!(*f, from);
            b.clone()
        })
        .collect();
    assert_eq!(got, expected);
});
