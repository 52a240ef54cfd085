//! How raft messages leave a member: the [`Transport`] trait, and [`LocalNetwork`], an
//! in-process network for clusters of threaded members (benches, embedding, tests).
//!
//! A transport is fire-and-forget: raft tolerates lost, delayed, duplicated and reordered
//! messages, so `send` never blocks the raft loop on a slow peer. What a transport owes the
//! node, as feedback through the sending member's [`NodeHandle`] (or [`RaftNode`] methods):
//!
//! - for every `MsgSnapshot`: `report_snapshot(to, Finish | Failure)` once the send is
//!   over, or raft never sends that follower another snapshot;
//! - `report_unreachable(to)` when a peer cannot be reached (optional, speeds recovery);
//! - when a receiving member answers [`NodeError::PeerRemoved`], telling the removed sender
//!   (`notify_removed`) so it stops.
//!
//! The deterministic simulated network used by tests lives in `crate::sim`; the TCP
//! transport between processes lives in the `server` module.
//!
//! [`NodeHandle`]: crate::node::NodeHandle
//! [`RaftNode`]: crate::node::RaftNode
//! [`NodeError::PeerRemoved`]: crate::node::NodeError::PeerRemoved

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use parking_lot::RwLock;
use raft::eraftpb::{Message, MessageType};
use raft::SnapshotStatus;

/// Sends raft messages to peers. See the module documentation for what a transport owes
/// the node.
pub trait Transport {
    /// Sends messages (each carries its destination in `to`). Must not block on a peer.
    fn send(&mut self, messages: Vec<Message>);

    /// A peer sent this member a message although it was removed from the cluster: tell it
    /// (it stops). The default does nothing.
    fn notify_removed(&mut self, peer: u64) {
        let _ = peer;
    }
}

/// Collecting messages in a vector (the simulator and unit tests deliver them by hand).
impl Transport for Vec<Message> {
    fn send(&mut self, messages: Vec<Message>) {
        self.extend(messages);
    }
}

/// The receiving side of a member on a [`LocalNetwork`] (implemented by `NodeHandle`).
pub trait LocalPeer: Send + Sync {
    /// Queues a message for the member; false if it is gone.
    fn deliver(&self, message: Message) -> bool;
    /// Feedback on a snapshot this member sent.
    fn report_snapshot(&self, to: u64, status: SnapshotStatus);
    /// Feedback: `to` was unreachable.
    fn report_unreachable(&self, to: u64);
    /// This member was removed from the cluster.
    fn notify_removed(&self);
}

#[derive(Default)]
struct NetState {
    peers: BTreeMap<u64, Arc<dyn LocalPeer>>,
    isolated: BTreeSet<u64>,
}

/// An in-process network: members register under their id and send through
/// [`LocalNetwork::transport`]. Messages are delivered at once, in order. Members can be
/// isolated (all their traffic dropped) and healed, for tests of threaded clusters.
#[derive(Clone, Default)]
pub struct LocalNetwork {
    state: Arc<RwLock<NetState>>,
}

impl LocalNetwork {
    /// An empty network.
    pub fn new() -> Self {
        LocalNetwork::default()
    }

    /// Registers (or replaces) the member `id`.
    pub fn register(&self, id: u64, peer: Arc<dyn LocalPeer>) {
        self.state.write().peers.insert(id, peer);
    }

    /// Unregisters the member `id` (messages to it are then dropped).
    pub fn unregister(&self, id: u64) {
        self.state.write().peers.remove(&id);
    }

    /// Drops all traffic to and from `id` until [`LocalNetwork::heal`].
    pub fn isolate(&self, id: u64) {
        self.state.write().isolated.insert(id);
    }

    /// Ends every isolation.
    pub fn heal(&self) {
        self.state.write().isolated.clear();
    }

    /// The transport member `from` sends with.
    pub fn transport(&self, from: u64) -> LocalTransport {
        LocalTransport {
            from,
            network: self.clone(),
        }
    }
}

/// One member's sending side of a [`LocalNetwork`].
#[derive(Clone)]
pub struct LocalTransport {
    from: u64,
    network: LocalNetwork,
}

impl Transport for LocalTransport {
    fn send(&mut self, messages: Vec<Message>) {
        let state = self.network.state.read();
        let me = state.peers.get(&self.from).cloned();
        for message in messages {
            let to = message.to;
            let is_snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
            let blocked = state.isolated.contains(&self.from) || state.isolated.contains(&to);
            let delivered = !blocked
                && state
                    .peers
                    .get(&to)
                    .is_some_and(|peer| peer.deliver(message));
            if let Some(me) = &me {
                if is_snapshot {
                    let status = if delivered {
                        SnapshotStatus::Finish
                    } else {
                        SnapshotStatus::Failure
                    };
                    me.report_snapshot(to, status);
                }
                if !delivered {
                    me.report_unreachable(to);
                }
            }
        }
    }

    fn notify_removed(&mut self, peer: u64) {
        if let Some(peer) = self.network.state.read().peers.get(&peer) {
            peer.notify_removed();
        }
    }
}
