//! One robustness run: start a cluster, run the workload, inject faults from a seeded
//! nemesis, heal, and check everything that was recorded.
//!
//! Faults ([`Fault`]): kill -9 of a follower, of the leader, of every member at once
//! (each restarted after a pause); partitions isolating the leader, isolating a follower,
//! or splitting the cluster into a minority and a majority; slow and lossy links; SIGSTOP
//! / SIGCONT of a member; a torn WAL tail (a partial or garbage record after the last one) on a killed member before its
//! restart; a corrupted newest snapshot on a killed member before its restart.
//!
//! Checks after healing: every member's `/robust` tree equal at the same etcd index; the
//! history linearizable per key with etcd's index rules (`raft_kv::check::etcd`), final
//! quorum reads included (so every acknowledged write must survive); watch streams
//! without gaps, duplicates or misordering (`raft_kv::check::watch`) and complete up to
//! the last write; no member exited on its own except as a documented reaction to a
//! corrupted snapshot (a clear error, then a restart with the snapshot restored).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use raft_kv::check::etcd::{check_history, IndexObservation, KeyOp, KeyOpKind};
use raft_kv::check::watch::{check_watches, WatchItem};
use raft_kv::check::Operation;
use raft_kv::node::rng::SplitMix64;

use super::cluster::{Cluster, ClusterConfig};
use super::http::{request, HttpResult};
use super::proxy::LinkRule;
use super::workload::{local_tree, run_client, run_watcher, ClientConfig, Recorder, PREFIX};

/// A fault the nemesis can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// kill -9 a follower, restart it later.
    KillFollower,
    /// kill -9 the leader, restart it later.
    KillLeader,
    /// kill -9 every member at once, restart them all.
    KillAll,
    /// Cut the leader off from everyone.
    IsolateLeader,
    /// Cut a follower off from everyone.
    IsolateFollower,
    /// Split into a minority and a majority.
    SplitMinority,
    /// Delay (20–150 ms) and lose (0–5 %) messages on every link.
    SlowLinks,
    /// SIGSTOP a member, SIGCONT it later.
    Pause,
    /// kill -9 a member, leave a torn record (a partial copy of the last one, or
    /// garbage) after the last record of its WAL, restart it.
    TornWalTail,
    /// kill -9 a member, flip a byte of its newest snapshot, restart it.
    CorruptSnapshot,
}

/// Every fault.
pub const ALL_FAULTS: &[Fault] = &[
    Fault::KillFollower,
    Fault::KillLeader,
    Fault::KillAll,
    Fault::IsolateLeader,
    Fault::IsolateFollower,
    Fault::SplitMinority,
    Fault::SlowLinks,
    Fault::Pause,
    Fault::TornWalTail,
    Fault::CorruptSnapshot,
];

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Label (directories).
    pub label: String,
    /// Members (3 or 5).
    pub size: usize,
    /// First port (see [`ClusterConfig::base_port`]).
    pub base_port: u16,
    /// Seed of the nemesis and the workload.
    pub seed: u64,
    /// How long faults are injected.
    pub duration: Duration,
    /// Workload clients.
    pub clients: usize,
    /// Watchers.
    pub watchers: usize,
    /// Keys.
    pub keys: usize,
    /// The faults to choose from.
    pub faults: Vec<Fault>,
    /// The `etcd` example binary.
    pub binary: PathBuf,
    /// `binary` is the real etcd 3.4 (to validate the harness and the checkers: its
    /// peer traffic passes the proxies unparsed, so use process faults only).
    pub real_etcd: bool,
}

/// What a run did and found.
#[derive(Debug, Default)]
pub struct RunStats {
    /// The seed.
    pub seed: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Operations by kind and outcome.
    pub counts: BTreeMap<String, u64>,
    /// Operations checked for linearizability.
    pub ops_checked: usize,
    /// Unknown-outcome writes pruned / bounded.
    pub pruned: usize,
    /// Unknown-outcome writes bounded by an observation.
    pub bounded: usize,
    /// Serializable reads checked.
    pub local_reads: usize,
    /// Watch events checked.
    pub watch_events: usize,
    /// Watch resyncs (401).
    pub resyncs: usize,
    /// Proxy counters: frames forwarded, lost, refused.
    pub frames: [u64; 3],
    /// Notes (e.g. how a member reacted to a corrupted snapshot).
    pub notes: Vec<String>,
    /// Anomalies: must be empty.
    pub anomalies: Vec<String>,
    /// The tails of the member logs, kept when there are anomalies.
    pub member_logs: Option<String>,
}

impl RunStats {
    /// One line for the log.
    pub fn summary(&self) -> String {
        format!(
            "seed {}: {} ops checked ({} unknown pruned, {} bounded), {} serializable reads, \
             {} watch events ({} resyncs), frames fwd/lost/cut {:?}, faults {:?}, ops {:?}, \
             anomalies {}",
            self.seed,
            self.ops_checked,
            self.pruned,
            self.bounded,
            self.local_reads,
            self.watch_events,
            self.resyncs,
            self.frames,
            self.faults,
            self.counts,
            self.anomalies.len()
        )
    }
}

fn pick(rng: &mut SplitMix64, from: &[usize]) -> Option<usize> {
    if from.is_empty() {
        None
    } else {
        Some(from[rng.range(0, from.len() as u64) as usize])
    }
}

fn sleep_ms(rng: &mut SplitMix64, low: u64, high: u64) {
    thread::sleep(Duration::from_millis(rng.range(low, high)));
}

/// Runs one seeded run and checks it.
pub fn run(config: &RunConfig) -> RunStats {
    let mut stats = RunStats {
        seed: config.seed,
        ..RunStats::default()
    };
    let mut rng = SplitMix64::new(config.seed);
    let mut cluster = Cluster::start(
        ClusterConfig {
            label: config.label.clone(),
            size: config.size,
            base_port: config.base_port,
            snapshot_count: 300,
            seed: config.seed,
            real_etcd: config.real_etcd,
        },
        config.binary.clone(),
    );
    let ports = cluster.client_ports();
    let recorder = Recorder::new();
    let stop_clients = Arc::new(AtomicBool::new(false));
    let stop_watchers = Arc::new(AtomicBool::new(false));
    let until = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..config.clients)
        .map(|id| {
            let client = ClientConfig {
                id: id as u64,
                seed: config.seed ^ (0x1000 + id as u64),
                keys: config.keys,
                ports: ports.clone(),
            };
            let recorder = Arc::clone(&recorder);
            let stop = Arc::clone(&stop_clients);
            thread::spawn(move || run_client(client, recorder, stop))
        })
        .collect();
    let watchers: Vec<_> = (0..config.watchers)
        .map(|w| {
            let recorder = Arc::clone(&recorder);
            let stop = Arc::clone(&stop_watchers);
            let until = Arc::clone(&until);
            let ports = ports.clone();
            let seed = config.seed ^ (0x2000 + w as u64);
            thread::spawn(move || run_watcher(format!("w{w}"), seed, ports, recorder, stop, until))
        })
        .collect();

    // The nemesis.
    let deadline = Instant::now() + config.duration;
    let n = config.size;
    let everyone: Vec<usize> = (0..n).collect();
    while Instant::now() < deadline {
        sleep_ms(&mut rng, 300, 1200);
        let fault = config.faults[rng.range(0, config.faults.len() as u64) as usize];
        let leader = cluster.leader();
        let followers: Vec<usize> = everyone
            .iter()
            .copied()
            .filter(|&i| Some(i) != leader)
            .collect();
        let applied = match fault {
            Fault::KillFollower | Fault::KillLeader => {
                let victim = if fault == Fault::KillLeader {
                    leader
                } else {
                    pick(&mut rng, &followers)
                };
                victim.map(|v| {
                    cluster.kill(v);
                    sleep_ms(&mut rng, 200, 2000);
                    cluster.spawn(v);
                })
            }
            Fault::KillAll => {
                for i in 0..n {
                    cluster.kill(i);
                }
                sleep_ms(&mut rng, 100, 1000);
                for i in 0..n {
                    cluster.spawn(i);
                }
                Some(())
            }
            Fault::IsolateLeader | Fault::IsolateFollower => {
                let victim = if fault == Fault::IsolateLeader {
                    leader
                } else {
                    pick(&mut rng, &followers)
                };
                victim.map(|v| {
                    let others: Vec<usize> = everyone.iter().copied().filter(|&i| i != v).collect();
                    cluster.net.partition(&[v], &others);
                    sleep_ms(&mut rng, 1000, 3000);
                    cluster.net.heal();
                })
            }
            Fault::SplitMinority => {
                let mut order = everyone.clone();
                for i in (1..order.len()).rev() {
                    let j = rng.range(0, i as u64 + 1) as usize;
                    order.swap(i, j);
                }
                let (minority, majority) = order.split_at(n / 2);
                cluster.net.partition(minority, majority);
                sleep_ms(&mut rng, 1000, 3000);
                cluster.net.heal();
                Some(())
            }
            Fault::SlowLinks => {
                for from in 0..n {
                    for to in 0..n {
                        if from != to {
                            cluster.net.set_rule(
                                from,
                                to,
                                LinkRule {
                                    cut: false,
                                    delay: Duration::from_millis(rng.range(20, 150)),
                                    loss_per_mille: rng.range(0, 50) as u32,
                                },
                            );
                        }
                    }
                }
                sleep_ms(&mut rng, 1500, 4000);
                cluster.net.heal();
                Some(())
            }
            Fault::Pause => {
                let victim = if rng.chance(1, 2) {
                    leader
                } else {
                    pick(&mut rng, &followers)
                };
                victim.map(|v| {
                    cluster.signal(v, true);
                    sleep_ms(&mut rng, 300, 3000);
                    cluster.signal(v, false);
                })
            }
            Fault::TornWalTail => {
                let v = rng.range(0, n as u64) as usize;
                cluster.kill(v);
                let garble = rng.chance(1, 2);
                let what = cluster.tear_wal_tail(v, garble, rng.next_u64());
                if let Some(what) = what {
                    stats.notes.push(format!("r{v}: {what}"));
                }
                cluster.spawn(v);
                Some(())
            }
            Fault::CorruptSnapshot => {
                let v = rng.range(0, n as u64) as usize;
                cluster.kill(v);
                let corrupted = cluster.corrupt_newest_snapshot(v);
                cluster.spawn(v);
                if let Some((path, original)) = corrupted {
                    // Give it time to either come up or refuse to.
                    thread::sleep(Duration::from_millis(1500));
                    if cluster.is_up(v) {
                        stats.notes.push(format!(
                            "r{v}: corrupted snapshot {}: member started",
                            path.display()
                        ));
                    } else {
                        let exited = cluster.exited();
                        let why = cluster.grep_log(v, "snapshot");
                        stats.notes.push(format!(
                            "r{v}: corrupted snapshot {}: member refused to start ({:?}): {}",
                            path.display(),
                            exited,
                            why.last().cloned().unwrap_or_default()
                        ));
                        let _ = std::fs::write(&path, original);
                        cluster.spawn(v);
                    }
                }
                Some(())
            }
        };
        if applied.is_some() {
            *stats.faults.entry(format!("{fault:?}")).or_default() += 1;
        }
        for (i, status) in cluster.exited() {
            let tail = cluster.log_tails(5);
            stats.anomalies.push(format!(
                "r{i} exited on its own ({status}) after {fault:?}\n{tail}"
            ));
            cluster.spawn(i);
        }
    }

    // Heal and quiesce.
    stop_clients.store(true, Ordering::Relaxed);
    cluster.net.heal();
    for i in 0..n {
        if cluster.members[i].paused {
            cluster.signal(i, false);
        }
        if !cluster.is_up(i) {
            cluster.spawn(i);
        }
    }
    for client in clients {
        let _ = client.join();
    }
    if !cluster.wait_ready(Duration::from_secs(60)) {
        stats.anomalies.push(format!(
            "cluster not ready 60 s after healing\n{}",
            cluster.log_tails(10)
        ));
    }
    for (i, status) in cluster.exited() {
        stats
            .anomalies
            .push(format!("r{i} exited after healing ({status})"));
    }

    // Every member's tree equal at the same index.
    let converge_deadline = Instant::now() + Duration::from_secs(30);
    let mut trees;
    loop {
        trees = ports.iter().map(|&p| local_tree(p)).collect::<Vec<_>>();
        let first = &trees[0];
        if first.is_some() && trees.iter().all(|t| t == first) {
            break;
        }
        if Instant::now() > converge_deadline {
            stats.anomalies.push(format!(
                "members did not converge: {:?}",
                trees
                    .iter()
                    .map(|t| t.as_ref().map(|(i, b)| (
                        i,
                        b.len(),
                        b.chars().take(300).collect::<String>()
                    )))
                    .collect::<Vec<_>>()
            ));
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }

    // Final quorum reads: every acknowledged write must be reflected.
    let mut max_index = 0;
    for k in 0..config.keys {
        let key = format!("{PREFIX}/k{k}");
        let mut done = false;
        for attempt in 0..50 {
            let port = ports[attempt % ports.len()];
            let call = recorder.now();
            let result = request(
                port,
                "GET",
                &format!("/v2/keys{key}?quorum=true"),
                None,
                Duration::from_secs(5),
            );
            let ret = recorder.now();
            let value = match result {
                HttpResult::Answer {
                    status: 200, body, ..
                } => {
                    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    let node = &json["node"];
                    match (node["value"].as_str(), node["modifiedIndex"].as_u64()) {
                        (Some(v), Some(i)) => Some(Some((v.to_string(), i))),
                        _ => None,
                    }
                }
                HttpResult::Answer { status: 404, .. } => Some(None),
                _ => None,
            };
            let Some(value) = value else {
                thread::sleep(Duration::from_millis(200));
                continue;
            };
            let mut data = recorder.data.lock();
            if let Some((v, i)) = &value {
                max_index = max_index.max(*i);
                data.history.indexes.push(IndexObservation {
                    key: key.clone(),
                    value: v.clone(),
                    index: *i,
                    source: "final read".into(),
                });
            }
            data.history.ops.push(Operation {
                client: u64::MAX,
                call,
                ret: Some(ret),
                op: KeyOp {
                    key: key.clone(),
                    kind: KeyOpKind::Get {
                        value: value.map(|(v, _)| v),
                    },
                },
            });
            done = true;
            break;
        }
        if !done {
            stats
                .anomalies
                .push(format!("final quorum read of {key} failed"));
        }
    }
    {
        let data = recorder.data.lock();
        for w in &data.history.acked_writes {
            max_index = max_index.max(w.index);
        }
    }
    until.store(max_index.max(1), Ordering::Relaxed);
    stop_watchers.store(true, Ordering::Relaxed);
    let streams: Vec<_> = watchers.into_iter().filter_map(|w| w.join().ok()).collect();
    frames_into(&cluster, &mut stats);
    let torn: usize = (0..n).map(|i| cluster.grep_log(i, "torn tail").len()).sum();
    if torn > 0 {
        stats.notes.push(format!(
            "{torn} torn WAL tails truncated at restart (member logs)"
        ));
    }

    // Checks.
    let mut data = recorder.data.lock();
    data.streams = streams;
    for stream in &data.streams {
        let last = stream.items.iter().rev().find_map(|i| match i {
            WatchItem::Event(e) => Some(e.index),
            WatchItem::Resync => None,
        });
        if last.unwrap_or(0) < max_index && !data.acked_events.is_empty() {
            stats.anomalies.push(format!(
                "watcher {} stalled at {:?}, last write at {max_index}",
                stream.name, last
            ));
        }
    }
    let report = check_history(&data.history, 3_000_000);
    stats.ops_checked = report.ops_checked;
    stats.pruned = report.pruned;
    stats.bounded = report.bounded;
    stats.local_reads = report.local_reads_checked;
    stats.anomalies.extend(report.anomalies);
    stats.anomalies.extend(
        report
            .inconclusive
            .into_iter()
            .map(|s| format!("inconclusive: {s}")),
    );
    let watch = check_watches(&data.streams, &data.acked_events);
    stats.watch_events = watch.events;
    stats.resyncs = watch.resyncs;
    stats.anomalies.extend(watch.anomalies);
    stats.counts = data
        .counts
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    drop(data);
    if !stats.anomalies.is_empty() {
        cluster.keep_dir = true;
        stats.member_logs = Some(cluster.log_tails(30));
    }
    stats
}

fn frames_into(cluster: &Cluster, stats: &mut RunStats) {
    stats.frames = *cluster.net.counters.lock();
}
