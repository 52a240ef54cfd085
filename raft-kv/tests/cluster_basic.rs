//! Scenario tests on the deterministic simulated network: election, replication, leader
//! crash, partitions, restarts, snapshots and membership. Each ends by comparing the
//! members' state hashes ([`Cluster::converge`]).

use raft_kv::node::ReadConsistency;
use raft_kv::sim::{Cluster, SimConfig};

const SECOND: u64 = 1_000;

#[test]
fn cluster_elects_a_leader_with_1_3_and_5_members() {
    for members in [1, 3, 5] {
        let mut cluster = Cluster::new(SimConfig::from_env(11 + members), members);
        let leader = cluster.wait_for_leader(5 * SECOND);
        assert!(cluster.ids().contains(&leader));
        cluster.converge(5 * SECOND);
    }
}

#[test]
fn cluster_replicates_writes_to_every_member() {
    for members in [1, 3, 5] {
        let mut cluster = Cluster::new(SimConfig::from_env(21 + members), members);
        let leader = cluster.wait_for_leader(5 * SECOND);
        for i in 0..20 {
            let applied =
                cluster.put_and_wait(leader, &format!("k{i}"), &format!("v{i}"), 5 * SECOND);
            assert!(applied.is_ok(), "write {i}: {applied:?}");
        }
        cluster.converge(5 * SECOND);
        for id in cluster.ids() {
            let node = cluster.node(id).expect("running");
            assert_eq!(
                node.state_machine().get("k19").map(String::as_str),
                Some("v19")
            );
        }
    }
}

#[test]
fn cluster_forwards_proposals_from_followers() {
    let mut cluster = Cluster::new(SimConfig::from_env(31), 3);
    let leader = cluster.wait_for_leader(5 * SECOND);
    let follower = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("follower");
    let applied = cluster
        .put_and_wait(follower, "x", "1", 5 * SECOND)
        .expect("applied");
    assert_eq!(applied.response, None);
    let value = cluster.get(follower, "x", ReadConsistency::Linearizable);
    assert_eq!(
        cluster
            .complete(value, 5 * SECOND)
            .ok()
            .flatten()
            .as_deref(),
        Some("1")
    );
    cluster.converge(5 * SECOND);
}

#[test]
fn cluster_survives_leader_crash_without_losing_committed_entries() {
    for members in [3, 5] {
        let mut cluster = Cluster::new(SimConfig::from_env(41 + members), members);
        let first = cluster.wait_for_leader(5 * SECOND);
        for i in 0..10 {
            cluster
                .put_and_wait(first, &format!("k{i}"), "before", 5 * SECOND)
                .expect("write");
        }
        cluster.crash(first);
        let second = cluster.wait_for_leader(5 * SECOND);
        assert_ne!(first, second);
        for i in 0..10 {
            cluster
                .put_and_wait(second, &format!("k{i}"), "after", 5 * SECOND)
                .expect("write");
        }
        cluster.restart(first);
        cluster.converge(10 * SECOND);
    }
}

#[test]
fn cluster_minority_partition_cannot_commit_or_read() {
    let mut cluster = Cluster::new(SimConfig::from_env(51), 5);
    let leader = cluster.wait_for_leader(5 * SECOND);
    cluster
        .put_and_wait(leader, "k", "v0", 5 * SECOND)
        .expect("write");
    let others: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    let minority = [leader, others[0]];
    let majority = [others[1], others[2], others[3]];
    cluster.partition(&[&minority, &majority]);
    // The old leader keeps leading its minority for a while, but cannot commit...
    let write = cluster.put(leader, "k", "lost");
    let result = cluster.complete(write, 3 * SECOND);
    assert!(result.is_err(), "minority committed: {result:?}");
    // ...nor serve a linearizable read, on any minority member.
    for id in minority {
        let read = cluster.get(id, "k", ReadConsistency::Linearizable);
        let result = cluster.complete(read, 3 * SECOND);
        assert!(
            result.is_err(),
            "minority member {id} served a linearizable read: {result:?}"
        );
    }
    // The majority elects a leader and keeps going.
    let new_leader = cluster.wait_for_leader(5 * SECOND);
    assert!(majority.contains(&new_leader));
    cluster
        .put_and_wait(new_leader, "k", "v1", 5 * SECOND)
        .expect("majority write");
    cluster.converge(10 * SECOND);
    let node = cluster.node(leader).expect("old leader");
    assert_eq!(
        node.state_machine().get("k").map(String::as_str),
        Some("v1")
    );
}

#[test]
fn cluster_deposed_leader_cannot_serve_linearizable_read() {
    let mut cluster = Cluster::new(SimConfig::from_env(61), 3);
    let old = cluster.wait_for_leader(5 * SECOND);
    cluster
        .put_and_wait(old, "k", "v0", 5 * SECOND)
        .expect("write");
    cluster.isolate(old);
    let others: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != old).collect();
    // Wait for the others to elect a new leader and write through it.
    assert!(cluster.run_until(5 * SECOND, |c| {
        others
            .iter()
            .any(|id| c.node(*id).is_some_and(|n| n.is_leader()))
    }));
    let new = others
        .iter()
        .copied()
        .find(|id| cluster.node(*id).is_some_and(|n| n.is_leader()))
        .expect("new leader");
    cluster
        .put_and_wait(new, "k", "v1", 5 * SECOND)
        .expect("write");
    // The deposed leader still believes it leads (or just stepped down): either way a
    // linearizable read must not return the stale v0.
    let read = cluster.get(old, "k", ReadConsistency::Linearizable);
    let result = cluster.complete(read, 3 * SECOND);
    assert!(
        !matches!(result, Ok(Some(ref v)) if v == "v0"),
        "deposed leader served a stale read"
    );
    assert!(
        result.is_err(),
        "isolated member served a linearizable read: {result:?}"
    );
    // A serializable read is allowed to be stale.
    let read = cluster.get(old, "k", ReadConsistency::Serializable);
    assert_eq!(
        cluster.complete(read, SECOND).ok().flatten().as_deref(),
        Some("v0")
    );
    cluster.converge(10 * SECOND);
}

#[test]
fn cluster_restart_of_every_member_keeps_acknowledged_writes() {
    for members in [1, 3, 5] {
        let mut cluster = Cluster::new(SimConfig::from_env(71 + members), members);
        let leader = cluster.wait_for_leader(5 * SECOND);
        for i in 0..30 {
            cluster
                .put_and_wait(leader, &format!("k{}", i % 7), &format!("v{i}"), 5 * SECOND)
                .expect("write");
        }
        for id in cluster.ids() {
            cluster.crash(id);
        }
        for id in cluster.ids() {
            cluster.restart(id);
        }
        let leader = cluster.wait_for_leader(10 * SECOND);
        let read = cluster.get(leader, "k1", ReadConsistency::Linearizable);
        assert_eq!(
            cluster.complete(read, 5 * SECOND).ok().flatten().as_deref(),
            Some("v29")
        );
        cluster.converge(10 * SECOND);
    }
}

#[test]
fn cluster_proposal_without_leader_is_dropped() {
    let mut cluster = Cluster::new(SimConfig::from_env(81), 3);
    // Before any election nobody leads: proposals are refused at once, never applied.
    let write = cluster.put(1, "k", "v");
    match cluster.complete(write, 1) {
        Err(e) => assert!(e.certainly_not_applied(), "{e}"),
        Ok(applied) => panic!("applied without a leader: {applied:?}"),
    }
    cluster.converge(10 * SECOND);
}

#[test]
fn cluster_vote_survives_a_restart() {
    // Voter `v` grants its vote to `a`, crashes and restarts, then `b` asks for its vote in
    // the same term. If the vote were not durable, `v` would grant it again and two leaders
    // would share one term (the simulator checks election safety after every event).
    let mut cluster = Cluster::new(SimConfig::from_env(91), 3);
    cluster.wait_for_leader(5 * SECOND);
    let (a, b, v) = (1, 2, 3);
    cluster.partition(&[&[a], &[b], &[v]]);
    cluster.run_for(3 * SECOND);
    assert!(
        cluster.leader().is_none(),
        "check quorum deposes the isolated leader"
    );
    cluster.partition(&[&[a, v], &[b]]);
    cluster
        .node_mut(a)
        .expect("a")
        .campaign()
        .expect("campaign");
    assert!(cluster.run_until(SECOND, |c| c.node(a).is_some_and(|n| n.is_leader())));
    let term = cluster.node(a).expect("a").term();
    // Cut at once, so `v` never receives the new leader's first entry.
    cluster.partition(&[&[a], &[b], &[v]]);
    cluster.crash(v);
    cluster.restart(v);
    assert_eq!(cluster.node(v).expect("v").term(), term);
    cluster.partition(&[&[b, v], &[a]]);
    cluster
        .node_mut(b)
        .expect("b")
        .campaign()
        .expect("campaign");
    cluster.run_for(SECOND);
    let b_node = cluster.node(b).expect("b");
    assert!(
        !(b_node.is_leader() && b_node.term() == term),
        "two leaders in term {term}"
    );
    cluster.converge(10 * SECOND);
}

#[test]
fn cluster_healing_a_partition_converges() {
    for members in [3, 5] {
        let mut cluster = Cluster::new(SimConfig::from_env(95 + members), members);
        let ids = cluster.ids();
        for round in 0..4u64 {
            let leader = cluster.wait_for_leader(10 * SECOND);
            // Split so that the current leader ends up in the minority half.
            let (minority, majority): (Vec<u64>, Vec<u64>) = {
                let mut others: Vec<u64> = ids.iter().copied().filter(|id| *id != leader).collect();
                let keep = (ids.len() - 1) / 2 - 1;
                let mut minority = vec![leader];
                minority.extend(others.drain(..keep));
                (minority, others)
            };
            cluster.partition(&[&minority, &majority]);
            // Both halves take writes; only the majority's can commit.
            let lost = cluster.put(leader, "side", &format!("minority-{round}"));
            let new_leader = {
                assert!(cluster.run_until(10 * SECOND, |c| {
                    majority
                        .iter()
                        .any(|id| c.node(*id).is_some_and(|n| n.is_leader()))
                }));
                majority
                    .iter()
                    .copied()
                    .find(|id| cluster.node(*id).is_some_and(|n| n.is_leader()))
                    .expect("majority leader")
            };
            cluster
                .put_and_wait(new_leader, "side", &format!("majority-{round}"), 5 * SECOND)
                .expect("majority write");
            assert!(
                cluster.complete(lost, SECOND).is_err(),
                "the minority committed a write"
            );
            cluster.converge(10 * SECOND);
            for id in cluster.ids() {
                let value = cluster
                    .node(id)
                    .and_then(|n| n.state_machine().get("side").cloned());
                assert_eq!(value, Some(format!("majority-{round}")), "member {id}");
            }
        }
    }
}
