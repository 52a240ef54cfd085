//! Fuzzing of `ipam`: arbitrary text through every parser (CIDRs, datastore keys, block,
//! handle and pool JSON: no panic, and whatever decodes re-encodes to an equal value),
//! then arbitrary operation sequences against a model of allocated addresses on the
//! in-memory store (no address twice, releases return addresses, the store always equals
//! the model). Replay a finding as a named regression test in ipam/tests/model.rs.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use arbitrary::Arbitrary;
use ipam::{
    Attrs, Block, Handle, IpFamily, Ipam, IpamError, Key, MemStore, Pool, PoolChoice, Value,
};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    AddPool {
        addr: u32,
        prefix: u8,
    },
    AddPool6 {
        addr: u16,
        prefix: u8,
    },
    RemovePool {
        index: u8,
    },
    DisablePool {
        index: u8,
    },
    AutoAssign {
        host: u8,
        n: u8,
        handle: Option<u8>,
        v6: bool,
    },
    AssignIp {
        host: u8,
        addr: u32,
        handle: Option<u8>,
    },
    Release {
        picks: Vec<u8>,
        stray: Option<u32>,
    },
    ReleaseByHandle {
        handle: u8,
    },
    ReleaseHost {
        host: u8,
    },
    Conflicts {
        per_million: u32,
        seed: u64,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    texts: Vec<String>,
    ops: Vec<Op>,
}

fn parsers(text: &str) {
    let _ = ipam::parse_network(text);
    let _ = ipam::parse_network_strict(text);
    if let Some(key) = Key::parse(text) {
        assert_eq!(Key::parse(&key.path()), Some(key.clone()));
        if let Ok(value) = Value::from_json(&key, text) {
            assert_eq!(Value::from_json(&key, &value.to_json()).ok(), Some(value));
        }
    }
    if let Ok(block) = Block::from_json(text) {
        assert_eq!(Block::from_json(&block.to_json()).ok(), Some(block));
    }
    if let Ok(handle) = Handle::from_json(text) {
        assert_eq!(Handle::from_json(&handle.to_json()).ok(), Some(handle));
    }
    if let Ok(pool) = Pool::from_json(text) {
        assert_eq!(Pool::from_json(&pool.to_json()).ok(), Some(pool));
    }
}

fn v4(addr: u32) -> IpAddr {
    // Keep addresses in 10.0.0.0/22 so that pools and addresses meet.
    IpAddr::V4((0x0a00_0000 | (addr & 0x3ff)).into())
}

fuzz_target!(|input: Input| {
    for text in input.texts.iter().take(8) {
        parsers(text);
    }
    let store = MemStore::new();
    let ipam = Ipam::new(&store);
    let mut model: BTreeMap<IpAddr, Option<String>> = BTreeMap::new();
    let hosts = ["a", "b", "c"];
    let handles = ["h0", "h1", "h2"];
    for op in input.ops.iter().take(64) {
        match op {
            Op::AddPool { addr, prefix } => {
                if let Ok(net) = ipam::parse_network(&format!("{}/{}", v4(*addr), 20 + prefix % 13))
                {
                    let _ = ipam.add_pool(Pool::new(net));
                }
            }
            Op::AddPool6 { addr, prefix } => {
                let base: IpAddr = IpAddr::V6((0xfd00u128 << 112 | u128::from(*addr)).into());
                if let Ok(net) = ipam::parse_network(&format!("{base}/{}", 116 + prefix % 13)) {
                    let _ = ipam.add_pool(Pool::new(net));
                }
            }
            Op::RemovePool { index } | Op::DisablePool { index } => {
                let pools: Vec<Pool> = IpFamily::ALL
                    .iter()
                    .flat_map(|f| ipam.pools(*f).unwrap())
                    .collect();
                if let Some(p) = pools.get(usize::from(*index) % pools.len().max(1)) {
                    if matches!(op, Op::RemovePool { .. }) {
                        ipam.remove_pool(p.cidr).unwrap();
                    } else {
                        ipam.disable_pool(p.cidr).unwrap();
                    }
                }
            }
            Op::AutoAssign {
                host,
                n,
                handle,
                v6,
            } => {
                let choice = if *v6 {
                    PoolChoice::v6()
                } else {
                    PoolChoice::v4()
                };
                let handle = handle.map(|h| handles[usize::from(h) % 3]);
                let got = ipam
                    .auto_assign(
                        hosts[usize::from(*host) % 3],
                        usize::from(*n % 100),
                        handle,
                        &Attrs::empty(),
                        &choice,
                    )
                    .unwrap();
                for a in got {
                    assert!(
                        model.insert(a, handle.map(str::to_string)).is_none(),
                        "{a} twice"
                    );
                }
            }
            Op::AssignIp { host, addr, handle } => {
                let a = v4(*addr);
                let handle = handle.map(|h| handles[usize::from(h) % 3]);
                match ipam.assign_ip(a, handle, &Attrs::null(), hosts[usize::from(*host) % 3]) {
                    Ok(()) => assert!(
                        model.insert(a, handle.map(str::to_string)).is_none(),
                        "{a} twice"
                    ),
                    Err(IpamError::AlreadyAssigned { .. }) => assert!(model.contains_key(&a)),
                    Err(IpamError::NotInPool { .. } | IpamError::PoolNotUsable { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            Op::Release { picks, stray } => {
                let held: Vec<IpAddr> = model.keys().copied().collect();
                let mut addrs: Vec<IpAddr> = picks
                    .iter()
                    .take(16)
                    .filter_map(|p| held.get(usize::from(*p) % held.len().max(1)).copied())
                    .collect();
                if let Some(s) = stray {
                    addrs.push(v4(*s));
                }
                let not: BTreeSet<IpAddr> = ipam.release_ips(&addrs).unwrap().into_iter().collect();
                let distinct: BTreeSet<IpAddr> = addrs.iter().copied().collect();
                for a in distinct {
                    let was = model.remove(&a).is_some();
                    assert_eq!(was, !not.contains(&a), "release of {a}");
                }
            }
            Op::ReleaseByHandle { handle } => {
                let h = handles[usize::from(*handle) % 3];
                let expected = model.values().filter(|v| v.as_deref() == Some(h)).count();
                assert_eq!(ipam.release_by_handle(h).unwrap(), expected);
                model.retain(|_, v| v.as_deref() != Some(h));
            }
            Op::ReleaseHost { host } => {
                ipam.release_host_affinities(hosts[usize::from(*host) % 3])
                    .unwrap();
            }
            Op::Conflicts { per_million, seed } => {
                // At most 30% conflicts: with 100 retries exhaustion never happens.
                store.inject_random_conflicts(*seed, per_million % 300_000);
            }
        }
        let mut stored: BTreeMap<IpAddr, Option<String>> = BTreeMap::new();
        for family in IpFamily::ALL {
            for block in ipam.blocks(family).unwrap() {
                for (a, attr) in block.allocations() {
                    stored.insert(a, attr.handle.as_ref().map(|h| h.as_str().to_string()));
                }
            }
        }
        assert_eq!(stored, model);
    }
});
