//! A full disk under a real `etcd` example process: the member's data dir is a small
//! tmpfs mounted in a private mount namespace (`unshare -m`, so nothing leaks to the
//! host), a filler file then takes every free byte, and writes go on until the member
//! needs space. The member must stop with an error that says the disk is full (and a
//! non-zero exit status, so a supervisor restarts it); once the filler is removed it must
//! restart with every acknowledged write intact.
//!
//! Needs root (mount namespaces) and util-linux's `unshare`/`nsenter`; without root the
//! test is skipped, except under `CI=true` where that is a failure. Ports 28290–28291.

mod etcd_support;
mod robust_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use robust_support::http::{request, HttpResult};

const CLIENT: u16 = 28290;
const PEER: u16 = 28291;

/// The namespace holder (a `sleep` inside the private mount namespace) and the member;
/// both killed on drop, which unmounts the tmpfs with the namespace.
struct Guard {
    holder: Child,
    member: Option<Child>,
    dir: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut m) = self.member.take() {
            let _ = m.kill();
            let _ = m.wait();
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn in_ns(holder: u32) -> Command {
    let mut command = Command::new("nsenter");
    command.args(["-t", &holder.to_string(), "-m", "--"]);
    command
}

fn spawn_member(holder: u32, data: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log");
    in_ns(holder)
        .arg(etcd_support::example_binary("etcd"))
        .args(["--name", "solo"])
        .arg("--data-dir")
        .arg(data)
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{CLIENT}"),
        ])
        .args([
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{CLIENT}"),
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{PEER}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{PEER}"),
        ])
        .args([
            "--initial-cluster",
            &format!("solo=http://127.0.0.1:{PEER}"),
        ])
        .args(["--snapshot-count", "50"])
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn etcd in the namespace")
}

fn put(key: &str, value: &str) -> Option<u16> {
    match request(
        CLIENT,
        "PUT",
        &format!("/v2/keys/full/{key}"),
        Some(&format!("value={value}")),
        Duration::from_secs(10),
    ) {
        HttpResult::Answer { status, .. } => Some(status),
        _ => None,
    }
}

fn wait_up() {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let HttpResult::Answer { status: 200, .. } = request(
            CLIENT,
            "GET",
            "/v2/keys/?quorum=true",
            None,
            Duration::from_secs(2),
        ) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the member did not come up");
}

#[test]
fn a_full_disk_stops_the_member_and_nothing_acknowledged_is_lost() {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if !is_root {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run this test as root"
        );
        eprintln!("skipped: needs root for a private mount namespace");
        return;
    }
    let dir = PathBuf::from(format!("/tmp/tabby-robust-enospc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let mount = dir.join("disk");
    std::fs::create_dir_all(&mount).expect("mount point");
    // 64 MiB for the preallocated WAL segment plus a little for the rest.
    let holder = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs -o size=72m tmpfs {} && touch {}/.mounted && exec sleep 600",
            mount.display(),
            mount.display()
        ))
        .spawn()
        .expect("unshare");
    let mut guard = Guard {
        holder,
        member: None,
        dir: dir.clone(),
    };
    let pid = guard.holder.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !in_ns(pid)
        .args(["test", "-f"])
        .arg(mount.join(".mounted"))
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(Instant::now() < deadline, "the tmpfs was not mounted");
        std::thread::sleep(Duration::from_millis(50));
    }
    let data = mount.join("solo.etcd");
    let log = dir.join("solo.log");
    guard.member = Some(spawn_member(pid, &data, &log));
    wait_up();

    let mut acked: Vec<(String, String)> = Vec::new();
    for i in 0..20 {
        let (key, value) = (format!("k{}", i % 7), format!("before-{i}"));
        assert!(matches!(put(&key, &value), Some(200 | 201)));
        acked.push((key, value));
    }
    // Take every free byte.
    let _ = in_ns(pid)
        .args(["dd", "if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", mount.join("filler").display()))
        .stderr(Stdio::null())
        .status();
    // Write until the member stops (at its next snapshot, at the latest, it needs space).
    let mut refused = 0;
    let mut exit = None;
    for i in 0..400 {
        let (key, value) = (format!("k{}", i % 7), format!("full-{i}"));
        match put(&key, &value) {
            Some(200 | 201) => acked.push((key, value)),
            _ => refused += 1,
        }
        if let Some(status) = guard
            .member
            .as_mut()
            .and_then(|m| m.try_wait().ok().flatten())
        {
            exit = Some(status);
            break;
        }
    }
    // Once the member has failed, every write is refused at once, so the 400 attempts can
    // end while the process is still shutting down: give it time to exit.
    let deadline = Instant::now() + Duration::from_secs(15);
    while exit.is_none() && Instant::now() < deadline {
        exit = guard
            .member
            .as_mut()
            .and_then(|m| m.try_wait().ok().flatten());
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let status = exit.unwrap_or_else(|| panic!("the member never stopped on a full disk\n{text}"));
    guard.member = None;
    println!(
        "member stopped ({status}) after {} acknowledged writes, {refused} refused",
        acked.len()
    );
    assert!(
        text.contains("No space left on device"),
        "the member's log does not say the disk is full:\n{text}"
    );
    assert!(
        !status.success(),
        "a member that failed must exit non-zero ({status})\n{text}"
    );

    // Space returns.
    let _ = in_ns(pid).arg("rm").arg(mount.join("filler")).status();
    guard.member = Some(spawn_member(pid, &data, &log));
    wait_up();
    let mut last: std::collections::HashMap<&str, &str> = Default::default();
    for (key, value) in &acked {
        last.insert(key, value);
    }
    for (key, value) in last {
        let HttpResult::Answer {
            status: 200, body, ..
        } = request(
            CLIENT,
            "GET",
            &format!("/v2/keys/full/{key}?quorum=true"),
            None,
            Duration::from_secs(5),
        )
        else {
            panic!("reading {key} after the restart failed");
        };
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            json["node"]["value"], value,
            "{key} lost its acknowledged value"
        );
    }
    // And it takes writes again.
    assert!(matches!(put("after", "space-returned"), Some(200 | 201)));
}
