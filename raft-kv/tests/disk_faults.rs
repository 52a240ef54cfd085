//! Disk faults under a replicated raft-kv cluster: three [`RaftNode`]s over [`WalDisk`]s,
//! each on its own [`FaultFs`] (an in-memory filesystem that knows what was synced),
//! driven step by step from one seed with an in-test network (random message loss).
//!
//! - **Crashes that drop unsynced writes** (LazyFS-style): a member, or every member at
//!   once, loses power — each file keeps what was synced plus a seeded random prefix of
//!   the rest, torn at any byte — and restarts from what survived. After the last restart
//!   the members must converge, and every write any member acknowledged must be in every
//!   member's applied history at the index it was acknowledged at.
//! - **A full disk** (ENOSPC): the leader's filesystem stops growing. The member must
//!   stop (a failed lifecycle naming the error), the others go on, and once space
//!   returns it restarts, catches up and loses nothing acknowledged.
//!
//! Every run prints its seed; replay one with `DISK_FAULT_SEED=<seed>`.

use std::collections::HashMap;
use std::sync::Arc;

use raft::eraftpb::Message;
use raft_kv::node::rng::SplitMix64;
use raft_kv::node::{
    fnv1a, Applied, ClusterStart, Completion, Lifecycle, MemberInfo, NodeConfig, RaftNode,
};
use raft_kv::sim::{KvCommand, KvMachine};
use raft_kv::storage::{WalDisk, WalDiskOptions};
use wal::{Crash, FaultFs};

type Node = RaftNode<KvMachine, WalDisk>;

const IDS: [u64; 3] = [1, 2, 3];

struct Member {
    id: u64,
    fs: Arc<FaultFs>,
    node: Option<Node>,
    boots: u64,
}

fn open(id: u64, fs: &Arc<FaultFs>, seed: u64) -> Result<Node, String> {
    let disk = WalDisk::open(
        format!("/m{id}/wal"),
        format!("/m{id}/snap"),
        WalDiskOptions {
            segment_size: 16 * 1024,
            keep_snapshots: 2,
            fs: Arc::clone(fs) as Arc<dyn wal::FileSystem>,
        },
    )
    .map_err(|e| e.to_string())?;
    let mut config = NodeConfig::new(id);
    config.seed = Some(seed);
    config.snapshot_interval = 40;
    config.snapshot_catchup_entries = 10;
    config.sync_interval_ticks = 0;
    config.request_timeout_ticks = 40;
    let members = IDS
        .iter()
        .map(|&id| {
            (
                id,
                MemberInfo {
                    name: format!("m{id}"),
                    peer_urls: vec![],
                    client_urls: vec![],
                },
            )
        })
        .collect();
    RaftNode::open(
        config,
        disk,
        KvMachine::new(false),
        ClusterStart::New(members),
    )
    .map_err(|e| e.to_string())
}

struct Cluster {
    members: Vec<Member>,
    rng: SplitMix64,
    in_flight: Vec<Message>,
    pending: Vec<(Completion<Applied<Option<String>>>, u64)>,
    /// (index, fnv1a(command)) of every acknowledged write.
    acked: Vec<(u64, u64)>,
    next_value: u64,
    seed: u64,
    loss_per_mille: u64,
}

impl Cluster {
    fn new(seed: u64) -> Cluster {
        let members = IDS
            .iter()
            .map(|&id| {
                let fs = Arc::new(FaultFs::new());
                let node = open(id, &fs, seed ^ id).expect("open member");
                Member {
                    id,
                    fs,
                    node: Some(node),
                    boots: 0,
                }
            })
            .collect();
        Cluster {
            members,
            rng: SplitMix64::new(seed),
            in_flight: Vec::new(),
            pending: Vec::new(),
            acked: Vec::new(),
            next_value: 0,
            seed,
            loss_per_mille: 50,
        }
    }

    /// One round: tick everyone, handle Readies, deliver messages, collect answers.
    fn step(&mut self) {
        for m in &mut self.members {
            if let Some(node) = &mut m.node {
                node.tick();
            }
        }
        for _ in 0..3 {
            let mut outbox: Vec<Message> = Vec::new();
            for m in &mut self.members {
                if let Some(node) = &mut m.node {
                    while node.has_ready() && node.lifecycle().is_running() {
                        if node.process_ready(&mut outbox).is_err() {
                            break;
                        }
                    }
                }
            }
            outbox.append(&mut self.in_flight);
            for message in outbox {
                if self.rng.range(0, 1000) < self.loss_per_mille {
                    continue;
                }
                if let Some(node) = self
                    .members
                    .iter_mut()
                    .find(|m| m.id == message.to)
                    .and_then(|m| m.node.as_mut())
                {
                    let _ = node.step(message);
                }
            }
        }
        let mut still = Vec::new();
        for (mut completion, hash) in self.pending.drain(..) {
            match completion.try_take() {
                Some(Ok(applied)) => self.acked.push((applied.index, hash)),
                Some(Err(_)) => {}
                None => still.push((completion, hash)),
            }
        }
        self.pending = still;
    }

    fn propose(&mut self) {
        let running: Vec<usize> = (0..self.members.len())
            .filter(|&i| {
                self.members[i]
                    .node
                    .as_ref()
                    .is_some_and(|n| n.lifecycle().is_running())
            })
            .collect();
        if running.is_empty() {
            return;
        }
        let i = running[self.rng.range(0, running.len() as u64) as usize];
        self.next_value += 1;
        let command = KvCommand::Put {
            key: format!("k{}", self.rng.range(0, 5)),
            value: format!("v{}", self.next_value),
        }
        .encode();
        let hash = fnv1a(&command);
        if let Some(node) = &mut self.members[i].node {
            let completion = node.propose(command);
            self.pending.push((completion, hash));
        }
    }

    /// Power loss on member `i`: drop the node, keep a seeded prefix of unsynced bytes.
    fn crash(&mut self, i: usize) {
        self.members[i].node = None;
        let mode = Crash::Seeded(self.rng.next_u64());
        self.members[i].fs.crash(mode);
    }

    fn restart(&mut self, i: usize) {
        let m = &mut self.members[i];
        m.boots += 1;
        let node = open(m.id, &m.fs, self.seed ^ m.id ^ (m.boots << 32))
            .unwrap_or_else(|e| panic!("seed {}: member {} cannot restart: {e}", self.seed, m.id));
        m.node = Some(node);
    }

    /// Runs until every member applied the same index with the same state.
    fn converge(&mut self) {
        self.loss_per_mille = 0;
        for _ in 0..3000 {
            self.step();
            let nodes: Vec<&Node> = self
                .members
                .iter()
                .filter_map(|m| m.node.as_ref())
                .collect();
            let leader = nodes.iter().any(|n| n.is_leader());
            let applied: Vec<u64> = nodes.iter().map(|n| n.applied_index()).collect();
            let last = nodes.iter().map(|n| n.storage().last()).max().unwrap_or(0);
            if leader
                && nodes.len() == self.members.len()
                && applied.iter().all(|&a| a == applied[0] && a >= last)
                && self.pending.is_empty()
            {
                let hashes: Vec<u64> = nodes.iter().map(|n| n.state_hash()).collect();
                assert!(
                    hashes.iter().all(|&h| h == hashes[0]),
                    "seed {}: members applied {} but their states differ",
                    self.seed,
                    applied[0]
                );
                return;
            }
        }
        panic!("seed {}: the cluster did not converge", self.seed);
    }

    fn check_acked(&self) {
        for m in &self.members {
            let node = m.node.as_ref().expect("running");
            let history: HashMap<u64, u64> =
                node.state_machine().history().iter().copied().collect();
            for &(index, hash) in &self.acked {
                assert_eq!(
                    history.get(&index),
                    Some(&hash),
                    "seed {}: member {} lost the write acknowledged at index {index}",
                    self.seed,
                    m.id
                );
            }
        }
    }
}

fn seeds(fixed: &[u64]) -> Vec<u64> {
    if let Some(seed) = std::env::var("DISK_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let mut seeds = fixed.to_vec();
    seeds.push(SplitMix64::from_entropy().next_u64() % 1_000_000);
    seeds
}

#[test]
fn crashes_that_drop_unsynced_writes_lose_nothing_acknowledged() {
    for seed in seeds(&[1, 2, 3, 4, 5, 6, 7, 8]) {
        println!("disk_faults crash: seed {seed} (replay: DISK_FAULT_SEED={seed})");
        let mut cluster = Cluster::new(seed);
        let (mut crashes, mut all_crashes) = (0, 0);
        for round in 0..1500 {
            cluster.step();
            if cluster.rng.chance(1, 2) {
                cluster.propose();
            }
            if round % 50 == 49 {
                let roll = cluster.rng.range(0, 10);
                if roll < 2 {
                    for i in 0..cluster.members.len() {
                        cluster.crash(i);
                    }
                    for i in 0..cluster.members.len() {
                        cluster.restart(i);
                    }
                    all_crashes += 1;
                } else if roll < 7 {
                    let i = cluster.rng.range(0, 3) as usize;
                    cluster.crash(i);
                    for _ in 0..cluster.rng.range(0, 30) {
                        cluster.step();
                        cluster.propose();
                    }
                    cluster.restart(i);
                    crashes += 1;
                }
            }
        }
        cluster.converge();
        cluster.check_acked();
        println!(
            "  {} writes acknowledged, {crashes} single crashes, {all_crashes} whole-cluster crashes, all present",
            cluster.acked.len()
        );
        assert!(
            cluster.acked.len() > 100,
            "seed {seed}: too few writes acknowledged"
        );
    }
}

#[test]
fn a_full_disk_stops_the_member_and_it_recovers_when_space_returns() {
    for seed in seeds(&[11, 12, 13]) {
        println!("disk_faults enospc: seed {seed} (replay: DISK_FAULT_SEED={seed})");
        let mut cluster = Cluster::new(seed);
        cluster.loss_per_mille = 0;
        for _ in 0..200 {
            cluster.step();
            cluster.propose();
        }
        let leader = (0..3)
            .find(|&i| {
                cluster.members[i]
                    .node
                    .as_ref()
                    .is_some_and(|n| n.is_leader())
            })
            .expect("a leader");
        // Fill the leader's disk: nothing may grow any more.
        let fs = Arc::clone(&cluster.members[leader].fs);
        let used: u64 = fs
            .paths()
            .iter()
            .map(|p| fs.contents(p).map_or(0, |c| c.len() as u64))
            .sum();
        fs.set_capacity(Some(used));
        let mut failure = None;
        for _ in 0..2000 {
            cluster.step();
            cluster.propose();
            if let Some(Lifecycle::Failed(e)) = cluster.members[leader]
                .node
                .as_ref()
                .map(|n| n.lifecycle().clone())
            {
                failure = Some(e.to_string());
                break;
            }
        }
        let failure =
            failure.unwrap_or_else(|| panic!("seed {seed}: the full member never stopped"));
        println!("  the member stopped: {failure}");
        assert!(
            failure.contains("space") || failure.contains("ENOSPC") || failure.contains("28"),
            "seed {seed}: the error does not say the disk is full: {failure}"
        );
        // The others go on without it.
        let acked_before = cluster.acked.len();
        for _ in 0..300 {
            cluster.step();
            cluster.propose();
        }
        assert!(
            cluster.acked.len() > acked_before + 20,
            "seed {seed}: the majority stalled"
        );
        // Space returns; the member restarts (no crash: the process kept its page cache).
        cluster.members[leader].node = None;
        fs.set_capacity(None);
        cluster.restart(leader);
        for _ in 0..200 {
            cluster.step();
            cluster.propose();
        }
        cluster.converge();
        cluster.check_acked();
        println!(
            "  {} writes acknowledged, all present on every member",
            cluster.acked.len()
        );
    }
}
