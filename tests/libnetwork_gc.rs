//! Garbage collection of orphaned allocations (`Driver::collect_garbage`, run by the
//! binary at start and every `--gc-interval`): what Docker leaves when it crashes between
//! `RequestAddress` and `CreateEndpoint`, or when a `ReleaseAddress` is lost while the
//! plugin is down. Only this host's plugin allocations that no endpoint and no network
//! record uses, and that are older than the grace period, may go.

mod libnetwork_support;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use calico_model::datastore::{Datastore, MemoryDatastore};
use libnetwork_support::{assert_no_leaks, Harness, Options};
use serde_json::{json, Value};

const NET: &str = "5e8d2a1f9c7b4e3a6d0f1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5a6";
const EP: &str = "6f0c2d9b7a1e4c3b8a9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d";

fn ok(h: &Harness, method: &str, body: Value) -> Value {
    let answer = h.call(method, Some(&body));
    assert_eq!(answer.status, 200, "{method}: {}", answer.raw);
    answer.body
}

fn request(h: &Harness, address: &str, options: Value) -> IpAddr {
    let body = ok(
        h,
        "IpamDriver.RequestAddress",
        json!({"PoolID": "CalicoPoolIPv4", "Address": address, "Options": options}),
    );
    let cidr = body["Address"].as_str().expect("address");
    cidr.trim_end_matches("/32").parse().expect("IPv4")
}

fn held(h: &Harness) -> Vec<IpAddr> {
    h.held().iter().map(|a| a.address).collect()
}

fn host(store: &Arc<dyn Datastore>, name: &str) -> Harness {
    let mut options = Options::new(name);
    options.store = Arc::clone(store);
    Harness::start_with(options)
}

#[test]
fn only_old_unused_allocations_of_this_host_are_collected() {
    let store: Arc<dyn Datastore> = Arc::new(MemoryDatastore::new());
    let a = host(&store, "hosta");
    let b = host(&store, "hostb");
    a.ipam
        .ipam()
        .add_pool(ipam::Pool::new("10.9.0.0/24".parse().expect("cidr")))
        .expect("pool");
    ok(
        &a,
        "NetworkDriver.CreateNetwork",
        json!({"NetworkID": NET, "Options": {},
               "IPv4Data": [{"AddressSpace": "CalicoLocalAddressSpace", "Pool": "10.9.0.0/24",
                             "Gateway": "10.9.0.1/24", "AuxAddresses": {"router": "10.9.0.2/24"}}]}),
    );
    let gateway = request(
        &a,
        "10.9.0.1",
        json!({"RequestAddressType": "com.docker.network.gateway"}),
    );
    let aux = request(&a, "10.9.0.2", json!({}));
    let listed = request(&a, "10.9.0.10", json!({}));
    ok(
        &a,
        "NetworkDriver.CreateEndpoint",
        json!({"NetworkID": NET, "EndpointID": EP, "Interface": {"Address": "10.9.0.10/32"}}),
    );
    // Orphans: Docker asked, then never created the endpoint nor released the address.
    let orphan_fixed = request(&a, "10.9.0.20", json!({}));
    let orphan_auto = request(&a, "", json!({}));
    // Not ours: calicoctl's allocation and host B's orphan.
    let calicoctl: IpAddr = "10.9.0.30".parse().expect("address");
    a.ipam
        .ipam()
        .assign_ip(calicoctl, None, &ipam::Attrs::empty(), "hosta")
        .expect("calicoctl assign");
    let other_host = request(&b, "10.9.0.40", json!({}));

    // Young allocations may still be waiting for their CreateEndpoint.
    let released = a
        .driver
        .collect_garbage(Duration::from_secs(3600))
        .expect("gc");
    assert_eq!(released, Vec::<IpAddr>::new());
    assert_eq!(
        held(&a).len(),
        5,
        "gateway, aux, listed and the two orphans"
    );

    let mut released = a.driver.collect_garbage(Duration::ZERO).expect("gc");
    released.sort();
    let mut orphans = vec![orphan_fixed, orphan_auto];
    orphans.sort();
    assert_eq!(released, orphans, "exactly the orphans of host A");
    let mut kept = held(&a);
    kept.sort();
    let mut expected = vec![gateway, aux, listed];
    expected.sort();
    assert_eq!(
        kept, expected,
        "gateway and aux (network record) and the endpoint's address stay"
    );
    assert!(
        a.ipam.ipam().assignment(calicoctl).expect("read").is_some(),
        "calicoctl's address stays"
    );
    assert_eq!(
        held(&b),
        vec![other_host],
        "host B's allocation is B's business"
    );
    assert_eq!(
        a.driver.collect_garbage(Duration::ZERO).expect("gc"),
        Vec::<IpAddr>::new(),
        "idempotent"
    );

    // Docker's normal teardown afterwards still works and leaves nothing.
    ok(
        &a,
        "NetworkDriver.DeleteEndpoint",
        json!({"NetworkID": NET, "EndpointID": EP}),
    );
    for address in [listed, gateway, aux] {
        ok(
            &a,
            "IpamDriver.ReleaseAddress",
            json!({"PoolID": "CalicoPoolIPv4", "Address": address.to_string()}),
        );
    }
    ok(&a, "NetworkDriver.DeleteNetwork", json!({"NetworkID": NET}));
    assert_eq!(held(&a), Vec::<IpAddr>::new());
    assert_no_leaks(&a, "host A after teardown");
}
