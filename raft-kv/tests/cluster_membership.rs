//! Membership and snapshot scenarios on the simulated network: a new member catching up by
//! snapshot, adding and removing members (including the leader), learners, replicated
//! member metadata. Each ends by comparing state hashes ([`Cluster::converge`]).

use raft_kv::node::{Lifecycle, MemberInfo, MemberPatch, NodeError, ReadConsistency, Role};
use raft_kv::sim::{Cluster, SimConfig};

const SECOND: u64 = 1_000;

fn write_many(cluster: &mut Cluster, leader: u64, count: usize, prefix: &str) {
    for i in 0..count {
        let key = format!("{prefix}{}", i % 13);
        cluster
            .put_and_wait(leader, &key, &format!("{prefix}-{i}"), 5 * SECOND)
            .unwrap_or_else(|e| panic!("write {i} (seed {}): {e}", cluster.seed()));
    }
}

fn small_snapshots(seed: u64) -> SimConfig {
    let mut config = SimConfig::from_env(seed);
    config.node.snapshot_interval = 20;
    config.node.snapshot_catchup_entries = 5;
    config
}

#[test]
fn cluster_new_member_catches_up_by_snapshot() {
    let mut cluster = Cluster::new(small_snapshots(101), 3);
    let leader = cluster.wait_for_leader(5 * SECOND);
    write_many(&mut cluster, leader, 100, "a");
    let leader_node = cluster.node(leader).expect("leader");
    assert!(leader_node.status().counters.snapshots_created >= 4);
    assert!(
        leader_node.status().first_index > 50,
        "the leader compacted its log"
    );

    cluster.add_joiner(4);
    let add = cluster
        .node_mut(leader)
        .expect("leader")
        .add_member(4, Cluster::member_info(4));
    let members = cluster
        .complete(add, 5 * SECOND)
        .expect("member added")
        .response;
    assert_eq!(
        members.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    write_many(&mut cluster, leader, 10, "b");
    cluster.converge(10 * SECOND);
    let joined = cluster.node(4).expect("new member");
    assert!(joined.status().counters.snapshots_installed >= 1);
    assert_eq!(joined.status().voters, vec![1, 2, 3, 4]);
    assert_eq!(
        joined.state_machine().get("b9").map(String::as_str),
        Some("b-9")
    );
    assert_eq!(
        joined.membership().get(4).map(|m| m.info.name.as_str()),
        Some("m4")
    );
}

#[test]
fn cluster_new_member_can_lead_after_joining() {
    let mut cluster = Cluster::new(small_snapshots(103), 3);
    let leader = cluster.wait_for_leader(5 * SECOND);
    write_many(&mut cluster, leader, 30, "a");
    cluster.add_joiner(4);
    let add = cluster
        .node_mut(leader)
        .expect("leader")
        .add_member(4, Cluster::member_info(4));
    cluster.complete(add, 5 * SECOND).expect("member added");
    cluster.converge(10 * SECOND);
    // Crash two original members: 4 and the remaining one form a quorum of 4.
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    cluster.crash(leader);
    let new_leader = cluster.wait_for_leader(10 * SECOND);
    assert!(new_leader == 4 || others.contains(&new_leader));
    write_many(&mut cluster, new_leader, 5, "c");
    cluster.restart(leader);
    cluster.converge(10 * SECOND);
}

#[test]
fn cluster_add_then_remove_a_member() {
    let mut cluster = Cluster::new(SimConfig::from_env(111), 3);
    let leader = cluster.wait_for_leader(5 * SECOND);
    cluster.add_joiner(4);
    let add = cluster
        .node_mut(leader)
        .expect("leader")
        .add_member(4, Cluster::member_info(4));
    cluster.complete(add, 5 * SECOND).expect("added");
    write_many(&mut cluster, leader, 10, "a");
    cluster.converge(10 * SECOND);

    let remove = cluster.node_mut(leader).expect("leader").remove_member(4);
    let members = cluster
        .complete(remove, 5 * SECOND)
        .expect("removed")
        .response;
    assert_eq!(
        members.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    // The removed member stops, whether it applied its removal or a peer told it.
    assert!(
        cluster.run_until(10 * SECOND, |c| {
            c.node(4)
                .is_some_and(|n| matches!(n.lifecycle(), Lifecycle::Removed))
        }),
        "member 4 did not stop (seed {})",
        cluster.seed()
    );
    let stopped = cluster.node_mut(4).expect("node 4").propose(b"x".to_vec());
    assert!(matches!(stopped.wait(), Err(NodeError::Stopped { .. })));
    write_many(&mut cluster, leader, 5, "b");
    cluster.converge(10 * SECOND);
    for id in [1, 2, 3] {
        let node = cluster.node(id).expect("member");
        assert_eq!(node.status().voters, vec![1, 2, 3]);
        assert!(node.membership().is_removed(4));
    }
    // An id is never reused.
    let again = cluster
        .node_mut(leader)
        .expect("leader")
        .add_member(4, MemberInfo::default());
    assert!(matches!(
        cluster.complete(again, SECOND),
        Err(NodeError::InvalidRequest { .. })
    ));
}

#[test]
fn cluster_removing_the_leader_elects_another() {
    let mut cluster = Cluster::new(SimConfig::from_env(121), 5);
    let leader = cluster.wait_for_leader(5 * SECOND);
    write_many(&mut cluster, leader, 5, "a");
    let remove = cluster
        .node_mut(leader)
        .expect("leader")
        .remove_member(leader);
    let result = cluster.complete(remove, 5 * SECOND);
    // The leader applies its own removal and stops; its proposer may see the answer or the
    // stop, but never a silent hang.
    assert!(
        matches!(result, Ok(_) | Err(NodeError::Stopped { .. })),
        "{result:?}"
    );
    let new_leader = cluster.wait_for_leader(10 * SECOND);
    assert_ne!(new_leader, leader);
    write_many(&mut cluster, new_leader, 5, "b");
    cluster.converge(10 * SECOND);
    let node = cluster.node(new_leader).expect("new leader");
    assert_eq!(node.status().voters.len(), 4);
    assert!(node.membership().is_removed(leader));
}

#[test]
fn cluster_learner_catches_up_then_is_promoted() {
    let mut cluster = Cluster::new(small_snapshots(131), 3);
    let leader = cluster.wait_for_leader(5 * SECOND);
    write_many(&mut cluster, leader, 40, "a");
    cluster.add_joiner(4);
    let add = cluster
        .node_mut(leader)
        .expect("leader")
        .add_learner(4, Cluster::member_info(4));
    cluster.complete(add, 5 * SECOND).expect("learner added");
    cluster.converge(10 * SECOND);
    let learner = cluster.node(4).expect("learner");
    assert_eq!(learner.status().learners, vec![4]);
    assert!(learner.membership().get(4).is_some_and(|m| m.learner));
    // A learner never campaigns.
    cluster.isolate(4);
    cluster.run_for(3 * SECOND);
    assert_eq!(cluster.node(4).map(|n| n.role()), Some(Role::Follower));
    cluster.heal();
    let promote = cluster.node_mut(leader).expect("leader").promote_learner(4);
    cluster.complete(promote, 5 * SECOND).expect("promoted");
    cluster.converge(10 * SECOND);
    let member = cluster.node(4).expect("member");
    assert_eq!(member.status().voters, vec![1, 2, 3, 4]);
    assert!(member.status().learners.is_empty());
    assert!(member.membership().get(4).is_some_and(|m| !m.learner));
}

#[test]
fn cluster_member_metadata_is_replicated() {
    let mut cluster = Cluster::new(SimConfig::from_env(141), 3);
    let leader = cluster.wait_for_leader(5 * SECOND);
    let follower = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("follower");
    // A `member update` (peer URLs, through the leader) and a publish (name and client
    // URLs, by the member itself) proposed together: each changes only its own fields, so
    // neither undoes the other, whatever order they commit in.
    let peer_urls = vec!["http://10.0.0.2:2380".to_string()];
    let client_urls = vec!["http://10.0.0.2:2379".to_string()];
    let moved = cluster
        .node_mut(leader)
        .expect("leader")
        .update_member(follower, MemberPatch::peer_urls(peer_urls.clone()));
    let published = cluster.node_mut(follower).expect("follower").update_member(
        follower,
        MemberPatch::attributes("renamed".into(), client_urls.clone()),
    );
    cluster
        .complete(moved, 5 * SECOND)
        .expect("peer URLs updated");
    cluster.complete(published, 5 * SECOND).expect("published");
    cluster.converge(10 * SECOND);
    let info = MemberInfo {
        name: "renamed".into(),
        peer_urls,
        client_urls,
    };
    for id in cluster.ids() {
        let node = cluster.node(id).expect("member");
        assert_eq!(
            node.membership().get(follower).map(|m| &m.info),
            Some(&info)
        );
    }
    // Publishing again with other peer URLs known nowhere: still only name and client URLs.
    let again = cluster
        .node_mut(follower)
        .expect("follower")
        .update_member(follower, MemberPatch::attributes("again".into(), vec![]));
    cluster
        .complete(again, 5 * SECOND)
        .expect("published again");
    cluster.converge(10 * SECOND);
    let node = cluster.node(leader).expect("leader");
    let now = node.membership().get(follower).map(|m| m.info.clone());
    assert_eq!(
        now,
        Some(MemberInfo {
            name: "again".into(),
            peer_urls: info.peer_urls.clone(),
            client_urls: vec![],
        })
    );
    let missing = cluster
        .node_mut(leader)
        .expect("leader")
        .update_member(99, MemberPatch::peer_urls(info.peer_urls));
    assert!(matches!(
        cluster.complete(missing, SECOND),
        Err(NodeError::InvalidRequest { .. })
    ));
}

#[test]
fn cluster_conflicting_membership_changes_are_refused() {
    let mut cluster = Cluster::new(SimConfig::from_env(151), 3);
    let leader = cluster.wait_for_leader(5 * SECOND);
    cluster.add_joiner(4);
    cluster.add_joiner(5);
    let node = cluster.node_mut(leader).expect("leader");
    let first = node.add_member(4, Cluster::member_info(4));
    // A second change while the first is not applied yet is refused at once.
    let second = node.add_member(5, Cluster::member_info(5));
    assert!(matches!(second.wait(), Err(NodeError::Dropped { .. })));
    cluster.complete(first, 5 * SECOND).expect("first change");
    let bad = cluster.node_mut(leader).expect("leader").remove_member(77);
    assert!(matches!(bad.wait(), Err(NodeError::InvalidRequest { .. })));
    let zero = cluster
        .node_mut(leader)
        .expect("leader")
        .add_member(0, MemberInfo::default());
    assert!(matches!(zero.wait(), Err(NodeError::InvalidRequest { .. })));
    let read = cluster.get(5, "k", ReadConsistency::Linearizable);
    // Member 5 was never added: it has no leader, so its read times out.
    assert!(cluster.complete(read, 2 * SECOND).is_err());
    cluster.crash(5);
    cluster.converge(10 * SECOND);
}
