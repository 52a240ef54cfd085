//! [`CalicoStore`]: Calico 0.22's writes and reads as typed operations over a
//! [`Datastore`] — what calicoctl and calico-node do to etcd, with the same keys and JSON
//! (see [`crate::layout`]) so Calico's own tools read the result.
//!
//! Invariants kept by every operation:
//! * everything written is validated first; an invalid request writes nothing;
//! * multi-key checks happen before the first write (e.g. pool overlap, profiles named
//!   by an endpoint exist);
//! * read-modify-write of one key is a compare-and-swap on the `modifiedIndex` read
//!   (calicoctl used `prevValue`; `prevIndex` is equivalent and cheaper), retried up to
//!   [`CAS_RETRIES`] times, then [`Error::RetriesExhausted`].
//!
//! Caveat: like Calico 0.22, operations spanning several keys (a host registration, a
//! new profile) are not atomic; a crash in between leaves a partially written object
//! that readers tolerate (a profile without `rules` is "missing" and drops traffic) and
//! that re-running the operation completes.

use std::collections::BTreeSet;

use ipnetwork::IpNetwork;

use crate::datastore::{Datastore, DeleteOptions, Index};
use crate::error::{Error, Result};
use crate::layout;
use crate::model::{
    node_mesh_json, EndpointKey, Host, Pool, Profile, WorkloadEndpoint, DEFAULT_AS_NUMBER,
};
use crate::names::validate_profile_name;
use crate::rule::{Rule, Rules};
use crate::state::ClusterState;

/// Compare-and-swap attempts before giving up.
pub const CAS_RETRIES: u32 = 100;

/// Which rule list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleDirection {
    /// `inbound_rules`.
    Inbound,
    /// `outbound_rules`.
    Outbound,
}

/// How to change an endpoint's profile list (calicoctl `profile append|remove|set`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileUpdate {
    /// Append, in order; fails if any is already on the endpoint.
    Append(Vec<String>),
    /// Remove; fails if any is not on the endpoint.
    Remove(Vec<String>),
    /// Replace the list (empty allowed).
    Set(Vec<String>),
}

/// Typed Calico operations over a datastore. See the module docs.
#[derive(Debug, Clone)]
pub struct CalicoStore<D> {
    ds: D,
}

impl<D: Datastore> CalicoStore<D> {
    /// Wraps a datastore.
    pub fn new(ds: D) -> Self {
        CalicoStore { ds }
    }

    /// The wrapped datastore.
    pub fn datastore(&self) -> &D {
        &self.ds
    }

    /// One recursive read of `/calico`, as a [`ClusterState`] (watch from
    /// `state.index + 1` to follow it).
    pub fn snapshot(&self) -> Result<ClusterState> {
        match self.ds.get(layout::CALICO_ROOT, true) {
            Ok(read) => Ok(ClusterState::from_read(&read)),
            Err(Error::KeyNotFound { index, .. }) => {
                let mut empty = ClusterState::new();
                empty.index = index;
                Ok(empty)
            }
            Err(e) => Err(e),
        }
    }

    /// calico-node's `ensure_global_config` (spec §3.1): felix globals written only if
    /// absent, `Ready` always rewritten, the IPAM/pool directories, BGP globals.
    pub fn ensure_global_config(&self, cluster_guid: &str) -> Result<()> {
        let defaults = [
            ("InterfacePrefix", "cali"),
            ("LogSeverityFile", "none"),
            ("LogSeverityScreen", "info"),
            ("LogFilePath", "none"),
            ("IpInIpEnabled", "false"),
            ("ReportingIntervalSecs", "0"),
            ("ClusterGUID", cluster_guid),
        ];
        for (param, value) in defaults {
            self.create_if_absent(&layout::global_config(param), value)?;
        }
        self.ds.ensure_dir(&layout::pools_dir(true))?;
        self.ds.ensure_dir(&layout::pools_dir(false))?;
        self.create_if_absent(layout::BGP_GLOBAL_AS, &DEFAULT_AS_NUMBER.to_string())?;
        self.create_if_absent(layout::BGP_NODE_MESH, &node_mesh_json(true))?;
        self.ds.put(layout::READY, "true")?;
        Ok(())
    }

    fn create_if_absent(&self, key: &str, value: &str) -> Result<()> {
        match self.ds.create(key, value) {
            Ok(_) | Err(Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// calico-node's `create_host` (spec §6 step 7). Refuses an IPv4 already registered
    /// by another host ("Calico requires each compute host to have a unique IP").
    pub fn register_host(&self, host: &Host) -> Result<()> {
        host.validate()?;
        let state = self.snapshot()?;
        for (name, rec) in &state.hosts {
            if name != &host.name && rec.bgp_ipv4 == Some(host.ipv4) {
                return Err(Error::invalid(
                    "host IPv4",
                    host.ipv4.to_string(),
                    format!("already in use by host {name}: Calico requires each compute host to have a unique IP"),
                ));
            }
        }
        let h = &host.name;
        self.ds
            .put(&layout::host_bird_ip(h), &host.ipv4.to_string())?;
        self.ds
            .put(&layout::bgp_host_ipv4(h), &host.ipv4.to_string())?;
        self.ds.put(
            &layout::bgp_host_ipv6(h),
            &host.ipv6.map(|a| a.to_string()).unwrap_or_default(),
        )?;
        self.ds.ensure_dir(&layout::host_workload_dir(h))?;
        match host.as_number {
            Some(n) => {
                self.ds.put(&layout::bgp_host_as(h), &n.to_string())?;
            }
            None => match self
                .ds
                .delete(&layout::bgp_host_as(h), &DeleteOptions::default())
            {
                Ok(_) | Err(Error::KeyNotFound { .. }) => {}
                Err(e) => return Err(e),
            },
        }
        self.ds.put(
            &layout::host_config(h, "DefaultEndpointToHostAction"),
            "RETURN",
        )?;
        self.ds.put(&layout::host_config(h, "marker"), "created")?;
        for v4 in [true, false] {
            self.ds.ensure_dir(&format!(
                "{}/{h}/ipv{}/block",
                layout::IPAM_HOSTS_DIR,
                if v4 { 4 } else { 6 }
            ))?;
        }
        Ok(())
    }

    /// `calicoctl pool add` (spec §2.2): validates every pool, rejects overlaps with other
    /// pools or each other (an identical CIDR is an update), sets `IpInIpEnabled` when
    /// any pool has ipip, then writes them.
    pub fn add_pools(&self, pools: &[Pool]) -> Result<()> {
        let existing = self.snapshot()?.pools;
        for (i, p) in pools.iter().enumerate() {
            p.validate()?;
            if let Some(first) = pools.first() {
                if first.cidr.is_ipv4() != p.cidr.is_ipv4() {
                    return Err(Error::invalid(
                        "pool CIDR",
                        p.cidr.to_string(),
                        "all pools of one command must be one IP version",
                    ));
                }
            }
            for other in existing.values() {
                if other.cidr != p.cidr && overlaps(&other.cidr, &p.cidr) {
                    return Err(Error::invalid(
                        "pool CIDR",
                        p.cidr.to_string(),
                        format!(
                            "Cannot add IP pool {} - pool overlaps with an existing pool {}",
                            p.cidr, other.cidr
                        ),
                    ));
                }
            }
            for other in pools.get(..i).unwrap_or_default() {
                if overlaps(&other.cidr, &p.cidr) {
                    return Err(Error::invalid(
                        "pool CIDR",
                        p.cidr.to_string(),
                        format!(
                            "Cannot add IP pool {} - pool overlaps with another new pool {}",
                            p.cidr, other.cidr
                        ),
                    ));
                }
            }
        }
        if pools.iter().any(|p| p.ipip)
            && self
                .ds
                .get_value(&layout::global_config("IpInIpEnabled"))?
                .map(|v| v.0)
                != Some("true".into())
        {
            self.ds
                .put(&layout::global_config("IpInIpEnabled"), "true")?;
        }
        for p in pools {
            self.ds.put(&layout::pool(&p.cidr), &p.to_json())?;
        }
        Ok(())
    }

    /// Deletes a pool key (`calicoctl pool remove` also releases IPAM affinities: do that
    /// with the `ipam` crate over [`crate::ipam_store::DatastoreBlockStore`] first).
    pub fn remove_pool(&self, cidr: &IpNetwork) -> Result<()> {
        match self
            .ds
            .delete(&layout::pool(cidr), &DeleteOptions::default())
        {
            Ok(_) => Ok(()),
            Err(Error::KeyNotFound { .. }) => Err(Error::NotFound {
                what: "pool",
                name: cidr.to_string(),
            }),
            Err(e) => Err(e),
        }
    }

    /// `calicoctl profile add`: `Ok(true)` when created with the defaults, `Ok(false)`
    /// when it already existed (calicoctl prints "Profile X already exists." and exits 0).
    pub fn add_profile(&self, name: &str) -> Result<bool> {
        validate_profile_name("profile name", name)?;
        if self.profile_exists(name)? {
            return Ok(false);
        }
        let p = Profile::with_defaults(name);
        self.ds
            .put(&layout::profile_tags(name), &Profile::tags_to_json(&p.tags))?;
        self.ds.put(
            &layout::profile_labels(name),
            &Profile::labels_to_json(&p.labels),
        )?;
        self.ds
            .put(&layout::profile_rules(name), &p.rules.to_json())?;
        Ok(true)
    }

    /// Writes a whole profile (tags, labels, rules).
    pub fn put_profile(&self, p: &Profile) -> Result<()> {
        p.validate()?;
        self.ds.put(
            &layout::profile_tags(&p.name),
            &Profile::tags_to_json(&p.tags),
        )?;
        self.ds.put(
            &layout::profile_labels(&p.name),
            &Profile::labels_to_json(&p.labels),
        )?;
        self.ds
            .put(&layout::profile_rules(&p.name), &p.rules.to_json())?;
        Ok(())
    }

    /// Whether the profile's directory exists.
    pub fn profile_exists(&self, name: &str) -> Result<bool> {
        match self.ds.get(&layout::profile_dir(name), false) {
            Ok(_) => Ok(true),
            Err(Error::KeyNotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads a profile; missing parts default as libcalico does (tags `[]`, rules none).
    pub fn profile(&self, name: &str) -> Result<Profile> {
        if !self.profile_exists(name)? {
            return Err(Error::NotFound {
                what: "profile",
                name: name.into(),
            });
        }
        let read =
            |key: String| -> Result<Option<String>> { Ok(self.ds.get_value(&key)?.map(|v| v.0)) };
        let tags = match read(layout::profile_tags(name))? {
            Some(t) => Profile::tags_from_json(&t)
                .map_err(|e| Error::corrupt(layout::profile_tags(name), e.to_string()))?,
            None => Vec::new(),
        };
        let rules = match read(layout::profile_rules(name))? {
            Some(r) => Rules::from_json(&r)
                .map_err(|e| Error::corrupt(layout::profile_rules(name), e.to_string()))?,
            None => Rules::default(),
        };
        let labels = match read(layout::profile_labels(name))? {
            Some(l) => Profile::labels_from_json(&l)
                .map_err(|e| Error::corrupt(layout::profile_labels(name), e.to_string()))?,
            None => Default::default(),
        };
        Ok(Profile {
            name: name.into(),
            tags,
            rules,
            labels,
        })
    }

    /// `calicoctl profile remove`: refuses (`Error::Invalid`) while an endpoint uses the
    /// profile unless `force` (`--no-check`).
    pub fn remove_profile(&self, name: &str, force: bool) -> Result<()> {
        if !self.profile_exists(name)? {
            return Err(Error::NotFound {
                what: "profile",
                name: name.into(),
            });
        }
        if !force {
            let state = self.snapshot()?;
            if let Some((key, _)) = state
                .endpoints
                .iter()
                .find(|(_, e)| e.profile_ids.iter().any(|p| p == name))
            {
                return Err(Error::invalid(
                    "profile removal",
                    name,
                    format!("Cannot remove profile - profile in use by endpoint(s), e.g. {key}"),
                ));
            }
        }
        self.ds.delete(
            &layout::profile_dir(name),
            &DeleteOptions {
                recursive: true,
                ..DeleteOptions::default()
            },
        )?;
        Ok(())
    }

    /// Read-modify-write of one key with compare-and-swap on its index.
    fn cas_loop(
        &self,
        key: &str,
        mut f: impl FnMut(Option<&str>) -> Result<Option<String>>,
    ) -> Result<Index> {
        for _ in 0..CAS_RETRIES {
            let current = self.ds.get_value(key)?;
            let Some(new) = f(current.as_ref().map(|c| c.0.as_str()))? else {
                return Ok(current.map_or(0, |c| c.1));
            };
            let result = match &current {
                Some((_, index)) => self.ds.compare_and_swap(key, &new, *index),
                None => self.ds.create(key, &new),
            };
            match result {
                Ok(ev) => return Ok(ev.index()),
                Err(
                    Error::CompareFailed { .. }
                    | Error::AlreadyExists { .. }
                    | Error::KeyNotFound { .. },
                ) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::RetriesExhausted {
            key: key.into(),
            attempts: CAS_RETRIES,
        })
    }

    /// `calicoctl profile <P> tag add|remove`.
    pub fn update_tags(
        &self,
        profile: &str,
        add: Option<&str>,
        remove: Option<&str>,
    ) -> Result<()> {
        for t in add.iter().chain(remove.iter()) {
            validate_profile_name("tag", t)?;
        }
        if !self.profile_exists(profile)? {
            return Err(Error::NotFound {
                what: "profile",
                name: profile.into(),
            });
        }
        let key = layout::profile_tags(profile);
        self.cas_loop(&key, |cur| {
            let mut tags: BTreeSet<String> = match cur {
                Some(c) => Profile::tags_from_json(c)
                    .map_err(|e| Error::corrupt(key.clone(), e.to_string()))?
                    .into_iter()
                    .collect(),
                None => BTreeSet::new(),
            };
            if let Some(t) = remove {
                if !tags.remove(t) {
                    return Err(Error::NotFound {
                        what: "tag",
                        name: format!("{t} on profile {profile}"),
                    });
                }
            }
            if let Some(t) = add {
                tags.insert(t.to_string());
            }
            Ok(Some(Profile::tags_to_json(
                &tags.into_iter().collect::<Vec<_>>(),
            )))
        })?;
        Ok(())
    }

    /// Replaces a profile's rules (`calicoctl profile <P> rule update`).
    pub fn set_rules(&self, profile: &str, rules: &Rules) -> Result<()> {
        for r in rules.inbound_rules.iter().chain(&rules.outbound_rules) {
            r.validate()?;
        }
        if !self.profile_exists(profile)? {
            return Err(Error::NotFound {
                what: "profile",
                name: profile.into(),
            });
        }
        self.ds
            .put(&layout::profile_rules(profile), &rules.to_json())?;
        Ok(())
    }

    /// `calicoctl profile <P> rule add (inbound|outbound) [--at=N]`: 1-based position,
    /// default append, clamped like Python's `list.insert`. `Ok(false)` if an equal rule
    /// is already present ("Rule already present, skipping.").
    pub fn add_rule(
        &self,
        profile: &str,
        dir: RuleDirection,
        rule: &Rule,
        at: Option<usize>,
    ) -> Result<bool> {
        rule.validate()?;
        if !self.profile_exists(profile)? {
            return Err(Error::NotFound {
                what: "profile",
                name: profile.into(),
            });
        }
        let key = layout::profile_rules(profile);
        let mut added = false;
        self.cas_loop(&key, |cur| {
            let mut rules = match cur {
                Some(c) => {
                    Rules::from_json(c).map_err(|e| Error::corrupt(key.clone(), e.to_string()))?
                }
                None => Rules::default(),
            };
            let list = match dir {
                RuleDirection::Inbound => &mut rules.inbound_rules,
                RuleDirection::Outbound => &mut rules.outbound_rules,
            };
            if list.contains(rule) {
                added = false;
                return Ok(None);
            }
            let pos = at.map_or(list.len(), |n| n.saturating_sub(1).min(list.len()));
            list.insert(pos, rule.clone());
            added = true;
            Ok(Some(rules.to_json()))
        })?;
        Ok(added)
    }

    /// Creates an endpoint (`calicoctl container add`): fails with `AlreadyExists` if the
    /// key exists, `NotFound` if it names a profile that does not exist.
    pub fn create_endpoint(&self, key: &EndpointKey, ep: &WorkloadEndpoint) -> Result<Index> {
        key.validate()?;
        ep.validate()?;
        for p in &ep.profile_ids {
            if !self.profile_exists(p)? {
                return Err(Error::NotFound {
                    what: "profile",
                    name: p.clone(),
                });
            }
        }
        Ok(self
            .ds
            .create(&layout::endpoint(key), &ep.to_json())?
            .index())
    }

    /// Reads an endpoint.
    pub fn endpoint(&self, key: &EndpointKey) -> Result<WorkloadEndpoint> {
        let path = layout::endpoint(key);
        match self.ds.get_value(&path)? {
            Some((v, _)) => {
                WorkloadEndpoint::from_json(&v).map_err(|e| Error::corrupt(path, e.to_string()))
            }
            None => Err(Error::NotFound {
                what: "endpoint",
                name: key.to_string(),
            }),
        }
    }

    /// Changes an endpoint's profiles (calicoctl `profile append|remove|set`) with
    /// compare-and-swap. Every named profile must exist and be named once.
    pub fn update_endpoint_profiles(
        &self,
        key: &EndpointKey,
        update: &ProfileUpdate,
    ) -> Result<WorkloadEndpoint> {
        let names = match update {
            ProfileUpdate::Append(n) | ProfileUpdate::Remove(n) | ProfileUpdate::Set(n) => n,
        };
        for (i, n) in names.iter().enumerate() {
            validate_profile_name("profile id", n)?;
            if names.get(..i).is_some_and(|before| before.contains(n)) {
                return Err(Error::invalid(
                    "profile list",
                    n.clone(),
                    "specified more than once",
                ));
            }
            if !matches!(update, ProfileUpdate::Remove(_)) && !self.profile_exists(n)? {
                return Err(Error::NotFound {
                    what: "profile",
                    name: n.clone(),
                });
            }
        }
        let path = layout::endpoint(key);
        let mut result = None;
        self.cas_loop(&path, |cur| {
            let cur = cur.ok_or_else(|| Error::NotFound {
                what: "endpoint",
                name: key.to_string(),
            })?;
            let mut ep = WorkloadEndpoint::from_json(cur)
                .map_err(|e| Error::corrupt(path.clone(), e.to_string()))?;
            match update {
                ProfileUpdate::Append(n) => {
                    if let Some(dup) = n.iter().find(|p| ep.profile_ids.contains(p)) {
                        return Err(Error::invalid(
                            "profile append",
                            dup.clone(),
                            "already in the endpoint's profile list",
                        ));
                    }
                    ep.profile_ids.extend(n.iter().cloned());
                }
                ProfileUpdate::Remove(n) => {
                    if let Some(missing) = n.iter().find(|p| !ep.profile_ids.contains(p)) {
                        return Err(Error::NotFound {
                            what: "profile in endpoint list",
                            name: missing.clone(),
                        });
                    }
                    ep.profile_ids.retain(|p| !n.contains(p));
                }
                ProfileUpdate::Set(n) => ep.profile_ids = n.clone(),
            }
            let json = ep.to_json();
            result = Some(ep);
            Ok(Some(json))
        })?;
        result.ok_or_else(|| Error::NotFound {
            what: "endpoint",
            name: key.to_string(),
        })
    }

    /// Replaces an endpoint's JSON with compare-and-swap on `prev_index`.
    pub fn replace_endpoint(
        &self,
        key: &EndpointKey,
        ep: &WorkloadEndpoint,
        prev_index: Index,
    ) -> Result<Index> {
        ep.validate()?;
        Ok(self
            .ds
            .compare_and_swap(&layout::endpoint(key), &ep.to_json(), prev_index)?
            .index())
    }

    /// Deletes a workload's directory (all its endpoints), as `calicoctl container
    /// remove` does. `Ok(false)` if there was nothing.
    pub fn remove_workload(&self, host: &str, orchestrator: &str, workload: &str) -> Result<bool> {
        let dir = layout::workload_dir(host, orchestrator, workload);
        match self.ds.delete(
            &dir,
            &DeleteOptions {
                recursive: true,
                ..DeleteOptions::default()
            },
        ) {
            Ok(_) => Ok(true),
            Err(Error::KeyNotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    a.is_ipv4() == b.is_ipv4() && (a.contains(b.network()) || b.contains(a.network()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::datastore::MemoryDatastore;
    use crate::rule::{Action, Protocol};

    fn store() -> CalicoStore<Arc<MemoryDatastore>> {
        CalicoStore::new(Arc::new(MemoryDatastore::new()))
    }

    fn host(name: &str, ip: &str) -> Host {
        Host {
            name: name.into(),
            ipv4: ip.parse().unwrap(),
            ipv6: None,
            as_number: None,
        }
    }

    #[test]
    fn node_start_writes_the_spec_keys() {
        let s = store();
        s.ensure_global_config("0123456789abcdef0123456789abcdef")
            .unwrap();
        s.register_host(&host("dockera", "192.168.1.23")).unwrap();
        let v = |k: &str| s.datastore().get_value(k).unwrap().map(|v| v.0);
        assert_eq!(v("/calico/v1/Ready").as_deref(), Some("true"));
        assert_eq!(
            v("/calico/v1/config/InterfacePrefix").as_deref(),
            Some("cali")
        );
        assert_eq!(
            v("/calico/v1/config/IpInIpEnabled").as_deref(),
            Some("false")
        );
        assert_eq!(v("/calico/bgp/v1/global/as_num").as_deref(), Some("64511"));
        assert_eq!(
            v("/calico/bgp/v1/global/node_mesh").as_deref(),
            Some(r#"{"enabled":true}"#)
        );
        assert_eq!(
            v("/calico/v1/host/dockera/bird_ip").as_deref(),
            Some("192.168.1.23")
        );
        assert_eq!(
            v("/calico/bgp/v1/host/dockera/ip_addr_v6").as_deref(),
            Some("")
        );
        assert_eq!(
            v("/calico/v1/host/dockera/config/DefaultEndpointToHostAction").as_deref(),
            Some("RETURN")
        );
        assert!(
            s.datastore()
                .get("/calico/v1/host/dockera/workload", false)
                .unwrap()
                .node
                .dir
        );
        // Globals are only written when absent; re-running changes nothing.
        s.datastore()
            .put("/calico/v1/config/LogSeverityScreen", "debug")
            .unwrap();
        s.ensure_global_config("other").unwrap();
        assert_eq!(
            v("/calico/v1/config/LogSeverityScreen").as_deref(),
            Some("debug")
        );
        assert_eq!(
            v("/calico/v1/config/ClusterGUID").as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        let err = s
            .register_host(&host("dockerb", "192.168.1.23"))
            .unwrap_err();
        assert!(
            err.to_string().contains("already in use by host dockera"),
            "{err}"
        );
        let snap = s.snapshot().unwrap();
        assert_eq!(
            snap.felix_config("dockera")
                .unwrap()
                .endpoint_to_host_action,
            crate::model::EndpointToHostAction::Return
        );
    }

    #[test]
    fn pool_add_checks_overlap_and_turns_on_ipip() {
        let s = store();
        let default = Pool::new("192.168.0.0/16".parse().unwrap());
        s.add_pools(std::slice::from_ref(&default)).unwrap();
        let mut tutorial = Pool::new("10.20.10.0/24".parse().unwrap());
        tutorial.ipip = true;
        tutorial.masquerade = true;
        s.add_pools(&[tutorial.clone()]).unwrap();
        let v = s
            .datastore()
            .get_value("/calico/v1/ipam/v4/pool/10.20.10.0-24")
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(
            v,
            r#"{"cidr":"10.20.10.0/24","ipip":"tunl0","masquerade":true}"#
        );
        assert_eq!(
            s.datastore()
                .get_value("/calico/v1/config/IpInIpEnabled")
                .unwrap()
                .unwrap()
                .0,
            "true"
        );
        // An identical CIDR is an update.
        let mut upd = default.clone();
        upd.ipip = true;
        s.add_pools(&[upd]).unwrap();
        let err = s
            .add_pools(&[Pool::new("192.168.5.0/24".parse().unwrap())])
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("overlaps with an existing pool 192.168.0.0/16"),
            "{err}"
        );
        let err = s
            .add_pools(&[
                Pool::new("10.1.0.0/16".parse().unwrap()),
                Pool::new("10.1.2.0/24".parse().unwrap()),
            ])
            .unwrap_err();
        assert!(err.to_string().contains("another new pool"), "{err}");
        assert!(
            s.datastore()
                .get_value("/calico/v1/ipam/v4/pool/10.1.0.0-16")
                .unwrap()
                .is_none(),
            "nothing written"
        );
        let err = s
            .add_pools(&[Pool::new("10.9.0.0/27".parse().unwrap())])
            .unwrap_err();
        assert!(err.to_string().contains("prefix length of 26 or lower"));
        s.remove_pool(&"192.168.0.0/16".parse().unwrap()).unwrap();
        assert!(matches!(
            s.remove_pool(&"192.168.0.0/16".parse().unwrap()),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn profiles_tags_rules_and_endpoints() {
        let s = store();
        assert!(s.add_profile("myprofile1").unwrap());
        assert!(!s.add_profile("myprofile1").unwrap(), "exists: no change");
        assert!(s.add_profile("bad name").is_err());
        let p = s.profile("myprofile1").unwrap();
        assert_eq!(p, Profile::with_defaults("myprofile1"));
        s.update_tags("myprofile1", Some("web"), None).unwrap();
        assert_eq!(
            s.profile("myprofile1").unwrap().tags,
            vec!["myprofile1", "web"]
        );
        assert!(matches!(
            s.update_tags("myprofile1", None, Some("nope")),
            Err(Error::NotFound { .. })
        ));
        let r = Rule {
            protocol: Some(Protocol::Tcp),
            ..Rule::new(Action::Deny)
        };
        assert!(s
            .add_rule("myprofile1", RuleDirection::Inbound, &r, Some(1))
            .unwrap());
        assert!(!s
            .add_rule("myprofile1", RuleDirection::Inbound, &r, None)
            .unwrap());
        assert!(
            s.add_rule("myprofile1", RuleDirection::Outbound, &r, Some(99))
                .unwrap(),
            "out of range still inserts"
        );
        let rules = s.profile("myprofile1").unwrap().rules;
        assert_eq!(rules.inbound_rules[0], r);
        assert_eq!(rules.outbound_rules[1], r);

        let key = EndpointKey::new("dockera", "docker", "c1", "1e5a4c3f0b8f11e6").unwrap();
        let ep = WorkloadEndpoint::new(
            "cali1e5a4c3f0b8",
            None,
            vec!["10.20.10.1/32".parse().unwrap()],
            vec![],
        );
        s.create_endpoint(&key, &ep).unwrap();
        assert_eq!(
            s.create_endpoint(&key, &ep).unwrap_err().etcd_code(),
            Some(105)
        );
        let err = s
            .update_endpoint_profiles(&key, &ProfileUpdate::Append(vec!["nope".into()]))
            .unwrap_err();
        assert_eq!(
            err,
            Error::NotFound {
                what: "profile",
                name: "nope".into()
            }
        );
        let ep = s
            .update_endpoint_profiles(&key, &ProfileUpdate::Append(vec!["myprofile1".into()]))
            .unwrap();
        assert_eq!(ep.profile_ids, vec!["myprofile1"]);
        assert!(s
            .update_endpoint_profiles(&key, &ProfileUpdate::Append(vec!["myprofile1".into()]))
            .is_err());
        assert!(s
            .remove_profile("myprofile1", false)
            .unwrap_err()
            .to_string()
            .contains("in use"));
        let ep = s
            .update_endpoint_profiles(&key, &ProfileUpdate::Set(vec![]))
            .unwrap();
        assert!(ep.profile_ids.is_empty());
        s.remove_profile("myprofile1", false).unwrap();
        assert!(s.remove_workload("dockera", "docker", "c1").unwrap());
        assert!(!s.remove_workload("dockera", "docker", "c1").unwrap());
        assert!(matches!(s.endpoint(&key), Err(Error::NotFound { .. })));
    }

    #[test]
    fn concurrent_profile_appends_all_land() {
        let s = Arc::new(store());
        for i in 0..8 {
            s.add_profile(&format!("p{i}")).unwrap();
        }
        let key = EndpointKey::new("h", "docker", "w", "e").unwrap();
        s.create_endpoint(&key, &WorkloadEndpoint::new("calie", None, vec![], vec![]))
            .unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let s = Arc::clone(&s);
                let key = key.clone();
                std::thread::spawn(move || {
                    s.update_endpoint_profiles(&key, &ProfileUpdate::Append(vec![format!("p{i}")]))
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut got = s.endpoint(&key).unwrap().profile_ids;
        got.sort();
        assert_eq!(got, (0..8).map(|i| format!("p{i}")).collect::<Vec<_>>());
    }
}
