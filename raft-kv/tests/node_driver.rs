//! Threaded members ([`NodeHandle`]) on an in-process network, persisting through the real
//! `wal` crate: replication and restart on real files, power loss on the WAL's
//! fault-injecting filesystem (acknowledged writes survive), and a failed fsync (only that
//! member stops). Liveness waits use generous wall-clock limits; nothing asserts on time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft_kv::node::{
    ClusterStart, DriverConfig, Lifecycle, NodeConfig, NodeError, NodeHandle, RaftNode,
    ReadConsistency, Role, StateMachine,
};
use raft_kv::sim::{Cluster, KvCommand, KvMachine};
use raft_kv::storage::{WalDisk, WalDiskOptions};
use raft_kv::transport::LocalNetwork;

const WAIT: Duration = Duration::from_secs(20);

struct Member {
    wal: PathBuf,
    snap: PathBuf,
    fs: Arc<dyn wal::FileSystem>,
}

struct ThreadCluster {
    network: LocalNetwork,
    members: BTreeMap<u64, Member>,
    handles: BTreeMap<u64, NodeHandle<KvMachine>>,
}

impl ThreadCluster {
    fn new(root: &Path, ids: &[u64], fs: impl Fn(u64) -> Arc<dyn wal::FileSystem>) -> Self {
        let members = ids
            .iter()
            .map(|id| {
                let dir = root.join(format!("m{id}"));
                (
                    *id,
                    Member {
                        wal: dir.join("wal"),
                        snap: dir.join("snap"),
                        fs: fs(*id),
                    },
                )
            })
            .collect();
        let mut cluster = ThreadCluster {
            network: LocalNetwork::new(),
            members,
            handles: BTreeMap::new(),
        };
        let initial: Vec<_> = ids
            .iter()
            .map(|id| (*id, Cluster::member_info(*id)))
            .collect();
        for id in ids {
            cluster.start(*id, ClusterStart::New(initial.clone()));
        }
        cluster
    }

    fn start(&mut self, id: u64, start: ClusterStart) {
        let member = &self.members[&id];
        let disk = WalDisk::open(
            &member.wal,
            &member.snap,
            WalDiskOptions {
                segment_size: 256 * 1024,
                keep_snapshots: 2,
                fs: Arc::clone(&member.fs),
            },
        )
        .expect("open the WAL");
        let mut config = NodeConfig::new(id);
        config.snapshot_interval = 50;
        config.snapshot_catchup_entries = 10;
        config.request_timeout_ticks = 500;
        let node = RaftNode::open(config, disk, KvMachine::new(false), start).expect("open node");
        let handle = NodeHandle::spawn(
            node,
            self.network.transport(id),
            DriverConfig {
                tick_interval: Duration::from_millis(10),
                ..DriverConfig::default()
            },
        )
        .expect("spawn");
        self.network.register(id, Arc::new(handle.clone()));
        self.handles.insert(id, handle);
    }

    fn stop_all(&mut self) {
        for (id, handle) in std::mem::take(&mut self.handles) {
            self.network.unregister(id);
            handle.shutdown();
        }
    }

    fn restart_all(&mut self) {
        let ids: Vec<u64> = self.members.keys().copied().collect();
        for id in ids {
            self.start(id, ClusterStart::Join);
        }
    }

    fn leader(&self) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let leader = self
                .handles
                .values()
                .map(|h| h.status())
                .filter(|s| s.lifecycle.is_running() && s.role == Role::Leader)
                .max_by_key(|s| s.term)
                .map(|s| s.id);
            if let Some(leader) = leader {
                return leader;
            }
            assert!(Instant::now() < deadline, "no leader elected");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn put(&self, on: u64, key: &str, value: &str) -> Result<u64, NodeError> {
        let command = KvCommand::Put {
            key: key.into(),
            value: value.into(),
        }
        .encode();
        self.handles[&on]
            .propose(command)
            .wait_timeout(WAIT)
            .map(|a| a.index)
    }

    /// Retries a write until some leader accepts it.
    fn put_retrying(&self, key: &str, value: &str) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.put(self.leader(), key, value) {
                Ok(index) => return index,
                Err(e) if Instant::now() < deadline => {
                    assert!(!e.is_fatal(), "{e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("write {key} never succeeded: {e}"),
            }
        }
    }

    fn get(&self, on: u64, key: &str) -> Option<String> {
        let key = key.to_string();
        self.handles[&on]
            .read(ReadConsistency::Linearizable, move |kv: &KvMachine| {
                kv.get(&key).cloned()
            })
            .wait_timeout(WAIT)
            .expect("linearizable read")
    }

    /// Waits until every running member applied the same index, then compares hashes.
    fn converged_hash(&self) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let running: Vec<&NodeHandle<KvMachine>> = self
                .handles
                .values()
                .filter(|h| h.status().lifecycle.is_running())
                .collect();
            let applied: Vec<u64> = running.iter().map(|h| h.status().applied).collect();
            let commit = running.iter().map(|h| h.status().commit).max().unwrap_or(0);
            if applied.iter().all(|a| *a == commit) {
                let hashes: Vec<u64> = running
                    .iter()
                    .map(|h| {
                        h.read(ReadConsistency::Serializable, |kv: &KvMachine| kv.hash())
                            .wait_timeout(WAIT)
                            .expect("hash")
                    })
                    .collect();
                if hashes.iter().all(|h| *h == hashes[0]) {
                    return hashes[0];
                }
            }
            assert!(
                Instant::now() < deadline,
                "members did not converge: {applied:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ThreadCluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

#[test]
fn node_threads_replicate_and_restart_over_the_wal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = ThreadCluster::new(dir.path(), &[1, 2, 3], |_| Arc::new(wal::StdFs));
    let leader = cluster.leader();
    let follower = [1, 2, 3]
        .into_iter()
        .find(|id| *id != leader)
        .expect("follower");
    // Concurrent proposers, on the leader and on a follower (forwarded).
    std::thread::scope(|scope| {
        for writer in 0..4u64 {
            let cluster = &cluster;
            scope.spawn(move || {
                let on = if writer % 2 == 0 { leader } else { follower };
                for i in 0..40 {
                    let key = format!("w{writer}-{}", i % 5);
                    cluster
                        .put(on, &key, &format!("{i}"))
                        .unwrap_or_else(|e| panic!("write {writer}/{i}: {e}"));
                }
            });
        }
    });
    assert_eq!(cluster.get(follower, "w1-4").as_deref(), Some("39"));
    let hash = cluster.converged_hash();
    let status = cluster.handles[&leader].status();
    assert!(
        status.snapshot_index >= 100,
        "snapshots were taken: {status:?}"
    );
    assert!(
        status.counters.persisted_batches < 160,
        "proposals shared fsyncs: {status:?}"
    );
    assert_eq!(cluster.handles[&leader].members().len(), 3);

    cluster.stop_all();
    cluster.restart_all();
    let leader = cluster.leader();
    assert_eq!(cluster.get(leader, "w2-3").as_deref(), Some("38"));
    assert_eq!(cluster.converged_hash(), hash);
}

#[test]
fn node_threads_power_loss_keeps_acknowledged_writes() {
    let dir = PathBuf::from("/cluster");
    let filesystems: BTreeMap<u64, wal::FaultFs> = [1, 2, 3]
        .into_iter()
        .map(|id| (id, wal::FaultFs::new()))
        .collect();
    let fs_of = |id: u64| -> Arc<dyn wal::FileSystem> { Arc::new(filesystems[&id].clone()) };
    let mut cluster = ThreadCluster::new(&dir, &[1, 2, 3], fs_of);
    let mut acknowledged = BTreeMap::new();
    for i in 0..60 {
        let key = format!("k{}", i % 7);
        let value = format!("v{i}");
        cluster.put_retrying(&key, &value);
        acknowledged.insert(key, value);
    }
    // Power loss on every machine at once: unsynced bytes are gone.
    cluster.stop_all();
    for fs in filesystems.values() {
        fs.crash(wal::Crash::DropAll);
    }
    cluster.restart_all();
    let leader = cluster.leader();
    for (key, value) in &acknowledged {
        assert_eq!(cluster.get(leader, key).as_ref(), Some(value), "key {key}");
    }
    cluster.converged_hash();
}

#[test]
fn node_threads_failed_fsync_stops_only_that_member() {
    let dir = PathBuf::from("/cluster");
    let filesystems: BTreeMap<u64, wal::FaultFs> = [1, 2, 3]
        .into_iter()
        .map(|id| (id, wal::FaultFs::new()))
        .collect();
    let fs_of = |id: u64| -> Arc<dyn wal::FileSystem> { Arc::new(filesystems[&id].clone()) };
    let mut cluster = ThreadCluster::new(&dir, &[1, 2, 3], fs_of);
    let leader = cluster.leader();
    cluster.put_retrying("before", "1");
    filesystems[&leader].fail_syncs_after(Some(0));
    // The leader's next fsync fails: it stops (never retrying the fsync).
    let result = cluster.put(leader, "doomed", "x");
    assert!(result.is_err(), "{result:?}");
    let deadline = Instant::now() + WAIT;
    while cluster.handles[&leader].is_running() {
        assert!(Instant::now() < deadline, "the failed member did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(matches!(
        cluster.handles[&leader].status().lifecycle,
        Lifecycle::Failed(NodeError::Storage { .. })
    ));
    // The others carry on.
    cluster.network.unregister(leader);
    cluster.handles.remove(&leader);
    cluster.put_retrying("after", "2");
    let new_leader = cluster.leader();
    assert_ne!(new_leader, leader);
    assert_eq!(cluster.get(new_leader, "before").as_deref(), Some("1"));
    cluster.converged_hash();
    // The failed member comes back from what was durable and catches up.
    filesystems[&leader].fail_syncs_after(None);
    filesystems[&leader].crash(wal::Crash::DropAll);
    cluster.start(leader, ClusterStart::Join);
    let hash = cluster.converged_hash();
    let value = cluster.handles[&leader]
        .read(ReadConsistency::Serializable, |kv: &KvMachine| {
            (kv.get("after").cloned(), kv.hash())
        })
        .wait_timeout(WAIT)
        .expect("read");
    assert_eq!(value, (Some("2".to_string()), hash));
}
