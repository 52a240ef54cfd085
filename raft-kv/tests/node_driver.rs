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
        wait_converged(|| {
            self.handles
                .values()
                .filter(|h| h.status().lifecycle.is_running())
                .collect()
        })
    }
}

/// Waits until the members `members` lists have all applied the highest commit index among
/// them and hold the same state; returns its hash.
fn wait_converged<'a>(members: impl Fn() -> Vec<&'a NodeHandle<KvMachine>>) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let running = members();
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

/// A single member whose tick is an hour away never wakes on its own, so every request
/// must wake it: a lost wake-up would leave a proposal unanswered until `WAIT` runs out.
#[test]
fn node_thread_wakes_for_every_request_without_ticks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = WalDisk::open(
        dir.path().join("wal"),
        dir.path().join("snap"),
        WalDiskOptions::default(),
    )
    .expect("open the WAL");
    let node = RaftNode::open(
        NodeConfig::new(1),
        disk,
        KvMachine::new(false),
        ClusterStart::New(vec![(1, Cluster::member_info(1))]),
    )
    .expect("open node");
    let handle = NodeHandle::spawn(
        node,
        Vec::new(),
        DriverConfig {
            tick_interval: Duration::from_secs(3600),
            ..DriverConfig::default()
        },
    )
    .expect("spawn");
    handle.campaign();
    let deadline = Instant::now() + WAIT;
    while handle.status().role != Role::Leader {
        assert!(
            Instant::now() < deadline,
            "no leader: {:?}",
            handle.status()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // Writers that wait for each answer before the next request, so the thread goes idle
    // (and announces sleep) between requests all the time.
    std::thread::scope(|scope| {
        for writer in 0..3 {
            let handle = handle.clone();
            scope.spawn(move || {
                for i in 0..400 {
                    let command = KvCommand::Put {
                        key: format!("w{writer}"),
                        value: format!("{i}"),
                    }
                    .encode();
                    handle
                        .propose(command)
                        .wait_timeout(WAIT)
                        .unwrap_or_else(|e| panic!("write {writer}/{i}: {e}"));
                }
            });
        }
    });
    let value = handle
        .read(ReadConsistency::Linearizable, |kv: &KvMachine| {
            kv.get("w2").cloned()
        })
        .wait_timeout(WAIT)
        .expect("read");
    assert_eq!(value.as_deref(), Some("399"));
    handle.shutdown();
}

/// Members whose peer messages arrive on sockets the node threads read themselves
/// ([`NodeHandle::adopt_inbound`]): tiny reads split every frame, a small read budget
/// leaves bytes for the next loop iteration, and a connection that ends is replaced.
mod adopted_streams {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, RawFd};
    use std::os::unix::net::UnixStream;
    use std::sync::mpsc;

    use protobuf::Message as _;
    use raft::eraftpb::Message;
    use raft_kv::node::{InboundRead, InboundStream};
    use raft_kv::transport::Transport;

    /// Reads length-prefixed frames 7 bytes at a time.
    struct SocketInbound {
        stream: UnixStream,
        buf: Vec<u8>,
    }

    impl InboundStream for SocketInbound {
        fn fd(&self) -> RawFd {
            self.stream.as_raw_fd()
        }

        fn read(&mut self, budget: usize, out: &mut Vec<Message>) -> InboundRead {
            let mut taken = 0;
            loop {
                while self.buf.len() >= 4 {
                    let len = u32::from_be_bytes(self.buf[..4].try_into().unwrap()) as usize;
                    if self.buf.len() < 4 + len {
                        break;
                    }
                    let frame: Vec<u8> = self.buf.drain(..4 + len).skip(4).collect();
                    out.push(Message::parse_from_bytes(&frame).expect("a raft message"));
                }
                if taken >= budget {
                    return InboundRead::More;
                }
                let mut chunk = [0u8; 7];
                match self.stream.read(&mut chunk) {
                    Ok(0) => return InboundRead::Closed,
                    Ok(n) => {
                        self.buf.extend_from_slice(&chunk[..n]);
                        taken += n;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        return InboundRead::Drained
                    }
                    Err(e) => panic!("read: {e}"),
                }
            }
        }
    }

    /// One writer thread per link (blocking writes never stall a node thread).
    struct SocketTransport {
        links: Arc<parking_lot::Mutex<BTreeMap<u64, mpsc::Sender<Vec<u8>>>>>,
    }

    impl Transport for SocketTransport {
        fn send(&mut self, messages: Vec<Message>) {
            let links = self.links.lock();
            for message in messages {
                let body = message.write_to_bytes().expect("encode");
                let mut frame = (body.len() as u32).to_be_bytes().to_vec();
                frame.extend_from_slice(&body);
                if let Some(link) = links.get(&message.to) {
                    let _ = link.send(frame);
                }
            }
        }
    }

    /// Connects `from` to `to`: a socket pair, the reading end adopted by `to`'s thread.
    fn connect(
        from_links: &parking_lot::Mutex<BTreeMap<u64, mpsc::Sender<Vec<u8>>>>,
        to: u64,
        to_handle: &NodeHandle<KvMachine>,
    ) {
        let (mut writer, reader) = UnixStream::pair().expect("socket pair");
        reader.set_nonblocking(true).expect("non-blocking");
        to_handle.adopt_inbound(Box::new(SocketInbound {
            stream: reader,
            buf: Vec::new(),
        }));
        let (sender, receiver) = mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            for frame in receiver {
                if writer.write_all(&frame).is_err() {
                    return;
                }
            }
        });
        // Replacing a link drops the old sender: its thread ends and closes its socket.
        from_links.lock().insert(to, sender);
    }

    #[test]
    fn node_threads_read_their_peers_sockets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ids = [1u64, 2, 3];
        let initial: Vec<_> = ids
            .iter()
            .map(|id| (*id, Cluster::member_info(*id)))
            .collect();
        let mut links = BTreeMap::new();
        let mut handles = BTreeMap::new();
        for id in ids {
            let disk = WalDisk::open(
                dir.path().join(format!("m{id}/wal")),
                dir.path().join(format!("m{id}/snap")),
                WalDiskOptions::default(),
            )
            .expect("open the WAL");
            let mut config = NodeConfig::new(id);
            config.request_timeout_ticks = 500;
            let node = RaftNode::open(
                config,
                disk,
                KvMachine::new(false),
                ClusterStart::New(initial.clone()),
            )
            .expect("open node");
            let member_links = Arc::new(parking_lot::Mutex::new(BTreeMap::new()));
            let handle = NodeHandle::spawn(
                node,
                SocketTransport {
                    links: Arc::clone(&member_links),
                },
                DriverConfig {
                    tick_interval: Duration::from_millis(10),
                    read_budget: 64,
                    ..DriverConfig::default()
                },
            )
            .expect("spawn");
            links.insert(id, member_links);
            handles.insert(id, handle);
        }
        let connect_all = |links: &BTreeMap<u64, Arc<parking_lot::Mutex<_>>>| {
            for from in ids {
                for to in ids.into_iter().filter(|to| *to != from) {
                    connect(&links[&from], to, &handles[&to]);
                }
            }
        };
        connect_all(&links);
        let leader = || {
            let deadline = Instant::now() + WAIT;
            loop {
                let leader = handles
                    .values()
                    .map(|h| h.status())
                    .filter(|s| s.role == Role::Leader)
                    .max_by_key(|s| s.term);
                if let Some(status) = leader {
                    return status.id;
                }
                assert!(Instant::now() < deadline, "no leader elected");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        let put = |on: u64, key: &str, value: String| {
            let command = KvCommand::Put {
                key: key.into(),
                value,
            }
            .encode();
            handles[&on].propose(command).wait_timeout(WAIT)
        };
        let write_round = |round: u32| {
            let deadline = Instant::now() + WAIT;
            for i in 0..100u32 {
                // Every member proposes (followers forward to the leader); retry while
                // a leader is being elected.
                loop {
                    match put(
                        ids[(i % 3) as usize],
                        &format!("k{}", i % 10),
                        format!("{round}-{i}"),
                    ) {
                        Ok(_) => break,
                        Err(e) => {
                            assert!(Instant::now() < deadline, "write {round}/{i}: {e}");
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
            }
        };
        leader();
        write_round(1);
        // Every connection ends (the nodes drop them) and new ones take their place.
        connect_all(&links);
        write_round(2);
        let leader = leader();
        let value = handles[&leader]
            .read(ReadConsistency::Linearizable, |kv: &KvMachine| {
                kv.get("k9").cloned()
            })
            .wait_timeout(WAIT)
            .expect("read");
        assert_eq!(value.as_deref(), Some("2-99"));
        wait_converged(|| handles.values().collect());
        for handle in handles.values() {
            handle.shutdown();
        }
    }
}
