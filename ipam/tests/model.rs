//! Property tests: random operation sequences against a model (a map of allocated
//! addresses to their handles), on one shared in-memory store with two clients and
//! injected compare-and-swap conflicts.
//!
//! After every operation: the store holds exactly the model's allocations (so no address
//! is ever handed out twice, a release returns it, and counts are conserved); handle
//! records agree with the blocks; the affinity index agrees with the blocks. Each
//! allocation is checked when it is made: new, inside a usable pool of the right family,
//! and a short auto-assignment only when the chosen pools are full (without strict
//! affinity).
//!
//! `PROPTEST_CASES` sets the number of cases (default 48 to keep the suite fast).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipam::{
    Attrs, ErrorKind, IpFamily, Ipam, IpamConfig, IpamError, IpamOptions, MemStore, Pool,
    PoolChoice,
};
use ipnetwork::IpNetwork;
use proptest::prelude::*;

const POOLS: [&str; 6] = [
    "10.0.0.0/25",
    "10.0.0.128/26",
    "10.0.1.0/24",
    "10.0.0.0/23", // overlaps all of the above
    "fd00::/121",
    "fd00::80/122",
];
const HOSTS: [&str; 3] = ["h0", "h1", "h2"];
const HANDLES: [&str; 3] = ["c0", "c1", "c2"];

#[derive(Debug, Clone)]
enum Op {
    AutoAssign {
        client: usize,
        host: usize,
        n: usize,
        handle: Option<usize>,
        v6: bool,
        only: Option<usize>,
    },
    AssignIp {
        client: usize,
        host: usize,
        pool: usize,
        offset: u32,
        handle: Option<usize>,
    },
    ReleaseSome {
        client: usize,
        picks: Vec<usize>,
    },
    ReleaseAddress {
        client: usize,
        pool: usize,
        offset: u32,
    },
    ReleaseByHandle {
        client: usize,
        handle: usize,
    },
    AddPool {
        pool: usize,
    },
    DisablePool {
        pool: usize,
    },
    RemovePool {
        pool: usize,
    },
    ReleaseHostAffinities {
        host: usize,
    },
    SetStrict {
        strict: bool,
    },
    Conflicts {
        on: bool,
    },
    InPlace {
        on: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let handle = proptest::option::of(0..HANDLES.len());
    prop_oneof![
        6 => (0..2usize, 0..HOSTS.len(), 0..80usize, handle.clone(), any::<bool>(), proptest::option::weighted(0.2, 0..POOLS.len()))
            .prop_map(|(client, host, n, handle, v6, only)| Op::AutoAssign { client, host, n, handle, v6, only }),
        3 => (0..2usize, 0..HOSTS.len(), 0..POOLS.len(), 0..600u32, handle)
            .prop_map(|(client, host, pool, offset, handle)| Op::AssignIp { client, host, pool, offset, handle }),
        4 => (0..2usize, proptest::collection::vec(0..1000usize, 0..8))
            .prop_map(|(client, picks)| Op::ReleaseSome { client, picks }),
        1 => (0..2usize, 0..POOLS.len(), 0..600u32)
            .prop_map(|(client, pool, offset)| Op::ReleaseAddress { client, pool, offset }),
        2 => (0..2usize, 0..HANDLES.len()).prop_map(|(client, handle)| Op::ReleaseByHandle { client, handle }),
        3 => (0..POOLS.len()).prop_map(|pool| Op::AddPool { pool }),
        1 => (0..POOLS.len()).prop_map(|pool| Op::DisablePool { pool }),
        1 => (0..POOLS.len()).prop_map(|pool| Op::RemovePool { pool }),
        1 => (0..HOSTS.len()).prop_map(|host| Op::ReleaseHostAffinities { host }),
        1 => any::<bool>().prop_map(|strict| Op::SetStrict { strict }),
        1 => any::<bool>().prop_map(|on| Op::Conflicts { on }),
        1 => any::<bool>().prop_map(|on| Op::InPlace { on }),
    ]
}

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn nth(pool: &IpNetwork, offset: u32) -> IpAddr {
    let size = match pool.size() {
        ipnetwork::NetworkSize::V4(n) => u128::from(n),
        ipnetwork::NetworkSize::V6(n) => n,
    };
    // Offsets past the pool's end land just outside it (to test "not in any pool").
    let off = u128::from(offset) % (size + 8);
    match pool.network() {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a).wrapping_add(off as u32)).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a).wrapping_add(off)).into()),
    }
}

fn addresses_of(pool: &IpNetwork) -> Vec<IpAddr> {
    pool.iter().collect()
}

struct Harness {
    store: Arc<MemStore>,
    clients: [Ipam<Arc<MemStore>>; 2],
    /// address → handle
    model: BTreeMap<IpAddr, Option<String>>,
    pools: BTreeMap<IpNetwork, Pool>,
    strict: bool,
}

impl Harness {
    fn new() -> Harness {
        let store = Arc::new(MemStore::new());
        let options = IpamOptions::default();
        let clients = [
            Ipam::with_options(Arc::clone(&store), options).unwrap(),
            Ipam::with_options(Arc::clone(&store), options).unwrap(),
        ];
        Harness {
            store,
            clients,
            model: BTreeMap::new(),
            pools: BTreeMap::new(),
            strict: false,
        }
    }

    fn usable(&self, family: IpFamily) -> Vec<IpNetwork> {
        self.pools
            .values()
            .filter(|p| p.is_usable() && p.family() == family)
            .map(|p| p.cidr)
            .collect()
    }

    fn in_usable_pool(&self, addr: IpAddr) -> bool {
        self.pools
            .values()
            .any(|p| p.is_usable() && p.cidr.contains(addr))
    }

    fn apply(&mut self, op: &Op) {
        match op.clone() {
            Op::AutoAssign {
                client,
                host,
                n,
                handle,
                v6,
                only,
            } => {
                let family = if v6 { IpFamily::V6 } else { IpFamily::V4 };
                let choice = match only {
                    Some(i) => PoolChoice::only(net(POOLS[i])),
                    None => PoolChoice::Any(family),
                };
                let handle = handle.map(|h| HANDLES[h]);
                let result = self.clients[client].auto_assign(
                    HOSTS[host],
                    n,
                    handle,
                    &Attrs::empty(),
                    &choice,
                );
                let chosen: Vec<IpNetwork> = match &choice {
                    PoolChoice::Any(f) => self.usable(*f),
                    PoolChoice::Only(list) => list.clone(),
                };
                match result {
                    Err(IpamError::PoolNotFound { cidr }) => {
                        assert!(
                            !self.pools.get(&cidr).is_some_and(|p| p.is_usable()),
                            "{cidr} is usable"
                        );
                    }
                    Err(e) => panic!("auto_assign failed: {e}"),
                    Ok(got) => {
                        if let PoolChoice::Only(list) = &choice {
                            assert!(list
                                .iter()
                                .all(|c| self.pools.get(c).is_some_and(|p| p.is_usable())));
                        }
                        assert!(got.len() <= n);
                        let unique: BTreeSet<_> = got.iter().collect();
                        assert_eq!(unique.len(), got.len(), "duplicates in one answer: {got:?}");
                        for a in &got {
                            assert!(!self.model.contains_key(a), "{a} handed out twice");
                            assert!(
                                chosen.iter().any(|p| p.contains(*a)),
                                "{a} outside the chosen pools {chosen:?}"
                            );
                            assert!(self.in_usable_pool(*a), "{a} not in a usable pool");
                            self.model.insert(*a, handle.map(str::to_string));
                        }
                        if got.len() < n && !self.strict {
                            for pool in &chosen {
                                for a in addresses_of(pool) {
                                    assert!(
                                        self.model.contains_key(&a),
                                        "short answer while {a} in {pool} is free"
                                    );
                                }
                            }
                        }
                    }
                }
            }
            Op::AssignIp {
                client,
                host,
                pool,
                offset,
                handle,
            } => {
                let addr = nth(&net(POOLS[pool]), offset);
                let handle = handle.map(|h| HANDLES[h]);
                let containing = self.pools.values().find(|p| p.cidr.contains(addr)).cloned();
                match self.clients[client].assign_ip(addr, handle, &Attrs::empty(), HOSTS[host]) {
                    Ok(()) => {
                        assert!(!self.model.contains_key(&addr), "{addr} assigned twice");
                        assert!(self.in_usable_pool(addr), "{addr} not in a usable pool");
                        self.model.insert(addr, handle.map(str::to_string));
                    }
                    Err(IpamError::AlreadyAssigned { .. }) => {
                        assert!(self.model.contains_key(&addr))
                    }
                    Err(IpamError::NotInPool { .. }) => assert!(containing.is_none()),
                    Err(IpamError::PoolNotUsable { .. }) => {
                        assert!(containing.is_some_and(|p| !p.is_usable()))
                    }
                    Err(IpamError::NoHostAffinity { .. }) => assert!(self.strict),
                    Err(e) => panic!("assign_ip({addr}) failed: {e}"),
                }
            }
            Op::ReleaseSome { client, picks } => {
                let allocated: Vec<IpAddr> = self.model.keys().copied().collect();
                let addrs: Vec<IpAddr> = if allocated.is_empty() {
                    Vec::new()
                } else {
                    picks
                        .iter()
                        .map(|i| allocated[i % allocated.len()])
                        .collect()
                };
                let not = self.clients[client].release_ips(&addrs).unwrap();
                assert!(
                    not.is_empty(),
                    "allocated addresses reported as not allocated: {not:?}"
                );
                for a in addrs {
                    self.model.remove(&a);
                }
            }
            Op::ReleaseAddress {
                client,
                pool,
                offset,
            } => {
                let addr = nth(&net(POOLS[pool]), offset);
                let was = self.model.remove(&addr).is_some();
                let not = self.clients[client].release_ips(&[addr]).unwrap();
                assert_eq!(not.is_empty(), was, "release of {addr}");
            }
            Op::ReleaseByHandle { client, handle } => {
                let h = HANDLES[handle];
                let expected = self
                    .model
                    .values()
                    .filter(|v| v.as_deref() == Some(h))
                    .count();
                let released = self.clients[client].release_by_handle(h).unwrap();
                assert_eq!(released, expected, "release_by_handle({h})");
                self.model.retain(|_, v| v.as_deref() != Some(h));
            }
            Op::AddPool { pool } => {
                let cidr = net(POOLS[pool]);
                let overlap = self.pools.keys().any(|c| {
                    *c != cidr && (c.contains(cidr.network()) || cidr.contains(c.network()))
                });
                match self.clients[0].add_pool(Pool::new(cidr)) {
                    Ok(()) => {
                        assert!(!overlap);
                        self.pools.insert(cidr, Pool::new(cidr));
                    }
                    Err(IpamError::PoolOverlap { .. }) => assert!(overlap),
                    Err(e) => panic!("add_pool({cidr}): {e}"),
                }
            }
            Op::DisablePool { pool } => {
                let cidr = net(POOLS[pool]);
                match self.clients[1].disable_pool(cidr) {
                    Ok(()) => {
                        let p = self
                            .pools
                            .get_mut(&cidr)
                            .expect("disabled a pool the model lacks");
                        p.disabled = true;
                    }
                    Err(IpamError::PoolNotFound { .. }) => assert!(!self.pools.contains_key(&cidr)),
                    Err(e) => panic!("disable_pool({cidr}): {e}"),
                }
            }
            Op::RemovePool { pool } => {
                let cidr = net(POOLS[pool]);
                match self.clients[0].remove_pool(cidr) {
                    Ok(_) => assert!(self.pools.remove(&cidr).is_some()),
                    Err(IpamError::PoolNotFound { .. }) => assert!(!self.pools.contains_key(&cidr)),
                    Err(e) => panic!("remove_pool({cidr}): {e}"),
                }
            }
            Op::ReleaseHostAffinities { host } => {
                self.clients[1]
                    .release_host_affinities(HOSTS[host])
                    .unwrap();
            }
            Op::SetStrict { strict } => {
                let config = IpamConfig {
                    strict_affinity: strict,
                    auto_allocate_blocks: true,
                };
                let blocks = IpFamily::ALL
                    .iter()
                    .map(|f| self.clients[0].blocks(*f).unwrap().len())
                    .sum::<usize>();
                match self.clients[0].set_config(config) {
                    Ok(()) => {
                        assert!(blocks == 0 || strict == self.strict);
                        self.strict = strict;
                    }
                    Err(IpamError::ConfigLocked { .. }) => {
                        assert!(blocks > 0 && strict != self.strict)
                    }
                    Err(e) => panic!("set_config: {e}"),
                }
            }
            Op::InPlace { on } => self.store.set_in_place_updates(on),
            Op::Conflicts { on } => {
                if on {
                    self.store.inject_random_conflicts(7, 200_000);
                } else {
                    self.store.clear_write_hook();
                }
            }
        }
    }

    /// The store agrees with the model, handles with blocks, the index with blocks.
    fn check(&self) {
        let mut stored: BTreeMap<IpAddr, Option<String>> = BTreeMap::new();
        for family in IpFamily::ALL {
            for block in self.clients[0].blocks(family).unwrap() {
                for (addr, attr) in block.allocations() {
                    let previous =
                        stored.insert(addr, attr.handle.as_ref().map(|h| h.as_str().to_string()));
                    assert!(previous.is_none(), "{addr} in two blocks");
                }
                // Every block round-trips through Calico's JSON (all invariants hold).
                assert_eq!(ipam::Block::from_json(&block.to_json()).unwrap(), block);
            }
        }
        assert_eq!(stored, self.model, "store and model disagree");
        let live: HashSet<&str> = HANDLES.iter().copied().collect();
        let report = self.clients[1].check(&live).unwrap();
        assert!(report.leaked.is_empty());
        assert!(
            report.handle_mismatches.is_empty(),
            "{:?}",
            report.handle_mismatches
        );
        assert!(
            report.stale_affinities.is_empty(),
            "{:?}",
            report.stale_affinities
        );
        assert!(
            report.unindexed_affinities.is_empty(),
            "{:?}",
            report.unindexed_affinities
        );
        assert_eq!(report.allocated, self.model.len());
    }
}

fn run(ops: &[Op]) {
    let mut h = Harness::new();
    for op in ops {
        h.apply(op);
        h.check();
    }
    // Releasing everything leaves no allocation and no handle record behind.
    h.store.clear_write_hook();
    let all: Vec<IpAddr> = h.model.keys().copied().collect();
    assert!(h.clients[0].release_ips(&all).unwrap().is_empty());
    h.model.clear();
    h.check();
    assert!(ipam::BlockStore::list(&*h.store, &ipam::Prefix::Handles)
        .unwrap()
        .is_empty());
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn operations_match_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(&ops);
    }
}

#[test]
fn a_fixed_busy_sequence_matches_the_model() {
    let mut ops = vec![
        Op::AddPool { pool: 0 },
        Op::AddPool { pool: 2 },
        Op::AddPool { pool: 4 },
        Op::Conflicts { on: true },
    ];
    for i in 0..12 {
        ops.push(Op::AutoAssign {
            client: i % 2,
            host: i % 3,
            n: 30,
            handle: Some(i % 3),
            v6: i % 4 == 0,
            only: None,
        });
    }
    ops.push(Op::ReleaseByHandle {
        client: 0,
        handle: 1,
    });
    ops.push(Op::RemovePool { pool: 0 });
    ops.push(Op::AutoAssign {
        client: 1,
        host: 0,
        n: 400,
        handle: None,
        v6: false,
        only: None,
    });
    ops.push(Op::ReleaseHostAffinities { host: 0 });
    ops.push(Op::AddPool { pool: 0 });
    ops.push(Op::AutoAssign {
        client: 0,
        host: 2,
        n: 200,
        handle: Some(0),
        v6: false,
        only: Some(0),
    });
    run(&ops);
}

#[test]
fn errors_are_grouped_for_the_caller() {
    let h = Harness::new();
    let err = h.clients[0]
        .auto_assign(
            "h",
            1,
            Some("bad/handle"),
            &Attrs::empty(),
            &PoolChoice::v4(),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = h.clients[0]
        .auto_assign(
            "h",
            1,
            None,
            &Attrs::empty(),
            &PoolChoice::Only(vec![net("10.0.0.0/24"), net("fd00::/64")]),
        )
        .unwrap_err();
    assert!(matches!(err, IpamError::FamilyMismatch { .. }), "{err}");
}
