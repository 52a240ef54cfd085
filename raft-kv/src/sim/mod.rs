//! A deterministic simulated cluster: members ([`RaftNode`]s over [`MemDisk`]s) on a
//! simulated network, driven event by event from one seeded RNG.
//!
//! # Model
//!
//! Virtual time advances from event to event; there are two kinds. A member **ticks**
//! every `tick_ms` (each member with its own phase). A **message** is delivered after a
//! random delay in `[min_delay_ms, max_delay_ms]`, unless the network drops it (random
//! loss, or a partition between its ends at delivery time) or its receiver is down. After
//! every event each member with work handles its `Ready`s, and the messages they send are
//! scheduled. Everything random — delays, drops, duplicates, election timeouts, the
//! nemesis of [`random_run`] — comes from the cluster's seed, so a run replays exactly.
//!
//! A member can **crash** (its [`RaftNode`] is dropped; its [`MemDisk`], where every
//! append counts as fsynced, survives) and **restart** from its disk. Snapshot messages
//! are reported to their sender as delivered or failed; messages from a removed member
//! make the receiver tell it (it stops).
//!
//! # Checks
//!
//! [`Cluster::check_invariants`] verifies, over all running members:
//! - **election safety**: at most one leader per term (observed after every event);
//! - **log matching**: if two logs hold an entry with the same index and term, they hold
//!   the same entries up to it;
//! - **committed entries are never lost or changed**: every member's committed prefix
//!   agrees with every entry any member ever reported committed, and the leader holds all
//!   of them (leader completeness);
//! - **state machine safety**: the applied histories of all members agree index by index.
//!
//! [`Cluster::converge`] heals the network and runs until all members applied the same
//! log, then compares their state hashes and checks that every acknowledged write is in
//! every member's history.
//!
//! On a panic while a cluster is alive, its seed and the last events are printed; re-run
//! with `SIM_SEED=<seed>` (see [`SimConfig::from_env`]).

mod kv;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use raft::eraftpb::{Message, MessageType};
use raft::SnapshotStatus;

pub use kv::{KvCommand, KvMachine};

use crate::node::rng::SplitMix64;
use crate::node::StateMachine;
use crate::node::{
    fnv1a, Applied, Clock, ClusterStart, Completion, MemberInfo, NodeConfig, NodeError, RaftNode,
    ReadConsistency,
};
use crate::storage::{MemDisk, MemDiskFault};

/// A simulated member.
pub type SimNode<S = KvMachine> = RaftNode<S, MemDisk>;

/// A state machine the simulator can run: it can be created fresh, and it may expose the
/// history of the commands it applied for the state machine safety check.
pub trait SimMachine: StateMachine + Sized {
    /// A fresh, empty machine; with `leader_sync`, its leader proposes the periodic sync
    /// command (if it has one).
    fn create(leader_sync: bool) -> Self;

    /// `(index, fnv1a(command))` of every command applied, in order, if the machine keeps
    /// it (then histories are compared across members and acknowledged writes checked).
    fn applied_history(&self) -> Option<&[(u64, u64)]> {
        None
    }
}

impl SimMachine for KvMachine {
    fn create(leader_sync: bool) -> Self {
        KvMachine::new(leader_sync)
    }

    fn applied_history(&self) -> Option<&[(u64, u64)]> {
        Some(self.history())
    }
}

/// The etcd v2 store runs in the simulator too (its sync command is always on: it only
/// fires when a key's TTL has come).
impl SimMachine for crate::store::Store {
    fn create(_leader_sync: bool) -> Self {
        crate::store::Store::new()
    }
}

/// Settings of a simulated cluster.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed of every random choice.
    pub seed: u64,
    /// Virtual milliseconds per raft tick.
    pub tick_ms: u64,
    /// Smallest message delay (virtual ms, at least 1).
    pub min_delay_ms: u64,
    /// Largest message delay.
    pub max_delay_ms: u64,
    /// Messages lost at random, per thousand.
    pub drop_per_mille: u64,
    /// Messages delivered twice, per thousand.
    pub duplicate_per_mille: u64,
    /// The template of every member's configuration (`id` and `seed` are set per member).
    pub node: NodeConfig,
    /// Records per segment of each member's [`MemDisk`] (compaction granularity).
    pub segment_records: u64,
    /// Whether leaders propose the state machine's periodic sync command.
    pub leader_sync: bool,
}

impl SimConfig {
    /// Defaults: 10 ms ticks, 1–5 ms delays, no loss, snapshots every 200 entries.
    pub fn new(seed: u64) -> Self {
        let mut node = NodeConfig::new(1);
        node.snapshot_interval = 200;
        node.snapshot_catchup_entries = 50;
        // A small cache: leaders often read entries for lagging followers back from disk.
        node.log_cache_entries = 8;
        node.sync_interval_ticks = 0;
        SimConfig {
            seed,
            tick_ms: 10,
            min_delay_ms: 1,
            max_delay_ms: 5,
            drop_per_mille: 0,
            duplicate_per_mille: 0,
            node,
            segment_records: 16,
            leader_sync: false,
        }
    }

    /// [`SimConfig::new`] with the seed from the `SIM_SEED` environment variable if set,
    /// else `default_seed`.
    pub fn from_env(default_seed: u64) -> Self {
        SimConfig::new(env_seed().unwrap_or(default_seed))
    }
}

/// The metadata the simulator gives member `id`.
pub fn member_info(id: u64) -> MemberInfo {
    MemberInfo {
        name: format!("m{id}"),
        peer_urls: vec![format!("sim://m{id}")],
        client_urls: vec![],
    }
}

/// The `SIM_SEED` environment variable, if set to a number.
pub fn env_seed() -> Option<u64> {
    std::env::var("SIM_SEED").ok()?.trim().parse().ok()
}

/// The virtual clock members read for the leader's sync command.
#[derive(Debug, Default)]
pub struct SimClock {
    now_ms: AtomicU64,
}

impl Clock for SimClock {
    fn now_unix_ms(&self) -> u64 {
        // A fixed epoch offset keeps values realistic.
        1_700_000_000_000 + self.now_ms.load(Ordering::Relaxed)
    }
}

struct Slot<S: SimMachine> {
    node: Option<SimNode<S>>,
    disk: MemDisk,
    next_tick: u64,
    boots: u64,
}

#[derive(Clone, Copy)]
enum TraceEvent {
    Tick(u64),
    Deliver {
        from: u64,
        to: u64,
        kind: MessageType,
        dropped: bool,
    },
    Crash(u64),
    Restart(u64),
    Partition,
    Heal,
}

impl std::fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TraceEvent::Tick(id) => write!(f, "tick {id}"),
            TraceEvent::Deliver {
                from,
                to,
                kind,
                dropped,
            } => {
                let fate = if *dropped { "dropped" } else { "delivered" };
                write!(f, "{kind:?} {from} -> {to} {fate}")
            }
            TraceEvent::Crash(id) => write!(f, "crash {id}"),
            TraceEvent::Restart(id) => write!(f, "restart {id}"),
            TraceEvent::Partition => write!(f, "partition"),
            TraceEvent::Heal => write!(f, "heal"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntryId {
    term: u64,
    digest: u64,
}

/// One member's log as the checker sees it: (member, commit, [(index, entry)]).
type LogView = (u64, u64, Vec<(u64, EntryId)>);

/// A write in flight in [`random_run`]: its command and its completion.
type PendingWrite = (Vec<u8>, Completion<Applied<Option<String>>>);

/// A membership change in flight in [`random_run`].
type MembershipChange = Completion<Applied<Vec<crate::node::Member>>>;

#[derive(Default)]
struct Checker {
    /// term -> (leader, event at which it was first seen leading).
    leaders: BTreeMap<u64, (u64, u64)>,
    /// index -> (entry, event at which it was first seen committed).
    committed: BTreeMap<u64, (EntryId, u64)>,
    applied: BTreeMap<u64, u64>,
    acked: BTreeMap<u64, u64>,
}

/// A simulated cluster (see the module documentation).
pub struct Cluster<S: SimMachine = KvMachine> {
    config: SimConfig,
    rng: SplitMix64,
    now: u64,
    slots: BTreeMap<u64, Slot<S>>,
    queue: BTreeMap<(u64, u64), Message>,
    next_seq: u64,
    blocked: BTreeSet<(u64, u64)>,
    clock: Arc<SimClock>,
    checker: Checker,
    trace: VecDeque<(u64, TraceEvent)>,
    events: u64,
}

const TRACE_LEN: usize = 64;

fn entry_digest(entry: &raft::eraftpb::Entry) -> u64 {
    let mut bytes = Vec::with_capacity(entry.data.len() + entry.context.len() + 1);
    bytes.push(entry.get_entry_type() as u8);
    bytes.extend_from_slice(&entry.data);
    bytes.extend_from_slice(&entry.context);
    fnv1a(&bytes)
}

impl<S: SimMachine> Cluster<S> {
    /// A new cluster of `members` founding members with ids `1..=members`, running `S`
    /// (`Cluster::new` is the same for the default [`KvMachine`]).
    pub fn create(config: SimConfig, members: u64) -> Self {
        let ids: Vec<u64> = (1..=members).collect();
        Cluster::create_with_members(config, &ids)
    }

    /// A new cluster whose founding members have the given ids, running `S`.
    pub fn create_with_members(config: SimConfig, ids: &[u64]) -> Self {
        let mut cluster = Cluster {
            rng: SplitMix64::new(config.seed),
            config,
            now: 0,
            slots: BTreeMap::new(),
            queue: BTreeMap::new(),
            next_seq: 0,
            blocked: BTreeSet::new(),
            clock: Arc::new(SimClock::default()),
            checker: Checker::default(),
            trace: VecDeque::new(),
            events: 0,
        };
        let initial: Vec<(u64, MemberInfo)> =
            ids.iter().map(|id| (*id, member_info(*id))).collect();
        for id in ids {
            let disk = MemDisk::with_segment_records(cluster.config.segment_records);
            cluster.start_member(*id, disk, ClusterStart::New(initial.clone()));
        }
        cluster
    }

    fn start_member(&mut self, id: u64, disk: MemDisk, start: ClusterStart) {
        let mut config = self.config.node.clone();
        config.id = id;
        config.seed = Some(self.rng.next_u64());
        let phase = self.rng.range(0, self.config.tick_ms.max(1));
        let sm = S::create(self.config.leader_sync);
        let node = match RaftNode::open(config, disk.clone(), sm, start) {
            Ok(mut node) => {
                node.set_clock(Arc::clone(&self.clock) as Arc<dyn Clock>);
                Some(node)
            }
            Err(e) => self.fail(&format!("member {id} failed to open: {e}")),
        };
        let boots = self.slots.get(&id).map_or(0, |s| s.boots + 1);
        self.slots.insert(
            id,
            Slot {
                node,
                disk,
                next_tick: self.now + phase + 1,
                boots,
            },
        );
        self.flush_readies();
    }

    /// Adds a member that will join (empty disk; it waits for the leader to add it).
    pub fn add_joiner(&mut self, id: u64) {
        let disk = MemDisk::with_segment_records(self.config.segment_records);
        self.start_member(id, disk, ClusterStart::Join);
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.config.seed
    }

    /// Virtual time now (ms since the start of the run).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The members' wall clock now (ms since the UNIX epoch; virtual).
    pub fn unix_ms(&self) -> u64 {
        self.clock.now_unix_ms()
    }

    /// All member ids (running or crashed).
    pub fn ids(&self) -> Vec<u64> {
        self.slots.keys().copied().collect()
    }

    /// Ids of members whose node is up and running.
    pub fn running_ids(&self) -> Vec<u64> {
        self.slots
            .iter()
            .filter(|(_, s)| s.node.as_ref().is_some_and(|n| n.lifecycle().is_running()))
            .map(|(id, _)| *id)
            .collect()
    }

    /// A member's node, if it is up.
    pub fn node(&self, id: u64) -> Option<&SimNode<S>> {
        self.slots.get(&id)?.node.as_ref()
    }

    /// A member's node, mutably, if it is up.
    pub fn node_mut(&mut self, id: u64) -> Option<&mut SimNode<S>> {
        self.slots.get_mut(&id)?.node.as_mut()
    }

    /// A member's disk.
    pub fn disk(&self, id: u64) -> Option<&MemDisk> {
        self.slots.get(&id).map(|s| &s.disk)
    }

    /// The running leader with the highest term, if any.
    pub fn leader(&self) -> Option<u64> {
        self.slots
            .iter()
            .filter_map(|(id, s)| s.node.as_ref().map(|n| (*id, n)))
            .filter(|(_, n)| n.lifecycle().is_running() && n.is_leader())
            .max_by_key(|(_, n)| n.term())
            .map(|(id, _)| id)
    }

    /// Panics with the seed.
    pub fn fail(&self, why: &str) -> ! {
        panic!("sim failure (seed {}): {why}", self.config.seed);
    }

    fn record(&mut self, event: TraceEvent) {
        if self.trace.len() == TRACE_LEN {
            self.trace.pop_front();
        }
        self.trace.push_back((self.now, event));
    }

    /// Processes the next event; false if there is none.
    pub fn step(&mut self) -> bool {
        let next_message = self.queue.keys().next().map(|(t, _)| *t);
        let next_tick = self
            .slots
            .iter()
            .filter(|(_, s)| s.node.is_some())
            .map(|(id, s)| (s.next_tick, *id))
            .min();
        let deliver = match (next_message, next_tick) {
            (None, None) => return false,
            (Some(m), Some((t, _))) => m <= t,
            (Some(_), None) => true,
            (None, Some(_)) => false,
        };
        self.events += 1;
        if deliver {
            let Some(((time, _), message)) = self.queue.pop_first() else {
                return false;
            };
            self.set_now(time);
            self.deliver(message);
        } else if let Some((time, id)) = next_tick {
            self.set_now(time);
            let tick_ms = self.config.tick_ms.max(1);
            if let Some(slot) = self.slots.get_mut(&id) {
                slot.next_tick = time + tick_ms;
                if let Some(node) = slot.node.as_mut() {
                    node.tick();
                }
            }
            self.record(TraceEvent::Tick(id));
        }
        self.flush_readies();
        self.observe_leaders();
        true
    }

    fn set_now(&mut self, time: u64) {
        self.now = self.now.max(time);
        self.clock.now_ms.store(self.now, Ordering::Relaxed);
    }

    fn deliver(&mut self, message: Message) {
        let (from, to) = (message.from, message.to);
        let kind = message.get_msg_type();
        let blocked = self.blocked.contains(&(from, to));
        let lost = !blocked && self.rng.chance(self.config.drop_per_mille, 1000);
        let mut removed_sender = false;
        let delivered = if blocked || lost {
            false
        } else {
            match self.slots.get_mut(&to).and_then(|s| s.node.as_mut()) {
                Some(node) => match node.step(message) {
                    Ok(()) => true,
                    Err(NodeError::PeerRemoved { .. }) => {
                        removed_sender = true;
                        true
                    }
                    Err(NodeError::Stopped { .. }) => false,
                    Err(_) => true,
                },
                None => false,
            }
        };
        self.record(TraceEvent::Deliver {
            from,
            to,
            kind,
            dropped: !delivered,
        });
        if let Some(sender) = self.slots.get_mut(&from).and_then(|s| s.node.as_mut()) {
            if removed_sender {
                sender.notify_removed();
            }
            if kind == MessageType::MsgSnapshot {
                let status = if delivered {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                sender.report_snapshot(to, status);
            }
            if blocked {
                sender.report_unreachable(to);
            }
        }
    }

    fn schedule(&mut self, messages: Vec<Message>) {
        for message in messages {
            let copies = if self.rng.chance(self.config.duplicate_per_mille, 1000) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let delay = self.rng.range(
                    self.config.min_delay_ms.max(1),
                    self.config.max_delay_ms.max(1) + 1,
                );
                self.next_seq += 1;
                self.queue
                    .insert((self.now + delay, self.next_seq), message.clone());
            }
        }
    }

    /// Lets every member with work handle its `Ready`s.
    pub fn flush_readies(&mut self) {
        for _round in 0..1000 {
            let mut outbox = Vec::new();
            let mut busy = false;
            for slot in self.slots.values_mut() {
                if let Some(node) = slot.node.as_mut() {
                    if node.has_ready() {
                        busy = true;
                        // A fatal error stops the member; the checks notice.
                        let _ = node.process_ready(&mut outbox);
                    }
                }
            }
            self.schedule(outbox);
            if !busy {
                return;
            }
        }
        self.fail("members never stopped producing Readys");
    }

    fn observe_leaders(&mut self) {
        for (id, slot) in &self.slots {
            let Some(node) = &slot.node else { continue };
            if !node.lifecycle().is_running() || !node.is_leader() {
                continue;
            }
            let term = node.term();
            match self.checker.leaders.get(&term) {
                Some((other, _)) if other != id => {
                    let why =
                        format!("election safety: members {other} and {id} both lead term {term}");
                    self.fail(&why);
                }
                Some(_) => {}
                None => {
                    self.checker.leaders.insert(term, (*id, self.events));
                }
            }
        }
    }

    /// Runs for `ms` virtual milliseconds.
    pub fn run_for(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.peek_time().is_some_and(|t| t <= end) {
            self.step();
        }
        self.set_now(end);
    }

    fn peek_time(&self) -> Option<u64> {
        let message = self.queue.keys().next().map(|(t, _)| *t);
        let tick = self
            .slots
            .values()
            .filter(|s| s.node.is_some())
            .map(|s| s.next_tick)
            .min();
        match (message, tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs until `done` holds (checked after every event) or `max_ms` pass; returns
    /// whether it holds.
    pub fn run_until(&mut self, max_ms: u64, mut done: impl FnMut(&Cluster<S>) -> bool) -> bool {
        let end = self.now + max_ms;
        loop {
            if done(self) {
                return true;
            }
            match self.peek_time() {
                Some(t) if t <= end => {
                    self.step();
                }
                _ => {
                    self.set_now(end);
                    return done(self);
                }
            }
        }
    }

    /// Runs until some member leads (panics after `max_ms`). Returns its id.
    pub fn wait_for_leader(&mut self, max_ms: u64) -> u64 {
        if !self.run_until(max_ms, |c| c.stable_leader().is_some()) {
            self.fail("no leader elected");
        }
        match self.stable_leader() {
            Some(id) => id,
            None => self.fail("no leader elected"),
        }
    }

    /// The leader, once it has committed an entry of its term (so it can serve reads).
    fn stable_leader(&self) -> Option<u64> {
        let id = self.leader()?;
        let node = self.node(id)?;
        let status = node.status();
        let committed_own_term = node
            .storage()
            .term_of(status.commit)
            .is_some_and(|t| t == status.term);
        committed_own_term.then_some(id)
    }

    /// Runs until the completion resolves (at most `max_ms`); a completion that does not
    /// resolve gives [`NodeError::TimedOut`].
    pub fn complete<T>(
        &mut self,
        mut completion: Completion<T>,
        max_ms: u64,
    ) -> Result<T, NodeError> {
        self.run_until(max_ms, |_| completion.is_ready());
        completion.try_take().unwrap_or_else(|| {
            Err(NodeError::TimedOut {
                what: format!("a simulated request ({max_ms} virtual ms)"),
            })
        })
    }

    /// Records an acknowledged write (index and command) for [`Cluster::converge`].
    pub fn note_acked(&mut self, index: u64, command: &[u8]) {
        self.checker.acked.insert(index, fnv1a(command));
    }

    /// Number of acknowledged writes recorded.
    pub fn acked_count(&self) -> usize {
        self.checker.acked.len()
    }

    /// Cuts the network into groups: messages between different groups are dropped
    /// (members in no group can talk to no one).
    pub fn partition(&mut self, groups: &[&[u64]]) {
        let ids = self.ids();
        let group_of = |id: u64| groups.iter().position(|g| g.contains(&id));
        self.blocked.clear();
        for &a in &ids {
            for &b in &ids {
                if a != b && (group_of(a).is_none() || group_of(a) != group_of(b)) {
                    self.blocked.insert((a, b));
                }
            }
        }
        self.record(TraceEvent::Partition);
    }

    /// Cuts `id` off from everyone.
    pub fn isolate(&mut self, id: u64) {
        for other in self.ids() {
            if other != id {
                self.blocked.insert((id, other));
                self.blocked.insert((other, id));
            }
        }
        self.record(TraceEvent::Partition);
    }

    /// Ends every partition.
    pub fn heal(&mut self) {
        self.blocked.clear();
        self.record(TraceEvent::Heal);
    }

    /// Crashes member `id`: its node is dropped, its disk kept.
    pub fn crash(&mut self, id: u64) {
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.node = None;
        }
        self.record(TraceEvent::Crash(id));
    }

    /// Restarts a crashed member from its disk.
    pub fn restart(&mut self, id: u64) {
        let Some(slot) = self.slots.get(&id) else {
            return;
        };
        if slot.node.is_some() {
            return;
        }
        let disk = slot.disk.clone();
        self.record(TraceEvent::Restart(id));
        self.start_member(id, disk, ClusterStart::Join);
    }

    /// Makes member `id`'s next disk appends fail (a failing fsync): the member stops.
    pub fn fail_disk(&mut self, id: u64, appends: u32) {
        if let Some(slot) = self.slots.get(&id) {
            slot.disk.inject(MemDiskFault::FailAppends(appends));
        }
    }

    /// Checks the safety invariants (see the module documentation); panics with the seed
    /// on a violation.
    pub fn check_invariants(&mut self) {
        let mut logs: Vec<LogView> = Vec::new();
        for (id, slot) in &self.slots {
            let Some(node) = &slot.node else { continue };
            let storage = node.storage();
            let commit = node.status().commit.min(storage.last());
            // The whole log: entries still in memory and those read back from the disk.
            let log = match storage.entries_in(storage.first(), storage.last() + 1, None) {
                Ok(log) => log.unwrap_or_default(),
                Err(e) => self.fail(&format!("member {id} cannot read its own log: {e}")),
            };
            let entries = log
                .iter()
                .map(|entry| {
                    (
                        entry.index,
                        EntryId {
                            term: entry.term,
                            digest: entry_digest(entry),
                        },
                    )
                })
                .collect();
            logs.push((*id, commit, entries));
        }
        // Committed entries never change.
        for (id, commit, entries) in &logs {
            for (index, entry) in entries.iter().filter(|(i, _)| i <= commit) {
                match self.checker.committed.get(index).map(|(e, _)| e) {
                    Some(known) if known != entry => {
                        let why = format!(
                            "committed entry {index} changed on member {id}: {known:?} vs {entry:?}"
                        );
                        self.fail(&why);
                    }
                    Some(_) => {}
                    None => {
                        self.checker.committed.insert(*index, (*entry, self.events));
                    }
                }
            }
        }
        // Log matching.
        for (a, (id_a, _, log_a)) in logs.iter().enumerate() {
            for (id_b, _, log_b) in logs.iter().skip(a + 1) {
                let map_b: BTreeMap<u64, EntryId> = log_b.iter().copied().collect();
                let last_match = log_a
                    .iter()
                    .rev()
                    .find(|(i, e)| map_b.get(i).is_some_and(|b| b.term == e.term))
                    .map(|(i, _)| *i);
                if let Some(last_match) = last_match {
                    for (index, entry) in log_a.iter().filter(|(i, _)| *i <= last_match) {
                        if let Some(other) = map_b.get(index) {
                            if other != entry {
                                let why = format!(
                                    "log matching: members {id_a} and {id_b} agree at {last_match} \
                                     but differ at {index}"
                                );
                                self.fail(&why);
                            }
                        }
                    }
                }
            }
        }
        // Leader completeness: a leader holds every entry committed before it became
        // leader. (Seen committed at event k < the event it was first seen leading means
        // committed before it led; later commits by later leaders are not its business.)
        let leaders: Vec<(u64, u64)> = self
            .slots
            .iter()
            .filter_map(|(id, s)| s.node.as_ref().map(|n| (*id, n)))
            .filter(|(_, n)| n.lifecycle().is_running() && n.is_leader())
            .map(|(id, n)| (id, n.term()))
            .collect();
        for (leader, term) in leaders {
            let Some((_, since)) = self.checker.leaders.get(&term).copied() else {
                continue;
            };
            if let Some((_, _, entries)) = logs.iter().find(|(id, _, _)| *id == leader) {
                let held: BTreeMap<u64, EntryId> = entries.iter().copied().collect();
                let first = entries.first().map_or(u64::MAX, |(i, _)| *i);
                let missing = self
                    .checker
                    .committed
                    .range(first..)
                    .find(|(i, (e, seen))| *seen < since && held.get(i) != Some(e))
                    .map(|(i, _)| *i);
                if let Some(index) = missing {
                    let why =
                        format!("leader {leader} (term {term}) lacks committed entry {index}");
                    self.fail(&why);
                }
            }
        }
        // State machine safety.
        let histories: Vec<(u64, Vec<(u64, u64)>)> = self
            .slots
            .iter()
            .filter_map(|(id, s)| {
                s.node
                    .as_ref()
                    .and_then(|n| n.state_machine().applied_history())
                    .map(|h| (*id, h.to_vec()))
            })
            .collect();
        for (id, history) in histories {
            let mut previous = 0;
            for (index, digest) in history {
                if index <= previous {
                    let why = format!("member {id} applied index {index} after {previous}");
                    self.fail(&why);
                }
                previous = index;
                match self.checker.applied.get(&index) {
                    Some(known) if *known != digest => {
                        let why = format!(
                            "members applied different commands at index {index} (member {id})"
                        );
                        self.fail(&why);
                    }
                    Some(_) => {}
                    None => {
                        self.checker.applied.insert(index, digest);
                    }
                }
            }
        }
    }

    /// Heals the network, restarts nothing, and runs until every running member has
    /// applied everything the leader committed and nothing is in flight; then checks the
    /// invariants, that all members' state hashes are equal, and that every acknowledged
    /// write is in every member's history. Returns the common state hash.
    pub fn converge(&mut self, max_ms: u64) -> u64 {
        self.heal();
        let converged = self.run_until(max_ms, |c| c.converged());
        self.check_invariants();
        if !converged {
            let statuses: Vec<String> = self
                .running_ids()
                .iter()
                .filter_map(|id| self.node(*id))
                .map(|n| {
                    let s = n.status();
                    format!(
                        "{}: {:?} term {} commit {} applied {} last {} hash {:x}",
                        s.id,
                        s.role,
                        s.term,
                        s.commit,
                        s.applied,
                        s.last_index,
                        n.state_hash()
                    )
                })
                .collect();
            let why = format!("did not converge: {statuses:?}");
            self.fail(&why);
        }
        // Members of the current configuration (a removed member or a joiner that was
        // never added may still run; they are not part of the replicated state).
        let members = self.current_members();
        let running: Vec<u64> = self
            .running_ids()
            .into_iter()
            .filter(|id| members.contains(id))
            .collect();
        let hashes: BTreeSet<u64> = running
            .iter()
            .filter_map(|id| self.node(*id))
            .map(|n| n.state_hash())
            .collect();
        if hashes.len() != 1 {
            self.fail(&format!(
                "state hashes differ after convergence: {hashes:x?}"
            ));
        }
        for id in running {
            let Some(node) = self.node(id) else { continue };
            let Some(history) = node.state_machine().applied_history() else {
                continue;
            };
            let history: BTreeMap<u64, u64> = history.iter().copied().collect();
            let lost = self
                .checker
                .acked
                .iter()
                .find(|(index, digest)| history.get(index) != Some(digest))
                .map(|(index, _)| *index);
            if let Some(index) = lost {
                let why = format!("member {id} lacks the acknowledged write at index {index}");
                self.fail(&why);
            }
        }
        hashes.into_iter().next().unwrap_or(0)
    }

    /// Voters and learners of the current configuration, as the leader sees it (empty
    /// without a leader).
    pub fn current_members(&self) -> BTreeSet<u64> {
        self.leader()
            .and_then(|id| self.node(id))
            .map(|n| {
                let status = n.status();
                status.voters.into_iter().chain(status.learners).collect()
            })
            .unwrap_or_default()
    }

    fn converged(&self) -> bool {
        let Some(leader) = self.stable_leader() else {
            return false;
        };
        let Some(leader_node) = self.node(leader) else {
            return false;
        };
        let target = leader_node.status();
        if target.commit != target.last_index {
            return false;
        }
        let voters: BTreeSet<u64> = target
            .voters
            .iter()
            .chain(&target.learners)
            .copied()
            .collect();
        let mut hash = None;
        for id in self.running_ids() {
            let Some(node) = self.node(id) else {
                return false;
            };
            if !voters.contains(&id) {
                continue;
            }
            let status = node.status();
            if status.applied != target.commit || status.commit != target.commit {
                return false;
            }
            let h = node.state_hash();
            if *hash.get_or_insert(h) != h {
                return false;
            }
        }
        // Every current member that is up must be running (crashed ones are skipped).
        true
    }

    /// Events processed so far.
    pub fn events(&self) -> u64 {
        self.events
    }
}

/// Constructors and key/value helpers of the default simulated cluster.
impl Cluster<KvMachine> {
    /// A new cluster of `members` founding members with ids `1..=members`.
    pub fn new(config: SimConfig, members: u64) -> Self {
        Cluster::create(config, members)
    }

    /// A new cluster whose founding members have the given ids.
    pub fn with_members(config: SimConfig, ids: &[u64]) -> Self {
        Cluster::create_with_members(config, ids)
    }

    /// The metadata the simulator gives member `id` (see [`member_info`]).
    pub fn member_info(id: u64) -> MemberInfo {
        member_info(id)
    }

    /// Proposes `key = value` on member `on`.
    pub fn put(&mut self, on: u64, key: &str, value: &str) -> Completion<Applied<Option<String>>> {
        let command = KvCommand::Put {
            key: key.to_string(),
            value: value.to_string(),
        }
        .encode();
        match self.node_mut(on) {
            Some(node) => node.propose(command),
            None => Completion::ready(Err(NodeError::Stopped {
                id: on,
                reason: "crashed".into(),
            })),
        }
    }

    /// Proposes `key = value` on member `on` and waits (at most `max_ms`); on success the
    /// write is recorded as acknowledged (checked by [`Cluster::converge`]).
    pub fn put_and_wait(
        &mut self,
        on: u64,
        key: &str,
        value: &str,
        max_ms: u64,
    ) -> Result<Applied<Option<String>>, NodeError> {
        let command = KvCommand::Put {
            key: key.to_string(),
            value: value.to_string(),
        }
        .encode();
        let digest = fnv1a(&command);
        let completion = match self.node_mut(on) {
            Some(node) => node.propose(command),
            None => {
                return Err(NodeError::Stopped {
                    id: on,
                    reason: "crashed".into(),
                })
            }
        };
        let result = self.complete(completion, max_ms);
        if let Ok(applied) = &result {
            self.checker.acked.insert(applied.index, digest);
        }
        result
    }

    /// Reads `key` on member `on`.
    pub fn get(
        &mut self,
        on: u64,
        key: &str,
        consistency: ReadConsistency,
    ) -> Completion<Option<String>> {
        let key = key.to_string();
        match self.node_mut(on) {
            Some(node) => node.read(consistency, move |kv: &KvMachine| kv.get(&key).cloned()),
            None => Completion::ready(Err(NodeError::Stopped {
                id: on,
                reason: "crashed".into(),
            })),
        }
    }
}

impl<S: SimMachine> Drop for Cluster<S> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "sim: cluster with seed {} failed at virtual time {} ms after {} events \
                 (re-run with SIM_SEED={})",
                self.config.seed, self.now, self.events, self.config.seed
            );
            eprintln!("sim: last events:");
            for (time, event) in &self.trace {
                eprintln!("  {time:>8} ms  {event}");
            }
        }
    }
}

/// What [`random_run`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Writes acknowledged.
    pub acked: usize,
    /// Crashes injected.
    pub crashes: u64,
    /// Partitions injected.
    pub partitions: u64,
    /// Membership changes proposed (adds and removals).
    pub membership_changes: u64,
    /// Events processed.
    pub events: u64,
    /// The final common state hash.
    pub hash: u64,
}

/// One randomized run: a cluster of `members` under a nemesis (crashes, restarts,
/// partitions, message loss, members added and removed — the leader included) for
/// `duration_ms` virtual ms while clients write, then heal, restart everyone and converge. Checks the invariants throughout; panics with the seed on
/// a violation.
pub fn random_run(seed: u64, members: u64, duration_ms: u64) -> RunReport {
    let mut config = SimConfig::new(seed);
    config.drop_per_mille = 20;
    config.duplicate_per_mille = 10;
    config.node.snapshot_interval = 40;
    config.node.snapshot_catchup_entries = 10;
    let mut cluster = Cluster::new(config, members);
    let mut nemesis = SplitMix64::new(seed ^ 0x5eed_cafe);
    let mut report = RunReport {
        seed,
        ..RunReport::default()
    };
    let mut pending: Vec<PendingWrite> = Vec::new();
    let mut membership: Vec<MembershipChange> = Vec::new();
    let mut next_id = members + 1;
    let mut counter = 0u64;
    let end = cluster.now() + duration_ms;
    while cluster.now() < end {
        let ids = cluster.ids();
        cluster.run_for(nemesis.range(5, 40));
        membership.retain_mut(|change| change.try_take().is_none());
        // Collect answers.
        let mut still = Vec::new();
        for (command, mut completion) in pending.drain(..) {
            match completion.try_take() {
                Some(Ok(applied)) => cluster.note_acked(applied.index, &command),
                Some(Err(_)) => {}
                None => still.push((command, completion)),
            }
        }
        pending = still;
        // Clients write to random members.
        for _ in 0..nemesis.range(0, 4) {
            let on = ids[nemesis.range(0, ids.len() as u64) as usize];
            counter += 1;
            let command = KvCommand::Put {
                key: format!("k{}", nemesis.range(0, 8)),
                value: format!("v{counter}"),
            }
            .encode();
            if let Some(node) = cluster.node_mut(on) {
                let completion = node.propose(command.clone());
                pending.push((command, completion));
            }
        }
        // The nemesis.
        match nemesis.range(0, 100) {
            0..=3 => {
                let victim = ids[nemesis.range(0, ids.len() as u64) as usize];
                cluster.crash(victim);
                report.crashes += 1;
            }
            4..=9 => {
                for id in &ids {
                    cluster.restart(*id);
                }
            }
            10..=12 => {
                let cut = nemesis.range(1, ids.len() as u64) as usize;
                let (a, b) = ids.split_at(cut);
                cluster.partition(&[a, b]);
                report.partitions += 1;
            }
            13..=14 => {
                let victim = ids[nemesis.range(0, ids.len() as u64) as usize];
                cluster.isolate(victim);
                report.partitions += 1;
            }
            15..=22 => cluster.heal(),
            23..=24 if membership.is_empty() => {
                // Grow back to `members + 1` voters, or shrink (possibly removing the leader).
                if let Some(leader) = cluster.leader() {
                    let voters = cluster
                        .node(leader)
                        .map(|n| n.status().voters)
                        .unwrap_or_default();
                    let change = if (voters.len() as u64) <= members {
                        cluster.add_joiner(next_id);
                        let info = member_info(next_id);
                        next_id += 1;
                        cluster
                            .node_mut(leader)
                            .map(|n| n.add_member(next_id - 1, info))
                    } else {
                        let victim = voters[nemesis.range(0, voters.len() as u64) as usize];
                        cluster.node_mut(leader).map(|n| n.remove_member(victim))
                    };
                    membership.extend(change);
                    report.membership_changes += 1;
                }
            }
            _ => {}
        }
        if nemesis.chance(1, 4) {
            cluster.check_invariants();
        }
    }
    for id in cluster.ids() {
        cluster.restart(id);
    }
    let mut config_drop = 0;
    std::mem::swap(&mut cluster.config.drop_per_mille, &mut config_drop);
    cluster.config.duplicate_per_mille = 0;
    report.hash = cluster.converge(30_000);
    // Answers that arrived while converging.
    for (command, mut completion) in pending {
        if let Some(Ok(applied)) = completion.try_take() {
            cluster.note_acked(applied.index, &command);
        }
    }
    cluster.converge(1_000);
    report.acked = cluster.acked_count();
    report.events = cluster.events();
    report
}
