//! `raft_kv::client` against a real etcd 3.4 (the library under etcdctl and calico-model's
//! etcd datastore): every keys operation and its headers, conditional writes and their
//! errors, TTL and refresh, members, stats, version, health, and failover.

mod etcdctl_support;

use std::time::Duration;

use etcdctl_support::{free_port, require, RealEtcd, REAL_ETCD};
use raft_kv::client::{
    error::{ERR_DIR_NOT_EMPTY, ERR_KEY_NOT_FOUND, ERR_NODE_EXIST, ERR_NOT_FILE},
    Action, Client, ClientBuilder, ClientError, DeleteOptions, GetOptions, PrevExist, SetOptions,
};

fn server() -> Option<(RealEtcd, Client)> {
    if !require(REAL_ETCD, "etcd 3.4 server") {
        return None;
    }
    let etcd = RealEtcd::start("client");
    let client = Client::new(&[etcd.client_url.as_str()]).unwrap();
    Some((etcd, client))
}

#[test]
fn keys_api_end_to_end() {
    let Some((_etcd, c)) = server() else { return };
    // set: 201 then 200 with prevNode; X-Etcd-Index equals modifiedIndex on writes.
    let first = c.set("/a/b", "1", &SetOptions::default()).unwrap();
    assert_eq!((first.action.clone(), first.status), (Action::Set, 201));
    let n1 = first.node.clone().unwrap();
    assert_eq!(first.meta.etcd_index, Some(n1.modified_index));
    assert!(first.meta.raft_index.is_some() && first.meta.raft_term >= Some(1));
    assert!(first
        .meta
        .cluster_id
        .as_deref()
        .is_some_and(|id| !id.is_empty()));
    let second = c.set("/a/b", "2", &SetOptions::default()).unwrap();
    assert_eq!(second.status, 200);
    assert_eq!(second.prev_node.unwrap().value.as_deref(), Some("1"));

    // get: file, directory (sorted, recursive), quorum, missing key.
    let got = c
        .get(
            "/a/b",
            &GetOptions {
                quorum: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(got.node.unwrap().value.as_deref(), Some("2"));
    c.set("/a/a", "0", &SetOptions::default()).unwrap();
    c.set("/a/sub/c", "3", &SetOptions::default()).unwrap();
    let dir = c
        .get(
            "/a",
            &GetOptions {
                sorted: true,
                recursive: true,
                ..Default::default()
            },
        )
        .unwrap()
        .node
        .unwrap();
    let keys: Vec<&str> = dir.nodes.iter().map(|n| n.key.as_str()).collect();
    assert_eq!(keys, ["/a/a", "/a/b", "/a/sub"]);
    assert_eq!(dir.nodes[2].nodes[0].value.as_deref(), Some("3"));
    let err = c.get("/a/nope/deeper", &GetOptions::default()).unwrap_err();
    assert!(err.is_key_not_found(), "{err}");
    assert_eq!(err.etcd().unwrap().cause, "/a/nope");

    // create / update / CAS / CAD.
    assert!(c
        .create("/a/b", "x", None)
        .unwrap_err()
        .is_etcd_code(ERR_NODE_EXIST));
    let created = c.create("/new", "v", None).unwrap();
    assert_eq!((created.action, created.status), (Action::Create, 201));
    let upd = c.update("/new", "w", None).unwrap();
    assert_eq!(upd.action, Action::Update);
    let created_index = upd.node.as_ref().unwrap().created_index;
    assert_eq!(created_index, created.node.unwrap().created_index);
    assert!(c
        .update("/missing", "v", None)
        .unwrap_err()
        .is_etcd_code(ERR_KEY_NOT_FOUND));
    let cas_err = c
        .compare_and_swap("/new", "z", Some("nope"), None, None)
        .unwrap_err();
    assert!(cas_err.is_compare_failed());
    assert_eq!(cas_err.etcd().unwrap().cause, "[nope != w]");
    let mi = upd.node.unwrap().modified_index;
    let cas = c
        .compare_and_swap("/new", "z", Some("w"), Some(mi), None)
        .unwrap();
    assert_eq!(cas.action, Action::CompareAndSwap);
    let cad_err = c.compare_and_delete("/new", Some("w"), None).unwrap_err();
    assert!(cad_err.is_compare_failed());
    let cad = c.compare_and_delete("/new", Some("z"), None).unwrap();
    assert_eq!(cad.action, Action::CompareAndDelete);

    // Directories: mkdir, not-a-file, not-empty, recursive delete.
    c.mkdir("/d", None).unwrap();
    c.set("/d/x", "1", &SetOptions::default()).unwrap();
    assert!(c
        .delete("/d", &DeleteOptions::default())
        .unwrap_err()
        .is_etcd_code(ERR_NOT_FILE));
    let not_empty = c
        .delete(
            "/d",
            &DeleteOptions {
                dir: true,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(not_empty.is_etcd_code(ERR_DIR_NOT_EMPTY));
    let rm = c
        .delete(
            "/d",
            &DeleteOptions {
                recursive: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(rm.action, Action::Delete);
    assert!(rm.node.unwrap().dir);

    // In-order keys sort in creation order.
    let q1 = c
        .create_in_order("/queue", "a", None)
        .unwrap()
        .node
        .unwrap();
    let q2 = c
        .create_in_order("/queue", "b", None)
        .unwrap()
        .node
        .unwrap();
    assert_eq!(q1.key, format!("/queue/{:020}", q1.created_index));
    let listed = c
        .get(
            "/queue",
            &GetOptions {
                sorted: true,
                ..Default::default()
            },
        )
        .unwrap()
        .node
        .unwrap();
    assert_eq!(listed.nodes, vec![q1, q2]);

    // Odd characters in keys and values survive the round trip.
    let odd_key = "/odd/a b?c#d%e&f=g+h/é";
    let odd_value = "x&y=z+w %20\n<tag>";
    c.set(odd_key, odd_value, &SetOptions::default()).unwrap();
    let back = c
        .get(odd_key, &GetOptions::default())
        .unwrap()
        .node
        .unwrap();
    assert_eq!(
        (back.key.as_str(), back.value.as_deref()),
        (odd_key, Some(odd_value))
    );

    // noValueOnSuccess.
    let quiet = c
        .set(
            "/quiet",
            "v",
            &SetOptions {
                no_value_on_success: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert!(quiet.node.is_none());
}

#[test]
fn ttl_refresh_and_expiry() {
    let Some((_etcd, c)) = server() else { return };
    let set = c
        .set(
            "/t",
            "v",
            &SetOptions {
                ttl: Some(100),
                ..Default::default()
            },
        )
        .unwrap()
        .node
        .unwrap();
    assert!(set.expiration.is_some() && set.ttl.is_some_and(|t| (99..=100).contains(&t)));
    let refreshed = c.refresh("/t", 200).unwrap();
    let node = refreshed.node.unwrap();
    assert_eq!(node.value.as_deref(), Some("v"), "refresh keeps the value");
    assert!(node.ttl.is_some_and(|t| t > 150));
    // An update without a TTL makes the key permanent.
    let permanent = c.update("/t", "w", None).unwrap().node.unwrap();
    assert_eq!((permanent.ttl, permanent.expiration), (None, None));
    // A directory TTL through set(dir, prevExist).
    c.mkdir("/td", None).unwrap();
    let dir = c
        .set(
            "/td",
            "",
            &SetOptions {
                dir: true,
                ttl: Some(1),
                prev_exist: PrevExist::Exist,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(dir.action, Action::Update);
    // It expires (the leader purges within ~1.5 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match c.get("/td", &GetOptions::default()) {
            Err(e) if e.is_key_not_found() => break,
            Ok(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200))
            }
            other => panic!("/td did not expire: {other:?}"),
        }
    }
}

#[test]
fn members_stats_version_health() {
    let Some((etcd, c)) = server() else { return };
    let members = c.members().unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].name, "client");
    assert_eq!(
        members[0].client_urls,
        std::slice::from_ref(&etcd.client_url)
    );
    assert_eq!(c.leader().unwrap().id, members[0].id);
    assert!(c.version().unwrap().etcdserver.starts_with("3.4"));
    let me = c.self_stats().unwrap();
    assert_eq!(
        (me.name.as_str(), me.state.as_str()),
        ("client", "StateLeader")
    );
    assert!(c.leader_stats().unwrap().followers.is_empty());
    let before = c.store_stats().unwrap().sets_success;
    c.set("/s", "1", &SetOptions::default()).unwrap();
    assert!(c.store_stats().unwrap().sets_success > before);
    assert!(c.health_at(&etcd.client_url).unwrap().healthy);
    // Member changes: a conflicting add is an answer, an unknown remove is a status.
    let conflict = c.add_member(&[etcd.peer_url.as_str()]).unwrap_err();
    assert_eq!(
        conflict,
        ClientError::Member {
            status: 409,
            message: "membership: peerURL exists".into()
        }
    );
    let unknown = c.remove_member("1234abcd").unwrap_err();
    assert!(
        matches!(unknown, ClientError::UnexpectedStatus { status: 404, .. }),
        "{unknown:?}"
    );
    let bad = c.add_member(&["http://127.0.0.1"]).unwrap_err();
    assert!(matches!(bad, ClientError::InvalidArgument(_)));
    // Updating the only member's peer URL to itself succeeds.
    c.update_member(&members[0].id, &[etcd.peer_url.as_str()])
        .unwrap();
}

#[test]
fn fails_over_from_dead_endpoints_and_syncs() {
    let Some((etcd, _)) = server() else { return };
    let dead = format!("http://127.0.0.1:{}", free_port());
    let c = ClientBuilder::new(&[dead.as_str(), etcd.client_url.as_str()])
        .request_timeout(Some(Duration::from_secs(2)))
        .build()
        .unwrap();
    c.set("/f", "1", &SetOptions::default()).unwrap();
    // Non-idempotent writes also fail over when the dead endpoint refused the connection.
    let c2 = Client::new(&[dead.as_str(), etcd.client_url.as_str()]).unwrap();
    c2.create("/g", "1", None).unwrap();
    c2.sync().unwrap();
    assert_eq!(c2.endpoints(), std::slice::from_ref(&etcd.client_url));
    // Only dead endpoints: the cluster is unavailable, a connection error.
    let gone = Client::new(&[dead.as_str()]).unwrap();
    let err = gone.get("/f", &GetOptions::default()).unwrap_err();
    assert!(err.is_connection_error(), "{err}");
    assert!(matches!(err, ClientError::ClusterUnavailable { ref errors } if errors.len() == 1));
}
