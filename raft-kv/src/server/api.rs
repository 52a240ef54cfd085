//! The client port: etcd's v2 HTTP API over hyper 1, independent of how a member is built.
//!
//! [`serve_clients`] accepts connections on a listener and answers each request on the
//! connection's own task (HTTP/1.1 keep-alive, no thread per request). Routing, parameter
//! parsing, validation, headers, CORS and error rendering live here; everything that needs
//! the replicated state goes through the [`Backend`] trait, so this layer is tested against
//! a fake and the real member implements the trait.
//!
//! What every response gets, as etcd 3.4 sends it:
//! * CORS headers on every response; `OPTIONS` on any path is `200` with an empty body.
//! * A path with `//`, `/./` or `/../` (after percent-decoding) is answered `301` with
//!   `Location:` the cleaned path (query kept) before any routing.
//! * Unknown paths: `404 text/plain` `404 page not found\n`; a method outside an
//!   endpoint's list: `405` with `Allow:` spelled as etcd spells it.
//! * `/v2/keys` responses carry `X-Etcd-Cluster-Id` and `X-Etcd-Index`, and successful ones
//!   `X-Raft-Index` / `X-Raft-Term` too; member responses carry `X-Etcd-Cluster-Id`.
//! * A request target longer than [`MAX_REQUEST_TARGET`] bytes gets `414` (etcd resets
//!   the connection instead); a form body over 10 MiB gets errorCode 210.
//!
//! Watches: the backend hands back a channel of rendered events; the status line and
//! headers go out at once (the body is chunked and empty so far), each event is written
//! as it arrives, and the response ends after the first event unless `stream=true`.
//! When the client goes away hyper drops the body, which closes the channel and lets the
//! backend unregister the watcher.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{
    HeaderName, HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::form::{percent_decode, Form};
use super::id::{ClusterId, MemberId};
use super::keys_request::{
    error_message, error_status, no_value_on_success, parse_keys_request, KeysRequest,
};
use super::url::MemberUrl;

/// Longest request target (path + query) accepted, in bytes.
pub const MAX_REQUEST_TARGET: usize = 16 * 1024;

/// Largest form body accepted (Go's `http: POST too large` limit).
pub const MAX_FORM_BODY: usize = 10 * 1024 * 1024;

/// A member as the members API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberInfo {
    /// The member id (hex in JSON).
    #[serde(serialize_with = "hex_id")]
    pub id: MemberId,
    /// Its name (`""` until it has started and published it).
    pub name: String,
    /// Peer URLs, sorted.
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    /// Client URLs (empty until published).
    #[serde(rename = "clientURLs")]
    pub client_urls: Vec<String>,
}

fn hex_id<S: serde::Serializer>(id: &MemberId, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(id)
}

/// A failed members-API request: HTTP status and message (`{"message": …}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembersError {
    /// HTTP status (400, 404, 409, 410, 500, …).
    pub status: u16,
    /// The message etcd sends.
    pub message: String,
}

/// The answer to a keys request, already rendered.
pub enum KeysReply {
    /// A complete response (success or error).
    Done {
        /// HTTP status.
        status: u16,
        /// `X-Etcd-Index`.
        etcd_index: u64,
        /// `(X-Raft-Index, X-Raft-Term)` for successes; `None` on errors.
        raft: Option<(u64, u64)>,
        /// The JSON body, ending in `\n`.
        body: Bytes,
    },
    /// A registered watch: headers now, events as they come.
    Watch {
        /// `X-Etcd-Index` when the watch was registered.
        etcd_index: u64,
        /// `(X-Raft-Index, X-Raft-Term)`.
        raft: (u64, u64),
        /// Rendered events (each ends in `\n`); the response ends when it closes.
        events: mpsc::Receiver<Bytes>,
    },
}

impl KeysReply {
    /// An etcd error response (`{"errorCode","message","cause","index"}\n`).
    pub fn error(code: u32, message: &str, cause: &str, index: u64) -> KeysReply {
        KeysReply::Done {
            status: error_status(code),
            etcd_index: index,
            raft: None,
            body: render_keys_error(code, message, cause, index),
        }
    }
}

/// Renders an etcd keys error body; `cause` is left out when empty.
pub fn render_keys_error(code: u32, message: &str, cause: &str, index: u64) -> Bytes {
    #[derive(Serialize)]
    struct KeysError<'a> {
        #[serde(rename = "errorCode")]
        error_code: u32,
        message: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        cause: &'a str,
        index: u64,
    }
    let mut body = serde_json::to_vec(&KeysError {
        error_code: code,
        message,
        cause,
        index,
    })
    .unwrap_or_default();
    body.push(b'\n');
    Bytes::from(body)
}

/// What the HTTP layer needs from a member.
pub trait Backend: Send + Sync + 'static {
    /// The cluster id (`X-Etcd-Cluster-Id`).
    fn cluster_id(&self) -> ClusterId;
    /// Serves a validated keys request (`no_value`: `noValueOnSuccess=true`).
    fn keys(&self, request: KeysRequest, no_value: bool) -> impl Future<Output = KeysReply> + Send;
    /// Every member, sorted by id.
    fn members(&self) -> Vec<MemberInfo>;
    /// The current leader, if there is one.
    fn leader(&self) -> Option<MemberInfo>;
    /// `POST /v2/members`.
    fn add_member(
        &self,
        peer_urls: Vec<MemberUrl>,
    ) -> impl Future<Output = Result<MemberInfo, MembersError>> + Send;
    /// `PUT /v2/members/<id>`.
    fn update_member(
        &self,
        id: MemberId,
        peer_urls: Vec<MemberUrl>,
    ) -> impl Future<Output = Result<(), MembersError>> + Send;
    /// `DELETE /v2/members/<id>`.
    fn remove_member(&self, id: MemberId) -> impl Future<Output = Result<(), MembersError>> + Send;
    /// `/v2/stats/self` body.
    fn stats_self(&self) -> String;
    /// `/v2/stats/leader` body, or `None` on a follower.
    fn stats_leader(&self) -> Option<String>;
    /// `/v2/stats/store` body.
    fn stats_store(&self) -> String;
    /// Whether the member has a leader and can complete a consensus read.
    fn health(&self) -> impl Future<Output = bool> + Send;
    /// The agreed cluster version (`3.4.0`), if decided.
    fn cluster_version(&self) -> Option<String>;
}

/// A response body: complete bytes (sent with `Content-Length`) or a stream of chunks
/// (sent chunked, for watches).
pub enum ResponseBody {
    /// The whole body (`None` once sent).
    Full(Option<Bytes>),
    /// Chunks as they come; the response ends when the channel closes.
    Stream(mpsc::Receiver<Bytes>),
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ResponseBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Stream(events) => events
                .poll_recv(cx)
                .map(|next| next.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ResponseBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Stream(_) => SizeHint::default(),
        }
    }
}

type HttpResponse = Response<ResponseBody>;

const APPLICATION_JSON: &str = "application/json";
const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

// Header names are built at compile time: `from_static` checks its argument, which a call
// at run time would repeat for every response.
const X_ETCD_INDEX: HeaderName = HeaderName::from_static("x-etcd-index");
const X_RAFT_INDEX: HeaderName = HeaderName::from_static("x-raft-index");
const X_RAFT_TERM: HeaderName = HeaderName::from_static("x-raft-term");
const X_ETCD_CLUSTER_ID: HeaderName = HeaderName::from_static("x-etcd-cluster-id");

/// Headers a keys response carries (content type, three indexes, cluster id, three CORS):
/// reserved up front so the map does not grow while they are added.
const RESPONSE_HEADERS: usize = 8;

fn response(status: u16, content_type: Option<&'static str>, body: Bytes) -> HttpResponse {
    let mut resp = Response::new(ResponseBody::Full(Some(body)));
    resp.headers_mut().reserve(RESPONSE_HEADERS);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(content_type) = content_type {
        resp.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
    }
    resp
}

fn add_cors(resp: &mut HttpResponse) {
    let headers = resp.headers_mut();
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    headers.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("accept, content-type, authorization"),
    );
}

fn set_number(resp: &mut HttpResponse, name: HeaderName, value: u64) {
    resp.headers_mut().insert(name, HeaderValue::from(value));
}

fn set_cluster_id(resp: &mut HttpResponse, id: ClusterId) {
    // A member's cluster id does not change: its header value is rendered once per thread
    // and shared (cloning a `HeaderValue` only counts a reference).
    thread_local! {
        static RENDERED: std::cell::RefCell<Option<(ClusterId, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    let value = RENDERED.with(|cell| {
        let mut cell = cell.borrow_mut();
        match &*cell {
            Some((cached, value)) if *cached == id => Some(value.clone()),
            _ => {
                let value = HeaderValue::from_str(&id.to_string()).ok()?;
                *cell = Some((id, value.clone()));
                Some(value)
            }
        }
    });
    if let Some(value) = value {
        resp.headers_mut().insert(X_ETCD_CLUSTER_ID, value);
    }
}

fn not_found() -> HttpResponse {
    let mut resp = response(
        404,
        Some(TEXT_PLAIN),
        Bytes::from_static(b"404 page not found\n"),
    );
    resp.headers_mut()
        .insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let mut resp = response(
        405,
        Some(TEXT_PLAIN),
        Bytes::from_static(b"Method Not Allowed\n"),
    );
    resp.headers_mut()
        .insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
    resp.headers_mut()
        .insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

fn message_json(status: u16, message: &str, newline: bool) -> HttpResponse {
    #[derive(Serialize)]
    struct Message<'a> {
        message: &'a str,
    }
    let mut body = serde_json::to_vec(&Message { message }).unwrap_or_default();
    if newline {
        body.push(b'\n');
    }
    response(status, Some(APPLICATION_JSON), Bytes::from(body))
}

fn json_value<T: Serialize>(status: u16, value: &T, newline: bool) -> HttpResponse {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    if newline {
        body.push(b'\n');
    }
    response(status, Some(APPLICATION_JSON), Bytes::from(body))
}

/// Go's `path.Clean`, keeping a trailing slash as `http.ServeMux` does: the store's key
/// cleaning (which returns a clean key as it is), plus the trailing slash.
fn clean_path(path: &str) -> String {
    let mut cleaned = crate::store::path::clean_key(path);
    if path.ends_with('/') && !cleaned.ends_with('/') {
        cleaned.push('/');
    }
    cleaned
}

/// Percent-encodes a decoded path for a `Location` header (Go's `url.URL.String`).
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn redirect(method: &Method, location: &str) -> HttpResponse {
    let is_get = *method == Method::GET;
    let body = if is_get {
        let escaped = location
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&#34;")
            .replace('\'', "&#39;");
        Bytes::from(format!("<a href=\"{escaped}\">Moved Permanently</a>.\n\n"))
    } else {
        Bytes::new()
    };
    let content_type = (is_get || *method == Method::HEAD).then_some("text/html; charset=utf-8");
    let mut resp = response(301, content_type, body);
    if let Ok(value) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(hyper::header::LOCATION, value);
    }
    resp
}

/// Reads a form body (up to [`MAX_FORM_BODY`]); on overflow the rest is drained (so the
/// client can read the answer) and Go's error text is returned.
async fn read_form_body(body: Incoming) -> Result<Bytes, String> {
    let mut body = body;
    let mut collected: Vec<u8> = Vec::new();
    let mut too_large = false;
    let mut drained: usize = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading body: {e}"))?;
        if let Ok(data) = frame.into_data() {
            if too_large {
                drained += data.len();
                if drained > 4 * MAX_FORM_BODY {
                    break;
                }
            } else if collected.len() + data.len() > MAX_FORM_BODY {
                too_large = true;
                drained = data.len();
                collected = Vec::new();
            } else {
                collected.extend_from_slice(&data);
            }
        }
    }
    if too_large {
        return Err("http: POST too large".to_string());
    }
    Ok(Bytes::from(collected))
}

fn is_form_content_type(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
        .unwrap_or(false)
}

/// Answers one request.
pub async fn handle<B: Backend>(backend: Arc<B>, request: Request<Incoming>) -> HttpResponse {
    let mut resp = route(&backend, request).await;
    add_cors(&mut resp);
    resp
}

async fn route<B: Backend>(backend: &Arc<B>, request: Request<Incoming>) -> HttpResponse {
    let method = request.method().clone();
    let target_len = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if target_len > MAX_REQUEST_TARGET {
        return response(
            414,
            Some(TEXT_PLAIN),
            Bytes::from_static(b"414 URI Too Long\n"),
        );
    }
    if method == Method::OPTIONS {
        return response(200, None, Bytes::new());
    }
    let raw_path = request.uri().path().to_string();
    let raw_query = request.uri().query().unwrap_or("").to_string();
    let path = match percent_decode(&raw_path, false) {
        Ok(path) => path,
        Err(_) => {
            return response(
                400,
                Some(TEXT_PLAIN),
                Bytes::from_static(b"400 Bad Request"),
            )
        }
    };
    let cleaned = clean_path(&path);
    if cleaned != path {
        let mut location = encode_path(&cleaned);
        if !raw_query.is_empty() {
            location.push('?');
            location.push_str(&raw_query);
        }
        return redirect(&method, &location);
    }

    if path == "/v2/keys" || path.starts_with("/v2/keys/") {
        let key = path["/v2/keys".len()..].to_string();
        return keys(backend, request, &key, &raw_query).await;
    }
    if path == "/v2/members" || path.starts_with("/v2/members/") {
        let rest = path["/v2/members".len()..]
            .trim_start_matches('/')
            .to_string();
        let mut resp = members(backend, request, &rest).await;
        if resp.status() != StatusCode::METHOD_NOT_ALLOWED {
            set_cluster_id(&mut resp, backend.cluster_id());
        }
        return resp;
    }
    match path.as_str() {
        "/v2/machines" => {
            if method != Method::GET && method != Method::HEAD {
                return method_not_allowed("GET,HEAD");
            }
            let urls: Vec<String> = backend
                .members()
                .into_iter()
                .flat_map(|m| m.client_urls)
                .collect();
            response(200, Some(TEXT_PLAIN), Bytes::from(urls.join(", ")))
        }
        "/v2/stats/self" | "/v2/stats/leader" | "/v2/stats/store" => {
            if method != Method::GET {
                return method_not_allowed("GET");
            }
            match path.as_str() {
                "/v2/stats/self" => response(
                    200,
                    Some(APPLICATION_JSON),
                    Bytes::from(backend.stats_self()),
                ),
                "/v2/stats/store" => response(
                    200,
                    Some(APPLICATION_JSON),
                    Bytes::from(backend.stats_store()),
                ),
                _ => match backend.stats_leader() {
                    Some(body) => response(200, Some(APPLICATION_JSON), Bytes::from(body)),
                    None => message_json(403, "not current leader", false),
                },
            }
        }
        "/health" => {
            if method != Method::GET {
                return method_not_allowed("GET");
            }
            if backend.health().await {
                response(
                    200,
                    Some(TEXT_PLAIN),
                    Bytes::from_static(b"{\"health\":\"true\"}"),
                )
            } else {
                response(
                    503,
                    Some(TEXT_PLAIN),
                    Bytes::from_static(b"{\"health\":\"false\"}\n"),
                )
            }
        }
        "/version" => {
            if method != Method::GET {
                return method_not_allowed("GET");
            }
            let cluster = backend
                .cluster_version()
                .unwrap_or_else(|| "not_decided".to_string());
            let body = format!(
                "{{\"etcdserver\":\"{}\",\"etcdcluster\":\"{}\"}}",
                super::ETCD_VERSION,
                cluster
            );
            response(200, Some(APPLICATION_JSON), Bytes::from(body))
        }
        _ => not_found(),
    }
}

async fn keys<B: Backend>(
    backend: &Arc<B>,
    request: Request<Incoming>,
    key: &str,
    raw_query: &str,
) -> HttpResponse {
    let method = request.method().clone();
    let method_name = match method {
        Method::HEAD => "HEAD",
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        _ => return method_not_allowed("HEAD,GET,PUT,POST,DELETE"),
    };
    let cluster_id = backend.cluster_id();
    let mut form = Form::new();
    let takes_body = matches!(method, Method::PUT | Method::POST) && is_form_content_type(&request);
    let form_result = if takes_body {
        match read_form_body(request.into_body()).await {
            Ok(body) => match std::str::from_utf8(&body) {
                Ok(text) => form.append_encoded(text).map_err(|e| e.0),
                Err(_) => form
                    .append_encoded(&String::from_utf8_lossy(&body))
                    .map_err(|e| e.0),
            },
            Err(cause) => Err(cause),
        }
    } else {
        Ok(())
    };
    let form_result = form_result.and_then(|()| form.append_encoded(raw_query).map_err(|e| e.0));
    let reply = match form_result {
        Err(cause) => KeysReply::error(210, error_message(210), &cause, 0),
        Ok(()) => match parse_keys_request(method_name, key, &form) {
            Err(err) => KeysReply::error(err.code, error_message(err.code), &err.cause, 0),
            Ok(parsed) => backend.keys(parsed, no_value_on_success(&form)).await,
        },
    };
    let mut resp = match reply {
        KeysReply::Done {
            status,
            etcd_index,
            raft,
            body,
        } => {
            // For HEAD, hyper sends the headers (Content-Length included) and no body.
            let mut resp = response(status, Some(APPLICATION_JSON), body);
            set_number(&mut resp, X_ETCD_INDEX, etcd_index);
            if let Some((raft_index, raft_term)) = raft {
                set_number(&mut resp, X_RAFT_INDEX, raft_index);
                set_number(&mut resp, X_RAFT_TERM, raft_term);
            }
            resp
        }
        KeysReply::Watch {
            etcd_index,
            raft,
            events,
        } => {
            let mut resp = Response::new(ResponseBody::Stream(events));
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static(APPLICATION_JSON),
            );
            set_number(&mut resp, X_ETCD_INDEX, etcd_index);
            set_number(&mut resp, X_RAFT_INDEX, raft.0);
            set_number(&mut resp, X_RAFT_TERM, raft.1);
            resp
        }
    };
    set_cluster_id(&mut resp, cluster_id);
    resp
}

#[derive(serde::Deserialize)]
struct PeerUrlsBody {
    #[serde(rename = "peerURLs", default)]
    peer_urls: Vec<String>,
}

async fn read_member_urls(request: Request<Incoming>) -> Result<Vec<MemberUrl>, HttpResponse> {
    let content_type = request
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if !media.eq_ignore_ascii_case(APPLICATION_JSON) {
        return Err(message_json(
            415,
            &format!("Bad Content-Type {media}, accept application/json"),
            false,
        ));
    }
    let body = match http_body_util::Limited::new(request.into_body(), MAX_FORM_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) => return Err(message_json(400, &e.to_string(), false)),
    };
    let parsed: PeerUrlsBody =
        serde_json::from_slice(&body).map_err(|e| message_json(400, &go_json_error(&e), false))?;
    if parsed.peer_urls.is_empty() {
        return Err(message_json(400, "no valid URLs given", false));
    }
    let mut urls = Vec::with_capacity(parsed.peer_urls.len());
    for text in &parsed.peer_urls {
        urls.push(MemberUrl::parse(text).map_err(|e| message_json(400, &e, false))?);
    }
    urls.sort();
    Ok(urls)
}

/// A JSON decoding error in words close to Go's `encoding/json` (clients show it verbatim).
fn go_json_error(error: &serde_json::Error) -> String {
    match error.classify() {
        serde_json::error::Category::Eof => "unexpected EOF".to_string(),
        serde_json::error::Category::Data => {
            "json: cannot unmarshal value into Go struct field .peerURLs of type []string"
                .to_string()
        }
        _ => format!("invalid character in JSON: {error}"),
    }
}

async fn members<B: Backend>(
    backend: &Arc<B>,
    request: Request<Incoming>,
    rest: &str,
) -> HttpResponse {
    let method = request.method().clone();
    if method != Method::GET
        && method != Method::POST
        && method != Method::DELETE
        && method != Method::PUT
    {
        return method_not_allowed("GET,POST,DELETE,PUT");
    }
    match (method, rest) {
        (Method::GET, "") => {
            #[derive(Serialize)]
            struct List {
                members: Vec<MemberInfo>,
            }
            json_value(
                200,
                &List {
                    members: backend.members(),
                },
                true,
            )
        }
        (Method::GET, "leader") => match backend.leader() {
            Some(leader) => json_value(200, &leader, true),
            None => message_json(503, "During election", false),
        },
        (Method::GET, _) => message_json(404, "Not found", false),
        (Method::POST, "") => match read_member_urls(request).await {
            Err(resp) => resp,
            Ok(urls) => match backend.add_member(urls).await {
                Ok(member) => json_value(201, &member, true),
                Err(err) => message_json(err.status, &err.message, false),
            },
        },
        (Method::POST, _) => message_json(404, "Not found", false),
        (_, "") => method_not_allowed("GET,POST,DELETE,PUT"),
        (method, id_text) => {
            let Some(id) = MemberId::parse_hex(id_text) else {
                return message_json(404, &format!("No such member: {id_text}"), false);
            };
            let result = if method == Method::DELETE {
                backend.remove_member(id).await
            } else {
                match read_member_urls(request).await {
                    Err(resp) => return resp,
                    Ok(urls) => backend.update_member(id, urls).await,
                }
            };
            match result {
                Ok(()) => response(204, None, Bytes::new()),
                Err(err) => message_json(err.status, &err.message, false),
            }
        }
    }
}

/// Serves the client API on `listener` until `shutdown` turns true. Each connection runs
/// on its own task with HTTP/1.1 keep-alive.
pub async fn serve_clients<B: Backend>(
    listener: TcpListener,
    backend: Arc<B>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let (stream, _peer): (tokio::net::TcpStream, SocketAddr) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let backend = backend.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let backend = backend.clone();
                async move { Ok::<_, Infallible>(handle(backend, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = shutdown.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), connection).await;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `path.Clean` segment by segment, keeping a trailing slash: the definition
    /// [`clean_path`] must agree with.
    fn clean_path_by_segments(path: &str) -> String {
        let mut parts: Vec<&str> = Vec::new();
        for segment in path.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                other => parts.push(other),
            }
        }
        let mut cleaned: String = parts.iter().flat_map(|p| ["/", p]).collect();
        if cleaned.is_empty() || (path.ends_with('/') && !cleaned.ends_with('/')) {
            cleaned.push('/');
        }
        cleaned
    }

    /// Every path of up to 7 characters over `/`, `.` and `a`: cleaning agrees with the
    /// segment-by-segment definition.
    #[test]
    fn clean_path_matches_cleaning_by_segments() {
        let mut frontier = vec![String::new()];
        let mut checked = 0;
        for _ in 0..=7 {
            let mut next = Vec::new();
            for p in &frontier {
                assert_eq!(clean_path(p), clean_path_by_segments(p), "{p:?}");
                checked += 1;
                for c in ['/', '.', 'a'] {
                    next.push(format!("{p}{c}"));
                }
            }
            frontier = next;
        }
        assert_eq!(checked, (0..=7).map(|n| 3usize.pow(n)).sum::<usize>());
    }

    #[test]
    fn path_cleaning_keeps_trailing_slash() {
        assert_eq!(clean_path("/v2/keys/a//b"), "/v2/keys/a/b");
        assert_eq!(clean_path("/v2/keys/a/./b/"), "/v2/keys/a/b/");
        assert_eq!(clean_path("/v2/keys/a/../b"), "/v2/keys/b");
        assert_eq!(clean_path("/v2/keys/"), "/v2/keys/");
        assert_eq!(clean_path("/"), "/");
        assert_eq!(clean_path(""), "/");
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            render_keys_error(202, "The given TTL in POST form is not a number", "invalid value for \"ttl\"", 0),
            Bytes::from_static(
                b"{\"errorCode\":202,\"message\":\"The given TTL in POST form is not a number\",\"cause\":\"invalid value for \\\"ttl\\\"\",\"index\":0}\n"
            )
        );
        assert_eq!(
            render_keys_error(301, "During Leader Election", "", 0),
            Bytes::from_static(
                b"{\"errorCode\":301,\"message\":\"During Leader Election\",\"index\":0}\n"
            )
        );
    }

    #[test]
    fn member_json() {
        let member = MemberInfo {
            id: MemberId(0x7e4b58baca723182),
            name: "node1".into(),
            peer_urls: vec!["http://127.0.0.1:22483".into()],
            client_urls: vec![],
        };
        assert_eq!(
            serde_json::to_string(&member).unwrap(),
            "{\"id\":\"7e4b58baca723182\",\"name\":\"node1\",\"peerURLs\":[\"http://127.0.0.1:22483\"],\"clientURLs\":[]}"
        );
    }
}
