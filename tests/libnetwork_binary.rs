//! The `calico-libnetwork` binary over etcd: flags and environment, the etcd datastore
//! adapter, the call log, the `call` subcommand, a `kill -9` and restart in the middle of
//! a Docker conversation (the datastore holds everything, so the new process carries
//! on), and a clean SIGTERM shutdown that removes the socket.
//!
//! The datastore is an etcd v2 API on loopback (etcd 3.4 with `--enable-v2`, as the
//! project's conformance suite uses), started on free ports in a temporary directory and
//! stopped on every exit path. No Docker and no `Join` here (no kernel state): the
//! Docker test covers those. Without an `etcd` binary the test skips, except under
//! `CI=true`, where it fails.

mod libnetwork_support;

use calico_model::etcd;

use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use calico_model::datastore::Datastore;
use calico_model::ipam_store::DatastoreBlockStore;
use libnetwork_support::plugin::addresses::{Allocator, CalicoIpam};
use libnetwork_support::plugin::client;
use serde_json::{json, Value};

const HOST: &str = "binhost";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The example binary next to this test's build (cargo builds examples with the tests).
fn plugin_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("examples/calico-libnetwork");
    assert!(
        bin.exists(),
        "{} is missing: `cargo test` builds it, or run `cargo build --example calico-libnetwork`",
        bin.display()
    );
    bin
}

fn etcd_binary() -> Option<PathBuf> {
    let out = Command::new("which").arg("etcd").output().ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

/// A child process killed on drop.
struct Process(Option<Child>);

impl Process {
    fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start_etcd(binary: &Path, dir: &Path) -> (Process, String) {
    let (client, peer) = (free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = std::fs::File::create(dir.join("etcd.log")).expect("etcd log");
    let child = Command::new(binary)
        .args(["--name", "lnbin", "--data-dir"])
        .arg(dir.join("etcd-data"))
        .args([
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args([
            "--initial-cluster",
            &format!("lnbin={peer_url}"),
            "--enable-v2=true",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start etcd");
    let process = Process(Some(child));
    let store = etcd::EtcdDatastore::connect(std::slice::from_ref(&client_url)).expect("client");
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.put("/tabby-libnetwork-ready", "1").is_err() {
        assert!(
            Instant::now() < deadline,
            "etcd did not start; see {}",
            dir.join("etcd.log").display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (process, client_url)
}

fn start_plugin(dir: &Path, socket: &Path, etcd_url: &str) -> Process {
    let log = std::fs::File::create(dir.join(format!(
        "plugin-{}.log",
        Instant::now().elapsed().as_nanos()
    )))
    .expect("plugin log");
    let child = Command::new(plugin_binary())
        .arg("--socket")
        .arg(socket)
        .arg("--call-log")
        .arg(dir.join("calls.jsonl"))
        .arg("--ipam-socket")
        .arg(dir.join("calico-ipam.sock"))
        .env("HOSTNAME", HOST)
        .env("ETCD_ENDPOINTS", etcd_url)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the plugin");
    let process = Process(Some(child));
    let deadline = Instant::now() + Duration::from_secs(20);
    while client::call(socket, "Plugin.Activate", None).is_err() {
        assert!(
            Instant::now() < deadline,
            "the plugin did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    process
}

fn call(socket: &Path, method: &str, body: Value) -> Value {
    let answer = client::call(socket, method, Some(&body)).expect("plugin reachable");
    assert_eq!(answer.status, 200, "{method} {body}: {}", answer.raw);
    answer.body
}

#[test]
fn the_binary_survives_kill_and_restart_over_etcd() {
    let Some(etcd_bin) = etcd_binary() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but no etcd binary to run the plugin against");
        }
        eprintln!("SKIPPED: no etcd binary on PATH");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (_etcd, etcd_url) = start_etcd(&etcd_bin, dir.path());
    let store: Arc<dyn Datastore> =
        Arc::new(etcd::EtcdDatastore::connect(std::slice::from_ref(&etcd_url)).expect("client"));
    let ipam = CalicoIpam::new(ipam::Ipam::new(DatastoreBlockStore::new(Arc::clone(
        &store,
    ))));
    ipam.ipam()
        .add_pool(ipam::Pool::new("10.77.0.0/24".parse().expect("cidr")))
        .expect("calicoctl pool add, through etcd");

    let socket = dir.path().join("calico.sock");
    let mut plugin = start_plugin(dir.path(), &socket, &etcd_url);
    let net = "7".repeat(64);
    let (ep1, ep2) = ("1".repeat(64), "2".repeat(64));
    let pool = call(
        &socket,
        "IpamDriver.RequestPool",
        json!({"AddressSpace": "CalicoLocalAddressSpace", "Pool": "10.77.0.0/24", "SubPool": "", "Options": {}, "V6": false}),
    );
    assert_eq!(pool["PoolID"], "10.77.0.0/24");
    call(
        &socket,
        "NetworkDriver.CreateNetwork",
        json!({"NetworkID": net, "Options": {}, "IPv4Data": [{"AddressSpace": "CalicoLocalAddressSpace", "Pool": "0.0.0.0/0", "Gateway": "0.0.0.0/0"}]}),
    );
    let fixed = call(
        &socket,
        "IpamDriver.RequestAddress",
        json!({"PoolID": "10.77.0.0/24", "Address": "10.77.0.10", "Options": {}}),
    );
    assert_eq!(fixed["Address"], "10.77.0.10/32");
    let auto = call(
        &socket,
        "IpamDriver.RequestAddress",
        json!({"PoolID": "10.77.0.0/24", "Address": "", "Options": {}}),
    );
    let auto = auto["Address"].as_str().expect("address").to_string();
    for (ep, address) in [(&ep1, "10.77.0.10/32"), (&ep2, auto.as_str())] {
        call(
            &socket,
            "NetworkDriver.CreateEndpoint",
            json!({"NetworkID": net, "EndpointID": ep, "Interface": {"Address": address}, "Options": {}}),
        );
    }
    let key = format!("/calico/v1/host/{HOST}/workload/libnetwork/libnetwork/endpoint/{ep1}");
    assert!(
        store.get_value(&key).expect("etcd read").is_some(),
        "endpoint in etcd"
    );

    // kill -9 in the middle of the conversation, and a new process on the same socket
    // (the stale socket file is replaced).
    plugin.kill();
    let mut plugin = start_plugin(dir.path(), &socket, &etcd_url);
    assert_eq!(ipam.allocations(HOST).expect("allocations").len(), 2);

    for ep in [&ep1, &ep2] {
        call(
            &socket,
            "NetworkDriver.DeleteEndpoint",
            json!({"NetworkID": net, "EndpointID": ep}),
        );
    }
    for address in ["10.77.0.10", auto.trim_end_matches("/32")] {
        call(
            &socket,
            "IpamDriver.ReleaseAddress",
            json!({"PoolID": "10.77.0.0/24", "Address": address}),
        );
    }
    call(
        &socket,
        "NetworkDriver.DeleteNetwork",
        json!({"NetworkID": net}),
    );
    call(
        &socket,
        "IpamDriver.ReleaseAddress",
        json!({"PoolID": "10.77.0.0/24", "Address": "0.0.0.0"}),
    );
    call(
        &socket,
        "IpamDriver.ReleasePool",
        json!({"PoolID": "10.77.0.0/24"}),
    );

    assert_eq!(
        ipam.allocations(HOST).expect("allocations"),
        Vec::new(),
        "every address released"
    );
    let report = ipam
        .ipam()
        .check(&std::collections::HashSet::<String>::new())
        .expect("IPAM check");
    assert!(
        report.leaked.is_empty() && report.handle_mismatches.is_empty(),
        "{report:?}"
    );
    assert!(
        store.get_value(&key).expect("etcd read").is_none(),
        "endpoint gone from etcd"
    );
    assert!(
        store
            .get_value(&format!("/calico/libnetwork/v1/{net}"))
            .expect("etcd read")
            .is_none(),
        "network record gone from etcd"
    );
    let free: IpAddr = "10.77.0.10".parse().expect("address");
    assert!(ipam.ipam().assignment(free).expect("assignment").is_none());

    // The IPAM role alone on its own socket (`--ipam-driver calico-ipam`).
    let ipam_socket = dir.path().join("calico-ipam.sock");
    let activate = client::call(&ipam_socket, "Plugin.Activate", None).expect("ipam socket");
    assert_eq!(activate.body, json!({"Implements": ["IpamDriver"]}));
    let network =
        client::call(&ipam_socket, "NetworkDriver.GetCapabilities", None).expect("ipam socket");
    assert_eq!(network.status, 404, "not a network driver there");
    let pool = call(
        &ipam_socket,
        "IpamDriver.RequestPool",
        json!({"AddressSpace": "CalicoLocalAddressSpace", "Pool": "", "SubPool": "", "Options": {}, "V6": false}),
    );
    assert_eq!(pool["PoolID"], "CalicoPoolIPv4");

    // `calico-libnetwork call` talks to a running plugin.
    let out = Command::new(plugin_binary())
        .arg("--socket")
        .arg(&socket)
        .args(["call", "NetworkDriver.GetCapabilities"])
        .output()
        .expect("run call");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"Scope":"local"}"#
    );

    // The call log has one JSON line per call, across both processes.
    let log = std::fs::read_to_string(dir.path().join("calls.jsonl")).expect("call log");
    let methods: Vec<String> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("JSON line")["method"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert!(
        methods
            .iter()
            .filter(|m| *m == "NetworkDriver.DeleteEndpoint")
            .count()
            == 2,
        "{methods:?}"
    );
    assert!(
        methods.iter().any(|m| m == "IpamDriver.RequestPool"),
        "{methods:?}"
    );

    // SIGTERM: the plugin stops and removes its socket.
    let pid = plugin.pid().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let mut child = plugin.0.take().expect("child");
    let exit = child.wait().expect("wait");
    assert!(exit.success(), "exit status after SIGTERM: {exit}");
    assert!(!socket.exists(), "socket removed on shutdown");
    assert!(!ipam_socket.exists(), "IPAM socket removed on shutdown");
}
