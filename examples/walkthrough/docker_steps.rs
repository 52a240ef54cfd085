//! §3 on the model dataplane: what Docker would send to Calico's network plugin for
//! `docker network create --driver calico --subnet=192.168.0.0/24 mynet` and `docker run
//! --net=mynet --ip 192.168.0.10 ...`, sent to calico-libnetwork's own handlers (the
//! plugin's code compiled in, one plugin per host over the shared etcd, veths faked).
//!
//! Docker itself is not run: the walkthrough's network is `global` (one network id on
//! both daemons, through `--cluster-store`), which Docker 28 only offers with swarm; here
//! both hosts' plugins see the same network id, as they did in the walkthrough.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use serde_json::{json, Value};

use calico_model::datastore::Datastore;
use calico_model::ipam_store::DatastoreBlockStore;
use calico_model::model::EndpointKey;

use crate::plugin::addresses::CalicoIpam;
use crate::plugin::driver::{Driver, DriverConfig, Scope};
use crate::plugin::links::FakeLinks;
use crate::plugin::protocol::Call;
use crate::plugin::server::Handler;

/// A Docker-looking 64-hex id derived from a name (stable, so the output is
/// reproducible; distinct prefixes, since interface names use the first 11 digits).
pub fn docker_id(name: &str) -> String {
    (0u8..4)
        .map(|round| {
            // FNV-1a, one round per 16 digits.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(round);
            for b in name.bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
            format!("{h:016x}")
        })
        .collect()
}

/// One plugin per host.
pub struct Plugins {
    drivers: BTreeMap<String, Driver>,
}

impl Plugins {
    /// Plugins for `hosts` over `store`.
    pub fn new(store: Arc<dyn Datastore>, hosts: &[&str]) -> Plugins {
        let drivers = hosts
            .iter()
            .map(|h| {
                let ipam = ipam::Ipam::new(DatastoreBlockStore::new(Arc::clone(&store)));
                let driver = Driver::new(
                    DriverConfig {
                        host: h.to_string(),
                        scope: Scope::Global,
                    },
                    Arc::clone(&store),
                    Arc::new(CalicoIpam::new(ipam)),
                    Arc::new(FakeLinks::new()),
                );
                (h.to_string(), driver)
            })
            .collect();
        Plugins { drivers }
    }

    /// Sends one call to `host`'s plugin; the answer's JSON.
    pub fn call(&self, host: &str, method: &str, body: &Value) -> anyhow::Result<Value> {
        let driver = self
            .drivers
            .get(host)
            .with_context(|| format!("no plugin on {host}"))?;
        let call = Call::parse(method, body.to_string().as_bytes())
            .map_err(|e| anyhow::anyhow!("{method}: {e}"))?;
        let reply = driver
            .handle(call)
            .map_err(|e| anyhow::anyhow!("{method}: {e}"))?;
        Ok(reply.to_json())
    }

    /// `docker network create --driver calico --subnet=<subnet> <name>` on every host
    /// (Docker's default IPAM chooses the gateway `.1`).
    pub fn create_network(
        &self,
        name: &str,
        subnet: &str,
        gateway: &str,
    ) -> anyhow::Result<String> {
        let id = docker_id(name);
        let body = json!({
            "NetworkID": id,
            "Options": {"com.docker.network.generic": {}},
            "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": subnet, "Gateway": gateway}],
            "IPv6Data": [],
        });
        for host in self.drivers.keys() {
            self.call(host, "NetworkDriver.CreateNetwork", &body)?;
        }
        Ok(id)
    }

    /// `docker run --net=<network> --ip <address>`: CreateEndpoint then Join on `host`;
    /// the endpoint's key in the datastore.
    pub fn run_container(
        &self,
        host: &str,
        network_id: &str,
        container: &str,
        address_with_prefix: &str,
    ) -> anyhow::Result<EndpointKey> {
        let endpoint_id = docker_id(&format!("{container}@{host}"));
        self.call(
            host,
            "NetworkDriver.CreateEndpoint",
            &json!({
                "NetworkID": network_id,
                "EndpointID": endpoint_id,
                "Interface": {"Address": address_with_prefix},
                "Options": {},
            }),
        )?;
        self.call(
            host,
            "NetworkDriver.Join",
            &json!({
                "NetworkID": network_id,
                "EndpointID": endpoint_id,
                "SandboxKey": format!("/var/run/docker/netns/{}", &endpoint_id[..12]),
                "Options": {},
            }),
        )?;
        Ok(EndpointKey::new(
            host,
            "libnetwork",
            "libnetwork",
            &endpoint_id,
        )?)
    }
}
