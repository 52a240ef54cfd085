//! `walkthrough`: the whole of the etcd + Calico + Docker walkthrough
//! (shared/walkthrough.md) run end to end, each step printed as the walkthrough gives it
//! (`$ command`) followed by the real output, with a check after each claim it makes.
//!
//! ```text
//! cargo run --release --example walkthrough                     # embedded, no root
//! sudo target/release/examples/walkthrough --dataplane netns    # §2 on real namespaces
//! ```
//!
//! * §1: two etcd members (our `raft_kv::server`, in this process, on loopback ports,
//!   started from the printed `etcd` command lines), `etcdctl member list`, a PUT on one
//!   member and a GET on the other, `etcdctl set/get`.
//! * §2: `calicoctl node`, `pool add --ipip --nat-outgoing`, three containers on two
//!   hosts, isolation without profiles, two profiles, and the ping matrix: by default
//!   decided by the model (felix's rules rendered for each host and interpreted, checked
//!   against `policy::allowed`); with `--dataplane netns` (root) measured with real pings
//!   between network namespaces programmed by calico-node agents.
//! * §3: `calicoctl node --libnetwork`, the /16 pool turned into ipip + nat-outgoing; the
//!   Docker network itself needs Docker and the plugin (see the message printed).
//! * §4: `etcdctl member add node3`, node3 started from the printed `ETCD_*` variables
//!   with `existing`, three members listed, `cluster-health`.
//! * §5: `etcdctl backup`, the backup restored as a working cluster
//!   (`--force-new-cluster`), every key compared.
//! * Raft: with one of three members stopped, writes still commit.
//!
//! Exit status 0 when every check passed, 1 otherwise (the failed checks are listed).
//! All data lives in a temporary directory, removed at the end (`--keep` keeps it).
//!
//! etcdctl and calicoctl are the examples' own code, compiled in (`#[path]` modules), so
//! `cargo run --example walkthrough` needs no other binary; `--dataplane netns` also
//! needs the `calico-node` example built beside this one
//! (`cargo build --release --examples`).

// etcdctl's modules, at the crate root where they expect each other (`crate::cli`...).
#[allow(dead_code)]
#[path = "../etcdctl/backup.rs"]
mod backup;
#[allow(dead_code)]
#[path = "../etcdctl/cli.rs"]
mod cli;
#[allow(dead_code)]
#[path = "../etcdctl/flags.rs"]
mod flags;
#[allow(dead_code)]
#[path = "../etcdctl/format.rs"]
mod format;
#[allow(dead_code)]
#[path = "../etcdctl/help.rs"]
mod help;
// calicoctl's program; the walkthrough uses a subset of it.
#[allow(dead_code)]
#[path = "../calicoctl/app/mod.rs"]
mod calicoctl;

// calico-libnetwork's plugin, whose handlers §3 drives on the model dataplane.
#[allow(dead_code)]
#[path = "../calico-libnetwork/plugin/mod.rs"]
mod plugin;

mod calico_steps;
mod docker_steps;
mod etcd_steps;
mod netns;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use calico_model::datastore::Datastore;
use calico_model::etcd::EtcdDatastore;
use calico_model::store::CalicoStore;

use calico_steps::{model_matrix, render_matrix, Calicoctl};
use etcd_steps::{all_keys, etcdctl, free_ports, http, member_args, Member};

#[derive(Debug, Parser)]
#[command(
    name = "walkthrough",
    about = "Runs the etcd + Calico + Docker walkthrough end to end, printing every step"
)]
struct Args {
    /// `model`: the dataplane is decided by the model (no root); `netns` (root): §2 on
    /// real network namespaces with calico-node agents and real pings.
    #[arg(long, default_value = "model")]
    dataplane: String,
    /// Keep the temporary directory (data dirs, backup, logs) and print its path.
    #[arg(long)]
    keep: bool,
}

/// Prints steps and records checks.
struct Walk {
    passed: usize,
    failed: Vec<String>,
}

impl Walk {
    fn section(&self, title: &str) {
        println!("\n## {title}\n");
    }

    fn cmd(&self, line: &str) {
        println!("$ {line}");
    }

    fn output(&self, text: &str) {
        print!("{text}");
        if !text.is_empty() && !text.ends_with('\n') {
            println!();
        }
    }

    fn note(&self, text: &str) {
        println!("  # {text}");
    }

    fn check(&mut self, what: &str, ok: bool) {
        if ok {
            self.passed += 1;
            println!("  ✔ {what}");
        } else {
            self.failed.push(what.to_string());
            println!("  ✘ FAILED: {what}");
        }
    }

    /// Runs etcdctl, prints the command and its output.
    fn etcdctl(&mut self, shown: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
        self.cmd(&format!("etcdctl {shown}"));
        let (code, out, err) = etcdctl(args, env);
        self.output(&out);
        self.output(&err);
        (code, out)
    }

    fn calicoctl(&mut self, ctl: &Calicoctl, host: &str, line: &str) -> (i32, String) {
        self.cmd(&format!("HOSTNAME={host} calicoctl {line}"));
        let (code, out, err) = ctl.run(host, line);
        self.output(&out);
        self.output(&err);
        (code, out)
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("relay") {
        // Internal: the in-namespace half of --dataplane netns's relay to etcd.
        let (Some(listen), Some(socket)) = (argv.get(2), argv.get(3)) else {
            std::process::exit(2);
        };
        if let Err(e) = netns::relay_main(listen, socket) {
            eprintln!("walkthrough relay: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let args = Args::parse();
    let code = match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("walkthrough: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn run(args: &Args) -> anyhow::Result<i32> {
    let netns_mode = match args.dataplane.as_str() {
        "model" => false,
        "netns" => true,
        other => anyhow::bail!("--dataplane must be model or netns, not {other:?}"),
    };
    let lab = if netns_mode {
        Some(netns::Lab::create().context("building the network namespaces (root needed)")?)
    } else {
        None
    };
    let tmp = tempfile::Builder::new()
        .prefix("tabby-walkthrough-")
        .tempdir()
        .context("creating a temporary directory")?;
    let base: PathBuf = tmp.path().to_path_buf();
    // The walkthrough's members keep their data in ./<name>.etcd: run where that is ours.
    std::env::set_current_dir(&base).context("entering the temporary directory")?;
    let mut walk = Walk {
        passed: 0,
        failed: Vec::new(),
    };
    println!(
        "tabby walkthrough — shared/walkthrough.md end to end (dataplane: {}; data in {})",
        args.dataplane,
        base.display()
    );
    let result = steps(&mut walk, netns_mode, lab.as_ref());
    drop(lab);
    if args.keep {
        let kept = tmp.keep();
        println!("\nkept {}", kept.display());
    }
    if let Err(e) = result {
        walk.failed.push(format!("aborted: {e:#}"));
        println!("\n  ✘ ABORTED: {e:#}");
    }
    println!();
    if walk.failed.is_empty() {
        println!("walkthrough: all {} checks passed", walk.passed);
        Ok(0)
    } else {
        println!(
            "walkthrough: {} checks passed, {} FAILED:",
            walk.passed,
            walk.failed.len()
        );
        for f in &walk.failed {
            println!("  - {f}");
        }
        Ok(1)
    }
}

fn steps(walk: &mut Walk, netns_mode: bool, lab: Option<&netns::Lab>) -> anyhow::Result<()> {
    // ---------------------------------------------------------------- §1
    walk.section("1. An etcd cluster of two members");
    walk.note("192.168.1.23 / 192.168.1.24 become 127.0.0.1 with free ports; the second client URL stands for :4001");
    let ports = free_ports(6)?;
    let peers = [ports[0], ports[1]];
    let clients = [(ports[2], ports[3]), (ports[4], ports[5])];
    let cluster = format!(
        "node1=http://127.0.0.1:{},node2=http://127.0.0.1:{}",
        peers[0], peers[1]
    );
    let mut members: Vec<Member> = Vec::new();
    // Both founders must be up for the first election: start them together.
    let mut starting = Vec::new();
    for (i, name) in ["node1", "node2"].iter().enumerate() {
        let mut a = member_args(name, peers[i], clients[i], &cluster, "new", &PathBuf::new());
        a.truncate(a.len() - 2); // no --data-dir: ./<name>.etcd, as the walkthrough
        walk.cmd(&format!("etcd {}", a.join(" ")));
        starting.push(std::thread::spawn(move || Member::start(&a, &[])));
    }
    for t in starting {
        let m = t
            .join()
            .map_err(|_| anyhow::anyhow!("member start panicked"))??;
        walk.note(&format!(
            "{} serving {} (data in ./{}.etcd)",
            m.name, m.client_url, m.name
        ));
        members.push(m);
    }
    let urls: Vec<String> = members.iter().map(|m| m.client_url.clone()).collect();
    let endpoints = urls.join(",");
    let (code, out) = walk.etcdctl(
        &format!("-C {endpoints} member list"),
        &["-C", &endpoints, "member", "list"],
        &[],
    );
    walk.check(
        "member list shows node1 and node2",
        code == 0 && out.contains("name=node1") && out.contains("name=node2"),
    );
    walk.cmd(&format!("curl -L {}/v2/members", urls[0]));
    let (_, body) = http(&urls[0], "GET", "/v2/members", None)?;
    walk.output(&body);
    walk.cmd(&format!(
        "curl -L {}/v2/keys/newworld -XPUT -d value=\"Hello Docker\"",
        urls[0]
    ));
    let (status, body) = http(
        &urls[0],
        "PUT",
        "/v2/keys/newworld",
        Some("value=Hello%20Docker"),
    )?;
    walk.output(&body);
    walk.check(
        "PUT on node1 answers action set with the value",
        status == 201 && body.contains(r#""action":"set""#) && body.contains("Hello Docker"),
    );
    walk.cmd(&format!("curl -L {}/v2/keys/newworld", urls[1]));
    // A plain GET is served from node2's own store: it may lag the leader by a
    // heartbeat, as in etcd. Ask again until node2 has applied the write.
    let started = std::time::Instant::now();
    let (status, body2) = loop {
        let (status, body2) = http(&urls[1], "GET", "/v2/keys/newworld", None)?;
        if status == 200 || started.elapsed() > Duration::from_secs(5) {
            break (status, body2);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    walk.output(&body2);
    if started.elapsed() > Duration::from_millis(100) {
        walk.note(&format!(
            "node2 applied the write {} ms after node1 answered",
            started.elapsed().as_millis()
        ));
    }
    let index_of = |b: &str| -> Option<u64> {
        serde_json::from_str::<serde_json::Value>(b)
            .ok()?
            .get("node")?
            .get("modifiedIndex")?
            .as_u64()
    };
    walk.check(
        "GET on node2 (the other member) returns the value with the same modifiedIndex",
        status == 200
            && body2.contains(r#""action":"get""#)
            && body2.contains("Hello Docker")
            && index_of(&body) == index_of(&body2),
    );
    println!("$ export ETCDCTL_ENDPOINTS={endpoints}");
    walk.note("our members are not on :2379, so etcdctl is pointed at them");
    let ctl_env = [("ETCDCTL_ENDPOINTS", endpoints.as_str())];
    let (code, out) = walk.etcdctl(
        "set /zy/message \"Hello Docker\"",
        &["set", "/zy/message", "Hello Docker"],
        &ctl_env,
    );
    walk.check(
        "etcdctl set prints the value",
        code == 0 && out == "Hello Docker\n",
    );
    let (code, out) = walk.etcdctl("get /zy/message", &["get", "/zy/message"], &ctl_env);
    walk.check(
        "etcdctl get reads it back",
        code == 0 && out == "Hello Docker\n",
    );

    // ---------------------------------------------------------------- §2
    walk.section("2. Docker and Calico on each host");
    println!("$ export ETCD_ENDPOINTS={endpoints}");
    let (ctl, hosts) = match lab {
        None => {
            walk.note("dataplane: model — a container is a name; who may ping whom is decided by felix's rules rendered for each host and interpreted, checked against policy::allowed");
            let ctl = Calicoctl {
                endpoints: endpoints.clone(),
                runtime_for: Box::new(|_| Arc::new(calicoctl::runtime::Model)),
                env_for: Box::new(|_| Vec::new()),
            };
            (
                ctl,
                [("dockera", "192.168.1.23"), ("dockerb", "192.168.1.24")],
            )
        }
        Some(lab) => {
            walk.note(&format!(
                "dataplane: netns — hosts are the namespaces {} and {}, containers are namespaces, calico-node agents program them",
                lab.host_ns("dockera"),
                lab.host_ns("dockerb")
            ));
            (
                lab.calicoctl(&endpoints)?,
                [("dockera", "192.168.1.23"), ("dockerb", "192.168.1.24")],
            )
        }
    };
    for (host, ip) in hosts {
        let (code, _) = walk.calicoctl(&ctl, host, &format!("node --ip={ip}"));
        walk.check(
            &format!("calicoctl node starts the Calico node on {host}"),
            code == 0,
        );
    }
    let store = CalicoStore::new(Arc::new(EtcdDatastore::connect(&urls)?));
    let state = store.snapshot()?;
    walk.check(
        "both hosts are registered in etcd (/calico/v1/host/<host>/bird_ip)",
        hosts.iter().all(|(h, ip)| {
            state
                .hosts
                .get(*h)
                .and_then(|r| r.ipv4())
                .map(|a| a.to_string())
                == Some(ip.to_string())
        }),
    );
    let (code, _) = walk.calicoctl(
        &ctl,
        "dockera",
        "pool add 10.20.10.0/24 --ipip --nat-outgoing",
    );
    walk.check("pool add succeeds", code == 0);
    let pool = store
        .datastore()
        .get_value("/calico/v1/ipam/v4/pool/10.20.10.0-24")?
        .map(|v| v.0);
    walk.check(
        "pool 10.20.10.0/24 stored with ipip and masquerade",
        pool.as_deref() == Some(r#"{"cidr":"10.20.10.0/24","ipip":"tunl0","masquerade":true}"#),
    );
    walk.calicoctl(&ctl, "dockera", "pool show");
    let containers = [
        ("dockera", "centos-1", "10.20.10.1"),
        ("dockera", "centos-2", "10.20.10.2"),
        ("dockerb", "centos-3", "10.20.10.3"),
    ];
    for (host, name, ip) in containers {
        match lab {
            None => walk.cmd(&format!("docker run -itd --net=none --name={name} centos:7.2   # model: the container is its name")),
            Some(lab) => {
                walk.cmd(&format!("ip netns add {}   # stands for docker run -itd --net=none --name={name} centos:7.2", lab.container_ns(name)));
                lab.add_container(name)?;
            }
        }
        let target = lab.map_or(name.to_string(), |l| l.container_ns(name));
        let (code, out) = walk.calicoctl(&ctl, host, &format!("container add {target} {ip}"));
        walk.check(
            &format!("{name} gets {ip} on {host}"),
            code == 0 && out.contains(&format!("IP {ip} added to")),
        );
    }
    let names: Vec<String> = containers
        .iter()
        .map(|(_, n, _)| lab.map_or(n.to_string(), |l| l.container_ns(n)))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let reach = |walk: &mut Walk,
                 stage: &str,
                 expect: &dyn Fn(&str, &str) -> bool|
     -> anyhow::Result<calico_steps::Matrix> {
        let m = match lab {
            None => model_matrix(&store, &names)?,
            Some(lab) => lab.ping_matrix(&store, &names, walk_printer)?,
        };
        println!("  reachability ({stage}; ping, rows = from):");
        for line in render_matrix(&names, &m).lines() {
            println!("    {line}");
        }
        let agree = m.values().all(|(got, model)| got == model);
        walk.check(
            &format!(
                "{stage}: measured/rendered reachability equals policy::allowed for every pair"
            ),
            agree,
        );
        let expected = m.iter().all(|((f, t), (got, _))| *got == expect(f, t));
        walk.check(
            &format!("{stage}: reachability is what the walkthrough says"),
            expected,
        );
        Ok(m)
    };
    walk.note("with an address but no profile a container can reach nobody");
    reach(walk, "no profiles", &|_, _| false)?;
    for p in ["myprofile1", "myprofile2"] {
        let (code, out) = walk.calicoctl(&ctl, "dockera", &format!("profile add {p}"));
        walk.check(
            &format!("{p} created"),
            code == 0 && out.contains("Created profile"),
        );
    }
    for (host, name, profile) in [
        ("dockera", "centos-1", "myprofile1"),
        ("dockera", "centos-2", "myprofile2"),
        ("dockerb", "centos-3", "myprofile1"),
    ] {
        let target = lab.map_or(name.to_string(), |l| l.container_ns(name));
        let (code, _) = walk.calicoctl(
            &ctl,
            host,
            &format!("container {target} profile append {profile}"),
        );
        walk.check(&format!("{name} joins {profile}"), code == 0);
    }
    if lab.is_some() {
        // calico-node converges within a second of a change.
        std::thread::sleep(Duration::from_millis(1500));
    }
    let c1 = names[0].to_string();
    let c2 = names[1].to_string();
    let c3 = names[2].to_string();
    let same_profile = |f: &str, t: &str| {
        let p = |c: &str| if c == c2 { 2 } else { 1 };
        p(f) == p(t)
    };
    let m = reach(walk, "profiles assigned", &|f, t| same_profile(f, t))?;
    let state = store.snapshot()?;
    for (to, says) in [
        (&c3, "succeeds (same profile, across hosts)"),
        (&c2, "fails (same host, other profile)"),
    ] {
        let addr = calico_steps::address_of(&state, to).map_or("?".into(), |a| a.to_string());
        walk.cmd(&format!("docker exec centos-1 ping -c2 {addr}"));
        let got = m
            .get(&(c1.clone(), to.to_string()))
            .is_some_and(|(r, _)| *r);
        walk.note(&format!(
            "{}: {}",
            if lab.is_some() {
                "measured above"
            } else {
                "model"
            },
            if got { "replies" } else { "no reply" }
        ));
        let want = to == &c3;
        walk.check(&format!("ping from centos-1 to {addr} {says}"), got == want);
    }

    // ---------------------------------------------------------------- §3
    walk.section("3. Calico inside Docker networking (libnetwork)");
    let (code, _) = walk.calicoctl(&ctl, "dockera", "node --libnetwork --ip=192.168.1.23");
    walk.check("calicoctl node --libnetwork succeeds", code == 0);
    let (code, _) = walk.calicoctl(
        &ctl,
        "dockera",
        "pool add 192.168.0.0/16 --ipip --nat-outgoing",
    );
    walk.check(
        "pool add of the identical default pool is an update",
        code == 0,
    );
    let pool = store
        .datastore()
        .get_value("/calico/v1/ipam/v4/pool/192.168.0.0-16")?
        .map(|v| v.0);
    walk.check(
        "default pool 192.168.0.0/16 now has ipip and nat-outgoing",
        pool.as_deref() == Some(r#"{"cidr":"192.168.0.0/16","ipip":"tunl0","masquerade":true}"#),
    );
    walk.calicoctl(&ctl, "dockera", "pool show");
    match lab {
        Some(_) => {
            walk.cmd("docker network create --driver calico --subnet=192.168.0.0/24 mynet");
            walk.note("not run with --dataplane netns: Docker networks need the Docker Engine; tests/libnetwork_docker.rs drives the real engine with the calico-libnetwork plugin (scope local: Docker 28 has no --cluster-store)");
        }
        None => libnetwork_steps(walk, &store)?,
    }

    // ---------------------------------------------------------------- §4
    walk.section("4. Growing the etcd cluster");
    let ports = free_ports(3)?;
    let peer3 = ports[0];
    let client3 = (ports[1], ports[2]);
    let url3 = format!("http://127.0.0.1:{peer3}");
    let (code, out) = walk.etcdctl(
        &format!("member add node3 {url3}"),
        &["member", "add", "node3", &url3],
        &ctl_env,
    );
    walk.check(
        "member add prints the three ETCD_* variables",
        code == 0
            && out.contains("Added member named node3 with ID")
            && out.contains("ETCD_NAME=\"node3\"")
            && out.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""),
    );
    let mut env3: Vec<(String, String)> = Vec::new();
    for line in out.lines() {
        if let Some((k, v)) = line.split_once('=') {
            if k.starts_with("ETCD_") {
                println!("$ export {k}={v}");
                env3.push((k.to_string(), v.trim_matches('"').to_string()));
            }
        }
    }
    let args3: Vec<String> = vec![
        "--listen-client-urls".into(),
        format!(
            "http://127.0.0.1:{},http://127.0.0.1:{}",
            client3.0, client3.1
        ),
        "--advertise-client-urls".into(),
        format!("http://127.0.0.1:{}", client3.0),
        "--listen-peer-urls".into(),
        url3.clone(),
        "--initial-advertise-peer-urls".into(),
        url3.clone(),
    ];
    walk.cmd(&format!("etcd {}", args3.join(" ")));
    let node3 = Member::start(&args3, &env3)?;
    walk.note(&format!(
        "node3 serving {} (data in ./node3.etcd)",
        node3.client_url
    ));
    walk.check("node3 joined and is healthy", true);
    members.push(node3);
    let (code, out) = walk.etcdctl("member list", &["member", "list"], &ctl_env);
    walk.check(
        "member list shows three members",
        code == 0 && out.lines().filter(|l| l.contains("name=")).count() == 3,
    );
    let all3 = members
        .iter()
        .map(|m| m.client_url.clone())
        .collect::<Vec<_>>()
        .join(",");
    let env_all3 = [("ETCDCTL_ENDPOINTS", all3.as_str())];
    let (code, out) = walk.etcdctl("cluster-health", &["cluster-health"], &env_all3);
    walk.check(
        "cluster-health: every member healthy",
        code == 0
            && out.matches("is healthy: got healthy result from").count() == 3
            && out.contains("cluster is healthy"),
    );
    let (_, value) = http(&members[2].client_url, "GET", "/v2/keys/zy/message", None)?;
    walk.check(
        "node3 caught up: it serves /zy/message",
        value.contains("Hello Docker"),
    );

    // ---------------------------------------------------------------- §5
    walk.section("5. Backups");
    let stamp = backup_stamp();
    let backup_dir = format!("backup_etcd/{stamp}");
    let before = all_keys(&urls[0])?;
    let (code, _) = walk.etcdctl(
        &format!("backup --data-dir node1.etcd --backup-dir {backup_dir}"),
        &[
            "backup",
            "--data-dir",
            "node1.etcd",
            "--backup-dir",
            &backup_dir,
        ],
        &[],
    );
    walk.check("etcdctl backup succeeds", code == 0);
    walk.cmd("find backup_etcd/ -ctime +5 -exec rm -r {} \\;");
    let pruned = prune_older_than(
        std::path::Path::new("backup_etcd"),
        Duration::from_secs(5 * 86400),
    )?;
    walk.note(&format!("{pruned} backups older than 5 days removed"));
    let ports = free_ports(3)?;
    let (rp, rc) = (ports[0], (ports[1], ports[2]));
    let mut restore_args = member_args(
        "restored",
        rp,
        rc,
        &format!("restored=http://127.0.0.1:{rp}"),
        "new",
        std::path::Path::new(&backup_dir),
    );
    restore_args.push("--force-new-cluster".into());
    walk.note("restore: a new one-member cluster from the backup (etcd 2's procedure)");
    walk.cmd(&format!("etcd {}", restore_args.join(" ")));
    let restored = Member::start(&restore_args, &[])?;
    let after = all_keys(&restored.client_url)?;
    println!(
        "  {} keys in the cluster at backup time, {} in the restored member",
        before.len(),
        after.len()
    );
    walk.check(
        "the restored cluster holds every key with its value",
        !before.is_empty() && before == after,
    );
    let r_env = [("ETCDCTL_ENDPOINTS", restored.client_url.as_str())];
    let (code, out) = walk.etcdctl(
        "set /zy/restored yes   # on the restored cluster",
        &["set", "/zy/restored", "yes"],
        &r_env,
    );
    walk.check(
        "the restored cluster takes writes",
        code == 0 && out == "yes\n",
    );
    drop(restored);

    // ---------------------------------------------------------------- Raft
    walk.section("What the walkthrough says about Raft");
    walk.note("stopping node3: two of three members are a majority, writes still commit");
    if let Some(mut m) = members.pop() {
        m.stop();
    }
    let two = urls.join(",");
    let env2 = [("ETCDCTL_ENDPOINTS", two.as_str())];
    let (code, out) = walk.etcdctl(
        "set /zy/quorum \"2 of 3\"",
        &["set", "/zy/quorum", "2 of 3"],
        &env2,
    );
    walk.check(
        "a write commits with one member of three down",
        code == 0 && out == "2 of 3\n",
    );
    let (_, body) = http(&urls[1], "GET", "/v2/keys/zy/quorum?quorum=true", None)?;
    walk.check(
        "a linearizable read on the other member sees it",
        body.contains("2 of 3"),
    );
    if netns_mode {
        if let Some(lab) = lab {
            lab.stop_agents();
        }
    }
    for m in members.iter_mut() {
        m.stop();
    }
    Ok(())
}

/// The walkthrough names backups `$(date +%Y%m%d)`.
fn backup_stamp() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86400) as i64;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}")
}

/// `find DIR -ctime +N -exec rm -r {} \;` on the entries directly in `dir`.
fn prune_older_than(dir: &std::path::Path, age: Duration) -> anyhow::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let modified = entry.metadata()?.modified()?;
        if modified.elapsed().unwrap_or_default() > age {
            std::fs::remove_dir_all(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn walk_printer(line: &str) {
    println!("{line}");
}

/// §3's Docker commands on the model dataplane: the calls Docker makes, sent to the
/// plugin's handlers (see `docker_steps`).
fn libnetwork_steps<D: Datastore + Clone + 'static>(
    walk: &mut Walk,
    store: &CalicoStore<Arc<D>>,
) -> anyhow::Result<()> {
    let ds: Arc<dyn Datastore> = Arc::clone(store.datastore()) as Arc<dyn Datastore>;
    let plugins = docker_steps::Plugins::new(ds, &["dockera", "dockerb"]);
    walk.cmd("docker network create --driver calico --subnet=192.168.0.0/24 mynet");
    let id = plugins.create_network("mynet", "192.168.0.0/24", "192.168.0.1/24")?;
    println!("{id}");
    walk.note("model: Docker is not run; NetworkDriver.CreateNetwork went to calico-libnetwork's handlers on both hosts (one network id, as with the walkthrough's --cluster-store)");
    walk.cmd("docker network ls");
    println!("NETWORK ID     NAME      DRIVER    SCOPE");
    println!("{:<15}mynet     calico    global", &id[..12]);
    let state = store.snapshot()?;
    walk.check(
        "the network is a Calico profile named by its id (tag = id, inbound allow from it)",
        state
            .profiles
            .get(&id)
            .is_some_and(|p| p.tags == vec![id.clone()]),
    );
    let mut keys = Vec::new();
    for (host, name, ip) in [
        ("dockera", "centos-1", "192.168.0.10"),
        ("dockera", "centos-2", "192.168.0.11"),
        ("dockerb", "centos-3", "192.168.0.12"),
    ] {
        walk.cmd(&format!(
            "HOSTNAME={host} docker run -itd --net=mynet --ip {ip} --name={name} centos:7.2"
        ));
        let key = plugins.run_container(host, &id, name, &format!("{ip}/24"))?;
        walk.note(&format!(
            "model: CreateEndpoint + Join on {host}'s plugin: endpoint {}/libnetwork/libnetwork/{}",
            key.host,
            &key.endpoint[..12]
        ));
        keys.push((name, key));
    }
    let state = store.snapshot()?;
    let nets_ok = keys
        .iter()
        .zip(["192.168.0.10/32", "192.168.0.11/32", "192.168.0.12/32"])
        .all(|((_, k), want)| {
            state.endpoints.get(k).is_some_and(|ep| {
                ep.ipv4_nets
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    == vec![want.to_string()]
                    && ep.profile_ids == vec![id.clone()]
            })
        });
    walk.check(
        "each container is a workload endpoint with its --ip and the network's profile",
        nets_ok,
    );
    // The mynet containers, and §2's centos-3 (other profile) for contrast.
    let mut labelled: Vec<(String, Option<calico_model::model::EndpointKey>)> = keys
        .iter()
        .map(|(n, k)| (format!("mynet/{n}"), Some(k.clone())))
        .collect();
    labelled.push((
        "centos-3(§2)".to_string(),
        calico_steps::endpoint_of(&state, "centos-3").cloned(),
    ));
    let refs: Vec<(&str, Option<calico_model::model::EndpointKey>)> = labelled
        .iter()
        .map(|(n, k)| (n.as_str(), k.clone()))
        .collect();
    let m = calico_steps::model_matrix_of(&state, &refs)?;
    let names: Vec<&str> = refs.iter().map(|(n, _)| *n).collect();
    println!("  reachability (mynet; ping, rows = from):");
    for line in render_matrix(&names, &m).lines() {
        println!("    {line}");
    }
    walk.check(
        "mynet: rendered reachability equals policy::allowed for every pair",
        m.values().all(|(got, model)| got == model),
    );
    walk.check(
        "mynet: containers on one network reach each other across hosts, not other profiles",
        m.iter()
            .all(|((f, t), (got, _))| *got == (f.starts_with("mynet/") && t.starts_with("mynet/"))),
    );
    Ok(())
}
