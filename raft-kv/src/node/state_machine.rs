//! The seam between the Raft layer and what it replicates.
//!
//! A [`StateMachine`] is deterministic: applying the same commands in the same order to the
//! same starting state gives the same state and the same responses on every member. Time,
//! randomness and I/O must not enter `apply`; time enters only through commands (the leader
//! proposes [`StateMachine::leader_sync_command`] periodically, as etcd v2 proposed `SYNC`).
//!
//! The node owns the applied index: it is persisted with the effects of applying, i.e. in
//! the snapshot's metadata, and after a restart the node restores the newest snapshot and
//! replays the committed entries after it. A state machine therefore never needs to store
//! the index itself, but it receives it with every command (etcd's `modifiedIndex`).
//!
//! Failures: a deterministic failure (key not found, compare failed) is part of the
//! `Response`. A state machine has no non-deterministic failures in `apply` (it lives in
//! memory); [`StateMachine::restore`] may fail on undecodable data, which stops the member.
//!
//! This module also defines the member metadata replicated beside the state machine
//! ([`MemberInfo`]) and the snapshot payload format ([`SnapshotPayload`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::error::NodeError;

/// Appends a frozen state's snapshot bytes to a buffer, on any thread
/// ([`StateMachine::snapshot_writer`]).
pub type SnapshotWriter = Box<dyn FnOnce(&mut Vec<u8>) + Send + 'static>;

/// A deterministic, replicated state machine (see the module documentation).
pub trait StateMachine: Send + 'static {
    /// What applying a command answers to its proposer.
    type Response: Send + 'static;

    /// Applies the command committed at raft log position `index`.
    fn apply(&mut self, index: u64, command: &[u8]) -> Self::Response;

    /// Serializes the whole state.
    fn snapshot(&self) -> Vec<u8>;

    /// Appends [`StateMachine::snapshot`]'s bytes to `out`. The node builds a snapshot
    /// payload around the state in one buffer this way; override it to write in place
    /// instead of copying (the default copies).
    fn snapshot_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.snapshot());
    }

    /// The state as it is now, to be serialized later, on another thread: a writer that
    /// appends exactly the bytes [`StateMachine::snapshot_into`] would append now. With
    /// [`crate::node::NodeConfig::background_snapshots`] the node takes it on its raft loop
    /// and runs it on the thread that saves the snapshot file, so the loop only pays for
    /// freezing the state, which a persistent (copy-on-write) state makes O(1). `None`
    /// (the default): the node serializes on its loop.
    fn snapshot_writer(&self) -> Option<SnapshotWriter> {
        None
    }
    /// Replaces the whole state with a snapshot produced by [`StateMachine::snapshot`].
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;

    /// A hash of the whole state; equal states hash equally on every member.
    fn hash(&self) -> u64;

    /// A command the leader proposes every `sync_interval_ticks` carrying its clock
    /// (milliseconds since the UNIX epoch), so that time-based effects (TTL expiry) happen
    /// at the same log position on every member. `None` (the default) proposes nothing.
    fn leader_sync_command(&self, now_unix_ms: u64) -> Option<Vec<u8>> {
        let _ = now_unix_ms;
        None
    }
}

/// A member's descriptive metadata, replicated with the membership (etcd's member
/// attributes). It travels in the `context` of the conf change that adds the member and in
/// every snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Human-readable name (etcd `--name`); may be empty until the member publishes it.
    pub name: String,
    /// URLs other members use to reach it (etcd `--initial-advertise-peer-urls`).
    pub peer_urls: Vec<String>,
    /// URLs clients use (etcd `--advertise-client-urls`).
    pub client_urls: Vec<String>,
}

/// A change to some of a member's metadata. Fields left `None` keep the value they have
/// when the change applies, not when it was proposed: a member publishing its name and
/// client URLs cannot erase peer URLs it has not learnt yet (a joining member before its
/// first snapshot) or undo a concurrent `member update`, as etcd keeps a member's
/// attributes and its raft attributes apart.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MemberPatch {
    /// New name, if it changes.
    pub name: Option<String>,
    /// New peer URLs, if they change.
    pub peer_urls: Option<Vec<String>>,
    /// New client URLs, if they change.
    pub client_urls: Option<Vec<String>>,
}

impl MemberPatch {
    /// A patch replacing only the peer URLs (etcd's `member update`).
    pub fn peer_urls(urls: Vec<String>) -> MemberPatch {
        MemberPatch {
            peer_urls: Some(urls),
            ..MemberPatch::default()
        }
    }

    /// A patch replacing only the name and client URLs (what a starting member publishes).
    pub fn attributes(name: String, client_urls: Vec<String>) -> MemberPatch {
        MemberPatch {
            name: Some(name),
            client_urls: Some(client_urls),
            ..MemberPatch::default()
        }
    }

    /// Applies the patch to `info`.
    pub fn apply_to(&self, info: &mut MemberInfo) {
        if let Some(name) = &self.name {
            info.name.clone_from(name);
        }
        if let Some(urls) = &self.peer_urls {
            info.peer_urls.clone_from(urls);
        }
        if let Some(urls) = &self.client_urls {
            info.client_urls.clone_from(urls);
        }
    }

    /// True if applying the patch would leave `info` as it is.
    pub fn is_noop_for(&self, info: &MemberInfo) -> bool {
        let mut patched = info.clone();
        self.apply_to(&mut patched);
        patched == *info
    }
}

impl From<MemberInfo> for MemberPatch {
    /// A patch replacing every field (what a member update of earlier versions carried).
    fn from(info: MemberInfo) -> MemberPatch {
        MemberPatch {
            name: Some(info.name),
            peer_urls: Some(info.peer_urls),
            client_urls: Some(info.client_urls),
        }
    }
}

/// A member of the cluster as the replicated membership knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member (raft) id; never 0.
    pub id: u64,
    /// Its metadata.
    pub info: MemberInfo,
    /// True while it is a learner (receives the log, does not vote).
    pub learner: bool,
}

/// The replicated membership: current members and ids removed for good.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Membership {
    members: BTreeMap<u64, Member>,
    removed: BTreeSet<u64>,
}

impl Membership {
    /// Membership of a new cluster.
    pub fn new(members: impl IntoIterator<Item = Member>) -> Self {
        Membership {
            members: members.into_iter().map(|m| (m.id, m)).collect(),
            removed: BTreeSet::new(),
        }
    }

    /// The current members, by id.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// One member.
    pub fn get(&self, id: u64) -> Option<&Member> {
        self.members.get(&id)
    }

    /// True if `id` was removed (ids are never reused).
    pub fn is_removed(&self, id: u64) -> bool {
        self.removed.contains(&id)
    }

    /// Ids removed so far.
    pub fn removed(&self) -> impl Iterator<Item = u64> + '_ {
        self.removed.iter().copied()
    }

    pub(crate) fn insert(&mut self, member: Member) {
        self.members.insert(member.id, member);
    }

    pub(crate) fn remove(&mut self, id: u64) {
        self.members.remove(&id);
        self.removed.insert(id);
    }

    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut Member> {
        self.members.get_mut(&id)
    }
}

/// What a snapshot holds besides raft's metadata.
///
/// Encoding (the `data` of a raft snapshot and of a snapshot file): `bincode` 1.3 with its
/// default options (little-endian, fixed-width integers, `u64` length prefixes) of
/// `{ version: u32 (= 1), membership: Membership { members: map<u64, Member>, removed:
/// set<u64> }, state_machine: bytes }`, where `state_machine` is
/// [`StateMachine::snapshot`]'s output. The snapshot's index, term and `ConfState` are in
/// raft's `SnapshotMetadata`, stored beside the data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPayload {
    /// Format version, currently 1.
    pub version: u32,
    /// The replicated membership at the snapshot's index.
    pub membership: Membership,
    /// The state machine's own snapshot bytes.
    pub state_machine: Vec<u8>,
}

impl SnapshotPayload {
    /// The current format version.
    pub const VERSION: u32 = 1;

    /// Encodes the payload.
    pub fn encode(&self) -> Result<Vec<u8>, NodeError> {
        bincode::serialize(self).map_err(|e| NodeError::storage("encoding a snapshot", e))
    }

    /// Encodes a payload holding `membership` and the state `write_state` appends to the
    /// buffer, with the same bytes as [`SnapshotPayload::encode`] but without a separate
    /// copy of the state: a snapshot of a large store is written once. `capacity` sizes the
    /// buffer (e.g. the previous snapshot's length).
    pub fn encode_with(
        membership: &Membership,
        capacity: usize,
        write_state: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Vec<u8>, NodeError> {
        let mut out = Vec::with_capacity(capacity);
        bincode::serialize_into(&mut out, &(Self::VERSION, membership))
            .map_err(|e| NodeError::storage("encoding a snapshot", e))?;
        // `state_machine`: a u64 little-endian length, then the bytes.
        let at = out.len();
        out.extend_from_slice(&[0; 8]);
        write_state(&mut out);
        let len = (out.len() - at - 8) as u64;
        out[at..at + 8].copy_from_slice(&len.to_le_bytes());
        Ok(out)
    }

    /// Decodes a payload, checking its version.
    pub fn decode(data: &[u8]) -> Result<Self, NodeError> {
        let payload: SnapshotPayload = bincode::deserialize(data)
            .map_err(|e| NodeError::corrupt(format!("undecodable snapshot payload: {e}")))?;
        if payload.version != Self::VERSION {
            return Err(NodeError::corrupt(format!(
                "snapshot payload version {} (expected {})",
                payload.version,
                Self::VERSION
            )));
        }
        Ok(payload)
    }
}

/// FNV-1a, 64 bits: a small deterministic hash for state digests (not for security).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// `encode_with` writes the state in place, yet gives `encode`'s exact bytes, for any
        /// membership, state and starting capacity.
        #[test]
        fn encode_with_matches_encode(
            ids in proptest::collection::btree_set(1u64..50, 0..5),
            removed in proptest::collection::btree_set(50u64..99, 0..3),
            state in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            capacity in 0usize..2000,
        ) {
            let mut membership = Membership::new(ids.iter().map(|&id| Member {
                id,
                info: MemberInfo {
                    name: format!("m{id}"),
                    peer_urls: vec![format!("http://10.0.0.{id}:2380")],
                    client_urls: vec![format!("http://10.0.0.{id}:2379")],
                },
                learner: id % 3 == 0,
            }));
            for id in removed {
                membership.remove(id);
            }
            let payload = SnapshotPayload {
                version: SnapshotPayload::VERSION,
                membership: membership.clone(),
                state_machine: state.clone(),
            };
            let direct = SnapshotPayload::encode_with(&membership, capacity, |out| {
                out.extend_from_slice(&state)
            });
            proptest::prop_assert_eq!(direct.ok(), payload.encode().ok());
        }
    }

    fn opt_urls() -> impl proptest::strategy::Strategy<Value = Option<Vec<String>>> {
        proptest::option::of(proptest::collection::vec("[a-z]{1,4}", 0..3))
    }

    proptest::proptest! {
        /// A patch replaces exactly the fields it sets and keeps the others; applying it
        /// twice changes nothing more; `is_noop_for` tells whether it changes anything.
        #[test]
        fn patch_replaces_only_what_it_sets(
            name in "[a-z]{0,4}",
            peer in proptest::collection::vec("[a-z]{1,4}", 0..3),
            client in proptest::collection::vec("[a-z]{1,4}", 0..3),
            new_name in proptest::option::of("[a-z]{0,4}"),
            new_peer in opt_urls(),
            new_client in opt_urls(),
        ) {
            let before = MemberInfo { name, peer_urls: peer, client_urls: client };
            let patch = MemberPatch {
                name: new_name.clone(),
                peer_urls: new_peer.clone(),
                client_urls: new_client.clone(),
            };
            let mut after = before.clone();
            patch.apply_to(&mut after);
            proptest::prop_assert_eq!(&after.name, new_name.as_ref().unwrap_or(&before.name));
            proptest::prop_assert_eq!(
                &after.peer_urls,
                new_peer.as_ref().unwrap_or(&before.peer_urls)
            );
            proptest::prop_assert_eq!(
                &after.client_urls,
                new_client.as_ref().unwrap_or(&before.client_urls)
            );
            proptest::prop_assert_eq!(patch.is_noop_for(&before), after == before);
            proptest::prop_assert!(patch.is_noop_for(&after));
        }
    }

    #[test]
    fn attribute_patch_keeps_peer_urls() {
        let mut info = MemberInfo {
            name: String::new(),
            peer_urls: vec!["http://127.0.0.1:2380".into()],
            client_urls: vec![],
        };
        MemberPatch::attributes("node3".into(), vec!["http://127.0.0.1:2379".into()])
            .apply_to(&mut info);
        assert_eq!(info.peer_urls, vec!["http://127.0.0.1:2380".to_string()]);
        assert_eq!(info.name, "node3");
        MemberPatch::peer_urls(vec!["http://10.0.0.1:2380".into()]).apply_to(&mut info);
        assert_eq!(info.name, "node3");
        assert_eq!(info.client_urls, vec!["http://127.0.0.1:2379".to_string()]);
        assert_eq!(info.peer_urls, vec!["http://10.0.0.1:2380".to_string()]);
    }

    #[test]
    fn payload_round_trips_and_checks_version() {
        let payload = SnapshotPayload {
            version: SnapshotPayload::VERSION,
            membership: Membership::new([Member {
                id: 1,
                info: MemberInfo {
                    name: "a".into(),
                    peer_urls: vec!["http://a:2380".into()],
                    client_urls: vec![],
                },
                learner: false,
            }]),
            state_machine: vec![1, 2, 3],
        };
        let bytes = payload.encode().map_err(|e| e.to_string());
        let bytes = bytes.unwrap_or_default();
        assert_eq!(SnapshotPayload::decode(&bytes).ok(), Some(payload.clone()));
        let future = SnapshotPayload {
            version: 2,
            ..payload
        };
        let bytes = bincode::serialize(&future).unwrap_or_default();
        assert!(matches!(
            SnapshotPayload::decode(&bytes),
            Err(NodeError::Corrupt { .. })
        ));
        assert!(SnapshotPayload::decode(&[0xff; 3]).is_err());
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
