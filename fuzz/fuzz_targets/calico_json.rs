//! Calico's datastore values and calicoctl's rule words from arbitrary text.
//!
//! The input is UTF-8 text, one item per line (seeds are real 0.22 data from the
//! walkthrough, fuzz/corpus/calico_json/):
//! * every line goes through every value parser of `calico-model` — pool, workload
//!   endpoint, profile rules / tags / labels, MAC, port range, protocol, AS number, CIDR
//!   key segment, key classification — and `ipam`'s block / handle JSON; whatever parses
//!   must serialize and parse back equal (and key kinds must rebuild to a key of the same
//!   kind);
//! * a line `/calico/... <value>` (first space splits key from value; `-` alone deletes)
//!   is applied to felix's `ClusterState` as a watch event would; after all lines every
//!   host's dataplane plan is rendered (both routing modes) and the compiled policy built:
//!   invalid data must be reported as problems, never panic;
//! * a line `rule <words>` is parsed as `calicoctl profile <P> rule add <words>`; a rule
//!   that parses prints (`rule show`) as words that parse back to the same rule, and its
//!   JSON round-trips.
#![no_main]

use std::str::FromStr;

use calico_model::dataplane::{render_host, RenderOptions, Routing};
use calico_model::layout::{self, classify, KeyKind};
use calico_model::model::{parse_as_number, MacAddr, Pool, Profile, WorkloadEndpoint};
use calico_model::policy::Policy;
use calico_model::rule::{PortRange, Protocol, Rule, Rules};
use calico_model::state::ClusterState;
use libfuzzer_sys::fuzz_target;

#[allow(dead_code, missing_docs)]
#[path = "../../examples/calicoctl/app/rule_args.rs"]
mod rule_args;

fn value_parsers(text: &str) {
    if let Ok(pool) = Pool::from_json(text) {
        assert_eq!(Pool::from_json(&pool.to_json()).ok(), Some(pool));
    }
    if let Ok(ep) = WorkloadEndpoint::from_json(text) {
        let json = ep.to_json();
        assert_eq!(WorkloadEndpoint::from_json(&json).ok(), Some(ep), "{json}");
    }
    if let Ok(rules) = Rules::from_json(text) {
        let json = rules.to_json();
        assert_eq!(Rules::from_json(&json).ok(), Some(rules), "{json}");
    }
    if let Ok(tags) = Profile::tags_from_json(text) {
        assert_eq!(
            Profile::tags_from_json(&Profile::tags_to_json(&tags)).ok(),
            Some(tags)
        );
    }
    if let Ok(labels) = Profile::labels_from_json(text) {
        assert_eq!(
            Profile::labels_from_json(&Profile::labels_to_json(&labels)).ok(),
            Some(labels)
        );
    }
    if let Ok(mac) = MacAddr::from_str(text) {
        assert_eq!(MacAddr::from_str(&mac.to_string()).ok(), Some(mac));
    }
    if let Ok(range) = PortRange::parse(text) {
        assert_eq!(PortRange::parse(&range.to_string()).ok(), Some(range));
        assert!(range.lo() <= range.hi());
    }
    if let Ok(p) = Protocol::parse(text) {
        assert_eq!(Protocol::parse(&p.to_string()).ok(), Some(p));
    }
    if let Ok(n) = parse_as_number(text) {
        assert_eq!(parse_as_number(&n.to_string()).ok(), Some(n));
    }
    if let Ok(net) = layout::parse_cidr_segment(text) {
        assert_eq!(
            layout::parse_cidr_segment(&layout::cidr_segment(&net)).ok(),
            Some(net)
        );
    }
    if let Ok(block) = ipam::Block::from_json(text) {
        assert_eq!(ipam::Block::from_json(&block.to_json()).ok(), Some(block));
    }
    if let Ok(handle) = ipam::Handle::from_json(text) {
        assert_eq!(
            ipam::Handle::from_json(&handle.to_json()).ok(),
            Some(handle)
        );
    }
}

/// A key kind rebuilt into a key classifies as the same kind.
fn key_round_trip(key: &str) {
    let kind = classify(key);
    let rebuilt = match &kind {
        KeyKind::Ready | KeyKind::Other | KeyKind::BgpGlobalAs | KeyKind::BgpNodeMesh => return,
        KeyKind::GlobalConfig(p) => layout::global_config(p),
        KeyKind::HostBirdIp(h) => layout::host_bird_ip(h),
        KeyKind::HostConfig { host, param } => layout::host_config(host, param),
        KeyKind::Endpoint(k) => layout::endpoint(k),
        KeyKind::Pool(net) => layout::pool(net),
        KeyKind::ProfileTags(p) => layout::profile_tags(p),
        KeyKind::ProfileRules(p) => layout::profile_rules(p),
        KeyKind::ProfileLabels(p) => layout::profile_labels(p),
        KeyKind::BgpHostIpv4(h) => layout::bgp_host_ipv4(h),
        KeyKind::BgpHostIpv6(h) => layout::bgp_host_ipv6(h),
        KeyKind::BgpHostAs(h) => layout::bgp_host_as(h),
        KeyKind::Affinity { host, block } => layout::ipam_host_affinity(host, block),
        KeyKind::Block(net) => layout::ipam_block(net),
    };
    assert_eq!(classify(&rebuilt), kind, "{key:?} rebuilt as {rebuilt:?}");
}

fn rule_words(line: &str) {
    let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    let Ok(rule) = rule_args::parse_rule(&words) else {
        return;
    };
    let shown = rule.to_string();
    let again: Vec<String> = shown.split_whitespace().map(str::to_string).collect();
    assert_eq!(
        rule_args::parse_rule(&again).ok().as_ref(),
        Some(&rule),
        "{line:?} shown as {shown:?}"
    );
    let json = serde_json::to_string(&rule).expect("a rule serializes");
    let back: Rule = serde_json::from_str(&json).expect("a parsed rule's JSON parses");
    assert_eq!(back, rule, "{json}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    value_parsers(text);
    let mut state = ClusterState::new();
    for line in text.lines().take(64) {
        value_parsers(line);
        if let Some(words) = line.strip_prefix("rule ") {
            rule_words(words);
            continue;
        }
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        key_round_trip(key);
        if key.starts_with("/calico") {
            let value = (value != "-").then_some(value);
            state.apply_key(key, value);
        }
    }
    let mut hosts: Vec<String> = state.hosts.keys().cloned().collect();
    hosts.extend(state.endpoints.keys().map(|k| k.host.clone()));
    hosts.sort();
    hosts.dedup();
    hosts.truncate(4);
    for host in &hosts {
        for routing in [Routing::Static, Routing::Bird] {
            let opts = RenderOptions {
                routing,
                ipip_as_vxlan: true,
                gateway_route_via_lo: false,
            };
            let _ = render_host(&state, host, opts);
        }
    }
    let _ = Policy::new(&state);
});
