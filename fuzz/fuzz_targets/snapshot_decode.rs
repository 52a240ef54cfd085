//! Snapshots (and the raft records beside them) from arbitrary bytes.
//!
//! * `wal::snapshot::decode_snapshot` on raw file bytes: whatever decodes re-encodes to
//!   exactly the same bytes (the format is canonical).
//! * raft-kv's `SnapshotPayload` (bincode: version, membership, state machine bytes):
//!   whatever decodes re-encodes and decodes equal.
//! * the v2 store's snapshot restore (`Store::restore`, bincode behind `TKVS` + version):
//!   whatever restores snapshots again to bytes that restore to the same state (same
//!   hash, same bytes: snapshot ∘ restore is idempotent).
//! * a whole member start: a snapshot file (well framed around fuzzed metadata, `ConfState`
//!   and payload, or raw bytes) in a `SnapshotStore` plus fuzzed WAL records (raw, or
//!   well-formed raft entries / hard states / snapshot markers with fuzzed fields) on a
//!   `FaultFs`, opened as the etcd member opens them (`WalDisk` → `RaftNode::open` with the
//!   real store state machine): it must answer Ok or Err, never panic.
//!
//! Replay a finding as a unit test beside the decoder it breaks.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, SnapshotMetadata};
use raft_kv::node::{
    ClusterStart, Member, MemberInfo, Membership, NodeConfig, RaftNode, SnapshotPayload,
};
use raft_kv::server::keyspace::new_store;
use raft_kv::storage::{WalDisk, WalDiskOptions};
use raft_kv::store::{Store, SNAPSHOT_MAGIC, SNAPSHOT_VERSION};
use wal::snapshot::{decode_snapshot, encode_snapshot};
use wal::{FaultFs, RecordRef, SnapshotMeta, Wal, WalOptions};

/// WAL segment size for the member's data dir.
const SEGMENT: u64 = 64 * 1024;

#[derive(Arbitrary, Debug)]
enum Payload {
    Raw(Vec<u8>),
    /// A valid payload envelope around fuzzed membership and store bytes.
    Wrapped {
        members: Vec<(u8, String, bool)>,
        store: Vec<u8>,
        magic: bool,
    },
}

#[derive(Arbitrary, Debug)]
enum Extra {
    Raw(Vec<u8>),
    Conf { voters: Vec<u8>, learners: Vec<u8> },
}

#[derive(Arbitrary, Debug)]
struct Snap {
    index: u8,
    term: u8,
    extra: Extra,
    payload: Payload,
    /// Name the file after other numbers than its contents.
    misnamed: bool,
}

#[derive(Arbitrary, Debug)]
enum Record {
    Raw {
        kind: u8,
        payload: Vec<u8>,
    },
    Entry {
        index: u8,
        term: u8,
        conf: bool,
        data: Vec<u8>,
    },
    HardState {
        term: u8,
        vote: u8,
        commit: u8,
    },
    Marker {
        install: bool,
        index: u8,
        term: u8,
        voters: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    raw: Vec<u8>,
    snaps: Vec<Snap>,
    records: Vec<Record>,
    join: bool,
}

fn conf_state(voters: &[u8], learners: &[u8]) -> ConfState {
    let mut conf = ConfState::default();
    conf.set_voters(voters.iter().take(5).map(|v| u64::from(*v)).collect());
    conf.set_learners(learners.iter().take(5).map(|v| u64::from(*v)).collect());
    conf
}

fn store_round_trip(bytes: &[u8]) {
    if let Ok(store) = Store::restore(bytes) {
        let once = store.snapshot();
        let again = Store::restore(&once).expect("a store's own snapshot restores");
        assert_eq!(again.hash(), store.hash());
        assert_eq!(again.snapshot(), once, "snapshot/restore is idempotent");
    }
}

fn payload_bytes(payload: &Payload) -> Vec<u8> {
    match payload {
        Payload::Raw(bytes) => bytes.clone(),
        Payload::Wrapped {
            members,
            store,
            magic,
        } => {
            let mut sm = Vec::new();
            if *magic {
                sm.extend_from_slice(&SNAPSHOT_MAGIC);
                sm.push(SNAPSHOT_VERSION);
            }
            sm.extend_from_slice(store);
            SnapshotPayload {
                version: SnapshotPayload::VERSION,
                membership: Membership::new(members.iter().take(5).map(|(id, name, learner)| {
                    Member {
                        id: u64::from(*id),
                        info: MemberInfo {
                            name: name.clone(),
                            peer_urls: vec![],
                            client_urls: vec![],
                        },
                        learner: *learner,
                    }
                })),
                state_machine: sm,
            }
            .encode()
            .unwrap_or_default()
        }
    }
}

fn record_bytes(record: &Record) -> (u8, Vec<u8>) {
    match record {
        Record::Raw { kind, payload } => (*kind, payload.clone()),
        Record::Entry {
            index,
            term,
            conf,
            data,
        } => {
            let mut e = Entry {
                index: u64::from(*index),
                term: u64::from(*term),
                data: data.clone().into(),
                ..Entry::default()
            };
            if *conf {
                e.set_entry_type(raft::eraftpb::EntryType::EntryConfChange);
            }
            (1, e.write_to_bytes().unwrap_or_default())
        }
        Record::HardState { term, vote, commit } => {
            let hs = HardState {
                term: u64::from(*term),
                vote: u64::from(*vote),
                commit: u64::from(*commit),
                ..HardState::default()
            };
            (2, hs.write_to_bytes().unwrap_or_default())
        }
        Record::Marker {
            install,
            index,
            term,
            voters,
        } => {
            let mut meta = SnapshotMetadata {
                index: u64::from(*index),
                term: u64::from(*term),
                ..SnapshotMetadata::default()
            };
            meta.set_conf_state(conf_state(voters, &[]));
            (
                if *install { 3 } else { 4 },
                meta.write_to_bytes().unwrap_or_default(),
            )
        }
    }
}

fuzz_target!(|input: Input| {
    // Layer by layer, on raw bytes.
    if let Ok((meta, data)) = decode_snapshot(&input.raw) {
        assert_eq!(
            encode_snapshot(&meta, &data).ok(),
            Some(input.raw.clone()),
            "canonical format"
        );
    }
    if let Ok(payload) = SnapshotPayload::decode(&input.raw) {
        let bytes = payload.encode().expect("a decoded payload encodes");
        assert_eq!(SnapshotPayload::decode(&bytes).ok(), Some(payload));
    }
    store_round_trip(&input.raw);
    let mut framed = SNAPSHOT_MAGIC.to_vec();
    framed.push(SNAPSHOT_VERSION);
    framed.extend_from_slice(&input.raw);
    store_round_trip(&framed);

    // A member opening a data dir holding these snapshots and records.
    let fs = Arc::new(FaultFs::new());
    for snap in input.snaps.iter().take(3) {
        let extra = match &snap.extra {
            Extra::Raw(bytes) => bytes.clone(),
            Extra::Conf { voters, learners } => conf_state(voters, learners)
                .write_to_bytes()
                .unwrap_or_default(),
        };
        let meta = SnapshotMeta {
            index: u64::from(snap.index),
            term: u64::from(snap.term),
            extra,
        };
        let data = payload_bytes(&snap.payload);
        if let Payload::Wrapped {
            store, magic: true, ..
        } = &snap.payload
        {
            let mut sm = SNAPSHOT_MAGIC.to_vec();
            sm.push(SNAPSHOT_VERSION);
            sm.extend_from_slice(store);
            store_round_trip(&sm);
        }
        let Ok(file) = encode_snapshot(&meta, &data) else {
            continue;
        };
        let (index, term) = if snap.misnamed {
            (meta.index + 1, meta.term)
        } else {
            (meta.index, meta.term)
        };
        fs.set_contents(
            Path::new(&format!("/m/snap/{index:016x}-{term:016x}.snap")),
            file,
        );
    }
    if !input.raw.is_empty() {
        fs.set_contents(
            Path::new("/m/snap/00000000000000ff-00000000000000ff.snap"),
            input.raw.clone(),
        );
    }
    if !input.records.is_empty() {
        // Small segments: the default (64 MiB) would be preallocated in memory each run.
        let options = WalOptions {
            segment_size: SEGMENT,
            fs: fs.clone(),
            ..WalOptions::default()
        };
        let Ok((wal, _)) = Wal::open("/m/wal", options) else {
            return;
        };
        let records: Vec<(u8, Vec<u8>)> = input.records.iter().take(32).map(record_bytes).collect();
        let refs: Vec<RecordRef<'_>> = records.iter().map(|(k, p)| RecordRef::new(*k, p)).collect();
        if wal.append(&refs).is_err() || wal.sync().is_err() {
            return;
        }
    }
    let options = WalDiskOptions {
        segment_size: SEGMENT,
        fs: fs.clone(),
        ..WalDiskOptions::default()
    };
    let Ok(disk) = WalDisk::open("/m/wal", "/m/snap", options) else {
        return;
    };
    let (sm, _keys) = new_store();
    let mut config = NodeConfig::new(1);
    config.seed = Some(7);
    let start = if input.join {
        ClusterStart::Join
    } else {
        ClusterStart::New(vec![(
            1,
            MemberInfo {
                name: "m1".into(),
                peer_urls: vec![],
                client_urls: vec![],
            },
        )])
    };
    if let Ok(node) = RaftNode::open(config, disk, sm, start) {
        let _ = node.status();
        let _ = node.state_hash();
    }
});
