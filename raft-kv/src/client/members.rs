//! The members API (`/v2/members`) and the cluster's other read-only endpoints
//! (`/v2/stats/*`, `/version`, `/health`).
//!
//! Status handling follows etcd's Go client: a list expects 200; an add expects 201
//! (409 carries `{"message":…}`); an update expects 204 (404/409 carry a message); a
//! remove accepts 204 and 410 (already removed). Anything else is
//! [`ClientError::UnexpectedStatus`] (`unexpected status code N`), whose body is kept for
//! diagnosis. Peer URLs are validated before sending, with etcd's messages.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::error::ClientError;
use super::http::{Body, HttpRequest, HttpResponse, Method};
use super::types::{Health, LeaderStats, Member, MemberCollection, SelfStats, StoreStats, Version};
use super::{Client, Retry};

#[derive(Serialize)]
struct PeerUrlsRequest<'a> {
    #[serde(rename = "peerURLs")]
    peer_urls: &'a [String],
}

#[derive(Deserialize)]
struct MessageBody {
    #[serde(default)]
    message: String,
}

/// Checks peer URLs like etcd's `types.NewURLs` and returns them trimmed and sorted.
///
/// Each must be `http`, `https`, `unix` or `unixs`, have a `host:port`, and no path.
pub fn validate_peer_urls<S: AsRef<str>>(urls: &[S]) -> Result<Vec<String>, ClientError> {
    if urls.is_empty() {
        return Err(ClientError::InvalidArgument("no valid URLs given".into()));
    }
    let mut out = Vec::with_capacity(urls.len());
    for raw in urls {
        let u = raw.as_ref().trim();
        let (scheme, rest) = u.split_once("://").unwrap_or(("", u));
        if !matches!(scheme, "http" | "https" | "unix" | "unixs") {
            return Err(ClientError::InvalidArgument(format!(
                "URL scheme must be http, https, unix, or unixs: {u}"
            )));
        }
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (host, path) = rest.split_at(end);
        let has_port = if let Some(v6) = host.strip_prefix('[') {
            v6.split_once(']').is_some_and(|(_, p)| p.starts_with(':'))
        } else {
            host.matches(':').count() == 1
        };
        if !has_port {
            return Err(ClientError::InvalidArgument(format!(
                "URL address does not have the form \"host:port\": {u}"
            )));
        }
        let path = path.split(['?', '#']).next().unwrap_or("");
        if !path.is_empty() {
            return Err(ClientError::InvalidArgument(format!(
                "URL must not contain a path: {u}"
            )));
        }
        out.push(u.to_string());
    }
    out.sort();
    Ok(out)
}

fn json_body(urls: &[String]) -> Result<Body, ClientError> {
    let bytes = serde_json::to_vec(&PeerUrlsRequest { peer_urls: urls })
        .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
    Ok(Body {
        content_type: "application/json",
        bytes,
    })
}

fn unexpected(endpoint: String, resp: &HttpResponse) -> ClientError {
    ClientError::UnexpectedStatus {
        endpoint,
        status: resp.status,
        body: String::from_utf8_lossy(&resp.body).into_owned(),
    }
}

fn decode<T: DeserializeOwned>(endpoint: &str, resp: &HttpResponse) -> Result<T, ClientError> {
    serde_json::from_slice(&resp.body).map_err(|e| ClientError::InvalidResponse {
        endpoint: endpoint.to_string(),
        message: e.to_string(),
    })
}

fn member_error(endpoint: &str, resp: &HttpResponse) -> ClientError {
    match decode::<MessageBody>(endpoint, resp) {
        Ok(m) => ClientError::Member {
            status: resp.status,
            message: m.message,
        },
        Err(e) => e,
    }
}

impl Client {
    fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let req = HttpRequest::new(Method::Get, path, String::new());
        let (endpoint, resp) = self.send(&req, Retry::Idempotent, self.call_deadline())?;
        match resp.status {
            200 => decode(&endpoint, &resp),
            403 | 404 if resp.body.starts_with(b"{") => Err(member_error(&endpoint, &resp)),
            _ => Err(unexpected(endpoint, &resp)),
        }
    }

    /// Lists the members, sorted by numeric ID as the server sends them.
    pub fn members(&self) -> Result<Vec<Member>, ClientError> {
        let list: MemberCollection = self.get_json("/v2/members")?;
        Ok(list.members.unwrap_or_default())
    }

    /// The current leader (errors with 503 → unavailable while there is none).
    pub fn leader(&self) -> Result<Member, ClientError> {
        self.get_json("/v2/members/leader")
    }

    /// Adds a member with `peer_urls`; it is listed as unstarted until it runs.
    ///
    /// Errors: a conflict (`membership: peerURL exists`) is [`ClientError::Member`];
    /// etcd 3.4 refuses adds with HTTP 500 for ~5 s after any member (re)connected, which
    /// surfaces as [`ClientError::ClusterUnavailable`].
    pub fn add_member<S: AsRef<str>>(&self, peer_urls: &[S]) -> Result<Member, ClientError> {
        let urls = validate_peer_urls(peer_urls)?;
        let mut req = HttpRequest::new(Method::Post, "/v2/members", String::new());
        req.body = Some(json_body(&urls)?);
        let (endpoint, resp) = self.send(&req, Retry::Idempotent, self.call_deadline())?;
        match resp.status {
            201 => decode(&endpoint, &resp),
            409 => Err(member_error(&endpoint, &resp)),
            _ => Err(unexpected(endpoint, &resp)),
        }
    }

    /// Replaces the peer URLs of member `id` (hex).
    pub fn update_member<S: AsRef<str>>(
        &self,
        id: &str,
        peer_urls: &[S],
    ) -> Result<(), ClientError> {
        let urls = validate_peer_urls(peer_urls)?;
        let mut req = HttpRequest::new(Method::Put, format!("/v2/members/{id}"), String::new());
        req.body = Some(json_body(&urls)?);
        let (endpoint, resp) = self.send(&req, Retry::Idempotent, self.call_deadline())?;
        match resp.status {
            204 => Ok(()),
            404 | 409 => Err(member_error(&endpoint, &resp)),
            _ => Err(unexpected(endpoint, &resp)),
        }
    }

    /// Removes member `id` (hex). Removing an already removed member (410) succeeds.
    pub fn remove_member(&self, id: &str) -> Result<(), ClientError> {
        let req = HttpRequest::new(Method::Delete, format!("/v2/members/{id}"), String::new());
        let (endpoint, resp) = self.send(&req, Retry::Idempotent, self.call_deadline())?;
        match resp.status {
            204 | 410 => Ok(()),
            _ => Err(unexpected(endpoint, &resp)),
        }
    }

    /// `/v2/stats/self` of the answering member.
    pub fn self_stats(&self) -> Result<SelfStats, ClientError> {
        self.get_json("/v2/stats/self")
    }

    /// `/v2/stats/leader` (a follower answers [`ClientError::Member`] `not current leader`).
    pub fn leader_stats(&self) -> Result<LeaderStats, ClientError> {
        self.get_json("/v2/stats/leader")
    }

    /// `/v2/stats/store` of the answering member.
    pub fn store_stats(&self) -> Result<StoreStats, ClientError> {
        self.get_json("/v2/stats/store")
    }

    /// `/version` of the answering member.
    pub fn version(&self) -> Result<Version, ClientError> {
        self.get_json("/version")
    }

    /// `GET <url>/health` on exactly this URL (no failover; a 503 reads as unhealthy).
    ///
    /// Errors: [`ClientError::Endpoint`] when no response came, and
    /// [`ClientError::InvalidResponse`] when the body is not JSON.
    pub fn health_at(&self, url: &str) -> Result<Health, ClientError> {
        let req = HttpRequest::new(Method::Get, "/health", String::new());
        let resp = self
            .inner
            .transport
            .round_trip(url, &req, self.inner.request_timeout)
            .map_err(|error| {
                ClientError::Endpoint(super::EndpointError::Transport {
                    endpoint: url.to_string(),
                    error,
                })
            })?;
        Health::parse(&resp.body).map_err(|message| ClientError::InvalidResponse {
            endpoint: url.to_string(),
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::testing::{Canned, Scripted};
    use super::super::ClientBuilder;
    use super::*;

    const EP: &str = "http://127.0.0.1:2379";

    #[test]
    fn peer_url_validation_uses_etcds_messages() {
        assert_eq!(
            validate_peer_urls(&["http://b:2", " http://a:1 "]).unwrap(),
            ["http://a:1", "http://b:2"]
        );
        assert!(validate_peer_urls(&["http://[::1]:5"]).is_ok());
        let cases = [
            (
                "ftp://a:1",
                "URL scheme must be http, https, unix, or unixs: ftp://a:1",
            ),
            ("a:1", "URL scheme must be http, https, unix, or unixs: a:1"),
            (
                "http://a",
                "URL address does not have the form \"host:port\": http://a",
            ),
            ("http://a:1/p", "URL must not contain a path: http://a:1/p"),
        ];
        for (input, text) in cases {
            assert_eq!(validate_peer_urls(&[input]).unwrap_err().to_string(), text);
        }
        let none: [&str; 0] = [];
        assert_eq!(
            validate_peer_urls(&none).unwrap_err().to_string(),
            "no valid URLs given"
        );
    }

    #[test]
    fn member_calls_map_statuses_like_the_go_client() {
        let s = Arc::new(Scripted::default());
        s.push(
            EP,
            Canned::Response(
                409,
                vec![],
                "{\"message\":\"membership: peerURL exists\"}".into(),
            ),
        );
        s.push(
            EP,
            Canned::Response(
                201,
                vec![],
                "{\"id\":\"9fbcb430c28c28bb\",\"name\":\"\",\"peerURLs\":[\"http://127.0.0.1:22485\"],\"clientURLs\":[]}\n".into(),
            ),
        );
        s.push(
            EP,
            Canned::Response(
                410,
                vec![],
                "{\"message\":\"Member permanently removed: 1\"}".into(),
            ),
        );
        s.push(
            EP,
            Canned::Response(404, vec![], "{\"message\":\"No such member: 2\"}".into()),
        );
        s.push(
            EP,
            Canned::Response(404, vec![], "{\"message\":\"No such member: 3\"}".into()),
        );
        s.push(EP, Canned::Response(204, vec![], String::new()));
        let c = ClientBuilder::new(&[EP])
            .transport(s.clone())
            .build()
            .unwrap();
        let e = c.add_member(&["http://127.0.0.1:22484"]).unwrap_err();
        assert_eq!(e.to_string(), "membership: peerURL exists");
        let m = c.add_member(&["http://127.0.0.1:22485"]).unwrap();
        assert!(m.is_unstarted());
        c.remove_member("1").unwrap();
        assert_eq!(
            c.remove_member("2").unwrap_err().to_string(),
            "unexpected status code 404"
        );
        assert_eq!(
            c.update_member("3", &["http://x:1"])
                .unwrap_err()
                .to_string(),
            "No such member: 3"
        );
        c.update_member("4", &["http://x:1"]).unwrap();
        let sent = s.sent();
        assert_eq!(sent[0].1, format!("POST {EP}/v2/members"));
        assert_eq!(
            sent[0].2.as_deref(),
            Some("{\"peerURLs\":[\"http://127.0.0.1:22484\"]}")
        );
        assert_eq!(sent[2].1, format!("DELETE {EP}/v2/members/1"));
        assert_eq!(sent[5].1, format!("PUT {EP}/v2/members/4"));
    }

    #[test]
    fn stats_version_and_health() {
        let s = Arc::new(Scripted::default());
        s.push(
            EP,
            Canned::Response(
                200,
                vec![],
                "{\"etcdserver\":\"3.4.23\",\"etcdcluster\":\"3.4.0\"}".into(),
            ),
        );
        s.push(
            EP,
            Canned::Response(403, vec![], "{\"message\":\"not current leader\"}".into()),
        );
        s.push(
            EP,
            Canned::Response(503, vec![], "{\"health\":\"false\"}\n".into()),
        );
        s.push(
            EP,
            Canned::Response(200, vec![], "{\"health\":\"true\"}".into()),
        );
        let c = ClientBuilder::new(&[EP])
            .transport(s.clone())
            .build()
            .unwrap();
        assert_eq!(c.version().unwrap().etcdserver, "3.4.23");
        assert_eq!(
            c.leader_stats().unwrap_err().to_string(),
            "not current leader"
        );
        assert!(!c.health_at(EP).unwrap().healthy);
        assert!(c.health_at(EP).unwrap().healthy);
        let e = c.health_at("http://127.0.0.1:9").unwrap_err();
        assert!(matches!(e, ClientError::Endpoint(_)));
    }
}
