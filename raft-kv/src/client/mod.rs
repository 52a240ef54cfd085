//! A blocking client for the etcd v2 HTTP API, for any v2 server (ours or a real etcd
//! started with `--enable-v2=true`).
//!
//! It is what `examples/etcdctl` and calico-model's etcd-backed datastore talk through,
//! and it behaves like etcd's own Go v2 client (`go.etcd.io/etcd/client`), so that
//! etcdctl built on it prints what etcd's etcdctl prints:
//!
//! * **Endpoints and failover.** A [`Client`] holds a list of endpoints
//!   (`http://host:port`) and a *pinned* one. Each request goes to the pinned endpoint
//!   first; on a transport error, a per-request timeout, or an HTTP 5xx (etcd answers 500
//!   or 503 when a member has no leader) it moves on to the next endpoint, and pins the
//!   one that answered. When all fail the error is [`ClientError::ClusterUnavailable`]
//!   with one entry per attempt. [`Client::sync`] replaces the endpoints by the client
//!   URLs the cluster publishes in `/v2/members`, as etcdctl does before every command.
//! * **Non-idempotent requests** (create with `prevExist=false`, in-order POST, delete)
//!   are only sent to another endpoint when the previous attempt failed before anything
//!   was sent (connection refused, DNS); after an ambiguous failure they return
//!   [`ClientError::Endpoint`] at once, because the write may have happened. (etcd's Go
//!   client never fails these over, and does fail POSTs over; this is the safe middle.)
//! * **Timeouts.** `request_timeout` bounds each attempt (etcdctl's `--timeout`, 2 s; not
//!   applied to watches); `total_timeout` bounds a whole call including failover
//!   (etcdctl's `--total-timeout`, 5 s) and yields [`ClientError::DeadlineExceeded`].
//! * **Watches** are long polls (`wait=true`): [`Client::watch`] / [`Watcher::next`]
//!   block until an event arrives or the caller's timeout passes (`Ok(None)`); a
//!   [`Watcher`] resumes at `modifiedIndex + 1` so no event is missed between polls
//!   (as long as the server still has it in its 1000-event history; otherwise the
//!   error is errorCode 401 and the caller must re-read and start over).
//!
//! Requests are encoded exactly like the Go client's (sorted query, form bodies for
//! `value`/`ttl`/`refresh`, cleaned and percent-encoded paths; see [`http`]), and a
//! request observer ([`ClientBuilder::observer`]) sees every attempt, which is how
//! etcdctl's `--debug` prints its `curl` lines.
//!
//! Caveats and non-goals: no TLS client certificates, no v2 auth (`--username`), no DNS
//! SRV discovery; endpoints are tried in the order given (etcd's client shuffles them).
//! The client does not depend on the store or raft code of this crate.

pub mod error;
pub mod http;
mod keys;
mod members;
#[cfg(test)]
mod proptests;
pub mod types;

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use error::{ClientError, EndpointError, EtcdError};
pub use http::{go_quote, HttpRequest, HttpResponse, Transport, TransportError, UreqTransport};
pub use keys::{DeleteOptions, GetOptions, PrevExist, SetOptions, WatchOptions, Watcher};
pub use members::validate_peer_urls;
pub use types::{
    Action, Health, KeysResponse, LeaderStats, Member, Node, ResponseMeta, SelfStats, StoreStats,
    Version,
};

/// The endpoints etcdctl uses when none are given.
pub const DEFAULT_ENDPOINTS: [&str; 2] = ["http://127.0.0.1:2379", "http://127.0.0.1:4001"];

/// A callback that sees every attempt (endpoint, request) before it is sent.
pub type RequestObserver = Arc<dyn Fn(&str, &HttpRequest) + Send + Sync>;

/// Whether a request may be sent to another endpoint after an ambiguous failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Safe to repeat: fail over on any error.
    Idempotent,
    /// Fail over only when nothing was sent.
    OneShot,
}

/// Builds a [`Client`].
#[derive(Clone)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    request_timeout: Option<Duration>,
    total_timeout: Option<Duration>,
    transport: Option<Arc<dyn Transport>>,
    observer: Option<RequestObserver>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("endpoints", &self.endpoints)
            .field("request_timeout", &self.request_timeout)
            .field("total_timeout", &self.total_timeout)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// A builder for `endpoints` (`http://host:port`; `host:port` gets `http://`), with a
    /// 2 s per-request timeout and a 5 s total timeout (etcdctl's defaults).
    pub fn new<S: AsRef<str>>(endpoints: &[S]) -> ClientBuilder {
        ClientBuilder {
            endpoints: endpoints.iter().map(|e| e.as_ref().to_string()).collect(),
            request_timeout: Some(Duration::from_secs(2)),
            total_timeout: Some(Duration::from_secs(5)),
            transport: None,
            observer: None,
        }
    }

    /// Bounds each attempt on one endpoint (`None`: unbounded). Not applied to watches.
    pub fn request_timeout(mut self, timeout: Option<Duration>) -> ClientBuilder {
        self.request_timeout = timeout;
        self
    }

    /// Bounds each call, failover included (`None`: unbounded). Not applied to watches,
    /// which take their own timeout.
    pub fn total_timeout(mut self, timeout: Option<Duration>) -> ClientBuilder {
        self.total_timeout = timeout;
        self
    }

    /// Uses `transport` instead of the default `ureq` one (tests, custom TLS).
    pub fn transport(mut self, transport: Arc<dyn Transport>) -> ClientBuilder {
        self.transport = Some(transport);
        self
    }

    /// Calls `observer` before every attempt (e.g. to print `curl` commands).
    pub fn observer(mut self, observer: RequestObserver) -> ClientBuilder {
        self.observer = Some(observer);
        self
    }

    /// Validates the endpoints and builds the client.
    pub fn build(self) -> Result<Client, ClientError> {
        let endpoints = self
            .endpoints
            .iter()
            .map(|e| normalize_endpoint(e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Client {
            inner: Arc::new(Inner {
                transport: self
                    .transport
                    .unwrap_or_else(|| Arc::new(UreqTransport::new())),
                state: Mutex::new(EndpointState {
                    endpoints,
                    pinned: 0,
                }),
                request_timeout: self.request_timeout,
                total_timeout: self.total_timeout,
                observer: self.observer,
            }),
        })
    }
}

/// Checks an endpoint URL and adds `http://` when the scheme is missing.
pub fn normalize_endpoint(endpoint: &str) -> Result<String, ClientError> {
    let trimmed = endpoint.trim();
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    };
    let (scheme, rest) = with_scheme.split_once("://").ok_or_else(|| {
        ClientError::InvalidArgument(format!("parse {endpoint:?}: missing scheme"))
    })?;
    if scheme != "http" && scheme != "https" {
        return Err(ClientError::InvalidArgument(format!(
            "parse {endpoint:?}: unsupported scheme {scheme:?} (want http or https)"
        )));
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err(ClientError::InvalidArgument(format!(
            "parse {endpoint:?}: invalid host"
        )));
    }
    Ok(with_scheme)
}

#[derive(Debug)]
struct EndpointState {
    endpoints: Vec<String>,
    pinned: usize,
}

struct Inner {
    transport: Arc<dyn Transport>,
    state: Mutex<EndpointState>,
    request_timeout: Option<Duration>,
    total_timeout: Option<Duration>,
    observer: Option<RequestObserver>,
}

/// A v2 client; cheap to clone (clones share endpoints, pin and connection pool) and
/// safe to use from many threads.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.inner.state.lock();
        f.debug_struct("Client")
            .field("endpoints", &st.endpoints)
            .field("pinned", &st.pinned)
            .field("request_timeout", &self.inner.request_timeout)
            .field("total_timeout", &self.inner.total_timeout)
            .finish_non_exhaustive()
    }
}

fn min_timeout(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

impl Client {
    /// A client with etcdctl's default timeouts for `endpoints`.
    pub fn new<S: AsRef<str>>(endpoints: &[S]) -> Result<Client, ClientError> {
        ClientBuilder::new(endpoints).build()
    }

    /// The current endpoints, in failover order starting from index 0.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.state.lock().endpoints.clone()
    }

    /// Replaces the endpoints (validated) and pins the first.
    pub fn set_endpoints<S: AsRef<str>>(&self, endpoints: &[S]) -> Result<(), ClientError> {
        let eps = endpoints
            .iter()
            .map(|e| normalize_endpoint(e.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut st = self.inner.state.lock();
        st.endpoints = eps;
        st.pinned = 0;
        Ok(())
    }

    /// Fetches `/v2/members` and makes the members' client URLs the endpoints.
    ///
    /// Errors: [`ClientError::NoEndpoints`] when no member publishes a client URL (the
    /// endpoints are then left unchanged), or the error of the members call.
    pub fn sync(&self) -> Result<(), ClientError> {
        let members = self.members()?;
        let urls: Vec<String> = members
            .iter()
            .flat_map(|m| m.client_urls.iter().cloned())
            .collect();
        if urls.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let new = urls
            .iter()
            .map(|u| normalize_endpoint(u))
            .collect::<Result<Vec<_>, _>>()?;
        let mut st = self.inner.state.lock();
        let mut a = st.endpoints.clone();
        let mut b = new.clone();
        a.sort();
        b.sort();
        if a != b {
            st.endpoints = new;
            st.pinned = 0;
        }
        Ok(())
    }

    /// The deadline of a call that starts now.
    pub(crate) fn call_deadline(&self) -> Option<Instant> {
        self.inner.total_timeout.map(|t| Instant::now() + t)
    }

    /// Sends `request` with failover; returns the endpoint that answered and its
    /// (non-5xx) response.
    pub(crate) fn send(
        &self,
        request: &HttpRequest,
        retry: Retry,
        deadline: Option<Instant>,
    ) -> Result<(String, HttpResponse), ClientError> {
        let (endpoints, pinned) = {
            let st = self.inner.state.lock();
            (st.endpoints.clone(), st.pinned)
        };
        let n = endpoints.len();
        if n == 0 {
            return Err(ClientError::NoEndpoints);
        }
        let mut errors = Vec::new();
        for i in pinned..pinned + n {
            let k = i % n;
            let Some(endpoint) = endpoints.get(k) else {
                continue;
            };
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if remaining == Some(Duration::ZERO) {
                return Err(ClientError::DeadlineExceeded);
            }
            let per_request = if request.wait {
                None
            } else {
                self.inner.request_timeout
            };
            let timeout = min_timeout(per_request, remaining);
            let header_bound = match (per_request, remaining) {
                (Some(p), Some(r)) => p < r,
                (Some(_), None) => true,
                _ => false,
            };
            if let Some(observer) = &self.inner.observer {
                observer(endpoint, request);
            }
            let error = match self.inner.transport.round_trip(endpoint, request, timeout) {
                Err(e) if e.kind() == http::TransportErrorKind::Timeout => {
                    if !header_bound {
                        return Err(ClientError::DeadlineExceeded);
                    }
                    EndpointError::HeaderTimeout {
                        endpoint: endpoint.clone(),
                    }
                }
                Err(e) => EndpointError::Transport {
                    endpoint: endpoint.clone(),
                    error: e,
                },
                Ok(resp) if resp.status == 500 || resp.status == 503 => EndpointError::NoLeader {
                    endpoint: endpoint.clone(),
                    status: resp.status,
                },
                Ok(resp) if resp.status / 100 == 5 => EndpointError::ServerError {
                    endpoint: endpoint.clone(),
                    status: resp.status,
                },
                Ok(resp) => {
                    if k != pinned {
                        self.inner.state.lock().pinned = k;
                    }
                    return Ok((endpoint.clone(), resp));
                }
            };
            if retry == Retry::OneShot && !error.nothing_sent() {
                self.inner.state.lock().pinned = (k + 1) % n;
                return Err(ClientError::Endpoint(error));
            }
            errors.push(error);
        }
        Err(ClientError::ClusterUnavailable { errors })
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A scripted [`Transport`] for unit tests: canned responses per endpoint, and a log
    //! of every request sent.
    use std::collections::{HashMap, VecDeque};
    use std::time::Duration;

    use parking_lot::Mutex;

    use super::http::{HttpRequest, HttpResponse, Transport, TransportError, TransportErrorKind};

    /// What one canned attempt returns.
    pub enum Canned {
        Response(u16, Vec<(&'static str, String)>, String),
        Error(TransportErrorKind, &'static str),
    }

    /// (endpoint, "METHOD url", body, timeout) of one attempt.
    pub type Attempt = (String, String, Option<String>, Option<Duration>);

    #[derive(Default)]
    pub struct Scripted {
        pub script: Mutex<HashMap<String, VecDeque<Canned>>>,
        pub log: Mutex<Vec<Attempt>>,
    }

    impl Scripted {
        pub fn push(&self, endpoint: &str, canned: Canned) {
            self.script
                .lock()
                .entry(endpoint.to_string())
                .or_default()
                .push_back(canned);
        }

        /// (endpoint, "METHOD url", body) of every attempt.
        pub fn sent(&self) -> Vec<(String, String, Option<String>)> {
            self.log
                .lock()
                .iter()
                .map(|(e, l, b, _)| (e.clone(), l.clone(), b.clone()))
                .collect()
        }
    }

    impl Transport for Scripted {
        fn round_trip(
            &self,
            endpoint: &str,
            request: &HttpRequest,
            timeout: Option<Duration>,
        ) -> Result<HttpResponse, TransportError> {
            self.log.lock().push((
                endpoint.to_string(),
                format!("{} {}", request.method.as_str(), request.url_for(endpoint)),
                request
                    .body
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(&b.bytes).into_owned()),
                timeout,
            ));
            let next = self
                .script
                .lock()
                .get_mut(endpoint)
                .and_then(VecDeque::pop_front);
            match next {
                Some(Canned::Response(status, headers, body)) => Ok(HttpResponse {
                    status,
                    headers: headers
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                    body: body.into_bytes(),
                }),
                Some(Canned::Error(kind, msg)) => Err(TransportError::new(kind, msg)),
                None => Err(TransportError::new(
                    TransportErrorKind::Connect,
                    format!("dial tcp {endpoint}: connect: connection refused"),
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::http::TransportErrorKind;
    use super::testing::{Canned, Scripted};
    use super::*;

    fn client(script: &Arc<Scripted>, eps: &[&str]) -> Client {
        ClientBuilder::new(eps)
            .transport(script.clone())
            .build()
            .unwrap()
    }

    const MEMBERS: &str = "{\"members\":[{\"id\":\"7e4b58baca723182\",\"name\":\"node1\",\"peerURLs\":[\"http://127.0.0.1:22483\"],\"clientURLs\":[\"http://127.0.0.1:22383\"]},{\"id\":\"9fbcb430c28c28bb\",\"name\":\"\",\"peerURLs\":[\"http://127.0.0.1:22485\"],\"clientURLs\":[]},{\"id\":\"dba59c025fa4317e\",\"name\":\"node2\",\"peerURLs\":[\"http://127.0.0.1:22484\"],\"clientURLs\":[\"http://127.0.0.1:22384\"]}]}\n";

    #[test]
    fn endpoints_are_normalized_and_validated() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:2379").unwrap(),
            "http://127.0.0.1:2379"
        );
        assert_eq!(normalize_endpoint(" http://h:1 ").unwrap(), "http://h:1");
        assert!(normalize_endpoint("ftp://h:1").is_err());
        assert!(normalize_endpoint("http://").is_err());
        assert!(Client::new(&["http://a:1", "b:2"]).is_ok());
    }

    #[test]
    fn fails_over_on_connection_errors_and_pins_the_answering_endpoint() {
        let s = Arc::new(Scripted::default());
        s.push(
            "http://a:1",
            Canned::Error(
                TransportErrorKind::Connect,
                "dial tcp a:1: connect: connection refused",
            ),
        );
        s.push("http://b:2", Canned::Response(200, vec![], MEMBERS.into()));
        s.push("http://b:2", Canned::Response(200, vec![], MEMBERS.into()));
        let c = client(&s, &["http://a:1", "http://b:2"]);
        assert_eq!(c.members().unwrap().len(), 3);
        // The second call goes straight to the pinned endpoint.
        assert_eq!(c.members().unwrap().len(), 3);
        let sent: Vec<String> = s.sent().into_iter().map(|(e, _, _)| e).collect();
        assert_eq!(sent, ["http://a:1", "http://b:2", "http://b:2"]);
    }

    #[test]
    fn all_endpoints_failing_is_cluster_unavailable_with_gos_text() {
        let s = Arc::new(Scripted::default());
        s.push("http://a:1", Canned::Response(500, vec![], String::new()));
        s.push("http://b:2", Canned::Response(503, vec![], String::new()));
        let c = client(&s, &["http://a:1", "http://b:2"]);
        let err = c.members().unwrap_err();
        assert_eq!(
            err.to_string(),
            "client: etcd cluster is unavailable or misconfigured; error #0: client: etcd member http://a:1 has no leader\n; error #1: client: etcd member http://b:2 has no leader\n"
        );
        assert!(!err.is_connection_error());
    }

    #[test]
    fn one_shot_requests_stop_after_an_ambiguous_failure() {
        let s = Arc::new(Scripted::default());
        s.push("http://a:1", Canned::Response(500, vec![], String::new()));
        let c = client(&s, &["http://a:1", "http://b:2"]);
        let err = c.create("/k", "v", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "client: etcd member http://a:1 has no leader"
        );
        assert_eq!(s.sent().len(), 1);
        // ...and the next request starts on the next endpoint.
        s.push("http://b:2", Canned::Response(200, vec![], MEMBERS.into()));
        c.members().unwrap();
        assert_eq!(s.sent()[1].0, "http://b:2");
    }

    #[test]
    fn one_shot_requests_fail_over_when_nothing_was_sent() {
        let s = Arc::new(Scripted::default());
        s.push(
            "http://a:1",
            Canned::Error(
                TransportErrorKind::Connect,
                "dial tcp a:1: connect: connection refused",
            ),
        );
        s.push(
            "http://b:2",
            Canned::Response(
                201,
                vec![("X-Etcd-Index", "9".into())],
                "{\"action\":\"create\",\"node\":{\"key\":\"/k\",\"value\":\"v\",\"modifiedIndex\":9,\"createdIndex\":9}}\n".into(),
            ),
        );
        let c = client(&s, &["http://a:1", "http://b:2"]);
        let r = c.create("/k", "v", None).unwrap();
        assert_eq!(r.action, Action::Create);
        assert_eq!(r.meta.etcd_index, Some(9));
    }

    #[test]
    fn header_timeout_fails_over_but_total_timeout_stops() {
        let s = Arc::new(Scripted::default());
        s.push(
            "http://a:1",
            Canned::Error(TransportErrorKind::Timeout, "i/o timeout"),
        );
        s.push(
            "http://b:2",
            Canned::Error(TransportErrorKind::Timeout, "i/o timeout"),
        );
        let c = ClientBuilder::new(&["http://a:1", "http://b:2"])
            .transport(s.clone())
            .request_timeout(Some(Duration::from_millis(10)))
            .total_timeout(Some(Duration::from_secs(60)))
            .build()
            .unwrap();
        let err = c.members().unwrap_err();
        assert_eq!(
            err.to_string(),
            "client: etcd cluster is unavailable or misconfigured; error #0: client: endpoint http://a:1 exceeded header timeout\n; error #1: client: endpoint http://b:2 exceeded header timeout\n"
        );
        // With the total timeout shorter than the per-request one, a timeout ends the call.
        let s = Arc::new(Scripted::default());
        s.push(
            "http://a:1",
            Canned::Error(TransportErrorKind::Timeout, "i/o timeout"),
        );
        let c = ClientBuilder::new(&["http://a:1", "http://b:2"])
            .transport(s.clone())
            .request_timeout(Some(Duration::from_secs(60)))
            .total_timeout(Some(Duration::from_millis(50)))
            .build()
            .unwrap();
        assert_eq!(c.members().unwrap_err(), ClientError::DeadlineExceeded);
        assert_eq!(s.sent().len(), 1);
        let timeout = s.log.lock()[0].3.unwrap();
        assert!(timeout <= Duration::from_millis(50));
    }

    #[test]
    fn sync_replaces_endpoints_with_published_client_urls() {
        let s = Arc::new(Scripted::default());
        s.push(
            "http://seed:1",
            Canned::Response(200, vec![], MEMBERS.into()),
        );
        let c = client(&s, &["http://seed:1"]);
        c.sync().unwrap();
        assert_eq!(
            c.endpoints(),
            ["http://127.0.0.1:22383", "http://127.0.0.1:22384"]
        );
        let s = Arc::new(Scripted::default());
        s.push(
            "http://seed:1",
            Canned::Response(
                200,
                vec![],
                "{\"members\":[{\"id\":\"1\",\"name\":\"\",\"peerURLs\":[\"http://x:2\"],\"clientURLs\":[]}]}".into(),
            ),
        );
        let c = client(&s, &["http://seed:1"]);
        assert_eq!(c.sync().unwrap_err(), ClientError::NoEndpoints);
        assert_eq!(c.endpoints(), ["http://seed:1"]);
    }

    #[test]
    fn observer_sees_every_attempt() {
        let s = Arc::new(Scripted::default());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let c = ClientBuilder::new(&["http://a:1", "http://b:2"])
            .transport(s.clone())
            .observer(Arc::new(move |ep: &str, req: &HttpRequest| {
                seen2.lock().push(req.curl_command(ep));
            }))
            .build()
            .unwrap();
        let _ = c.members();
        assert_eq!(
            *seen.lock(),
            [
                "curl -X GET http://a:1/v2/members",
                "curl -X GET http://b:2/v2/members"
            ]
        );
    }

    #[test]
    fn no_endpoints() {
        let s = Arc::new(Scripted::default());
        let c = client(&s, &[]);
        assert_eq!(c.members().unwrap_err(), ClientError::NoEndpoints);
    }
}
