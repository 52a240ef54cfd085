//! Golden replays of Docker's plugin conversations (spec/libnetwork.md §2–§6): each file in
//! `tests/fixtures/libnetwork/` is one scenario, named after the behaviour it pins down,
//! replayed against an in-process plugin (real server, real driver, Calico IPAM over an
//! in-memory datastore, fake host links) with Docker's framing.
//!
//! # Scenario format
//!
//! ```json
//! {"description": "...", "host": "dockera", "pools": ["192.168.0.0/16"],
//!  "steps": [
//!    {"call": "IpamDriver.RequestAddress", "request": {...} | null, "raw_body": "...",
//!     "status": 200, "response": {...}},
//!    {"expect_keys": {"/calico/...": <JSON value> | "<raw string>" | null}},
//!    {"expect_links": {"cali6f0c2d9b7a1": {"peer": "tmp6f0c2d9b7a1", "mac": "...",
//!                                         "addresses": ["192.168.0.10/32"], "builds": 1}}},
//!    {"expect_held": ["192.168.0.10", "${auto}"]},
//!    {"hold_as_calicoctl": "192.168.0.20"},
//!    {"put": {"/calico/...": "<raw value>"}}, {"delete_pool": "192.168.0.0/16"},
//!    {"fail_next_veth": "RTNETLINK answers: Operation not permitted"}
//!  ]}
//! ```
//!
//! `pools` are added through the IPAM client (as `calicoctl pool add` does). Expected
//! strings may contain one `${name}`: the first time a name is seen it captures the
//! matching part of the actual value (e.g. `"${auto}/32"` captures the address of an
//! auto-assignment, whose block is chosen pseudo-randomly per host); afterwards, and in
//! requests and keys, `${name}` is replaced by what was captured. `expect_keys` compares
//! JSON values structurally and raw strings exactly; `null` means "absent".
//! `expect_links` is the exact set of host veths; `expect_held` the exact set of
//! addresses held under this host's plugin handles. Every scenario ends with Calico
//! IPAM's consistency check, with the handles of the addresses endpoints still use as the
//! live set: nothing may leak.

mod libnetwork_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use libnetwork_support::{assert_no_leaks, fixture_path, Harness};
use serde_json::{Map, Value};

/// Captured `${name}` values.
#[derive(Default)]
struct Vars(BTreeMap<String, String>);

impl Vars {
    /// Replaces every `${name}` whose value is known.
    fn substitute(&self, s: &str) -> String {
        let mut out = s.to_string();
        for (k, v) in &self.0 {
            out = out.replace(&format!("${{{k}}}"), v);
        }
        out
    }

    fn substitute_value(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.substitute(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.substitute_value(x)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| (self.substitute(k), self.substitute_value(x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Matches `actual` against `expected`, capturing unknown `${name}`s.
    fn matches(&mut self, expected: &Value, actual: &Value) -> Result<(), String> {
        match (expected, actual) {
            (Value::String(e), Value::String(a)) => self.match_str(e, a),
            (Value::Array(e), Value::Array(a)) => {
                if e.len() != a.len() {
                    return Err(format!("expected {expected}, got {actual}"));
                }
                for (x, y) in e.iter().zip(a) {
                    self.matches(x, y)?;
                }
                Ok(())
            }
            (Value::Object(e), Value::Object(a)) => {
                let ek: BTreeSet<&String> = e.keys().collect();
                let ak: BTreeSet<&String> = a.keys().collect();
                if ek != ak {
                    return Err(format!("expected keys {ek:?}, got {ak:?} in {actual}"));
                }
                for (k, x) in e {
                    let y = a.get(k).ok_or_else(|| format!("missing {k}"))?;
                    self.matches(x, y).map_err(|m| format!("{k}: {m}"))?;
                }
                Ok(())
            }
            (e, a) if e == a => Ok(()),
            _ => Err(format!("expected {expected}, got {actual}")),
        }
    }

    fn match_str(&mut self, expected: &str, actual: &str) -> Result<(), String> {
        let expected = self.substitute(expected);
        let Some(start) = expected.find("${") else {
            return if expected == actual {
                Ok(())
            } else {
                Err(format!("expected {expected:?}, got {actual:?}"))
            };
        };
        let end = expected[start..]
            .find('}')
            .map(|i| start + i)
            .ok_or_else(|| format!("unclosed placeholder in {expected:?}"))?;
        let (prefix, name, suffix) = (
            &expected[..start],
            &expected[start + 2..end],
            &expected[end + 1..],
        );
        let middle = actual
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(suffix))
            .filter(|m| !m.is_empty())
            .ok_or_else(|| format!("{actual:?} does not match {expected:?}"))?;
        self.0.insert(name.to_string(), middle.to_string());
        Ok(())
    }
}

fn run_scenario(file: &str) {
    let path = fixture_path(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let scenario: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file} is not JSON: {e}"));
    let host = scenario
        .get("host")
        .and_then(Value::as_str)
        .unwrap_or("dockera");
    let harness = Harness::start(host);
    for cidr in scenario
        .get("pools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let cidr: IpNetwork = cidr
            .as_str()
            .and_then(|c| c.parse().ok())
            .expect("pool CIDR");
        harness
            .ipam
            .ipam()
            .add_pool(ipam::Pool::new(cidr))
            .expect("add pool");
    }
    let mut vars = Vars::default();
    let steps = scenario
        .get("steps")
        .and_then(Value::as_array)
        .expect("steps");
    for (i, step) in steps.iter().enumerate() {
        let at = format!("{file} step {i}");
        run_step(&harness, &mut vars, step, &at);
    }
    assert_no_leaks(&harness, file);
}

fn run_step(h: &Harness, vars: &mut Vars, step: &Value, at: &str) {
    if let Some(method) = step.get("call").and_then(Value::as_str) {
        let answer = match (step.get("raw_body"), step.get("request")) {
            (Some(Value::String(raw)), _) => h.call_raw(method, raw.as_bytes()),
            (_, Some(Value::Null) | None) => h.call(method, None),
            (_, Some(body)) => h.call(method, Some(&vars.substitute_value(body))),
        };
        let status = step.get("status").and_then(Value::as_u64).unwrap_or(200);
        assert_eq!(
            u64::from(answer.status),
            status,
            "{at} {method}: status; body {}",
            answer.raw
        );
        assert_eq!(
            answer.content_type.as_deref(),
            Some("application/vnd.docker.plugins.v1.2+json"),
            "{at}"
        );
        if let Some(expected) = step.get("response") {
            if let Err(m) = vars.matches(expected, &answer.body) {
                panic!("{at} {method}: {m}\n  full response: {}", answer.raw);
            }
        }
    }
    if let Some(Value::Object(keys)) = step.get("expect_keys") {
        for (key, expected) in keys {
            let key = vars.substitute(key);
            let actual = h.value(&key);
            match (expected, actual) {
                (Value::Null, None) => {}
                (Value::Null, Some(v)) => panic!("{at}: {key} should be absent, holds {v}"),
                (_, None) => panic!("{at}: {key} is missing"),
                (Value::String(raw), Some(v)) => {
                    if let Err(m) = vars.match_str(raw, &v) {
                        panic!("{at}: {key}: {m}");
                    }
                }
                (json, Some(v)) => {
                    let parsed: Value = serde_json::from_str(&v)
                        .unwrap_or_else(|e| panic!("{at}: {key} holds non-JSON {v:?}: {e}"));
                    if let Err(m) = vars.matches(json, &parsed) {
                        panic!("{at}: {key}: {m}");
                    }
                }
            }
        }
    }
    if let Some(Value::Object(expected)) = step.get("expect_links") {
        let links = h.links.links();
        let mut actual = Map::new();
        for (name, veth) in links {
            let addresses: Vec<Value> = veth
                .spec
                .addresses
                .iter()
                .map(|a| Value::String(a.to_string()))
                .collect();
            actual.insert(
                name,
                serde_json::json!({"peer": veth.spec.peer, "mac": veth.spec.peer_mac,
                    "addresses": addresses, "builds": veth.builds}),
            );
        }
        let expected = vars.substitute_value(&Value::Object(expected.clone()));
        if let Err(m) = vars.matches(&expected, &Value::Object(actual)) {
            panic!("{at}: links: {m}");
        }
    }
    if let Some(Value::Array(expected)) = step.get("expect_held") {
        let held: Vec<String> = h.held().iter().map(|a| a.address.to_string()).collect();
        let mut expected: Vec<String> = expected
            .iter()
            .filter_map(Value::as_str)
            .map(|s| vars.substitute(s))
            .collect();
        expected.sort();
        let mut held_sorted = held.clone();
        held_sorted.sort();
        assert_eq!(held_sorted, expected, "{at}: addresses held by the plugin");
    }
    if let Some(addr) = step.get("hold_as_calicoctl").and_then(Value::as_str) {
        let addr: IpAddr = addr.parse().expect("address");
        h.ipam
            .ipam()
            .assign_ip(addr, None, &ipam::Attrs::empty(), "otherhost")
            .expect("calicoctl-style assignment");
    }
    if let Some(Value::Object(puts)) = step.get("put") {
        for (key, value) in puts {
            let value = value.as_str().expect("put values are raw strings");
            h.store.put(key, value).expect("put");
        }
    }
    if let Some(cidr) = step.get("delete_pool").and_then(Value::as_str) {
        let cidr: IpNetwork = cidr.parse().expect("pool CIDR");
        h.ipam.ipam().delete_pool(cidr).expect("delete pool");
    }
    if let Some(stderr) = step.get("fail_next_veth").and_then(Value::as_str) {
        h.links.fail_next_create(stderr);
    }
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_scenario(concat!(stringify!($name), ".json"));
            }
        )*

        /// Every fixture file is replayed by one of the tests above.
        #[test]
        fn every_fixture_is_replayed() {
            let listed: BTreeSet<String> =
                [$(concat!(stringify!($name), ".json")),*].iter().map(|s| s.to_string()).collect();
            let dir = fixture_path("");
            let mut found = BTreeSet::new();
            for entry in std::fs::read_dir(&dir).expect("fixture dir") {
                let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
                if name.ends_with(".json") {
                    found.insert(name);
                }
            }
            assert_eq!(found, listed, "fixtures on disk vs scenarios listed in libnetwork_replay.rs");
        }
    };
}

scenarios!(
    handshake,
    tutorial_default_ipam,
    calico_ipam_lifecycle,
    request_pool_rules,
    request_address_errors,
    release_is_guarded,
    cleanup_is_idempotent,
    network_options,
    join_failures_leave_nothing,
);
