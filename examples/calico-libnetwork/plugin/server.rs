//! HTTP/1.1 over a unix socket: how Docker talks to the plugin (spec/libnetwork.md §1).
//!
//! [`serve`] accepts connections on a bound `UnixListener` until its shutdown future
//! resolves, and answers every request by:
//!
//! 1. routing `POST /<Interface>.<Method>` (any other HTTP method → 405, unknown path →
//!    404 `{"Err": ...}`, which Docker reads as "not implemented");
//! 2. reading the body (at most [`MAX_BODY`] bytes; Docker sends no `Content-Type`, so the
//!    body is JSON whatever the headers say);
//! 3. parsing it into a [`Call`] and handing that to the [`Handler`] on tokio's blocking
//!    pool (handlers talk to etcd and run `ip`; they never block the reactor);
//! 4. answering 200 with the reply's JSON, or the error's status with `{"Err": ...}`,
//!    always with `Content-Type: application/vnd.docker.plugins.v1.2+json`.
//!
//! Every call is reported to an optional [`CallObserver`] (the call log used by tests and
//! `--call-log`) and logged with `tracing`.
//!
//! Invariants: one response per request, whatever the handler does (a panicking handler
//! becomes a 500); the socket file is the caller's to create and remove (see
//! [`bind_socket`]), so a crashed plugin's stale socket is replaced on the next start.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixListener;

use super::error::PluginError;
use super::protocol::{Call, ErrorBody, Reply, CONTENT_TYPE as PLUGIN_CONTENT_TYPE};

/// Largest request body accepted (Docker's requests are a few hundred bytes).
pub const MAX_BODY: usize = 1 << 20;

/// What answers calls: the driver, or a test double.
pub trait Handler: Send + Sync + 'static {
    /// Answers one call. Runs on a blocking thread; may block.
    fn handle(&self, call: Call) -> Result<Reply, PluginError>;
}

/// One served call, as reported to a [`CallObserver`].
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// `NetworkDriver.Join`, ...
    pub method: String,
    /// The request body as JSON (`null` when empty or unparseable).
    pub request: Value,
    /// The status answered.
    pub status: u16,
    /// The response body.
    pub response: Value,
}

/// Sees every call after it is answered.
pub type CallObserver = Arc<dyn Fn(&CallRecord) + Send + Sync>;

/// Binds `path`, replacing a stale socket file left by a previous run (only a socket:
/// any other kind of file there is an error, never deleted).
pub fn bind_socket(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    UnixListener::bind(path)
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut text = body.to_string();
    text.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(PLUGIN_CONTENT_TYPE));
    response
}

fn error_value(message: String) -> Value {
    serde_json::to_value(ErrorBody { err: message }).unwrap_or(Value::Null)
}

/// Answers one HTTP request; never fails (errors become JSON answers).
async fn answer(
    request: Request<Incoming>,
    handler: Arc<dyn Handler>,
    observer: Option<CallObserver>,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let method = request.uri().path().trim_start_matches('/').to_string();
    if request.method() != Method::POST {
        let body = error_value(format!(
            "{} not allowed; plugin calls are POST",
            request.method()
        ));
        let mut response = json_response(StatusCode::METHOD_NOT_ALLOWED, &body);
        response
            .headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let body = error_value(format!("reading the {method} request body: {e}"));
            return json_response(StatusCode::BAD_REQUEST, &body);
        }
    };
    let request_json: Value = serde_json::from_slice(body.trim_ascii()).unwrap_or(Value::Null);
    let outcome = match Call::parse(&method, &body) {
        Err(e) => Err(PluginError::from(e)),
        Ok(call) => {
            let handler = Arc::clone(&handler);
            match tokio::task::spawn_blocking(move || handler.handle(call)).await {
                Ok(result) => result,
                Err(join_error) => Err(PluginError::Dataplane {
                    command: method.clone(),
                    status: "handler panicked".into(),
                    stderr: join_error.to_string(),
                }),
            }
        }
    };
    let (status, response_json) = match outcome {
        Ok(reply) => (StatusCode::OK, reply.to_json()),
        Err(e) => (e.status(), error_value(e.to_string())),
    };
    let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    if status.is_success() {
        tracing::info!(%method, status = status.as_u16(), elapsed_ms, "call");
    } else if matches!(status, StatusCode::NOT_FOUND) {
        tracing::info!(%method, status = status.as_u16(), "not implemented");
    } else {
        tracing::warn!(%method, status = status.as_u16(), elapsed_ms, response = %response_json, "call failed");
    }
    if let Some(observer) = observer {
        observer(&CallRecord {
            method,
            request: request_json,
            status: status.as_u16(),
            response: response_json.clone(),
        });
    }
    json_response(status, &response_json)
}

/// Serves plugin calls on `listener` until `shutdown` resolves. Connections already
/// accepted finish their current request.
pub async fn serve(
    listener: UnixListener,
    handler: Arc<dyn Handler>,
    observer: Option<CallObserver>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _addr)) => stream,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let handler = Arc::clone(&handler);
        let observer = observer.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let handler = Arc::clone(&handler);
                let observer = observer.clone();
                async move { Ok::<_, Infallible>(answer(request, handler, observer).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}
