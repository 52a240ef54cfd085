//! Client-level scenarios ported from libcalico v0.17.0 `tests/unit/test_ipam.py`,
//! calico-containers' system tests (`test_add_ip`, `test_add_autoassigned_ip`,
//! `test_manage_pools`) and libcalico-go's racing-claim tests (spec/ipam.md §11), plus the
//! failure reports of spec/ipam.md §9, each as one scenario on the in-memory store.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use ipam::{
    AffinityRelease, Attrs, Block, BlockStore, CasOutcome, ErrorKind, HostName, Injected, IpFamily,
    Ipam, IpamConfig, IpamError, Key, MemStore, Pool, PoolChoice, Value, WriteKind,
};
use ipnetwork::IpNetwork;

const HOST: &str = "test_host1";

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| ip(s)).collect()
}

fn new_ipam() -> (Arc<MemStore>, Ipam<Arc<MemStore>>) {
    let store = Arc::new(MemStore::new());
    (Arc::clone(&store), Ipam::new(store))
}

fn add_pool(ipam: &Ipam<Arc<MemStore>>, cidr: &str) {
    ipam.add_pool(Pool::new(net(cidr))).unwrap();
}

/// Writes an affine block (with `allocated` addresses taken from its front) and its index
/// entry, the way a claim would have.
fn seed_block(store: &MemStore, cidr: &str, host: &str, allocated: usize) {
    let h = HostName::new(host).unwrap();
    let mut b = Block::new(net(cidr), Some(h.clone()), false).unwrap();
    let attr = ipam::Attribute::new(None, Attrs::empty());
    b.auto_assign(allocated, &attr, &h, false).unwrap();
    store
        .put(
            &Key::Affinity {
                host: h,
                block: net(cidr),
            },
            Value::Affinity,
        )
        .unwrap();
    assert!(matches!(
        store
            .create(&Key::Block(net(cidr)), Value::Block(b))
            .unwrap(),
        CasOutcome::Written(_)
    ));
}

fn allocated(ipam: &Ipam<Arc<MemStore>>) -> usize {
    IpFamily::ALL
        .iter()
        .flat_map(|f| ipam.blocks(*f).unwrap())
        .map(|b| b.allocated_count())
        .sum()
}

const B1: &str = "10.11.12.0/26";
const B2: &str = "10.11.45.0/26";

#[test]
fn auto_assign_uses_the_first_affine_block() {
    let (store, ipam) = new_ipam();
    add_pool(&ipam, "10.11.0.0/16");
    seed_block(&store, B1, HOST, 0);
    seed_block(&store, B2, HOST, 0);
    let got = ipam
        .auto_assign(HOST, 1, None, &Attrs::empty(), &PoolChoice::v4())
        .unwrap();
    assert_eq!(got, ips(&["10.11.12.0"]));
}

#[test]
fn auto_assign_dual_stack() {
    let (store, ipam) = new_ipam();
    add_pool(&ipam, "10.11.0.0/16");
    add_pool(&ipam, "2001:abcd:def0::/48");
    seed_block(&store, B1, HOST, 0);
    seed_block(&store, "2001:abcd:def0::/122", HOST, 0);
    seed_block(&store, "2001:abcd:def0::4500/122", HOST, 0);
    let v4 = ipam
        .auto_assign(HOST, 1, None, &Attrs::empty(), &PoolChoice::v4())
        .unwrap();
    let v6 = ipam
        .auto_assign(HOST, 2, None, &Attrs::empty(), &PoolChoice::v6())
        .unwrap();
    assert_eq!(v4, ips(&["10.11.12.0"]));
    assert_eq!(v6, ips(&["2001:abcd:def0::", "2001:abcd:def0::1"]));
}

#[test]
fn auto_assign_skips_a_full_first_block() {
    let (store, ipam) = new_ipam();
    add_pool(&ipam, "10.11.0.0/16");
    seed_block(&store, B1, HOST, 64);
    seed_block(&store, B2, HOST, 0);
    let got = ipam
        .auto_assign(HOST, 1, None, &Attrs::empty(), &PoolChoice::v4())
        .unwrap();
    assert_eq!(got, ips(&["10.11.45.0"]));
}

#[test]
fn auto_assign_spans_blocks() {
    let (store, ipam) = new_ipam();
    add_pool(&ipam, "10.11.0.0/16");
    seed_block(&store, B1, HOST, 62);
    seed_block(&store, B2, HOST, 0);
    let got = ipam
        .auto_assign(HOST, 4, None, &Attrs::empty(), &PoolChoice::v4())
        .unwrap();
    assert_eq!(
        got,
        ips(&["10.11.12.62", "10.11.12.63", "10.11.45.0", "10.11.45.1"])
    );
}

#[test]
fn auto_assign_returns_short_when_pools_are_exhausted() {
    let (store, ipam) = new_ipam();
    // The two claimed blocks are the only pools.
    add_pool(&ipam, B1);
    add_pool(&ipam, B2);
    seed_block(&store, B1, HOST, 62);
    seed_block(&store, B2, HOST, 63);
    let got = ipam
        .auto_assign(HOST, 4, None, &Attrs::empty(), &PoolChoice::v4())
        .unwrap();
    assert_eq!(got, ips(&["10.11.12.62", "10.11.12.63", "10.11.45.63"]));
    assert!(ipam
        .auto_assign(HOST, 1, None, &Attrs::empty(), &PoolChoice::v4())
        .unwrap()
        .is_empty());
}

#[test]
fn auto_assign_survives_a_concurrent_change_to_its_block() {
    let (store, ipam) = new_ipam();
    add_pool(&ipam, "10.11.0.0/16");
    seed_block(&store, B1, HOST, 62);
    seed_block(&store, B2, HOST, 0);
    // Block updates as a read and a compare-and-swap, as over etcd.
    store.set_in_place_updates(false);
    // Just before our first write to B1, another client takes .62.
    let fired = Arc::new(AtomicBool::new(false));
    let inner = Arc::clone(&store);
    let f = Arc::clone(&fired);
    store.set_write_hook(move |key, kind| {
        if *key == Key::Block(net(B1))
            && kind == WriteKind::CompareAndSwap
            && !f.swap(true, Ordering::SeqCst)
        {
            let other = Ipam::new(Arc::clone(&inner));
            other
                .assign_ip(ip("10.11.12.62"), None, &Attrs::empty(), "other")
                .unwrap();
        }
        Injected::Proceed
    });
    let got = ipam
        .auto_assign(HOST, 4, None, &Attrs::empty(), &PoolChoice::v4())
        .unwrap();
    assert_eq!(
        got,
        ips(&["10.11.12.63", "10.11.45.0", "10.11.45.1", "10.11.45.2"])
    );
    assert!(store.stats().conflicts >= 1);
}

#[test]
fn handle_counts_survive_block_and_handle_conflicts() {
    let (store, ipam) = new_ipam();
    add_pool(&ipam, "10.11.0.0/16");
    seed_block(&store, B1, HOST, 0);
    // The handle already over-counts one address in B1 (a crash between handle and block
    // writes, which is the safe direction).
    let mut h = ipam::Handle::new(ipam::HandleId::new("handle_id_1").unwrap());
    h.increment(net(B1), 1);
    let _ = store
        .create(&Key::Handle(h.id().clone()), Value::Handle(h))
        .unwrap();
    // Fail the block write twice and the first handle write once.
    let block_failures = Arc::new(AtomicU32::new(2));
    let handle_failures = Arc::new(AtomicU32::new(1));
    let (bf, hf) = (Arc::clone(&block_failures), Arc::clone(&handle_failures));
    store.set_write_hook(move |key, kind| {
        let counter = match key {
            Key::Block(_) if kind == WriteKind::CompareAndSwap => &bf,
            Key::Handle(_) => &hf,
            _ => return Injected::Proceed,
        };
        if counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            Injected::Conflict
        } else {
            Injected::Proceed
        }
    });
    let got = ipam
        .auto_assign(
            HOST,
            1,
            Some("handle_id_1"),
            &Attrs::empty(),
            &PoolChoice::v4(),
        )
        .unwrap();
    assert_eq!(got, ips(&["10.11.12.0"]));
    let h = ipam.handle("handle_id_1").unwrap().unwrap();
    assert_eq!(h.count(&net(B1)), 2);
    assert_eq!(store.stats().injected_conflicts, 3);
}

#[test]
fn persistent_conflicts_end_in_a_clear_error_and_leave_nothing_behind() {
    let (store, ipam) = new_ipam();
    add_pool(&ipam, "10.11.0.0/16");
    seed_block(&store, B1, HOST, 0);
    store.set_write_hook(|key, kind| match (key, kind) {
        (Key::Block(_), WriteKind::CompareAndSwap) => Injected::Conflict,
        _ => Injected::Proceed,
    });
    let err = ipam
        .auto_assign(HOST, 1, Some("h1"), &Attrs::empty(), &PoolChoice::v4())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Contention, "{err}");
    assert!(err.to_string().contains("10.11.12.0-26"), "{err}");
    store.clear_write_hook();
    assert_eq!(allocated(&ipam), 0);
    assert_eq!(
        ipam.handle("h1").unwrap(),
        None,
        "every handle bump was undone"
    );
}

#[test]
fn first_allocation_claims_a_block_in_the_pool() {
    let (store, ipam) = new_ipam();
    add_pool(&ipam, "192.168.0.0/16");
    let got = ipam
        .auto_assign(HOST, 4, None, &Attrs::empty(), &PoolChoice::v4())
        .unwrap();
    assert_eq!(got.len(), 4);
    let block = ipam.block_cidr(got[0]);
    assert!(net("192.168.0.0/16").contains(block.network()));
    let base = u32::from(match block.network() {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => unreachable!(),
    });
    let expected: Vec<IpAddr> = (0..4).map(|i| IpAddr::V4((base + i).into())).collect();
    assert_eq!(
        got, expected,
        "the lowest addresses of the new block, in order"
    );
    assert_eq!(ipam.host_blocks(HOST, IpFamily::V4).unwrap(), vec![block]);
    let b = ipam.block(block).unwrap().unwrap();
    assert_eq!(b.affinity().map(|h| h.as_str()), Some(HOST));
    // The second call stays in the same block.
    let more = ipam
        .auto_assign(HOST, 1, None, &Attrs::empty(), &PoolChoice::v4())
        .unwrap();
    assert_eq!(more, vec![IpAddr::V4((base + 4).into())]);
    assert_eq!(
        store
            .list(&ipam::Prefix::Blocks(IpFamily::V4))
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn assign_ip_claims_the_block_and_others_may_borrow_in_it() {
    let (_store, ipam) = new_ipam();
    add_pool(&ipam, "10.20.10.0/24");
    ipam.assign_ip(ip("10.20.10.1"), None, &Attrs::empty(), "dockera")
        .unwrap();
    let b = ipam.block(net("10.20.10.0/26")).unwrap().unwrap();
    assert_eq!(b.affinity().map(|h| h.as_str()), Some("dockera"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&b.to_json()).unwrap()["attributes"],
        serde_json::json!([{"handle_id": null, "secondary": {}}])
    );
    // Another host may take a specific address in it (not strict).
    ipam.assign_ip(ip("10.20.10.2"), None, &Attrs::empty(), "dockerb")
        .unwrap();
    let b = ipam.block(net("10.20.10.0/26")).unwrap().unwrap();
    assert_eq!(
        b.affinity().map(|h| h.as_str()),
        Some("dockera"),
        "affinity unchanged"
    );
    assert_eq!(ipam.host_blocks("dockerb", IpFamily::V4).unwrap(), vec![]);
}

#[test]
fn assign_ip_errors_say_what_is_wrong() {
    let (_store, ipam) = new_ipam();
    add_pool(&ipam, "10.20.10.0/24");
    ipam.assign_ip(ip("10.20.10.1"), None, &Attrs::empty(), "dockera")
        .unwrap();
    let err = ipam
        .assign_ip(ip("10.20.10.1"), None, &Attrs::empty(), "dockera")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "10.20.10.1 is already assigned in block 10.20.10.0/26"
    );
    let err = ipam
        .assign_ip(ip("10.30.0.1"), None, &Attrs::empty(), "dockera")
        .unwrap_err();
    assert_eq!(err.to_string(), "10.30.0.1 is not in any configured pool");

    let mut docker = Pool::new(net("192.168.0.0/24"));
    docker.ipam = false;
    ipam.add_pool(docker).unwrap();
    let err = ipam
        .assign_ip(ip("192.168.0.10"), None, &Attrs::empty(), "dockera")
        .unwrap_err();
    assert!(
        matches!(
            err,
            IpamError::PoolNotUsable {
                state: "not an IPAM pool",
                ..
            }
        ),
        "{err}"
    );

    ipam.disable_pool(net("10.20.10.0/24")).unwrap();
    let err = ipam
        .assign_ip(ip("10.20.10.9"), None, &Attrs::empty(), "dockera")
        .unwrap_err();
    assert!(
        matches!(
            err,
            IpamError::PoolNotUsable {
                state: "disabled",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let err = ipam
        .assign_ip(ip("10.20.10.9"), None, &Attrs::empty(), "bad/host")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn release_keeps_empty_affine_blocks_and_deletes_empty_orphans() {
    let (_store, ipam) = new_ipam();
    add_pool(&ipam, "10.20.10.0/24");
    let got = ipam
        .auto_assign("a", 2, None, &Attrs::empty(), &PoolChoice::v4())
        .unwrap();
    let block = ipam.block_cidr(got[0]);
    assert!(ipam.release_ips(&got).unwrap().is_empty());
    assert!(
        ipam.block(block).unwrap().is_some(),
        "the affine host keeps its empty block"
    );
    // Releasing again is harmless and reports the addresses.
    assert_eq!(ipam.release_ips(&got).unwrap(), got);

    let again = ipam
        .auto_assign("a", 1, None, &Attrs::empty(), &PoolChoice::v4())
        .unwrap();
    assert_eq!(
        ipam.release_block_affinity("a", block).unwrap(),
        AffinityRelease::Released
    );
    assert!(ipam.host_blocks("a", IpFamily::V4).unwrap().is_empty());
    assert!(ipam.release_ips(&again).unwrap().is_empty());
    assert_eq!(
        ipam.block(block).unwrap(),
        None,
        "an empty block without affinity is deleted"
    );
    // Addresses of a block that does not exist are "not allocated".
    assert_eq!(ipam.release_ips(&again).unwrap(), again);
}

#[test]
fn release_by_handle_is_cheap_and_idempotent() {
    let (store, ipam) = new_ipam();
    add_pool(&ipam, "10.20.0.0/16");
    let a = ipam
        .auto_assign("h1", 70, Some("c1"), &Attrs::empty(), &PoolChoice::v4())
        .unwrap();
    let b = ipam
        .auto_assign("h2", 3, Some("c2"), &Attrs::empty(), &PoolChoice::v4())
        .unwrap();
    assert_eq!(a.len(), 70);
    let handle = ipam.handle("c1").unwrap().unwrap();
    assert_eq!(handle.total(), 70);
    assert_eq!(handle.blocks().count(), 2);
    let mut by_handle = ipam.ips_by_handle("c1").unwrap();
    by_handle.sort();
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(by_handle, sorted);

    let gets_before = store.stats().gets;
    assert_eq!(ipam.release_by_handle("c1").unwrap(), 70);
    let gets = store.stats().gets - gets_before;
    assert!(
        gets < 12,
        "only the handle's blocks are read ({gets} reads)"
    );
    assert_eq!(
        ipam.handle("c1").unwrap(),
        None,
        "an emptied handle is deleted"
    );
    assert_eq!(ipam.release_by_handle("c1").unwrap(), 0);
    assert_eq!(allocated(&ipam), b.len());
    assert!(ipam.check(&HashSet::from(["c2"])).unwrap().is_clean());
}

#[test]
fn pool_removal_releases_affinities_and_never_allocates_there_again() {
    // libcalico #55/#56 (allocation from a stale block after pool deletion), calicoctl
    // #828/#864 (pool removal releases affinities), spec/ipam.md §8.
    let (_store, ipam) = new_ipam();
    add_pool(&ipam, "10.1.0.0/16");
    let kept = ipam
        .auto_assign("h1", 3, None, &Attrs::empty(), &PoolChoice::v4())
        .unwrap();
    let other_block = ipam
        .auto_assign("h2", 1, None, &Attrs::empty(), &PoolChoice::v4())
        .unwrap();
    assert!(ipam.release_ips(&other_block).unwrap().is_empty());
    let released = ipam.remove_pool(net("10.1.0.0/16")).unwrap();
    assert_eq!(released, 2);
    assert_eq!(ipam.pool(net("10.1.0.0/16")).unwrap(), None);
    assert!(ipam.host_blocks("h1", IpFamily::V4).unwrap().is_empty());
    let blocks = ipam.blocks(IpFamily::V4).unwrap();
    assert_eq!(blocks.len(), 1, "the empty block went, the used one stays");
    assert_eq!(blocks[0].affinity(), None);

    add_pool(&ipam, "10.2.0.0/16");
    let fresh = ipam
        .auto_assign("h1", 5, None, &Attrs::empty(), &PoolChoice::v4())
        .unwrap();
    assert!(
        fresh.iter().all(|a| net("10.2.0.0/16").contains(*a)),
        "{fresh:?}"
    );
    let report = ipam.check(&HashSet::<String>::new()).unwrap();
    assert_eq!(report.blocks_outside_pools, vec![ipam.block_cidr(kept[0])]);
    assert_eq!(report.without_handle.len(), 8);

    assert!(ipam.release_ips(&kept).unwrap().is_empty());
    assert_eq!(
        ipam.blocks(IpFamily::V4).unwrap().len(),
        1,
        "the leftover block is deleted when emptied"
    );
}

#[test]
fn a_disabled_pool_is_not_used_even_through_existing_affine_blocks() {
    let (_store, ipam) = new_ipam();
    add_pool(&ipam, "10.1.0.0/16");
    add_pool(&ipam, "10.2.0.0/16");
    let first = ipam
        .auto_assign(
            "h1",
            1,
            None,
            &Attrs::empty(),
            &PoolChoice::only(net("10.1.0.0/16")),
        )
        .unwrap();
    assert!(net("10.1.0.0/16").contains(first[0]));
    ipam.disable_pool(net("10.1.0.0/16")).unwrap();
    let next = ipam
        .auto_assign("h1", 1, None, &Attrs::empty(), &PoolChoice::v4())
        .unwrap();
    assert!(net("10.2.0.0/16").contains(next[0]), "{next:?}");
    let err = ipam
        .auto_assign(
            "h1",
            1,
            None,
            &Attrs::empty(),
            &PoolChoice::only(net("10.1.0.0/16")),
        )
        .unwrap_err();
    assert!(matches!(err, IpamError::PoolNotFound { .. }));
}

#[test]
fn pool_validation_errors() {
    let (_store, ipam) = new_ipam();
    // calicoctl #505: pools smaller than a block are unusable: refuse them.
    let err = ipam.add_pool(Pool::new(net("10.0.0.0/27"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "an IPv4 pool must have a prefix length of 26 or lower (one block); given 10.0.0.0/27"
    );
    let err = ipam.add_pool(Pool::new(net("10.0.0.1/24"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24?"
    );
    add_pool(&ipam, "192.168.0.0/16");
    let err = ipam.add_pool(Pool::new(net("192.168.3.0/24"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot add pool 192.168.3.0/24: it overlaps the existing pool 192.168.0.0/16"
    );
    let err = ipam.add_pool(Pool::new(net("192.0.0.0/8"))).unwrap_err();
    assert!(matches!(err, IpamError::PoolOverlap { .. }));
    // An identical CIDR is an update (the tutorial turns on ipip and nat-outgoing).
    let mut p = Pool::new(net("192.168.0.0/16"));
    p.ipip = Some("tunl0".into());
    p.masquerade = true;
    ipam.add_pool(p.clone()).unwrap();
    assert_eq!(ipam.pools(IpFamily::V4).unwrap(), vec![p]);
    let mut v6 = Pool::new(net("fd80:24e2:f998:72d6::/64"));
    v6.ipip = Some("tunl0".into());
    assert!(matches!(
        ipam.add_pool(v6),
        Err(IpamError::IpipOnIpv6 { .. })
    ));
    assert!(matches!(
        ipam.add_pool(Pool::new(net("fd80::/123"))),
        Err(IpamError::PoolTooSmall { .. })
    ));
    assert!(matches!(
        ipam.remove_pool(net("10.9.0.0/16")),
        Err(IpamError::PoolNotFound { .. })
    ));
}

#[test]
fn config_rules() {
    let (_store, ipam) = new_ipam();
    assert_eq!(ipam.config().unwrap(), IpamConfig::default());
    let both_off = IpamConfig {
        strict_affinity: false,
        auto_allocate_blocks: false,
    };
    assert!(matches!(
        ipam.set_config(both_off),
        Err(IpamError::InvalidConfig { .. })
    ));
    ipam.set_config(IpamConfig::default()).unwrap();
    let strict = IpamConfig {
        strict_affinity: true,
        auto_allocate_blocks: true,
    };
    ipam.set_config(strict).unwrap();
    assert_eq!(ipam.config().unwrap(), strict);
    add_pool(&ipam, "10.0.0.0/16");
    ipam.auto_assign("h", 1, None, &Attrs::empty(), &PoolChoice::v4())
        .unwrap();
    let err = ipam.set_config(IpamConfig::default()).unwrap_err();
    assert!(
        matches!(err, IpamError::ConfigLocked { blocks: 1 }),
        "{err}"
    );
    ipam.set_config(strict).unwrap(); // equal: no-op
}

#[test]
fn strict_affinity_forbids_borrowing() {
    for strict in [false, true] {
        let (_store, ipam) = new_ipam();
        ipam.set_config(IpamConfig {
            strict_affinity: strict,
            auto_allocate_blocks: true,
        })
        .unwrap();
        add_pool(&ipam, "10.0.0.0/26"); // exactly one block
        let a = ipam
            .auto_assign("a", 1, None, &Attrs::empty(), &PoolChoice::v4())
            .unwrap();
        assert_eq!(a, ips(&["10.0.0.0"]));
        let b = ipam
            .auto_assign("b", 1, None, &Attrs::empty(), &PoolChoice::v4())
            .unwrap();
        if strict {
            assert!(b.is_empty(), "no borrowing under strict affinity");
            let err = ipam
                .assign_ip(ip("10.0.0.5"), None, &Attrs::empty(), "b")
                .unwrap_err();
            assert!(matches!(err, IpamError::NoHostAffinity { .. }), "{err}");
        } else {
            assert_eq!(b, ips(&["10.0.0.1"]), "b borrows from a's block");
        }
    }
}

#[test]
fn pre_assigned_blocks_without_auto_allocation() {
    let (_store, ipam) = new_ipam();
    ipam.set_config(IpamConfig {
        strict_affinity: true,
        auto_allocate_blocks: false,
    })
    .unwrap();
    add_pool(&ipam, "10.0.0.0/24");
    assert!(ipam
        .auto_assign("a", 1, None, &Attrs::empty(), &PoolChoice::v4())
        .unwrap()
        .is_empty());
    let claim = ipam.claim_affinity(net("10.0.0.64/26"), "a").unwrap();
    assert_eq!(claim.claimed, vec![net("10.0.0.64/26")]);
    let got = ipam
        .auto_assign("a", 2, None, &Attrs::empty(), &PoolChoice::v4())
        .unwrap();
    assert_eq!(got, ips(&["10.0.0.64", "10.0.0.65"]));
    let claim = ipam.claim_affinity(net("10.0.0.0/24"), "b").unwrap();
    assert_eq!(claim.claimed, vec![net("10.0.0.0/26")]);
    assert_eq!(
        claim.unclaimed,
        vec![
            net("10.0.0.64/26"),
            net("10.0.0.128/26"),
            net("10.0.0.192/26")
        ]
    );
    assert!(matches!(
        ipam.claim_affinity(net("10.9.0.0/26"), "a"),
        Err(IpamError::PoolNotFound { .. })
    ));
    assert!(matches!(
        ipam.claim_affinity(net("10.0.0.0/27"), "a"),
        Err(IpamError::InvalidBlockSize { .. })
    ));
}

#[test]
fn same_host_claim_race_shares_the_block() {
    // libcalico #66: two processes of one host race for the same block.
    let (store, ipam) = new_ipam();
    add_pool(&ipam, "10.0.0.0/16");
    let fired = Arc::new(AtomicBool::new(false));
    let (inner, f) = (Arc::clone(&store), Arc::clone(&fired));
    store.set_write_hook(move |key, kind| {
        if matches!(key, Key::Block(_))
            && kind == WriteKind::Create
            && !f.swap(true, Ordering::SeqCst)
        {
            // The other process of the same host gets there first.
            let twin = Ipam::new(Arc::clone(&inner));
            twin.auto_assign("h", 1, None, &Attrs::empty(), &PoolChoice::v4())
                .unwrap();
        }
        Injected::Proceed
    });
    let got = ipam
        .auto_assign("h", 1, None, &Attrs::empty(), &PoolChoice::v4())
        .unwrap();
    assert_eq!(
        ipam.blocks(IpFamily::V4).unwrap().len(),
        1,
        "one block for the host, not two"
    );
    assert_eq!(ipam.host_blocks("h", IpFamily::V4).unwrap().len(), 1);
    assert_eq!(allocated(&ipam), 2);
    assert_eq!(
        ipam.block_cidr(got[0]),
        ipam.host_blocks("h", IpFamily::V4).unwrap()[0]
    );
}

#[test]
fn different_host_claim_race_cleans_up_and_moves_on() {
    // libcalico #58 / libcalico-go #778: two hosts must never both own a block.
    let (store, ipam) = new_ipam();
    add_pool(&ipam, "10.0.0.0/16");
    let stolen = Arc::new(parking_lot::Mutex::new(None));
    let (inner, s) = (Arc::clone(&store), Arc::clone(&stolen));
    store.set_write_hook(move |key, kind| {
        if let (Key::Block(cidr), WriteKind::Create) = (key, kind) {
            let mut s = s.lock();
            if s.is_none() {
                *s = Some(*cidr);
                drop(s);
                // Host b claims exactly this block first.
                let b = Ipam::new(Arc::clone(&inner));
                b.claim_affinity(*cidr, "b").unwrap();
            }
        }
        Injected::Proceed
    });
    let got = ipam
        .auto_assign("a", 1, None, &Attrs::empty(), &PoolChoice::v4())
        .unwrap();
    store.clear_write_hook();
    let stolen = stolen.lock().unwrap();
    let a_blocks = ipam.host_blocks("a", IpFamily::V4).unwrap();
    assert_eq!(a_blocks.len(), 1);
    assert_ne!(
        a_blocks[0], stolen,
        "a's index entry for the lost block was removed"
    );
    assert_eq!(ipam.host_blocks("b", IpFamily::V4).unwrap(), vec![stolen]);
    assert_eq!(ipam.block_cidr(got[0]), a_blocks[0]);
    assert!(ipam.check(&HashSet::<String>::new()).unwrap().is_clean());
}

#[test]
fn a_dangling_index_entry_is_skipped_and_cleaned_up() {
    // A crash between writing the index entry and creating the block.
    let (store, ipam) = new_ipam();
    add_pool(&ipam, "10.0.0.0/16");
    let h = HostName::new("h").unwrap();
    store
        .put(
            &Key::Affinity {
                host: h,
                block: net("10.0.7.0/26"),
            },
            Value::Affinity,
        )
        .unwrap();
    let got = ipam
        .auto_assign("h", 1, None, &Attrs::empty(), &PoolChoice::v4())
        .unwrap();
    assert_eq!(got.len(), 1);
    let report = ipam.check(&HashSet::<String>::new()).unwrap();
    assert_eq!(report.stale_affinities.len(), 1);
    assert_eq!(ipam.release_host_affinities("h").unwrap(), 2);
    assert!(ipam
        .check(&HashSet::<String>::new())
        .unwrap()
        .stale_affinities
        .is_empty());
}

#[test]
fn finding_a_free_block_does_not_read_every_used_block() {
    // libcalico #72: 1284 used blocks cost 1284 quorum reads (74 s) on a host's first
    // allocation. Here: one listing, then a handful of reads.
    let (store, ipam) = new_ipam();
    add_pool(&ipam, "10.0.0.0/16");
    let filler = Ipam::new(Arc::clone(&store));
    for i in 0..300 {
        filler
            .auto_assign(
                &format!("f{}", i % 30),
                64,
                None,
                &Attrs::empty(),
                &PoolChoice::v4(),
            )
            .unwrap();
    }
    let before = store.stats();
    let got = ipam
        .auto_assign("newcomer", 1, None, &Attrs::empty(), &PoolChoice::v4())
        .unwrap();
    assert_eq!(got.len(), 1);
    let after = store.stats();
    let gets = after.gets - before.gets;
    let lists = after.lists - before.lists;
    assert!(gets <= 5, "{gets} reads");
    assert!(lists <= 5, "{lists} listings");
}

#[test]
fn leak_check_reports_allocations_of_dead_handles() {
    let (_store, ipam) = new_ipam();
    add_pool(&ipam, "10.0.0.0/16");
    ipam.auto_assign("h", 2, Some("c1"), &Attrs::empty(), &PoolChoice::v4())
        .unwrap();
    let dead = ipam
        .auto_assign("h", 3, Some("c2"), &Attrs::empty(), &PoolChoice::v4())
        .unwrap();
    let anon = ipam
        .auto_assign("h", 1, None, &Attrs::null(), &PoolChoice::v4())
        .unwrap();
    let report = ipam.check(&HashSet::from(["c1".to_string()])).unwrap();
    assert_eq!(report.allocated, 6);
    assert_eq!(
        report.leaked.iter().map(|a| a.addr).collect::<Vec<_>>(),
        dead
    );
    assert_eq!(
        report
            .without_handle
            .iter()
            .map(|a| a.addr)
            .collect::<Vec<_>>(),
        anon
    );
    assert!(report.handle_mismatches.is_empty());
    assert!(!report.is_clean());
    for handle in report.leaked_handles() {
        ipam.release_by_handle(handle.as_str()).unwrap();
    }
    assert!(ipam.check(&HashSet::from(["c1"])).unwrap().is_clean());
}

#[test]
fn a_store_failure_mid_request_rolls_back_what_the_request_took() {
    let (store, ipam) = new_ipam();
    add_pool(&ipam, "10.0.0.0/16");
    // The first block write succeeds, the second block's creation fails.
    let creates = Arc::new(AtomicU32::new(0));
    let c = Arc::clone(&creates);
    store.set_write_hook(move |key, kind| match (key, kind) {
        (Key::Block(_), WriteKind::Create) if c.fetch_add(1, Ordering::SeqCst) == 1 => {
            Injected::Fail
        }
        _ => Injected::Proceed,
    });
    let err = ipam
        .auto_assign("h", 100, Some("c1"), &Attrs::empty(), &PoolChoice::v4())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Datastore);
    store.clear_write_hook();
    assert_eq!(
        allocated(&ipam),
        0,
        "nothing stays allocated after a failed call"
    );
    assert_eq!(ipam.handle("c1").unwrap(), None);
    let report = ipam.check(&HashSet::<String>::new()).unwrap();
    assert!(report.is_clean(), "{report:?}");
}
