//! calicoctl end to end, as a golden transcript: the walkthrough's §2 commands plus the
//! error paths (bad CIDR, overlap, IP outside every pool, address taken, container
//! already networked, unknown profile, rule edits out of range...), with their messages
//! and exit statuses — once over the embedded datastore and once over our etcd example,
//! against the same golden file `tests/golden/calicoctl/session.txt` (the backend must
//! not show). The model dataplane is used (no root): containers are names.
//!
//! `UPDATE_GOLDEN=1 cargo test --test calicoctl_cli` rewrites the golden file.

#[path = "calicoctl_support/mod.rs"]
mod calicoctl_support;
#[path = "etcd_support/mod.rs"]
mod etcd_support;

use calico_model::datastore::Datastore;
use calico_model::store::CalicoStore;
use calicoctl_support::{
    calicoctl, check_golden, check_golden_prefix, entry, free_port, normalise,
};

/// How many commands of [`SESSION`] also run over the embedded store: the walkthrough's
/// own sequence (each command opens the store anew, which costs a WAL replay).
const EMBEDDED_PREFIX: usize = 15;

/// The session: `[HOSTNAME=h] <calicoctl words>`; `< json` feeds stdin. The walkthrough's
/// §2 first, then the error paths.
const SESSION: &[&str] = &[
    "version",
    "HOSTNAME=dockera node --ip=192.168.1.23",
    "HOSTNAME=dockerb node --ip=192.168.1.24",
    "pool add 10.20.10.0/24 --ipip --nat-outgoing",
    "profile add myprofile1",
    "profile add myprofile2",
    "HOSTNAME=dockera container add centos-1 10.20.10.1",
    "HOSTNAME=dockera container add centos-2 10.20.10.2",
    "HOSTNAME=dockerb container add centos-3 10.20.10.3",
    "HOSTNAME=dockera container centos-1 profile append myprofile1",
    "HOSTNAME=dockera container centos-2 profile append myprofile2",
    "HOSTNAME=dockerb container centos-3 profile append myprofile1",
    "endpoint show --detailed",
    "profile show --detailed",
    "pool show",
    "pool show --ipv4",
    "HOSTNAME=dockerb node --ip=192.168.1.23 --name=dockerc",
    "node --ip=192.168.1.300",
    "node show",
    "HOSTNAME=dockera status",
    "HOSTNAME=nohost status",
    "pool add 10.20.10.0/24x",
    "pool add 10.30.0.0/27",
    "pool add 10.20.0.0/16",
    "pool add fd00::/64 --ipip",
    "pool add 10.40.0.0/16 10.40.1.0/24",
    "pool add",
    "pool add 10.20.10.0/24 --ipipp",
    "profile add bad/name",
    "profile show",
    "HOSTNAME=dockera container add centos-4 10.20.10.1",
    "HOSTNAME=dockera container add centos-4 10.30.0.1",
    "HOSTNAME=dockera container add centos-1 10.20.10.9",
    "HOSTNAME=dockera container add centos-4 bogus",
    "HOSTNAME=dockera container add centos-4 10.99.0.0/24",
    "HOSTNAME=dockera container add centos-4 10.20.10.0/24",
    "HOSTNAME=dockera container add centos-5 ipv6",
    "HOSTNAME=dockera container centos-1 profile append nope",
    "HOSTNAME=dockerb container centos-3 profile append myprofile1 myprofile2",
    "HOSTNAME=dockera container centos-1 profile remove myprofile2",
    "HOSTNAME=dockera container centos-4 profile set myprofile1 myprofile2",
    "HOSTNAME=dockera container centos-4 profile show",
    "HOSTNAME=dockera container centos-4 profile set",
    "HOSTNAME=dockera container centos-4 endpoint-id show",
    "HOSTNAME=dockera container centos-1 profile append myprofile2 myprofile2",
    "HOSTNAME=dockera container centos-1 profile show",
    "HOSTNAME=dockera container centos-9 profile show",
    "HOSTNAME=dockera container centos-1 endpoint show",
    "endpoint show",
    "endpoint show --host=dockerb --detailed",
    "profile myprofile1 rule show",
    "profile myprofile1 rule add inbound allow tcp to ports 80,443:450",
    "profile myprofile1 rule add inbound allow tcp to ports 80,443:450",
    "profile myprofile1 rule add inbound --at=9 deny icmp type 8",
    "profile myprofile1 rule add outbound deny from cidr 10.0.0.0/8 to cidr fd00::/64",
    "profile myprofile1 rule add outbound allow icmp to ports 80",
    "profile myprofile1 rule show",
    "profile myprofile1 rule json",
    "profile myprofile1 rule remove inbound --at=9",
    "profile myprofile1 rule remove inbound deny icmp type 8",
    "profile myprofile1 rule remove inbound deny udp",
    "profile myprofile1 rule remove inbound --at=2",
    "profile myprofile1 rule show",
    "profile myprofile2 rule update < {\"inbound_rules\":[{\"action\":\"allow\",\"src_tag\":\"myprofile2\"},{\"action\":\"deny\"}],\"outbound_rules\":[{\"action\":\"allow\"}]}",
    "profile myprofile2 rule update < {\"inbound_rules\":[{\"action\":\"allow\",\"bogus\":1}]}",
    "profile myprofile2 rule show",
    "profile myprofile1 tag add web",
    "profile myprofile1 tag show",
    "profile myprofile1 tag remove nope",
    "profile myprofile1 tag remove web",
    "profile nope rule show",
    "profile nope tag show",
    "profile remove myprofile2",
    "profile remove nope",
    "HOSTNAME=dockera container centos-2 ip add 10.20.10.20",
    "HOSTNAME=dockera container centos-2 ip add 10.20.10.1",
    "HOSTNAME=dockera container centos-2 endpoint show",
    "HOSTNAME=dockera container centos-2 ip remove 10.20.10.20",
    "HOSTNAME=dockera container centos-2 ip remove 10.20.10.20",
    "ipam info 10.20.10.2",
    "ipam info 10.20.10.99",
    "ipam release 10.20.10.99",
    "HOSTNAME=dockera container remove centos-2",
    "HOSTNAME=dockera container remove centos-2",
    "profile remove myprofile2",
    "endpoint show",
    "HOSTNAME=dockerb node remove",
    "HOSTNAME=dockerb node remove --remove-endpoints",
    "node show",
    "pool remove 10.99.0.0/24",
    "pool remove 10.20.10.0/24",
    "pool show --ipv4",
    "frobnicate",
];

/// Runs the session with `env` and returns the normalised transcript.
fn session(env: &[(String, String)], commands: &[&str]) -> String {
    let mut transcript = String::new();
    for line in commands {
        let (words, stdin) = match line.split_once(" < ") {
            Some((w, s)) => (w, Some(s)),
            None => (*line, None),
        };
        let r = calicoctl(words, env, stdin);
        transcript.push_str(&entry(line, &r));
    }
    normalise(&transcript)
}

/// The keys the session leaves are calicoctl 0.22's.
fn check_datastore(ds: &dyn Datastore, full: bool) {
    let store = CalicoStore::new(ds);
    let state = store.snapshot().expect("snapshot");
    let (key, ep) = state
        .endpoints
        .iter()
        .find(|(k, _)| k.workload == "centos-1")
        .expect("centos-1's endpoint");
    assert_eq!(key.host, "dockera");
    assert_eq!(key.endpoint.len(), 32, "32-hex endpoint id");
    assert_eq!(ep.name, format!("cali{}", &key.endpoint[..11]));
    assert_eq!(ep.profile_ids, vec!["myprofile1"]);
    assert_eq!(
        ep.ipv4_nets
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        vec!["10.20.10.1/32"]
    );
    if full {
        assert!(
            !state.hosts.contains_key("dockerb"),
            "node remove deleted dockerb"
        );
    }
    assert_eq!(
        ds.get_value("/calico/v1/config/IpInIpEnabled")
            .expect("read")
            .map(|v| v.0)
            .as_deref(),
        Some("true"),
        "pool add --ipip turned IpInIpEnabled on (and removal leaves it on)"
    );
    assert_eq!(
        ds.get_value("/calico/v1/policy/profile/myprofile1/tags")
            .expect("read")
            .map(|v| v.0)
            .as_deref(),
        Some(r#"["myprofile1"]"#)
    );
}

#[test]
fn session_over_the_embedded_datastore() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = vec![
        (
            "CALICO_DATA_DIR".to_string(),
            dir.path().join("store").display().to_string(),
        ),
        ("CALICOCTL_DATAPLANE".to_string(), "model".to_string()),
    ];
    let transcript = session(&env, &SESSION[..EMBEDDED_PREFIX]);
    check_golden_prefix("session.txt", &transcript, EMBEDDED_PREFIX);
    let ds = calico_model::embedded::EmbeddedDatastore::open(&dir.path().join("store"))
        .expect("reopen the embedded store");
    check_datastore(&ds, false);
}

#[test]
fn session_over_our_etcd() {
    let cluster = etcd_support::Cluster::start("calicoctl", 1, free_port(), free_port());
    let env = vec![
        ("ETCD_ENDPOINTS".to_string(), cluster.endpoints()),
        ("CALICOCTL_DATAPLANE".to_string(), "model".to_string()),
    ];
    let transcript = session(&env, SESSION);
    check_golden("session.txt", &transcript);
    let ds = calico_model::etcd::EtcdDatastore::connect(&[cluster.endpoints()]).expect("connect");
    check_datastore(&ds, true);
}

#[test]
fn unreachable_etcd_is_reported_with_exit_1() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let env = vec![
        ("ETCD_ENDPOINTS".to_string(), dead),
        ("CALICOCTL_DATAPLANE".to_string(), "model".to_string()),
    ];
    let r = calicoctl("pool show", &env, None);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.err.contains("Error accessing etcd") && r.err.contains("Is etcd running?"),
        "{r:?}"
    );
    let r = calicoctl(
        "pool show",
        &[
            ("ETCD_AUTHORITY".into(), "x:1".into()),
            ("ETCD_SCHEME".into(), "ftp".into()),
        ],
        None,
    );
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.out.contains("ETCD_SCHEME"), "{r:?}");
}

#[test]
fn the_embedded_store_belongs_to_one_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    let _held = calico_model::embedded::EmbeddedDatastore::open(&store).expect("open");
    let env = vec![
        ("CALICO_DATA_DIR".to_string(), store.display().to_string()),
        ("CALICOCTL_DATAPLANE".to_string(), "model".to_string()),
    ];
    let r = calicoctl("pool show", &env, None);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.err.contains("embedded datastore"), "{r:?}");
}

#[test]
fn plumbing_commands_need_root_on_the_linux_dataplane() {
    if calicoctl_support::is_root() {
        return; // as root the command runs (tests/calicoctl_netns.rs covers it).
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let env = vec![(
        "CALICO_DATA_DIR".to_string(),
        dir.path().join("store").display().to_string(),
    )];
    let r = calicoctl("container add centos-1 10.20.10.1", &env, None);
    assert_eq!(r.code, 2, "{r:?}");
    assert_eq!(r.err, "This command must be run as root.\n");
}
