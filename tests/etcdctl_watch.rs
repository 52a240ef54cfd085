//! Long-running etcdctl commands against a real etcd 3.4: `watch --forever` and
//! `exec-watch`, ours and etcd's side by side on the same server (watchers only read,
//! so both can follow the same events), plus the v2 client's `Watcher` directly.

mod etcdctl_support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use etcdctl_support::{our_etcdctl, require, RealEtcd, REAL_ETCD, REAL_ETCDCTL};
use raft_kv::client::{Action, Client, GetOptions, WatchOptions};

/// A running etcdctl whose stdout lines arrive on a channel; killed on drop.
struct Running {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(bin: &Path, args: &[String]) -> Running {
        let mut child = Command::new(bin)
            .args(args)
            .env("ETCDCTL_API", "2")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcdctl");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            name: format!("{} {}", bin.display(), args.join(" ")),
            child,
            lines,
        }
    }

    fn next_lines(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                self.lines
                    .recv_timeout(Duration::from_secs(15))
                    .unwrap_or_else(|e| panic!("line {i} of {}: {e}", self.name))
            })
            .collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn current_index(client: &Client) -> u64 {
    client
        .get("/", &GetOptions::default())
        .expect("get /")
        .meta
        .etcd_index
        .expect("X-Etcd-Index")
}

fn binaries() -> Vec<std::path::PathBuf> {
    let mut bins = vec![our_etcdctl()];
    if require(REAL_ETCDCTL, "etcd 3.4 etcdctl") {
        bins.push(REAL_ETCDCTL.into());
    }
    bins
}

#[test]
fn watch_forever_prints_every_event_like_etcdctl() {
    if !require(REAL_ETCD, "etcd 3.4 server") {
        return;
    }
    let etcd = RealEtcd::start("watch");
    let client = Client::new(&[etcd.client_url.as_str()]).unwrap();
    let after = current_index(&client).to_string();
    let running: Vec<Running> = binaries()
        .iter()
        .map(|bin| {
            let args: Vec<String> = [
                "--endpoints",
                &etcd.client_url,
                "watch",
                "--forever",
                // Before `-r /w`: urfave/cli would take `/w` for -r's value and stop
                // parsing there, leaving a later --after-index as an argument.
                "--after-index",
                &after,
                "-r",
                "/w",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            Running::start(bin, &args)
        })
        .collect();
    client.set("/w/a", "1", &Default::default()).unwrap();
    client.mkdir("/w/dir", None).unwrap(); // directories are skipped
    client.update("/w/a", "2", None).unwrap();
    client.delete("/w/a", &Default::default()).unwrap();
    let want = [
        "[set] /w/a",
        "1",
        "[update] /w/a",
        "2",
        "[delete] /w/a",
        "PrevNode.Value: 2",
    ];
    for r in &running {
        assert_eq!(r.next_lines(want.len()), want);
    }
}

#[test]
fn exec_watch_runs_the_command_with_the_event_in_its_environment() {
    if !require(REAL_ETCD, "etcd 3.4 server") {
        return;
    }
    let etcd = RealEtcd::start("execwatch");
    let client = Client::new(&[etcd.client_url.as_str()]).unwrap();
    let after = current_index(&client);
    let running: Vec<Running> = binaries()
        .iter()
        .map(|bin| {
            let args: Vec<String> = [
                "--endpoints",
                &etcd.client_url,
                "exec-watch",
                "--after-index",
                &after.to_string(),
                "-r",
                "/e",
                "--",
                "sh",
                "-c",
                "echo \"$ETCD_WATCH_ACTION $ETCD_WATCH_KEY=$ETCD_WATCH_VALUE @$ETCD_WATCH_MODIFIED_INDEX\"",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            Running::start(bin, &args)
        })
        .collect();
    let first = client
        .set("/e/k", "hello world", &Default::default())
        .unwrap();
    let index = first.node.unwrap().modified_index;
    for r in &running {
        assert_eq!(r.next_lines(1), [format!("set /e/k=hello world @{index}")]);
    }
    let second = client.create_in_order("/e/q", "job", None).unwrap();
    let node = second.node.unwrap();
    for r in &running {
        assert_eq!(
            r.next_lines(1),
            [format!("create {}=job @{}", node.key, node.modified_index)]
        );
    }
}

#[test]
fn client_watcher_follows_events_and_times_out_quietly() {
    if !require(REAL_ETCD, "etcd 3.4 server") {
        return;
    }
    let etcd = RealEtcd::start("watcher");
    let client = Client::new(&[etcd.client_url.as_str()]).unwrap();
    let start = current_index(&client);
    // Nothing happens: the watch returns None after its timeout.
    let idle = client
        .watch(
            "/idle",
            &WatchOptions::default(),
            Some(Duration::from_millis(300)),
        )
        .unwrap();
    assert_eq!(idle, None);
    let mut w = client.watcher(
        "/q",
        &WatchOptions {
            after_index: start,
            recursive: true,
        },
    );
    // Events written before the poll are not lost (history), nor between polls.
    let a = client.create_in_order("/q", "a", None).unwrap();
    let b = client.create_in_order("/q", "b", None).unwrap();
    let e1 = w.next(Some(Duration::from_secs(10))).unwrap().unwrap();
    let e2 = w.next(Some(Duration::from_secs(10))).unwrap().unwrap();
    assert_eq!((e1.action, e2.action), (Action::Create, Action::Create));
    assert_eq!(e1.node, a.node);
    assert_eq!(e2.node, b.node);
    assert!(e2.meta.etcd_index.is_some() && e2.meta.cluster_id.is_some());
    // A watch blocked in the server returns as soon as the write happens.
    let writer = {
        let client = client.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            client.set("/q/late", "x", &Default::default()).unwrap()
        })
    };
    let e3 = w.next(Some(Duration::from_secs(10))).unwrap().unwrap();
    let written = writer.join().unwrap();
    assert_eq!(e3.node, written.node);
    assert_eq!(e3.action, Action::Set);
}
