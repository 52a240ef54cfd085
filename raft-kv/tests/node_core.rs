//! The deterministic node core driven by hand: batching (many proposals share one durable
//! append; many reads share one ReadIndex round), restart from a snapshot, storage failure,
//! the leader's sync command, events, and hostile input.

use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use raft::eraftpb::{Entry, Message, MessageType};
use raft_kv::node::{
    ClusterStart, Lifecycle, NodeConfig, NodeError, NodeEvent, RaftNode, ReadConsistency,
};
use raft_kv::sim::{Cluster, KvCommand, KvMachine, SimConfig};
use raft_kv::storage::{MemDisk, MemDiskFault};

const SECOND: u64 = 1_000;

fn put(key: &str, value: &str) -> Vec<u8> {
    KvCommand::Put {
        key: key.into(),
        value: value.into(),
    }
    .encode()
}

fn single(disk: &MemDisk, config: NodeConfig) -> RaftNode<KvMachine, MemDisk> {
    let members = vec![(1, Cluster::member_info(1))];
    let mut node = RaftNode::open(
        config,
        disk.clone(),
        KvMachine::new(false),
        ClusterStart::New(members),
    )
    .expect("open");
    let mut outbox = Vec::new();
    while node.has_ready() {
        node.process_ready(&mut outbox).expect("ready");
    }
    assert!(node.is_leader(), "a single member elects itself");
    node
}

fn config(id: u64) -> NodeConfig {
    let mut config = NodeConfig::new(id);
    config.seed = Some(id);
    config
}

#[test]
fn node_batches_many_proposals_into_one_durable_append() {
    let disk = MemDisk::new();
    let mut node = single(&disk, config(1));
    let before = disk.appends();
    let completions: Vec<_> = (0..100)
        .map(|i| node.propose(put(&format!("k{i}"), "v")))
        .collect();
    let mut outbox = Vec::new();
    assert!(node.process_ready(&mut outbox).expect("ready"));
    assert_eq!(
        disk.appends(),
        before + 1,
        "100 proposals, one durable append"
    );
    let mut indexes = Vec::new();
    for completion in completions {
        let applied = completion.wait().expect("applied");
        indexes.push(applied.index);
    }
    indexes.windows(2).for_each(|w| assert_eq!(w[1], w[0] + 1));
    assert_eq!(node.state_machine().len(), 100);
    // One batch for the election (term and vote), one for the 100 proposals.
    assert_eq!(node.status().counters.persisted_batches, 2);
}

#[test]
fn node_reads_share_one_read_index_round() {
    let mut cluster = Cluster::new(SimConfig::from_env(201), 3);
    let leader = cluster.wait_for_leader(5 * SECOND);
    cluster
        .put_and_wait(leader, "k", "v", 5 * SECOND)
        .expect("write");
    for on in [
        leader,
        cluster
            .ids()
            .into_iter()
            .find(|id| *id != leader)
            .expect("follower"),
    ] {
        let rounds = cluster
            .node(on)
            .expect("node")
            .status()
            .counters
            .read_rounds;
        let reads: Vec<_> = (0..50)
            .map(|_| cluster.get(on, "k", ReadConsistency::Linearizable))
            .collect();
        for read in reads {
            assert_eq!(
                cluster.complete(read, 5 * SECOND).ok().flatten().as_deref(),
                Some("v")
            );
        }
        let after = cluster
            .node(on)
            .expect("node")
            .status()
            .counters
            .read_rounds;
        assert_eq!(
            after - rounds,
            1,
            "50 reads on member {on}, one ReadIndex round"
        );
    }
    cluster.converge(5 * SECOND);
}

#[test]
fn node_followers_reads_join_the_leaders_round() {
    let mut cluster = Cluster::new(SimConfig::from_env(202), 3);
    let leader = cluster.wait_for_leader(5 * SECOND);
    cluster
        .put_and_wait(leader, "k", "v", 5 * SECOND)
        .expect("write");
    let counters = |cluster: &Cluster, id: u64| cluster.node(id).expect("node").status().counters;
    let before = counters(&cluster, leader);
    let mut reads = Vec::new();
    for on in cluster.ids() {
        for _ in 0..10 {
            reads.push(cluster.get(on, "k", ReadConsistency::Linearizable));
        }
    }
    for read in reads {
        assert_eq!(
            cluster.complete(read, 5 * SECOND).ok().flatten().as_deref(),
            Some("v")
        );
    }
    let after = counters(&cluster, leader);
    assert_eq!(
        after.remote_reads_joined - before.remote_reads_joined,
        2,
        "each follower's ReadIndex request joined a round of the leader"
    );
    assert!(
        after.read_rounds - before.read_rounds <= 2,
        "30 reads on 3 members: at most 2 heartbeat rounds on the leader, saw {}",
        after.read_rounds - before.read_rounds
    );
    cluster.converge(5 * SECOND);
}

#[test]
fn node_restart_restores_snapshot_and_replays_the_rest() {
    let disk = MemDisk::new();
    let mut config = config(1);
    config.snapshot_interval = 10;
    config.snapshot_catchup_entries = 2;
    let mut node = single(&disk, config.clone());
    let mut outbox = Vec::new();
    for i in 0..25 {
        let done = node.propose(put(&format!("k{}", i % 4), &format!("v{i}")));
        node.process_ready(&mut outbox).expect("ready");
        done.wait().expect("applied");
    }
    let status = node.status();
    assert!(status.snapshot_index >= 20, "{status:?}");
    let hash = node.state_hash();
    let applied = status.applied;
    drop(node);

    let mut node = RaftNode::open(
        config,
        disk.clone(),
        KvMachine::new(false),
        ClusterStart::Join,
    )
    .expect("reopen");
    assert_eq!(
        node.status().applied,
        status.snapshot_index,
        "Config.applied = snapshot index"
    );
    while node.has_ready() {
        node.process_ready(&mut outbox).expect("ready");
    }
    assert!(node.applied_index() >= applied);
    assert_eq!(
        node.state_machine().get("k0").map(String::as_str),
        Some("v24")
    );
    assert_eq!(node.state_hash(), hash);
}

#[test]
fn node_storage_failure_stops_the_member() {
    let disk = MemDisk::new();
    let mut node = single(&disk, config(1));
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    node.on_event(move |e| {
        if let Ok(mut events) = sink.lock() {
            events.push(e.clone());
        }
    });
    disk.inject(MemDiskFault::FailAppends(1));
    let pending = node.propose(put("k", "v"));
    let mut outbox = Vec::new();
    let error = node
        .process_ready(&mut outbox)
        .expect_err("the append fails");
    assert!(error.is_fatal(), "{error}");
    assert!(matches!(
        node.lifecycle(),
        Lifecycle::Failed(NodeError::Storage { .. })
    ));
    assert!(matches!(pending.wait(), Err(NodeError::Stopped { .. })));
    assert!(matches!(
        node.propose(put("k", "w")).wait(),
        Err(NodeError::Stopped { .. })
    ));
    let read = node.read(ReadConsistency::Serializable, |kv| kv.len());
    assert!(matches!(read.wait(), Err(NodeError::Stopped { .. })));
    assert!(!node.has_ready());
    let stopped = events
        .lock()
        .map(|e| e.iter().any(|e| matches!(e, NodeEvent::Stopped { .. })))
        .unwrap_or(false);
    assert!(stopped, "a Stopped event was emitted");
    // What was durable is still there; the unacknowledged write is not.
    drop(node);
    let node =
        RaftNode::open(config(1), disk, KvMachine::new(false), ClusterStart::Join).expect("reopen");
    assert!(node.state_machine().get("k").is_none());
}

#[test]
fn node_leader_proposes_its_clock() {
    let mut config = SimConfig::from_env(211);
    config.leader_sync = true;
    config.node.sync_interval_ticks = 5;
    let mut cluster = Cluster::new(config, 3);
    cluster.wait_for_leader(5 * SECOND);
    cluster.run_for(2 * SECOND);
    cluster.converge(5 * SECOND);
    let clocks: Vec<u64> = cluster
        .ids()
        .into_iter()
        .map(|id| {
            cluster
                .node(id)
                .expect("member")
                .state_machine()
                .last_sync_ms()
        })
        .collect();
    assert!(clocks[0] > 1_700_000_000_000, "{clocks:?}");
    assert!(clocks.iter().all(|c| *c == clocks[0]), "{clocks:?}");
}

#[test]
fn node_reports_leader_changes() {
    let mut cluster = Cluster::new(SimConfig::from_env(221), 3);
    let events = Arc::new(Mutex::new(Vec::new()));
    for id in cluster.ids() {
        let sink = Arc::clone(&events);
        cluster.node_mut(id).expect("node").on_event(move |e| {
            if let (NodeEvent::LeaderChanged { leader_id, term }, Ok(mut events)) = (e, sink.lock())
            {
                events.push((id, *leader_id, *term));
            }
        });
    }
    let leader = cluster.wait_for_leader(5 * SECOND);
    cluster.run_for(SECOND);
    let seen = events.lock().map(|e| e.clone()).unwrap_or_default();
    for id in cluster.ids() {
        assert!(
            seen.iter()
                .any(|(on, l, _)| *on == id && *l == Some(leader)),
            "member {id} saw no leader change to {leader}: {seen:?}"
        );
    }
    let status = cluster.node(leader).expect("leader").status();
    assert_eq!(status.leader_id, Some(leader));
    assert!(status.counters.leader_changes >= 1);
}

#[test]
fn node_rejects_bad_configuration_and_bootstrap() {
    let disk = MemDisk::new();
    let open = |config: NodeConfig, start: ClusterStart| {
        RaftNode::open(config, disk.clone(), KvMachine::new(false), start).map(|_| ())
    };
    assert!(matches!(
        open(NodeConfig::new(0), ClusterStart::Join),
        Err(NodeError::Config { .. })
    ));
    assert!(matches!(
        open(config(1), ClusterStart::New(vec![])),
        Err(NodeError::Config { .. })
    ));
    let not_me = vec![(2, Cluster::member_info(2))];
    assert!(matches!(
        open(config(1), ClusterStart::New(not_me)),
        Err(NodeError::Config { .. })
    ));
    let twice = vec![(1, Cluster::member_info(1)), (1, Cluster::member_info(1))];
    assert!(matches!(
        open(config(1), ClusterStart::New(twice)),
        Err(NodeError::Config { .. })
    ));
    // A member that joins waits; it has no leader and cannot propose.
    let mut joiner = RaftNode::open(
        config(5),
        MemDisk::new(),
        KvMachine::new(false),
        ClusterStart::Join,
    )
    .expect("joiner");
    assert!(matches!(
        joiner.propose(put("k", "v")).wait(),
        Err(NodeError::Dropped { .. })
    ));
    assert!(matches!(
        joiner.propose(Vec::new()).wait(),
        Err(NodeError::InvalidRequest { .. })
    ));
}

#[test]
fn node_refuses_misaddressed_messages() {
    let disk = MemDisk::new();
    let mut node = single(&disk, config(1));
    let mut message = Message::default();
    message.set_msg_type(MessageType::MsgHeartbeat);
    message.to = 2;
    message.from = 3;
    assert!(matches!(
        node.step(message.clone()),
        Err(NodeError::InvalidRequest { .. })
    ));
    message.to = 1;
    message.set_msg_type(MessageType::MsgHup);
    assert!(matches!(
        node.step(message),
        Err(NodeError::InvalidRequest { .. })
    ));
    assert!(node.lifecycle().is_running());
}

fn arbitrary_message() -> impl Strategy<Value = Message> {
    (
        0i32..19,
        0u64..6,
        0u64..40,
        0u64..40,
        0u64..8,
        0u64..40,
        proptest::collection::vec((0u64..40, 0u64..8), 0..4),
        any::<bool>(),
    )
        .prop_map(
            |(kind, from, term, index, log_term, commit, entries, reject)| {
                let mut message = Message::default();
                message.set_msg_type(
                    protobuf::ProtobufEnum::from_i32(kind).unwrap_or(MessageType::MsgAppend),
                );
                message.from = from;
                message.to = 1;
                message.term = term;
                message.index = index;
                message.log_term = log_term;
                message.commit = commit;
                message.reject = reject;
                message.set_entries(
                    entries
                        .into_iter()
                        .map(|(index, term)| Entry {
                            index,
                            term,
                            ..Entry::default()
                        })
                        .collect::<Vec<_>>()
                        .into(),
                );
                message
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Hostile or corrupt messages never take the process down: raft either handles them
    /// or the member stops with an error.
    #[test]
    fn node_survives_arbitrary_messages(messages in proptest::collection::vec(arbitrary_message(), 1..20)) {
        let mut cluster = Cluster::new(SimConfig::new(231), 3);
        cluster.wait_for_leader(5 * SECOND);
        let mut outbox = Vec::new();
        if let Some(node) = cluster.node_mut(1) {
            for message in messages {
                let _ = node.step(message);
                let _ = node.process_ready(&mut outbox);
            }
        }
    }
}

/// Three members keeping 4 entries in memory, one of them (a follower, still crashed)
/// missing `writes` writes `k0..`: returns the cluster, the leader and that follower.
fn cluster_with_a_follower_behind(seed: u64, writes: usize) -> (Cluster, u64, u64) {
    let mut config = SimConfig::from_env(seed);
    config.node.log_cache_entries = 4;
    let mut cluster = Cluster::new(config, 3);
    let leader = cluster.wait_for_leader(5 * SECOND);
    let follower = cluster
        .ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    cluster.crash(follower);
    for i in 0..writes {
        cluster
            .put_and_wait(leader, &format!("k{i}"), "v", 5 * SECOND)
            .expect("write with two of three members");
    }
    (cluster, leader, follower)
}

/// Applied entries leave the leader's memory (past `log_cache_entries`); a follower that
/// was down catches up from entries the leader reads back from its disk, not from a
/// snapshot, and ends with the same log and state.
#[test]
fn node_lagging_follower_catches_up_from_entries_read_back_from_disk() {
    let (mut cluster, leader, follower) = cluster_with_a_follower_behind(311, 120);
    let storage = cluster.node(leader).expect("leader").storage();
    assert!(
        storage.first_cached() > storage.first() + 100,
        "applied entries left memory: log {}..={}, cached from {}",
        storage.first(),
        storage.last(),
        storage.first_cached()
    );
    let reads = cluster.disk(leader).expect("disk").reads();
    cluster.restart(follower);
    cluster.converge(10 * SECOND);
    assert!(
        cluster.disk(leader).expect("disk").reads() > reads,
        "the leader read entries back for the follower"
    );
    let status = cluster.node(follower).expect("follower").status();
    assert_eq!(
        status.counters.snapshots_installed, 0,
        "caught up from the log"
    );
    assert_eq!(
        cluster
            .node(follower)
            .expect("follower")
            .state_machine()
            .get("k119")
            .map(String::as_str),
        Some("v")
    );
}

/// A leader that cannot read entries back from its disk stops (as on a failed write); the
/// others elect a new leader and the follower catches up from it.
#[test]
fn node_failed_read_back_stops_the_leader() {
    let (mut cluster, leader, follower) = cluster_with_a_follower_behind(312, 60);
    cluster
        .disk(leader)
        .expect("disk")
        .inject(MemDiskFault::FailReads(1));
    cluster.restart(follower);
    let stopped = cluster.run_until(10 * SECOND, |c| {
        c.node(leader)
            .is_some_and(|n| matches!(n.lifecycle(), Lifecycle::Failed(NodeError::Storage { .. })))
    });
    assert!(stopped, "the leader stopped on the failed read");
    let new_leader = cluster.wait_for_leader(10 * SECOND);
    assert_ne!(new_leader, leader);
    cluster
        .put_and_wait(new_leader, "after", "v", 5 * SECOND)
        .expect("the two others still make progress");
}

/// With background snapshots, the store is frozen on the raft loop and serialized on the
/// snapshot thread while later writes are applied: every snapshot file holds exactly the
/// state at its index, and a member restarts from it to the same state.
#[test]
fn node_background_snapshot_holds_the_state_at_its_index() {
    use raft_kv::node::SnapshotPayload;
    use raft_kv::storage::{WalDisk, WalDiskOptions};
    use raft_kv::store::{Command, Store, UnixNanos};

    let dir = tempfile::tempdir().expect("tempdir");
    let open_disk = || {
        WalDisk::open(
            dir.path().join("wal"),
            dir.path().join("snap"),
            WalDiskOptions::default(),
        )
        .expect("disk")
    };
    let mut config = config(1);
    config.snapshot_interval = 50;
    config.background_snapshots = true;
    let members = vec![(1, Cluster::member_info(1))];
    let mut node = RaftNode::open(
        config.clone(),
        open_disk(),
        Store::new(),
        ClusterStart::New(members),
    )
    .expect("open");
    let mut outbox = Vec::new();
    while node.has_ready() {
        node.process_ready(&mut outbox).expect("ready");
    }
    // (raft index, command) of every write, each applied in a Ready of its own.
    let mut writes = Vec::new();
    let mut i = 0u64;
    while i < 400 || node.status().counters.snapshots_created < 3 {
        assert!(i < 100_000, "no third snapshot was ever finished");
        let command = Command::set(format!("/d/k{}", i % 150), format!("v{i}"), UnixNanos(i));
        let done = node.propose(command.encode());
        node.process_ready(&mut outbox).expect("ready");
        let applied = done.wait().expect("applied");
        assert!(applied.response.is_ok());
        writes.push((applied.index, command));
        i += 1;
    }
    let hash = node.state_hash();
    drop(node);

    let snapshots =
        wal::SnapshotStore::open(dir.path().join("snap"), 3, std::sync::Arc::new(wal::StdFs))
            .expect("snapshot store");
    let metas = snapshots.metas().expect("metas");
    assert!(metas.len() >= 2, "{metas:?}");
    for info in snapshots.list().expect("list") {
        let (meta, data) = snapshots.load(&info.path).expect("load");
        let payload = SnapshotPayload::decode(&data).expect("payload");
        let restored = Store::restore(&payload.state_machine).expect("restore");
        let mut reference = Store::new();
        for (index, command) in writes.iter().filter(|(index, _)| *index <= meta.index) {
            assert!(reference.apply(command).is_ok(), "write at {index}");
        }
        assert_eq!(
            restored.hash(),
            reference.hash(),
            "snapshot {} holds the state at its index",
            meta.index
        );
    }
    let mut node =
        RaftNode::open(config, open_disk(), Store::new(), ClusterStart::Join).expect("reopen");
    while node.has_ready() {
        node.process_ready(&mut outbox).expect("ready");
    }
    assert_eq!(node.state_hash(), hash);
}
