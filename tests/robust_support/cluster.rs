//! Real `etcd` example processes on loopback, each behind a [`Proxy`] for its peer
//! traffic, with the faults the harness injects: kill -9, restart, SIGSTOP/SIGCONT, and
//! damage to a stopped member's files (torn WAL tail, corrupted snapshot).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::http::{request, HttpResult};
use super::proxy::{Net, Proxy};

/// One member.
pub struct Member {
    /// `r<i>`.
    pub name: String,
    /// Client port.
    pub client: u16,
    /// The member's real peer port (the proxy forwards to it).
    pub peer: u16,
    /// Data dir.
    pub data_dir: PathBuf,
    /// The running process, if any.
    pub child: Option<Child>,
    /// Stopped with SIGSTOP.
    pub paused: bool,
    proxy: Proxy,
}

/// Settings of a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// A label (names, directories).
    pub label: String,
    /// Members.
    pub size: usize,
    /// First client port; member `i` uses `base + i` for clients, `base + 10 + i` for
    /// its real peer port.
    pub base_port: u16,
    /// `--snapshot-count` (small, so snapshots and compaction happen during a run).
    pub snapshot_count: u64,
    /// Seed for the proxies' loss decisions.
    pub seed: u64,
    /// The binary is the real etcd 3.4 (give it `--enable-v2`).
    pub real_etcd: bool,
}

/// A running cluster; every process is killed and the directory removed on drop (the
/// directory is kept when `keep_dir` is set, for a failed run's post-mortem).
pub struct Cluster {
    /// Settings.
    pub config: ClusterConfig,
    /// Members.
    pub members: Vec<Member>,
    /// The network of proxies.
    pub net: Arc<Net>,
    /// Where data dirs and logs live.
    pub dir: PathBuf,
    /// Keep `dir` on drop.
    pub keep_dir: bool,
    binary: PathBuf,
    initial_cluster: String,
}

impl Cluster {
    /// Starts every member and waits until the cluster answers.
    pub fn start(config: ClusterConfig, binary: PathBuf) -> Cluster {
        // One directory per run, so a failed run's (kept for the post-mortem) survives
        // the runs after it.
        let dir = PathBuf::from(format!(
            "/tmp/tabby-robust-{}-{}-{}",
            config.label,
            std::process::id(),
            config.seed
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let net = Arc::new(Net::default());
        let mut members = Vec::new();
        for i in 0..config.size {
            let client = config.base_port + i as u16;
            let peer = config.base_port + 10 + i as u16;
            let proxy = Proxy::start(Arc::clone(&net), i, peer, config.seed ^ i as u64)
                .expect("start proxy");
            members.push(Member {
                name: format!("r{i}"),
                client,
                peer,
                data_dir: dir.join(format!("r{i}.etcd")),
                child: None,
                paused: false,
                proxy,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.proxy.port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            config,
            members,
            net,
            dir,
            keep_dir: false,
            binary,
            initial_cluster,
        };
        for i in 0..cluster.members.len() {
            cluster.spawn(i);
        }
        cluster.wait_ready(Duration::from_secs(30));
        cluster.learn_ids();
        cluster
    }

    /// Starts member `i`'s process (a restart if its data dir exists).
    pub fn spawn(&mut self, i: usize) {
        let log_path = self.dir.join(format!("{}.log", self.members[i].name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        let m = &self.members[i];
        let child = Command::new(&self.binary)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{}", m.client),
            ])
            .args([
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{}", m.client),
            ])
            .args([
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", m.peer),
            ])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", m.proxy.port),
            ])
            .args(["--initial-cluster", &self.initial_cluster])
            .args([
                "--initial-cluster-token",
                &format!("robust-{}", self.config.label),
            ])
            .args(["--initial-cluster-state", "new"])
            .args(["--snapshot-count", &self.config.snapshot_count.to_string()])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(if self.config.real_etcd {
                &["--enable-v2=true"][..]
            } else {
                &[][..]
            })
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn etcd example");
        let m = &mut self.members[i];
        m.child = Some(child);
        m.paused = false;
    }

    /// Whether member `i`'s process is running (it may be paused).
    pub fn is_up(&mut self, i: usize) -> bool {
        match &mut self.members[i].child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Members whose process exited on its own (not killed by the harness), with the
    /// exit status.
    pub fn exited(&mut self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (i, m) in self.members.iter_mut().enumerate() {
            if let Some(child) = &mut m.child {
                if let Ok(Some(status)) = child.try_wait() {
                    out.push((i, status.to_string()));
                    m.child = None;
                }
            }
        }
        out
    }

    /// kill -9.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.members[i].paused = false;
    }

    /// SIGSTOP or SIGCONT.
    pub fn signal(&mut self, i: usize, pause: bool) {
        if let Some(child) = &self.members[i].child {
            let _ = Command::new("kill")
                .arg(if pause { "-STOP" } else { "-CONT" })
                .arg(child.id().to_string())
                .status();
            self.members[i].paused = pause;
        }
    }

    /// Client ports of all members.
    pub fn client_ports(&self) -> Vec<u16> {
        self.members.iter().map(|m| m.client).collect()
    }

    /// The member that says it is the leader (asked over `/v2/stats/self`).
    pub fn leader(&self) -> Option<usize> {
        for (i, m) in self.members.iter().enumerate() {
            if m.paused || m.child.is_none() {
                continue;
            }
            if let HttpResult::Answer {
                status: 200, body, ..
            } = request(
                m.client,
                "GET",
                "/v2/stats/self",
                None,
                Duration::from_millis(500),
            ) {
                if body.contains("StateLeader") {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Waits until every running member answers a quorum read.
    pub fn wait_ready(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        for m in &self.members {
            if m.child.is_none() || m.paused {
                continue;
            }
            loop {
                if let HttpResult::Answer { status, .. } = request(
                    m.client,
                    "GET",
                    "/v2/keys/?quorum=true",
                    None,
                    Duration::from_secs(2),
                ) {
                    if status == 200 {
                        break;
                    }
                }
                if Instant::now() > deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        true
    }

    fn learn_ids(&self) {
        let HttpResult::Answer { body, .. } = request(
            self.members[0].client,
            "GET",
            "/v2/members",
            None,
            Duration::from_secs(5),
        ) else {
            panic!("GET /v2/members failed");
        };
        let json: serde_json::Value = serde_json::from_str(&body).expect("members JSON");
        for member in json["members"].as_array().expect("members") {
            let id = u64::from_str_radix(member["id"].as_str().unwrap_or("0"), 16).unwrap_or(0);
            let name = member["name"].as_str().unwrap_or("");
            if let Some(i) = self.members.iter().position(|m| m.name == name) {
                self.net.learn_id(id, i);
            }
        }
    }

    /// Leaves a torn record at the tail of member `i`'s WAL (it must be stopped), as a
    /// crash in the middle of an append leaves one: after the last valid record of the
    /// last segment, a prefix of a copy of that record (`garble`: random bytes instead).
    /// Returns what was done, or `None` if there was no record or no room.
    ///
    /// The last *valid* record itself is left alone: it may have been acknowledged
    /// (fsynced before the member answered), and a member that loses acknowledged log
    /// entries breaks raft's assumptions — it stops with raft's "to_commit N is out of
    /// range" error, as etcd does (see [`Cluster::cut_last_wal_record`]).
    pub fn tear_wal_tail(&self, i: usize, garble: bool, seed: u64) -> Option<String> {
        let (path, mut bytes, last, end) = self.last_wal_record(i)?;
        let len = if garble {
            8 + (seed % 200) as usize
        } else {
            ((end - last) / 2).max(1)
        };
        if end + len > bytes.len() {
            return None;
        }
        if garble {
            let mut x = seed | 1;
            for b in &mut bytes[end..end + len] {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
        } else {
            bytes.copy_within(last..last + len, end);
        }
        std::fs::write(&path, &bytes).ok()?;
        Some(format!(
            "torn record ({} bytes, {}) after the last record of {} at {end}",
            len,
            if garble { "garbage" } else { "a partial copy" },
            path.display()
        ))
    }

    /// Cuts the last valid record of member `i`'s WAL in the middle (it must be stopped):
    /// a disk that lost a *synced* write. Not part of the random nemesis (see
    /// [`Cluster::tear_wal_tail`]).
    pub fn cut_last_wal_record(&self, i: usize) -> Option<String> {
        let (path, mut bytes, last, end) = self.last_wal_record(i)?;
        let cut = last + (end - last) / 2;
        bytes[cut..end].fill(0);
        std::fs::write(&path, &bytes).ok()?;
        Some(format!(
            "cut the last record of {} at {cut}..{end}",
            path.display()
        ))
    }

    /// The last segment of member `i`'s WAL: path, bytes, offset of its last valid
    /// record, and the end of that record.
    fn last_wal_record(&self, i: usize) -> Option<(PathBuf, Vec<u8>, usize, usize)> {
        let wal_dir = self.members[i].data_dir.join("member/wal");
        let mut names: Vec<String> = std::fs::read_dir(&wal_dir)
            .ok()?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".wal"))
            .collect();
        names.sort();
        let path = wal_dir.join(names.last()?);
        let bytes = std::fs::read(&path).ok()?;
        let scan = wal::format::scan_segment(&bytes).ok()?;
        let last = *scan.offsets.last()? as usize;
        let end = scan.end as usize;
        Some((path, bytes, last, end))
    }

    /// Flips bytes in the middle of member `i`'s newest snapshot file (it must be
    /// stopped). Returns the file and its original bytes, or `None` if it has none.
    pub fn corrupt_newest_snapshot(&self, i: usize) -> Option<(PathBuf, Vec<u8>)> {
        let snap_dir = self.members[i].data_dir.join("member/snap");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&snap_dir)
            .ok()?
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.is_file() && !p.to_string_lossy().ends_with(".tmp"))
            .collect();
        files.sort();
        let path = files.pop()?;
        let original = std::fs::read(&path).ok()?;
        if original.is_empty() {
            return None;
        }
        let mut bytes = original.clone();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x5a;
        std::fs::write(&path, &bytes).ok()?;
        Some((path, original))
    }

    /// The last lines of every member's log.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for m in &self.members {
            let text = std::fs::read_to_string(self.dir.join(format!("{}.log", m.name)))
                .unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            out.push_str(&format!(
                "== {} ({})\n{}\n",
                m.name,
                self.dir.display(),
                all[from..].join("\n")
            ));
        }
        out
    }

    /// Lines of member `i`'s log that match `pattern` (e.g. warnings about recovery).
    pub fn grep_log(&self, i: usize, pattern: &str) -> Vec<String> {
        let mut out = Vec::new();
        for m in &self.members[i..=i] {
            let text = std::fs::read_to_string(self.dir.join(format!("{}.log", m.name)))
                .unwrap_or_default();
            out.extend(
                text.lines()
                    .filter(|l| l.contains(pattern))
                    .map(|l| format!("{}: {l}", m.name)),
            );
        }
        out
    }

    /// The data dir of member `i`.
    pub fn data_dir(&self, i: usize) -> &Path {
        &self.members[i].data_dir
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].paused {
                self.signal(i, false);
            }
            self.kill(i);
        }
        self.net.heal();
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
