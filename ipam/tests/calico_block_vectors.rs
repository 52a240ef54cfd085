//! Test vectors ported from libcalico v0.17.0 `tests/unit/test_block.py` (spec/ipam.md §11):
//! the block-level operations and the block JSON, case by case.

use std::net::IpAddr;

use ipam::{Attribute, Attrs, Block, HandleId, HostName, Ipam, IpamError, IpamOptions, MemStore};
use ipnetwork::IpNetwork;
use serde_json::{json, Value as Json};

const HOST: &str = "test_host1";

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn host(s: &str) -> HostName {
    HostName::new(s).unwrap()
}

fn nth(block: &str, n: u128) -> IpAddr {
    let b = net(block);
    match b.network() {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) + n as u32).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) + n).into()),
    }
}

fn attr(handle: Option<&str>, secondary: Json) -> Attribute {
    Attribute::new(
        handle.map(|h| HandleId::new(h).unwrap()),
        Attrs::from_json(secondary).unwrap(),
    )
}

const V4: &str = "10.11.12.0/26";
const V6: &str = "2001:abcd:def0::/122";

fn empty(cidr: &str) -> Block {
    Block::new(net(cidr), Some(host(HOST)), false).unwrap()
}

/// Calico's `_test_block_not_empty_v4/v6`: ordinals 2 and 4 allocated with handle key1.
fn not_empty(cidr: &str) -> Block {
    let mut b = empty(cidr);
    let a = attr(Some("key1"), json!({"key21": "value1", "key22": "value2"}));
    b.assign(nth(cidr, 2), &a, &host(HOST)).unwrap();
    b.assign(nth(cidr, 4), &a, &host(HOST)).unwrap();
    b
}

fn json_of(b: &Block) -> Json {
    serde_json::from_str(&b.to_json()).unwrap()
}

fn allocation_index(b: &Block, ordinal: usize) -> Json {
    json_of(b)["allocations"][ordinal].clone()
}

#[test]
fn init_block() {
    let b = Block::new(net("192.168.25.0/26"), Some(host("test_host")), false).unwrap();
    assert_eq!(b.affinity(), Some(&host("test_host")));
    assert_eq!(b.cidr(), net("192.168.25.0/26"));
    assert_eq!(b.free_count(), 64);
}

#[test]
fn to_json_and_back() {
    let mut b = Block::new(net("192.168.25.0/26"), Some(host("test_host")), false).unwrap();
    let a = attr(
        Some("test_key"),
        json!({"key1": "value1", "key2": "value2"}),
    );
    b.assign(ip("192.168.25.5"), &a, &host("test_host"))
        .unwrap();
    assert_eq!(b.free_count(), 63);
    let j = json_of(&b);
    assert_eq!(j["cidr"], "192.168.25.0/26");
    assert_eq!(j["affinity"], "host:test_host");
    assert_eq!(j["strict_affinity"], false);
    assert_eq!(
        j["attributes"][0],
        json!({"handle_id": "test_key", "secondary": {"key1": "value1", "key2": "value2"}})
    );
    let mut expected_alloc = vec![Json::Null; 64];
    expected_alloc[5] = json!(0);
    assert_eq!(j["allocations"], Json::Array(expected_alloc));
    let expected_unalloc: Vec<usize> = (0..64).filter(|&o| o != 5).collect();
    assert_eq!(j["unallocated"], json!(expected_unalloc));
    let back = Block::from_json(&b.to_json()).unwrap();
    assert_eq!(back.to_json(), b.to_json());
    assert_eq!(back, b);
}

fn sammy_json(
    unallocated: Option<Vec<usize>>,
    strict: Option<bool>,
    affinity: Option<&str>,
) -> Json {
    let mut allocations = vec![Json::Null; 64];
    allocations[0] = json!(0);
    allocations[1] = json!(0);
    allocations[4] = json!(1);
    let mut j = json!({
        "cidr": "192.168.25.0/26",
        "allocations": allocations,
        "attributes": [
            {"handle_id": "test_key1", "secondary": {"key1": "value11", "key2": "value21"}},
            {"handle_id": "test_key2", "secondary": {"key1": "value12", "key2": "value22"}},
        ],
    });
    if let Some(u) = unallocated {
        j["unallocated"] = json!(u);
    }
    if let Some(s) = strict {
        j["strict_affinity"] = json!(s);
    }
    if let Some(a) = affinity {
        j["affinity"] = json!(a);
    }
    j
}

#[test]
fn from_json_without_unallocated_derives_ascending_order() {
    let text = sammy_json(None, Some(true), Some("host:Sammy Davis, Jr.")).to_string();
    let b = Block::from_json(&text).unwrap();
    assert_eq!(b.free_count(), 61);
    assert_eq!(b.affinity(), Some(&host("Sammy Davis, Jr.")));
    assert!(b.strict_affinity());
    let expected: Vec<usize> = (0..64).filter(|o| ![0, 1, 4].contains(o)).collect();
    assert_eq!(b.unallocated().collect::<Vec<_>>(), expected);
    assert_eq!(b.attributes().len(), 2);
    assert_eq!(
        b.attribute(ip("192.168.25.4"))
            .unwrap()
            .handle
            .as_ref()
            .unwrap()
            .as_str(),
        "test_key2"
    );
    // Writing it back adds the order.
    assert_eq!(json_of(&b)["unallocated"], json!(expected));
}

#[test]
fn from_json_missing_strict_flag_defaults_false_and_bad_orders_are_rejected() {
    let unallocated: Vec<usize> = (0..64).filter(|o| ![0, 1, 4].contains(o)).collect();
    let b =
        Block::from_json(&sammy_json(Some(unallocated.clone()), None, Some("host:x")).to_string())
            .unwrap();
    assert!(!b.strict_affinity());
    assert_eq!(json_of(&b)["strict_affinity"], false);

    let mut repeated = unallocated.clone();
    repeated.push(3);
    let mut allocated_entry = unallocated.clone();
    allocated_entry.push(0);
    let missing = unallocated[1..].to_vec();
    for (name, bad) in [
        ("repeat", repeated),
        ("allocated", allocated_entry),
        ("missing", missing),
    ] {
        let err = Block::from_json(&sammy_json(Some(bad), None, None).to_string()).unwrap_err();
        assert!(matches!(err, IpamError::Corrupt { .. }), "{name}: {err}");
    }
}

#[test]
fn from_json_without_or_with_empty_affinity() {
    let b = Block::from_json(&sammy_json(None, None, None).to_string()).unwrap();
    assert_eq!(b.affinity(), None);
    let b = Block::from_json(&sammy_json(None, Some(false), Some("")).to_string()).unwrap();
    assert_eq!(b.affinity(), None);
    assert_eq!(json_of(&b)["affinity"], "");
}

#[test]
fn from_json_rejects_broken_invariants() {
    let mut j = sammy_json(None, None, None);
    j["allocations"][10] = json!(2); // index past the attributes
    assert!(Block::from_json(&j.to_string()).is_err());
    let mut j = sammy_json(None, None, None);
    j["allocations"][4] = Json::Null; // attribute 1 unreferenced
    assert!(Block::from_json(&j.to_string()).is_err());
    let mut j = sammy_json(None, None, None);
    j["allocations"].as_array_mut().unwrap().pop(); // 63 entries
    assert!(Block::from_json(&j.to_string()).is_err());
    let mut j = sammy_json(None, None, None);
    j["affinity"] = json!("virtual:foo");
    assert!(Block::from_json(&j.to_string()).is_err());
    let mut j = sammy_json(None, None, None);
    j["cidr"] = json!("192.168.25.1/26");
    assert!(Block::from_json(&j.to_string()).is_err());
}

fn auto_assign_sequence(cidr: &str) {
    let h = host(HOST);
    let a = attr(Some("key2"), json!({"key21": "value1", "key22": "value2"}));
    let mut b0 = empty(cidr);
    assert_eq!(b0.auto_assign(1, &a, &h, true).unwrap(), vec![nth(cidr, 0)]);
    assert_eq!(b0.attributes()[0], a);
    assert_eq!(b0.free_count(), 63);
    let a3 = attr(Some("key3"), json!({"key21": "value1", "key22": "value2"}));
    assert_eq!(
        b0.auto_assign(3, &a3, &h, true).unwrap(),
        vec![nth(cidr, 1), nth(cidr, 2), nth(cidr, 3)]
    );
    assert_eq!(b0.attributes()[1], a3);
    let a3e = attr(Some("key3"), json!({}));
    assert_eq!(
        b0.auto_assign(3, &a3e, &h, true).unwrap(),
        vec![nth(cidr, 4), nth(cidr, 5), nth(cidr, 6)]
    );
    assert_eq!(b0.attributes()[2], a3e);
    assert_eq!(b0.free_count(), 57);

    let mut b1 = empty(cidr);
    assert_eq!(
        b1.auto_assign(3, &a, &h, true).unwrap(),
        vec![nth(cidr, 0), nth(cidr, 1), nth(cidr, 2)]
    );
    assert_eq!(
        b1.auto_assign(3, &a, &h, true).unwrap(),
        vec![nth(cidr, 3), nth(cidr, 4), nth(cidr, 5)]
    );
    assert_eq!(b1.attributes().len(), 1, "same attributes share one entry");
    assert!(b1.auto_assign(0, &a3, &h, true).unwrap().is_empty());
    assert_eq!(
        b1.attributes().len(),
        1,
        "allocating nothing adds no attribute"
    );
    let none = attr(None, json!({}));
    assert_eq!(b1.auto_assign(64 - 8, &none, &h, true).unwrap().len(), 56);
    assert_eq!(b1.free_count(), 2);
    assert_eq!(
        b1.auto_assign(4, &none, &h, true).unwrap(),
        vec![nth(cidr, 62), nth(cidr, 63)]
    );
    assert_eq!(b1.free_count(), 0);
    assert!(b1.auto_assign(4, &none, &h, true).unwrap().is_empty());

    let mut b2 = not_empty(cidr);
    assert_eq!(b2.free_count(), 62);
    assert_eq!(
        b2.auto_assign(4, &none, &h, true).unwrap(),
        vec![nth(cidr, 0), nth(cidr, 1), nth(cidr, 3), nth(cidr, 5)]
    );
    assert_eq!(b2.free_count(), 58);
}

#[test]
fn auto_assign_v4() {
    auto_assign_sequence(V4);
}

#[test]
fn auto_assign_v6() {
    auto_assign_sequence(V6);
    // Ordinal math for small IPv6 addresses.
    let small = "::1234:5600/122";
    let mut b = Block::new(net(small), Some(host(HOST)), false).unwrap();
    assert_eq!(
        b.auto_assign(4, &attr(None, json!({})), &host(HOST), true)
            .unwrap(),
        (0..4).map(|i| nth(small, i)).collect::<Vec<_>>()
    );
}

#[test]
fn auto_assign_wrong_host() {
    let mut b = empty(V4);
    let a = attr(None, json!({}));
    assert!(matches!(
        b.auto_assign(1, &a, &host("DifferentHost"), true),
        Err(IpamError::NoHostAffinity { .. })
    ));
    assert_eq!(
        b.auto_assign(1, &a, &host("DifferentHost"), false).unwrap(),
        vec![nth(V4, 0)]
    );
}

#[test]
fn assign_twice_is_already_assigned() {
    for cidr in [V4, V6] {
        let mut b = empty(cidr);
        let a = attr(Some("key0"), json!({"key21": "value1"}));
        b.assign(nth(cidr, 2), &a, &host(HOST)).unwrap();
        let err = b.assign(nth(cidr, 2), &a, &host(HOST)).unwrap_err();
        assert!(matches!(err, IpamError::AlreadyAssigned { .. }), "{err}");
        assert!(matches!(
            b.assign(ip("192.0.2.1"), &a, &host(HOST)),
            Err(IpamError::AddressNotInBlock { .. })
        ));
    }
}

#[test]
fn strict_affinity_refuses_other_hosts() {
    let mut b = Block::new(net(V4), Some(host(HOST)), true).unwrap();
    let a = attr(Some("key0"), json!({}));
    let other = host("Not test host");
    assert!(matches!(
        b.assign(nth(V4, 2), &a, &other),
        Err(IpamError::NoHostAffinity { .. })
    ));
    assert!(matches!(
        b.auto_assign(1, &a, &other, true),
        Err(IpamError::NoHostAffinity { .. })
    ));
    assert!(matches!(
        b.auto_assign(1, &a, &other, false),
        Err(IpamError::NoHostAffinity { .. })
    ));
}

fn release_sequence(cidr: &str) {
    let h = host(HOST);
    let mut b = not_empty(cidr);
    b.assign(nth(cidr, 13), &attr(None, json!({})), &h).unwrap();
    let r = b.release(&[nth(cidr, 13)]);
    assert!(r.not_allocated.is_empty());
    assert_eq!(allocation_index(&b, 13), Json::Null);
    assert_eq!(
        b.unallocated().last(),
        Some(13),
        "a freed ordinal is reused last"
    );
    assert_eq!(b.attributes().len(), 1);
    assert_eq!(b.unallocated().count(), 62);

    let t = attr(Some("test_key"), json!({"test": "value"}));
    let ips0 = b.auto_assign(5, &t, &h, true).unwrap();
    assert_eq!(ips0, [0, 1, 3, 5, 6].map(|o| nth(cidr, o)).to_vec());
    let ips1 = b.auto_assign(5, &t, &h, true).unwrap();
    assert_eq!(ips1, [7, 8, 9, 10, 11].map(|o| nth(cidr, o)).to_vec());
    assert_eq!(b.attributes().len(), 2);

    assert!(b.release(&ips0).not_allocated.is_empty());
    assert_eq!(b.attributes().len(), 2);

    let ips2 = b.auto_assign(5, &t, &h, true).unwrap();
    assert_eq!(ips2, [12, 14, 15, 16, 17].map(|o| nth(cidr, o)).to_vec());
    assert_eq!(b.attributes().len(), 2);

    let ips3 = b
        .auto_assign(2, &attr(Some("test_key2"), json!({})), &h, true)
        .unwrap();
    assert_eq!(b.attributes().len(), 3);
    assert_eq!(allocation_index(&b, 17), json!(1));
    assert_eq!(allocation_index(&b, 18), json!(2));

    let both: Vec<IpAddr> = ips2.iter().chain(&ips1).copied().collect();
    let r = b.release(&both);
    assert!(r.not_allocated.is_empty());
    assert_eq!(r.handles, vec![(HandleId::new("test_key").unwrap(), 10)]);
    assert_eq!(
        b.attributes().len(),
        2,
        "unreferenced attributes are removed"
    );
    assert_eq!(allocation_index(&b, 17), Json::Null);
    assert_eq!(
        allocation_index(&b, 18),
        json!(1),
        "and the rest renumbered in order"
    );

    let bad = nth(cidr, 0);
    let mut with_bad = ips3.clone();
    with_bad.push(bad);
    let r = b.release(&with_bad);
    assert_eq!(r.not_allocated, vec![bad]);
    assert_eq!(r.released, 2);
    assert_eq!(allocation_index(&b, 18), Json::Null);
    assert_eq!(allocation_index(&b, 19), Json::Null);
    // The block stays valid JSON-wise after all of that.
    assert_eq!(Block::from_json(&b.to_json()).unwrap(), b);
}

#[test]
fn release_v4() {
    release_sequence(V4);
}

#[test]
fn release_v6() {
    release_sequence(V6);
}

#[test]
fn assignments_by_handle_and_attributes_for_ip() {
    let mut b = not_empty(V4);
    assert_eq!(
        b.addresses_with_handle(Some(&HandleId::new("key1").unwrap())),
        vec![ip("10.11.12.2"), ip("10.11.12.4")]
    );
    b.assign(ip("10.11.12.56"), &attr(None, json!({})), &host(HOST))
        .unwrap();
    assert_eq!(b.addresses_with_handle(None), vec![ip("10.11.12.56")]);
    assert!(b
        .addresses_with_handle(Some(&HandleId::new("nope").unwrap()))
        .is_empty());

    let a = b.attribute(ip("10.11.12.2")).unwrap();
    assert_eq!(a.handle.as_ref().unwrap().as_str(), "key1");
    assert_eq!(
        a.secondary.to_json(),
        json!({"key21": "value1", "key22": "value2"})
    );
    let a0 = attr(Some("key0"), json!({"a": 1, "b": 2, "c": 3}));
    b.assign(ip("10.11.12.57"), &a0, &host(HOST)).unwrap();
    assert_eq!(b.attribute(ip("10.11.12.57")), Some(&a0));
    assert_eq!(b.attribute(ip("10.11.12.58")), None);
}

#[test]
fn release_by_handle_appends_in_ascending_order() {
    let mut b = not_empty(V4);
    assert_eq!(b.release_by_handle(&HandleId::new("key1").unwrap()), 2);
    assert!(!b.is_allocated(ip("10.11.12.2")));
    assert!(!b.is_allocated(ip("10.11.12.4")));
    let order: Vec<usize> = b.unallocated().collect();
    assert_eq!(&order[order.len() - 2..], &[2, 4]);
    assert!(b.attributes().is_empty());
}

#[test]
fn block_cidr_for_address() {
    let ipam = Ipam::new(MemStore::new());
    for (addr, cidr) in [
        ("192.168.3.7", "192.168.3.0/26"),
        ("10.34.11.75", "10.34.11.64/26"),
        ("2001:abee:beef::1234", "2001:abee:beef::1200/122"),
        ("2001:abee:beef::", "2001:abee:beef::/122"),
    ] {
        assert_eq!(ipam.block_cidr(ip(addr)), net(cidr), "{addr}");
    }
    let small = Ipam::with_options(
        MemStore::new(),
        IpamOptions {
            block_prefix_v4: 28,
            ..IpamOptions::default()
        },
    )
    .unwrap();
    assert_eq!(small.block_cidr(ip("10.34.11.75")), net("10.34.11.64/28"));
    assert!(Ipam::with_options(
        MemStore::new(),
        IpamOptions {
            block_prefix_v4: 19,
            ..IpamOptions::default()
        }
    )
    .is_err());
}

#[test]
fn larger_blocks_work_the_same() {
    let mut b = Block::new(net("10.0.0.0/22"), None, false).unwrap();
    assert_eq!(b.size(), 1024);
    let a = attr(None, json!({}));
    let got = b.auto_assign(1000, &a, &host("h"), false).unwrap();
    assert_eq!(got.len(), 1000);
    assert_eq!(got[999], ip("10.0.3.231"));
    let r = b.release(&got[..10]);
    assert_eq!(r.released, 10);
    let next = b.auto_assign(30, &a, &host("h"), false).unwrap();
    assert_eq!(next[23], ip("10.0.3.255"));
    assert_eq!(
        next[24],
        ip("10.0.0.0"),
        "then the freed ones, oldest first"
    );
    assert_eq!(Block::from_json(&b.to_json()).unwrap(), b);
    assert!(Block::new(net("10.0.0.0/19"), None, false).is_err());
}
