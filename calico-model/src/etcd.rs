//! calico-model's [`Datastore`] over an etcd v2 HTTP API — ours (`examples/etcd`,
//! `raft_kv::server`) or a real etcd 3.4 started with `--enable-v2=true` — through
//! raft-kv's blocking client. This is the datastore calicoctl, calico-node and the
//! libnetwork plugin share (feature `etcd`).
//!
//! Each trait call is one v2 request, as the table in [`crate::datastore`] says. Reads
//! use `quorum=true`: Calico's IPAM and felix's resync need linearizable reads (a stale
//! "missing block" costs IPAM a retry or a skipped block). etcd's error bodies map onto
//! the model's error variants by `errorCode` (100, 101, 102, 104, 105, 108, 401);
//! anything else — connection refused, timeouts, 5xx while a cluster has no leader — is
//! [`Error::Unavailable`] naming the request and the endpoints.
//!
//! # Which endpoints
//!
//! [`endpoints_from_env`] is how every binary of this project picks its etcd, the way
//! calicoctl 0.22 and calico-node did, first match wins:
//!
//! 1. an explicit flag value (`--etcd-endpoints http://a:2379,http://b:2379`);
//! 2. `ETCD_ENDPOINTS`, a comma-separated list of URLs;
//! 3. `ETCD_AUTHORITY`, one `host:port` (calicoctl 0.22's variable), with
//!    `ETCD_SCHEME` (`http` unless set to `https`);
//! 4. `127.0.0.1:2379` over http.
//!
//! Caveats: a watch whose long poll is cut by the caller's timeout returns `Ok(None)`
//! like a quiet poll, and the caller re-arms it from the same index. The client's
//! watch cannot say "`waitIndex=1`" (its `after_index` of 0 means "from now"), so a
//! watch from index 1 waits for the next change instead; no caller needs index 1,
//! since a store's first write is the read/watch baseline.

use std::time::Duration;

use raft_kv::client::{self, Client, ClientError, GetOptions, PrevExist, WatchOptions};

use crate::datastore::{Action, Datastore, DeleteOptions, Event, Index, Node, Read, SetOptions};
use crate::error::{Error, Result};
use crate::v2_error;

/// The default etcd client address when neither a flag nor the environment names one
/// (etcd's and calicoctl 0.22's `127.0.0.1:2379`).
pub const DEFAULT_AUTHORITY: &str = "127.0.0.1:2379";

/// The etcd endpoints a command should use: `flag` (comma-separated URLs) if given and
/// non-empty, else `ETCD_ENDPOINTS`, else `ETCD_AUTHORITY` (`host:port`, scheme from
/// `ETCD_SCHEME`, default `http`), else `http://127.0.0.1:2379`. See the module docs.
pub fn endpoints_from_env(flag: Option<&str>) -> Vec<String> {
    endpoints_from(
        flag,
        std::env::var("ETCD_ENDPOINTS").ok().as_deref(),
        std::env::var("ETCD_AUTHORITY").ok().as_deref(),
        std::env::var("ETCD_SCHEME").ok().as_deref(),
    )
}

fn split_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// [`endpoints_from_env`] with the environment passed in (testable without touching
/// the process environment).
fn endpoints_from(
    flag: Option<&str>,
    endpoints: Option<&str>,
    authority: Option<&str>,
    scheme: Option<&str>,
) -> Vec<String> {
    for list in [flag, endpoints].into_iter().flatten() {
        let urls = split_list(list);
        if !urls.is_empty() {
            return urls;
        }
    }
    let authority = authority
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .unwrap_or(DEFAULT_AUTHORITY);
    if authority.contains("://") {
        return vec![authority.to_string()];
    }
    let scheme = match scheme.map(str::trim) {
        Some("https") => "https",
        _ => "http",
    };
    vec![format!("{scheme}://{authority}")]
}

/// The etcd-backed datastore. Cloning shares the client (and its pinned endpoint).
#[derive(Clone)]
pub struct EtcdDatastore {
    client: Client,
    endpoints: String,
}

impl std::fmt::Debug for EtcdDatastore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdDatastore")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

impl EtcdDatastore {
    /// A datastore over the given client URLs (`http://127.0.0.1:2379`, ...). Nothing is
    /// sent yet: an unreachable cluster shows up as [`Error::Unavailable`] on the first
    /// call. Each request is bounded by 5 s per attempt and 15 s including failover.
    pub fn connect(endpoints: &[String]) -> Result<EtcdDatastore> {
        let joined = endpoints.join(",");
        if endpoints.is_empty() {
            return Err(Error::invalid(
                "etcd endpoints",
                "",
                "at least one client URL is needed",
            ));
        }
        let client = client::ClientBuilder::new(endpoints)
            .request_timeout(Some(Duration::from_secs(5)))
            .total_timeout(Some(Duration::from_secs(15)))
            .build()
            .map_err(|e| Error::invalid("etcd endpoints", joined.clone(), e.to_string()))?;
        Ok(EtcdDatastore {
            client,
            endpoints: joined,
        })
    }

    /// The endpoints this datastore was built with, comma-separated.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// The underlying v2 client (for member or health calls the trait does not cover).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn convert_error(&self, context: &str, key: &str, e: ClientError) -> Error {
        convert_error(context, key, &self.endpoints, e)
    }
}

fn convert_node(node: client::Node) -> Node {
    Node {
        // etcd omits the root's key.
        key: if node.key.is_empty() {
            "/".to_string()
        } else {
            node.key
        },
        value: if node.dir {
            None
        } else {
            Some(node.value.unwrap_or_default())
        },
        dir: node.dir,
        nodes: node.nodes.into_iter().map(convert_node).collect(),
        created_index: node.created_index,
        modified_index: node.modified_index,
    }
}

fn convert_action(action: client::Action) -> Action {
    match action {
        client::Action::Create => Action::Create,
        client::Action::Update => Action::Update,
        client::Action::CompareAndSwap => Action::CompareAndSwap,
        client::Action::Delete => Action::Delete,
        client::Action::CompareAndDelete => Action::CompareAndDelete,
        client::Action::Expire => Action::Expire,
        // `set`, and the kinds no write event carries (`get`, unknown ones).
        client::Action::Set | client::Action::Get | client::Action::Other(_) => Action::Set,
    }
}

fn convert_event(resp: client::KeysResponse) -> Event {
    let action = convert_action(resp.action);
    let mut node = convert_node(resp.node.unwrap_or_default());
    if action.is_delete() {
        // etcd sends no value for the node of a delete; the model says `None`.
        node.value = None;
    }
    Event {
        action,
        node,
        prev_node: resp.prev_node.map(convert_node),
    }
}

/// Maps a client error to the model's, by etcd `errorCode` where there is one.
fn convert_error(context: &str, key: &str, endpoints: &str, e: ClientError) -> Error {
    if let Some(etcd) = e.etcd() {
        if let Some(answer) =
            v2_error::from_code(etcd.error_code, &etcd.message, &etcd.cause, etcd.index, key)
        {
            return answer;
        }
    }
    Error::Unavailable {
        context: format!("{context} {key} on {endpoints}"),
        message: e.to_string(),
    }
}

impl Datastore for EtcdDatastore {
    fn get(&self, key: &str, recursive: bool) -> Result<Read> {
        let opts = GetOptions {
            recursive,
            sorted: true,
            quorum: true,
        };
        let resp = self
            .client
            .get(key, &opts)
            .map_err(|e| self.convert_error("get", key, e))?;
        let index = resp.meta.etcd_index.unwrap_or(0);
        let node = convert_node(resp.node.unwrap_or_default());
        Ok(Read { node, index })
    }

    fn set(&self, key: &str, value: &str, options: &SetOptions) -> Result<Event> {
        let opts = client::SetOptions {
            prev_value: options.prev_value.clone(),
            prev_index: options.prev_index,
            prev_exist: match options.prev_exist {
                None => PrevExist::Ignore,
                Some(true) => PrevExist::Exist,
                Some(false) => PrevExist::NotExist,
            },
            dir: options.dir,
            ..client::SetOptions::default()
        };
        self.client
            .set(key, value, &opts)
            .map(convert_event)
            .map_err(|e| self.convert_error("set", key, e))
    }

    fn delete(&self, key: &str, options: &DeleteOptions) -> Result<Event> {
        let opts = client::DeleteOptions {
            dir: options.dir,
            recursive: options.recursive,
            prev_value: options.prev_value.clone(),
            prev_index: options.prev_index,
        };
        self.client
            .delete(key, &opts)
            .map(convert_event)
            .map_err(|e| self.convert_error("delete", key, e))
    }

    fn watch(
        &self,
        key: &str,
        recursive: bool,
        wait_index: Index,
        timeout: Duration,
    ) -> Result<Option<Event>> {
        let opts = WatchOptions {
            after_index: wait_index.saturating_sub(1),
            recursive,
        };
        match self.client.watch(key, &opts, Some(timeout)) {
            Ok(event) => Ok(event.map(convert_event)),
            Err(ClientError::DeadlineExceeded) => Ok(None),
            Err(e) => Err(match self.convert_error("watch", key, e) {
                Error::EventIndexCleared { oldest, .. } => Error::EventIndexCleared {
                    requested: wait_index,
                    oldest,
                },
                other => other,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_precedence_flag_then_env_then_authority() {
        assert_eq!(
            endpoints_from(
                Some("http://a:1, http://b:2"),
                Some("http://c:3"),
                Some("d:4"),
                None
            ),
            vec!["http://a:1", "http://b:2"]
        );
        assert_eq!(
            endpoints_from(Some(""), Some("http://c:3,"), Some("d:4"), None),
            vec!["http://c:3"]
        );
        assert_eq!(
            endpoints_from(None, Some(" "), Some("d:4"), None),
            vec!["http://d:4"]
        );
        assert_eq!(
            endpoints_from(None, None, Some("d:4"), Some("https")),
            vec!["https://d:4"]
        );
        assert_eq!(
            endpoints_from(None, None, None, None),
            vec!["http://127.0.0.1:2379"]
        );
        assert_eq!(
            endpoints_from(None, None, Some("http://e:5"), None),
            vec!["http://e:5"]
        );
    }

    #[test]
    fn connect_needs_an_endpoint() {
        assert!(matches!(
            EtcdDatastore::connect(&[]),
            Err(Error::Invalid { .. })
        ));
    }

    #[test]
    fn error_codes_map_to_variants() {
        let etcd = |code: u32, cause: &str| {
            ClientError::Etcd(client::EtcdError {
                error_code: code,
                message: String::new(),
                cause: cause.to_string(),
                index: 9,
            })
        };
        for (code, want) in [(100, 100), (101, 101), (102, 102), (104, 104), (105, 105)] {
            let got = convert_error("get", "/k", "e", etcd(code, "/k"));
            assert_eq!(got.etcd_code(), Some(want), "{got}");
        }
        assert_eq!(
            convert_error("delete", "/d", "e", etcd(108, "/d")).etcd_code(),
            Some(108)
        );
        assert_eq!(
            convert_error(
                "watch",
                "/k",
                "e",
                etcd(401, "the requested history has been cleared [20/3]")
            ),
            Error::EventIndexCleared {
                requested: 3,
                oldest: 20
            }
        );
        assert!(matches!(
            convert_error("get", "/k", "e", etcd(300, "")),
            Error::Unavailable { .. }
        ));
    }
}
