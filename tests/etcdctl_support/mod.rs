//! Shared by the `tests/etcdctl_*.rs` suites: a real etcd 3.4 on free loopback ports,
//! the real and our etcdctl binaries, running them, and normalizing their output.
//!
//! The real etcd and etcdctl come from Debian's `etcd-server` / `etcd-client` packages
//! (installed by `scripts/test.sh`). When they are missing, a test prints why it skips —
//! unless `CI=true`, where a missing tool fails the test: CI must exercise this.

#![allow(dead_code)] // reason: each test crate uses a different subset of these helpers.

#[path = "../golden_support/mod.rs"]
mod golden_support;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raft_kv::client::Client;

/// The real etcd server binary.
pub const REAL_ETCD: &str = "/usr/bin/etcd";
/// The real etcdctl binary.
pub const REAL_ETCDCTL: &str = "/usr/bin/etcdctl";

/// Whether `path` exists; if not, skips (returns false) or, under CI, panics.
pub fn require(path: &str, what: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{what} ({path}) is required under CI=true; scripts/test.sh installs it");
    }
    eprintln!("SKIP: {what} not found at {path} (install etcd-server/etcd-client)");
    false
}

/// A free loopback TCP port (bound to port 0 and released; etcd cannot take port 0).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// A one-member etcd 3.4 with the v2 API, killed on drop.
pub struct RealEtcd {
    child: Child,
    _dir: tempfile::TempDir,
    /// `http://127.0.0.1:<client port>`.
    pub client_url: String,
    /// `http://127.0.0.1:<peer port>`.
    pub peer_url: String,
    /// The member's ID (hex), once it is up.
    pub member_id: String,
    /// The member's name.
    pub name: String,
}

impl RealEtcd {
    /// Starts a member named `name` and waits until it has bootstrapped completely
    /// (healthy, attributes published, cluster version decided), so that the first
    /// user write always gets the same etcd index.
    pub fn start(name: &str) -> RealEtcd {
        let mut last = String::new();
        for _ in 0..4 {
            match RealEtcd::try_start(name) {
                Ok(e) => return e,
                Err(e) => last = e,
            }
        }
        panic!("could not start etcd: {last}");
    }

    fn try_start(name: &str) -> Result<RealEtcd, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let (c, p) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{c}");
        let peer_url = format!("http://127.0.0.1:{p}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).map_err(|e| e.to_string())?;
        let mut child = Command::new(REAL_ETCD)
            .args([
                "--enable-v2=true",
                "--name",
                name,
                "--data-dir",
                &dir.path().join("data").to_string_lossy(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &format!("{name}={peer_url}"),
            ])
            .env_remove("ETCD_NAME")
            .env_remove("ETCD_INITIAL_CLUSTER")
            .env_remove("ETCD_INITIAL_CLUSTER_STATE")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("spawn {REAL_ETCD}: {e}"))?;
        let client = Client::new(&[client_url.as_str()]).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.path().join("etcd.log")).unwrap_or_default();
                let tail: String = log.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
                return Err(format!("etcd exited with {status}: {tail}"));
            }
            let ready = client.health_at(&client_url).is_ok_and(|h| h.healthy)
                && client
                    .version()
                    .is_ok_and(|v| !v.etcdcluster.is_empty() && v.etcdcluster != "not_decided")
                && client.members().is_ok_and(|m| {
                    m.len() == 1 && m[0].name == name && !m[0].client_urls.is_empty()
                });
            if ready {
                let member_id = client.members().map_err(|e| e.to_string())?[0].id.clone();
                return Ok(RealEtcd {
                    child,
                    _dir: dir,
                    client_url,
                    peer_url,
                    member_id,
                    name: name.to_string(),
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("etcd did not become ready within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Replaces this server's URLs, ports and member ID by placeholders.
    pub fn normalize(&self, text: &str) -> String {
        let client = self.client_url.trim_start_matches("http://");
        let peer = self.peer_url.trim_start_matches("http://");
        text.replace(&self.member_id, "<ID>")
            .replace(client, "127.0.0.1:<CPORT>")
            .replace(peer, "127.0.0.1:<PPORT>")
    }
}

impl Drop for RealEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Our etcdctl example binary (built by `cargo test`; built here if missing).
pub fn our_etcdctl() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps");
    let path = profile_dir.join("examples").join("etcdctl");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--example", "etcdctl"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build --example etcdctl");
        assert!(status.success(), "cargo build --example etcdctl failed");
    }
    assert!(path.exists(), "{} not found after building", path.display());
    path
}

/// What a run printed and returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Exit status (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub out: String,
    /// Standard error.
    pub err: String,
}

/// Runs an etcdctl binary in v2 mode with a clean `ETCDCTL_*` environment plus `env`.
pub fn run(bin: &Path, args: &[String], env: &[(String, String)], stdin: Option<&str>) -> Run {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("ETCDCTL_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("ETCDCTL_API", "2");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).expect("write stdin");
        }
    }
    let out = child.wait_with_output().expect("wait");
    Run {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One transcript entry: the command, stdout, stderr lines prefixed `2> `, the status.
pub fn transcript_entry(command: &str, r: &Run) -> String {
    let mut s = format!("$ etcdctl {command}\n");
    s.push_str(&r.out);
    if !r.out.is_empty() && !r.out.ends_with('\n') {
        s.push_str("\\ (no newline)\n");
    }
    for line in r.err.split_inclusive('\n') {
        s.push_str("2> ");
        s.push_str(line);
    }
    if !r.err.is_empty() && !r.err.ends_with('\n') {
        s.push_str("\n2> \\ (no newline)\n");
    }
    s.push_str(&format!("[exit {}]\n\n", r.code));
    s
}

/// Compares `actual` with the golden file `tests/golden/etcdctl/<name>`; with
/// `UPDATE_GOLDEN=1` rewrites it instead.
pub fn check_golden(name: &str, actual: &str) {
    golden_support::check_golden_in("etcdctl", name, actual, false);
}
