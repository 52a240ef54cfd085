//! Building cluster states concisely — for tests, benches and demos.
//!
//! A [`Scenario`] is a list of `/calico` keys and values written exactly as the typed
//! store ([`crate::store`]) writes them; it can be turned into a [`ClusterState`] or
//! written into any [`Datastore`]. [`Scenario::walkthrough`] is the tutorial's topology:
//! hosts A (10.77.0.1) and B (10.77.0.2), pool 10.20.10.0/24, profiles myprofile1 and
//! myprofile2, centos-1 (.1, myprofile1) and centos-2 (.2, myprofile2) on A, centos-3
//! (.3, myprofile1) on B, blocks .0/26 affine to A and .64/26 to B.

use std::collections::BTreeMap;

use crate::datastore::Datastore;
use crate::error::Result;
use crate::layout;
use crate::model::{EndpointKey, MacAddr, Pool, Profile, WorkloadEndpoint};
use crate::rule::Rules;
use crate::state::ClusterState;

/// An ordered set of key/value writes. See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scenario {
    /// Key → value, as they will be written.
    pub keys: BTreeMap<String, String>,
}

impl Scenario {
    /// Nothing yet.
    pub fn new() -> Scenario {
        Scenario::default()
    }

    /// Any key.
    pub fn set(mut self, key: &str, value: &str) -> Scenario {
        self.keys.insert(key.to_string(), value.to_string());
        self
    }

    /// A registered host (bird_ip, BGP address, per-host config as calico-node writes it).
    pub fn host(self, name: &str, ipv4: &str) -> Scenario {
        self.set(&layout::host_bird_ip(name), ipv4)
            .set(&layout::bgp_host_ipv4(name), ipv4)
            .set(&layout::bgp_host_ipv6(name), "")
            .set(
                &layout::host_config(name, "DefaultEndpointToHostAction"),
                "RETURN",
            )
            .set(&layout::host_config(name, "marker"), "created")
    }

    /// A pool.
    pub fn pool(self, pool: &Pool) -> Scenario {
        self.set(&layout::pool(&pool.cidr), &pool.to_json())
    }

    /// A plain pool from a CIDR string (invalid CIDRs are skipped: scenarios are test data).
    pub fn plain_pool(self, cidr: &str) -> Scenario {
        match cidr.parse() {
            Ok(c) => self.pool(&Pool::new(c)),
            Err(_) => self,
        }
    }

    /// A profile with `calicoctl profile add`'s defaults.
    pub fn default_profile(self, name: &str) -> Scenario {
        self.profile(&Profile::with_defaults(name))
    }

    /// A profile.
    pub fn profile(self, p: &Profile) -> Scenario {
        self.set(
            &layout::profile_tags(&p.name),
            &Profile::tags_to_json(&p.tags),
        )
        .set(&layout::profile_rules(&p.name), &p.rules.to_json())
        .set(
            &layout::profile_labels(&p.name),
            &Profile::labels_to_json(&p.labels),
        )
    }

    /// A profile's rules only.
    pub fn rules(self, name: &str, rules: &Rules) -> Scenario {
        self.set(&layout::profile_rules(name), &rules.to_json())
    }

    /// An endpoint for workload `workload` on `host` with one IPv4 address; the endpoint
    /// id is derived from the workload name so the interface is `cali` + 11 characters.
    pub fn endpoint(self, host: &str, workload: &str, ipv4: &str, profiles: &[&str]) -> Scenario {
        let (key, ep) = Scenario::make_endpoint(host, workload, ipv4, profiles);
        self.set(&layout::endpoint(&key), &ep.to_json())
    }

    /// The key and endpoint [`Scenario::endpoint`] writes.
    pub fn make_endpoint(
        host: &str,
        workload: &str,
        ipv4: &str,
        profiles: &[&str],
    ) -> (EndpointKey, WorkloadEndpoint) {
        let id = endpoint_id(workload);
        let key = EndpointKey {
            host: host.into(),
            orchestrator: "docker".into(),
            workload: workload.into(),
            endpoint: id.clone(),
        };
        let nets = ipv4.parse().map(|n| vec![n]).unwrap_or_default();
        let mac = mac_for(workload);
        let mut ep = WorkloadEndpoint::new(
            &WorkloadEndpoint::interface_name_for(&id),
            Some(mac),
            nets,
            vec![],
        );
        ep.profile_ids = profiles.iter().map(|p| p.to_string()).collect();
        (key, ep)
    }

    /// A block affinity.
    pub fn affinity(self, host: &str, block: &str) -> Scenario {
        match block.parse() {
            Ok(b) => self.set(&layout::ipam_host_affinity(host, &b), ""),
            Err(_) => self,
        }
    }

    /// The tutorial's topology (see module docs).
    pub fn walkthrough() -> Scenario {
        Scenario::new()
            .set(layout::READY, "true")
            .set(&layout::global_config("InterfacePrefix"), "cali")
            .host("hostA", "10.77.0.1")
            .host("hostB", "10.77.0.2")
            // `calicoctl pool add 10.20.10.0/24 --nat-outgoing`
            .set(
                "/calico/v1/ipam/v4/pool/10.20.10.0-24",
                r#"{"cidr":"10.20.10.0/24","masquerade":true}"#,
            )
            .default_profile("myprofile1")
            .default_profile("myprofile2")
            .endpoint("hostA", "centos-1", "10.20.10.1/32", &["myprofile1"])
            .endpoint("hostA", "centos-2", "10.20.10.2/32", &["myprofile2"])
            .endpoint("hostB", "centos-3", "10.20.10.3/32", &["myprofile1"])
            .affinity("hostA", "10.20.10.0/26")
            .affinity("hostB", "10.20.10.64/26")
    }

    /// The state these keys make.
    pub fn state(&self) -> ClusterState {
        let mut s = ClusterState::new();
        for (k, v) in &self.keys {
            s.apply_key(k, Some(v));
        }
        s
    }

    /// Writes every key into a datastore.
    pub fn write_to(&self, ds: &dyn Datastore) -> Result<()> {
        for (k, v) in &self.keys {
            ds.put(k, v)?;
        }
        Ok(())
    }
}

/// A stable 32-hex endpoint id for a workload name.
pub fn endpoint_id(workload: &str) -> String {
    crate::names::to_hex(&crate::names::sha256(workload.as_bytes()))
        .chars()
        .take(32)
        .collect()
}

/// A stable container MAC for a workload name (locally administered).
pub fn mac_for(workload: &str) -> MacAddr {
    let h = crate::names::sha256(format!("mac {workload}").as_bytes());
    MacAddr([0x0e, h[0], h[1], h[2], h[3], h[4]])
}
