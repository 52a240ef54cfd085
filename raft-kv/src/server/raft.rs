//! [`Consensus`] over the raft node ([`crate::node::NodeHandle`]) and the TCP peer port.
//!
//! The node runs on its own thread and sends through [`TcpTransport`], which encodes each
//! raft message (protobuf) into a frame for the peer's outbound queue; snapshot messages
//! go on a connection of their own and their outcome is reported back to raft. Raft
//! streams accepted on the peer port are handed to the node thread, which reads, decodes
//! and steps their frames itself ([`crate::node::InboundStream`]). Member metadata
//! (name, peer and client URLs) lives in the node's replicated membership; every change
//! of it updates the outbound peer set, so a member added with `member add` becomes
//! reachable as soon as the change applies.
//!
//! Removed members: the node reports a message from a removed member through
//! [`crate::transport::Transport::notify_removed`]; the member is remembered, its inbound
//! connection is closed, and its next connection attempt gets the `Removed` verdict, on
//! which it stops itself.

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::Mutex;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use raft::SnapshotStatus;

use super::bootstrap::ClusterView;
use super::id::{ClusterId, MemberId};
use super::member::{BoxFuture, Consensus, ConsensusError, ConsensusStatus};
use super::membership::{MemberRecord, Membership};
use super::peer::{FrameReader, PeerHandler, PeerSender};
use super::stats::{FollowerCounts, FollowerStats};
use super::url::MemberUrl;
use crate::node::{
    InboundRead, InboundStream, Member, MemberInfo, MemberPatch, NodeError, NodeEvent, NodeHandle,
    ReadConsistency, StateMachine,
};
use crate::transport::Transport;

/// Maps the node's errors onto what the member tells clients.
pub fn consensus_error(error: NodeError) -> ConsensusError {
    match error {
        NodeError::Dropped { reason } => ConsensusError::Dropped(reason),
        NodeError::InvalidRequest { reason } => ConsensusError::Dropped(reason),
        NodeError::OutcomeUnknown { reason } => ConsensusError::Unknown(reason),
        NodeError::TimedOut { what } => ConsensusError::Unknown(what),
        other => ConsensusError::Stopped(other.to_string()),
    }
}

/// The peer port's view of the member (shared by the transport, the peer server and the
/// consensus adapter).
pub struct PeerGlue<S: StateMachine> {
    id: u64,
    cluster_id: u64,
    handle: OnceLock<NodeHandle<S>>,
    removed: Arc<Mutex<BTreeSet<u64>>>,
    received: Arc<AtomicU64>,
    on_stop: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl<S: StateMachine> PeerGlue<S> {
    /// Glue for member `id` of cluster `cluster_id`; `on_stop` runs once when the node
    /// stops (removed or failed).
    pub fn new(
        id: MemberId,
        cluster_id: ClusterId,
        on_stop: Box<dyn FnOnce() + Send>,
    ) -> Arc<PeerGlue<S>> {
        Arc::new(PeerGlue {
            id: id.0,
            cluster_id: cluster_id.0,
            handle: OnceLock::new(),
            removed: Arc::new(Mutex::new(BTreeSet::new())),
            received: Arc::new(AtomicU64::new(0)),
            on_stop: Mutex::new(Some(on_stop)),
        })
    }

    fn stopped(&self) {
        if let Some(on_stop) = self.on_stop.lock().take() {
            on_stop();
        }
    }

    fn members_view(&self) -> Vec<super::api::MemberInfo> {
        self.handle
            .get()
            .map(|h| to_membership(&h.members(), &BTreeSet::new()).infos())
            .unwrap_or_default()
    }
}

impl<S: StateMachine> PeerHandler for PeerGlue<S> {
    fn local_id(&self) -> u64 {
        self.id
    }

    fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    fn is_removed(&self, id: u64) -> bool {
        self.removed.lock().contains(&id)
    }

    fn on_raft_frame(&self, _from: u64, frame: Bytes) {
        let Some(handle) = self.handle.get() else {
            return;
        };
        if let Some(message) = decode_frame(&frame, &self.received) {
            handle.step(message);
        }
    }

    fn adopt_raft_stream(
        &self,
        from: u64,
        stream: std::net::TcpStream,
    ) -> Result<(), std::net::TcpStream> {
        let Some(handle) = self.handle.get() else {
            return Err(stream);
        };
        handle.adopt_inbound(Box::new(InboundPeer {
            from,
            reader: FrameReader::new(stream),
            removed: Arc::clone(&self.removed),
            received: Arc::clone(&self.received),
        }));
        Ok(())
    }

    fn members_json(&self) -> Bytes {
        let view = ClusterView::new(ClusterId(self.cluster_id), &self.members_view());
        Bytes::from(serde_json::to_vec(&view).unwrap_or_default())
    }

    fn on_removed(&self) {
        if let Some(handle) = self.handle.get() {
            handle.notify_removed();
        }
    }

    fn snapshot_sent(&self, to: u64, delivered: bool) {
        if let Some(handle) = self.handle.get() {
            let status = if delivered {
                SnapshotStatus::Finish
            } else {
                SnapshotStatus::Failure
            };
            handle.report_snapshot(to, status);
        }
    }
}

/// Decodes a raft message frame (counting appends for the stats); `None`, logged, if it
/// does not decode.
///
/// Every entry's data and context come out as slices of `frame`, not as two allocations
/// and copies per entry (a follower decodes every write the leader appends; the leader
/// every write a follower forwards).
fn decode_frame(frame: &Bytes, received: &AtomicU64) -> Option<Message> {
    match Message::parse_from_carllerche_bytes(frame) {
        Ok(message) => {
            if message.get_msg_type() == MessageType::MsgAppend {
                received.fetch_add(1, Ordering::Relaxed);
            }
            Some(message)
        }
        Err(error) => {
            tracing::warn!(%error, "undecodable raft message from a peer; dropped");
            None
        }
    }
}

/// A peer's raft stream as the raft thread reads it.
struct InboundPeer {
    from: u64,
    reader: FrameReader,
    removed: Arc<Mutex<BTreeSet<u64>>>,
    received: Arc<AtomicU64>,
}

impl InboundStream for InboundPeer {
    fn fd(&self) -> RawFd {
        self.reader.stream().as_raw_fd()
    }

    fn read(&mut self, budget: usize, out: &mut Vec<Message>) -> InboundRead {
        if self.removed.lock().contains(&self.from) {
            // Close; the sender's next connection gets the `Removed` verdict and stops.
            return InboundRead::Closed;
        }
        let received = &self.received;
        self.reader.read(budget, |frame| {
            // One copy of the frame into a shared buffer its entries then point into.
            out.extend(decode_frame(&Bytes::copy_from_slice(frame), received));
        })
    }
}

/// The node's [`Transport`] over [`PeerSender`].
pub struct TcpTransport<S: StateMachine> {
    sender: Arc<PeerSender<PeerGlue<S>>>,
    glue: Arc<PeerGlue<S>>,
}

impl<S: StateMachine> TcpTransport<S> {
    /// A transport sending through `sender`.
    pub fn new(sender: Arc<PeerSender<PeerGlue<S>>>, glue: Arc<PeerGlue<S>>) -> TcpTransport<S> {
        TcpTransport { sender, glue }
    }
}

impl<S: StateMachine> Transport for TcpTransport<S> {
    fn send(&mut self, messages: Vec<Message>) {
        // Frames by destination, in order: each peer's go out in one write.
        let mut batches: Vec<(u64, Vec<Bytes>)> = Vec::new();
        for message in messages {
            let to = message.to;
            let frame = match message.write_to_bytes() {
                Ok(bytes) => Bytes::from(bytes),
                Err(error) => {
                    tracing::error!(%error, "cannot encode a raft message");
                    continue;
                }
            };
            if message.get_msg_type() == MessageType::MsgSnapshot {
                self.sender.send_snapshot(to, frame);
                continue;
            }
            match batches.iter_mut().find(|(id, _)| *id == to) {
                Some((_, frames)) => frames.push(frame),
                None => batches.push((to, vec![frame])),
            }
        }
        for (to, frames) in batches {
            if !self.sender.send_many(to, frames) {
                if let Some(handle) = self.glue.handle.get() {
                    handle.report_unreachable(to);
                }
            }
        }
    }

    fn notify_removed(&mut self, peer: u64) {
        self.glue.removed.lock().insert(peer);
    }
}

fn to_membership(members: &[Member], removed: &BTreeSet<u64>) -> Membership {
    Membership::from_parts(
        members.iter().map(|m| {
            (
                MemberId(m.id),
                MemberRecord {
                    peer_urls: m.info.peer_urls.clone(),
                    name: m.info.name.clone(),
                    client_urls: m.info.client_urls.clone(),
                },
            )
        }),
        removed.iter().map(|id| MemberId(*id)),
    )
}

/// [`Consensus`] over a running raft node.
pub struct RaftConsensus<S: StateMachine> {
    leader_since: Arc<Mutex<(std::time::Instant, std::time::SystemTime)>>,
    handle: NodeHandle<S>,
    glue: Arc<PeerGlue<S>>,
    sender: Arc<PeerSender<PeerGlue<S>>>,
}

impl<S: StateMachine> RaftConsensus<S> {
    /// Wires a spawned node to its glue and sender, and keeps the outbound peer set equal
    /// to the replicated membership. `seed` lists peers to reach before the membership is
    /// known (a joining member's view of the cluster, from its peers' answer).
    pub fn new(
        handle: NodeHandle<S>,
        glue: Arc<PeerGlue<S>>,
        sender: Arc<PeerSender<PeerGlue<S>>>,
        seed: Vec<Member>,
    ) -> Arc<RaftConsensus<S>> {
        let _ = glue.handle.set(handle.clone());
        let sync = {
            let glue = glue.clone();
            let sender = sender.clone();
            move |members: &[Member]| {
                let current: BTreeSet<u64> = members.iter().map(|m| m.id).collect();
                for id in sender.peer_ids() {
                    if !current.contains(&id) {
                        sender.remove_peer(id);
                        glue.removed.lock().insert(id);
                    }
                }
                for member in members {
                    if member.id == glue.id {
                        continue;
                    }
                    let urls: Vec<MemberUrl> = member
                        .info
                        .peer_urls
                        .iter()
                        .filter_map(|u| MemberUrl::parse(u).ok())
                        .collect();
                    sender.upsert_peer(member.id, urls);
                }
            }
        };
        let known = handle.members();
        sync(if known.is_empty() { &seed } else { &known });
        let listener_glue = glue.clone();
        let leader_since = Arc::new(Mutex::new((
            std::time::Instant::now(),
            std::time::SystemTime::now(),
        )));
        let leader_seen = leader_since.clone();
        handle.on_event(move |event| match event {
            NodeEvent::MembershipChanged { members } => sync(members),
            NodeEvent::Stopped { reason } => {
                tracing::warn!(%reason, "raft node stopped");
                listener_glue.stopped();
            }
            NodeEvent::LeaderChanged { .. } => {
                *leader_seen.lock() = (std::time::Instant::now(), std::time::SystemTime::now());
            }
        });
        Arc::new(RaftConsensus {
            leader_since,
            handle,
            glue,
            sender,
        })
    }

    /// The node handle.
    pub fn handle(&self) -> &NodeHandle<S> {
        &self.handle
    }

    fn own_info(&self) -> Option<MemberInfo> {
        self.handle
            .members()
            .into_iter()
            .find(|m| m.id == self.glue.id)
            .map(|m| m.info)
    }
}

impl<S: StateMachine> Consensus for RaftConsensus<S> {
    type Response = S::Response;

    fn propose(&self, command: Vec<u8>) -> BoxFuture<'_, Result<S::Response, ConsensusError>> {
        let completion = self.handle.propose(command);
        Box::pin(async move {
            completion
                .await
                .map(|applied| applied.response)
                .map_err(consensus_error)
        })
    }

    fn read_barrier(&self) -> BoxFuture<'_, Result<(), ConsensusError>> {
        let completion = self.handle.read(ReadConsistency::Linearizable, |_| ());
        Box::pin(async move { completion.await.map_err(consensus_error) })
    }

    fn add_member(
        &self,
        id: MemberId,
        peer_urls: Vec<String>,
    ) -> BoxFuture<'_, Result<(), ConsensusError>> {
        let info = MemberInfo {
            name: String::new(),
            peer_urls,
            client_urls: Vec::new(),
        };
        let completion = self.handle.add_member(id.0, info);
        Box::pin(async move { completion.await.map(|_| ()).map_err(consensus_error) })
    }

    fn update_member(
        &self,
        id: MemberId,
        peer_urls: Vec<String>,
    ) -> BoxFuture<'_, Result<(), ConsensusError>> {
        let completion = self
            .handle
            .update_member(id.0, MemberPatch::peer_urls(peer_urls));
        Box::pin(async move { completion.await.map(|_| ()).map_err(consensus_error) })
    }

    fn remove_member(&self, id: MemberId) -> BoxFuture<'_, Result<(), ConsensusError>> {
        let completion = self.handle.remove_member(id.0);
        Box::pin(async move { completion.await.map(|_| ()).map_err(consensus_error) })
    }

    fn publish_attributes(
        &self,
        name: String,
        client_urls: Vec<String>,
    ) -> BoxFuture<'_, Result<(), ConsensusError>> {
        // Only the name and client URLs: the peer URLs stay what the membership holds when
        // this applies (this member's own view may not know them yet).
        let patch = MemberPatch::attributes(name, client_urls);
        if self.own_info().is_some_and(|info| patch.is_noop_for(&info)) {
            return Box::pin(async { Ok(()) });
        }
        let completion = self.handle.update_member(self.glue.id, patch);
        Box::pin(async move { completion.await.map(|_| ()).map_err(consensus_error) })
    }

    fn status(&self) -> ConsensusStatus {
        let status = self.handle.status();
        ConsensusStatus {
            leader: status.leader_id.filter(|id| *id != 0).map(MemberId),
            term: status.term,
            commit: status.commit,
            applied: status.applied,
        }
    }

    fn membership(&self) -> Membership {
        to_membership(&self.handle.members(), &self.glue.removed.lock())
    }

    fn started_and_connected(&self) -> usize {
        self.handle
            .members()
            .iter()
            .filter(|m| !m.info.name.is_empty())
            .filter(|m| m.id == self.glue.id || self.sender.is_connected(m.id))
            .count()
    }

    fn append_counts(&self) -> (u64, u64) {
        (
            self.glue.received.load(Ordering::Relaxed),
            self.sender.sent_total.load(Ordering::Relaxed),
        )
    }

    fn leader_since(&self) -> Option<(std::time::Duration, std::time::SystemTime)> {
        let (at, since) = *self.leader_since.lock();
        Some((at.elapsed(), since))
    }

    fn follower_stats(&self) -> Vec<(MemberId, FollowerStats)> {
        self.sender
            .peer_ids()
            .into_iter()
            .filter_map(|id| {
                let counters = self.sender.counters(id)?;
                Some((
                    MemberId(id),
                    FollowerStats {
                        latency: Default::default(),
                        counts: FollowerCounts {
                            fail: counters.failed.load(Ordering::Relaxed),
                            success: counters.sent.load(Ordering::Relaxed),
                        },
                    },
                ))
            })
            .collect()
    }
}
