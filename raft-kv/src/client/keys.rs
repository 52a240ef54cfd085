//! The keys API (`/v2/keys`): get, set and its conditional forms, delete, in-order
//! create, and watches.
//!
//! Each operation builds the same request etcd's Go client builds (see the table in
//! §11.2 of the v2 spec): `value`, `ttl` and `refresh` travel in a form body, every other
//! parameter in the query string. Responses become [`KeysResponse`]s with the cluster
//! headers attached; error bodies become [`ClientError::Etcd`].

use std::time::{Duration, Instant};

use super::error::{ClientError, EtcdError};
use super::http::{encode_form, Body, HttpRequest, HttpResponse, Method};
use super::types::{KeysBody, KeysResponse, ResponseMeta};
use super::{Client, Retry};

const FORM: &str = "application/x-www-form-urlencoded";

/// The `prevExist` condition of a write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PrevExist {
    /// No condition (plain `set`).
    #[default]
    Ignore,
    /// The key must exist (`update`).
    Exist,
    /// The key must not exist (`create`).
    NotExist,
}

/// Options of [`Client::get`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GetOptions {
    /// List the whole subtree of a directory.
    pub recursive: bool,
    /// Sort each listed level by key.
    pub sorted: bool,
    /// Read through consensus (linearizable).
    pub quorum: bool,
}

/// Options of [`Client::set`]; the defaults are a plain unconditional set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetOptions {
    /// Time to live in seconds (`None`: permanent; note every write without a TTL makes
    /// the node permanent).
    pub ttl: Option<u64>,
    /// Compare-and-swap on the current value (ignored when empty or with `dir`).
    pub prev_value: Option<String>,
    /// Compare-and-swap on the current `modifiedIndex` (`0`/`None`: no condition).
    pub prev_index: Option<u64>,
    /// Existence condition.
    pub prev_exist: PrevExist,
    /// Create a directory instead of a file (the value is not sent).
    pub dir: bool,
    /// Only reset the TTL, keeping the value (needs `ttl`; the value is not sent).
    pub refresh: bool,
    /// Ask for a body without nodes (`{"action":"set"}`).
    pub no_value_on_success: bool,
}

/// Options of [`Client::delete`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// Allow deleting an empty directory.
    pub dir: bool,
    /// Delete a directory with everything below it (implies `dir`).
    pub recursive: bool,
    /// Compare-and-delete on the current value (ignored when empty).
    pub prev_value: Option<String>,
    /// Compare-and-delete on the current `modifiedIndex` (`0`/`None`: no condition).
    pub prev_index: Option<u64>,
}

/// Options of a watch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// Return the first matching event with an index greater than this (`0`: the next
    /// change from now). etcdctl's `--after-index`.
    pub after_index: u64,
    /// Also fire for changes below the key.
    pub recursive: bool,
}

/// `/v2/keys` + key, with the leading `/` the Go client adds.
fn keys_path(key: &str) -> String {
    if key.is_empty() || key.starts_with('/') {
        format!("/v2/keys{key}")
    } else {
        format!("/v2/keys/{key}")
    }
}

fn bool_str(b: bool) -> String {
    if b { "true" } else { "false" }.to_string()
}

fn form_body(pairs: &[(&str, String)]) -> Body {
    Body {
        content_type: FORM,
        bytes: encode_form(pairs).into_bytes(),
    }
}

/// The request of [`Client::get`].
pub(crate) fn get_request(key: &str, opts: &GetOptions) -> HttpRequest {
    let query = encode_form(&[
        ("recursive", bool_str(opts.recursive)),
        ("sorted", bool_str(opts.sorted)),
        ("quorum", bool_str(opts.quorum)),
    ]);
    HttpRequest::new(Method::Get, keys_path(key), query)
}

/// The request of [`Client::set`].
pub(crate) fn set_request(key: &str, value: &str, opts: &SetOptions) -> HttpRequest {
    let mut params: Vec<(&str, String)> = Vec::new();
    let mut form: Vec<(&str, String)> = Vec::new();
    if opts.dir {
        params.push(("dir", "true".into()));
    } else {
        if let Some(pv) = opts.prev_value.as_ref().filter(|v| !v.is_empty()) {
            params.push(("prevValue", pv.clone()));
        }
        if !opts.refresh {
            form.push(("value", value.to_string()));
        }
    }
    if let Some(pi) = opts.prev_index.filter(|i| *i != 0) {
        params.push(("prevIndex", pi.to_string()));
    }
    match opts.prev_exist {
        PrevExist::Ignore => {}
        PrevExist::Exist => params.push(("prevExist", "true".into())),
        PrevExist::NotExist => params.push(("prevExist", "false".into())),
    }
    if let Some(ttl) = opts.ttl {
        form.push(("ttl", ttl.to_string()));
    }
    if opts.refresh {
        form.push(("refresh", "true".into()));
    }
    if opts.no_value_on_success {
        params.push(("noValueOnSuccess", "true".into()));
    }
    let mut req = HttpRequest::new(Method::Put, keys_path(key), encode_form(&params));
    req.body = Some(form_body(&form));
    req
}

/// The request of [`Client::delete`].
pub(crate) fn delete_request(key: &str, opts: &DeleteOptions) -> HttpRequest {
    let mut params: Vec<(&str, String)> = Vec::new();
    if let Some(pv) = opts.prev_value.as_ref().filter(|v| !v.is_empty()) {
        params.push(("prevValue", pv.clone()));
    }
    if let Some(pi) = opts.prev_index.filter(|i| *i != 0) {
        params.push(("prevIndex", pi.to_string()));
    }
    if opts.dir {
        params.push(("dir", "true".into()));
    }
    if opts.recursive {
        params.push(("recursive", "true".into()));
    }
    HttpRequest::new(Method::Delete, keys_path(key), encode_form(&params))
}

/// The request of [`Client::create_in_order`].
pub(crate) fn create_in_order_request(dir: &str, value: &str, ttl: Option<u64>) -> HttpRequest {
    let mut form = vec![("value", value.to_string())];
    if let Some(ttl) = ttl {
        form.push(("ttl", ttl.to_string()));
    }
    let mut req = HttpRequest::new(Method::Post, keys_path(dir), String::new());
    req.body = Some(form_body(&form));
    req
}

/// The long-poll request of a watch waiting for index `wait_index` (0: next change).
pub(crate) fn watch_request(key: &str, wait_index: u64, recursive: bool) -> HttpRequest {
    let query = encode_form(&[
        ("wait", "true".into()),
        ("waitIndex", wait_index.to_string()),
        ("recursive", bool_str(recursive)),
    ]);
    let mut req = HttpRequest::new(Method::Get, keys_path(key), query);
    req.wait = true;
    req
}

fn parse_index_header(
    endpoint: &str,
    resp: &HttpResponse,
    name: &str,
) -> Result<Option<u64>, ClientError> {
    match resp.header(name) {
        None | Some("") => Ok(None),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| ClientError::InvalidResponse {
                endpoint: endpoint.to_string(),
                message: format!("strconv.ParseUint: parsing {v:?}: invalid syntax"),
            }),
    }
}

/// The cluster headers of `resp`.
pub(crate) fn response_meta(
    endpoint: &str,
    resp: &HttpResponse,
) -> Result<ResponseMeta, ClientError> {
    Ok(ResponseMeta {
        etcd_index: parse_index_header(endpoint, resp, "X-Etcd-Index")?,
        raft_index: parse_index_header(endpoint, resp, "X-Raft-Index")?,
        raft_term: parse_index_header(endpoint, resp, "X-Raft-Term")?,
        cluster_id: resp
            .header("X-Etcd-Cluster-Id")
            .filter(|v| !v.is_empty())
            .map(str::to_string),
    })
}

fn invalid_json(endpoint: &str) -> ClientError {
    ClientError::InvalidResponse {
        endpoint: endpoint.to_string(),
        message: "client: response is invalid json. The endpoint is probably not valid etcd cluster endpoint.".to_string(),
    }
}

/// Decodes a keys response: `Ok(None)` for a success with an empty body (a watch the
/// server closed without an event), an etcd error for non-2xx statuses.
pub(crate) fn decode_keys_response(
    endpoint: &str,
    resp: &HttpResponse,
) -> Result<Option<KeysResponse>, ClientError> {
    match resp.status {
        200 | 201 => {
            if resp.body.is_empty() {
                return Ok(None);
            }
            let body: KeysBody =
                serde_json::from_slice(&resp.body).map_err(|_| invalid_json(endpoint))?;
            Ok(Some(KeysResponse {
                action: body.action,
                node: body.node,
                prev_node: body.prev_node,
                meta: response_meta(endpoint, resp)?,
                status: resp.status,
            }))
        }
        _ => {
            let err: EtcdError =
                serde_json::from_slice(&resp.body).map_err(|_| invalid_json(endpoint))?;
            Err(ClientError::Etcd(err))
        }
    }
}

/// Follows a key: each [`Watcher::next`] returns the next event after the previous one.
#[derive(Debug, Clone)]
pub struct Watcher {
    client: Client,
    key: String,
    recursive: bool,
    wait_index: u64,
}

impl Watcher {
    /// The index the next poll asks for (0: the next change from now).
    pub fn wait_index(&self) -> u64 {
        self.wait_index
    }

    /// Blocks until the next event or until `timeout` passes (`Ok(None)`; the watcher
    /// stays usable). `None` waits forever.
    pub fn next(&mut self, timeout: Option<Duration>) -> Result<Option<KeysResponse>, ClientError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let req = watch_request(&self.key, self.wait_index, self.recursive);
            let (endpoint, resp) = match self.client.send(&req, Retry::Idempotent, deadline) {
                Ok(r) => r,
                Err(ClientError::DeadlineExceeded) => return Ok(None),
                Err(e) => return Err(e),
            };
            if let Some(event) = decode_keys_response(&endpoint, &resp)? {
                if let Some(node) = &event.node {
                    self.wait_index = node.modified_index.saturating_add(1);
                }
                return Ok(Some(event));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
    }
}

impl Client {
    fn keys_call(&self, req: &HttpRequest, retry: Retry) -> Result<KeysResponse, ClientError> {
        let (endpoint, resp) = self.send(req, retry, self.call_deadline())?;
        decode_keys_response(&endpoint, &resp)?.ok_or(ClientError::InvalidResponse {
            endpoint,
            message: "client: response body is empty".to_string(),
        })
    }

    /// Reads a key or lists a directory.
    pub fn get(&self, key: &str, opts: &GetOptions) -> Result<KeysResponse, ClientError> {
        self.keys_call(&get_request(key, opts), Retry::Idempotent)
    }

    /// Writes a key with any combination of conditions (see [`SetOptions`]).
    ///
    /// A create (`PrevExist::NotExist`) is not retried on another endpoint after an
    /// ambiguous failure.
    pub fn set(
        &self,
        key: &str,
        value: &str,
        opts: &SetOptions,
    ) -> Result<KeysResponse, ClientError> {
        let retry = if opts.prev_exist == PrevExist::NotExist {
            Retry::OneShot
        } else {
            Retry::Idempotent
        };
        self.keys_call(&set_request(key, value, opts), retry)
    }

    /// Creates a file that must not exist yet (errorCode 105 otherwise).
    pub fn create(
        &self,
        key: &str,
        value: &str,
        ttl: Option<u64>,
    ) -> Result<KeysResponse, ClientError> {
        self.set(
            key,
            value,
            &SetOptions {
                ttl,
                prev_exist: PrevExist::NotExist,
                ..SetOptions::default()
            },
        )
    }

    /// Replaces the value of an existing key (errorCode 100 if missing), keeping its
    /// `createdIndex`.
    pub fn update(
        &self,
        key: &str,
        value: &str,
        ttl: Option<u64>,
    ) -> Result<KeysResponse, ClientError> {
        self.set(
            key,
            value,
            &SetOptions {
                ttl,
                prev_exist: PrevExist::Exist,
                ..SetOptions::default()
            },
        )
    }

    /// Compare-and-swap: writes `value` only if the current value is `prev_value` and/or
    /// the current `modifiedIndex` is `prev_index` (errorCode 101 otherwise).
    pub fn compare_and_swap(
        &self,
        key: &str,
        value: &str,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
        ttl: Option<u64>,
    ) -> Result<KeysResponse, ClientError> {
        if prev_value.is_none_or(str::is_empty) && prev_index.is_none_or(|i| i == 0) {
            return Err(ClientError::InvalidArgument(
                "compare-and-swap needs a non-empty prevValue or a non-zero prevIndex".into(),
            ));
        }
        self.set(
            key,
            value,
            &SetOptions {
                ttl,
                prev_value: prev_value.map(str::to_string),
                prev_index,
                ..SetOptions::default()
            },
        )
    }

    /// Creates a directory that must not exist yet.
    pub fn mkdir(&self, key: &str, ttl: Option<u64>) -> Result<KeysResponse, ClientError> {
        self.set(
            key,
            "",
            &SetOptions {
                ttl,
                dir: true,
                prev_exist: PrevExist::NotExist,
                ..SetOptions::default()
            },
        )
    }

    /// Resets the TTL of an existing key or directory without changing its value and
    /// without waking watchers.
    pub fn refresh(&self, key: &str, ttl: u64) -> Result<KeysResponse, ClientError> {
        self.set(
            key,
            "",
            &SetOptions {
                ttl: Some(ttl),
                refresh: true,
                prev_exist: PrevExist::Exist,
                ..SetOptions::default()
            },
        )
    }

    /// Deletes a key or directory (see [`DeleteOptions`]); not retried on another
    /// endpoint after an ambiguous failure.
    pub fn delete(&self, key: &str, opts: &DeleteOptions) -> Result<KeysResponse, ClientError> {
        self.keys_call(&delete_request(key, opts), Retry::OneShot)
    }

    /// Compare-and-delete: deletes the file only if its value is `prev_value` and/or its
    /// `modifiedIndex` is `prev_index`.
    pub fn compare_and_delete(
        &self,
        key: &str,
        prev_value: Option<&str>,
        prev_index: Option<u64>,
    ) -> Result<KeysResponse, ClientError> {
        if prev_value.is_none_or(str::is_empty) && prev_index.is_none_or(|i| i == 0) {
            return Err(ClientError::InvalidArgument(
                "compare-and-delete needs a non-empty prevValue or a non-zero prevIndex".into(),
            ));
        }
        self.delete(
            key,
            &DeleteOptions {
                prev_value: prev_value.map(str::to_string),
                prev_index,
                ..DeleteOptions::default()
            },
        )
    }

    /// Creates an in-order child of `dir` (named by its index, zero-padded to 20 digits);
    /// not retried on another endpoint after an ambiguous failure.
    pub fn create_in_order(
        &self,
        dir: &str,
        value: &str,
        ttl: Option<u64>,
    ) -> Result<KeysResponse, ClientError> {
        self.keys_call(&create_in_order_request(dir, value, ttl), Retry::OneShot)
    }

    /// Waits for one event on `key` (see [`WatchOptions`]); `Ok(None)` when `timeout`
    /// passes first (`None`: wait forever).
    pub fn watch(
        &self,
        key: &str,
        opts: &WatchOptions,
        timeout: Option<Duration>,
    ) -> Result<Option<KeysResponse>, ClientError> {
        self.watcher(key, opts).next(timeout)
    }

    /// A [`Watcher`] that returns successive events on `key`.
    pub fn watcher(&self, key: &str, opts: &WatchOptions) -> Watcher {
        Watcher {
            client: self.clone(),
            key: key.to_string(),
            recursive: opts.recursive,
            wait_index: if opts.after_index > 0 {
                opts.after_index.saturating_add(1)
            } else {
                0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::error::{ERR_KEY_NOT_FOUND, ERR_TEST_FAILED};
    use super::super::testing::{Canned, Scripted};
    use super::super::types::Action;
    use super::super::ClientBuilder;
    use super::*;

    const EP: &str = "http://127.0.0.1:2379";

    fn url(req: &HttpRequest) -> String {
        req.url_for(EP)
    }

    fn body(req: &HttpRequest) -> Option<String> {
        req.body
            .as_ref()
            .map(|b| String::from_utf8(b.bytes.clone()).unwrap())
    }

    #[test]
    fn requests_match_the_go_clients() {
        // The table of §11.2 (observed with etcdctl --debug).
        let get = get_request("/a", &GetOptions::default());
        assert_eq!(
            url(&get),
            format!("{EP}/v2/keys/a?quorum=false&recursive=false&sorted=false")
        );
        let ls = get_request(
            "/",
            &GetOptions {
                recursive: true,
                sorted: true,
                quorum: true,
            },
        );
        assert_eq!(
            url(&ls),
            format!("{EP}/v2/keys/?quorum=true&recursive=true&sorted=true")
        );

        let set = set_request(
            "/a/b",
            "1",
            &SetOptions {
                ttl: Some(30),
                ..SetOptions::default()
            },
        );
        assert_eq!(url(&set), format!("{EP}/v2/keys/a/b"));
        assert_eq!(body(&set).as_deref(), Some("ttl=30&value=1"));

        let swap = set_request(
            "k",
            "v 2",
            &SetOptions {
                prev_value: Some("x y".into()),
                prev_index: Some(7),
                ..SetOptions::default()
            },
        );
        assert_eq!(
            url(&swap),
            format!("{EP}/v2/keys/k?prevIndex=7&prevValue=x+y")
        );
        assert_eq!(body(&swap).as_deref(), Some("value=v+2"));

        let mk = set_request(
            "/k",
            "v",
            &SetOptions {
                prev_exist: PrevExist::NotExist,
                ..SetOptions::default()
            },
        );
        assert_eq!(url(&mk), format!("{EP}/v2/keys/k?prevExist=false"));

        let mkdir = set_request(
            "/d",
            "",
            &SetOptions {
                dir: true,
                prev_exist: PrevExist::NotExist,
                ..SetOptions::default()
            },
        );
        assert_eq!(
            url(&mkdir),
            format!("{EP}/v2/keys/d?dir=true&prevExist=false")
        );
        assert_eq!(body(&mkdir).as_deref(), Some(""));

        let updatedir = set_request(
            "/d",
            "",
            &SetOptions {
                dir: true,
                ttl: Some(5),
                prev_exist: PrevExist::Exist,
                ..SetOptions::default()
            },
        );
        assert_eq!(
            url(&updatedir),
            format!("{EP}/v2/keys/d?dir=true&prevExist=true")
        );
        assert_eq!(body(&updatedir).as_deref(), Some("ttl=5"));

        let refresh = set_request(
            "/k",
            "ignored",
            &SetOptions {
                ttl: Some(9),
                refresh: true,
                prev_exist: PrevExist::Exist,
                ..SetOptions::default()
            },
        );
        assert_eq!(body(&refresh).as_deref(), Some("refresh=true&ttl=9"));

        let rm = delete_request(
            "/d",
            &DeleteOptions {
                recursive: true,
                ..DeleteOptions::default()
            },
        );
        assert_eq!(url(&rm), format!("{EP}/v2/keys/d?recursive=true"));
        assert!(rm.body.is_none());
        let cad = delete_request(
            "/k",
            &DeleteOptions {
                prev_value: Some("v".into()),
                prev_index: Some(3),
                ..DeleteOptions::default()
            },
        );
        assert_eq!(url(&cad), format!("{EP}/v2/keys/k?prevIndex=3&prevValue=v"));

        let post = create_in_order_request("/queue", "job", None);
        assert_eq!(post.method, Method::Post);
        assert_eq!(body(&post).as_deref(), Some("value=job"));

        let w = watch_request("/d", 13, true);
        assert_eq!(
            url(&w),
            format!("{EP}/v2/keys/d?recursive=true&wait=true&waitIndex=13")
        );
        assert!(w.wait);
    }

    #[test]
    fn keys_with_odd_characters_are_escaped_like_go() {
        let get = get_request("a b/c?d", &GetOptions::default());
        assert!(url(&get).starts_with(&format!("{EP}/v2/keys/a%20b/c%3Fd?")));
        let dots = get_request("/a/../b//c/", &GetOptions::default());
        assert!(url(&dots).starts_with(&format!("{EP}/v2/keys/b/c/?")));
    }

    fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn decodes_spec_responses_with_headers() {
        // The transcript's GET /v2/keys/newworld with headers.
        let r = resp(
            200,
            &[
                ("Content-Type", "application/json"),
                ("X-Etcd-Cluster-Id", "76309787450b79cc"),
                ("X-Etcd-Index", "6"),
                ("X-Raft-Index", "9"),
                ("X-Raft-Term", "2"),
            ],
            "{\"action\":\"get\",\"node\":{\"key\":\"/newworld\",\"value\":\"Hello Docker\",\"modifiedIndex\":6,\"createdIndex\":6}}\n",
        );
        let k = decode_keys_response(EP, &r).unwrap().unwrap();
        assert_eq!(k.action, Action::Get);
        let node = k.node.unwrap();
        assert_eq!(node.value.as_deref(), Some("Hello Docker"));
        assert_eq!(
            k.meta,
            ResponseMeta {
                etcd_index: Some(6),
                raft_index: Some(9),
                raft_term: Some(2),
                cluster_id: Some("76309787450b79cc".into()),
            }
        );
        // A delete with prevNode; the node has no value.
        let d = resp(
            200,
            &[("X-Etcd-Index", "21")],
            "{\"action\":\"delete\",\"node\":{\"key\":\"/x\",\"modifiedIndex\":21,\"createdIndex\":20},\"prevNode\":{\"key\":\"/x\",\"value\":\"2\",\"modifiedIndex\":20,\"createdIndex\":20}}\n",
        );
        let k = decode_keys_response(EP, &d).unwrap().unwrap();
        assert_eq!(k.action, Action::Delete);
        assert_eq!(k.node.unwrap().value, None);
        assert_eq!(k.prev_node.unwrap().value.as_deref(), Some("2"));
        // noValueOnSuccess.
        let n = resp(200, &[], "{\"action\":\"set\"}\n");
        assert!(decode_keys_response(EP, &n)
            .unwrap()
            .unwrap()
            .node
            .is_none());
        // An empty success body (watch closed without event).
        assert_eq!(decode_keys_response(EP, &resp(200, &[], "")).unwrap(), None);
    }

    #[test]
    fn maps_error_bodies_to_etcd_errors() {
        let table = [
            (404, "{\"errorCode\":100,\"message\":\"Key not found\",\"cause\":\"/foo\",\"index\":12}\n", "100: Key not found (/foo) [12]"),
            (412, "{\"errorCode\":101,\"message\":\"Compare failed\",\"cause\":\"[x != v] [1 != 12]\",\"index\":12}\n", "101: Compare failed ([x != v] [1 != 12]) [12]"),
            (403, "{\"errorCode\":102,\"message\":\"Not a file\",\"cause\":\"/d\",\"index\":4}\n", "102: Not a file (/d) [4]"),
            (400, "{\"errorCode\":209,\"message\":\"Invalid field\",\"cause\":\"invalid value for \\\"recursive\\\"\",\"index\":0}\n", "209: Invalid field (invalid value for \"recursive\") [0]"),
            (400, "{\"errorCode\":401,\"message\":\"The event in requested index is outdated and cleared\",\"cause\":\"the requested history has been cleared [1008/7]\",\"index\":2007}\n", "401: The event in requested index is outdated and cleared (the requested history has been cleared [1008/7]) [2007]"),
        ];
        for (status, body, text) in table {
            let err = decode_keys_response(EP, &resp(status, &[], body)).unwrap_err();
            assert!(matches!(err, ClientError::Etcd(_)), "{err:?}");
            assert_eq!(err.to_string(), text);
        }
        let not_etcd =
            decode_keys_response(EP, &resp(404, &[], "404 page not found\n")).unwrap_err();
        assert_eq!(
            not_etcd.to_string(),
            "client: response is invalid json. The endpoint is probably not valid etcd cluster endpoint."
        );
        let bad_header = decode_keys_response(
            EP,
            &resp(
                200,
                &[("X-Etcd-Index", "x")],
                "{\"action\":\"get\",\"node\":{}}",
            ),
        )
        .unwrap_err();
        assert!(matches!(bad_header, ClientError::InvalidResponse { .. }));
    }

    #[test]
    fn watcher_resumes_after_the_last_event_and_skips_empty_bodies() {
        let s = Arc::new(Scripted::default());
        s.push(
            EP,
            Canned::Response(200, vec![("X-Etcd-Index", "5".into())], String::new()),
        );
        s.push(
            EP,
            Canned::Response(
                200,
                vec![("X-Etcd-Index", "5".into())],
                "{\"action\":\"set\",\"node\":{\"key\":\"/d/k\",\"value\":\"v\",\"modifiedIndex\":6,\"createdIndex\":6}}\n".into(),
            ),
        );
        s.push(
            EP,
            Canned::Response(
                200,
                vec![],
                "{\"action\":\"expire\",\"node\":{\"key\":\"/d/k\",\"modifiedIndex\":9,\"createdIndex\":6},\"prevNode\":{\"key\":\"/d/k\",\"value\":\"v\",\"expiration\":\"2026-11-26T17:15:08Z\",\"modifiedIndex\":6,\"createdIndex\":6}}\n".into(),
            ),
        );
        let c = ClientBuilder::new(&[EP])
            .transport(s.clone())
            .build()
            .unwrap();
        let mut w = c.watcher(
            "/d",
            &WatchOptions {
                after_index: 4,
                recursive: true,
            },
        );
        assert_eq!(w.wait_index(), 5);
        let e = w.next(None).unwrap().unwrap();
        assert_eq!(e.action, Action::Set);
        assert_eq!(w.wait_index(), 7);
        let e = w.next(None).unwrap().unwrap();
        assert_eq!(e.action, Action::Expire);
        let sent: Vec<String> = s.sent().into_iter().map(|(_, l, _)| l).collect();
        assert_eq!(
            sent,
            [
                format!("GET {EP}/v2/keys/d?recursive=true&wait=true&waitIndex=5"),
                format!("GET {EP}/v2/keys/d?recursive=true&wait=true&waitIndex=5"),
                format!("GET {EP}/v2/keys/d?recursive=true&wait=true&waitIndex=7"),
            ]
        );
        // Watches are not bounded by the per-request timeout.
        assert!(s.log.lock().iter().all(|(_, _, _, t)| t.is_none()));
    }

    #[test]
    fn watch_timeout_is_none_not_an_error() {
        let s = Arc::new(Scripted::default());
        s.push(
            EP,
            Canned::Error(
                super::super::http::TransportErrorKind::Timeout,
                "i/o timeout",
            ),
        );
        let c = ClientBuilder::new(&[EP]).transport(s).build().unwrap();
        let got = c
            .watch(
                "/k",
                &WatchOptions::default(),
                Some(Duration::from_millis(20)),
            )
            .unwrap();
        assert_eq!(got, None);
    }

    #[test]
    fn typed_helpers_send_the_right_conditions() {
        let s = Arc::new(Scripted::default());
        let err_body = "{\"errorCode\":101,\"message\":\"Compare failed\",\"cause\":\"[a != b]\",\"index\":3}\n";
        s.push(EP, Canned::Response(412, vec![], err_body.into()));
        s.push(
            EP,
            Canned::Response(
                404,
                vec![],
                "{\"errorCode\":100,\"message\":\"Key not found\",\"cause\":\"/k\",\"index\":3}\n"
                    .into(),
            ),
        );
        let c = ClientBuilder::new(&[EP])
            .transport(s.clone())
            .build()
            .unwrap();
        let e = c
            .compare_and_swap("/k", "new", Some("a"), None, None)
            .unwrap_err();
        assert!(e.is_compare_failed() && e.is_etcd_code(ERR_TEST_FAILED));
        let e = c.compare_and_delete("/k", None, Some(2)).unwrap_err();
        assert!(e.is_etcd_code(ERR_KEY_NOT_FOUND));
        assert!(matches!(
            c.compare_and_swap("/k", "v", None, Some(0), None),
            Err(ClientError::InvalidArgument(_))
        ));
        let sent: Vec<String> = s.sent().into_iter().map(|(_, l, _)| l).collect();
        assert_eq!(
            sent,
            [
                format!("PUT {EP}/v2/keys/k?prevValue=a"),
                format!("DELETE {EP}/v2/keys/k?prevIndex=2"),
            ]
        );
    }
}
