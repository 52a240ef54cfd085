//! The walkthrough's Calico half (§2, §3): calicoctl's own code run in-process against
//! the etcd cluster of §1, and the reachability the walkthrough checks with `docker exec
//! ... ping` — decided by the model (default) or measured with real pings between
//! network namespaces (`--dataplane netns`, see `netns.rs`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use calico_model::dataplane::sim::ClusterSim;
use calico_model::dataplane::RenderOptions;
use calico_model::model::EndpointKey;
use calico_model::policy;
use calico_model::rule::Protocol;
use calico_model::state::ClusterState;
use calico_model::store::CalicoStore;

use crate::calicoctl;
use crate::etcd_steps::Capture;

/// The runtime calicoctl uses for a host.
pub type RuntimeFor = Box<dyn Fn(&str) -> Arc<dyn calicoctl::runtime::Runtime>>;

/// Extra environment for a host's calicoctl.
pub type EnvFor = Box<dyn Fn(&str) -> Vec<(String, String)>>;

/// How calicoctl is run for one host.
pub struct Calicoctl {
    /// `ETCD_ENDPOINTS` for every command.
    pub endpoints: String,
    /// The runtime (model, or Linux with the host's namespace).
    pub runtime_for: RuntimeFor,
    /// Extra environment per host (host namespace, run/log dirs in netns mode).
    pub env_for: EnvFor,
}

impl Calicoctl {
    /// Runs `calicoctl <line>` as host `host` (its `HOSTNAME`); (status, stdout, stderr).
    pub fn run(&self, host: &str, line: &str) -> (i32, String, String) {
        let argv: Vec<String> = shell_words(line);
        let out = Capture::default();
        let err = Capture::default();
        let mut io = calicoctl::Io {
            out: Box::new(out.clone()),
            err: Box::new(err.clone()),
            stdin: Box::new(std::io::empty()),
        };
        let mut env: Vec<(String, String)> = vec![
            ("ETCD_ENDPOINTS".into(), self.endpoints.clone()),
            ("HOSTNAME".into(), host.to_string()),
        ];
        env.extend((self.env_for)(host));
        let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let overrides = calicoctl::Overrides {
            datastore: None,
            runtime: Some((self.runtime_for)(host)),
        };
        let code = calicoctl::run(&argv, &lookup, &mut io, overrides);
        (code, out.take(), err.take())
    }
}

/// Splits a command line on spaces, keeping double-quoted words together.
pub fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(cur);
    }
    words
}

/// Which containers may ping which: (from, to) → (rendered rules say, policy says).
pub type Matrix = BTreeMap<(String, String), (bool, bool)>;

/// The endpoint of a container (by workload id) in a state.
pub fn endpoint_of<'a>(state: &'a ClusterState, container: &str) -> Option<&'a EndpointKey> {
    state.endpoints.keys().find(|k| k.workload == container)
}

/// The first IPv4 address of a container's endpoint.
pub fn address_of(state: &ClusterState, container: &str) -> Option<IpAddr> {
    let key = endpoint_of(state, container)?;
    state.endpoints.get(key)?.addresses().find(IpAddr::is_ipv4)
}

/// Decides ping between every ordered pair of `containers` with the model: the felix
/// rules rendered for every host, interpreted (`ClusterSim`), beside `policy::allowed`.
pub fn model_matrix<D: calico_model::datastore::Datastore>(
    store: &CalicoStore<D>,
    containers: &[&str],
) -> anyhow::Result<Matrix> {
    let state = store.snapshot()?;
    let keyed: Vec<(&str, Option<EndpointKey>)> = containers
        .iter()
        .map(|c| (*c, endpoint_of(&state, c).cloned()))
        .collect();
    model_matrix_of(&state, &keyed)
}

/// [`model_matrix`] for endpoints named by label.
pub fn model_matrix_of(
    state: &ClusterState,
    containers: &[(&str, Option<EndpointKey>)],
) -> anyhow::Result<Matrix> {
    let sim = ClusterSim::new(
        state,
        RenderOptions {
            ipip_as_vxlan: true,
            ..RenderOptions::default()
        },
    )?;
    let mut out = Matrix::new();
    for (from, fk) in containers {
        for (to, tk) in containers {
            if from == to {
                continue;
            }
            let pair = (from.to_string(), to.to_string());
            let (Some(fk), Some(tk)) = (fk, tk) else {
                out.insert(pair, (false, false));
                continue;
            };
            let (Some(fe), Some(te)) = (state.endpoints.get(fk), state.endpoints.get(tk)) else {
                out.insert(pair, (false, false));
                continue;
            };
            let allowed = policy::allowed(state, fk, tk, Protocol::Icmp, None);
            let rendered = match policy::pick_addresses(fe, te) {
                Some((s, d)) => sim.forward(
                    (fk, fe),
                    (tk, te),
                    &policy::Packet::new(s, d, Protocol::Icmp, None),
                )?,
                None => false,
            };
            out.insert(pair, (rendered, allowed));
        }
    }
    Ok(out)
}

/// The matrix as a small table; `yes`/`no` from the first of each pair.
pub fn render_matrix(containers: &[&str], m: &Matrix) -> String {
    let w = containers.iter().map(|c| c.len()).max().unwrap_or(0).max(9) + 2;
    let mut s = format!("{:>w$}", "from \\ to");
    for c in containers {
        s.push_str(&format!("{c:>w$}"));
    }
    s.push('\n');
    for from in containers {
        s.push_str(&format!("{from:>w$}"));
        for to in containers {
            let cell = if from == to {
                "-"
            } else {
                match m.get(&(from.to_string(), to.to_string())) {
                    Some((true, _)) => "yes",
                    Some((false, _)) => "no",
                    None => "?",
                }
            };
            s.push_str(&format!("{cell:>w$}"));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_keep_quotes() {
        assert_eq!(
            shell_words(r#"set /zy/message "Hello Docker""#),
            vec!["set", "/zy/message", "Hello Docker"]
        );
        assert_eq!(shell_words("pool  show"), vec!["pool", "show"]);
    }
}
