//! Starting, running and stopping a member.
//!
//! [`run_member`] is the whole life of a member, as a library function that takes its
//! configuration, a factory for the replicated state (a raft [`StateMachine`] plus the
//! [`KeySpace`] view the HTTP layer reads), and a shutdown signal:
//!
//! 1. bind every client and peer listener first (a port in use is reported before any
//!    disk state changes);
//! 2. choose the start-up [`Plan`] from the data dir and the flags;
//! 3. open the WAL and snapshot store and the raft node (founding, joining, restarting,
//!    or — for `--force-new-cluster` — replaying the old log into a fresh one-member
//!    cluster, the old files kept beside the new ones as `*.before-force-new-<time>`);
//! 4. record the identity (after the node's own bootstrap is durable, so a crash between
//!    the two simply bootstraps again from the same flags);
//! 5. serve the peer and client ports, publish this member's name and client URLs;
//! 6. on the shutdown signal, or when the node stops (removed from the cluster, fatal
//!    storage error), stop accepting, stop the node thread, return.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::api::serve_clients;
use super::bootstrap::{plan, plan_join, ClusterView, Plan};
use super::config::Config;
use super::datadir::{create_private_dir, load_identity, save_identity, Identity};
use super::member::{KeySpace, Member};
use super::peer::{query_members, serve_peers, PeerSender};
use super::raft::{PeerGlue, RaftConsensus, TcpTransport};
use super::url::MemberUrl;
use super::ServerError;
use crate::node::{
    ClusterStart, DriverConfig, Member as NodeMember, MemberInfo, NodeConfig, NodeHandle, RaftNode,
    StateMachine,
};
use crate::storage::{WalDisk, WalDiskOptions};

/// How long a joining member keeps asking its peers who is in the cluster.
const JOIN_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The node's tunables from etcd's flags (ticks of `--heartbeat-interval`).
pub fn node_config(config: &Config, id: u64) -> NodeConfig {
    let tick = config.heartbeat_interval.as_millis().max(1) as u64;
    let ticks = |d: Duration| (d.as_millis() as u64 / tick).max(1);
    let mut node = NodeConfig::new(id);
    node.heartbeat_ticks = 1;
    node.election_ticks = (ticks(config.election_timeout) as usize).max(2);
    node.snapshot_interval = config.snapshot_count.max(1);
    node.snapshot_catchup_entries = (config.snapshot_count / 2).clamp(1, 5_000);
    node.request_timeout_ticks = ticks(super::member::REQUEST_TIMEOUT);
    node.read_retry_ticks = ticks(Duration::from_millis(500));
    node.sync_interval_ticks = ticks(Duration::from_millis(500));
    node.background_snapshots = true;
    node
}

async fn bind_all(urls: &[MemberUrl]) -> Result<Vec<TcpListener>, ServerError> {
    let mut listeners = Vec::new();
    for url in urls {
        let address = url.host_port();
        let listener = TcpListener::bind(&address)
            .await
            .map_err(|e| ServerError::io("listen tcp", PathBuf::from(address.clone()), e))?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// A member's WAL segment size: 16 MiB (etcd's are 64 MB). Smaller segments let the
/// compaction after each snapshot free disk sooner (only whole segments are removed), so
/// a data dir stays near the log since the last snapshot; a rollover stays cheap because
/// the next segment is prepared ahead of need.
const MEMBER_WAL_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

fn open_disk(config: &Config) -> Result<WalDisk, ServerError> {
    let wal_dir = config.wal_dir();
    let snap_dir = config.snap_dir();
    create_private_dir(&wal_dir)?;
    create_private_dir(&snap_dir)?;
    let options = WalDiskOptions {
        segment_size: MEMBER_WAL_SEGMENT_SIZE,
        ..WalDiskOptions::default()
    };
    WalDisk::open(&wal_dir, &snap_dir, options).map_err(|e| ServerError::Raft(e.to_string()))
}

fn set_aside(dir: &Path, stamp: u64) -> Result<(), ServerError> {
    if dir.exists() {
        let mut aside = dir.as_os_str().to_owned();
        aside.push(format!(".before-force-new-{stamp}"));
        std::fs::rename(dir, &aside).map_err(|e| ServerError::io("set aside", dir, e))?;
    }
    Ok(())
}

/// Replays the data dir's log into a state machine (for `--force-new-cluster`) and sets
/// the old log aside. Returns the state machine's snapshot.
fn replay_for_force_new<S: StateMachine>(
    config: &Config,
    previous: Identity,
    state_machine: S,
) -> Result<Vec<u8>, ServerError> {
    let disk = open_disk(config)?;
    let mut node = RaftNode::open(
        node_config(config, previous.member_id.0),
        disk,
        state_machine,
        ClusterStart::Join,
    )
    .map_err(|e| ServerError::Raft(e.to_string()))?;
    let mut sink = Vec::new();
    for _ in 0..1_000_000 {
        if !node.has_ready() {
            break;
        }
        node.process_ready(&mut sink)
            .map_err(|e| ServerError::Raft(e.to_string()))?;
        sink.clear();
    }
    let data = node.state_machine().snapshot();
    drop(node);
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    set_aside(&config.wal_dir(), stamp)?;
    set_aside(&config.snap_dir(), stamp)?;
    Ok(data)
}

/// Asks the peers named in `--initial-cluster` who is in the cluster.
async fn ask_peers(config: &Config) -> Result<ClusterView, ServerError> {
    let own: Vec<&MemberUrl> = config.initial_advertise_peer_urls.iter().collect();
    let peers: Vec<MemberUrl> = config
        .initial_cluster
        .values()
        .flatten()
        .filter(|url| !own.contains(url))
        .cloned()
        .collect();
    let deadline = tokio::time::Instant::now() + JOIN_QUERY_TIMEOUT;
    loop {
        match query_members(&peers).await {
            Ok(answer) => {
                return serde_json::from_slice(&answer).map_err(|e| {
                    ServerError::Cluster(format!("a peer sent an undecodable member list: {e}"))
                })
            }
            Err(error) if tokio::time::Instant::now() >= deadline => {
                return Err(ServerError::Cluster(format!(
                    "cannot fetch cluster info from peer urls: {error}"
                )))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// Runs a member until `shutdown` resolves or the node stops. `make_state` builds an
/// empty state machine and the key space that reads it (called once, twice for
/// `--force-new-cluster`).
pub async fn run_member<S, K>(
    config: Config,
    make_state: impl Fn() -> (S, Arc<K>),
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError>
where
    S: StateMachine,
    K: KeySpace<S::Response>,
{
    let peer_listeners = bind_all(&config.listen_peer_urls).await?;
    let client_listeners = bind_all(&config.listen_client_urls).await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let existing = load_identity(&config.data_dir)?;
    let chosen = plan(&config, existing, now)?;
    create_private_dir(&config.data_dir)?;
    let own_info = MemberInfo {
        name: config.name.clone(),
        peer_urls: config
            .initial_advertise_peer_urls
            .iter()
            .map(|u| u.to_string())
            .collect(),
        client_urls: Vec::new(),
    };
    let mut seed = Vec::new();
    let (state_machine, keys, identity, start, fresh) = match chosen {
        Plan::Restart(identity) => {
            let (sm, keys) = make_state();
            (sm, keys, identity, ClusterStart::Join, false)
        }
        Plan::New { identity, founders } => {
            let (sm, keys) = make_state();
            let members = founders
                .into_iter()
                .map(|(id, name, peer_urls)| {
                    (
                        id.0,
                        MemberInfo {
                            name,
                            peer_urls,
                            client_urls: Vec::new(),
                        },
                    )
                })
                .collect();
            (sm, keys, identity, ClusterStart::New(members), true)
        }
        Plan::Join => {
            let view = ask_peers(&config).await?;
            let identity = plan_join(&config, &view)?;
            seed = view
                .members
                .iter()
                .filter_map(|m| {
                    Some(NodeMember {
                        id: super::id::MemberId::parse_hex(&m.id)?.0,
                        info: MemberInfo {
                            name: m.name.clone(),
                            peer_urls: m.peer_urls.clone(),
                            client_urls: m.client_urls.clone(),
                        },
                        learner: false,
                    })
                })
                .collect();
            let (sm, keys) = make_state();
            (sm, keys, identity, ClusterStart::Join, true)
        }
        Plan::ForceNew { identity, previous } => {
            let (replay_sm, _) = make_state();
            let data = replay_for_force_new(&config, previous, replay_sm)?;
            let (mut sm, keys) = make_state();
            sm.restore(&data).map_err(|e| ServerError::DataDir {
                path: config.data_dir.clone(),
                detail: format!("restoring the replayed state: {e}"),
            })?;
            tracing::warn!(
                old_member = %previous.member_id,
                new_member = %identity.member_id,
                "forcing a new one-member cluster from the data dir"
            );
            let members = vec![(identity.member_id.0, own_info.clone())];
            (sm, keys, identity, ClusterStart::New(members), true)
        }
    };
    let disk = open_disk(&config)?;
    let node = RaftNode::open(
        node_config(&config, identity.member_id.0),
        disk,
        state_machine,
        start,
    )
    .map_err(|e| ServerError::Raft(e.to_string()))?;
    if fresh {
        save_identity(&config.data_dir, &identity)?;
    }
    tracing::info!(member = %identity.member_id, cluster = %identity.cluster_id, name = %config.name, "member starting");

    let (stop, stopping) = watch::channel(false);
    let (node_stopped_tx, node_stopped) = tokio::sync::oneshot::channel::<()>();
    let node_stopped_tx = parking_lot::Mutex::new(Some(node_stopped_tx));
    let glue = PeerGlue::<S>::new(
        identity.member_id,
        identity.cluster_id,
        Box::new(move || {
            if let Some(tx) = node_stopped_tx.lock().take() {
                let _ = tx.send(());
            }
        }),
    );
    let sender = PeerSender::new(glue.clone(), stopping.clone());
    let transport = TcpTransport::new(sender.clone(), glue.clone());
    let driver = DriverConfig {
        tick_interval: config.heartbeat_interval,
        ..DriverConfig::default()
    };
    let handle: NodeHandle<S> =
        NodeHandle::spawn(node, transport, driver).map_err(|e| ServerError::Raft(e.to_string()))?;
    let consensus = RaftConsensus::new(handle.clone(), glue.clone(), sender, seed);
    for listener in peer_listeners {
        tokio::spawn(serve_peers(listener, glue.clone(), stopping.clone()));
    }
    let member = Arc::new(Member::new(config, identity, consensus, keys));
    for listener in client_listeners {
        tokio::spawn(serve_clients(listener, member.clone(), stopping.clone()));
    }
    let publisher = {
        let member = member.clone();
        tokio::spawn(async move { member.publish_attributes().await })
    };
    let removed = tokio::select! {
        _ = shutdown => false,
        _ = node_stopped => true,
    };
    publisher.abort();
    let _ = stop.send(true);
    let shutdown_handle = handle.clone();
    let _ = tokio::task::spawn_blocking(move || shutdown_handle.shutdown()).await;
    if removed {
        let status = handle.status();
        tracing::warn!(lifecycle = ?status.lifecycle, "the raft node stopped; the member exits");
        // A node that failed (a disk error such as ENOSPC, corruption) is an error exit,
        // so a supervisor restarts the member; a removed member exits cleanly.
        if let crate::node::Lifecycle::Failed(error) = &status.lifecycle {
            return Err(ServerError::Raft(format!("the raft node failed: {error}")));
        }
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// How many async worker threads serve the client and peer ports: `TOKIO_WORKER_THREADS`
/// when set to a positive number (tokio's own variable, as Go's GOMAXPROCS for etcd),
/// otherwise one fewer than the CPUs (at least one). The raft loop has a thread of its own
/// that is busy whenever writes are, so the workers leave it a CPU. On 2 CPUs, quorum GETs
/// c16 of a 3-member loopback cluster (`benches/compare-etcd.sh`, runs alternated): one
/// worker 26.3k and 29.1k ops/s, two workers 23.0k and 27.4k; PUTs were no slower.
fn io_worker_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    worker_threads_for(std::env::var("TOKIO_WORKER_THREADS").ok().as_deref(), cpus)
}

/// [`io_worker_threads`] given the variable's value and the CPU count.
fn worker_threads_for(env: Option<&str>, cpus: usize) -> usize {
    env.and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| cpus.saturating_sub(1).max(1))
}

/// Runs an etcd member with the v2 store until SIGTERM/SIGINT or until it is removed from
/// the cluster (what the `etcd` example binary does after parsing its flags).
pub fn run_until_signal(config: Config) -> Result<(), ServerError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(io_worker_threads())
        .thread_name("etcd-io")
        .build()
        .map_err(|e| ServerError::io("start the async runtime", PathBuf::from("tokio"), e))?;
    if config.data_dir_defaulted {
        tracing::warn!(data_dir = %config.data_dir.display(), "no data-dir provided, using default data-dir");
    }
    runtime.block_on(run_member(
        config,
        super::keyspace::new_store,
        termination_signal(),
    ))
}

#[cfg(test)]
mod worker_tests {
    use super::worker_threads_for;

    #[test]
    fn one_cpu_is_left_to_the_raft_loop_unless_the_variable_says_otherwise() {
        assert_eq!(worker_threads_for(None, 1), 1);
        assert_eq!(worker_threads_for(None, 2), 1);
        assert_eq!(worker_threads_for(None, 8), 7);
        assert_eq!(worker_threads_for(Some("4"), 2), 4);
        assert_eq!(worker_threads_for(Some(" 3 "), 8), 3);
        assert_eq!(worker_threads_for(Some("0"), 8), 7);
        assert_eq!(worker_threads_for(Some("lots"), 2), 1);
    }
}
