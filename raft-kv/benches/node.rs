//! Raft layer throughput: three threaded members in one process on the in-process network,
//! each persisting through the real `wal` crate with fsync to its own temporary directory.
//!
//! - `propose/proposers=N`: durable proposals per second with N concurrent proposers, each
//!   waiting for its proposal to be applied before the next (closed loop). Proposals go to
//!   the leader.
//! - `read_linearizable/readers=N`: linearizable (ReadIndex) reads per second with N
//!   concurrent readers on the leader.
//! - `propose_no_fsync/proposers=64`: the same cluster on in-memory disks: the CPU ceiling
//!   of the raft layer alone (what fsync costs is the difference).
//!
//! The temporary directories live under the cargo target directory (a real disk, not a
//! tmpfs), so fsync costs what it costs. `cargo bench -p raft-kv --bench node` for the real
//! run; CI runs each bench once with `-- --test`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use raft_kv::node::{
    ClusterStart, DriverConfig, NodeConfig, NodeHandle, RaftNode, ReadConsistency, Role,
};
use raft_kv::sim::{Cluster, KvCommand, KvMachine};
use raft_kv::storage::{MemDisk, WalDisk, WalDiskOptions};
use raft_kv::transport::LocalNetwork;

struct BenchCluster {
    handles: BTreeMap<u64, NodeHandle<KvMachine>>,
    _dir: tempfile::TempDir,
    next_key: AtomicU64,
}

fn bench_root() -> PathBuf {
    // A real disk: the target directory (tempfile's default /tmp may be a tmpfs).
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let root = target.join("bench-node");
    let _ = std::fs::create_dir_all(&root);
    root
}

impl BenchCluster {
    fn start(root: &Path, members: u64, durable: bool) -> BenchCluster {
        let dir = tempfile::tempdir_in(root).expect("temp dir");
        let network = LocalNetwork::new();
        let ids: Vec<u64> = (1..=members).collect();
        let initial: Vec<_> = ids
            .iter()
            .map(|id| (*id, Cluster::member_info(*id)))
            .collect();
        let mut handles = BTreeMap::new();
        for id in &ids {
            let member_dir = dir.path().join(format!("m{id}"));
            let mut config = NodeConfig::new(*id);
            config.snapshot_interval = 100_000;
            let driver = DriverConfig {
                tick_interval: Duration::from_millis(50),
                ..DriverConfig::default()
            };
            let start = ClusterStart::New(initial.clone());
            let handle = if durable {
                let disk = WalDisk::open(
                    member_dir.join("wal"),
                    member_dir.join("snap"),
                    WalDiskOptions {
                        segment_size: 16 * 1024 * 1024,
                        ..WalDiskOptions::default()
                    },
                )
                .expect("wal");
                let node =
                    RaftNode::open(config, disk, KvMachine::new(false), start).expect("node");
                NodeHandle::spawn(node, network.transport(*id), driver)
            } else {
                let node = RaftNode::open(config, MemDisk::new(), KvMachine::new(false), start)
                    .expect("node");
                NodeHandle::spawn(node, network.transport(*id), driver)
            }
            .expect("spawn");
            network.register(*id, Arc::new(handle.clone()));
            handles.insert(*id, handle);
        }
        let cluster = BenchCluster {
            handles,
            _dir: dir,
            next_key: AtomicU64::new(0),
        };
        // Wait for a leader that can serve.
        let deadline = Instant::now() + Duration::from_secs(30);
        while cluster.propose_once(cluster.leader()).is_err() {
            assert!(Instant::now() < deadline, "no leader");
            std::thread::sleep(Duration::from_millis(10));
        }
        cluster
    }

    fn leader(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .handles
                .values()
                .map(|h| h.status())
                .find(|s| s.role == Role::Leader)
            {
                return status.id;
            }
            assert!(Instant::now() < deadline, "no leader");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn propose_once(&self, on: u64) -> Result<(), raft_kv::node::NodeError> {
        let n = self.next_key.fetch_add(1, Ordering::Relaxed);
        let command = KvCommand::Put {
            key: format!("bench/k{}", n % 100_000),
            value: "v".repeat(64),
        }
        .encode();
        self.handles[&on]
            .propose(command)
            .wait_timeout(Duration::from_secs(10))
            .map(|_| ())
    }

    fn read_once(&self, on: u64) -> Result<(), raft_kv::node::NodeError> {
        self.handles[&on]
            .read(ReadConsistency::Linearizable, |kv: &KvMachine| kv.len())
            .wait_timeout(Duration::from_secs(10))
            .map(|_| ())
    }

    /// Runs `total` operations split over `workers` closed-loop threads; returns the time.
    fn run(&self, workers: u64, total: u64, op: impl Fn(&Self, u64) + Sync) -> Duration {
        let leader = self.leader();
        let start = Instant::now();
        std::thread::scope(|scope| {
            for worker in 0..workers {
                let share = total / workers + u64::from(worker < total % workers);
                let op = &op;
                scope.spawn(move || {
                    for _ in 0..share {
                        op(self, leader);
                    }
                });
            }
        });
        start.elapsed()
    }
}

impl Drop for BenchCluster {
    fn drop(&mut self) {
        for handle in self.handles.values() {
            handle.shutdown();
        }
    }
}

fn node(c: &mut Criterion) {
    let root = bench_root();
    let cluster = BenchCluster::start(&root, 3, true);
    let mut group = c.benchmark_group("node");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    for proposers in [1u64, 64] {
        group.bench_with_input(
            BenchmarkId::new("propose", format!("proposers={proposers}")),
            &proposers,
            |b, &proposers| {
                b.iter_custom(|iters| {
                    cluster.run(proposers, iters, |cluster, leader| {
                        if let Err(e) = cluster.propose_once(leader) {
                            panic!("proposal failed: {e}");
                        }
                    })
                })
            },
        );
    }
    for readers in [1u64, 64] {
        group.bench_with_input(
            BenchmarkId::new("read_linearizable", format!("readers={readers}")),
            &readers,
            |b, &readers| {
                b.iter_custom(|iters| {
                    cluster.run(readers, iters, |cluster, leader| {
                        if let Err(e) = cluster.read_once(leader) {
                            panic!("read failed: {e}");
                        }
                    })
                })
            },
        );
    }
    drop(cluster);
    let cluster = BenchCluster::start(&root, 3, false);
    group.bench_function(BenchmarkId::new("propose_no_fsync", "proposers=64"), |b| {
        b.iter_custom(|iters| {
            cluster.run(64, iters, |cluster, leader| {
                if let Err(e) = cluster.propose_once(leader) {
                    panic!("proposal failed: {e}");
                }
            })
        })
    });
    group.finish();
}

// The macro generates an undocumented function; the bench target has no public API.
#[allow(missing_docs)]
mod suite {
    criterion::criterion_group!(benches, super::node);
}

criterion_main!(suite::benches);
