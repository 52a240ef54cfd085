//! calico-node end to end: the walkthrough's topology (shared/walkthrough.md §2) on real
//! network namespaces, each host namespace running a real `calico-node` process over a
//! 3-member cluster of our etcd.
//!
//! * hosts A and B are namespaces joined by a veth (10.77.0.1/24 — 10.77.0.2/24);
//!   `calico-node` runs in each (`ip netns exec`), host A programming iptables-legacy
//!   and host B nf_tables, so both backends carry the traffic;
//! * the etcd members listen on the root namespace's loopback; a forwarder makes each
//!   reachable on 127.0.0.1 inside the host namespaces;
//! * the test writes the state with `CalicoStore` as calicoctl would (pool
//!   10.20.10.0/24 with IP-in-IP and nat-outgoing, carried over VXLAN since the kernel
//!   has no IP-in-IP; profiles myprofile1 and myprofile2, containers centos-1 and
//!   centos-2 on A and centos-3 on B as namespaces with `cali` veths), and after each
//!   change measures the whole reachability matrix with real pings until it equals
//!   `policy::allowed` for every ordered pair (bounded wait), printing how long the
//!   agents took to converge;
//! * changes: no profiles (nobody reachable), the walkthrough's profiles, centos-2
//!   moved to myprofile1, centos-3 moved to myprofile2, one etcd member killed and
//!   centos-3 moved back and forth (the agents fail over), centos-2 removed while host
//!   A's agent is killed (the restarted agent removes its chains and route); then SIGTERM leaves host A's chains in place and
//!   `calico-node --once --cleanup` removes them; removing host B from the datastore
//!   (as `calicoctl node remove --hostname=hostB` does) makes its agent remove what it
//!   programmed and exit 0;
//! * once with static routes, once with BIRD (full iBGP mesh between the agents);
//! * and `calico-node --once` on an embedded store (`--data-dir`): registration, the
//!   `--ipip` warning on kernels without IP-in-IP, the data directory's lock, cleanup.
//!
//! Needs root, ip, ipset, iptables-legacy/nft, bird; skipped with a message without
//! them, a failure under `CI=true`. Addresses exist only inside the test's namespaces.

mod calico_node_support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use calico_model::dataplane::chain_names;
use calico_model::datastore::{Datastore, DeleteOptions};
use calico_model::embedded::EmbeddedDatastore;
use calico_model::etcd::EtcdDatastore;
use calico_model::linux::{attach_workload, IptablesBackend, Netns, WorkloadLink};
use calico_model::model::{EndpointKey, Pool, WorkloadEndpoint};
use calico_model::policy;
use calico_model::rule::Protocol;
use calico_model::scenario::{endpoint_id, mac_for};
use calico_model::store::{CalicoStore, ProfileUpdate};
use calico_node_support::{
    example_binary, ping, privileged, EtcdCluster, Forwarder, Namespaces, Process,
};

const HOSTS: [(&str, &str, IptablesBackend); 2] = [
    ("hostA", "10.77.0.1", IptablesBackend::Legacy),
    ("hostB", "10.77.0.2", IptablesBackend::Nft),
];
const CONTAINERS: [(&str, &str, &str); 3] = [
    ("centos-1", "hostA", "10.20.10.1"),
    ("centos-2", "hostA", "10.20.10.2"),
    ("centos-3", "hostB", "10.20.10.3"),
];

struct Host {
    ns: Netns,
    backend: IptablesBackend,
    node: Option<Process>,
    forwarders: Vec<Forwarder>,
    endpoints: String,
}

fn backend_flag(b: IptablesBackend) -> &'static str {
    match b {
        IptablesBackend::Legacy => "legacy",
        IptablesBackend::Nft => "nft",
        IptablesBackend::System => "system",
    }
}

fn node_command(host: &str, ip: &str, h: &Host, routing: &str, run_dir: &Path) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", h.ns.name()])
        .arg(example_binary("calico-node"))
        .args(["--name", host, "--ip", ip])
        .args(["--etcd-endpoints", &h.endpoints])
        .args(["--iptables-backend", backend_flag(h.backend)])
        .args(["--routing", routing])
        .arg("--run-dir")
        .arg(run_dir)
        .args(["--log-level", "info"])
        .env_remove("ETCD_ENDPOINTS")
        .env_remove("ETCD_AUTHORITY")
        .stdin(Stdio::null());
    cmd
}

fn start_node(host: &str, ip: &str, h: &Host, routing: &str, dir: &Path) -> Process {
    let log = dir.join(format!("{host}.log"));
    let file = std::fs::File::create(&log).expect("log");
    let child = node_command(host, ip, h, routing, &dir.join(host))
        .stdout(Stdio::from(file.try_clone().expect("log")))
        .stderr(Stdio::from(file))
        .spawn()
        .expect("spawn calico-node");
    Process { child, log }
}

fn felix_chains(h: &Host) -> usize {
    h.ns.exec(&h.backend.binary(true, "save"), &["-t", "filter"], None)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(":felix-"))
        .count()
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// Reachability by (source, destination) container.
type Matrix = BTreeMap<(String, String), bool>;

struct Walkthrough {
    spaces: Namespaces,
    cluster: EtcdCluster,
    store: CalicoStore<EtcdDatastore>,
    hosts: BTreeMap<String, Host>,
    containers: BTreeMap<String, (EndpointKey, Netns, Ipv4Addr)>,
    dir: tempfile::TempDir,
    routing: &'static str,
}

impl Walkthrough {
    fn logs(&self) -> String {
        let mut out = String::new();
        for (name, h) in &self.hosts {
            if let Some(p) = &h.node {
                out.push_str(&format!("== calico-node {name}\n{}\n", p.log_tail()));
            }
            let bird_log = self.dir.path().join(name).join("bird.log");
            if let Ok(text) = std::fs::read_to_string(&bird_log) {
                out.push_str(&format!("== {name} bird.log\n{text}\n"));
                let conf = self.dir.path().join(name).join("bird.conf");
                out.push_str(&std::fs::read_to_string(conf).unwrap_or_default());
                let ctl = self.dir.path().join(name).join("bird.ctl");
                let ctl = ctl.to_string_lossy();
                for what in [&["show", "protocols"][..], &["show", "route", "all"][..]] {
                    let mut args = vec!["-s", &*ctl];
                    args.extend_from_slice(what);
                    out.push_str(
                        &h.ns
                            .exec("birdc", &args, None)
                            .unwrap_or_else(|e| e.to_string()),
                    );
                }
            }
            let show = |args: &[&str]| h.ns.ip(args).unwrap_or_else(|e| e.to_string());
            out.push_str(&format!(
                "== {name} routes\n{}== {name} neighbours\n{}== {name} vxlan fdb\n{}\n",
                show(&["-4", "route", "show", "table", "all"]),
                show(&["neigh", "show"]),
                h.ns.exec("bridge", &["fdb", "show", "dev", "vxlan.calico"], None)
                    .unwrap_or_else(|e| e.to_string()),
            ));
        }
        out + &self.cluster.log_tails()
    }

    /// The matrix measured with ping, and the one `policy::allowed` gives.
    fn matrices(&self) -> (Matrix, Matrix) {
        let state = self.store.snapshot().expect("snapshot");
        let mut measured = BTreeMap::new();
        let mut wanted = BTreeMap::new();
        for (src, (sk, sns, _)) in &self.containers {
            for (dst, (dk, _, dip)) in &self.containers {
                if src == dst {
                    continue;
                }
                let want = policy::allowed(&state, sk, dk, Protocol::Icmp, None);
                let got = ping(sns, IpAddr::V4(*dip));
                wanted.insert((src.clone(), dst.clone()), want);
                measured.insert((src.clone(), dst.clone()), got);
            }
        }
        (measured, wanted)
    }

    /// Waits until the measured matrix equals policy; returns how long it took.
    fn converge(&self, label: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let (measured, wanted) = self.matrices();
            if measured == wanted {
                let took = start.elapsed();
                eprintln!(
                    "[{}] {label}: matrix == policy::allowed after {:.2} s: {:?}",
                    self.routing,
                    took.as_secs_f64(),
                    wanted
                        .iter()
                        .map(|((s, d), ok)| format!("{s}->{d}:{}", if *ok { "ok" } else { "x" }))
                        .collect::<Vec<_>>()
                );
                return took;
            }
            if start.elapsed() > timeout {
                panic!(
                    "[{}] {label}: reachability never matched policy within {timeout:?}\nmeasured {measured:?}\npolicy   {wanted:?}\n{}",
                    self.routing,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn build(label: &str, routing: &'static str) -> Walkthrough {
    let cluster = EtcdCluster::ours(label, 3);
    let mut spaces = Namespaces::new(&format!("tcn{label}"));
    let ds = EtcdDatastore::connect(&cluster.endpoints()).expect("connect");
    let store = CalicoStore::new(ds);
    // `calicoctl pool add 10.20.10.0/24 --ipip --nat-outgoing`; the kernel here has no
    // IP-in-IP, so the agents (default `--encap vxlan`) carry it over VXLAN.
    let mut pool = Pool::new("10.20.10.0/24".parse().expect("cidr"));
    pool.ipip = true;
    pool.masquerade = true;
    store.add_pools(&[pool]).expect("pool add");

    let mut hosts = BTreeMap::new();
    for (name, ip, backend) in HOSTS {
        let ns = spaces.add(name);
        let forwarders: Vec<Forwarder> = cluster
            .members
            .iter()
            .map(|m| Forwarder::start(&ns, m.client_port))
            .collect();
        let endpoints = forwarders
            .iter()
            .map(|f| format!("http://127.0.0.1:{}", f.port))
            .collect::<Vec<_>>()
            .join(",");
        hosts.insert(
            name.to_string(),
            Host {
                ns,
                backend,
                node: None,
                forwarders,
                endpoints,
            },
        );
        let _ = ip;
    }
    let (a, b) = (&hosts["hostA"].ns, &hosts["hostB"].ns);
    a.ip(&[
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        b.name(),
    ])
    .expect("host link");
    for (name, ip, _) in HOSTS {
        let ns = &hosts[name].ns;
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])
            .expect("addr");
        ns.ip(&["link", "set", "eth0", "up"]).expect("up");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, ip, _) in HOSTS {
        let process = start_node(name, ip, &hosts[name], routing, dir.path());
        hosts.get_mut(name).expect("host").node = Some(process);
    }
    let mut w = Walkthrough {
        spaces,
        cluster,
        store,
        hosts,
        containers: BTreeMap::new(),
        dir,
        routing,
    };
    // Both agents register their hosts.
    wait_for("both hosts to register", Duration::from_secs(20), || {
        w.store
            .snapshot()
            .is_ok_and(|s| HOSTS.iter().all(|(h, ..)| s.hosts.contains_key(*h)))
    });
    // `calicoctl container add <name> <ip>`: a namespace, a cali veth, the endpoint.
    for (name, host, ip) in CONTAINERS {
        let ns = w.spaces.add(name);
        let id = endpoint_id(name);
        let iface = WorkloadEndpoint::interface_name_for(&id);
        let ipv4: Ipv4Addr = ip.parse().expect("ip");
        let mac = attach_workload(&WorkloadLink {
            host: &w.hosts[host].ns,
            container: &ns,
            host_iface: &iface,
            container_iface: "eth1",
            ipv4: &[ipv4],
            mac: Some(mac_for(name)),
        })
        .expect("attach workload");
        let key = EndpointKey {
            host: host.to_string(),
            orchestrator: "docker".into(),
            workload: name.to_string(),
            endpoint: id,
        };
        let ep = WorkloadEndpoint::new(
            &iface,
            Some(mac),
            vec![format!("{ip}/32").parse().expect("net")],
            vec![],
        );
        w.store.create_endpoint(&key, &ep).expect("create endpoint");
        w.containers.insert(name.to_string(), (key, ns, ipv4));
    }
    w
}

fn set_profiles(w: &Walkthrough, container: &str, profiles: &[&str]) {
    let key = &w.containers[container].0;
    w.store
        .update_endpoint_profiles(
            key,
            &ProfileUpdate::Set(profiles.iter().map(|p| p.to_string()).collect()),
        )
        .expect("profile set");
}

/// Moves `container` to `profile` and measures how long its host's agent takes to
/// program it: until the endpoint's `felix-to-` chain jumps to the profile's inbound
/// chain in the host's iptables.
fn move_and_time(w: &Walkthrough, container: &str, profile: &str) -> Duration {
    let (key, ..) = &w.containers[container];
    let host = &w.hosts[&key.host];
    let iface = WorkloadEndpoint::interface_name_for(&key.endpoint);
    let to_chain = chain_names::to_endpoint(&chain_names::endpoint_suffix(&iface, "cali"));
    let jump = format!("-A {to_chain} -j {}", chain_names::profile(profile, true));
    let programmed = || {
        host.ns
            .exec(&host.backend.binary(true, "save"), &["-t", "filter"], None)
            .unwrap_or_default()
            .lines()
            .any(|l| l == jump)
    };
    assert!(!programmed(), "{container} is not in {profile} yet");
    set_profiles(w, container, &[profile]);
    let took = wait_for(
        &format!("{container}'s move to {profile} to be programmed ({jump})"),
        Duration::from_secs(10),
        programmed,
    );
    eprintln!(
        "[{}] {container} -> {profile}: programmed on {} {:.0} ms after the write",
        w.routing,
        key.host,
        took.as_secs_f64() * 1000.0
    );
    took
}

fn walkthrough(label: &str, routing: &'static str) {
    let mut w = build(label, routing);
    // BIRD needs its sessions up before cross-host routes exist; static is immediate.
    let first = if routing == "bird" { 60 } else { 20 };
    w.converge(
        "containers without profiles reach nobody",
        Duration::from_secs(first),
    );

    w.store.add_profile("myprofile1").expect("profile add");
    w.store.add_profile("myprofile2").expect("profile add");
    set_profiles(&w, "centos-1", &["myprofile1"]);
    set_profiles(&w, "centos-2", &["myprofile2"]);
    set_profiles(&w, "centos-3", &["myprofile1"]);
    w.converge("walkthrough profiles", Duration::from_secs(first));
    // The cross-host route comes from the routing mode under test.
    let proto = if routing == "bird" { "bird" } else { "80" };
    let route = w.hosts["hostA"]
        .ns
        .ip(&[
            "-4",
            "route",
            "show",
            "to",
            "match",
            "10.20.10.3",
            "proto",
            proto,
        ])
        .expect("ip route");
    assert!(
        route.contains("dev vxlan.calico"),
        "[{routing}] hostA has no proto {proto} route to centos-3 over VXLAN: {route:?}"
    );
    eprintln!("[{routing}] hostA's route to centos-3: {}", route.trim());

    let mut figures = Vec::new();
    figures.push(move_and_time(&w, "centos-2", "myprofile1"));
    w.converge("centos-2 moved to myprofile1", Duration::from_secs(10));
    figures.push(move_and_time(&w, "centos-3", "myprofile2"));
    w.converge("centos-3 moved to myprofile2", Duration::from_secs(10));

    // A member crashes (the first endpoint every agent uses): the agents fail over to
    // the other two and keep following the datastore.
    w.cluster.kill(0);
    for h in w.hosts.values_mut() {
        // Its address in the host namespaces now refuses connections, as a dead
        // member's would.
        h.forwarders.remove(0);
    }
    figures.push(move_and_time(&w, "centos-3", "myprofile1"));
    w.converge(
        "centos-3 back in myprofile1, one etcd member down",
        Duration::from_secs(15),
    );
    set_profiles(&w, "centos-3", &["myprofile2"]);
    w.converge("centos-3 in myprofile2 again", Duration::from_secs(15));

    // `calicoctl container remove centos-2` while host A's agent is down (SIGKILL): the
    // restarted agent finds the endpoint gone and removes its route and chains.
    {
        let host_a = w.hosts.get_mut("hostA").expect("hostA");
        let mut node = host_a.node.take().expect("node");
        let _ = node.child.kill();
        let _ = node.child.wait();
    }
    let (key2, _, ip2) = w.containers.remove("centos-2").expect("centos-2");
    let iface2 = WorkloadEndpoint::interface_name_for(&key2.endpoint);
    w.store
        .remove_workload(&key2.host, &key2.orchestrator, &key2.workload)
        .expect("remove workload");
    let restarted = start_node(
        "hostA",
        "10.77.0.1",
        &w.hosts["hostA"],
        routing,
        w.dir.path(),
    );
    w.hosts.get_mut("hostA").expect("hostA").node = Some(restarted);
    let host_a = &w.hosts["hostA"];
    let took = wait_for("centos-2's route to go", Duration::from_secs(20), || {
        !host_a
            .ns
            .ip(&["-4", "route", "show", &format!("{ip2}/32")])
            .unwrap_or_default()
            .contains(&iface2)
    });
    eprintln!(
        "[{routing}] centos-2 removed while hostA's agent was down: route gone {:.2} s after the restart",
        took.as_secs_f64()
    );
    let suffix: String = iface2.trim_start_matches("cali").to_string();
    assert!(
        !host_a
            .ns
            .exec(
                &host_a.backend.binary(true, "save"),
                &["-t", "filter"],
                None
            )
            .expect("save")
            .contains(&suffix),
        "centos-2's chains are gone"
    );
    w.converge("after centos-2 removed", Duration::from_secs(10));
    eprintln!(
        "[{routing}] profile moves programmed after (write -> iptables): {:?}",
        figures
    );

    // SIGTERM leaves the dataplane; --once --cleanup removes it.
    let host_a = w.hosts.get_mut("hostA").expect("hostA");
    let mut node = host_a.node.take().expect("node");
    let status = node
        .terminate(Duration::from_secs(10))
        .expect("exits on SIGTERM");
    assert!(
        status.success(),
        "calico-node exit {status}: {}",
        node.log_tail()
    );
    drop(node);
    assert!(
        felix_chains(host_a) > 0,
        "SIGTERM leaves the chains in place"
    );
    let out = node_command(
        "hostA",
        "10.77.0.1",
        host_a,
        routing,
        &w.dir.path().join("hostA"),
    )
    .args(["--once", "--cleanup"])
    .output()
    .expect("calico-node --once --cleanup");
    assert!(
        out.status.success(),
        "--once --cleanup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        felix_chains(host_a),
        0,
        "--cleanup removes every felix chain"
    );
    let routes = host_a
        .ns
        .ip(&["-4", "route", "show", "proto", "80"])
        .expect("routes");
    assert!(routes.trim().is_empty(), "owned routes left: {routes}");

    // `calicoctl node remove --hostname=hostB` (its endpoints already gone): hostB's
    // agent sees its registration disappear, removes what it owns and exits 0.
    w.store
        .remove_workload("hostB", "docker", "centos-3")
        .expect("remove centos-3");
    let recursive = DeleteOptions {
        recursive: true,
        ..DeleteOptions::default()
    };
    for dir in [
        calico_model::layout::host_dir("hostB"),
        calico_model::layout::bgp_host_dir("hostB"),
    ] {
        w.store
            .datastore()
            .delete(&dir, &recursive)
            .unwrap_or_else(|e| panic!("delete {dir}: {e}"));
    }
    let host_b = w.hosts.get_mut("hostB").expect("hostB");
    let mut node = host_b.node.take().expect("node");
    let took = wait_for("hostB's agent to exit", Duration::from_secs(10), || {
        matches!(node.child.try_wait(), Ok(Some(_)))
    });
    let status = node.child.wait().expect("status");
    assert!(status.success(), "exit {status}: {}", node.log_tail());
    assert_eq!(felix_chains(host_b), 0, "host removal removes its chains");
    eprintln!(
        "[{routing}] hostB removed from the datastore: its agent cleaned up and exited after {:.2} s",
        took.as_secs_f64()
    );
}

#[test]
fn walkthrough_over_our_etcd_with_static_routes() {
    if !privileged(&[
        "ip",
        "ipset",
        "iptables-legacy-restore",
        "iptables-nft-restore",
        "bridge",
    ]) {
        return;
    }
    walkthrough("s", "static");
}

#[test]
fn walkthrough_over_our_etcd_with_bird() {
    if !privileged(&[
        "ip",
        "ipset",
        "iptables-legacy-restore",
        "iptables-nft-restore",
        "bird",
        "birdc",
    ]) {
        return;
    }
    walkthrough("b", "bird");
}

/// `calico-node --once` on an embedded store (`--data-dir`): registers the host,
/// programs its namespace and exits; `--ipip` is reported as unsupported (and VXLAN
/// used) where the kernel lacks IP-in-IP; a second process on the same data directory
/// is refused with a clear error; `--once --cleanup` removes what it programmed.
#[test]
fn once_on_an_embedded_store() {
    if !privileged(&["ip", "ipset", "iptables-nft-restore"]) {
        return;
    }
    let mut spaces = Namespaces::new("tcno");
    let ns = spaces.add("host");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let node = |extra: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(example_binary("calico-node"))
            .args([
                "--name",
                "solo",
                "--ip",
                "10.77.9.1",
                "--iptables-backend",
                "nft",
            ])
            .arg("--data-dir")
            .arg(&data)
            .arg("--run-dir")
            .arg(dir.path().join("run"))
            .args(extra)
            .env_remove("ETCD_ENDPOINTS")
            .env_remove("ETCD_AUTHORITY")
            .output()
            .expect("run calico-node");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Whether this kernel can do IP-in-IP at all (probed in a scratch namespace).
    let probe = spaces.add("probe");
    let kernel_has_ipip = probe
        .ip(&["link", "add", "name", "tunl0", "type", "ipip"])
        .is_ok();

    let (status, stderr) = node(&["--once", "--ipip"]);
    assert_eq!(status, Some(0), "calico-node --once failed:\n{stderr}");
    assert_eq!(
        stderr.contains("IP-in-IP is not supported on this kernel"),
        !kernel_has_ipip,
        "the --ipip warning matches the kernel:\n{stderr}"
    );
    let h = Host {
        ns: ns.clone(),
        backend: IptablesBackend::Nft,
        node: None,
        forwarders: Vec::new(),
        endpoints: String::new(),
    };
    assert!(felix_chains(&h) > 0, "--once programs the chains");

    {
        let store = CalicoStore::new(EmbeddedDatastore::open(&data).expect("reopen the store"));
        let state = store.snapshot().expect("snapshot");
        assert_eq!(
            state.hosts.get("solo").and_then(|r| r.ipv4()),
            Some("10.77.9.1".parse().expect("ip")),
            "the host registered itself"
        );
        // While this process holds the store, calico-node is refused.
        let (status, stderr) = node(&["--once"]);
        assert_eq!(status, Some(1), "a second user of the data dir must fail");
        assert!(stderr.contains("in use by process"), "{stderr}");
    }

    let (status, stderr) = node(&["--once", "--cleanup"]);
    assert_eq!(status, Some(0), "--once --cleanup failed:\n{stderr}");
    assert_eq!(felix_chains(&h), 0, "--cleanup removes the chains");
}
