//! Snapshot, restore and content hash of a [`Store`].
//!
//! The snapshot holds everything replicated: the tree, the etcd index, the applied clock
//! and the event history (so a member restored from a snapshot answers `waitIndex`
//! watches as the others do). It does not hold watchers (they are local) nor stats.
//!
//! The tree is streamed in pre-order without building an intermediate copy, and rebuilt
//! without recursion, so a snapshot of a million keys costs one output buffer.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::{ErrorCode, StoreError};
use super::event::{Action, Event, NodeExtern, UnixNanos};
use super::name::Name;
use super::path::MAX_KEY_DEPTH;
use super::state::Store;
use super::tree::{Children, Kind, Node, Tree};
use super::watch::{History, HistoryEntry, HISTORY_CAPACITY};

/// The first bytes of every store snapshot.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"TKVS";
/// The snapshot format version written by [`Store::snapshot`].
pub const SNAPSHOT_VERSION: u8 = 1;

fn bincode_options() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_varint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
}

/// The snapshot body after the 5-byte header.
///
/// # Format (version 1)
///
/// ```text
/// magic    4 bytes  "TKVS"
/// version  1 byte   1
/// body     bincode 1.3 DefaultOptions (varint little-endian integers, see
///          `Command`'s documentation), fields in this order:
///   index      u64            the etcd index
///   clock      u64            latest applied proposer clock, ns since the epoch
///   nodes      seq<SnapNode>  every node but the root, pre-order, children by name
///   history    seq<SnapEvent> the retained events, oldest first
///
/// SnapNode  = depth u32 (1 = child of the root), name string,
///             created_index u64, modified_index u64, expiration Option<u64 ns>,
///             value Option<string> (None = directory)
/// SnapEvent = action (Action variant index: get 0, set 1, create 2, update 3,
///             compareAndSwap 4, delete 5, compareAndDelete 6, expire 7, sync 8),
///             refresh bool, etcd_index u64, node SnapExtern, prev_node Option<SnapExtern>
/// SnapExtern = key string, value Option<string>, dir bool, expiration Option<u64>,
///             ttl i64, modified_index u64, created_index u64
/// ```
///
/// Restore checks: magic, version, no trailing bytes, depths that follow a pre-order,
/// parents that are directories, names that are valid path segments and unique within
/// their directory, depth at most `MAX_KEY_DEPTH`, `1 <= created_index <= modified_index
/// <= index`,
/// at most 1000 history events with contiguous indexes ending at `index`.
#[derive(Serialize)]
struct BodyOut<'a> {
    index: u64,
    clock: u64,
    nodes: NodesOut<'a>,
    history: Vec<EventOut<'a>>,
}

#[derive(Deserialize)]
struct BodyIn {
    index: u64,
    clock: u64,
    nodes: NodesIn,
    history: Vec<EventIn>,
}

#[derive(Serialize)]
struct SnapNodeOut<'a> {
    depth: u32,
    name: &'a str,
    created_index: u64,
    modified_index: u64,
    expiration: Option<u64>,
    value: Option<&'a str>,
}

#[derive(Deserialize)]
struct SnapNodeIn {
    depth: u32,
    name: String,
    created_index: u64,
    modified_index: u64,
    expiration: Option<u64>,
    value: Option<String>,
}

#[derive(Serialize)]
struct EventOut<'a> {
    action: Action,
    refresh: bool,
    etcd_index: u64,
    node: ExternOut<'a>,
    prev_node: Option<ExternOut<'a>>,
}

#[derive(Deserialize)]
struct EventIn {
    action: Action,
    refresh: bool,
    etcd_index: u64,
    node: ExternIn,
    prev_node: Option<ExternIn>,
}

#[derive(Serialize)]
struct ExternOut<'a> {
    key: &'a str,
    value: Option<&'a str>,
    dir: bool,
    expiration: Option<u64>,
    ttl: i64,
    modified_index: u64,
    created_index: u64,
}

#[derive(Deserialize)]
struct ExternIn {
    key: String,
    value: Option<String>,
    dir: bool,
    expiration: Option<u64>,
    ttl: i64,
    modified_index: u64,
    created_index: u64,
}

impl<'a> ExternOut<'a> {
    fn of(n: &'a NodeExtern) -> Self {
        ExternOut {
            key: &n.key,
            value: n.value.as_deref(),
            dir: n.dir,
            expiration: n.expiration.map(|e| e.0),
            ttl: n.ttl,
            modified_index: n.modified_index,
            created_index: n.created_index,
        }
    }
}

impl ExternIn {
    fn into_extern(self) -> NodeExtern {
        NodeExtern {
            key: self.key,
            value: self.value,
            dir: self.dir,
            expiration: self.expiration.map(UnixNanos),
            ttl: self.ttl,
            nodes: Vec::new(),
            modified_index: self.modified_index,
            created_index: self.created_index,
        }
    }
}

/// The tree as a pre-order sequence, streamed from the live nodes.
struct NodesOut<'a> {
    root: &'a Children,
    count: u64,
}

impl Serialize for NodesOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = usize::try_from(self.count).map_err(serde::ser::Error::custom)?;
        let mut seq = serializer.serialize_seq(Some(len))?;
        let mut stack = vec![(1u32, self.root.iter())];
        loop {
            let next = match stack.last_mut() {
                None => break,
                Some((depth, iter)) => iter.next().map(|item| (*depth, item)),
            };
            match next {
                None => {
                    stack.pop();
                }
                Some((depth, (name, node))) => {
                    seq.serialize_element(&SnapNodeOut {
                        depth,
                        name: name.as_str(),
                        created_index: node.created_index,
                        modified_index: node.modified_index,
                        expiration: node.expiration.map(|e| e.get()),
                        value: match &node.kind {
                            Kind::File(v) => Some(v),
                            Kind::Dir(_) => None,
                        },
                    })?;
                    if let Kind::Dir(children) = &node.kind {
                        stack.push((depth + 1, children.iter()));
                    }
                }
            }
        }
        seq.end()
    }
}

/// The tree rebuilt from a pre-order sequence.
struct NodesIn(Tree);

impl<'de> Deserialize<'de> for NodesIn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(NodesVisitor)
    }
}

struct NodesVisitor;

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && name != "." && name != ".."
}

impl<'de> Visitor<'de> for NodesVisitor {
    type Value = NodesIn;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a pre-order sequence of store nodes")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodesIn, A::Error> {
        let mut tree = Tree::default();
        // Names of the directories from the root to the current insertion point.
        let mut open: Vec<Name> = Vec::new();
        while let Some(n) = seq.next_element::<SnapNodeIn>()? {
            let depth = usize::try_from(n.depth).map_err(de::Error::custom)?;
            if depth == 0 || depth > open.len() + 1 || depth > MAX_KEY_DEPTH {
                return Err(de::Error::custom(format!(
                    "node {:?} at depth {depth} does not follow a pre-order (open directories: {})",
                    n.name,
                    open.len()
                )));
            }
            if !valid_name(&n.name) {
                return Err(de::Error::custom(format!("invalid node name {:?}", n.name)));
            }
            if n.created_index == 0 || n.created_index > n.modified_index {
                return Err(de::Error::custom(format!(
                    "node {:?} has createdIndex {} and modifiedIndex {}",
                    n.name, n.created_index, n.modified_index
                )));
            }
            open.truncate(depth - 1);
            let mut parent = &mut tree.root;
            for name in &open {
                parent = match &mut parent.kind {
                    Kind::Dir(children) => match children.get_mut(name.as_bytes()) {
                        Some(child) => child,
                        None => return Err(de::Error::custom("lost directory while rebuilding")),
                    },
                    Kind::File(_) => return Err(de::Error::custom("file used as a directory")),
                };
            }
            let Kind::Dir(children) = &mut parent.kind else {
                return Err(de::Error::custom(format!(
                    "parent of {:?} is a file",
                    n.name
                )));
            };
            let is_dir = n.value.is_none();
            let expiration = match n.expiration {
                None => None,
                Some(e) => match std::num::NonZeroU64::new(e) {
                    Some(e) => Some(e),
                    None => return Err(de::Error::custom(format!("{:?} expires at 0", n.name))),
                },
            };
            let node = Node {
                created_index: n.created_index,
                modified_index: n.modified_index,
                expiration,
                kind: match n.value {
                    Some(v) => Kind::File(v.into()),
                    None => Kind::Dir(Children::new()),
                },
            };
            let name = Name::from(n.name.as_str());
            if children.contains_key(name.as_bytes()) {
                return Err(de::Error::custom(format!("duplicate node name {name:?}")));
            }
            children.insert(name.clone(), node);
            if is_dir {
                open.push(name);
            }
        }
        Ok(NodesIn(tree))
    }
}

fn corrupt(why: impl fmt::Display) -> StoreError {
    StoreError::new(
        ErrorCode::RaftInternal,
        format!("invalid store snapshot: {why}"),
        0,
    )
}

/// The replicated state of a [`Store`] at one index, frozen ([`Store::freeze`]).
///
/// Taking it costs O(1) in the size of the store (the tree is persistent, see the `tree`
/// module, and history events are shared), so a member takes it on its raft loop and
/// serializes it on another thread while the store goes on applying writes.
#[derive(Clone, Debug)]
pub struct FrozenStore {
    tree: Tree,
    index: u64,
    clock: UnixNanos,
    history: History,
}

impl FrozenStore {
    /// The etcd index the state was frozen at.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Serializes the state: exactly the bytes [`Store::snapshot`] gave when it was
    /// frozen.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.snapshot_into(&mut out);
        out
    }

    /// Appends [`FrozenStore::snapshot`]'s bytes to `out`.
    pub fn snapshot_into(&self, out: &mut Vec<u8>) {
        use bincode::Options;
        let empty = Children::new();
        let body = BodyOut {
            index: self.index,
            clock: self.clock.0,
            nodes: NodesOut {
                root: self.tree.root.children().unwrap_or(&empty),
                count: self.tree.count_nodes(),
            },
            history: self
                .history
                .entries
                .iter()
                .map(|e| EventOut {
                    action: e.event.action,
                    refresh: e.refresh,
                    etcd_index: e.event.etcd_index,
                    node: ExternOut::of(&e.event.node),
                    prev_node: e.event.prev_node.as_ref().map(ExternOut::of),
                })
                .collect(),
        };
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        out.push(SNAPSHOT_VERSION);
        // Serializing into a Vec fails only if the node count were wrong, which it cannot
        // be: it was just computed from the same tree.
        let _ = bincode_options().serialize_into(&mut *out, &body);
    }
}

impl Store {
    /// The replicated state as it is now, frozen: cheap to take, serialized later (see
    /// [`FrozenStore`]).
    pub fn freeze(&self) -> FrozenStore {
        FrozenStore {
            tree: self.tree.clone(),
            index: self.index,
            clock: self.clock,
            history: self.history.clone(),
        }
    }

    /// Serializes the replicated state (see [`SNAPSHOT_MAGIC`] and the format above).
    pub fn snapshot(&self) -> Vec<u8> {
        self.freeze().snapshot()
    }

    /// Appends [`Store::snapshot`]'s bytes to `out`.
    pub fn snapshot_into(&self, out: &mut Vec<u8>) {
        self.freeze().snapshot_into(out);
    }

    /// A new store (without watchers) holding the state of a snapshot.
    pub fn restore(bytes: &[u8]) -> Result<Store, StoreError> {
        let mut store = Store::new();
        store.restore_from(bytes)?;
        Ok(store)
    }

    /// Replaces this store's state with a snapshot's, keeping its registered watchers
    /// (they keep waiting and receive events applied after the snapshot, as in etcd) and
    /// its stats. On error the store is unchanged.
    pub fn restore_from(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        use bincode::Options;
        let body = match bytes {
            [m0, m1, m2, m3, version, body @ ..] if [*m0, *m1, *m2, *m3] == SNAPSHOT_MAGIC => {
                if *version != SNAPSHOT_VERSION {
                    return Err(corrupt(format!(
                        "version {version} (expected {SNAPSHOT_VERSION})"
                    )));
                }
                body
            }
            _ => return Err(corrupt("missing magic header")),
        };
        let body: BodyIn = bincode_options().deserialize(body).map_err(corrupt)?;
        let tree = body.nodes.0;

        let mut ttl_by_key = BTreeMap::new();
        let mut max_modified = 0u64;
        Tree::walk("", &tree.root, |key, node, _| {
            if let Some(e) = node.expiration {
                ttl_by_key.insert(key.to_owned(), e.get());
            }
            max_modified = max_modified.max(node.modified_index);
        });
        if max_modified > body.index {
            return Err(corrupt(format!(
                "a node has modifiedIndex {max_modified} above the index {}",
                body.index
            )));
        }
        if body.history.len() > HISTORY_CAPACITY {
            return Err(corrupt(format!("{} history events", body.history.len())));
        }
        let n_events = body.history.len() as u64;
        let first_event = (body.index + 1)
            .checked_sub(n_events)
            .ok_or_else(|| corrupt(format!("{n_events} history events at index {}", body.index)))?;
        let mut entries = VecDeque::with_capacity(body.history.len());
        for (i, e) in body.history.into_iter().enumerate() {
            let event = Event {
                action: e.action,
                node: e.node.into_extern(),
                prev_node: e.prev_node.map(ExternIn::into_extern),
                etcd_index: e.etcd_index,
            };
            let expected = first_event + i as u64;
            if event.index() != expected {
                return Err(corrupt(format!(
                    "history event {i} has index {} (expected {expected})",
                    event.index()
                )));
            }
            entries.push_back(HistoryEntry {
                event: Arc::new(event),
                refresh: e.refresh,
            });
        }
        let ttl_by_time: BTreeSet<(u64, String)> =
            ttl_by_key.iter().map(|(k, e)| (*e, k.clone())).collect();

        self.tree = tree;
        self.index = body.index;
        self.clock = UnixNanos(body.clock);
        self.ttl_by_key = ttl_by_key;
        self.ttl_by_time = ttl_by_time;
        self.history = History { entries };
        Ok(())
    }

    /// A 64-bit content hash of the replicated state that matters to clients: the etcd
    /// index and every node (key, kind, value, indexes, expiration). Members that applied
    /// the same log hash equally. History, clock, watchers and stats are not included.
    pub fn hash(&self) -> u64 {
        let mut h = Fnv::new();
        h.u64(self.index);
        let empty = Children::new();
        let mut stack = vec![(1u64, self.tree.root.children().unwrap_or(&empty).iter())];
        loop {
            let next = match stack.last_mut() {
                None => break,
                Some((depth, iter)) => iter.next().map(|item| (*depth, item)),
            };
            let Some((depth, (name, node))) = next else {
                stack.pop();
                continue;
            };
            h.u64(depth);
            h.bytes(name.as_bytes());
            h.u64(node.created_index);
            h.u64(node.modified_index);
            h.u64(node.expiration.map_or(0, |e| e.get()));
            match &node.kind {
                Kind::File(v) => {
                    h.u64(0);
                    h.bytes(v.as_bytes());
                }
                Kind::Dir(children) => {
                    h.u64(1);
                    stack.push((depth + 1, children.iter()));
                }
            }
        }
        h.finish()
    }
}

/// FNV-1a, 64 bits, over length-prefixed fields.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn byte(&mut self, b: u8) {
        self.0 ^= u64::from(b);
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
    }

    fn u64(&mut self, v: u64) {
        for b in v.to_le_bytes() {
            self.byte(b);
        }
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.u64(bytes.len() as u64);
        for b in bytes {
            self.byte(*b);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Command;

    /// One write of the copy-on-write property test.
    fn write(op: u8, dir: u8, key: u16, value: u8, at: u64) -> Command {
        let key = format!("/d{}/k{key}", dir % 3);
        let now = UnixNanos(at);
        match op % 4 {
            0 | 1 => Command::set(key, format!("v{value}"), now),
            2 => Command::Delete {
                key,
                dir: false,
                recursive: false,
                now,
            },
            _ => Command::Delete {
                key: format!("/d{}", dir % 3),
                dir: true,
                recursive: true,
                now,
            },
        }
    }

    /// Applies `writes` (see [`write`]) with clocks from `first_clock` on; refused writes
    /// (a missing key, say) are part of the test.
    fn apply_writes(store: &mut Store, writes: &[(u8, u8, u16, u8)], first_clock: u64) {
        for (i, &(op, dir, key, value)) in writes.iter().enumerate() {
            let _ = store.apply(&write(op, dir, key, value, first_clock + i as u64));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// A frozen store keeps the state it was frozen with while the store goes on
        /// (writes into directories of hundreds of keys, deletes of whole directories): its
        /// snapshot is byte for byte the snapshot taken at that moment.
        #[test]
        fn frozen_store_keeps_its_state_while_writes_go_on(
            before in proptest::collection::vec((0u8..4, 0u8..3, 0u16..400, 0u8..255), 0..600),
            after in proptest::collection::vec((0u8..4, 0u8..3, 0u16..400, 0u8..255), 0..600),
        ) {
            let mut store = Store::new();
            apply_writes(&mut store, &before, 1);
            let expected = store.snapshot();
            let frozen = store.freeze();
            apply_writes(&mut store, &after, 1000);
            proptest::prop_assert_eq!(frozen.index(), Store::restore(&expected).unwrap().index);
            proptest::prop_assert!(frozen.snapshot() == expected, "the frozen state changed");
            // And the store itself is exactly what applying everything gives.
            let mut fresh = Store::new();
            apply_writes(&mut fresh, &before, 1);
            apply_writes(&mut fresh, &after, 1000);
            proptest::prop_assert!(store.snapshot() == fresh.snapshot());
            proptest::prop_assert!(store.check_invariants().is_ok());
        }
    }

    /// `snapshot_into` appends exactly `snapshot()`'s bytes after what the buffer holds,
    /// and they restore to the same state.
    #[test]
    fn snapshot_into_appends_the_snapshot() {
        let mut store = Store::new();
        store
            .apply(&Command::set("/a/b", "v", UnixNanos(1)))
            .unwrap();
        store.apply(&Command::set("/c", "w", UnixNanos(2))).unwrap();
        let mut out = b"prefix".to_vec();
        store.snapshot_into(&mut out);
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(out[6..], store.snapshot()[..]);
        let restored = Store::restore(&out[6..]).unwrap();
        assert_eq!(restored.hash(), store.hash());
    }

    /// Found by `corrupt_snapshots_are_refused_without_panicking`: a flipped byte made a
    /// node's createdIndex exceed its modifiedIndex and restore accepted it.
    #[test]
    fn restore_rejects_created_index_above_modified_index() {
        let mut store = Store::new();
        store.apply(&Command::set("/a", "v", UnixNanos(1))).unwrap();
        store.apply(&Command::set("/b", "v", UnixNanos(1))).unwrap();
        if let Some(children) = match &mut store.tree.root.kind {
            Kind::Dir(c) => Some(c),
            Kind::File(_) => None,
        } {
            if let Some(node) = children.get_mut("a".as_bytes()) {
                node.created_index = 2;
            }
        }
        let err = Store::restore(&store.snapshot()).unwrap_err();
        assert!(
            err.cause.contains("createdIndex 2 and modifiedIndex 1"),
            "{}",
            err.cause
        );
    }

    #[test]
    fn restore_rejects_nodes_out_of_pre_order() {
        let mut store = Store::new();
        store
            .apply(&Command::set("/a/b", "v", UnixNanos(1)))
            .unwrap();
        let mut bytes = store.snapshot();
        // Header, index (1 byte), clock (1 byte), node count (1 byte), then the first
        // node's depth: make it 2 although nothing is open yet.
        bytes[8] = 2;
        let err = Store::restore(&bytes).unwrap_err();
        assert!(err.cause.contains("pre-order"), "{}", err.cause);
    }
}
