//! Many threads acting as several hosts on one shared in-memory store, with injected
//! compare-and-swap conflicts: no address is ever held twice, nothing leaks, and the
//! handle records and affinity index end consistent.
//!
//! Two threads per host, most threads with their own client (separate processes), two
//! sharing one (threads of one process). A global registry of held addresses catches a
//! duplicate at the moment it is handed out: a thread registers an address after its
//! allocation returns and unregisters it *before* releasing it, so the registry never
//! holds an address the store considers free.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipam::{Attrs, HostName, IpFamily, Ipam, IpamConfig, IpamError, MemStore, Pool, PoolChoice};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const THREADS: usize = 6;

fn iterations() -> usize {
    std::env::var("IPAM_STRESS_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// A held address and who holds it.
#[derive(Debug, Clone)]
struct Held {
    handle: String,
    host: String,
}

fn stress(seed: u64, strict: bool, in_place: bool) {
    let store = Arc::new(MemStore::new());
    store.set_in_place_updates(in_place);
    let setup = Ipam::new(Arc::clone(&store));
    if strict {
        setup
            .set_config(IpamConfig {
                strict_affinity: true,
                auto_allocate_blocks: true,
            })
            .unwrap();
    }
    // Small pools: blocks run out, so hosts claim, race and (unless strict) borrow.
    setup
        .add_pool(Pool::new("10.0.0.0/24".parse().unwrap()))
        .unwrap();
    setup
        .add_pool(Pool::new("fd00::/120".parse().unwrap()))
        .unwrap();
    store.inject_random_conflicts(seed, 100_000);

    let registry: Arc<Mutex<HashMap<IpAddr, Held>>> = Arc::default();
    let shared_client = Arc::new(Ipam::new(Arc::clone(&store)));
    let held_by_thread: Vec<BTreeMap<IpAddr, Held>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = Arc::clone(&store);
                let registry = Arc::clone(&registry);
                let shared = Arc::clone(&shared_client);
                s.spawn(move || {
                    let own;
                    let ipam: &Ipam<Arc<MemStore>> = if t < 2 {
                        &shared
                    } else {
                        own = Ipam::new(store);
                        &own
                    };
                    let host = format!("host-{}", t % 3);
                    let mut rng = StdRng::seed_from_u64(seed ^ (t as u64 * 0x9e37));
                    let mut held: BTreeMap<IpAddr, Held> = BTreeMap::new();
                    let register = |addr: IpAddr, h: &Held, held: &mut BTreeMap<IpAddr, Held>| {
                        let previous = registry.lock().insert(addr, h.clone());
                        assert!(
                            previous.is_none(),
                            "{addr} handed to {h:?} while held by {previous:?}"
                        );
                        held.insert(addr, h.clone());
                    };
                    for i in 0..iterations() {
                        let handle = format!("t{t}-c{}", i % 4);
                        let me = Held {
                            handle: handle.clone(),
                            host: host.clone(),
                        };
                        match rng.gen_range(0..10) {
                            0..=3 => {
                                let choice = if rng.gen_bool(0.7) {
                                    PoolChoice::v4()
                                } else {
                                    PoolChoice::v6()
                                };
                                let n = rng.gen_range(1..6);
                                let got = ipam
                                    .auto_assign(&host, n, Some(&handle), &Attrs::empty(), &choice)
                                    .expect("auto_assign");
                                for a in got {
                                    register(a, &me, &mut held);
                                }
                            }
                            4 => {
                                let addr: IpAddr = if rng.gen_bool(0.7) {
                                    IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, rng.gen()))
                                } else {
                                    IpAddr::V6(
                                        (0xfd00u128 << 112 | rng.gen_range(0..256u128)).into(),
                                    )
                                };
                                match ipam.assign_ip(addr, Some(&handle), &Attrs::empty(), &host) {
                                    Ok(()) => register(addr, &me, &mut held),
                                    Err(IpamError::AlreadyAssigned { .. }) => {}
                                    Err(IpamError::NoHostAffinity { .. }) if strict => {}
                                    Err(e) => panic!("assign_ip({addr}): {e}"),
                                }
                            }
                            5..=7 => {
                                let mine: Vec<IpAddr> = held.keys().copied().collect();
                                if mine.is_empty() {
                                    continue;
                                }
                                let k = rng.gen_range(1..=mine.len().min(4));
                                let pick: Vec<IpAddr> =
                                    (0..k).map(|_| mine[rng.gen_range(0..mine.len())]).collect();
                                let pick: Vec<IpAddr> = pick
                                    .into_iter()
                                    .collect::<HashSet<_>>()
                                    .into_iter()
                                    .collect();
                                {
                                    let mut reg = registry.lock();
                                    for a in &pick {
                                        reg.remove(a);
                                        held.remove(a);
                                    }
                                }
                                let not = ipam.release_ips(&pick).expect("release");
                                assert!(
                                    not.is_empty(),
                                    "held addresses were not allocated: {not:?}"
                                );
                            }
                            _ => {
                                let victims: Vec<IpAddr> = held
                                    .iter()
                                    .filter(|(_, h)| h.handle == handle)
                                    .map(|(a, _)| *a)
                                    .collect();
                                {
                                    let mut reg = registry.lock();
                                    for a in &victims {
                                        reg.remove(a);
                                        held.remove(a);
                                    }
                                }
                                let n = ipam.release_by_handle(&handle).expect("release_by_handle");
                                assert_eq!(n, victims.len(), "release_by_handle({handle})");
                            }
                        }
                    }
                    held
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });

    store.clear_write_hook();
    assert!(
        store.stats().injected_conflicts > 0,
        "the run should have seen conflicts"
    );
    let mut expected: BTreeMap<IpAddr, Held> = BTreeMap::new();
    for held in held_by_thread {
        for (a, h) in held {
            assert!(expected.insert(a, h).is_none(), "{a} held by two threads");
        }
    }
    let mut stored: BTreeMap<IpAddr, (String, Option<HostName>)> = BTreeMap::new();
    for family in IpFamily::ALL {
        for block in setup.blocks(family).unwrap() {
            for (a, attr) in block.allocations() {
                let handle = attr
                    .handle
                    .as_ref()
                    .expect("every allocation has a handle")
                    .as_str()
                    .to_string();
                stored.insert(a, (handle, block.affinity().cloned()));
            }
        }
    }
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "store and threads disagree (leak or loss)"
    );
    for (a, (handle, owner)) in &stored {
        let held = &expected[a];
        assert_eq!(handle, &held.handle, "{a}");
        if strict {
            assert_eq!(
                owner.as_ref().map(|h| h.as_str()),
                Some(held.host.as_str()),
                "{a} borrowed under strict affinity"
            );
        }
    }
    let live: HashSet<String> = expected.values().map(|h| h.handle.clone()).collect();
    let report = setup.check(&live).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.allocated, expected.len());

    // Release everything by handle: nothing stays behind.
    for handle in &live {
        setup.release_by_handle(handle).unwrap();
    }
    assert_eq!(setup.check(&live).unwrap().allocated, 0);
    assert!(ipam::BlockStore::list(&*store, &ipam::Prefix::Handles)
        .unwrap()
        .is_empty());
}

#[test]
fn threads_as_hosts_never_share_or_leak_an_address() {
    stress(1, false, true);
}

#[test]
fn threads_as_hosts_never_share_or_leak_an_address_with_compare_and_swap_updates() {
    // Block updates as get + compare-and-swap, as over etcd: real races between threads.
    stress(3, false, false);
}

#[test]
fn threads_as_hosts_with_strict_affinity_never_borrow() {
    stress(2, true, true);
}

#[test]
fn threads_as_hosts_with_strict_affinity_and_compare_and_swap_updates() {
    stress(4, true, false);
}
