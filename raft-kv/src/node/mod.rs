//! The Raft node: drives raft-rs's `RawNode` over [`RaftStorage`] and a [`StateMachine`].
//!
//! # Two ways to run it
//!
//! - [`RaftNode`] is the deterministic, step-by-step core: nothing happens unless the owner
//!   calls [`RaftNode::tick`], [`RaftNode::step`] (a message from a peer) or
//!   [`RaftNode::process_ready`]. No threads, no clock (time enters through an injected
//!   [`Clock`]). The simulator (`crate::sim`) drives it this way.
//! - [`NodeHandle`] runs a `RaftNode` on its own thread: requests, peer messages and reports
//!   arrive over a channel, ticks come from a timer, and every loop iteration drains the
//!   channel before handling one `Ready` — so many client proposals share one `Ready` and
//!   one fsync.
//!
//! # The Ready loop (what is durable when)
//!
//! [`RaftNode::process_ready`] handles one raft `Ready` in this order:
//!
//! 1. **Leader messages are sent at once** (`Ready::messages`, only non-empty on the
//!    leader): appends go out while the leader writes its own copy (raft thesis §10.2.1;
//!    the leader does not count itself until its write is durable).
//! 2. Committed entries are **applied** in order: commands to the state machine, conf
//!    changes through `apply_conf_change` (the new `ConfState` is kept and carried by every
//!    later snapshot), member updates to the membership. Each proposer whose request id is
//!    in an applied entry gets its response. They were made durable by earlier readies
//!    (raft-rs hands out only committed entries this member has persisted), so they do not
//!    wait for this ready's write: a client is answered one fsync sooner, as etcd applies
//!    concurrently with its WAL write.
//! 3. **Persist, one fsync**: the snapshot received from the leader (if any; its file is
//!    saved first), the new entries, and the hard state are written by
//!    [`RaftStorage::persist_ready`] as one append. Only a hard state whose term or vote
//!    changed forces a write on its own; a commit-only change is recorded in memory and
//!    written with the next batch (see [`crate::storage`]).
//! 4. A received snapshot is restored into the state machine (and the membership); a ready
//!    carrying one has no committed entries.
//! 5. Read states (answers to ReadIndex rounds) are recorded.
//! 6. **Persisted messages are sent** (votes, append responses: they promise what step 3
//!    made durable).
//! 7. `advance_append`; the `LightReady`'s commit index is recorded (never dropped), its
//!    messages sent and its committed entries applied; then `advance_apply_to(applied)`.
//! 8. Linearizable reads whose read index is now applied are served.
//! 9. Every `snapshot_interval` applied entries (or when raft needs a snapshot to send and
//!    the newest one predates the last membership change) the state is snapshotted into the
//!    snapshot store and the WAL compacted.
//!
//! **Group commit.** Before a `Ready`, the commands proposed since the last one go to raft
//! as one `MsgPropose`. A leader holds them back (with the `MsgPropose`s followers forward)
//! while [`NodeConfig::max_uncommitted_batches`] of its own appends are still uncommitted,
//! then appends everything that arrived meanwhile at once: fewer, larger appends, so fewer
//! fsyncs on every member and less waiting on the disk. An append still uncommitted after
//! two ticks holds nothing back, so a leader without a quorum appends and times out as usual.
//!
//! After a crash at any point, the member restarts from its disk: the newest snapshot is
//! restored (`Config.applied` = its index), and raft replays the committed entries after it.
//! Everything it acknowledged (votes, appends) was durable before the acknowledgement left.
//!
//! # Requests
//!
//! - [`RaftNode::propose`] puts a request id (member id, boot id, sequence) in the entry's
//!   context. The proposer gets the response when the entry applies, or an error: dropped
//!   (definitely not applied), outcome unknown (leadership changed before the entry reached
//!   this member's log), or timed out.
//! - [`RaftNode::read`] with [`ReadConsistency::Linearizable`] joins the next ReadIndex
//!   round: all reads queued while a round is in flight share the following round. A round
//!   that gets no answer (no leader, lost messages, deposed leader) is retried; a reader
//!   that waits past its deadline gets [`NodeError::TimedOut`]. A deposed or partitioned
//!   leader cannot answer: ReadIndex needs a quorum's heartbeat acknowledgements.
//!   [`ReadConsistency::Serializable`] reads the local state at once (possibly stale).
//! - Membership: [`RaftNode::add_member`], [`RaftNode::add_learner`],
//!   [`RaftNode::promote_learner`], [`RaftNode::remove_member`] propose conf changes whose
//!   context carries the member's [`MemberInfo`]; [`RaftNode::update_member`] replicates
//!   a [`MemberPatch`] (the fields that change, merged as it applies, so a publish of the
//!   name cannot clobber peer URLs). A removed member stops; ids are never reused.
//!
//! # Caveats
//!
//! - raft-rs panics on some internal inconsistencies; the node catches such a panic, marks
//!   itself failed ([`Lifecycle::Failed`]) and stops instead of taking the process down.
//! - A member learns of its own removal by applying it, or — when the leader stops talking
//!   to it first — from a peer rejecting its messages ([`NodeError::PeerRemoved`] from
//!   [`RaftNode::step`]; the transport then calls [`RaftNode::notify_removed`] on it).

pub mod completion;
pub mod config;
mod driver;
pub mod error;
mod logger;
mod requests;
pub mod rng;
pub mod state_machine;
mod store_machine;

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType,
    Message, MessageType, Snapshot,
};
use raft::{RawNode, SnapshotStatus, StateRole};

pub use completion::{completion_pair, Completer, Completion};
pub use config::{ClusterStart, NodeConfig};
pub use driver::{DriverConfig, InboundRead, InboundStream, NodeHandle};
pub use error::NodeError;
pub use state_machine::{
    fnv1a, Member, MemberInfo, MemberPatch, Membership, SnapshotPayload, SnapshotWriter,
    StateMachine,
};

use crate::storage::{Disk, RaftStorage};
use crate::transport::Transport;
use requests::{
    HeaderKind, Proposals, ReadFn, ReadRound, ReadWaiter, Reads, RequestHeader, Waiter,
};
use rng::SplitMix64;

/// The result of an applied proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied<R> {
    /// The raft log index the request was applied at.
    pub index: u64,
    /// The raft term of that entry.
    pub term: u64,
    /// What applying it answered.
    pub response: R,
}

/// A membership change (see [`RaftNode::change_membership`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    /// Add a voting member.
    AddMember {
        /// The new member's id (never reused after a removal).
        id: u64,
        /// Its metadata.
        info: MemberInfo,
    },
    /// Add a learner (receives the log, does not vote).
    AddLearner {
        /// The learner's id.
        id: u64,
        /// Its metadata.
        info: MemberInfo,
    },
    /// Promote a learner to a voting member.
    PromoteLearner {
        /// The learner's id.
        id: u64,
    },
    /// Remove a member (it stops once it learns of it).
    Remove {
        /// The member's id.
        id: u64,
    },
    /// Change some of a member's metadata (merged into its metadata as the change
    /// applies).
    Update {
        /// The member's id.
        id: u64,
        /// The fields that change.
        patch: MemberPatch,
    },
}

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadConsistency {
    /// Reflects every write acknowledged before the read was issued (ReadIndex: the leader
    /// confirms its leadership with a quorum, this member waits until it has applied up to
    /// the leader's commit index).
    Linearizable,
    /// This member's current state, possibly behind the leader (etcd's `quorum=false`).
    Serializable,
}

/// A member's raft role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Runs a pre-vote (checking it could win before disrupting the term).
    PreCandidate,
    /// Runs an election.
    Candidate,
    /// Leads the cluster.
    Leader,
}

impl From<StateRole> for Role {
    fn from(role: StateRole) -> Role {
        match role {
            StateRole::Follower => Role::Follower,
            StateRole::PreCandidate => Role::PreCandidate,
            StateRole::Candidate => Role::Candidate,
            StateRole::Leader => Role::Leader,
        }
    }
}

/// Whether the member is running.
#[derive(Debug, Clone)]
pub enum Lifecycle {
    /// Running normally.
    Running,
    /// Removed from the cluster; stopped for good.
    Removed,
    /// Stopped by a fatal error (storage failure, corruption, raft panic).
    Failed(NodeError),
}

impl Lifecycle {
    /// True while running.
    pub fn is_running(&self) -> bool {
        matches!(self, Lifecycle::Running)
    }
}

/// A point-in-time view of a member's raft state (what etcd reports in `/v2/stats/self`
/// and the `X-Raft-Term` / `X-Raft-Index` headers).
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// This member's id.
    pub id: u64,
    /// Its raft role.
    pub role: Role,
    /// The leader it knows of.
    pub leader_id: Option<u64>,
    /// The current term.
    pub term: u64,
    /// Who it voted for in this term (0 = nobody).
    pub vote: u64,
    /// The commit index.
    pub commit: u64,
    /// The applied index.
    pub applied: u64,
    /// First index in the log (in memory or read back from the WAL).
    pub first_index: u64,
    /// Last index in the log.
    pub last_index: u64,
    /// Index of the newest snapshot.
    pub snapshot_index: u64,
    /// Voting members, sorted.
    pub voters: Vec<u64>,
    /// Learners, sorted.
    pub learners: Vec<u64>,
    /// Running, removed or failed.
    pub lifecycle: Lifecycle,
    /// Proposals waiting for an answer.
    pub pending_proposals: usize,
    /// Linearizable reads waiting for an answer.
    pub pending_reads: usize,
    /// Counters since start.
    pub counters: NodeCounters,
}

/// Counters since the member started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeCounters {
    /// `Ready`s handled.
    pub readies: u64,
    /// Durable appends made for `Ready`s (one fsync each).
    pub persisted_batches: u64,
    /// Entries applied.
    pub entries_applied: u64,
    /// Snapshots created locally.
    pub snapshots_created: u64,
    /// Snapshots installed from the leader.
    pub snapshots_installed: u64,
    /// ReadIndex rounds started.
    pub read_rounds: u64,
    /// Followers' ReadIndex requests this leader folded into its own rounds.
    pub remote_reads_joined: u64,
    /// Leader elections observed (leader changes).
    pub leader_changes: u64,
}

/// Something that happened to the member, delivered to listeners
/// ([`RaftNode::on_event`], [`NodeHandle::on_event`]).
#[derive(Debug, Clone)]
pub enum NodeEvent {
    /// The known leader changed (`None`: no leader right now).
    LeaderChanged {
        /// The new leader.
        leader_id: Option<u64>,
        /// The term.
        term: u64,
    },
    /// The membership changed (a conf change or member update applied, or a snapshot
    /// installed).
    MembershipChanged {
        /// The members now.
        members: Vec<Member>,
    },
    /// The member stopped (removed or failed).
    Stopped {
        /// Why.
        reason: String,
    },
}

/// The wall clock used for the leader's sync command. Tests inject a virtual one.
pub trait Clock: Send + Sync {
    /// Milliseconds since the UNIX epoch.
    fn now_unix_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

type Listener = Box<dyn FnMut(&NodeEvent) + Send>;

/// Followers whose ReadIndex request a confirmed round of this leader answers: (follower
/// id, the request's context).
type RemoteReads = Arc<parking_lot::Mutex<Vec<(u64, Vec<u8>)>>>;

/// A snapshot being serialized and saved in the background; the log is compacted once it
/// is durable.
struct SnapshotJob {
    meta: raft::eraftpb::SnapshotMetadata,
    thread: crate::storage::SnapshotThread,
}

/// The election timeout handed to raft-rs: never reached (see `run_election_timer`).
const RAFT_ELECTION_NEVER: usize = usize::MAX / 4;

/// The deterministic core of a member (see the module documentation).
pub struct RaftNode<S: StateMachine, D: Disk> {
    id: u64,
    config: NodeConfig,
    raw: RawNode<RaftStorage<D>>,
    sm: S,
    membership: Membership,
    conf_state: ConfState,
    applied: u64,
    applied_term: u64,
    rng: SplitMix64,
    boot_id: u64,
    next_seq: u64,
    ticks: u64,
    ticks_since_sync: u64,
    lifecycle: Lifecycle,
    proposals: Proposals<S::Response>,
    /// Commands proposed since the last flush; stepped into raft together as one
    /// `MsgPropose` (see [`RaftNode::flush_proposals`]).
    batch: Vec<Batched<S::Response>>,
    reads: Reads<S>,
    /// Followers' ReadIndex requests that joined this leader's own read rounds (see
    /// [`RaftNode::step`]): filled by their waiters once the round is confirmed,
    /// answered by `serve_reads`.
    remote_reads: RemoteReads,
    /// A local snapshot being written by a thread of its own
    /// ([`NodeConfig::background_snapshots`]).
    snapshot_job: Option<SnapshotJob>,
    /// Length of the last snapshot payload this node encoded (sizes the next buffer).
    last_snapshot_len: usize,
    known_leader: u64,
    known_term: u64,
    known_role: StateRole,
    /// The (term, role) the current election timeout was drawn for.
    timer_key: (u64, StateRole),
    election_timeout: usize,
    clock: Arc<dyn Clock>,
    listeners: Vec<Listener>,
    counters: NodeCounters,
    /// `MsgPropose`s from followers held back by the leader's group commit
    /// ([`RaftNode::may_append`]); stepped, in arrival order, before the own batch.
    held_proposals: Vec<Message>,
    /// The leader's appends not known to be committed, oldest first.
    uncommitted: VecDeque<AppendedBatch>,
}

/// One of the leader's appends (a `Ready` with new entries), for group commit.
#[derive(Debug, Clone, Copy)]
struct AppendedBatch {
    /// Index of its last entry: committed once the commit index reaches it.
    last_index: u64,
    /// The tick count when it was written.
    tick: u64,
}

/// Ticks after which an uncommitted append no longer holds proposals back.
const GROUP_COMMIT_PATIENCE_TICKS: u64 = 2;

/// Uncommitted appends the group commit keeps track of at most.
const MAX_TRACKED_APPENDS: usize = 1024;

/// A command waiting in [`RaftNode`]'s proposal batch.
struct Batched<R> {
    seq: u64,
    header: Vec<u8>,
    command: Vec<u8>,
    completer: Completer<Applied<R>>,
}

fn to_raft_err(e: raft::Error) -> NodeError {
    NodeError::invalid(format!("raft refused: {e}"))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

impl<S: StateMachine, D: Disk> RaftNode<S, D> {
    /// Opens a member on `disk`. If the disk holds raft state the member restarts from it
    /// (restoring the newest snapshot into `state_machine` and replaying the log);
    /// otherwise it starts as `start` says.
    pub fn open(
        config: NodeConfig,
        disk: D,
        mut state_machine: S,
        start: ClusterStart,
    ) -> Result<Self, NodeError> {
        config.validate()?;
        let id = config.id;
        let mut rng = match config.seed {
            Some(seed) => SplitMix64::new(seed),
            None => SplitMix64::from_entropy(),
        };
        let boot_id = rng.next_u64();
        let (mut storage, recovered) = RaftStorage::open(disk)?;
        storage.set_cache_limit(config.log_cache_entries);
        let mut membership = Membership::default();
        let mut conf_state = ConfState::default();
        let mut applied = 0;
        let mut applied_term = 0;
        if let Some(snapshot) = &recovered.snapshot {
            let payload = SnapshotPayload::decode(&snapshot.data)?;
            state_machine
                .restore(&payload.state_machine)
                .map_err(|e| NodeError::corrupt(format!("restoring the state machine: {e}")))?;
            membership = payload.membership;
            conf_state = snapshot.get_metadata().get_conf_state().clone();
            applied = snapshot.get_metadata().index;
            applied_term = snapshot.get_metadata().term;
        } else if let ClusterStart::New(members) = &start {
            if members.is_empty() {
                return Err(NodeError::Config {
                    reason: "a new cluster needs at least one member".into(),
                });
            }
            let mut ids: Vec<u64> = members.iter().map(|(id, _)| *id).collect();
            ids.sort_unstable();
            ids.dedup();
            if ids.len() != members.len() || ids.contains(&0) {
                return Err(NodeError::Config {
                    reason: "initial member ids must be unique and non-zero".into(),
                });
            }
            if !ids.contains(&id) {
                return Err(NodeError::Config {
                    reason: format!("member {id:x} is not in the initial cluster {ids:x?}"),
                });
            }
            membership = Membership::new(members.iter().map(|(id, info)| Member {
                id: *id,
                info: info.clone(),
                learner: false,
            }));
            conf_state.voters = ids;
            let payload = SnapshotPayload {
                version: SnapshotPayload::VERSION,
                membership: membership.clone(),
                state_machine: state_machine.snapshot(),
            };
            storage.bootstrap(conf_state.clone(), payload.encode()?)?;
            applied = 1;
            applied_term = 1;
        }
        let election = config.election_ticks;
        let raft_config = raft::Config {
            id,
            election_tick: election,
            heartbeat_tick: config.heartbeat_ticks,
            applied,
            max_size_per_msg: config.max_size_per_msg,
            max_inflight_msgs: config.max_inflight_msgs,
            check_quorum: config.check_quorum,
            pre_vote: config.pre_vote,
            // raft-rs draws election timeouts from its thread-local RNG. Pinned out of
            // reach, raft never campaigns on its own; the node runs the election timer
            // with its seeded RNG instead (see `run_election_timer`).
            min_election_tick: RAFT_ELECTION_NEVER,
            max_election_tick: RAFT_ELECTION_NEVER + 1,
            read_only_option: raft::ReadOnlyOption::Safe,
            batch_append: true,
            ..raft::Config::default()
        };
        raft_config.validate().map_err(|e| NodeError::Config {
            reason: e.to_string(),
        })?;
        let logger = logger::raft_logger(id);
        let raw = catch_unwind(AssertUnwindSafe(|| {
            RawNode::new(&raft_config, storage, &logger)
        }))
        .map_err(|p| {
            NodeError::corrupt(format!(
                "raft refused the recovered state: {}",
                panic_message(&*p)
            ))
        })?
        .map_err(|e| NodeError::corrupt(format!("raft refused the recovered state: {e}")))?;
        let known_term = raw.raft.term;
        let mut node = RaftNode {
            id,
            config,
            raw,
            sm: state_machine,
            membership,
            conf_state,
            applied,
            applied_term,
            rng,
            boot_id,
            next_seq: 1,
            ticks: 0,
            ticks_since_sync: 0,
            lifecycle: Lifecycle::Running,
            proposals: Proposals::default(),
            batch: Vec::new(),
            held_proposals: Vec::new(),
            uncommitted: VecDeque::new(),
            reads: Reads::default(),
            remote_reads: RemoteReads::default(),
            snapshot_job: None,
            last_snapshot_len: 0,
            known_leader: 0,
            known_term,
            known_role: StateRole::Follower,
            timer_key: (0, StateRole::Follower),
            election_timeout: 0,
            clock: Arc::new(SystemClock),
            listeners: Vec::new(),
            counters: NodeCounters::default(),
        };
        node.redraw_election_timeout();
        // A member of a single-member cluster elects itself right away.
        if node.conf_state.voters == [id] && node.conf_state.learners.is_empty() {
            let _ = node.guard(|raw| raw.campaign().map_err(to_raft_err));
        }
        Ok(node)
    }

    /// This member's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Replaces the clock used for the leader's sync command.
    pub fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.clock = clock;
    }

    /// Registers a listener for [`NodeEvent`]s. It runs on the node's thread: keep it short.
    pub fn on_event(&mut self, listener: impl FnMut(&NodeEvent) + Send + 'static) {
        self.listeners.push(Box::new(listener));
    }

    /// Running, removed or failed.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// The state machine (read-only; for serializable reads and tests).
    pub fn state_machine(&self) -> &S {
        &self.sm
    }

    /// The replicated membership.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The storage (for tests and diagnostics).
    pub fn storage(&self) -> &RaftStorage<D> {
        self.raw.store()
    }

    /// The applied index.
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// The raft role.
    pub fn role(&self) -> Role {
        self.raw.raft.state.into()
    }

    /// True when this member is the leader.
    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The leader this member knows of.
    pub fn leader_id(&self) -> Option<u64> {
        Some(self.raw.raft.leader_id).filter(|l| *l != 0)
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// A hash of the replicated state (state machine and membership); members that applied
    /// the same entries have equal hashes.
    pub fn state_hash(&self) -> u64 {
        let membership = bincode::serialize(&self.membership).unwrap_or_default();
        let mut bytes = self.sm.hash().to_le_bytes().to_vec();
        bytes.extend_from_slice(&fnv1a(&membership).to_le_bytes());
        fnv1a(&bytes)
    }

    /// A status snapshot.
    pub fn status(&self) -> NodeStatus {
        let raft = &self.raw.raft;
        let store = self.raw.store();
        let mut voters = self.conf_state.voters.clone();
        voters.sort_unstable();
        let mut learners = self.conf_state.learners.clone();
        learners.sort_unstable();
        NodeStatus {
            id: self.id,
            role: raft.state.into(),
            leader_id: self.leader_id(),
            term: raft.term,
            vote: raft.vote,
            commit: raft.raft_log.committed,
            applied: self.applied,
            first_index: store.first(),
            last_index: raft.raft_log.last_index(),
            snapshot_index: store.snapshot_metadata().index,
            voters,
            learners,
            lifecycle: self.lifecycle.clone(),
            pending_proposals: self.proposals.len() + self.batch.len(),
            pending_reads: self.reads.len(),
            counters: self.counters,
        }
    }

    /// Advances the logical clock by one tick: elections, heartbeats, the leader's sync
    /// command, read retries and request deadlines.
    pub fn tick(&mut self) {
        if !self.lifecycle.is_running() {
            return;
        }
        self.ticks += 1;
        if let Err(e) = self.guard(|raw| {
            raw.tick();
            Ok(())
        }) {
            self.fail(e);
            return;
        }
        if let Err(e) = self.run_election_timer() {
            self.fail(e);
            return;
        }
        if let Err(e) = self.raw.mut_store().flush_hard_state() {
            self.fail(e);
            return;
        }
        self.flush_proposals();
        self.maybe_propose_sync();
        if let Some(round) = &self.reads.in_flight {
            if self.ticks.saturating_sub(round.started) >= self.config.read_retry_ticks {
                self.reads.requeue_in_flight();
            }
        }
        self.proposals.expire(self.ticks);
        self.reads.expire(self.ticks);
    }

    /// Steps a raft message from a peer.
    ///
    /// Returns [`NodeError::PeerRemoved`] when the sender was removed from the cluster (the
    /// transport should tell it), [`NodeError::Stopped`] when this member is not running.
    pub fn step(&mut self, message: Message) -> Result<(), NodeError> {
        self.ensure_running()?;
        if message.to != self.id {
            return Err(NodeError::invalid(format!(
                "message for member {:x} delivered to {:x}",
                message.to, self.id
            )));
        }
        if self.membership.is_removed(message.from) {
            return Err(NodeError::PeerRemoved { from: message.from });
        }
        if message.get_msg_type() == MessageType::MsgPropose && !self.may_append() {
            self.held_proposals.push(message);
            return Ok(());
        }
        let message = match self.join_remote_read(message) {
            Some(message) => message,
            None => return Ok(()),
        };
        let result = self.guard(|raw| match raw.step(message) {
            // A response from a member not (or no longer) in the configuration: ignore it.
            Err(raft::Error::StepPeerNotFound) => Ok(()),
            other => other.map_err(to_raft_err),
        });
        match result {
            Err(e) if e.is_fatal() => {
                self.fail(e.clone());
                Err(e)
            }
            other => other,
        }
    }

    /// Proposes a state machine command. The completion resolves when the command is
    /// applied (with its response) or fails (see [`NodeError`]).
    pub fn propose(&mut self, command: Vec<u8>) -> Completion<Applied<S::Response>> {
        let (done, completer) = completion_pair(self.id);
        self.propose_with(command, completer);
        done
    }

    /// [`RaftNode::propose`] answering through a completer the caller created.
    pub fn propose_with(&mut self, command: Vec<u8>, completer: Completer<Applied<S::Response>>) {
        if let Err(e) = self.ensure_running() {
            completer.complete(Err(e));
            return;
        }
        if command.is_empty() {
            completer.complete(Err(NodeError::invalid("empty command")));
            return;
        }
        let seq = self.next_seq();
        let header = self.header(HeaderKind::Command, seq);
        if self.raw.raft.leader_id == raft::INVALID_ID {
            // No leader to forward to: raft drops it now, and the caller learns it now.
            self.submit(seq, Waiter::Command(completer), |raw| {
                raw.propose(header, command)
            });
            return;
        }
        self.batch.push(Batched {
            seq,
            header,
            command,
            completer,
        });
    }

    /// Steps every batched command into raft as one `MsgPropose` with one entry each: a
    /// follower forwards them to the leader in one message, a leader appends them in one
    /// step. Called before each Ready, and before anything else is proposed so the log
    /// keeps the order of the calls. If raft refuses the message (no leader, a leadership
    /// transfer, too many uncommitted entries), every command in it fails.
    /// True when a leader may append new proposals now (group commit): fewer than
    /// [`NodeConfig::max_uncommitted_batches`] of its appends are uncommitted, or the oldest
    /// has waited [`GROUP_COMMIT_PATIENCE_TICKS`]. Always true on a follower (it forwards at
    /// once; raft-rs sends the forward after its next write anyway).
    fn may_append(&self) -> bool {
        let limit = self.config.max_uncommitted_batches;
        if limit == 0 || !self.is_leader() {
            return true;
        }
        let committed = self.raw.raft.raft_log.committed;
        let mut pending = self
            .uncommitted
            .iter()
            .filter(|batch| batch.last_index > committed);
        match pending.next() {
            None => true,
            Some(oldest) => {
                self.ticks >= oldest.tick + GROUP_COMMIT_PATIENCE_TICKS
                    || 1 + pending.count() < limit
            }
        }
    }

    /// Proposes the batched commands (and steps the followers' held `MsgPropose`s first)
    /// when [`RaftNode::may_append`] allows it.
    fn flush_proposals(&mut self) {
        if !self.may_append() {
            return;
        }
        self.flush_proposals_now();
    }

    /// Proposes the batched commands and held proposals whatever the group commit says.
    fn flush_proposals_now(&mut self) {
        for message in std::mem::take(&mut self.held_proposals) {
            // As `step` would have: a refusal (dropped proposal) reaches the follower's
            // proposer as a timeout, as when the leader drops it; a fatal error stops this
            // member (a raft panic already has, inside `guard`).
            let result = self.guard(|raw| match raw.step(message) {
                Err(raft::Error::StepPeerNotFound) => Ok(()),
                other => other.map_err(to_raft_err),
            });
            match result {
                Err(e) if e.is_fatal() => {
                    self.fail(e);
                    break;
                }
                _ if !self.lifecycle.is_running() => break,
                _ => {}
            }
        }
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        if let Err(e) = self.ensure_running() {
            for b in batch {
                b.completer.complete(Err(e.clone()));
            }
            return;
        }
        let n = batch.len() as u64;
        let mut entries = Vec::with_capacity(batch.len());
        let mut waiters = Vec::with_capacity(batch.len());
        for b in batch {
            entries.push(Entry {
                data: b.command.into(),
                context: b.header.into(),
                ..Default::default()
            });
            waiters.push((b.seq, Waiter::Command(b.completer)));
        }
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgPropose);
        message.from = self.id;
        message.set_entries(entries.into());
        let before = self.raw.raft.raft_log.last_index();
        match self.propose_guarded(|raw| raw.step(message)) {
            Ok(()) => {
                let after = self.raw.raft.raft_log.last_index();
                // A leader appended them in order; a follower learns the indexes when the
                // entries come back (`note_own_entries`).
                let indexed = self.is_leader() && after == before + n;
                let deadline = self.ticks + self.config.request_timeout_ticks;
                for (i, (seq, waiter)) in waiters.into_iter().enumerate() {
                    let index = indexed.then_some(before + 1 + i as u64);
                    self.proposals.insert(seq, waiter, index, deadline);
                }
            }
            Err(e) => {
                for (_, waiter) in waiters {
                    waiter.fail(e.clone());
                }
            }
        }
    }

    /// Reads the state machine with the given consistency; `read` runs on the node's thread
    /// once it is safe and its result resolves the completion.
    pub fn read<R, F>(&mut self, consistency: ReadConsistency, read: F) -> Completion<R>
    where
        R: Send + 'static,
        F: FnOnce(&S) -> R + Send + 'static,
    {
        let (done, completer) = completion_pair(self.id);
        let run: ReadFn<S> = Box::new(move |sm: Result<&S, NodeError>| {
            completer.complete(sm.map(read));
        });
        self.read_boxed(consistency, run);
        done
    }

    pub(crate) fn read_boxed(&mut self, consistency: ReadConsistency, run: ReadFn<S>) {
        if let Err(e) = self.ensure_running() {
            run(Err(e));
            return;
        }
        match consistency {
            ReadConsistency::Serializable => run(Ok(&self.sm)),
            ReadConsistency::Linearizable => self.reads.queued.push(ReadWaiter {
                run,
                deadline: self.ticks + self.config.request_timeout_ticks,
            }),
        }
    }

    /// Proposes adding a voting member.
    pub fn add_member(&mut self, id: u64, info: MemberInfo) -> Completion<Applied<Vec<Member>>> {
        self.change_membership(MemberChange::AddMember { id, info })
    }

    /// Proposes adding a learner (receives the log, does not vote); promote it with
    /// [`RaftNode::promote_learner`] once it has caught up.
    pub fn add_learner(&mut self, id: u64, info: MemberInfo) -> Completion<Applied<Vec<Member>>> {
        self.change_membership(MemberChange::AddLearner { id, info })
    }

    /// Proposes promoting a learner to a voting member.
    pub fn promote_learner(&mut self, id: u64) -> Completion<Applied<Vec<Member>>> {
        self.change_membership(MemberChange::PromoteLearner { id })
    }

    /// Proposes removing a member. The removed member stops once it learns of it.
    pub fn remove_member(&mut self, id: u64) -> Completion<Applied<Vec<Member>>> {
        self.change_membership(MemberChange::Remove { id })
    }

    /// Proposes a change to a member's metadata (etcd's `member update` and attribute
    /// publish): the fields `patch` sets replace the member's as the entry applies.
    pub fn update_member(
        &mut self,
        id: u64,
        patch: MemberPatch,
    ) -> Completion<Applied<Vec<Member>>> {
        self.change_membership(MemberChange::Update { id, patch })
    }

    /// Proposes a membership change; resolves with the members after it applied.
    pub fn change_membership(&mut self, change: MemberChange) -> Completion<Applied<Vec<Member>>> {
        let (done, completer) = completion_pair(self.id);
        self.change_membership_with(change, completer);
        done
    }

    /// [`RaftNode::change_membership`] answering through a completer the caller created.
    pub fn change_membership_with(
        &mut self,
        change: MemberChange,
        completer: Completer<Applied<Vec<Member>>>,
    ) {
        match change {
            MemberChange::AddMember { id, info } => {
                self.propose_conf_change(ConfChangeType::AddNode, id, Some(info), completer)
            }
            MemberChange::AddLearner { id, info } => {
                self.propose_conf_change(ConfChangeType::AddLearnerNode, id, Some(info), completer)
            }
            MemberChange::PromoteLearner { id } => {
                self.propose_conf_change(ConfChangeType::AddNode, id, None, completer)
            }
            MemberChange::Remove { id } => {
                self.propose_conf_change(ConfChangeType::RemoveNode, id, None, completer)
            }
            MemberChange::Update { id, patch } => self.propose_member_update(id, patch, completer),
        }
    }

    fn propose_member_update(
        &mut self,
        id: u64,
        patch: MemberPatch,
        completer: Completer<Applied<Vec<Member>>>,
    ) {
        if let Err(e) = self.ensure_running() {
            completer.complete(Err(e));
            return;
        }
        if self.membership.get(id).is_none() {
            completer.complete(Err(NodeError::invalid(format!("no member {id:x}"))));
            return;
        }
        let data = match bincode::serialize(&(id, &patch)) {
            Ok(data) => data,
            Err(e) => {
                completer.complete(Err(NodeError::invalid(format!("member patch: {e}"))));
                return;
            }
        };
        let seq = self.next_seq();
        let header = self.header(HeaderKind::MemberPatch, seq);
        self.submit(seq, Waiter::Membership(completer), |raw| {
            raw.propose(header, data)
        });
    }

    /// Starts an election now (tests, operator tools).
    pub fn campaign(&mut self) -> Result<(), NodeError> {
        self.ensure_running()?;
        self.guard(|raw| raw.campaign().map_err(to_raft_err))
    }

    /// Asks the leader to hand leadership to `to`.
    pub fn transfer_leadership(&mut self, to: u64) {
        if self.lifecycle.is_running() {
            let _ = self.guard(|raw| {
                raw.transfer_leader(to);
                Ok(())
            });
        }
    }

    /// Reports the outcome of sending a snapshot to `to` (the transport must call this for
    /// every `MsgSnapshot` it sends, on success and on failure).
    pub fn report_snapshot(&mut self, to: u64, status: SnapshotStatus) {
        if self.lifecycle.is_running() {
            let _ = self.guard(|raw| {
                raw.report_snapshot(to, status);
                Ok(())
            });
        }
    }

    /// Reports that `to` could not be reached (the leader then probes it gently).
    pub fn report_unreachable(&mut self, to: u64) {
        if self.lifecycle.is_running() {
            let _ = self.guard(|raw| {
                raw.report_unreachable(to);
                Ok(())
            });
        }
    }

    /// A peer rejected this member's message because this member was removed: stop.
    pub fn notify_removed(&mut self) {
        if self.lifecycle.is_running() {
            self.stop(Lifecycle::Removed, "removed from the cluster");
        }
    }

    /// True when [`RaftNode::process_ready`] has work to do.
    pub fn has_ready(&self) -> bool {
        let proposals = !self.batch.is_empty() || !self.held_proposals.is_empty();
        self.lifecycle.is_running()
            && (self.raw.has_ready()
                || (proposals && self.may_append())
                || self.read_round_startable())
    }

    /// Handles one raft `Ready` (see the module documentation for the order) and sends
    /// messages through `transport`. Returns whether there was anything to do. A fatal
    /// error stops the member and is returned.
    pub fn process_ready(&mut self, transport: &mut dyn Transport) -> Result<bool, NodeError> {
        if !self.lifecycle.is_running() {
            return Ok(false);
        }
        self.flush_proposals();
        self.maybe_start_read_round();
        if let Some(e) = self.raw.store().take_read_error() {
            // Reading entries back for a follower failed (it gets a snapshot meanwhile):
            // the WAL cannot be trusted, so stop as on a failed write.
            self.fail(e.clone());
            return Err(e);
        }
        if !self.raw.has_ready() {
            return Ok(false);
        }
        let result = catch_unwind(AssertUnwindSafe(|| self.handle_ready(transport)));
        let result = match result {
            Ok(result) => result,
            Err(panic) => Err(NodeError::corrupt(format!(
                "raft panicked: {}",
                panic_message(&*panic)
            ))),
        };
        match result {
            Ok(()) => Ok(true),
            Err(e) => {
                self.fail(e.clone());
                Err(e)
            }
        }
    }

    fn handle_ready(&mut self, transport: &mut dyn Transport) -> Result<(), NodeError> {
        self.counters.readies += 1;
        let mut ready = self.raw.ready();

        // 1. The leader's messages go out before its own write.
        let messages = ready.take_messages();
        if !messages.is_empty() {
            transport.send(messages);
        }
        if let Some(soft) = ready.ss() {
            self.observe_leader(soft.leader_id, soft.raft_state);
        }

        // 2. Apply what is committed: durable already (raft-rs hands out only entries this
        // member persisted in earlier readies), so it need not wait for this ready's write.
        // A client is answered one fsync sooner; etcd applies concurrently with its WAL
        // write too.
        let committed = ready.take_committed_entries();
        self.apply_entries(committed)?;

        // 3. Persist snapshot, entries, hard state: one durable append.
        let snapshot = (!ready.snapshot().is_empty()).then(|| ready.snapshot().clone());
        let payload = match &snapshot {
            Some(snap) => Some(SnapshotPayload::decode(&snap.data)?),
            None => None,
        };
        let entries = ready.take_entries();
        let must_write = snapshot.is_some() || !entries.is_empty() || ready.must_sync();
        if must_write {
            self.raw
                .mut_store()
                .persist_ready(snapshot.as_ref(), &entries, ready.hs())?;
            self.counters.persisted_batches += 1;
        } else if let Some(hs) = ready.hs() {
            // Only the commit index moved: recorded now, written with the next batch.
            self.raw.mut_store().set_commit(hs.commit);
        }
        self.note_own_entries(&entries);
        self.note_appended(&entries);

        // 4. Restore a received snapshot (a ready with one commits nothing).
        if let (Some(snap), Some(payload)) = (snapshot, payload) {
            self.install_snapshot(&snap, payload)?;
        }

        // 5. Read states.
        for state in ready.take_read_states() {
            if let Some(header) = RequestHeader::decode(&state.request_ctx) {
                if header.kind == HeaderKind::ReadRound
                    && header.origin == self.id
                    && header.boot == self.boot_id
                {
                    self.reads.confirm(header.seq, state.index);
                }
            }
        }

        // 6. Messages that promise what was just persisted.
        let persisted = ready.take_persisted_messages();
        if !persisted.is_empty() {
            transport.send(persisted);
        }

        // 7. Advance; the LightReady's commit index is never dropped.
        let mut light = self.raw.advance_append(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit);
        }
        let messages = light.take_messages();
        if !messages.is_empty() {
            transport.send(messages);
        }
        let committed = light.take_committed_entries();
        self.apply_entries(committed)?;
        if self.lifecycle.is_running() {
            self.raw.advance_apply_to(self.applied);
            self.raw.mut_store().note_applied(self.applied);
        }

        // 8. Serve reads, 9. snapshot.
        self.serve_reads();
        self.observe_term();
        if self.lifecycle.is_running() {
            self.maybe_snapshot()?;
        }
        Ok(())
    }

    /// Group commit bookkeeping: forgets committed appends (all of them once this member is
    /// no longer the leader) and records a leader's new one.
    fn note_appended(&mut self, entries: &[Entry]) {
        if !self.is_leader() {
            self.uncommitted.clear();
            return;
        }
        let committed = self.raw.raft.raft_log.committed;
        while self
            .uncommitted
            .front()
            .is_some_and(|batch| batch.last_index <= committed)
        {
            self.uncommitted.pop_front();
        }
        if let Some(last) = entries.last() {
            if self.uncommitted.len() >= MAX_TRACKED_APPENDS {
                // Only a leader without a quorum gets here (the patience has long run out).
                self.uncommitted.pop_front();
            }
            self.uncommitted.push_back(AppendedBatch {
                last_index: last.index,
                tick: self.ticks,
            });
        }
    }

    fn install_snapshot(
        &mut self,
        snap: &Snapshot,
        payload: SnapshotPayload,
    ) -> Result<(), NodeError> {
        let meta = snap.get_metadata();
        self.sm
            .restore(&payload.state_machine)
            .map_err(|e| NodeError::corrupt(format!("restoring snapshot {}: {e}", meta.index)))?;
        self.membership = payload.membership;
        self.conf_state = meta.get_conf_state().clone();
        self.applied = meta.index;
        self.applied_term = meta.term;
        self.counters.snapshots_installed += 1;
        self.proposals.fail_upto(
            meta.index,
            "a snapshot from the leader replaced the log around it",
        );
        self.emit(NodeEvent::MembershipChanged {
            members: self.membership.members().cloned().collect(),
        });
        Ok(())
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), NodeError> {
        for entry in entries {
            if !self.lifecycle.is_running() {
                break;
            }
            if entry.index <= self.applied {
                continue;
            }
            let header = RequestHeader::decode(&entry.context);
            let ours = header.filter(|h| h.origin == self.id && h.boot == self.boot_id);
            let own_seq = ours.map(|h| h.seq);
            if let Some(displaced) = self.proposals.displaced_at(entry.index, own_seq) {
                displaced.waiter.fail(NodeError::dropped(format!(
                    "another entry was committed at index {}",
                    entry.index
                )));
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal => self.apply_normal(&entry, header, own_seq),
                EntryType::EntryConfChange => {
                    let outcome = ConfChange::parse_from_bytes(&entry.data)
                        .map_err(|e| NodeError::invalid(format!("undecodable conf change: {e}")))
                        .and_then(|cc| {
                            let info = cc.context.to_vec();
                            let mut single = ConfChangeSingle::default();
                            single.set_change_type(cc.get_change_type());
                            single.node_id = cc.node_id;
                            let mut v2 = ConfChangeV2::default();
                            v2.set_changes(vec![single].into());
                            self.apply_conf_change(
                                &entry,
                                cc.get_change_type(),
                                cc.node_id,
                                &info,
                                &v2,
                            )
                        });
                    self.answer_membership(own_seq, &entry, outcome);
                }
                EntryType::EntryConfChangeV2 => {
                    // This node never proposes v2 changes; apply one anyway if it is a single
                    // step (another implementation may have), else reject deterministically.
                    let outcome = ConfChangeV2::parse_from_bytes(&entry.data)
                        .map_err(|e| NodeError::invalid(format!("undecodable conf change: {e}")))
                        .and_then(|cc| match cc.changes.as_slice() {
                            [single] => {
                                let context = cc.context.to_vec();
                                self.apply_conf_change(
                                    &entry,
                                    single.get_change_type(),
                                    single.node_id,
                                    &context,
                                    &cc,
                                )
                            }
                            [] => Ok(self.membership.members().cloned().collect()),
                            _ => Err(NodeError::invalid(
                                "joint (multi-step) conf changes are not supported",
                            )),
                        });
                    self.answer_membership(own_seq, &entry, outcome);
                }
            }
            self.applied = entry.index;
            self.applied_term = entry.term;
            self.counters.entries_applied += 1;
        }
        Ok(())
    }

    fn apply_normal(&mut self, entry: &Entry, header: Option<RequestHeader>, own_seq: Option<u64>) {
        match header.map(|h| h.kind) {
            Some(kind @ (HeaderKind::MemberUpdate | HeaderKind::MemberPatch)) => {
                let decoded = if kind == HeaderKind::MemberPatch {
                    bincode::deserialize::<(u64, MemberPatch)>(&entry.data)
                } else {
                    // Written by earlier versions: the member's whole metadata.
                    bincode::deserialize::<(u64, MemberInfo)>(&entry.data)
                        .map(|(id, info)| (id, MemberPatch::from(info)))
                };
                let outcome = decoded
                    .map_err(|e| NodeError::invalid(format!("undecodable member update: {e}")))
                    .and_then(|(id, patch)| match self.membership.get_mut(id) {
                        Some(member) => {
                            patch.apply_to(&mut member.info);
                            Ok(())
                        }
                        None => Err(NodeError::invalid(format!("no member {id:x}"))),
                    })
                    .map(|()| self.membership.members().cloned().collect::<Vec<_>>());
                if outcome.is_ok() {
                    self.emit(NodeEvent::MembershipChanged {
                        members: self.membership.members().cloned().collect(),
                    });
                }
                self.answer_membership(own_seq, entry, outcome);
            }
            _ if entry.data.is_empty() => {
                // Raft's empty entry (a new leader's first) or an entry raft emptied (a
                // refused conf change): nothing to apply, the index still advances.
                if let Some(p) = own_seq.and_then(|seq| self.proposals.take(seq)) {
                    p.waiter
                        .fail(NodeError::dropped("raft refused the request"));
                }
            }
            _ => {
                let response = self.sm.apply(entry.index, &entry.data);
                if let Some(pending) = own_seq.and_then(|seq| self.proposals.take(seq)) {
                    match pending.waiter {
                        Waiter::Command(completer) => {
                            completer.complete(Ok(Applied {
                                index: entry.index,
                                term: entry.term,
                                response,
                            }));
                        }
                        other => other.fail(NodeError::invalid("request kind mismatch")),
                    }
                }
            }
        }
    }

    fn answer_membership(
        &mut self,
        own_seq: Option<u64>,
        entry: &Entry,
        outcome: Result<Vec<Member>, NodeError>,
    ) {
        if let Err(e) = &outcome {
            tracing::info!(member = self.id, index = entry.index, error = %e, "membership change rejected");
        }
        if let Some(pending) = own_seq.and_then(|seq| self.proposals.take(seq)) {
            match pending.waiter {
                Waiter::Membership(completer) => {
                    completer.complete(outcome.map(|members| Applied {
                        index: entry.index,
                        term: entry.term,
                        response: members,
                    }));
                }
                other => other.fail(NodeError::invalid("request kind mismatch")),
            }
        }
    }

    /// Applies one committed conf change. Every check is a function of replicated state, so
    /// every member accepts or rejects it alike.
    fn apply_conf_change(
        &mut self,
        entry: &Entry,
        change: ConfChangeType,
        node_id: u64,
        context: &[u8],
        cc: &ConfChangeV2,
    ) -> Result<Vec<Member>, NodeError> {
        if node_id == 0 {
            return Err(NodeError::invalid("member id 0"));
        }
        if self.membership.is_removed(node_id) && change != ConfChangeType::RemoveNode {
            return Err(NodeError::invalid(format!(
                "member {node_id:x} was removed; ids are never reused"
            )));
        }
        let existing = self.membership.get(node_id).cloned();
        let info = if context.is_empty() {
            None
        } else {
            Some(
                bincode::deserialize::<MemberInfo>(context)
                    .map_err(|e| NodeError::invalid(format!("undecodable member info: {e}")))?,
            )
        };
        match (change, &existing) {
            (ConfChangeType::AddNode, Some(m)) if !m.learner => {
                return Err(NodeError::invalid(format!(
                    "{node_id:x} is already a member"
                )))
            }
            (ConfChangeType::AddLearnerNode, Some(_)) => {
                return Err(NodeError::invalid(format!(
                    "{node_id:x} is already a member"
                )))
            }
            (ConfChangeType::RemoveNode, None) => {
                return Err(NodeError::invalid(format!("{node_id:x} is not a member")))
            }
            _ => {}
        }
        let conf_state = self
            .raw
            .apply_conf_change(cc)
            .map_err(|e| NodeError::invalid(format!("raft refused the conf change: {e}")))?;
        self.conf_state = conf_state;
        self.raw.mut_store().note_conf_change_applied(entry.index);
        match change {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                let learner = change == ConfChangeType::AddLearnerNode;
                let info = info
                    .or_else(|| existing.map(|m| m.info))
                    .unwrap_or_default();
                self.membership.insert(Member {
                    id: node_id,
                    info,
                    learner,
                });
            }
            ConfChangeType::RemoveNode => self.membership.remove(node_id),
        }
        let members: Vec<Member> = self.membership.members().cloned().collect();
        self.emit(NodeEvent::MembershipChanged {
            members: members.clone(),
        });
        if change == ConfChangeType::RemoveNode && node_id == self.id {
            self.applied = entry.index;
            self.applied_term = entry.term;
            self.stop(Lifecycle::Removed, "removed from the cluster");
        }
        Ok(members)
    }

    fn propose_conf_change(
        &mut self,
        change: ConfChangeType,
        id: u64,
        info: Option<MemberInfo>,
        completer: Completer<Applied<Vec<Member>>>,
    ) {
        if let Err(e) = self.ensure_running() {
            completer.complete(Err(e));
            return;
        }
        // Fail fast on what the apply-time checks would reject anyway.
        let existing = self.membership.get(id);
        let problem = if id == 0 {
            Some("member id 0".to_string())
        } else if self.membership.is_removed(id) {
            Some(format!("member {id:x} was removed; ids are never reused"))
        } else {
            match change {
                ConfChangeType::AddNode if info.is_some() && existing.is_some() => {
                    Some(format!("{id:x} is already a member"))
                }
                ConfChangeType::AddNode
                    if info.is_none() && !existing.is_some_and(|m| m.learner) =>
                {
                    Some(format!("{id:x} is not a learner"))
                }
                ConfChangeType::AddLearnerNode if existing.is_some() => {
                    Some(format!("{id:x} is already a member"))
                }
                ConfChangeType::RemoveNode if existing.is_none() => {
                    Some(format!("{id:x} is not a member"))
                }
                ConfChangeType::RemoveNode if self.conf_state.voters == [id] => {
                    Some("cannot remove the last voting member".to_string())
                }
                _ => None,
            }
        };
        if let Some(problem) = problem {
            completer.complete(Err(NodeError::invalid(problem)));
            return;
        }
        if self.is_leader() && self.raw.raft.has_pending_conf() {
            completer.complete(Err(NodeError::dropped(
                "another membership change is still being applied",
            )));
            return;
        }
        let context = match info.as_ref().map(bincode::serialize).transpose() {
            Ok(context) => context.unwrap_or_default(),
            Err(e) => {
                completer.complete(Err(NodeError::invalid(format!("member info: {e}"))));
                return;
            }
        };
        let mut cc = ConfChange::default();
        cc.set_change_type(change);
        cc.node_id = id;
        cc.context = context.into();
        let seq = self.next_seq();
        let header = self.header(HeaderKind::ConfChange, seq);
        self.submit(seq, Waiter::Membership(completer), |raw| {
            raw.propose_conf_change(header, cc)
        });
    }

    /// Proposes through raft and registers the waiter (with its index when this member is
    /// the leader and the entry went straight into its log).
    fn submit(
        &mut self,
        seq: u64,
        waiter: Waiter<S::Response>,
        propose: impl FnOnce(&mut RawNode<RaftStorage<D>>) -> raft::Result<()>,
    ) {
        // Batched commands go first: the log keeps the order of the calls.
        self.flush_proposals_now();
        let before = self.raw.raft.raft_log.last_index();
        match self.propose_guarded(propose) {
            Ok(()) => {
                let after = self.raw.raft.raft_log.last_index();
                let index = (self.is_leader() && after > before).then_some(after);
                let deadline = self.ticks + self.config.request_timeout_ticks;
                self.proposals.insert(seq, waiter, index, deadline);
            }
            Err(e) => waiter.fail(e),
        }
    }

    /// Runs a proposal against raft (panics caught by `guard`), naming a dropped proposal.
    fn propose_guarded(
        &mut self,
        propose: impl FnOnce(&mut RawNode<RaftStorage<D>>) -> raft::Result<()>,
    ) -> Result<(), NodeError> {
        self.guard(|raw| match propose(raw) {
            Err(raft::Error::ProposalDropped) => Err(NodeError::dropped(
                "no leader, leadership transfer in progress, or too many uncommitted entries",
            )),
            other => other.map_err(to_raft_err),
        })
    }

    /// Notes where our proposals landed in the log (how a follower learns the index of a
    /// proposal it forwarded).
    fn note_own_entries(&mut self, entries: &[Entry]) {
        if self.proposals.len() == 0 {
            return;
        }
        for entry in entries {
            if let Some(h) = RequestHeader::decode(&entry.context) {
                if h.origin == self.id && h.boot == self.boot_id {
                    self.proposals.set_index(h.seq, entry.index);
                }
            }
        }
    }

    fn maybe_propose_sync(&mut self) {
        if self.config.sync_interval_ticks == 0 || !self.is_leader() {
            self.ticks_since_sync = 0;
            return;
        }
        self.ticks_since_sync += 1;
        if self.ticks_since_sync < self.config.sync_interval_ticks
            || !self.raw.raft.commit_to_current_term()
        {
            return;
        }
        self.ticks_since_sync = 0;
        if let Some(command) = self.sm.leader_sync_command(self.clock.now_unix_ms()) {
            let _ = self.guard(|raw| raw.propose(Vec::new(), command).map_err(to_raft_err));
        }
    }

    fn read_round_startable(&self) -> bool {
        if self.reads.queued.is_empty() || self.reads.in_flight.is_some() {
            return false;
        }
        let raft = &self.raw.raft;
        if raft.state == StateRole::Leader {
            // raft-rs silently drops ReadIndex before the leader commits in its term.
            raft.commit_to_current_term()
        } else {
            raft.leader_id != 0
        }
    }

    fn maybe_start_read_round(&mut self) {
        if !self.read_round_startable() {
            return;
        }
        let seq = self.next_seq();
        let context = self.header(HeaderKind::ReadRound, seq);
        let waiters = std::mem::take(&mut self.reads.queued);
        self.reads.in_flight = Some(ReadRound {
            seq,
            started: self.ticks,
            waiters,
        });
        self.counters.read_rounds += 1;
        let _ = self.guard(|raw| {
            raw.read_index(context);
            Ok(())
        });
    }

    fn serve_reads(&mut self) {
        for (index, waiters) in self.reads.take_servable_rounds(self.applied) {
            for waiter in waiters {
                (waiter.run)(Ok(&self.sm));
            }
            self.answer_remote_reads(index);
        }
    }

    /// On a leader that has committed in its term, a follower's ReadIndex request joins
    /// the leader's own next read round instead of raft-rs starting a heartbeat round for
    /// each such request: one round confirms the leader's reads and every follower's
    /// (the round starts after the request arrived, so its read index is valid for it).
    /// Returns the message if raft-rs should handle it.
    fn join_remote_read(&mut self, mut message: Message) -> Option<Message> {
        let raft = &self.raw.raft;
        if message.get_msg_type() != MessageType::MsgReadIndex
            || message.from == self.id
            || message.entries.len() != 1
            || raft.state != StateRole::Leader
            || !raft.commit_to_current_term()
        {
            return Some(message);
        }
        let from = message.from;
        let context = message.mut_entries()[0].take_data().to_vec();
        let outbox = Arc::clone(&self.remote_reads);
        self.reads.queued.push(ReadWaiter {
            run: Box::new(move |state: Result<&S, NodeError>| {
                // On failure (timeout, stop) the follower's own round times out and retries.
                if state.is_ok() {
                    outbox.lock().push((from, context));
                }
            }),
            deadline: self.ticks + self.config.request_timeout_ticks,
        });
        self.counters.remote_reads_joined += 1;
        None
    }

    /// Answers the followers whose requests a round with read index `index` confirmed
    /// (queued for the next `Ready`, as raft-rs queues its own answers).
    fn answer_remote_reads(&mut self, index: u64) {
        let answered = std::mem::take(&mut *self.remote_reads.lock());
        if answered.is_empty() || self.raw.raft.state != StateRole::Leader {
            // A deposed leader stays silent: the follower's round times out and retries.
            return;
        }
        let term = self.raw.raft.term;
        for (to, context) in answered {
            let entry = Entry {
                data: context.into(),
                ..Entry::default()
            };
            let mut answer = Message::default();
            answer.set_msg_type(MessageType::MsgReadIndexResp);
            answer.from = self.id;
            answer.to = to;
            answer.term = term;
            answer.index = index;
            answer.set_entries(vec![entry].into());
            self.raw.raft.msgs.push(answer);
        }
    }

    /// The snapshot payload of the current state, serialized here, on the raft loop.
    fn encode_snapshot(&self, capacity: usize) -> Result<Vec<u8>, NodeError> {
        SnapshotPayload::encode_with(&self.membership, capacity, |out| self.sm.snapshot_into(out))
    }

    fn maybe_snapshot(&mut self) -> Result<(), NodeError> {
        let catchup = self.config.snapshot_catchup_entries;
        if let Some(job) = self.snapshot_job.take() {
            if !job.thread.is_finished() {
                self.snapshot_job = Some(job);
                return Ok(());
            }
            let saved = job
                .thread
                .join()
                .unwrap_or_else(|_| Err(NodeError::corrupt("the snapshot thread panicked")));
            self.last_snapshot_len = saved?;
            self.raw.mut_store().finish_snapshot(job.meta, catchup)?;
            self.counters.snapshots_created += 1;
        }
        let store = self.raw.store();
        let snapshot_index = store.snapshot_metadata().index;
        let wanted = store.take_snapshot_wanted();
        let due = self.applied.saturating_sub(snapshot_index) >= self.config.snapshot_interval;
        if self.applied <= snapshot_index || !(due || wanted) {
            return Ok(());
        }
        // Sized like the last snapshot, so the buffer is not regrown (and copied) on the way.
        let capacity = self.last_snapshot_len + self.last_snapshot_len / 8 + 4096;
        let applied = self.applied;
        let conf_state = self.conf_state.clone();
        if self.config.background_snapshots {
            let store = self.raw.store();
            let Some(mut meta) = store.prepare_snapshot(applied, conf_state)? else {
                return Ok(());
            };
            // The state frozen now (O(1) for a persistent state) is serialized on the
            // thread; otherwise it is serialized here and the thread only saves it.
            let make: Box<dyn FnOnce() -> Result<Vec<u8>, NodeError> + Send> = match self
                .sm
                .snapshot_writer()
            {
                Some(writer) => {
                    let membership = self.membership.clone();
                    Box::new(move || SnapshotPayload::encode_with(&membership, capacity, writer))
                }
                None => {
                    let data = self.encode_snapshot(capacity)?;
                    Box::new(move || Ok(data))
                }
            };
            match store.save_snapshot_in_background(&meta, make)? {
                Ok(thread) => {
                    self.snapshot_job = Some(SnapshotJob { meta, thread });
                    return Ok(());
                }
                Err(make) => {
                    let data = make()?;
                    self.last_snapshot_len = data.len();
                    self.raw.mut_store().create_snapshot(
                        applied,
                        meta.take_conf_state(),
                        data,
                        catchup,
                    )?;
                }
            }
        } else {
            let data = self.encode_snapshot(capacity)?;
            self.last_snapshot_len = data.len();
            self.raw
                .mut_store()
                .create_snapshot(applied, conf_state, data, catchup)?;
        }
        self.counters.snapshots_created += 1;
        Ok(())
    }

    fn observe_leader(&mut self, leader: u64, role: StateRole) {
        let lost_leadership = self.known_role == StateRole::Leader && role != StateRole::Leader;
        self.known_role = role;
        if lost_leadership {
            // Reads in the old leader's round can no longer be confirmed.
            self.reads.requeue_in_flight();
        }
        if leader != self.known_leader {
            self.known_leader = leader;
            self.counters.leader_changes += 1;
            // A round forwarded to the old leader is lost with it.
            self.reads.requeue_in_flight();
            self.emit(NodeEvent::LeaderChanged {
                leader_id: Some(leader).filter(|l| *l != 0),
                term: self.raw.raft.term,
            });
        }
    }

    fn observe_term(&mut self) {
        let term = self.raw.raft.term;
        if term != self.known_term {
            self.known_term = term;
            self.proposals
                .fail_unindexed("leadership changed before the proposal reached the log");
        }
    }

    /// The election timer, run by the node rather than raft-rs (whose timeouts come from a
    /// thread-local RNG): a timeout is drawn from the seeded RNG in `(election_ticks,
    /// 2 * election_ticks]` for every new (term, role); a promotable non-leader whose
    /// `election_elapsed` (raft's own counter, reset whenever it hears from a leader)
    /// reaches it campaigns, exactly as raft-rs's `tick_election` would.
    fn run_election_timer(&mut self) -> Result<(), NodeError> {
        let key = (self.raw.raft.term, self.raw.raft.state);
        if key != self.timer_key {
            self.timer_key = key;
            self.redraw_election_timeout();
        }
        let raft = &mut self.raw.raft;
        if raft.state == StateRole::Leader
            || !raft.promotable()
            || raft.election_elapsed < self.election_timeout
        {
            return Ok(());
        }
        raft.election_elapsed = 0;
        self.redraw_election_timeout();
        self.guard(|raw| match raw.campaign() {
            Err(raft::Error::ProposalDropped) | Ok(()) => Ok(()),
            Err(e) => Err(to_raft_err(e)),
        })
    }

    fn redraw_election_timeout(&mut self) {
        let election = self.config.election_ticks as u64;
        self.election_timeout = self.rng.range(election + 1, 2 * election + 1) as usize;
    }

    fn guard<T>(
        &mut self,
        f: impl FnOnce(&mut RawNode<RaftStorage<D>>) -> Result<T, NodeError>,
    ) -> Result<T, NodeError> {
        let raw = &mut self.raw;
        match catch_unwind(AssertUnwindSafe(|| f(raw))) {
            Ok(result) => result,
            Err(panic) => {
                let error =
                    NodeError::corrupt(format!("raft panicked: {}", panic_message(&*panic)));
                self.fail(error.clone());
                Err(error)
            }
        }
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    fn header(&self, kind: HeaderKind, seq: u64) -> Vec<u8> {
        RequestHeader {
            kind,
            origin: self.id,
            boot: self.boot_id,
            seq,
        }
        .encode()
    }

    fn ensure_running(&self) -> Result<(), NodeError> {
        match &self.lifecycle {
            Lifecycle::Running => Ok(()),
            Lifecycle::Removed => Err(NodeError::Stopped {
                id: self.id,
                reason: "removed from the cluster".into(),
            }),
            Lifecycle::Failed(e) => Err(NodeError::Stopped {
                id: self.id,
                reason: format!("failed: {e}"),
            }),
        }
    }

    fn fail(&mut self, error: NodeError) {
        if self.lifecycle.is_running() {
            tracing::error!(member = self.id, error = %error, "raft member failed and stops");
            let reason = format!("failed: {error}");
            self.stop(Lifecycle::Failed(error), &reason);
        }
    }

    fn stop(&mut self, lifecycle: Lifecycle, reason: &str) {
        self.lifecycle = lifecycle;
        let error = NodeError::Stopped {
            id: self.id,
            reason: reason.to_string(),
        };
        self.proposals.fail_all(&error);
        self.reads.fail_all(&error);
        self.emit(NodeEvent::Stopped {
            reason: reason.to_string(),
        });
    }

    fn emit(&mut self, event: NodeEvent) {
        for listener in &mut self.listeners {
            listener(&event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{member_info, Cluster, SimConfig};

    /// A member update entry written by an earlier version (kind 2: the member's whole
    /// metadata) still applies from an old log, as a replacement of every field.
    #[test]
    fn member_update_entries_of_earlier_versions_still_apply() {
        let mut cluster = Cluster::new(SimConfig::from_env(17), 1);
        let leader = cluster.wait_for_leader(5_000);
        assert_ne!(member_info(leader).name, "renamed");
        let replaced = MemberInfo {
            name: "renamed".into(),
            peer_urls: vec!["http://10.0.0.9:2380".into()],
            client_urls: vec![],
        };
        let node = cluster.node_mut(leader).expect("leader");
        let (done, completer) = completion_pair(leader);
        let seq = node.next_seq();
        let header = node.header(HeaderKind::MemberUpdate, seq);
        let data = bincode::serialize(&(leader, &replaced)).expect("encode");
        node.submit(seq, Waiter::Membership(completer), |raw| {
            raw.propose(header, data)
        });
        let members = cluster.complete(done, 5_000).expect("applied").response;
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].info, replaced);
        let node = cluster.node(leader).expect("leader");
        assert_eq!(
            node.membership().get(leader).map(|m| &m.info),
            Some(&replaced)
        );
    }

    /// Proposes `key = value` on `on` and handles the resulting `Ready`s (no message is
    /// delivered).
    fn put_now(
        cluster: &mut Cluster,
        on: u64,
        key: &str,
    ) -> crate::node::completion::Completion<Applied<Option<String>>> {
        let done = cluster.put(on, key, "v");
        cluster.flush_readies();
        done
    }

    fn last_index(cluster: &Cluster, id: u64) -> u64 {
        cluster.node(id).expect("running").status().last_index
    }

    /// Group commit: while the leader's append is uncommitted, its new proposals and the
    /// ones followers forward wait, then go into the log together; without the limit each
    /// is appended at once.
    #[test]
    fn the_leader_appends_once_its_previous_append_commits() {
        for limit in [1, 0] {
            let mut config = SimConfig::from_env(23);
            config.node.max_uncommitted_batches = limit;
            let mut cluster = Cluster::new(config, 3);
            let leader = cluster.wait_for_leader(5_000);
            cluster.run_for(50);
            let follower = cluster.ids().into_iter().find(|&id| id != leader).unwrap();
            let start = last_index(&cluster, leader);

            let a = put_now(&mut cluster, leader, "a");
            assert_eq!(last_index(&cluster, leader), start + 1);
            let b = put_now(&mut cluster, leader, "b");
            let c = put_now(&mut cluster, follower, "c");
            if limit == 1 {
                assert_eq!(last_index(&cluster, leader), start + 1, "b waits for a");
                // Deliver until the follower's forward of c reaches the leader: held too.
                let held = cluster.run_until(100, |cluster| {
                    let node = cluster.node(leader).expect("leader");
                    !node.held_proposals.is_empty() || node.status().commit > start
                });
                assert!(held, "c reached the leader");
                let node = cluster.node(leader).expect("leader");
                if node.status().commit == start {
                    assert_eq!(node.status().last_index, start + 1, "c waits for a");
                }
            } else {
                assert_eq!(
                    last_index(&cluster, leader),
                    start + 2,
                    "b is appended at once"
                );
            }
            let a = cluster.complete(a, 2_000).expect("a applied").index;
            let b = cluster.complete(b, 2_000).expect("b applied").index;
            let c = cluster.complete(c, 2_000).expect("c applied").index;
            assert_eq!(a, start + 1);
            assert!(b > a && c > a, "limit {limit}: a={a} b={b} c={c}");
            if limit == 1 {
                assert_eq!(b.max(c), a + 2, "b and c went in as the next append");
            }
            cluster.check_invariants();
        }
    }

    /// A leader that has lost its quorum holds proposals back only for the patience: they
    /// are then appended and time out as usual instead of waiting for ever.
    #[test]
    fn held_proposals_go_in_once_the_patience_runs_out() {
        let mut config = SimConfig::from_env(29);
        config.node.check_quorum = false;
        let mut cluster = Cluster::new(config.clone(), 3);
        let leader = cluster.wait_for_leader(5_000);
        cluster.run_for(50);
        let start = last_index(&cluster, leader);
        cluster.isolate(leader);
        let a = put_now(&mut cluster, leader, "a");
        let b = put_now(&mut cluster, leader, "b");
        assert_eq!(last_index(&cluster, leader), start + 1, "b waits for a");
        cluster.run_for(config.tick_ms * (GROUP_COMMIT_PATIENCE_TICKS + 1));
        assert_eq!(last_index(&cluster, leader), start + 2, "b was appended");
        let timeout_ms = config.tick_ms * (config.node.request_timeout_ticks + 2);
        cluster.run_for(timeout_ms);
        assert!(b.is_ready(), "b was answered");
        for done in [a, b] {
            match cluster.complete(done, 0) {
                Err(NodeError::TimedOut { .. }) | Err(NodeError::OutcomeUnknown { .. }) => {}
                other => panic!("expected a timeout, got {other:?}"),
            }
        }
    }
}
