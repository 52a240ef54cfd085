//! Property tests of the client against simple models.
//!
//! * Encoders: percent-decoding what [`escape_path`] / [`query_escape`] /
//!   [`encode_form`] produce gives the input back, and only allowed bytes appear.
//! * [`canonical_url_path`] agrees with a segment-stack model of Go's `path.Clean` plus
//!   etcd's trailing-slash rule, and is idempotent.
//! * [`go_quote`] is undone by a model of Go's `strconv.Unquote`.
//! * Failover: for any endpoint count, pin and sequence of per-endpoint outcomes,
//!   [`Client::send`](super::Client) answers from the endpoint a model predicts, with one
//!   error per failed attempt, and never sends a one-shot request after an ambiguous
//!   failure.
//! * Decoders never panic on arbitrary bodies.
//!
//! `PROPTEST_CASES` raises the case count (default 256 per property).

use std::sync::Arc;

use proptest::prelude::*;

use super::http::{
    canonical_url_path, encode_form, escape_path, go_quote, query_escape, HttpResponse,
    TransportErrorKind,
};
use super::keys::decode_keys_response;
use super::testing::{Canned, Scripted};
use super::types::Health;
use super::{ClientBuilder, ClientError, EndpointError, Retry};

fn percent_decode(s: &str, plus_is_space: bool) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Model of Go's `path.Clean` + etcd's `CanonicalURLPath`.
fn canonical_model(p: &str) -> String {
    let mut stack: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        if seg.is_empty() || seg == "." {
            continue;
        }
        if seg == ".." {
            stack.pop();
        } else {
            stack.push(seg);
        }
    }
    let mut out = format!("/{}", stack.join("/"));
    if p.ends_with('/') && out != "/" {
        out.push('/');
    }
    out
}

/// Model of Go's `strconv.Unquote` for the escapes `go_quote` emits.
fn go_unquote(q: &str) -> String {
    let inner = &q[1..q.len() - 1];
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next().unwrap() {
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'v' => out.push('\u{b}'),
            '\\' => out.push('\\'),
            '"' => out.push('"'),
            'x' => {
                let h: String = chars.by_ref().take(2).collect();
                out.push(char::from(u8::from_str_radix(&h, 16).unwrap()));
            }
            'u' => {
                let h: String = chars.by_ref().take(4).collect();
                out.push(char::from_u32(u32::from_str_radix(&h, 16).unwrap()).unwrap());
            }
            'U' => {
                let h: String = chars.by_ref().take(8).collect();
                out.push(char::from_u32(u32::from_str_radix(&h, 16).unwrap()).unwrap());
            }
            other => panic!("unexpected escape \\{other}"),
        }
    }
    out
}

/// One endpoint's answer to one attempt.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Ok,
    Refused,
    Reset,
    NoLeader,
    BadGateway,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Ok),
        Just(Outcome::Refused),
        Just(Outcome::Reset),
        Just(Outcome::NoLeader),
        Just(Outcome::BadGateway),
    ]
}

proptest! {
    #[test]
    fn path_escaping_round_trips(s in "\\PC{0,40}") {
        let e = escape_path(&s);
        prop_assert!(e.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~$&+,/:;=@%".contains(&b)));
        prop_assert_eq!(percent_decode(&e, false), s.as_bytes());
    }

    #[test]
    fn query_escaping_round_trips(s in "\\PC{0,40}") {
        let e = query_escape(&s);
        prop_assert!(e.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%+".contains(&b)));
        prop_assert_eq!(percent_decode(&e, true), s.as_bytes());
    }

    #[test]
    fn forms_parse_back_sorted(pairs in proptest::collection::vec(("[a-zA-Z]{1,6}", "\\PC{0,12}"), 0..6)) {
        let borrowed: Vec<(&str, String)> = pairs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let encoded = encode_form(&borrowed);
        let decoded: Vec<(String, String)> = if encoded.is_empty() {
            Vec::new()
        } else {
            encoded
                .split('&')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    (
                        String::from_utf8(percent_decode(k, true)).unwrap(),
                        String::from_utf8(percent_decode(v, true)).unwrap(),
                    )
                })
                .collect()
        };
        let mut model = pairs.clone();
        model.sort_by(|a, b| a.0.cmp(&b.0));
        prop_assert_eq!(decoded, model);
    }

    #[test]
    fn canonical_path_matches_model(p in "(/|a|b|\\.|\\.\\.|x y){0,12}") {
        let c = canonical_url_path(&format!("/v2/keys{p}"));
        prop_assert_eq!(&c, &canonical_model(&format!("/v2/keys{p}")));
        prop_assert_eq!(canonical_url_path(&c), c.clone());
        prop_assert!(!c.contains("//"));
    }

    #[test]
    fn go_quote_round_trips(s in "\\PC{0,30}|[\\x00-\\x1f\"\\\\]{0,10}") {
        let q = go_quote(&s);
        prop_assert!(q.starts_with('"') && q.ends_with('"'));
        prop_assert_eq!(go_unquote(&q), s);
    }

    #[test]
    fn decoders_never_panic(status in 100u16..600, body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let resp = HttpResponse { status, headers: vec![("X-Etcd-Index".into(), "x".into())], body: body.clone() };
        let _ = decode_keys_response("http://e:1", &resp);
        let _ = Health::parse(&body);
    }

    #[test]
    fn failover_answers_from_the_endpoint_the_model_predicts(
        n in 1usize..5,
        first_pin in 0usize..5,
        outcomes in proptest::collection::vec(outcome(), 5),
        one_shot in any::<bool>(),
    ) {
        let eps: Vec<String> = (0..n).map(|i| format!("http://e{i}:1")).collect();
        let s = Arc::new(Scripted::default());
        let client = ClientBuilder::new(&eps).transport(s.clone()).build().unwrap();
        // Pin endpoint `first_pin % n` by making it answer a first request.
        let pin = first_pin % n;
        for ep in eps.iter().take(pin) {
            s.push(ep, Canned::Error(TransportErrorKind::Connect, "refused"));
        }
        s.push(&eps[pin], Canned::Response(200, vec![], "{\"members\":[]}".into()));
        client.members().unwrap();
        s.log.lock().clear();
        for (i, ep) in eps.iter().enumerate() {
            let canned = match outcomes[i] {
                Outcome::Ok => Canned::Response(200, vec![], "{\"members\":[]}".into()),
                Outcome::Refused => Canned::Error(TransportErrorKind::Connect, "refused"),
                Outcome::Reset => Canned::Error(TransportErrorKind::Io, "reset"),
                Outcome::NoLeader => Canned::Response(503, vec![], String::new()),
                Outcome::BadGateway => Canned::Response(502, vec![], String::new()),
            };
            s.push(ep, canned);
        }
        let retry = if one_shot { Retry::OneShot } else { Retry::Idempotent };
        let req = super::http::HttpRequest::new(super::http::Method::Get, "/v2/members", String::new());
        let result = client.send(&req, retry, None);

        // The model: walk from the pin; stop at the first Ok, or (one-shot) at the
        // first failure after which the request may have been sent.
        let mut tried = Vec::new();
        let mut expected: Result<usize, bool> = Err(false); // Err(true): stopped early
        for k in (pin..pin + n).map(|i| i % n) {
            tried.push(k);
            match outcomes[k] {
                Outcome::Ok => { expected = Ok(k); break; }
                Outcome::Refused => {}
                _ if one_shot => { expected = Err(true); break; }
                _ => {}
            }
        }
        let sent: Vec<String> = s.sent().into_iter().map(|(e, _, _)| e).collect();
        let want_sent: Vec<String> = tried.iter().map(|k| eps[*k].clone()).collect();
        prop_assert_eq!(sent, want_sent);
        match (expected, result) {
            (Ok(k), Ok((ep, _))) => {
                prop_assert_eq!(&ep, &eps[k]);
                // The answering endpoint is pinned for the next request.
                s.push(&eps[k], Canned::Response(200, vec![], "{\"members\":[]}".into()));
                s.log.lock().clear();
                client.members().unwrap();
                prop_assert_eq!(&s.sent()[0].0, &eps[k]);
            }
            (Err(true), Err(ClientError::Endpoint(e))) => {
                prop_assert_eq!(e.endpoint(), eps[*tried.last().unwrap()].as_str());
                prop_assert!(!e.nothing_sent());
            }
            (Err(false), Err(ClientError::ClusterUnavailable { errors })) => {
                prop_assert_eq!(errors.len(), n);
                let eps_of: Vec<&str> = errors.iter().map(EndpointError::endpoint).collect();
                let want: Vec<&str> = tried.iter().map(|k| eps[*k].as_str()).collect();
                prop_assert_eq!(eps_of, want);
            }
            (want, got) => prop_assert!(false, "model {:?}, got {:?}", want, got.map(|r| r.0)),
        }
    }
}
