//! Shared by `tests/calico_node*.rs` and `tests/calico_datastore*.rs`: etcd clusters of
//! our `etcd` example and a real etcd 3.4 on free loopback ports, network namespaces
//! with cleanup guards, a TCP forwarder that makes the root namespace's loopback
//! etcd reachable from inside a namespace, calico-node processes, and ping.
//!
//! Everything started here is stopped on drop (also when a test panics): child
//! processes by their own PIDs, namespaces by name, forwarders by a stop flag.
#![allow(dead_code)] // reason: each test crate uses a different subset of these helpers.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use calico_model::linux::{run, Netns};
use raft_kv::client::Client;

/// Whether `CI=true`.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// True when `program` is on PATH.
pub fn have(program: &str) -> bool {
    run("sh", &["-c".into(), format!("command -v {program}")], None).is_ok()
}

/// True when the test can use root network features, `ping` (or busybox's) and
/// `tools`; false (with a message) when it must skip; panics under `CI=true` instead of
/// skipping.
pub fn privileged(tools: &[&str]) -> bool {
    let uid = run("id", &["-u".into()], None).unwrap_or_default();
    if uid.trim() != "0" {
        assert!(
            !ci(),
            "CI=true but not root: these tests must run as root in CI"
        );
        eprintln!("SKIPPED: needs root (runs in CI as root)");
        return false;
    }
    if !(have("ping") || have("busybox")) {
        assert!(!ci(), "CI=true but neither ping nor busybox is installed");
        eprintln!("SKIPPED: needs ping or busybox");
        return false;
    }
    for tool in tools {
        if !have(tool) {
            assert!(
                !ci(),
                "CI=true but {tool} is missing (scripts/test.sh installs it)"
            );
            eprintln!("SKIPPED: {tool} not installed");
            return false;
        }
    }
    true
}

/// A free loopback TCP port (bound to port 0 and released; etcd cannot take port 0).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// `target/<profile>/examples/<name>`, built if missing.
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build --example");
        assert!(status.success(), "cargo build --example {name} failed");
    }
    assert!(path.exists(), "{} not found after building", path.display());
    path
}

fn wait_ready(client_url: &str, members: usize, deadline: Instant) -> Result<(), String> {
    let client = Client::new(&[client_url]).map_err(|e| e.to_string())?;
    loop {
        let ready = client.health_at(client_url).is_ok_and(|h| h.healthy)
            && client
                .members()
                .is_ok_and(|m| m.len() == members && m.iter().all(|m| !m.client_urls.is_empty()));
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{client_url} not ready in time"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A running etcd member (ours or the real one), killed on drop.
pub struct Member {
    /// The member name.
    pub name: String,
    /// `http://127.0.0.1:<port>`.
    pub client_url: String,
    /// The client port.
    pub client_port: u16,
    child: Child,
    log: PathBuf,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An etcd cluster on loopback (members killed and data removed on drop).
pub struct EtcdCluster {
    /// The members.
    pub members: Vec<Member>,
    dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// `n` members of our `etcd` example on free ports.
    pub fn ours(label: &str, n: usize) -> EtcdCluster {
        Self::start_retrying(label, n, &example_binary("etcd"), &[])
    }

    /// One member of Debian's etcd 3.4 with `--enable-v2=true`; `None` (skip) when it is
    /// not installed, except under CI where that panics.
    pub fn real(label: &str) -> Option<EtcdCluster> {
        const REAL: &str = "/usr/bin/etcd";
        if !Path::new(REAL).exists() {
            assert!(
                !ci(),
                "CI=true but {REAL} is missing (scripts/test.sh installs etcd-server)"
            );
            eprintln!("SKIPPED: {REAL} not installed (apt-get install etcd-server)");
            return None;
        }
        Some(Self::start_retrying(
            label,
            1,
            Path::new(REAL),
            &["--enable-v2=true"],
        ))
    }

    fn start_retrying(label: &str, n: usize, binary: &Path, extra: &[&str]) -> EtcdCluster {
        let mut last = String::new();
        // Free ports can be taken between probing and binding: try again on new ones.
        for _ in 0..3 {
            match Self::try_start(label, n, binary, extra) {
                Ok(c) => return c,
                Err(e) => last = e,
            }
        }
        panic!(
            "could not start an etcd cluster with {}: {last}",
            binary.display()
        );
    }

    fn try_start(
        label: &str,
        n: usize,
        binary: &Path,
        extra: &[&str],
    ) -> Result<EtcdCluster, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("{label}{i}=http://127.0.0.1:{p}"))
            .collect();
        let mut members = Vec::new();
        for (i, (c, p)) in ports.iter().enumerate() {
            let name = format!("{label}{i}");
            let client_url = format!("http://127.0.0.1:{c}");
            let peer_url = format!("http://127.0.0.1:{p}");
            let log = dir.path().join(format!("{name}.log"));
            let file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
            let child = Command::new(binary)
                .args(extra)
                .args(["--name", &name])
                .arg("--data-dir")
                .arg(dir.path().join(format!("{name}.etcd")))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-token", &format!("tabby-{label}")])
                .args(["--initial-cluster-state", "new"])
                .env_remove("ETCD_NAME")
                .env_remove("ETCD_INITIAL_CLUSTER")
                .env_remove("ETCD_INITIAL_CLUSTER_STATE")
                .stdin(Stdio::null())
                .stdout(Stdio::from(file.try_clone().map_err(|e| e.to_string())?))
                .stderr(Stdio::from(file))
                .spawn()
                .map_err(|e| format!("spawn {}: {e}", binary.display()))?;
            members.push(Member {
                name,
                client_url,
                client_port: *c,
                child,
                log,
            });
        }
        let cluster = EtcdCluster { members, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        for m in &cluster.members {
            wait_ready(&m.client_url, n, deadline)
                .map_err(|e| format!("{e}\n{}", cluster.log_tails()))?;
        }
        Ok(cluster)
    }

    /// Kills member `i` (SIGKILL) and waits for it: a crashed member.
    pub fn kill(&mut self, i: usize) {
        let m = &mut self.members[i];
        let _ = m.child.kill();
        let _ = m.child.wait();
    }

    /// The client URLs.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// The last lines of every member's log.
    pub fn log_tails(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("== {}\n{}\n", m.name, log_tail(&m.log)))
            .collect()
    }

    /// The data directory of the cluster (member logs live there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Creates namespaces and deletes them all when dropped (also on panic).
pub struct Namespaces {
    prefix: String,
    created: Vec<Netns>,
}

impl Namespaces {
    /// Namespaces named `<prefix>-<pid>-<role>`.
    pub fn new(prefix: &str) -> Namespaces {
        Namespaces {
            prefix: format!("{prefix}-{}", std::process::id()),
            created: Vec::new(),
        }
    }

    /// Creates `<prefix>-<pid>-<role>` (removing a leftover of a crashed run with our pid).
    pub fn add(&mut self, role: &str) -> Netns {
        let name = format!("{}-{role}", self.prefix);
        let _ = Netns::new(&name).delete();
        let ns = Netns::create(&name).unwrap_or_else(|e| panic!("creating {name}: {e}"));
        self.created.push(ns.clone());
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            // Processes still inside (a BIRD that outlived its agent) would keep the
            // namespace alive: kill them by PID first.
            if let Ok(pids) = run(
                "ip",
                &["netns".into(), "pids".into(), ns.name().into()],
                None,
            ) {
                for pid in pids.split_whitespace() {
                    let _ = run("kill", &["-9".into(), pid.into()], None);
                }
            }
            if let Err(e) = ns.delete() {
                eprintln!("warning: could not delete namespace {}: {e}", ns.name());
            }
        }
    }
}

/// A TCP listener on 127.0.0.1 (port chosen by the kernel) *inside* `ns`: a thread
/// enters the namespace, binds, and hands the socket back (a socket stays in the
/// namespace it was created in, whichever thread uses it).
pub fn listen_in(ns: &Netns) -> TcpListener {
    let path = format!("/run/netns/{}", ns.name());
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        TcpListener::bind("127.0.0.1:0").expect("bind inside the namespace")
    })
    .join()
    .expect("the setns thread")
}

/// Forwards connections accepted inside a namespace to a loopback port of the root
/// namespace (how calico-node in a host namespace reaches the test's etcd). Stops on
/// drop.
pub struct Forwarder {
    /// The port inside the namespace.
    pub port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Forwarder {
    /// Listens on 127.0.0.1 inside `ns` and forwards to `127.0.0.1:target` here.
    pub fn start(ns: &Netns, target: u16) -> Forwarder {
        let listener = listen_in(ns);
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let accept = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((inside, _)) => {
                        let _ = inside.set_nonblocking(false);
                        let Ok(outside) = TcpStream::connect(("127.0.0.1", target)) else {
                            continue;
                        };
                        let (i2, o2) = match (inside.try_clone(), outside.try_clone()) {
                            (Ok(i), Ok(o)) => (i, o),
                            _ => continue,
                        };
                        std::thread::spawn(move || pump(inside, outside));
                        std::thread::spawn(move || pump(o2, i2));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Forwarder {
            port,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// A child process stopped on drop: SIGTERM, then SIGKILL after 5 s.
pub struct Process {
    /// The child.
    pub child: Child,
    /// Its combined output file.
    pub log: PathBuf,
}

impl Process {
    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = run("kill", &["-TERM".into(), self.child.id().to_string()], None);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.terminate(Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `ping`, or busybox's (CI installs busybox-static, not iputils-ping).
pub fn ping_program() -> (&'static str, &'static [&'static str]) {
    if have("ping") {
        ("ping", &["-n", "-q", "-c1", "-W1"])
    } else {
        ("busybox", &["ping", "-q", "-c1", "-W1"])
    }
}

/// One ping from `from` to `to` (1 s timeout).
pub fn ping(from: &Netns, to: std::net::IpAddr) -> bool {
    let target = to.to_string();
    let (program, flags) = ping_program();
    let mut args: Vec<&str> = flags.to_vec();
    args.push(&target);
    from.exec(program, &args, None).is_ok()
}
