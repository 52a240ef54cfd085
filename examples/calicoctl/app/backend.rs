//! Which datastore calicoctl talks to, decided as calicoctl 0.22 decided it plus one
//! default of our own:
//!
//! 1. `--etcd-endpoints=<urls>` or `ETCD_ENDPOINTS` (comma list of `http://host:port`):
//!    that etcd cluster (ours, or a real etcd with the v2 API);
//! 2. else `ETCD_AUTHORITY` (`host:port`, with `ETCD_SCHEME`, default `http`): that etcd;
//! 3. else the **embedded** store: a single-member raft-kv store in a data directory
//!    (`--data-dir` / `CALICO_DATA_DIR`; default `/var/lib/calico/datastore` as root,
//!    `$XDG_DATA_HOME/calico/datastore` or `~/.local/share/calico/datastore` otherwise).
//!    calicoctl 0.22 would have tried `127.0.0.1:2379`; set `ETCD_AUTHORITY` for that.
//!
//! The embedded store belongs to one process at a time (a lock file in the directory):
//! for calico-node agents and several hosts, run etcd.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use calico_model::datastore::Datastore;

use super::Env;

/// The chosen datastore, before it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// An etcd cluster at these client URLs.
    Etcd(Vec<String>),
    /// The embedded store in this directory.
    Embedded(PathBuf),
}

impl Selection {
    /// Decides from the flags and the environment (see the module docs).
    pub fn choose(
        etcd_flag: Option<&str>,
        data_dir_flag: Option<&str>,
        env: Env<'_>,
    ) -> anyhow::Result<Selection> {
        let list = |s: &str| -> Vec<String> {
            s.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(String::from)
                .collect()
        };
        if let Some(flag) = etcd_flag {
            let urls = list(flag);
            if urls.is_empty() {
                bail!("--etcd-endpoints is empty");
            }
            return Ok(Selection::Etcd(urls));
        }
        if let Some(urls) = env("ETCD_ENDPOINTS").map(|s| list(&s)) {
            if !urls.is_empty() {
                let scheme = |u: &str| u.split("://").next().unwrap_or("").to_string();
                let first = scheme(&urls[0]);
                if urls
                    .iter()
                    .any(|u| scheme(u) != first || !u.contains("://"))
                {
                    bail!("ETCD_ENDPOINTS must all use the same scheme (http:// or https://)");
                }
                return Ok(Selection::Etcd(urls));
            }
        }
        if let Some(authority) = env("ETCD_AUTHORITY").filter(|a| !a.is_empty()) {
            let scheme = env("ETCD_SCHEME").unwrap_or_else(|| "http".into());
            if scheme != "http" && scheme != "https" {
                bail!("Invalid ETCD_SCHEME value {scheme:?}: it must be http or https");
            }
            return Ok(Selection::Etcd(vec![format!("{scheme}://{authority}")]));
        }
        let dir = match data_dir_flag
            .map(String::from)
            .or_else(|| env("CALICO_DATA_DIR"))
        {
            Some(d) => PathBuf::from(d),
            None => default_data_dir(env),
        };
        Ok(Selection::Embedded(dir))
    }

    /// Opens it.
    pub fn open(&self) -> anyhow::Result<Arc<dyn Datastore>> {
        match self {
            Selection::Etcd(urls) => Ok(Arc::new(
                calico_model::etcd::EtcdDatastore::connect(urls)
                    .with_context(|| format!("connecting to etcd at {}", urls.join(",")))?,
            )),
            Selection::Embedded(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating the data directory {}", dir.display()))?;
                Ok(Arc::new(
                    calico_model::embedded::EmbeddedDatastore::open(dir).with_context(|| {
                        format!("opening the embedded datastore in {}", dir.display())
                    })?,
                ))
            }
        }
    }

    /// Whether this is etcd (for error wording).
    pub fn is_etcd(&self) -> bool {
        matches!(self, Selection::Etcd(_))
    }
}

/// Whether this process runs as root (effective uid 0, from `/proc/self/status`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// The embedded store's default directory (see the module docs).
pub fn default_data_dir(env: Env<'_>) -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/calico/datastore");
    }
    if let Some(xdg) = env("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(xdg).join("calico/datastore");
    }
    match env("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/calico/datastore"),
        None => PathBuf::from("calico.datastore"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn flag_then_endpoints_then_authority_then_embedded() {
        let env = env_of(&[
            ("ETCD_ENDPOINTS", "http://a:1,http://b:2"),
            ("ETCD_AUTHORITY", "c:3"),
        ]);
        assert_eq!(
            Selection::choose(Some("http://x:9"), None, &env).unwrap(),
            Selection::Etcd(vec!["http://x:9".into()])
        );
        assert_eq!(
            Selection::choose(None, None, &env).unwrap(),
            Selection::Etcd(vec!["http://a:1".into(), "http://b:2".into()])
        );
        let env = env_of(&[("ETCD_AUTHORITY", "c:3")]);
        assert_eq!(
            Selection::choose(None, None, &env).unwrap(),
            Selection::Etcd(vec!["http://c:3".into()])
        );
        let env = env_of(&[("ETCD_AUTHORITY", "c:3"), ("ETCD_SCHEME", "ftp")]);
        assert!(Selection::choose(None, None, &env).is_err());
        let env = env_of(&[("CALICO_DATA_DIR", "/tmp/x")]);
        assert_eq!(
            Selection::choose(None, None, &env).unwrap(),
            Selection::Embedded(PathBuf::from("/tmp/x"))
        );
        assert_eq!(
            Selection::choose(None, Some("/tmp/y"), &env).unwrap(),
            Selection::Embedded(PathBuf::from("/tmp/y"))
        );
        let env = env_of(&[("ETCD_ENDPOINTS", "http://a:1,https://b:2")]);
        assert!(Selection::choose(None, None, &env).is_err());
    }
}
