//! The agent loop: felix (render + apply the host plan, kept current from watch events)
//! and confd (BIRD's configuration) for one host, over any [`Datastore`].
//!
//! 1. [`Agent::start`] registers the host (`CalicoStore::register_host`, after
//!    `ensure_global_config`), reads `/calico` recursively, renders this host's plan and
//!    applies it whole.
//! 2. [`Agent::step`] waits (bounded) for watch events after the state's index, turns
//!    each into a [`PlanDelta`] through `HostDataplane` and applies it — incremental for
//!    endpoint and profile changes, the whole plan for host-wide ones. A 401 (history
//!    cleared) re-reads everything. Interfaces the plan names but the kernel does not
//!    have yet are retried every second, and the whole plan is re-read and re-applied
//!    every `resync` period to repair drift.
//! 3. When this host's registration disappears (`calicoctl node remove`), the agent
//!    removes everything it owns and reports [`Step::HostRemoved`].
//! 4. [`Agent::cleanup`] removes the chains, sets, routes and tunnel it owns (and BIRD's
//!    routes); the default on exit is to leave the dataplane programmed, as felix does.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use calico_model::dataplane::incremental::{HostDataplane, PlanDelta};
use calico_model::dataplane::{RenderOptions, Routing};
use calico_model::datastore::Datastore;
use calico_model::layout;
use calico_model::linux::{Applier, IptablesBackend, Netns};
use calico_model::model::Host;
use calico_model::state::ClusterState;
use calico_model::store::CalicoStore;
use calico_model::Error;

use crate::bird::Bird;

/// What the agent was told on the command line.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Calico host name.
    pub name: String,
    /// The host's IPv4 (BGP router id, next hop of its workloads).
    pub ip: Ipv4Addr,
    /// Its IPv6, if any (also turns on the IPv6 filter table).
    pub ip6: Option<Ipv6Addr>,
    /// Its own AS number (`None`: the global one).
    pub as_number: Option<u32>,
    /// Route source.
    pub routing: Routing,
    /// Render IP-in-IP pools as VXLAN.
    pub ipip_as_vxlan: bool,
    /// iptables implementation.
    pub backend: IptablesBackend,
    /// Where BIRD's files go.
    pub run_dir: PathBuf,
    /// Full re-read and re-apply period.
    pub resync: Duration,
}

/// What one [`Agent::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing changed.
    Idle,
    /// The dataplane was updated.
    Applied,
    /// This host's registration is gone; the agent removed what it owned.
    HostRemoved,
}

/// One host's felix + confd.
pub struct Agent<D: Datastore> {
    config: AgentConfig,
    store: CalicoStore<D>,
    applier: Applier,
    dataplane: HostDataplane,
    bird: Option<Bird>,
    /// Interfaces the last apply could not find yet: retry at this time.
    retry_at: Option<Instant>,
    resync_at: Instant,
}

fn uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().replace('-', ""))
        .unwrap_or_else(|_| format!("{:x}", std::process::id()))
}

impl<D: Datastore> Agent<D> {
    /// Registers the host and programs its plan (see the module docs).
    pub fn start(config: AgentConfig, datastore: D) -> anyhow::Result<Agent<D>> {
        let store = CalicoStore::new(datastore);
        store
            .ensure_global_config(&uuid())
            .context("writing Calico's global configuration")?;
        store
            .register_host(&Host {
                name: config.name.clone(),
                ipv4: config.ip,
                ipv6: config.ip6,
                as_number: config.as_number,
            })
            .with_context(|| format!("registering host {}", config.name))?;
        tracing::info!(host = %config.name, ip = %config.ip, "host registered");

        let here = Netns::current();
        // Proxy ARP answers for 169.254.1.1 only if the host routes it somewhere else; a
        // host without a default route (a bare namespace) gets it on `lo`.
        let default_route = here
            .ip(&["-4", "route", "show", "default"])
            .context("reading the default route")?;
        let opts = RenderOptions {
            routing: config.routing,
            ipip_as_vxlan: config.ipip_as_vxlan,
            gateway_route_via_lo: default_route.trim().is_empty(),
        };
        if opts.gateway_route_via_lo {
            tracing::info!("no default route: routing 169.254.1.1 via lo for proxy ARP");
        }
        let applier = Applier::new(here, config.backend, config.ip6.is_some());
        let read = store
            .datastore()
            .get(layout::CALICO_ROOT, true)
            .context("reading /calico")?;
        let state = ClusterState::from_read(&read);
        let dataplane = HostDataplane::new(state, &config.name, opts)
            .with_context(|| format!("rendering the plan of {}", config.name))?;
        let bird = (config.routing == Routing::Bird).then(|| Bird::new(&config.run_dir));
        let mut agent = Agent {
            resync_at: Instant::now() + config.resync,
            config,
            store,
            applier,
            dataplane,
            bird,
            retry_at: None,
        };
        agent.apply_all().context("programming the dataplane")?;
        Ok(agent)
    }

    fn report_plan_warnings(&self) {
        for w in &self.dataplane.plan().warnings {
            tracing::warn!("{w}");
        }
        for (key, problem) in self.dataplane.state().problems.iter().take(20) {
            tracing::warn!(%key, "ignored: {problem}");
        }
    }

    /// Applies the whole plan (and BIRD's configuration).
    fn apply_all(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let report = self
            .applier
            .apply(self.dataplane.plan())
            .map_err(|e| self.explain(e))?;
        self.retry_at = (!report.missing_interfaces.is_empty())
            .then(|| Instant::now() + Duration::from_secs(1));
        if !report.missing_interfaces.is_empty() {
            tracing::info!(
                interfaces = ?report.missing_interfaces,
                "waiting for workload interfaces to appear"
            );
        }
        self.sync_bird()?;
        let plan = self.dataplane.plan();
        tracing::info!(
            index = self.dataplane.state().index,
            interfaces = plan.interfaces.len(),
            routes = plan.routes.len(),
            ipsets = plan.ipsets.len(),
            stale_chains = report.stale_chains,
            stale_routes = report.stale_routes,
            ms = started.elapsed().as_millis() as u64,
            "dataplane programmed"
        );
        self.report_plan_warnings();
        Ok(())
    }

    fn sync_bird(&mut self) -> anyhow::Result<()> {
        if let (Some(bird), Some(conf)) = (&mut self.bird, &self.dataplane.plan().bird_conf) {
            bird.ensure(conf)?;
        }
        Ok(())
    }

    fn explain(&self, e: Error) -> anyhow::Error {
        match e {
            Error::Unsupported { .. } => anyhow::anyhow!(
                "{e}\nhint: run calico-node with --encap vxlan (the default) to carry IP-in-IP pools over VXLAN"
            ),
            other => anyhow::Error::new(other),
        }
    }

    fn host_registered(&self) -> bool {
        self.dataplane
            .state()
            .hosts
            .get(&self.config.name)
            .is_some_and(|h| h.bird_ip.is_some() || !h.config.is_empty())
    }

    /// Waits up to `wait` for changes and programs them. See the module docs.
    pub fn step(&mut self, wait: Duration) -> anyhow::Result<Step> {
        let now = Instant::now();
        if now >= self.resync_at {
            self.resync_at = now + self.config.resync;
            return self.resync().map(|()| Step::Applied);
        }
        let wait = match self.retry_at {
            Some(at) => wait.min(at.saturating_duration_since(now)),
            None => wait,
        };
        let deltas = self
            .dataplane
            .sync_from(self.store.datastore(), wait)
            .context("following the datastore")?;
        if !self.host_registered() {
            tracing::warn!(host = %self.config.name, "this host was removed from the datastore; removing its dataplane");
            self.cleanup()?;
            return Ok(Step::HostRemoved);
        }
        let changed: Vec<&PlanDelta> = deltas.iter().filter(|d| !d.is_empty()).collect();
        if changed.is_empty() {
            if self.retry_at.is_some_and(|at| Instant::now() >= at) {
                self.apply_all()?;
                return Ok(Step::Applied);
            }
            return Ok(Step::Idle);
        }
        let started = Instant::now();
        if changed.iter().any(|d| d.global) || self.retry_at.is_some() {
            self.apply_all()?;
        } else {
            for delta in &changed {
                if let Err(e) = self.applier.apply_delta(delta, self.dataplane.plan()) {
                    // A delta that does not fit the kernel's state (someone changed it
                    // behind our back): program the whole plan instead.
                    tracing::warn!(error = %e, "incremental update failed; applying the whole plan");
                    self.apply_all()?;
                    return Ok(Step::Applied);
                }
            }
            let count = changed.len();
            // New interfaces may have been listed before their veth exists.
            let links = self.applier.netns().links().unwrap_or_default();
            if self
                .dataplane
                .plan()
                .interfaces
                .keys()
                .any(|i| !links.contains(i))
            {
                self.retry_at = Some(Instant::now() + Duration::from_secs(1));
            }
            self.sync_bird()?;
            tracing::info!(
                index = self.dataplane.state().index,
                deltas = count,
                interfaces = self.dataplane.plan().interfaces.len(),
                ms = started.elapsed().as_millis() as u64,
                "dataplane updated"
            );
        }
        Ok(Step::Applied)
    }

    /// Re-reads everything and programs the whole plan.
    pub fn resync(&mut self) -> anyhow::Result<()> {
        let read = self
            .store
            .datastore()
            .get(layout::CALICO_ROOT, true)
            .context("reading /calico")?;
        self.dataplane
            .reset(ClusterState::from_read(&read))
            .context("rendering the plan")?;
        self.apply_all()
    }

    /// Removes everything this agent owns from the namespace and stops BIRD.
    pub fn cleanup(&mut self) -> anyhow::Result<()> {
        if let Some(bird) = &mut self.bird {
            bird.stop();
            // BIRD's kernel protocol keeps (`persist`) the routes it learned.
            let _ = self
                .applier
                .netns()
                .ip(&["route", "flush", "proto", "bird"]);
        }
        self.applier
            .remove()
            .context("removing the dataplane this agent programmed")?;
        tracing::info!("removed the chains, ipsets, routes and tunnel this agent owned");
        Ok(())
    }

    /// Stops BIRD (the dataplane stays as programmed).
    pub fn stop(&mut self) {
        if let Some(bird) = &mut self.bird {
            bird.stop();
        }
    }
}
