//! How a starting member decides who it is: restart, found a cluster, join one, or be
//! forced into a new one-member cluster.
//!
//! | data dir | flags | plan |
//! |---|---|---|
//! | has an identity | (any; `--initial-*` ignored) | [`Plan::Restart`] |
//! | has an identity | `--force-new-cluster` | [`Plan::ForceNew`]: fresh member and cluster ids, same data |
//! | empty | `--initial-cluster-state new` | [`Plan::New`]: ids derived from `--initial-cluster` + token |
//! | empty | `--initial-cluster-state existing` | [`Plan::Join`]: ask the listed peers who is in the cluster, find this member by its peer URLs |
//!
//! Founding members all compute every member id and the cluster id from the same flags
//! ([`super::id`]), so they agree without a round trip. A joining member's id was chosen by
//! the member that served `member add` (it includes a time stamp), so the joiner has to
//! ask; the answer is the JSON of [`ClusterView`].

use serde::{Deserialize, Serialize};

use super::api::MemberInfo;
use super::config::{Config, InitialClusterState};
use super::datadir::Identity;
use super::id::{cluster_id, member_id, ClusterId, MemberId};
use super::ServerError;

/// What a peer tells a joining member.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterView {
    /// The cluster id (hex).
    #[serde(rename = "clusterId")]
    pub cluster_id: String,
    /// Every member.
    pub members: Vec<MemberInfoWire>,
}

/// A member as [`ClusterView`] carries it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberInfoWire {
    /// Id (hex).
    pub id: String,
    /// Name.
    pub name: String,
    /// Peer URLs.
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    /// Client URLs.
    #[serde(rename = "clientURLs")]
    pub client_urls: Vec<String>,
}

impl ClusterView {
    /// The view of a cluster with these members.
    pub fn new(cluster: ClusterId, members: &[MemberInfo]) -> ClusterView {
        ClusterView {
            cluster_id: cluster.to_string(),
            members: members
                .iter()
                .map(|m| MemberInfoWire {
                    id: m.id.to_string(),
                    name: m.name.clone(),
                    peer_urls: m.peer_urls.clone(),
                    client_urls: m.client_urls.clone(),
                })
                .collect(),
        }
    }
}

/// One founding member: id, name, peer URLs.
pub type Founder = (MemberId, String, Vec<String>);

/// How this member starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Resume from the data dir.
    Restart(Identity),
    /// Restart the data dir's state as a new one-member cluster with fresh ids.
    ForceNew {
        /// The new identity.
        identity: Identity,
        /// The identity the data dir had.
        previous: Identity,
    },
    /// Found a new cluster.
    New {
        /// This member's identity.
        identity: Identity,
        /// Every founding member, in id order.
        founders: Vec<Founder>,
    },
    /// Join a running cluster (the identity comes from [`plan_join`]).
    Join,
}

/// Derives the founding members and ids of a new cluster from the flags.
pub fn plan_new(config: &Config) -> Result<Plan, ServerError> {
    config.check_initial_cluster()?;
    let mut founders: Vec<Founder> = config
        .initial_cluster
        .iter()
        .map(|(name, urls)| {
            let id = member_id(urls, &config.initial_cluster_token, None);
            (
                id,
                name.clone(),
                urls.iter().map(|u| u.to_string()).collect(),
            )
        })
        .collect();
    founders.sort();
    let ids: Vec<MemberId> = founders.iter().map(|f| f.0).collect();
    let own = member_id(
        &config.initial_advertise_peer_urls,
        &config.initial_cluster_token,
        None,
    );
    Ok(Plan::New {
        identity: Identity {
            member_id: own,
            cluster_id: cluster_id(&ids),
        },
        founders,
    })
}

/// Chooses the plan from the data dir's identity (if any) and the flags.
pub fn plan(
    config: &Config,
    existing: Option<Identity>,
    now_unix: u64,
) -> Result<Plan, ServerError> {
    match existing {
        Some(previous) if config.force_new_cluster => {
            let own = member_id(
                &config.initial_advertise_peer_urls,
                &format!("{}-force-new-{}", previous.cluster_id, previous.member_id),
                Some(now_unix),
            );
            let identity = Identity {
                member_id: own,
                cluster_id: cluster_id(&[own]),
            };
            Ok(Plan::ForceNew { identity, previous })
        }
        Some(identity) => Ok(Plan::Restart(identity)),
        None if config.initial_cluster_state == InitialClusterState::Existing => {
            config.check_initial_cluster()?;
            Ok(Plan::Join)
        }
        None => plan_new(config),
    }
}

/// Finds this member in a peer's answer (by its advertised peer URLs).
pub fn plan_join(config: &Config, view: &ClusterView) -> Result<Identity, ServerError> {
    let mut own_urls: Vec<String> = config
        .initial_advertise_peer_urls
        .iter()
        .map(|u| u.to_string())
        .collect();
    own_urls.sort();
    let cluster = u64::from_str_radix(&view.cluster_id, 16).map_err(|_| {
        ServerError::Cluster(format!("peer sent a bad cluster id {:?}", view.cluster_id))
    })?;
    for member in &view.members {
        let mut urls = member.peer_urls.clone();
        urls.sort();
        if urls == own_urls {
            let id = MemberId::parse_hex(&member.id).ok_or_else(|| {
                ServerError::Cluster(format!("peer sent a bad member id {:?}", member.id))
            })?;
            return Ok(Identity {
                member_id: id,
                cluster_id: ClusterId(cluster),
            });
        }
    }
    Err(ServerError::Cluster(format!(
        "error validating peerURLs: member {} with peer URLs {} is not in the cluster; add it first with `etcdctl member add {} {}`",
        config.name,
        own_urls.join(","),
        config.name,
        own_urls.join(",")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::config::Invocation;

    fn config(args: &[&str], env: &[(&str, &str)]) -> Config {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match Invocation::parse(&args, &env).unwrap().0 {
            Invocation::Run(config) => *config,
            _ => panic!("not a run"),
        }
    }

    fn transcript_node(i: u16) -> Config {
        config(
            &[
                "--name",
                &format!("node{i}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", 22482 + i),
                "--initial-cluster-token",
                "etcd-cluster",
                "--initial-cluster",
                "node1=http://127.0.0.1:22483,node2=http://127.0.0.1:22484",
            ],
            &[],
        )
    }

    /// Both founders of the transcript's cluster derive the ids etcd printed.
    #[test]
    fn founders_agree_with_etcd() {
        for i in [1, 2] {
            let Plan::New { identity, founders } = plan(&transcript_node(i), None, 0).unwrap()
            else {
                panic!("not a new cluster");
            };
            assert_eq!(identity.cluster_id.to_string(), "76309787450b79cc");
            let ids: Vec<String> = founders.iter().map(|f| f.0.to_string()).collect();
            assert_eq!(ids, ["7e4b58baca723182", "dba59c025fa4317e"]);
            let own = if i == 1 {
                "7e4b58baca723182"
            } else {
                "dba59c025fa4317e"
            };
            assert_eq!(identity.member_id.to_string(), own);
        }
    }

    #[test]
    fn restart_ignores_flags_and_force_new_gets_fresh_ids() {
        let previous = Identity {
            member_id: MemberId(5),
            cluster_id: ClusterId(6),
        };
        assert_eq!(
            plan(&transcript_node(1), Some(previous), 0).unwrap(),
            Plan::Restart(previous)
        );
        let mut forced = transcript_node(1);
        forced.force_new_cluster = true;
        let Plan::ForceNew { identity, .. } = plan(&forced, Some(previous), 1000).unwrap() else {
            panic!("not forced");
        };
        assert_ne!(identity.member_id, previous.member_id);
        assert_ne!(identity.cluster_id, previous.cluster_id);
        assert_eq!(identity.cluster_id, cluster_id(&[identity.member_id]));
    }

    #[test]
    fn join_finds_itself_by_peer_urls() {
        let joiner = config(
            &["--initial-advertise-peer-urls", "http://127.0.0.1:22485"],
            &[
                ("ETCD_NAME", "node3"),
                ("ETCD_INITIAL_CLUSTER", "node1=http://127.0.0.1:22483,node3=http://127.0.0.1:22485,node2=http://127.0.0.1:22484"),
                ("ETCD_INITIAL_CLUSTER_STATE", "existing"),
            ],
        );
        assert_eq!(plan(&joiner, None, 0).unwrap(), Plan::Join);
        let view = ClusterView {
            cluster_id: "76309787450b79cc".into(),
            members: vec![MemberInfoWire {
                id: "9fbcb430c28c28bb".into(),
                name: String::new(),
                peer_urls: vec!["http://127.0.0.1:22485".into()],
                client_urls: vec![],
            }],
        };
        let identity = plan_join(&joiner, &view).unwrap();
        assert_eq!(identity.member_id.to_string(), "9fbcb430c28c28bb");
        assert_eq!(identity.cluster_id.to_string(), "76309787450b79cc");
        let stranger = ClusterView {
            members: vec![],
            ..view
        };
        assert!(matches!(
            plan_join(&joiner, &stranger),
            Err(ServerError::Cluster(_))
        ));
    }

    #[test]
    fn missing_local_name_is_refused() {
        let bad = config(
            &["--name", "a", "--initial-cluster", "b=http://127.0.0.1:1"],
            &[],
        );
        assert!(matches!(
            plan(&bad, None, 0),
            Err(ServerError::InvalidConfig { .. })
        ));
    }
}
