//! `IpRoute2` on the real kernel (root namespace): the veth pair `Join` builds, as
//! Calico made it — host end `cali<11>` up with proxy ARP and a host route per container
//! address, peer `tmp<11>` with the container MAC — rebuilt when a stale pair exists,
//! and deleted idempotently. Names are derived from a random id, so they collide with
//! nothing; every link made is deleted on every exit path. Without root the test skips,
//! except under `CI=true`, where it fails.

mod libnetwork_support;

use std::time::{SystemTime, UNIX_EPOCH};

use libnetwork_support::felix::run;
use libnetwork_support::plugin::driver::interface_names;
use libnetwork_support::plugin::links::{HostLinks, IpRoute2, VethSpec};

fn is_root() -> bool {
    run("id", &["-u"], None).is_ok_and(|u| u.trim() == "0")
}

fn sysctl(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Deletes the pair on drop, whatever happened.
struct Guard(String);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = IpRoute2.delete_veth(&self.0);
    }
}

#[test]
fn join_builds_calicos_veth_and_leave_removes_it() {
    if !is_root() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but not root: the veth test cannot run");
        }
        eprintln!("SKIPPED: needs root");
        return;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let endpoint = format!(
        "{:016x}{:048x}",
        nanos as u64 ^ u64::from(std::process::id()),
        0
    );
    let (host, peer) = interface_names(&endpoint);
    let _guard = Guard(host.clone());
    let spec = VethSpec {
        host: host.clone(),
        peer: peer.clone(),
        peer_mac: "ee:ee:ee:ee:ee:ee".into(),
        addresses: vec![
            "10.254.253.7/32".parse().expect("v4"),
            "fd00:254:253::7/128".parse().expect("v6"),
        ],
        want_ipv6_link_local: true,
    };
    let link_local = IpRoute2.create_veth(&spec).expect("create veth");
    let ll = link_local.expect("the host end has an IPv6 link-local address");
    assert_eq!(ll.segments()[0], 0xfe80, "{ll}");

    let show = run("ip", &["-d", "link", "show", "dev", &host], None).expect("host end");
    assert!(show.contains("veth") && show.contains(",UP"), "{show}");
    let peer_show = run("ip", &["link", "show", "dev", &peer], None).expect("peer");
    assert!(peer_show.contains("ee:ee:ee:ee:ee:ee"), "{peer_show}");
    assert_eq!(
        sysctl(&format!("/proc/sys/net/ipv4/conf/{host}/proxy_arp")),
        "1"
    );
    assert_eq!(
        sysctl(&format!("/proc/sys/net/ipv4/neigh/{host}/proxy_delay")),
        "0"
    );
    assert_eq!(
        sysctl(&format!("/proc/sys/net/ipv6/conf/{host}/proxy_ndp")),
        "1"
    );
    let routes = run("ip", &["-4", "route", "show", "dev", &host], None).expect("routes");
    assert!(routes.contains("10.254.253.7 scope link"), "{routes}");
    let routes6 = run("ip", &["-6", "route", "show", "dev", &host], None).expect("routes");
    assert!(routes6.contains("fd00:254:253::7"), "{routes6}");

    // A second Join (after an interrupted first one) rebuilds the pair.
    IpRoute2.create_veth(&spec).expect("rebuild");
    assert!(run("ip", &["link", "show", "dev", &host], None).is_ok());

    // Leave, twice.
    assert!(IpRoute2.delete_veth(&host).expect("delete"));
    assert!(!IpRoute2.delete_veth(&host).expect("delete again"));
    assert!(
        run("ip", &["link", "show", "dev", &peer], None).is_err(),
        "the peer went with it"
    );
    let left = run("ip", &["-4", "route"], None).expect("routes");
    assert!(!left.contains("10.254.253.7"), "{left}");
}

#[test]
fn a_failed_build_leaves_no_interface() {
    if !is_root() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but not root: the veth test cannot run");
        }
        eprintln!("SKIPPED: needs root");
        return;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let endpoint = format!("{:016x}{:048x}", (nanos as u64).rotate_left(17), 1);
    let (host, peer) = interface_names(&endpoint);
    let _guard = Guard(host.clone());
    let spec = VethSpec {
        host: host.clone(),
        peer,
        // The kernel refuses a multicast MAC for the peer: the build fails half way.
        peer_mac: "01:00:5e:00:00:01".into(),
        addresses: vec!["10.254.253.8/32".parse().expect("v4")],
        want_ipv6_link_local: false,
    };
    let err = IpRoute2
        .create_veth(&spec)
        .expect_err("a multicast MAC is refused");
    assert!(err.to_string().contains("ip link set dev"), "{err}");
    assert!(
        run("ip", &["link", "show", "dev", &host], None).is_err(),
        "the half-built pair was deleted"
    );
}
