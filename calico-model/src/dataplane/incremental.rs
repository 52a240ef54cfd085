//! Keeping a host plan current as the datastore changes, touching only what a change
//! affects — felix's incremental updates.
//!
//! [`HostDataplane`] owns a [`ClusterState`] and the [`HostPlan`] rendered from it.
//! [`HostDataplane::update`] applies one watch event and returns the [`PlanDelta`] that
//! turns the old plan into the new one:
//!
//! * an **endpoint** change re-renders that endpoint's two chains, the dispatch chains
//!   (only when the set of local interfaces changed), the chains of profiles that start
//!   or stop being used on this host (reference counted), the members of the tag sets
//!   its old and new profiles carry, and the routes/neighbours of its addresses;
//! * a **profile** change re-renders its chains (if used here) and the sets of its old
//!   and new tags;
//! * anything else (pools, hosts, affinities, felix config, BGP) re-renders the whole
//!   plan and diffs it ([`diff_plans`]) — such changes are rare, and felix restarts on
//!   most of them.
//!
//! Invariant (property-tested): after any sequence of updates, the maintained plan
//! equals [`render_host`] of the maintained state, and applying each delta to the
//! previous plan gives the next one ([`PlanDelta::apply_to`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use ipnetwork::IpNetwork;

use super::ipset::IpSet;
use super::iptables::{Table, TableDelta};
use super::routes::{Neighbor, Route, WORKLOAD_GATEWAY};
use super::{
    chain_names as names, interface_plan, local_neighbors, remote_endpoint_route, render_host,
    tag_ipset, Ctx, HostPlan, InterfacePlan, RenderOptions, Routing,
};
use crate::datastore::{Datastore, Event, Index};
use crate::error::{Error, Result};
use crate::layout::{self, KeyKind};
use crate::model::{EndpointKey, WorkloadEndpoint};
use crate::state::{ClusterState, ProfileRecord};

/// The difference between two plans, in the units the dataplane is programmed in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanDelta {
    /// IPv4 filter chains to rewrite / delete.
    pub filter: TableDelta,
    /// IPv6 filter chains.
    pub filter6: TableDelta,
    /// nat chains.
    pub nat: TableDelta,
    /// Sets to create and fill.
    pub sets_created: Vec<IpSet>,
    /// Membership changes: set → (added, removed).
    pub sets_changed: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>,
    /// Sets to destroy (after the chains referencing them are gone).
    pub sets_removed: Vec<String>,
    /// Routes to install (replace).
    pub routes_set: Vec<Route>,
    /// Route destinations to delete.
    pub routes_removed: Vec<IpNetwork>,
    /// Neighbours to install.
    pub neighbors_set: Vec<Neighbor>,
    /// Neighbours to delete.
    pub neighbors_removed: Vec<Neighbor>,
    /// New workload interfaces (their sysctls must be set).
    pub interfaces_added: Vec<InterfacePlan>,
    /// Workload interfaces gone.
    pub interfaces_removed: Vec<String>,
    /// Something host-wide changed (tunnel, FDB, sysctls, hooks, bird.conf): apply the
    /// whole plan instead of this delta.
    pub global: bool,
}

impl PlanDelta {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.filter.is_empty()
            && self.filter6.is_empty()
            && self.nat.is_empty()
            && self.sets_created.is_empty()
            && self.sets_changed.is_empty()
            && self.sets_removed.is_empty()
            && self.routes_set.is_empty()
            && self.routes_removed.is_empty()
            && self.neighbors_set.is_empty()
            && self.neighbors_removed.is_empty()
            && self.interfaces_added.is_empty()
            && self.interfaces_removed.is_empty()
            && !self.global
    }

    /// `ipset restore` text: new sets, then membership changes (set destruction comes
    /// after the iptables update: [`PlanDelta::ipset_destroy_text`]).
    pub fn ipset_text(&self) -> String {
        let mut out: String = self.sets_created.iter().map(IpSet::to_restore).collect();
        for (name, (added, removed)) in &self.sets_changed {
            out.push_str(&IpSet::delta_restore(name, added, removed));
        }
        out
    }

    /// `ipset restore` text destroying the removed sets.
    pub fn ipset_destroy_text(&self) -> String {
        self.sets_removed
            .iter()
            .map(|s| format!("destroy {s}\n"))
            .collect()
    }

    /// Applies the delta to `plan` (the plan it was computed from), giving the new plan
    /// except for host-wide parts when [`PlanDelta::global`] (then use the new plan).
    pub fn apply_to(&self, plan: &mut HostPlan) {
        plan.filter.apply(&self.filter);
        plan.filter6.apply(&self.filter6);
        plan.nat.apply(&self.nat);
        for s in &self.sets_created {
            plan.ipsets.insert(s.name.clone(), s.clone());
        }
        for (name, (added, removed)) in &self.sets_changed {
            if let Some(s) = plan.ipsets.get_mut(name) {
                s.members.retain(|m| !removed.contains(m));
                s.members.extend(added.iter().cloned());
            }
        }
        for s in &self.sets_removed {
            plan.ipsets.remove(s);
        }
        for d in &self.routes_removed {
            plan.routes.remove(d);
        }
        for r in &self.routes_set {
            plan.routes.insert(r.dst(), r.clone());
        }
        for n in &self.neighbors_removed {
            plan.neighbors.remove(n);
        }
        plan.neighbors.extend(self.neighbors_set.iter().cloned());
        for i in &self.interfaces_removed {
            plan.interfaces.remove(i);
        }
        for i in &self.interfaces_added {
            plan.interfaces.insert(i.name.clone(), i.clone());
        }
    }
}

/// The full difference between two plans of the same host.
pub fn diff_plans(old: &HostPlan, new: &HostPlan) -> PlanDelta {
    let mut d = PlanDelta {
        filter: new.filter.diff_from(&old.filter),
        filter6: new.filter6.diff_from(&old.filter6),
        nat: new.nat.diff_from(&old.nat),
        ..PlanDelta::default()
    };
    for (name, set) in &new.ipsets {
        match old.ipsets.get(name) {
            None => d.sets_created.push(set.clone()),
            Some(o)
                if o.set_type != set.set_type
                    || o.v4 != set.v4
                    || o.max_elements != set.max_elements =>
            {
                d.global = true;
            }
            Some(o) if o.members != set.members => {
                let added = set.members.difference(&o.members).cloned().collect();
                let removed = o.members.difference(&set.members).cloned().collect();
                d.sets_changed.insert(name.clone(), (added, removed));
            }
            Some(_) => {}
        }
    }
    d.sets_removed = old
        .ipsets
        .keys()
        .filter(|k| !new.ipsets.contains_key(*k))
        .cloned()
        .collect();
    for (dst, r) in &new.routes {
        if old.routes.get(dst) != Some(r) {
            d.routes_set.push(r.clone());
        }
    }
    d.routes_removed = old
        .routes
        .keys()
        .filter(|k| !new.routes.contains_key(*k))
        .copied()
        .collect();
    d.neighbors_set = new.neighbors.difference(&old.neighbors).cloned().collect();
    d.neighbors_removed = old.neighbors.difference(&new.neighbors).cloned().collect();
    for (name, i) in &new.interfaces {
        if old.interfaces.get(name) != Some(i) {
            d.interfaces_added.push(i.clone());
        }
    }
    d.interfaces_removed = old
        .interfaces
        .keys()
        .filter(|k| !new.interfaces.contains_key(*k))
        .cloned()
        .collect();
    d.global |= old.tunnel != new.tunnel
        || old.fdb != new.fdb
        || old.sysctls != new.sysctls
        || old.bird_conf != new.bird_conf
        || old.filter.hooks != new.filter.hooks
        || old.filter6.hooks != new.filter6.hooks
        || old.nat.hooks != new.nat.hooks;
    d
}

/// Whether `key` is `/calico/v1/host/<h>/workload` or below (only endpoints live there).
fn is_workload_subtree(key: &str) -> bool {
    let parts: Vec<&str> = key.trim_start_matches('/').split('/').collect();
    matches!(
        parts.as_slice(),
        ["calico", "v1", "host", _, "workload", ..]
    )
}

/// Which table a touched chain lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fam {
    V4,
    V6,
}

/// Old values of everything an incremental update touched.
#[derive(Debug, Default)]
struct Touched {
    chains: BTreeMap<(Fam, String), Option<Vec<String>>>,
    sets: BTreeMap<String, Option<IpSet>>,
    routes: BTreeMap<IpNetwork, Option<Route>>,
    neighbors: BTreeMap<Neighbor, bool>,
    interfaces: BTreeMap<String, Option<InterfacePlan>>,
}

/// A host's plan, kept current from watch events. See the module docs.
#[derive(Debug, Clone)]
pub struct HostDataplane {
    host: String,
    opts: RenderOptions,
    ctx: Ctx,
    state: ClusterState,
    plan: HostPlan,
    /// Profile → every endpoint (any host) listing it.
    profile_users: HashMap<String, BTreeSet<EndpointKey>>,
    /// Profile → number of programmed local endpoints listing it.
    local_refs: BTreeMap<String, usize>,
    /// Profile → (v4 sets, v6 sets) its rendered chains reference.
    profile_sets: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>,
    /// Tag set → number of rendered profile chains referencing it.
    set_refs: BTreeMap<String, usize>,
}

impl HostDataplane {
    /// Renders the plan of `host` for `state`.
    pub fn new(state: ClusterState, host: &str, opts: RenderOptions) -> Result<HostDataplane> {
        let mut dp = HostDataplane {
            host: host.to_string(),
            opts,
            ctx: Ctx::new(state.felix_config(host)?),
            plan: render_host(&state, host, opts)?,
            state,
            profile_users: HashMap::new(),
            local_refs: BTreeMap::new(),
            profile_sets: BTreeMap::new(),
            set_refs: BTreeMap::new(),
        };
        dp.rebuild_indices();
        Ok(dp)
    }

    /// The current plan.
    pub fn plan(&self) -> &HostPlan {
        &self.plan
    }

    /// The current state.
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    fn rebuild_indices(&mut self) {
        self.profile_users.clear();
        self.local_refs.clear();
        self.profile_sets.clear();
        self.set_refs.clear();
        for (key, ep) in &self.state.endpoints {
            for p in &ep.profile_ids {
                self.profile_users
                    .entry(p.clone())
                    .or_default()
                    .insert(key.clone());
            }
        }
        let programmed: Vec<(EndpointKey, WorkloadEndpoint)> = self
            .plan
            .interfaces
            .values()
            .filter_map(|i| {
                self.state
                    .endpoints
                    .get(&i.endpoint)
                    .map(|e| (i.endpoint.clone(), e.clone()))
            })
            .collect();
        for (_, ep) in programmed {
            for p in &ep.profile_ids {
                *self.local_refs.entry(p.clone()).or_default() += 1;
            }
        }
        for p in self.local_refs.keys() {
            let rules = self.state.profiles.get(p).and_then(|r| r.rules.as_ref());
            let (_, s4) = self.ctx.profile_chains(p, rules, true);
            let (_, s6) = self.ctx.profile_chains(p, rules, false);
            for s in s4.iter().chain(s6.iter()) {
                *self.set_refs.entry(s.clone()).or_default() += 1;
            }
            self.profile_sets.insert(p.clone(), (s4, s6));
        }
    }

    /// Re-reads everything: a new state, a full render, the delta from the old plan.
    pub fn reset(&mut self, state: ClusterState) -> Result<PlanDelta> {
        let ctx = Ctx::new(state.felix_config(&self.host)?);
        let plan = render_host(&state, &self.host, self.opts)?;
        let delta = diff_plans(&self.plan, &plan);
        self.ctx = ctx;
        self.plan = plan;
        self.state = state;
        self.rebuild_indices();
        Ok(delta)
    }

    /// Applies one watch event; returns the delta from the previous plan.
    pub fn update(&mut self, event: &Event) -> Result<PlanDelta> {
        let key = event.node.key.as_str();
        match layout::classify(key) {
            KeyKind::Endpoint(ek) if !event.node.dir => {
                let old = self.state.endpoints.get(&ek).cloned();
                self.state.apply_event(event);
                let new = self.state.endpoints.get(&ek).cloned();
                self.endpoint_changed(&ek, old, new)
            }
            KeyKind::ProfileTags(p) | KeyKind::ProfileRules(p) | KeyKind::ProfileLabels(p)
                if !event.node.dir =>
            {
                let old = self.state.profiles.get(&p).cloned();
                self.state.apply_event(event);
                self.profile_changed(&p, old)
            }
            KeyKind::Other
                if event.node.dir && event.action.is_delete() && is_workload_subtree(key) =>
            {
                // `calicoctl container remove`: a workload directory and its endpoints.
                let prefix = format!("{key}/");
                let gone: Vec<(EndpointKey, WorkloadEndpoint)> = self
                    .state
                    .endpoints
                    .iter()
                    .filter(|(k, _)| layout::endpoint(k).starts_with(&prefix))
                    .map(|(k, e)| (k.clone(), e.clone()))
                    .collect();
                self.state.apply_event(event);
                let mut t = Touched::default();
                for (k, old) in gone {
                    if !self.endpoint_changed_into(&mut t, &k, Some(old), None) {
                        let state = self.state.clone();
                        return self.reset(state);
                    }
                }
                Ok(self.finish(t))
            }
            KeyKind::Other if event.node.dir && !event.action.is_delete() => {
                self.state.apply_event(event);
                Ok(PlanDelta::default())
            }
            KeyKind::Other if !event.node.dir => {
                // Keys the model does not read (handles, BGP peers...).
                self.state.apply_event(event);
                Ok(PlanDelta::default())
            }
            KeyKind::Block(_) | KeyKind::Affinity { .. } if !event.node.dir => {
                // Allocations rewrite blocks constantly; only an owner change matters.
                let before = self.state.affinities.clone();
                self.state.apply_event(event);
                if self.state.affinities == before {
                    Ok(PlanDelta::default())
                } else {
                    let state = self.state.clone();
                    self.reset(state)
                }
            }
            _ => {
                let mut state = self.state.clone();
                state.apply_event(event);
                self.reset(state)
            }
        }
    }

    /// Follows the datastore: waits up to `timeout` for events after the state's index
    /// and applies them all; `Ok(deltas)` (empty when nothing happened). A cleared event
    /// index triggers a full resync (one delta from a fresh read).
    pub fn sync_from(&mut self, ds: &dyn Datastore, timeout: Duration) -> Result<Vec<PlanDelta>> {
        let mut deltas = Vec::new();
        let mut wait = timeout;
        loop {
            match ds.watch(layout::CALICO_ROOT, true, self.state.index + 1, wait) {
                Ok(Some(ev)) => {
                    let index: Index = ev.index();
                    deltas.push(self.update(&ev)?);
                    self.state.index = self.state.index.max(index);
                    wait = Duration::ZERO;
                }
                Ok(None) => return Ok(deltas),
                Err(Error::EventIndexCleared { .. }) => {
                    let read = ds.get(layout::CALICO_ROOT, true)?;
                    deltas.push(self.reset(ClusterState::from_read(&read))?);
                    wait = Duration::ZERO;
                }
                Err(e) => return Err(e),
            }
        }
    }

    // ------------------------------------------------------------- fast paths

    fn endpoint_changed(
        &mut self,
        key: &EndpointKey,
        old: Option<WorkloadEndpoint>,
        new: Option<WorkloadEndpoint>,
    ) -> Result<PlanDelta> {
        let mut t = Touched::default();
        if !self.endpoint_changed_into(&mut t, key, old, new) {
            let state = self.state.clone();
            return self.reset(state);
        }
        Ok(self.finish(t))
    }

    /// Records one endpoint change into `t`; false when the full render must arbitrate
    /// (interface name clashes), in which case the caller resets.
    fn endpoint_changed_into(
        &mut self,
        t: &mut Touched,
        key: &EndpointKey,
        old: Option<WorkloadEndpoint>,
        new: Option<WorkloadEndpoint>,
    ) -> bool {
        let local = key.host == self.host;
        if local && (self.contested(key, old.as_ref()) || self.contested(key, new.as_ref())) {
            return false;
        }
        // Tag membership index.
        for p in old.iter().flat_map(|e| e.profile_ids.iter()) {
            if let Some(users) = self.profile_users.get_mut(p) {
                users.remove(key);
            }
        }
        for p in new.iter().flat_map(|e| e.profile_ids.iter()) {
            self.profile_users
                .entry(p.clone())
                .or_default()
                .insert(key.clone());
        }
        if local {
            let was = old.as_ref().filter(|e| self.ctx.programs(e)).cloned();
            let is = new.as_ref().filter(|e| self.ctx.programs(e)).cloned();
            if let Some(e) = &is {
                self.program(t, key, e);
            }
            if let Some(e) = &was {
                self.unprogram(t, key, e, is.as_ref());
            }
            if was.as_ref().map(|e| &e.name) != is.as_ref().map(|e| &e.name) {
                self.refresh_dispatch(t);
            }
        }
        // Tag sets of old and new profiles.
        let mut tags = BTreeSet::new();
        for p in old
            .iter()
            .chain(new.iter())
            .flat_map(|e| e.profile_ids.iter())
        {
            if let Some(rec) = self.state.profiles.get(p) {
                tags.extend(rec.tags.iter().cloned());
            }
        }
        for tag in tags {
            self.refresh_tag(t, &tag);
        }
        // Routes of its addresses.
        let addrs: BTreeSet<IpAddr> = old
            .iter()
            .chain(new.iter())
            .flat_map(|e| e.addresses().collect::<Vec<_>>())
            .collect();
        for a in addrs {
            let dst = IpNetwork::from(a);
            let r = self.route_for(dst);
            self.set_route(t, dst, r);
        }
        true
    }

    /// True when another local endpoint claims the same interface name (the full render
    /// arbitrates those and reports them).
    fn contested(&self, key: &EndpointKey, ep: Option<&WorkloadEndpoint>) -> bool {
        let Some(ep) = ep else { return false };
        if ep.is_active() && !self.ctx.programs(ep) {
            return true; // reported as a warning by the full render
        }
        self.state
            .host_endpoints(&self.host)
            .any(|(k, e)| k != key && e.is_active() && e.name == ep.name)
    }

    fn program(&mut self, t: &mut Touched, key: &EndpointKey, ep: &WorkloadEndpoint) {
        for fam in [Fam::V4, Fam::V6] {
            for (name, body) in self.ctx.endpoint_chains(key, ep) {
                self.set_chain(t, fam, &name, Some(body));
            }
        }
        for p in &ep.profile_ids {
            self.ref_profile(t, p);
        }
        let iface = interface_plan(key, ep);
        for n in local_neighbors(&iface) {
            self.set_neighbor(t, n, true);
        }
        self.set_interface(t, &iface.name.clone(), Some(iface));
    }

    fn unprogram(
        &mut self,
        t: &mut Touched,
        key: &EndpointKey,
        ep: &WorkloadEndpoint,
        replacement: Option<&WorkloadEndpoint>,
    ) {
        let keep: BTreeSet<String> = replacement
            .map(|r| {
                self.ctx
                    .endpoint_chains(key, r)
                    .into_iter()
                    .map(|(n, _)| n)
                    .collect()
            })
            .unwrap_or_default();
        for fam in [Fam::V4, Fam::V6] {
            for (name, _) in self.ctx.endpoint_chains(key, ep) {
                if !keep.contains(&name) {
                    self.set_chain(t, fam, &name, None);
                }
            }
        }
        for p in &ep.profile_ids {
            self.unref_profile(t, p);
        }
        let old_iface = interface_plan(key, ep);
        let new_neighbors: BTreeSet<Neighbor> = replacement
            .map(|r| {
                local_neighbors(&interface_plan(key, r))
                    .into_iter()
                    .collect()
            })
            .unwrap_or_default();
        for n in local_neighbors(&old_iface) {
            if !new_neighbors.contains(&n) {
                self.set_neighbor(t, n, false);
            }
        }
        if replacement.is_none_or(|r| r.name != ep.name) {
            self.set_interface(t, &ep.name, None);
        }
    }

    fn ref_profile(&mut self, t: &mut Touched, p: &str) {
        let count = self.local_refs.entry(p.to_string()).or_default();
        *count += 1;
        if *count == 1 {
            self.render_profile(t, p);
        }
    }

    fn unref_profile(&mut self, t: &mut Touched, p: &str) {
        let Some(count) = self.local_refs.get_mut(p) else {
            return;
        };
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.local_refs.remove(p);
            for fam in [Fam::V4, Fam::V6] {
                for inbound in [true, false] {
                    self.set_chain(t, fam, &names::profile(p, inbound), None);
                }
            }
            if let Some((s4, s6)) = self.profile_sets.remove(p) {
                for s in s4.iter().chain(s6.iter()) {
                    self.unref_set(t, s);
                }
            }
        }
    }

    /// (Re)renders a used profile's chains and moves its set references.
    fn render_profile(&mut self, t: &mut Touched, p: &str) {
        let rules = self.state.profiles.get(p).and_then(|r| r.rules.clone());
        let (c4, s4) = self.ctx.profile_chains(p, rules.as_ref(), true);
        let (c6, s6) = self.ctx.profile_chains(p, rules.as_ref(), false);
        for (name, body) in c4 {
            self.set_chain(t, Fam::V4, &name, Some(body));
        }
        for (name, body) in c6 {
            self.set_chain(t, Fam::V6, &name, Some(body));
        }
        for s in s4.iter().chain(s6.iter()) {
            self.ref_set(t, s);
        }
        if let Some((o4, o6)) = self.profile_sets.insert(p.to_string(), (s4, s6)) {
            for s in o4.iter().chain(o6.iter()) {
                self.unref_set(t, s);
            }
        }
    }

    fn ref_set(&mut self, t: &mut Touched, set: &str) {
        let count = self.set_refs.entry(set.to_string()).or_default();
        *count += 1;
        if *count == 1 && !self.plan.ipsets.contains_key(set) {
            let v4 = set.starts_with("felix-v4-");
            let members = self.members_of_set(set, v4);
            let s = tag_ipset(set, v4, &self.ctx, members);
            self.set_ipset(t, set, Some(s));
        }
    }

    fn unref_set(&mut self, t: &mut Touched, set: &str) {
        let Some(count) = self.set_refs.get_mut(set) else {
            return;
        };
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.set_refs.remove(set);
            self.set_ipset(t, set, None);
        }
    }

    /// Members of a tag set, from the indices.
    fn members_of_set(&self, set: &str, v4: bool) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (p, rec) in &self.state.profiles {
            if !rec.tags.iter().any(|tag| names::tag_set(tag, v4) == set) {
                continue;
            }
            for k in self.profile_users.get(p).into_iter().flatten() {
                if let Some(ep) = self.state.endpoints.get(k) {
                    out.extend(
                        ep.addresses()
                            .filter(|a| a.is_ipv4() == v4)
                            .map(|a| a.to_string()),
                    );
                }
            }
        }
        out
    }

    fn refresh_tag(&mut self, t: &mut Touched, tag: &str) {
        for v4 in [true, false] {
            let set = names::tag_set(tag, v4);
            let Some(current) = self.plan.ipsets.get(&set) else {
                continue;
            };
            let members = self.members_of_set(&set, v4);
            if current.members != members {
                let mut s = current.clone();
                s.members = members;
                self.set_ipset(t, &set, Some(s));
            }
        }
    }

    fn refresh_dispatch(&mut self, t: &mut Touched) {
        let names_now: Vec<String> = self.plan.interfaces.keys().cloned().collect();
        let chains = self
            .ctx
            .dispatch_chains(names_now.iter().map(String::as_str));
        let wanted: BTreeSet<String> = chains.iter().map(|(n, _)| n.clone()).collect();
        for fam in [Fam::V4, Fam::V6] {
            let table = if fam == Fam::V4 {
                &self.plan.filter
            } else {
                &self.plan.filter6
            };
            let stale: Vec<String> = table
                .chains
                .keys()
                .filter(|c| {
                    (c.starts_with("felix-FROM-EP-PFX-") || c.starts_with("felix-TO-EP-PFX-"))
                        && !wanted.contains(*c)
                })
                .cloned()
                .collect();
            for c in stale {
                self.set_chain(t, fam, &c, None);
            }
            for (name, body) in &chains {
                self.set_chain(t, fam, name, Some(body.clone()));
            }
        }
    }

    /// The route the full render gives `dst` (a /32 or /128), if any.
    fn route_for(&self, dst: IpNetwork) -> Option<Route> {
        if self.opts.gateway_route_via_lo && dst == IpNetwork::from(IpAddr::V4(WORKLOAD_GATEWAY)) {
            return Some(Route::Local {
                dst,
                dev: "lo".into(),
            });
        }
        let addr = dst.ip();
        for iface in self.plan.interfaces.values() {
            let has = match addr {
                IpAddr::V4(a) => iface.ipv4.contains(&a),
                IpAddr::V6(a) => iface.ipv6.contains(&a),
            };
            if has {
                return Some(Route::Local {
                    dst,
                    dev: iface.name.clone(),
                });
            }
        }
        if self.opts.routing != Routing::Static || !addr.is_ipv4() {
            return None;
        }
        for (block, owner) in &self.state.affinities {
            if *block == dst {
                if owner == &self.host {
                    return Some(Route::Blackhole { dst });
                }
                if let Some(gw) = self.state.hosts.get(owner).and_then(|h| h.ipv4()) {
                    return Some(remote_endpoint_route(&self.state, &self.opts, addr, gw));
                }
            }
        }
        for (key, ep) in &self.state.endpoints {
            if key.host == self.host
                || !ep.is_active()
                || !ep.ipv4_nets.iter().any(|n| IpAddr::V4(n.ip()) == addr)
            {
                continue;
            }
            let Some(gw) = self.state.hosts.get(&key.host).and_then(|h| h.ipv4()) else {
                continue;
            };
            let in_own_block = self
                .state
                .affinities
                .iter()
                .any(|(b, owner)| owner == &key.host && b.contains(addr));
            if !in_own_block {
                return Some(remote_endpoint_route(&self.state, &self.opts, addr, gw));
            }
        }
        None
    }

    fn profile_changed(&mut self, p: &str, old: Option<ProfileRecord>) -> Result<PlanDelta> {
        let mut t = Touched::default();
        let new = self.state.profiles.get(p).cloned();
        let old_rules = old.as_ref().and_then(|r| r.rules.clone());
        let new_rules = new.as_ref().and_then(|r| r.rules.clone());
        if old_rules != new_rules && self.local_refs.contains_key(p) {
            self.render_profile(&mut t, p);
        }
        let mut tags: BTreeSet<String> = BTreeSet::new();
        tags.extend(old.iter().flat_map(|r| r.tags.iter().cloned()));
        tags.extend(new.iter().flat_map(|r| r.tags.iter().cloned()));
        for tag in tags {
            self.refresh_tag(&mut t, &tag);
        }
        Ok(self.finish(t))
    }

    // ------------------------------------------------------------- recording edits

    fn table(&mut self, fam: Fam) -> &mut Table {
        match fam {
            Fam::V4 => &mut self.plan.filter,
            Fam::V6 => &mut self.plan.filter6,
        }
    }

    fn set_chain(&mut self, t: &mut Touched, fam: Fam, name: &str, body: Option<Vec<String>>) {
        let table = self.table(fam);
        let old = match body {
            Some(b) => table.chains.insert(name.to_string(), b),
            None => table.chains.remove(name),
        };
        t.chains.entry((fam, name.to_string())).or_insert(old);
    }

    fn set_ipset(&mut self, t: &mut Touched, name: &str, set: Option<IpSet>) {
        let old = match set {
            Some(s) => self.plan.ipsets.insert(name.to_string(), s),
            None => self.plan.ipsets.remove(name),
        };
        t.sets.entry(name.to_string()).or_insert(old);
    }

    fn set_route(&mut self, t: &mut Touched, dst: IpNetwork, route: Option<Route>) {
        let old = match route {
            Some(r) => self.plan.routes.insert(dst, r),
            None => self.plan.routes.remove(&dst),
        };
        t.routes.entry(dst).or_insert(old);
    }

    fn set_neighbor(&mut self, t: &mut Touched, n: Neighbor, present: bool) {
        let was = if present {
            !self.plan.neighbors.insert(n.clone())
        } else {
            self.plan.neighbors.remove(&n)
        };
        t.neighbors.entry(n).or_insert(was);
    }

    fn set_interface(&mut self, t: &mut Touched, name: &str, iface: Option<InterfacePlan>) {
        let old = match iface {
            Some(i) => self.plan.interfaces.insert(name.to_string(), i),
            None => self.plan.interfaces.remove(name),
        };
        t.interfaces.entry(name.to_string()).or_insert(old);
    }

    /// Turns the recorded old values and the current plan into a delta.
    fn finish(&self, t: Touched) -> PlanDelta {
        let mut d = PlanDelta {
            filter: TableDelta {
                name: "filter".into(),
                ..TableDelta::default()
            },
            filter6: TableDelta {
                name: "filter".into(),
                ..TableDelta::default()
            },
            nat: TableDelta {
                name: "nat".into(),
                ..TableDelta::default()
            },
            ..PlanDelta::default()
        };
        for ((fam, name), old) in t.chains {
            let (table, delta) = match fam {
                Fam::V4 => (&self.plan.filter, &mut d.filter),
                Fam::V6 => (&self.plan.filter6, &mut d.filter6),
            };
            match (old, table.chains.get(&name)) {
                (Some(o), Some(n)) if o == *n => {}
                (_, Some(n)) => {
                    delta.set.insert(name, n.clone());
                }
                (Some(_), None) => delta.removed.push(name),
                (None, None) => {}
            }
        }
        for (name, old) in t.sets {
            match (old, self.plan.ipsets.get(&name)) {
                (None, Some(n)) => d.sets_created.push(n.clone()),
                (Some(_), None) => d.sets_removed.push(name),
                (Some(o), Some(n)) if o.members != n.members => {
                    let added = n.members.difference(&o.members).cloned().collect();
                    let removed = o.members.difference(&n.members).cloned().collect();
                    d.sets_changed.insert(name, (added, removed));
                }
                _ => {}
            }
        }
        for (dst, old) in t.routes {
            match (old, self.plan.routes.get(&dst)) {
                (Some(o), Some(n)) if o == *n => {}
                (_, Some(n)) => d.routes_set.push(n.clone()),
                (Some(_), None) => d.routes_removed.push(dst),
                (None, None) => {}
            }
        }
        for (n, was) in t.neighbors {
            let is = self.plan.neighbors.contains(&n);
            if is && !was {
                d.neighbors_set.push(n);
            } else if was && !is {
                d.neighbors_removed.push(n);
            }
        }
        for (name, old) in t.interfaces {
            match (old, self.plan.interfaces.get(&name)) {
                (Some(o), Some(n)) if o == *n => {}
                (_, Some(n)) => d.interfaces_added.push(n.clone()),
                (Some(_), None) => d.interfaces_removed.push(name),
                (None, None) => {}
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::datastore::{DeleteOptions, MemoryDatastore};
    use crate::rule::{Action, Rule, Rules};
    use crate::scenario::Scenario;

    /// One random datastore change.
    #[derive(Debug, Clone)]
    enum Op {
        Endpoint {
            host_b: bool,
            n: u8,
            profiles: Vec<u8>,
            active: bool,
            name_variant: bool,
        },
        DeleteEndpoint {
            n: u8,
        },
        Rules {
            p: u8,
            variant: u8,
        },
        Tags {
            p: u8,
            tags: Vec<u8>,
        },
        DeleteProfile {
            p: u8,
        },
        Pool {
            masq: bool,
        },
        Affinity {
            host_b: bool,
            block: u8,
        },
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (any::<bool>(), 0u8..6, proptest::collection::vec(0u8..4, 0..3), prop_oneof![5 => Just(true), 1 => Just(false)], prop_oneof![5 => Just(false), 1 => Just(true)])
                .prop_map(|(host_b, n, profiles, active, name_variant)| Op::Endpoint { host_b, n, profiles, active, name_variant }),
            2 => (0u8..6).prop_map(|n| Op::DeleteEndpoint { n }),
            2 => (0u8..4, 0u8..4).prop_map(|(p, variant)| Op::Rules { p, variant }),
            2 => (0u8..4, proptest::collection::vec(0u8..4, 0..3)).prop_map(|(p, tags)| Op::Tags { p, tags }),
            1 => (0u8..4).prop_map(|p| Op::DeleteProfile { p }),
            1 => any::<bool>().prop_map(|masq| Op::Pool { masq }),
            1 => (any::<bool>(), 0u8..4).prop_map(|(host_b, block)| Op::Affinity { host_b, block }),
        ]
    }

    fn rules_variant(p: &str, v: u8) -> Rules {
        match v {
            0 => Rules::profile_default(p),
            1 => Rules {
                inbound_rules: vec![Rule {
                    dst_tag: Some("t1".into()),
                    ..Rule::new(Action::Allow)
                }],
                outbound_rules: vec![],
            },
            2 => Rules {
                inbound_rules: vec![],
                outbound_rules: vec![
                    Rule {
                        src_tag: Some("t2".into()),
                        ..Rule::new(Action::Deny)
                    },
                    Rule::new(Action::Allow),
                ],
            },
            _ => Rules {
                inbound_rules: vec![Rule {
                    src_tag: Some(p.into()),
                    src_net: Some("fd00::/8".parse().unwrap()),
                    ..Rule::new(Action::Allow)
                }],
                outbound_rules: vec![],
            },
        }
    }

    fn apply_op(ds: &MemoryDatastore, op: &Op) {
        let profile = |i: u8| format!("p{i}");
        let res = match op {
            Op::Endpoint {
                host_b,
                n,
                profiles,
                active,
                name_variant,
            } => {
                let host = if *host_b { "hostB" } else { "hostA" };
                let mut ps: Vec<String> = Vec::new();
                for p in profiles {
                    if !ps.contains(&profile(*p)) {
                        ps.push(profile(*p));
                    }
                }
                let refs: Vec<&str> = ps.iter().map(String::as_str).collect();
                let (mut key, mut ep) = Scenario::make_endpoint(
                    host,
                    &format!("w{n}"),
                    &format!("10.20.10.{}/32", n + 1),
                    &refs,
                );
                key.host = "hostA".into(); // the key decides the host; keep one key per workload
                if *host_b {
                    key.host = "hostB".into();
                }
                if *name_variant {
                    ep.name = format!("calix{n}");
                }
                if *n == 5 {
                    ep.ipv6_nets = vec!["fd00::5/128".parse().unwrap()];
                }
                if !*active {
                    ep.state = crate::model::EndpointState::Inactive;
                }
                // Move: delete the other host's copy first.
                let mut other = key.clone();
                other.host = if *host_b {
                    "hostA".into()
                } else {
                    "hostB".into()
                };
                let _ = ds.delete(&layout::endpoint(&other), &DeleteOptions::default());
                ds.put(&layout::endpoint(&key), &ep.to_json()).map(|_| ())
            }
            Op::DeleteEndpoint { n } => {
                for host in ["hostA", "hostB"] {
                    let dir = layout::workload_dir(host, "docker", &format!("w{n}"));
                    let _ = ds.delete(
                        &dir,
                        &DeleteOptions {
                            recursive: true,
                            ..DeleteOptions::default()
                        },
                    );
                }
                Ok(())
            }
            Op::Rules { p, variant } => ds
                .put(
                    &layout::profile_rules(&profile(*p)),
                    &rules_variant(&profile(*p), *variant).to_json(),
                )
                .map(|_| ()),
            Op::Tags { p, tags } => {
                let tags: Vec<String> = tags.iter().map(|t| format!("t{t}")).collect();
                ds.put(
                    &layout::profile_tags(&profile(*p)),
                    &crate::model::Profile::tags_to_json(&tags),
                )
                .map(|_| ())
            }
            Op::DeleteProfile { p } => {
                let _ = ds.delete(
                    &layout::profile_dir(&profile(*p)),
                    &DeleteOptions {
                        recursive: true,
                        ..DeleteOptions::default()
                    },
                );
                Ok(())
            }
            Op::Pool { masq } => {
                let mut pool = crate::model::Pool::new("10.20.10.0/24".parse().unwrap());
                pool.masquerade = *masq;
                ds.put(&layout::pool(&pool.cidr), &pool.to_json())
                    .map(|_| ())
            }
            Op::Affinity { host_b, block } => {
                let host = if *host_b { "hostB" } else { "hostA" };
                let b: IpNetwork = format!("10.20.10.{}/26", block * 64).parse().unwrap();
                ds.put(&layout::ipam_host_affinity(host, &b), "")
                    .map(|_| ())
            }
        };
        res.unwrap();
    }

    fn cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(48)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        /// Incremental updates equal a full render after every event, and each delta
        /// turns the previous plan into the next.
        #[test]
        fn incremental_equals_full_render(ops in proptest::collection::vec(arb_op(), 1..25), bird in any::<bool>()) {
            let ds = MemoryDatastore::new();
            let base = Scenario::new().host("hostA", "10.77.0.1").host("hostB", "10.77.0.2").default_profile("p0").default_profile("p1");
            base.write_to(&ds).unwrap();
            let opts = RenderOptions { routing: if bird { Routing::Bird } else { Routing::Static }, gateway_route_via_lo: true, ..RenderOptions::default() };
            let start = ds.get("/calico", true).unwrap();
            let mut dp = HostDataplane::new(ClusterState::from_read(&start), "hostA", opts).unwrap();
            for op in &ops {
                apply_op(&ds, op);
                let before = dp.plan().clone();
                let deltas = dp.sync_from(&ds, Duration::ZERO).unwrap();
                let full = render_host(dp.state(), "hostA", opts).unwrap();
                prop_assert_eq!(dp.plan(), &full, "after {:?}", op);
                let mut patched = before;
                let mut global = false;
                for d in &deltas {
                    d.apply_to(&mut patched);
                    global |= d.global;
                }
                if !global {
                    prop_assert_eq!(&patched, &full, "deltas of {:?} do not rebuild the plan", op);
                }
                let fresh = ClusterState::from_read(&ds.get("/calico", true).unwrap());
                prop_assert_eq!(dp.state(), &fresh);
            }
        }
    }

    #[test]
    fn endpoint_change_touches_only_its_units() {
        let sc = Scenario::walkthrough();
        let ds = MemoryDatastore::new();
        sc.write_to(&ds).unwrap();
        let mut dp = HostDataplane::new(
            ClusterState::from_read(&ds.get("/calico", true).unwrap()),
            "hostA",
            RenderOptions::default(),
        )
        .unwrap();
        let (key, mut ep) = Scenario::make_endpoint("hostA", "centos-2", "10.20.10.2/32", &[]);
        ep.profile_ids = vec!["myprofile2".into(), "myprofile1".into()];
        ds.put(&layout::endpoint(&key), &ep.to_json()).unwrap();
        let deltas = dp.sync_from(&ds, Duration::ZERO).unwrap();
        assert_eq!(deltas.len(), 1);
        let d = &deltas[0];
        let suffix = &ep.name[4..];
        let mut touched: Vec<&String> = d.filter.set.keys().collect();
        touched.sort();
        assert_eq!(
            touched,
            vec![
                &format!("felix-from-{suffix}"),
                &format!("felix-to-{suffix}")
            ]
        );
        assert_eq!(
            d.sets_changed.len(),
            1,
            "centos-2 joins the myprofile1 tag set"
        );
        assert!(d.sets_changed["felix-v4-myprofile1"]
            .0
            .contains("10.20.10.2"));
        assert!(d.routes_set.is_empty() && d.routes_removed.is_empty() && !d.global);
        assert!(d
            .ipset_text()
            .contains("add felix-v4-myprofile1 10.20.10.2 -exist"));
        assert!(d.filter.to_restore_noflush().starts_with("*filter\n"));
    }

    #[test]
    fn cleared_history_resyncs() {
        let ds = MemoryDatastore::new();
        Scenario::walkthrough().write_to(&ds).unwrap();
        let mut dp = HostDataplane::new(
            ClusterState::from_read(&ds.get("/calico", true).unwrap()),
            "hostA",
            RenderOptions::default(),
        )
        .unwrap();
        for i in 0..(crate::datastore::HISTORY_LEN + 10) {
            ds.put("/calico/v1/config/Unused", &i.to_string()).unwrap();
        }
        ds.put(
            &layout::profile_tags("myprofile2"),
            r#"["myprofile2","myprofile1"]"#,
        )
        .unwrap();
        let deltas = dp.sync_from(&ds, Duration::ZERO).unwrap();
        assert_eq!(deltas.len(), 1, "one resync");
        assert_eq!(
            dp.plan(),
            &render_host(dp.state(), "hostA", RenderOptions::default()).unwrap()
        );
        assert!(dp.plan().ipsets["felix-v4-myprofile1"]
            .members
            .contains("10.20.10.2"));
    }
}
