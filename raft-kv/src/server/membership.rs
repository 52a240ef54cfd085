//! The replicated member registry: who is in the cluster, under which URLs, and who was
//! removed for good.
//!
//! Every member applies the same membership changes in log order, so every member has
//! the same registry: adds and removals arrive as raft configuration changes (whose
//! context carries the member's peer URLs), URL updates and attribute publications
//! (a started member's name and client URLs) as ordinary entries. The registry is part of
//! the state machine's snapshot, so a member that catches up by snapshot has it too.
//!
//! Invariants:
//! * a member id is in at most one of `members` and `removed`; a removed id never comes
//!   back (etcd answers `410 Member permanently removed` for it);
//! * no two members share a peer URL;
//! * a member's peer URLs are sorted (they are listed and hashed that way).
//!
//! The checks here are the deterministic ones (they give the same answer on every
//! member); the strict reconfiguration check, which depends on this member's view of
//! its connections, is made by the proposer before proposing ([`Membership::check_add`]
//! takes that view as an argument).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::api::{MemberInfo, MembersError};
use super::id::MemberId;

/// One member as the cluster records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Peer URLs (sorted).
    pub peer_urls: Vec<String>,
    /// Name published by the member when it started (`""` before).
    pub name: String,
    /// Client URLs published by the member when it started.
    pub client_urls: Vec<String>,
}

/// The member registry (see the module docs for its invariants).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    members: BTreeMap<u64, MemberRecord>,
    removed: BTreeSet<u64>,
}

fn members_error(status: u16, message: impl Into<String>) -> MembersError {
    MembersError {
        status,
        message: message.into(),
    }
}

/// The refusal etcd gives when the strict reconfiguration check fails.
pub fn unsafe_reconfiguration() -> MembersError {
    members_error(500, "Internal Server Error")
}

impl Membership {
    /// An empty registry.
    pub fn new() -> Membership {
        Membership::default()
    }

    /// The founding members of a new cluster (names known, client URLs not yet).
    pub fn bootstrap(
        founders: impl IntoIterator<Item = (MemberId, String, Vec<String>)>,
    ) -> Membership {
        let mut membership = Membership::new();
        for (id, name, mut peer_urls) in founders {
            peer_urls.sort();
            membership.members.insert(
                id.0,
                MemberRecord {
                    peer_urls,
                    name,
                    client_urls: Vec::new(),
                },
            );
        }
        membership
    }

    /// A registry from its parts (members by id, removed ids); an id in both counts as
    /// removed.
    pub fn from_parts(
        members: impl IntoIterator<Item = (MemberId, MemberRecord)>,
        removed: impl IntoIterator<Item = MemberId>,
    ) -> Membership {
        let removed: BTreeSet<u64> = removed.into_iter().map(|id| id.0).collect();
        let members = members
            .into_iter()
            .filter(|(id, _)| !removed.contains(&id.0))
            .map(|(id, mut record)| {
                record.peer_urls.sort();
                (id.0, record)
            })
            .collect();
        Membership { members, removed }
    }

    /// Ids removed for good.
    pub fn removed_ids(&self) -> Vec<MemberId> {
        self.removed.iter().map(|id| MemberId(*id)).collect()
    }

    /// Every member in id order.
    pub fn iter(&self) -> impl Iterator<Item = (MemberId, &MemberRecord)> {
        self.members
            .iter()
            .map(|(id, record)| (MemberId(*id), record))
    }

    /// One member.
    pub fn get(&self, id: MemberId) -> Option<&MemberRecord> {
        self.members.get(&id.0)
    }

    /// Whether `id` is a current member.
    pub fn contains(&self, id: MemberId) -> bool {
        self.members.contains_key(&id.0)
    }

    /// Whether `id` was removed.
    pub fn is_removed(&self, id: MemberId) -> bool {
        self.removed.contains(&id.0)
    }

    /// Number of current members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Ids of current members.
    pub fn ids(&self) -> Vec<MemberId> {
        self.members.keys().map(|id| MemberId(*id)).collect()
    }

    /// The members API view of one member.
    pub fn info(&self, id: MemberId) -> Option<MemberInfo> {
        self.members.get(&id.0).map(|record| MemberInfo {
            id,
            name: record.name.clone(),
            peer_urls: record.peer_urls.clone(),
            client_urls: record.client_urls.clone(),
        })
    }

    /// The members API view of every member, sorted by id.
    pub fn infos(&self) -> Vec<MemberInfo> {
        self.members
            .keys()
            .filter_map(|id| self.info(MemberId(*id)))
            .collect()
    }

    fn url_in_use(&self, urls: &[String], except: Option<u64>) -> bool {
        self.members
            .iter()
            .filter(|(id, _)| Some(**id) != except)
            .any(|(_, record)| record.peer_urls.iter().any(|u| urls.contains(u)))
    }

    /// Checks an add before proposing it. `started_and_connected` is the proposer's view:
    /// how many current members have started (published a name) and are reachable; with
    /// `strict` the add is refused when the grown cluster would lack a quorum of them
    /// (etcd's special case: a one-member cluster may always add a second member).
    pub fn check_add(
        &self,
        peer_urls: &[String],
        strict: bool,
        started_and_connected: usize,
    ) -> Result<(), MembersError> {
        if self.url_in_use(peer_urls, None) {
            return Err(members_error(409, "membership: peerURL exists"));
        }
        if strict {
            let grown = self.members.len() + 1;
            let special_case = started_and_connected == 1 && grown == 2;
            if !special_case && started_and_connected < grown / 2 + 1 {
                return Err(unsafe_reconfiguration());
            }
        }
        Ok(())
    }

    /// Applies an add (from a committed configuration change). Returns an error, and
    /// changes nothing, when the change conflicts with the registry.
    pub fn apply_add(
        &mut self,
        id: MemberId,
        mut peer_urls: Vec<String>,
    ) -> Result<(), MembersError> {
        if self.removed.contains(&id.0) {
            return Err(members_error(
                410,
                format!("Member permanently removed: {id}"),
            ));
        }
        if self.members.contains_key(&id.0) {
            return Err(members_error(409, "membership: ID exists"));
        }
        peer_urls.sort();
        if self.url_in_use(&peer_urls, None) {
            return Err(members_error(409, "membership: peerURL exists"));
        }
        self.members.insert(
            id.0,
            MemberRecord {
                peer_urls,
                name: String::new(),
                client_urls: Vec::new(),
            },
        );
        Ok(())
    }

    /// Checks an update of peer URLs before proposing it.
    pub fn check_update(&self, id: MemberId, peer_urls: &[String]) -> Result<(), MembersError> {
        if self.removed.contains(&id.0) {
            return Err(members_error(500, "Internal Server Error"));
        }
        if !self.members.contains_key(&id.0) {
            return Err(members_error(404, format!("No such member: {id}")));
        }
        if self.url_in_use(peer_urls, Some(id.0)) {
            return Err(members_error(409, "membership: peerURL exists"));
        }
        Ok(())
    }

    /// Applies an update of peer URLs.
    pub fn apply_update(
        &mut self,
        id: MemberId,
        mut peer_urls: Vec<String>,
    ) -> Result<(), MembersError> {
        peer_urls.sort();
        self.check_update(id, &peer_urls)?;
        if let Some(record) = self.members.get_mut(&id.0) {
            record.peer_urls = peer_urls;
        }
        Ok(())
    }

    /// Checks a removal before proposing it.
    pub fn check_remove(&self, id: MemberId) -> Result<(), MembersError> {
        if self.removed.contains(&id.0) {
            return Err(members_error(
                410,
                format!("Member permanently removed: {id}"),
            ));
        }
        if !self.members.contains_key(&id.0) {
            return Err(members_error(404, format!("No such member: {id}")));
        }
        Ok(())
    }

    /// Applies a removal.
    pub fn apply_remove(&mut self, id: MemberId) -> Result<(), MembersError> {
        self.check_remove(id)?;
        self.members.remove(&id.0);
        self.removed.insert(id.0);
        Ok(())
    }

    /// Applies a started member's published name and client URLs (ignored for an unknown
    /// or removed member: the publication raced with its removal).
    pub fn apply_attributes(&mut self, id: MemberId, name: String, client_urls: Vec<String>) {
        if let Some(record) = self.members.get_mut(&id.0) {
            record.name = name;
            record.client_urls = client_urls;
        }
    }

    /// The member whose peer URLs are exactly `peer_urls` (how a joining member finds its
    /// own id).
    pub fn find_by_peer_urls(&self, peer_urls: &[String]) -> Option<MemberId> {
        let mut wanted = peer_urls.to_vec();
        wanted.sort();
        self.members
            .iter()
            .find(|(_, record)| record.peer_urls == wanted)
            .map(|(id, _)| MemberId(*id))
    }

    /// `ETCD_INITIAL_CLUSTER` for these members: `name=url` for every peer URL, member-id
    /// order; members without a name are listed under `unnamed` unless given in `names`.
    pub fn initial_cluster_text(&self, names: &BTreeMap<MemberId, String>) -> String {
        let mut parts = Vec::new();
        for (id, record) in &self.members {
            let name = names
                .get(&MemberId(*id))
                .cloned()
                .unwrap_or_else(|| record.name.clone());
            for url in &record.peer_urls {
                parts.push(format!("{name}={url}"));
            }
        }
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn urls(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn three() -> Membership {
        Membership::bootstrap([
            (MemberId(1), "a".to_string(), urls(&["http://h:1"])),
            (MemberId(2), "b".to_string(), urls(&["http://h:2"])),
            (MemberId(3), "c".to_string(), urls(&["http://h:3"])),
        ])
    }

    #[test]
    fn add_update_remove_lifecycle() {
        let mut m = three();
        assert_eq!(
            m.check_add(&urls(&["http://h:1"]), true, 3)
                .unwrap_err()
                .status,
            409
        );
        m.check_add(&urls(&["http://h:4"]), true, 3).unwrap();
        m.apply_add(MemberId(4), urls(&["http://h:4"])).unwrap();
        assert_eq!(m.info(MemberId(4)).unwrap().name, "");
        assert_eq!(
            m.check_update(MemberId(4), &urls(&["http://h:1"]))
                .unwrap_err()
                .status,
            409
        );
        m.apply_update(MemberId(4), urls(&["http://h:5"])).unwrap();
        assert_eq!(
            m.find_by_peer_urls(&urls(&["http://h:5"])),
            Some(MemberId(4))
        );
        m.apply_attributes(MemberId(4), "d".into(), urls(&["http://c:5"]));
        assert_eq!(
            m.info(MemberId(4)).unwrap().client_urls,
            urls(&["http://c:5"])
        );
        m.apply_remove(MemberId(4)).unwrap();
        let gone = m.check_remove(MemberId(4)).unwrap_err();
        assert_eq!(
            (gone.status, gone.message.as_str()),
            (410, "Member permanently removed: 4")
        );
        assert_eq!(
            m.apply_add(MemberId(4), urls(&["http://h:9"]))
                .unwrap_err()
                .status,
            410
        );
        assert_eq!(
            m.check_update(MemberId(4), &urls(&["http://h:9"]))
                .unwrap_err()
                .status,
            500
        );
        let unknown = m.check_remove(MemberId(0x1234abcd)).unwrap_err();
        assert_eq!(
            (unknown.status, unknown.message.as_str()),
            (404, "No such member: 1234abcd")
        );
        // attributes of a removed member are ignored
        m.apply_attributes(MemberId(4), "zombie".into(), vec![]);
        assert!(m.info(MemberId(4)).is_none());
    }

    #[test]
    fn strict_reconfiguration_check() {
        let single = Membership::bootstrap([(MemberId(1), "a".to_string(), urls(&["http://h:1"]))]);
        single.check_add(&urls(&["http://h:2"]), true, 1).unwrap();
        let mut two = single.clone();
        two.apply_add(MemberId(2), urls(&["http://h:2"])).unwrap();
        // 1 started of 3 after the add: no quorum
        assert_eq!(
            two.check_add(&urls(&["http://h:3"]), true, 1)
                .unwrap_err()
                .status,
            500
        );
        assert!(two.check_add(&urls(&["http://h:3"]), false, 1).is_ok());
        let m = three();
        assert!(m.check_add(&urls(&["http://h:4"]), true, 3).is_ok());
        assert_eq!(
            m.check_add(&urls(&["http://h:4"]), true, 2)
                .unwrap_err()
                .status,
            500
        );
    }

    #[test]
    fn initial_cluster_lists_members_in_id_order() {
        let mut m = three();
        m.apply_add(MemberId(0x2a), urls(&["http://h:4"])).unwrap();
        let mut names = BTreeMap::new();
        names.insert(MemberId(0x2a), "node4".to_string());
        assert_eq!(
            m.initial_cluster_text(&names),
            "a=http://h:1,b=http://h:2,c=http://h:3,node4=http://h:4"
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(u64, u8),
        Update(u64, u8),
        Remove(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1..8u64, 0..10u8).prop_map(|(id, port)| Op::Add(id, port)),
            (1..8u64, 0..10u8).prop_map(|(id, port)| Op::Update(id, port)),
            (1..8u64).prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// Against a model (a map plus a removed set): applied changes keep the invariants
        /// (ids never return, no shared URL), and rejected ones change nothing.
        #[test]
        fn registry_matches_model(ops in proptest::collection::vec(op(), 0..40)) {
            let mut m = Membership::new();
            let mut model: BTreeMap<u64, String> = BTreeMap::new();
            let mut removed: BTreeSet<u64> = BTreeSet::new();
            for op in ops {
                let before = m.clone();
                let result = match &op {
                    Op::Add(id, port) => m.apply_add(MemberId(*id), vec![format!("http://h:{port}")]),
                    Op::Update(id, port) => m.apply_update(MemberId(*id), vec![format!("http://h:{port}")]),
                    Op::Remove(id) => m.apply_remove(MemberId(*id)),
                };
                let url_taken = |port: &u8, except: Option<u64>| {
                    model.iter().any(|(id, u)| Some(*id) != except && *u == format!("http://h:{port}"))
                };
                let model_ok = match &op {
                    Op::Add(id, port) => !removed.contains(id) && !model.contains_key(id) && !url_taken(port, None),
                    Op::Update(id, port) => model.contains_key(id) && !url_taken(port, Some(*id)),
                    Op::Remove(id) => model.contains_key(id),
                };
                prop_assert_eq!(result.is_ok(), model_ok, "{:?}", op);
                if model_ok {
                    match op {
                        Op::Add(id, port) | Op::Update(id, port) => { model.insert(id, format!("http://h:{port}")); }
                        Op::Remove(id) => { model.remove(&id); removed.insert(id); }
                    }
                } else {
                    prop_assert_eq!(&m, &before);
                }
                let ids: Vec<u64> = m.ids().iter().map(|id| id.0).collect();
                prop_assert_eq!(ids, model.keys().copied().collect::<Vec<_>>());
                for id in &removed {
                    prop_assert!(m.is_removed(MemberId(*id)) && !m.contains(MemberId(*id)));
                }
            }
        }
    }
}
