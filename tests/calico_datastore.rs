//! The `Datastore` contract, tested once and run against every backend:
//! `MemoryDatastore`, `EmbeddedDatastore` (in memory and on disk), and `EtcdDatastore`
//! against our etcd example and against Debian's etcd 3.4 (`--enable-v2=true`; skipped
//! with a message when not installed, a failure under `CI=true`).
//!
//! The contract is etcd v2's, as `calico_model::datastore` documents it: get / set /
//! create / update / compare-and-swap (index and value) / compare-and-delete, directory
//! listing (sorted, recursive or not), directory deletes (`dir`, `recursive`, 108 when
//! not empty), watches (one key, recursive, from an index already past, timing out, woken
//! by a concurrent write), errorCode 401 once the 1000-event history has moved past the
//! asked index, and each error as the variant of its etcd code.
//!
//! Also: Calico IPAM (`DatastoreBlockStore`) over a 3-member cluster of our etcd, several
//! threads acting as several hosts allocating and releasing concurrently — no address
//! is handed out twice and nothing leaks.

mod calico_node_support;

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use calico_model::datastore::{
    Action, Datastore, DeleteOptions, MemoryDatastore, SetOptions, HISTORY_LEN,
};
use calico_model::embedded::EmbeddedDatastore;
use calico_model::etcd::EtcdDatastore;
use calico_model::ipam_store::DatastoreBlockStore;
use calico_model::Error;
use calico_node_support::EtcdCluster;
use ipam::{Attrs, Ipam, Pool, PoolChoice};
use parking_lot::Mutex;

const P: &str = "/contract";

fn code(r: Result<impl std::fmt::Debug, Error>) -> Option<u32> {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.etcd_code(),
    }
}

fn dir() -> SetOptions {
    SetOptions {
        dir: true,
        ..SetOptions::default()
    }
}

/// The whole contract on one backend (which must not hold `/contract` yet).
fn contract(ds: &dyn Datastore, label: &str) {
    let k = |s: &str| format!("{P}/{s}");
    eprintln!("[{label}] contract");

    // get / set.
    assert_eq!(
        code(ds.get(&k("a/b"), false)),
        Some(100),
        "[{label}] missing key"
    );
    let e1 = ds.put(&k("a/b"), "1").expect("put");
    assert_eq!(e1.action, Action::Set);
    assert_eq!(e1.node.key, k("a/b"));
    assert_eq!(e1.node.value.as_deref(), Some("1"));
    assert_eq!(e1.node.created_index, e1.node.modified_index);
    assert!(e1.prev_node.is_none());
    let r = ds.get(&k("a/b"), false).expect("get");
    assert_eq!(r.node.value.as_deref(), Some("1"));
    assert_eq!(r.node.modified_index, e1.index());
    assert!(
        r.index >= e1.index(),
        "[{label}] X-Etcd-Index {} < {}",
        r.index,
        e1.index()
    );
    let e2 = ds.put(&k("a/b"), "2").expect("overwrite");
    assert!(e2.index() > e1.index());
    assert_eq!(
        e2.node.created_index,
        e2.index(),
        "[{label}] a plain set replaces the node (a new createdIndex, as etcd v2)"
    );
    assert_eq!(
        e2.prev_node.as_ref().and_then(|n| n.value.as_deref()),
        Some("1")
    );

    // create / update.
    assert_eq!(
        code(ds.create(&k("a/b"), "x")),
        Some(105),
        "[{label}] create existing"
    );
    let c = ds.create(&k("a/c"), "3").expect("create");
    assert_eq!(c.action, Action::Create);
    let update = |key: &str, v: &str| {
        ds.set(
            key,
            v,
            &SetOptions {
                prev_exist: Some(true),
                ..SetOptions::default()
            },
        )
    };
    assert_eq!(
        code(update(&k("a/none"), "v")),
        Some(100),
        "[{label}] update missing"
    );
    assert_eq!(
        update(&k("a/c"), "4").expect("update").action,
        Action::Update
    );

    // compare-and-swap by index and by value.
    let cur = ds.get_value(&k("a/b")).expect("get").expect("exists");
    assert_eq!(
        code(ds.compare_and_swap(&k("a/b"), "x", cur.1 + 100)),
        Some(101)
    );
    let cas = ds.compare_and_swap(&k("a/b"), "5", cur.1).expect("cas");
    assert_eq!(cas.action, Action::CompareAndSwap);
    assert_eq!(cas.node.value.as_deref(), Some("5"));
    let by_value = |prev: &str, v: &str| {
        ds.set(
            &k("a/b"),
            v,
            &SetOptions {
                prev_value: Some(prev.into()),
                ..SetOptions::default()
            },
        )
    };
    assert_eq!(
        code(by_value("nope", "6")),
        Some(101),
        "[{label}] prevValue"
    );
    assert_eq!(
        by_value("5", "6").expect("cas by value").action,
        Action::CompareAndSwap
    );
    assert_eq!(code(ds.compare_and_swap(&k("a/none"), "x", 1)), Some(100));

    // compare-and-delete.
    let cur = ds.get_value(&k("a/c")).expect("get").expect("exists");
    assert_eq!(
        code(ds.compare_and_delete(&k("a/c"), cur.1 + 100)),
        Some(101)
    );
    let cad = ds.compare_and_delete(&k("a/c"), cur.1).expect("cad");
    assert_eq!(cad.action, Action::CompareAndDelete);
    assert_eq!(
        cad.node.value, None,
        "[{label}] a delete's node has no value"
    );
    assert_eq!(
        cad.prev_node.as_ref().and_then(|n| n.value.as_deref()),
        Some("4")
    );
    assert_eq!(ds.get_value(&k("a/c")).expect("get"), None);

    // Files and directories.
    assert_eq!(
        code(ds.put(&k("a"), "v")),
        Some(102),
        "[{label}] value onto a dir"
    );
    assert_eq!(
        code(ds.put(&k("a/b/x"), "v")),
        Some(104),
        "[{label}] below a file"
    );
    ds.put(&k("a/d/e"), "7").expect("nested");
    ds.put(&k("a/0"), "8").expect("put");
    let mk = ds.set(&k("empty"), "", &dir()).expect("mkdir");
    assert!(mk.node.dir);
    assert_eq!(
        code(ds.set(&k("empty"), "", &dir())),
        Some(102),
        "[{label}] mkdir twice"
    );
    ds.ensure_dir(&k("empty"))
        .expect("ensure_dir on an existing dir");
    let flat = ds.get(&k("a"), false).expect("list");
    assert!(flat.node.dir);
    let names: Vec<(&str, bool)> = flat
        .node
        .nodes
        .iter()
        .map(|n| (n.key.as_str(), n.dir))
        .collect();
    assert_eq!(
        names,
        vec![
            (k("a/0").as_str(), false),
            (k("a/b").as_str(), false),
            (k("a/d").as_str(), true)
        ],
        "[{label}] sorted listing"
    );
    assert!(
        flat.node.nodes[2].nodes.is_empty(),
        "[{label}] a non-recursive listing does not descend"
    );
    let deep = ds.get(&k("a"), true).expect("recursive");
    let leaves: Vec<(String, String)> = deep
        .node
        .leaves()
        .iter()
        .map(|n| (n.key.clone(), n.value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        leaves,
        vec![
            (k("a/0"), "8".into()),
            (k("a/b"), "6".into()),
            (k("a/d/e"), "7".into())
        ],
        "[{label}] recursive listing"
    );
    let plain = DeleteOptions::default();
    assert_eq!(
        code(ds.delete(&k("a"), &plain)),
        Some(102),
        "[{label}] delete dir as file"
    );
    let dir_only = DeleteOptions {
        dir: true,
        ..DeleteOptions::default()
    };
    assert_eq!(
        code(ds.delete(&k("a"), &dir_only)),
        Some(108),
        "[{label}] non-empty"
    );
    let empty = ds.delete(&k("empty"), &dir_only).expect("rmdir");
    assert!(empty.node.dir && empty.action == Action::Delete);
    let gone = ds
        .delete(
            &k("a"),
            &DeleteOptions {
                recursive: true,
                ..DeleteOptions::default()
            },
        )
        .expect("rm -r");
    assert_eq!(gone.action, Action::Delete);
    assert!(gone.node.dir);
    assert_eq!(
        code(ds.get(&k("a/d/e"), false)),
        Some(100),
        "[{label}] gone with its dir"
    );

    // Watches.
    let w1 = ds.put(&k("w/x"), "1").expect("put");
    ds.put(&k("w/y"), "2").expect("put");
    let seen = ds
        .watch(&k("w/x"), false, w1.index(), Duration::from_secs(2))
        .expect("watch")
        .expect("an event at the asked index");
    assert_eq!(
        (seen.index(), seen.node.key.as_str()),
        (w1.index(), k("w/x").as_str())
    );
    let seen = ds
        .watch(&k("w"), true, w1.index() + 1, Duration::from_secs(2))
        .expect("watch")
        .expect("a recursive event");
    assert_eq!(seen.node.key, k("w/y"), "[{label}] recursive watch");
    let quiet = ds
        .watch(&k("w/x"), false, 0, Duration::from_millis(300))
        .expect("quiet watch");
    assert_eq!(quiet, None, "[{label}] a quiet watch times out with None");
    let started = Instant::now();
    let event = std::thread::scope(|s| {
        let watcher = s.spawn(|| ds.watch(&k("w"), true, 0, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(300));
        let written = ds.put(&k("w/z"), "3").expect("put");
        let got = watcher.join().expect("watcher").expect("watch");
        (written, got)
    });
    let (written, got) = event;
    let got = got.expect("woken by the write");
    assert_eq!(
        got.index(),
        written.index(),
        "[{label}] the concurrent write"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let del = ds.delete(&k("w/z"), &plain).expect("delete");
    let seen = ds
        .watch(&k("w/z"), false, del.index(), Duration::from_secs(2))
        .expect("watch")
        .expect("the delete");
    assert!(seen.action.is_delete() && seen.node.value.is_none());

    // 401 once the history has moved past the asked index.
    let first = ds.put(&k("h/0"), "0").expect("put").index();
    for i in 0..HISTORY_LEN + 10 {
        ds.put(&k("h/n"), &i.to_string()).expect("history");
    }
    match ds.watch(&k("h"), true, first, Duration::from_secs(1)) {
        Err(Error::EventIndexCleared { requested, oldest }) => {
            assert_eq!(requested, first, "[{label}] 401 names the asked index");
            assert!(oldest > first, "[{label}] oldest {oldest} <= asked {first}");
        }
        other => panic!("[{label}] expected 401, got {other:?}"),
    }
    let read = ds.get(&k("h"), true).expect("re-read after 401");
    let next = ds
        .watch(&k("h"), true, read.index + 1, Duration::from_millis(200))
        .expect("watch from the read's index");
    assert_eq!(next, None);
    eprintln!("[{label}] contract holds");
}

#[test]
fn memory_datastore_keeps_the_contract() {
    contract(&MemoryDatastore::new(), "memory");
}

#[test]
fn embedded_datastore_keeps_the_contract() {
    contract(
        &EmbeddedDatastore::in_memory().expect("start"),
        "embedded in memory",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let index = {
        let ds = EmbeddedDatastore::open(dir.path()).expect("open");
        contract(&ds, "embedded on disk");
        ds.put("/after", "reopen").expect("put").index()
    };
    // Everything survives a reopen, and the indexes continue.
    let ds = EmbeddedDatastore::open(dir.path()).expect("reopen");
    assert_eq!(
        ds.get_value("/after").expect("get"),
        Some(("reopen".to_string(), index))
    );
    assert_eq!(code(ds.get("/contract/a", false)), Some(100));
    assert!(ds.put("/x", "y").expect("put").index() > index);
}

#[test]
fn etcd_datastore_keeps_the_contract_against_our_etcd() {
    let cluster = EtcdCluster::ours("dsours", 1);
    let ds = EtcdDatastore::connect(&cluster.endpoints()).expect("connect");
    contract(&ds, "etcd: ours");
}

#[test]
fn etcd_datastore_keeps_the_contract_against_etcd_3_4() {
    let Some(cluster) = EtcdCluster::real("dsreal") else {
        return;
    };
    let ds = EtcdDatastore::connect(&cluster.endpoints()).expect("connect");
    contract(&ds, "etcd: 3.4");
}

#[test]
fn an_unreachable_etcd_is_unavailable() {
    let port = calico_node_support::free_port();
    let ds = EtcdDatastore::connect(&[format!("http://127.0.0.1:{port}")]).expect("connect");
    match ds.get("/calico", true) {
        Err(e @ Error::Unavailable { .. }) => {
            assert!(e.to_string().contains(&port.to_string()), "{e}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// Calico IPAM over a 3-member cluster of our etcd: threads as hosts (two per host,
/// each with its own client, endpoints rotated so requests land on every member)
/// allocate and release; a registry catches any address handed out twice, and at the
/// end the store's allocations are exactly what the threads hold, then nothing.
#[test]
fn ipam_over_our_etcd_cluster_has_no_duplicates_and_no_leaks() {
    const THREADS: usize = 6;
    const ROUNDS: usize = 12;
    let cluster = EtcdCluster::ours("dsipam", 3);
    let endpoints = cluster.endpoints();
    let setup = Ipam::new(DatastoreBlockStore::new(
        EtcdDatastore::connect(&endpoints).expect("connect"),
    ));
    // /26 blocks in a /25: two blocks for three hosts, so hosts race for blocks and
    // borrow from each other.
    setup
        .add_pool(Pool::new("10.30.0.0/25".parse().expect("cidr")))
        .expect("pool");
    let registry: Arc<Mutex<BTreeMap<IpAddr, String>>> = Arc::default();
    let held: Vec<Vec<(IpAddr, String)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let mut mine = endpoints.clone();
                mine.rotate_left(t % endpoints.len());
                let registry = registry.clone();
                s.spawn(move || {
                    let ipam = Ipam::new(DatastoreBlockStore::new(
                        EtcdDatastore::connect(&mine).expect("connect"),
                    ));
                    let host = format!("host-{}", t % 3);
                    let mut held: Vec<(IpAddr, String)> = Vec::new();
                    for round in 0..ROUNDS {
                        let handle = format!("t{t}-r{round}");
                        let got = ipam
                            .auto_assign(
                                &host,
                                3,
                                Some(&handle),
                                &Attrs::empty(),
                                &PoolChoice::v4(),
                            )
                            .unwrap_or_else(|e| panic!("{host} auto_assign: {e}"));
                        for a in &got {
                            if let Some(prev) = registry.lock().insert(*a, handle.clone()) {
                                panic!("{a} handed to {handle} while held by {prev}");
                            }
                            held.push((*a, handle.clone()));
                        }
                        // Release every other round's addresses again.
                        if round % 2 == 1 {
                            let h = held.pop().expect("something held");
                            registry.lock().remove(&h.0);
                            ipam.release_ips(&[h.0]).expect("release");
                        }
                    }
                    held
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .collect()
    });
    let held: Vec<(IpAddr, String)> = held.into_iter().flatten().collect();
    let total = held.len();
    assert!(total > 0);
    let distinct: HashSet<IpAddr> = held.iter().map(|(a, _)| *a).collect();
    assert_eq!(distinct.len(), total, "an address is held twice");
    // The store agrees with what the threads hold.
    for (addr, handle) in &held {
        let attr = setup.assignment(*addr).expect("assignment");
        assert!(
            attr.is_some(),
            "{addr} ({handle}) not allocated in the store"
        );
    }
    let live: HashSet<String> = held.iter().map(|(_, h)| h.clone()).collect();
    let report = setup.check(&live).expect("check");
    assert!(report.is_clean(), "inconsistent IPAM state: {report:?}");
    // Release everything: nothing may remain.
    let addrs: Vec<IpAddr> = held.iter().map(|(a, _)| *a).collect();
    let unallocated = setup.release_ips(&addrs).expect("release all");
    assert!(unallocated.is_empty(), "already free: {unallocated:?}");
    let report = setup.check(&HashSet::<String>::new()).expect("check");
    assert!(
        report.is_clean(),
        "leaks after releasing everything: {report:?}"
    );
    for block in setup.blocks(ipam::IpFamily::V4).expect("blocks") {
        assert_eq!(
            block.allocated_count(),
            0,
            "block {} still has allocations",
            block.cidr()
        );
    }
    eprintln!(
        "ipam over 3 members: {total} addresses held by {THREADS} threads, no duplicates, no leaks"
    );
}
