//! The etcd v2 store replicated by the Raft layer on the simulated network: writes and
//! deterministic errors answered through raft, linearizable reads, TTL expiry driven by
//! the leader's sync command at the same log position on every member, and a leader crash
//! with snapshots in between. Each test ends by comparing the members' store hashes.

use raft_kv::node::ReadConsistency;
use raft_kv::sim::{Cluster, SimConfig};
use raft_kv::store::{Command, ErrorCode, Store, UnixNanos};

const SECOND: u64 = 1_000;

fn config(seed: u64) -> SimConfig {
    let mut config = SimConfig::from_env(seed);
    config.node.sync_interval_ticks = 5;
    config.node.snapshot_interval = 25;
    config.node.snapshot_catchup_entries = 5;
    config
}

fn set(cluster: &Cluster<Store>, key: &str, value: &str, ttl: Option<u64>) -> Command {
    let now = UnixNanos::from_millis(cluster.unix_ms());
    let mut command = Command::set(key, value, now);
    if let Command::Set { ttl: t, .. } = &mut command {
        *t = ttl;
    }
    command
}

fn propose(
    cluster: &mut Cluster<Store>,
    on: u64,
    command: &Command,
) -> Result<raft_kv::store::Event, raft_kv::store::StoreError> {
    let completion = cluster
        .node_mut(on)
        .expect("member")
        .propose(command.encode());
    let applied = cluster
        .complete(completion, 5 * SECOND)
        .unwrap_or_else(|e| panic!("raft failed (seed {}): {e}", cluster.seed()));
    applied.response
}

fn get(cluster: &mut Cluster<Store>, on: u64, key: &str) -> Option<String> {
    let key = key.to_string();
    let read = cluster.node_mut(on).expect("member").read(
        ReadConsistency::Linearizable,
        move |store: &Store| {
            store
                .get(&key, false, false)
                .ok()
                .and_then(|event| event.node.value)
        },
    );
    cluster
        .complete(read, 5 * SECOND)
        .expect("linearizable read")
}

#[test]
fn cluster_store_replicates_writes_and_answers_errors() {
    let mut cluster: Cluster<Store> = Cluster::create(config(301), 3);
    let leader = cluster.wait_for_leader(5 * SECOND);
    let follower = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("follower");
    for i in 0..40 {
        let command = set(
            &cluster,
            &format!("/dir/k{}", i % 9),
            &format!("v{i}"),
            None,
        );
        let on = if i % 2 == 0 { leader } else { follower };
        let event = propose(&mut cluster, on, &command).expect("set");
        assert_eq!(event.node.value.as_deref(), Some(format!("v{i}").as_str()));
    }
    // A deterministic failure is an answer from the store, applied the same everywhere.
    let now = UnixNanos::from_millis(cluster.unix_ms());
    let mkdir = Command::mkdir("/dir", now);
    let error = propose(&mut cluster, leader, &mkdir).expect_err("the directory exists");
    assert_eq!(error.error_code(), Some(ErrorCode::NodeExist));
    assert_eq!(
        get(&mut cluster, follower, "/dir/k4").as_deref(),
        Some("v31")
    );
    cluster.converge(10 * SECOND);
    let indexes: Vec<u64> = cluster
        .ids()
        .into_iter()
        .map(|id| cluster.node(id).expect("member").state_machine().index())
        .collect();
    assert!(indexes.iter().all(|i| *i == indexes[0]), "{indexes:?}");
}

#[test]
fn cluster_store_expires_keys_through_the_leaders_clock() {
    let mut cluster: Cluster<Store> = Cluster::create(config(311), 3);
    let leader = cluster.wait_for_leader(5 * SECOND);
    let permanent = set(&cluster, "/keep", "1", None);
    propose(&mut cluster, leader, &permanent).expect("set");
    let short = set(&cluster, "/short", "1", Some(2));
    propose(&mut cluster, leader, &short).expect("set with ttl");
    assert_eq!(get(&mut cluster, leader, "/short").as_deref(), Some("1"));
    cluster.run_for(4 * SECOND);
    cluster.converge(10 * SECOND);
    for id in cluster.ids() {
        let store = cluster.node(id).expect("member").state_machine();
        assert!(
            store.get("/short", false, false).is_err(),
            "member {id} kept an expired key"
        );
        assert!(store.get("/keep", false, false).is_ok());
        assert!(store.next_expiration().is_none());
    }
}

#[test]
fn cluster_store_survives_leader_crash_with_snapshots() {
    let mut cluster: Cluster<Store> = Cluster::create(config(321), 5);
    let leader = cluster.wait_for_leader(5 * SECOND);
    for i in 0..60 {
        let command = set(&cluster, &format!("/k{}", i % 11), &format!("a{i}"), None);
        propose(&mut cluster, leader, &command).expect("set");
    }
    cluster.crash(leader);
    let second = cluster.wait_for_leader(10 * SECOND);
    for i in 0..30 {
        let command = set(
            &cluster,
            &format!("/k{}", i % 11),
            &format!("b{i}"),
            Some(60),
        );
        propose(&mut cluster, second, &command).expect("set");
    }
    cluster.restart(leader);
    cluster.converge(10 * SECOND);
    let restarted = cluster.node(leader).expect("restarted member");
    assert!(
        restarted.status().counters.snapshots_installed + restarted.status().snapshot_index > 0
    );
    assert_eq!(
        restarted
            .state_machine()
            .get("/k7", false, false)
            .ok()
            .and_then(|e| e.node.value)
            .as_deref(),
        Some("b29")
    );
}
