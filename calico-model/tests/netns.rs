//! Root-only tests against the real kernel, inside throwaway network namespaces named
//! `tabby-test-<pid>-<test>-<role>` (deleted on every exit path by a guard):
//!
//! * rendered tables pass `iptables-restore --test` on the legacy and nf_tables backends
//!   (legacy catches jumps to missing chains), and `bird -p` accepts the rendered
//!   `bird.conf`;
//! * a two-host walkthrough topology applied with `linux::Applier` pings exactly where
//!   `policy::allowed` says it may, re-applies idempotently, follows a profile change,
//!   switches to VXLAN, reports IP-in-IP as unsupported on kernels without it, and is
//!   removed without leftovers;
//! * the same topology with `Routing::Bird`: the rendered `bird.conf` runs (one `bird`
//!   per host namespace, killed by its PID), forms the iBGP mesh, installs the peer's
//!   block and borrowed /32 (own block blackholed, own /32s aggregated), and pings match
//!   policy — plainly routed and again with the pool encapsulated in VXLAN.
//!
//! Not root: skipped with a message, except under `CI=true`, where that is a failure.
//! Only addresses inside the namespaces are used (10.77.0.0/24, 10.20.10.0/24).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use std::time::Duration;

use calico_model::dataplane::incremental::HostDataplane;
use calico_model::dataplane::{render_host, HostPlan, RenderOptions, Routing};
use calico_model::datastore::{Datastore, MemoryDatastore};
use calico_model::linux::{
    attach_workload, run, Applier, IptablesBackend, Netns, WorkloadLink, ROUTE_PROTOCOL,
};
use calico_model::model::{EndpointKey, Pool};
use calico_model::rule::{Action, PortRange, Protocol, Rule, Rules};
use calico_model::scenario::{mac_for, Scenario};
use calico_model::state::ClusterState;
use calico_model::store::{CalicoStore, ProfileUpdate};
use calico_model::{layout, policy, Error};

/// Creates namespaces and deletes them all when dropped (also on panic).
struct Namespaces {
    prefix: String,
    created: Vec<Netns>,
}

impl Namespaces {
    fn new(test: &str) -> Namespaces {
        Namespaces {
            prefix: format!("tabby-test-{}-{test}", std::process::id()),
            created: Vec::new(),
        }
    }

    fn add(&mut self, role: &str) -> Netns {
        let name = format!("{}-{role}", self.prefix);
        let _ = Netns::new(&name).delete(); // a leftover of a crashed run with our pid
        let ns = Netns::create(&name).unwrap_or_else(|e| panic!("creating {name}: {e}"));
        self.created.push(ns.clone());
        ns
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            if let Err(e) = ns.delete() {
                eprintln!("warning: could not delete namespace {}: {e}", ns.name());
            }
        }
    }
}

/// True when the test can run; false (with a message) when it must be skipped; panics
/// under CI when root or a tool is missing.
fn privileged(tools: &[&str]) -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let uid = run("id", &["-u".into()], None).unwrap_or_default();
    if uid.trim() != "0" {
        assert!(
            !ci,
            "CI=true but not root: the netns tests must run as root in CI"
        );
        eprintln!("SKIPPED: needs root (runs in CI as root)");
        return false;
    }
    for tool in tools {
        let found = run("sh", &["-c".into(), format!("command -v {tool}")], None).is_ok();
        if !found {
            assert!(!ci, "CI=true but {tool} is missing");
            eprintln!("SKIPPED: {tool} is not installed");
            return false;
        }
    }
    true
}

fn rich_scenario() -> Scenario {
    let rules = Rules {
        inbound_rules: vec![
            Rule {
                protocol: Some(Protocol::Tcp),
                dst_ports: Some((1..=20).map(PortRange::single).collect()),
                src_tag: Some("web".into()),
                ..Rule::new(Action::Allow)
            },
            Rule {
                protocol: Some(Protocol::Udp),
                src_ports: Some(vec![PortRange::new(1000, 2000).unwrap()]),
                ..Rule::new(Action::Deny)
            },
            Rule {
                protocol: Some(Protocol::Icmp),
                icmp_type: Some(8),
                icmp_code: Some(0),
                ..Rule::new(Action::Allow)
            },
            Rule {
                protocol: Some(Protocol::Icmp),
                icmp_type: Some(255),
                ..Rule::new(Action::Allow)
            },
            Rule {
                src_net: Some("10.20.10.0/26".parse().unwrap()),
                dst_tag: Some("db".into()),
                ..Rule::new(Action::Log)
            },
            Rule {
                protocol: Some(Protocol::Number(47)),
                ..Rule::new(Action::Allow)
            },
            Rule {
                protocol: Some(Protocol::Icmpv6),
                icmp_type: Some(128),
                ..Rule::new(Action::Allow)
            },
            Rule {
                src_net: Some("fd00::/64".parse().unwrap()),
                ..Rule::new(Action::Allow)
            },
        ],
        outbound_rules: vec![Rule {
            dst_net: Some("0.0.0.0/0".parse().unwrap()),
            ..Rule::new(Action::Allow)
        }],
    };
    Scenario::walkthrough()
        .rules("rich", &rules)
        .set(&layout::profile_tags("rich"), r#"["rich","web"]"#)
        .endpoint(
            "hostA",
            "rich-1",
            "10.20.10.9/32",
            &["rich", "ghost", "myprofile1"],
        )
}

fn plans_to_check() -> Vec<(String, HostPlan)> {
    let mut out = Vec::new();
    let mut ipip = Pool::new("10.20.10.0/24".parse().unwrap());
    ipip.ipip = true;
    ipip.masquerade = true;
    let ipip_sc = rich_scenario()
        .pool(&ipip)
        .set(&layout::global_config("IpInIpEnabled"), "true")
        .set(
            &layout::host_config("hostA", "IpInIpTunnelAddr"),
            "10.20.10.0",
        );
    let cases = [
        (
            "walkthrough",
            Scenario::walkthrough(),
            RenderOptions::default(),
        ),
        ("rich", rich_scenario(), RenderOptions::default()),
        ("ipip", ipip_sc.clone(), RenderOptions::default()),
        (
            "vxlan",
            ipip_sc,
            RenderOptions {
                ipip_as_vxlan: true,
                routing: Routing::Bird,
                gateway_route_via_lo: true,
            },
        ),
    ];
    for (name, sc, opts) in cases {
        let state = sc.state();
        for host in ["hostA", "hostB"] {
            out.push((
                format!("{name}/{host}"),
                render_host(&state, host, opts).unwrap(),
            ));
        }
    }
    out
}

#[test]
fn rendered_tables_pass_restore_test_on_legacy_and_nft() {
    let tools = [
        "ip",
        "ipset",
        "iptables-legacy-restore",
        "iptables-nft-restore",
        "ip6tables-legacy-restore",
        "ip6tables-nft-restore",
    ];
    if !privileged(&tools) {
        return;
    }
    let mut spaces = Namespaces::new("restore");
    let ns = spaces.add("t");
    for (name, plan) in plans_to_check() {
        ns.exec("ipset", &["restore"], Some(&plan.ipset_restore()))
            .unwrap_or_else(|e| panic!("{name}: ipset: {e}"));
        for backend in [IptablesBackend::Legacy, IptablesBackend::Nft] {
            for (table, v4) in [
                (&plan.filter, true),
                (&plan.nat, true),
                (&plan.filter6, false),
            ] {
                let bin = backend.binary(v4, "restore");
                ns.exec(&bin, &["--test"], Some(&table.to_restore()))
                    .unwrap_or_else(|e| {
                        panic!(
                            "{name}: {bin} --test rejected the {} table: {e}\n{}",
                            table.name,
                            table.to_restore()
                        )
                    });
            }
        }
    }
    // The check has teeth: legacy --test rejects a jump to a chain that does not exist.
    let broken = "*filter\n:felix-x - [0:0]\n-A felix-x -j felix-missing\nCOMMIT\n";
    assert!(ns
        .exec("iptables-legacy-restore", &["--test"], Some(broken))
        .is_err());
}

#[test]
fn rendered_bird_conf_parses() {
    if !privileged(&["bird"]) {
        return;
    }
    for (name, plan) in plans_to_check() {
        let Some(conf) = plan.bird_conf else { continue };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bird.conf");
        std::fs::write(&path, &conf).unwrap();
        run(
            "bird",
            &["-p".into(), "-c".into(), path.display().to_string()],
            None,
        )
        .unwrap_or_else(|e| panic!("{name}: bird -p rejected bird.conf: {e}\n{conf}"));
    }
}

struct Topology {
    hosts: BTreeMap<String, Netns>,
    containers: BTreeMap<EndpointKey, Netns>,
}

/// Hosts A and B joined by a veth (10.77.0.1/24, 10.77.0.2/24); one container namespace
/// per endpoint of `sc`, attached with a `cali` veth as calicoctl does.
fn build_topology(spaces: &mut Namespaces, sc: &Scenario) -> Topology {
    let mut hosts = BTreeMap::new();
    for (name, ip) in [("hostA", "10.77.0.1"), ("hostB", "10.77.0.2")] {
        let ns = spaces.add(name);
        hosts.insert(name.to_string(), (ns, ip));
    }
    let (a, b) = (&hosts["hostA"].0, &hosts["hostB"].0);
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
    .unwrap();
    for (ns, ip) in hosts.values() {
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])
            .unwrap();
        ns.ip(&["link", "set", "eth0", "up"]).unwrap();
    }
    let state = sc.state();
    let mut containers = BTreeMap::new();
    for (key, ep) in &state.endpoints {
        let ns = spaces.add(&key.workload);
        let ipv4: Vec<Ipv4Addr> = ep.ipv4_nets.iter().map(|n| n.ip()).collect();
        let link = WorkloadLink {
            host: &hosts[&key.host].0,
            container: &ns,
            host_iface: &ep.name,
            container_iface: "eth0",
            ipv4: &ipv4,
            mac: Some(mac_for(&key.workload)),
        };
        let mac = attach_workload(&link).unwrap();
        assert_eq!(Some(mac), ep.mac);
        containers.insert(key.clone(), ns);
    }
    Topology {
        hosts: hosts.into_iter().map(|(k, (ns, _))| (k, ns)).collect(),
        containers,
    }
}

/// `ping`, or busybox's (CI installs busybox-static, not iputils-ping).
fn ping_program() -> (&'static str, &'static [&'static str]) {
    if run("sh", &["-c".into(), "command -v ping".into()], None).is_ok() {
        ("ping", &["-n", "-q", "-c1", "-W1"])
    } else {
        ("busybox", &["ping", "-q", "-c1", "-W1"])
    }
}

fn pings(from: &Netns, to: IpAddr, expect: bool) -> bool {
    let target = to.to_string();
    let (program, flags) = ping_program();
    let mut args: Vec<&str> = flags.to_vec();
    args.push(&target);
    let attempts = if expect { 3 } else { 1 };
    (0..attempts).any(|_| from.exec(program, &args, None).is_ok())
}

/// Pings every ordered pair and compares with `policy::allowed`.
fn check_matrix(topo: &Topology, sc: &Scenario, label: &str) {
    let state = sc.state();
    for (sk, sns) in &topo.containers {
        for dk in topo.containers.keys() {
            if sk == dk {
                continue;
            }
            let want = policy::allowed(&state, sk, dk, Protocol::Icmp, None);
            let dst = state.endpoints[dk].addresses().next().unwrap();
            let got = pings(sns, dst, want);
            assert_eq!(
                got, want,
                "{label}: ping {} -> {} ({dst}): got {got}, policy says {want}",
                sk.workload, dk.workload
            );
        }
    }
}

fn save_normalised(ns: &Netns, backend: IptablesBackend) -> String {
    let mut out = String::new();
    for table in ["filter", "nat"] {
        let dump = ns
            .exec(&backend.binary(true, "save"), &["-t", table], None)
            .unwrap();
        for line in dump.lines().filter(|l| !l.starts_with('#')) {
            if line.starts_with(':') {
                // Chain declarations carry packet counters: keep name and policy only.
                out.push_str(
                    &line
                        .split_whitespace()
                        .take(2)
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            } else {
                out.push_str(line);
            }
            out.push('\n');
        }
    }
    out
}

#[test]
fn two_hosts_apply_ping_update_and_remove() {
    if !privileged(&[
        "ip",
        "ipset",
        "iptables-legacy-restore",
        "iptables-nft-restore",
        "busybox",
        "bridge",
    ]) {
        return;
    }
    let mut spaces = Namespaces::new("ping");
    let mut sc = Scenario::walkthrough();
    let topo = build_topology(&mut spaces, &sc);
    let opts = RenderOptions {
        gateway_route_via_lo: true,
        ..RenderOptions::default()
    };
    // hostA on iptables-legacy, hostB on nf_tables: both backends carry real traffic.
    let appliers: BTreeMap<&str, Applier> = [
        ("hostA", IptablesBackend::Legacy),
        ("hostB", IptablesBackend::Nft),
    ]
    .into_iter()
    .map(|(h, be)| (h, Applier::new(topo.hosts[h].clone(), be, false)))
    .collect();
    let apply_all = |sc: &Scenario, opts: RenderOptions| {
        let state = sc.state();
        for (host, applier) in &appliers {
            let plan = render_host(&state, host, opts).unwrap();
            let report = applier
                .apply(&plan)
                .unwrap_or_else(|e| panic!("apply on {host}: {e}"));
            assert!(report.missing_interfaces.is_empty(), "{report:?}");
        }
    };

    apply_all(&sc, opts);
    check_matrix(&topo, &sc, "walkthrough");

    // nat-outgoing: centos-1 -> hostB's own address leaves hostA masqueraded (the pool
    // is masquerade, the destination in no pool); conntrack on hostA shows the mapping.
    let c1 = topo
        .containers
        .iter()
        .find(|(k, _)| k.workload == "centos-1")
        .map(|(_, ns)| ns)
        .unwrap();
    assert!(
        pings(c1, "10.77.0.2".parse().unwrap(), true),
        "centos-1 -> hostB"
    );
    let ct = topo.hosts["hostA"]
        .exec("cat", &["/proc/net/nf_conntrack"], None)
        .unwrap();
    assert!(
        ct.lines()
            .any(|l| l.contains("src=10.20.10.1 dst=10.77.0.2")
                && l.contains("src=10.77.0.2 dst=10.77.0.1")),
        "no masqueraded flow in hostA's conntrack:\n{ct}"
    );

    // Idempotent: a second apply changes no rule.
    let backend_of = |h: &str| {
        if h == "hostA" {
            IptablesBackend::Legacy
        } else {
            IptablesBackend::Nft
        }
    };
    let snapshot = || -> Vec<String> {
        appliers
            .keys()
            .map(|h| save_normalised(&topo.hosts[*h], backend_of(h)))
            .collect()
    };
    let before = snapshot();
    apply_all(&sc, opts);
    let after = snapshot();
    assert_eq!(before, after, "re-applying the same plan changed the rules");

    // centos-2 joins myprofile1, written to a datastore and followed incrementally by
    // each host (watch -> delta -> apply_delta): now everything may talk.
    let ds = MemoryDatastore::new();
    sc.write_to(&ds).unwrap();
    let snapshot = ClusterState::from_read(&ds.get("/calico", true).unwrap());
    let mut followers: BTreeMap<&str, HostDataplane> = appliers
        .keys()
        .map(|h| (*h, HostDataplane::new(snapshot.clone(), h, opts).unwrap()))
        .collect();
    let store = CalicoStore::new(&ds);
    let (key2, _) = Scenario::make_endpoint("hostA", "centos-2", "10.20.10.2/32", &[]);
    store
        .update_endpoint_profiles(&key2, &ProfileUpdate::Append(vec!["myprofile1".into()]))
        .unwrap();
    for (host, follower) in followers.iter_mut() {
        let deltas = follower.sync_from(&ds, Duration::ZERO).unwrap();
        assert_eq!(deltas.len(), 1);
        assert!(!deltas[0].global, "an endpoint change is incremental");
        appliers[host]
            .apply_delta(&deltas[0], follower.plan())
            .unwrap();
    }
    sc = sc.set(
        &layout::endpoint(&key2),
        &store.endpoint(&key2).unwrap().to_json(),
    );
    check_matrix(&topo, &sc, "after profile append");

    // IP-in-IP: rendered, and reported unsupported where the kernel lacks it.
    let mut ipip = Pool::new("10.20.10.0/24".parse().unwrap());
    ipip.ipip = true;
    ipip.masquerade = true;
    let ipip_sc = sc
        .clone()
        .pool(&ipip)
        .set(&layout::global_config("IpInIpEnabled"), "true");
    let plan = render_host(&ipip_sc.state(), "hostA", opts).unwrap();
    match appliers["hostA"].apply(&plan) {
        Err(Error::Unsupported { feature, reason }) => {
            assert!(feature.contains("IP-in-IP"), "{feature}: {reason}");
        }
        Ok(_) => assert!(
            topo.hosts["hostA"].links().unwrap().contains("tunl0"),
            "ipip applied without tunl0"
        ),
        Err(e) => panic!("unexpected error applying an IP-in-IP plan: {e}"),
    }

    // The same pool through VXLAN: routes move to vxlan.calico and traffic still flows.
    let vx = RenderOptions {
        ipip_as_vxlan: true,
        ..opts
    };
    apply_all(&ipip_sc, vx);
    let route = topo.hosts["hostA"]
        .ip(&["-4", "route", "show", "10.20.10.64/26"])
        .unwrap();
    assert!(route.contains("dev vxlan.calico"), "{route}");
    check_matrix(&topo, &ipip_sc, "vxlan");

    // Remove: nothing owned is left.
    for (host, applier) in &appliers {
        applier.remove().unwrap();
        let ns = &topo.hosts[*host];
        for be in [IptablesBackend::Legacy, IptablesBackend::Nft] {
            let dump = save_normalised(ns, be);
            assert!(!dump.contains("felix"), "{host}: leftover rules:\n{dump}");
        }
        assert!(!ns
            .exec("ipset", &["list", "-n"], None)
            .unwrap()
            .contains("felix"));
        assert_eq!(
            ns.ip(&["route", "show", "proto", &ROUTE_PROTOCOL.to_string()])
                .unwrap()
                .trim(),
            ""
        );
        assert!(!ns.links().unwrap().contains("vxlan.calico"));
    }
}

/// BIRD daemons this test started, killed (by their own PIDs) on drop.
struct Birds {
    children: Vec<std::process::Child>,
    _dir: tempfile::TempDir,
}

impl Drop for Birds {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `bird -f` in each host namespace with that host's rendered `bird.conf`
/// (`ip netns exec` execs bird, so each child is the daemon itself).
fn start_birds(hosts: &BTreeMap<String, Netns>, plans: &BTreeMap<String, HostPlan>) -> Birds {
    let dir = tempfile::tempdir().unwrap();
    let mut children = Vec::new();
    for (host, ns) in hosts {
        let conf = plans[host].bird_conf.clone().expect("a bird.conf");
        let conf_path = dir.path().join(format!("{host}.conf"));
        std::fs::write(&conf_path, conf).unwrap();
        let ctl = dir.path().join(format!("{host}.ctl"));
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", ns.name(), "bird", "-f", "-c"])
            .arg(&conf_path)
            .arg("-s")
            .arg(&ctl)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        children.push(child);
    }
    Birds {
        children,
        _dir: dir,
    }
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn bird_mesh_programs_cross_host_routes() {
    if !privileged(&["ip", "ipset", "iptables-nft-restore", "busybox", "bird"]) {
        return;
    }
    let mut spaces = Namespaces::new("bird");
    let sc = Scenario::walkthrough();
    let topo = build_topology(&mut spaces, &sc);
    let opts = RenderOptions {
        routing: Routing::Bird,
        gateway_route_via_lo: true,
        ..RenderOptions::default()
    };
    let state = sc.state();
    let mut plans = BTreeMap::new();
    for (host, ns) in &topo.hosts {
        let plan = render_host(&state, host, opts).unwrap();
        assert!(
            plan.routes
                .values()
                .all(|r| !matches!(r, calico_model::dataplane::routes::Route::Via { .. })),
            "BIRD supplies remote routes"
        );
        Applier::new(ns.clone(), IptablesBackend::Nft, false)
            .apply(&plan)
            .unwrap();
        plans.insert(host.clone(), plan);
    }
    let _birds = start_birds(&topo.hosts, &plans);
    let route = |host: &str, dst: &str| {
        topo.hosts[host]
            .ip(&["-4", "route", "show", dst])
            .unwrap_or_default()
    };
    wait_for("BGP routes on both hosts", Duration::from_secs(40), || {
        // hostA learns centos-3's borrowed /32, hostB learns hostA's block.
        route("hostA", "10.20.10.3/32").contains("proto bird")
            && route("hostB", "10.20.10.0/26").contains("proto bird")
    });
    assert!(
        route("hostA", "10.20.10.0/26").contains("blackhole"),
        "own block blackholed: {}",
        route("hostA", "10.20.10.0/26")
    );
    assert!(
        route("hostB", "10.20.10.1/32").is_empty(),
        "hostA's /32s are aggregated into its block"
    );
    check_matrix(&topo, &sc, "bird");
}
