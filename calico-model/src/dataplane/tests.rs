//! Rendering tests: the tutorial's plan, structural invariants, and agreement between
//! the rendered rules (run by [`super::sim`]) and [`crate::policy`].

use std::net::IpAddr;

use proptest::prelude::*;

use super::sim::{ClusterSim, Netfilter, Outcome, SimPacket};
use super::*;
use crate::policy::{self, Packet};
use crate::rule::{Action, PortRange, Protocol, Rule, Rules};
use crate::scenario::Scenario;

fn walkthrough_plan(host: &str) -> (ClusterState, HostPlan) {
    let state = Scenario::walkthrough().state();
    let plan = render_host(&state, host, RenderOptions::default()).unwrap();
    (state, plan)
}

/// Loads a plan into the interpreter the way `crate::linux` applies it: ipsets first,
/// then the tables.
pub(crate) fn load(plan: &HostPlan) -> Netfilter {
    let mut nf = Netfilter::new();
    nf.ipset_restore(&plan.ipset_restore()).unwrap();
    nf.restore(&plan.filter.to_restore(), false).unwrap();
    nf.restore(&plan.nat.to_restore(), false).unwrap();
    nf
}

fn iface(state: &ClusterState, workload: &str) -> String {
    state
        .endpoints
        .iter()
        .find(|(k, _)| k.workload == workload)
        .map(|(_, e)| e.name.clone())
        .unwrap()
}

#[test]
fn walkthrough_plan_has_felix_layout() {
    let (state, plan) = walkthrough_plan("hostA");
    let c1 = iface(&state, "centos-1");
    let c2 = iface(&state, "centos-2");
    assert_eq!(plan.interfaces.keys().cloned().collect::<Vec<_>>(), {
        let mut v = vec![c1.clone(), c2.clone()];
        v.sort();
        v
    });
    let f = &plan.filter;
    let from1 = format!("felix-from-{}", &c1[4..]);
    assert_eq!(
        f.chains[&from1],
        vec![
            "-j MARK --set-xmark 0x0/0x1000000".to_string(),
            format!(
                "-m mac ! --mac-source {} -j DROP",
                crate::scenario::mac_for("centos-1")
            ),
            "-j felix-p-myprofile1-o".to_string(),
            "-m mark --mark 0x1000000/0x1000000 -j RETURN".to_string(),
            format!(
                "-m comment --comment \"Packet did not match any profile (endpoint {})\" -j DROP",
                state
                    .endpoints
                    .keys()
                    .find(|k| k.workload == "centos-1")
                    .unwrap()
            ),
        ]
    );
    assert_eq!(
        f.chains["felix-p-myprofile1-i"],
        vec![
            "-m set --match-set felix-v4-myprofile1 src -j MARK --set-xmark 0x1000000/0x1000000",
            "-m mark --mark 0x1000000/0x1000000 -j RETURN"
        ]
    );
    assert_eq!(
        f.chains["felix-p-myprofile1-o"][0],
        "-j MARK --set-xmark 0x1000000/0x1000000"
    );
    // Tag sets hold every endpoint of the tag, on every host.
    let set = &plan.ipsets["felix-v4-myprofile1"];
    assert_eq!(
        set.members.iter().cloned().collect::<Vec<_>>(),
        vec!["10.20.10.1", "10.20.10.3"]
    );
    assert_eq!(plan.ipsets["felix-v4-myprofile2"].members.len(), 1);
    // Routes: local /32s, hostB's block via hostB, own block blackholed.
    let r = |s: &str| {
        plan.routes
            .get(&s.parse().unwrap())
            .map(ToString::to_string)
    };
    assert_eq!(
        r("10.20.10.1/32"),
        Some(format!("10.20.10.1/32 dev {c1} scope link"))
    );
    assert_eq!(
        r("10.20.10.64/26").as_deref(),
        Some("10.20.10.64/26 via 10.77.0.2")
    );
    assert_eq!(
        r("10.20.10.0/26").as_deref(),
        Some("blackhole 10.20.10.0/26")
    );
    // centos-3 (on hostB) borrowed .3 from hostA's block: a /32 beats the blackhole.
    assert_eq!(
        r("10.20.10.3/32").as_deref(),
        Some("10.20.10.3/32 via 10.77.0.2")
    );
    // nat-outgoing.
    assert!(plan.nat.chains["felix-POSTROUTING"]
        .iter()
        .any(|r| r.contains("MASQUERADE")));
    assert_eq!(
        plan.ipsets["felix-masq-ipam-pools"]
            .members
            .iter()
            .collect::<Vec<_>>(),
        vec!["10.20.10.0/24"]
    );
    // Proxy ARP on the workload interfaces.
    assert!(plan.interfaces[&c1]
        .sysctls()
        .contains(&(format!("net.ipv4.conf.{c1}.proxy_arp"), "1".into())));
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    // RETURN is calico-node's per-host DefaultEndpointToHostAction.
    assert_eq!(
        f.chains["felix-INPUT"].last().unwrap(),
        "-j felix-FROM-ENDPOINT"
    );
}

#[test]
fn rendering_is_deterministic_and_loads_cleanly() {
    for host in ["hostA", "hostB", "hostC"] {
        let (state, plan) = walkthrough_plan(host);
        assert_eq!(
            plan,
            render_host(&state, host, RenderOptions::default()).unwrap()
        );
        let nf = load(&plan);
        let mut nf6 = Netfilter::new();
        nf6.ipset_restore(&plan.ipset_restore()).unwrap();
        nf6.restore(&plan.filter6.to_restore(), false).unwrap();
        assert!(nf.has_chain("filter", "felix-FORWARD"));
    }
}

#[test]
fn walkthrough_interpreted_rules_match_policy() {
    let state = Scenario::walkthrough().state();
    let plans: BTreeMap<&str, Netfilter> = ["hostA", "hostB"]
        .into_iter()
        .map(|h| {
            (
                h,
                load(&render_host(&state, h, RenderOptions::default()).unwrap()),
            )
        })
        .collect();
    let mut checked = 0;
    for (sk, s) in &state.endpoints {
        for (dk, d) in &state.endpoints {
            if sk == dk {
                continue;
            }
            for (proto, port) in [(Protocol::Icmp, None), (Protocol::Tcp, Some(80))] {
                let (sa, da) = policy::pick_addresses(s, d).unwrap();
                let p = Packet::new(sa, da, proto, port);
                let want = policy::decide(&state, Some((sk, s)), Some((dk, d)), &p).is_allowed();
                assert_eq!(
                    forward(&plans, sk, s, dk, d, &p),
                    want,
                    "{sk} -> {dk} {proto}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 12);
    // The library's ClusterSim gives the same answers.
    let sim = ClusterSim::new(&state, RenderOptions::default()).unwrap();
    for (sk, s) in &state.endpoints {
        for (dk, d) in &state.endpoints {
            if sk != dk {
                let (sa, da) = policy::pick_addresses(s, d).unwrap();
                let p = Packet::new(sa, da, Protocol::Icmp, None);
                assert_eq!(
                    sim.forward((sk, s), (dk, d), &p).unwrap(),
                    policy::allowed(&state, sk, dk, Protocol::Icmp, None)
                );
            }
        }
    }
    let c1 = state
        .endpoints
        .keys()
        .find(|k| k.workload == "centos-1")
        .unwrap();
    let c3 = state
        .endpoints
        .keys()
        .find(|k| k.workload == "centos-3")
        .unwrap();
    let c2 = state
        .endpoints
        .keys()
        .find(|k| k.workload == "centos-2")
        .unwrap();
    assert!(policy::allowed(&state, c1, c3, Protocol::Icmp, None));
    assert!(!policy::allowed(&state, c1, c2, Protocol::Icmp, None));
}

/// Runs a packet through the source host's and then the destination host's FORWARD
/// chain (one host when they share it); true when both accept.
fn forward(
    plans: &BTreeMap<&str, Netfilter>,
    sk: &EndpointKey,
    s: &WorkloadEndpoint,
    dk: &EndpointKey,
    d: &WorkloadEndpoint,
    p: &Packet,
) -> bool {
    let run = |host: &str, in_if: &str, out_if: &str| {
        let nf = &plans[host];
        let mut sp = SimPacket::from_policy(p, Some(in_if), Some(out_if), s.mac);
        nf.traverse("filter", "FORWARD", &mut sp).unwrap() == Outcome::Accept
    };
    if sk.host == dk.host {
        run(&sk.host, &s.name, &d.name)
    } else {
        run(&sk.host, &s.name, "eth0") && run(&dk.host, "eth0", &d.name)
    }
}

#[test]
fn dispatch_uses_leaf_chains_for_shared_first_characters() {
    let ctx = Ctx::new(FelixConfig::default());
    let chains: BTreeMap<String, Vec<String>> = ctx
        .dispatch_chains(["caliaa", "caliab", "calib1"].into_iter())
        .into_iter()
        .collect();
    assert_eq!(
        chains["felix-FROM-ENDPOINT"],
        vec![
            "-i calia+ -g felix-FROM-EP-PFX-a",
            "-i calib1 -g felix-from-b1",
            "-m comment --comment \"Unknown interface\" -j DROP"
        ]
    );
    assert_eq!(chains["felix-TO-EP-PFX-a"][1], "-o caliab -g felix-to-ab");
}

#[test]
fn long_port_lists_split_into_multiport_chunks() {
    let ports: Vec<PortRange> = (1..=20).map(PortRange::single).collect();
    let chunks = port_chunks(Some(&ports));
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[0].as_deref().map(|c| c.split(',').count()), Some(15));
    let ranges: Vec<PortRange> = (0..8)
        .map(|i| PortRange::new(i * 10, i * 10 + 5).unwrap())
        .collect();
    assert_eq!(
        port_chunks(Some(&ranges)).len(),
        2,
        "ranges count two slots"
    );
    assert_eq!(port_chunks(Some(&[])), vec![None]);
    let ctx = Ctx::new(FelixConfig::default());
    let rule = Rule {
        protocol: Some(Protocol::Tcp),
        src_ports: Some(ports.clone()),
        dst_ports: Some(ports),
        ..Rule::new(Action::Deny)
    };
    assert_eq!(
        ctx.render_rule(&rule, true, &mut BTreeSet::new()).len(),
        4,
        "cross product of chunks"
    );
}

#[test]
fn missing_profiles_render_stub_chains() {
    let state = Scenario::new()
        .host("h", "10.0.0.1")
        .endpoint("h", "w", "10.1.0.1/32", &["ghost"])
        .state();
    let plan = render_host(&state, "h", RenderOptions::default()).unwrap();
    assert_eq!(
        plan.filter.chains["felix-p-ghost-i"],
        vec!["-m comment --comment \"WARNING Missing chain: profile ghost\" -j DROP"]
    );
}

#[test]
fn family_specific_rules_land_in_their_table_only() {
    let rules = Rules {
        inbound_rules: vec![
            Rule {
                src_net: Some("10.0.0.0/8".parse().unwrap()),
                ..Rule::new(Action::Allow)
            },
            Rule {
                src_net: Some("fd00::/8".parse().unwrap()),
                ..Rule::new(Action::Allow)
            },
            Rule {
                protocol: Some(Protocol::Icmpv6),
                icmp_type: Some(128),
                ..Rule::new(Action::Allow)
            },
        ],
        outbound_rules: vec![],
    };
    let state = Scenario::new()
        .host("h", "10.0.0.1")
        .rules("p", &rules)
        .endpoint("h", "w", "10.1.0.1/32", &["p"])
        .state();
    let plan = render_host(&state, "h", RenderOptions::default()).unwrap();
    assert_eq!(plan.filter.chains["felix-p-p-i"].len(), 2);
    let v6 = &plan.filter6.chains["felix-p-p-i"];
    assert_eq!(v6.len(), 4);
    assert!(v6[2].starts_with("-p icmpv6 -m icmp6 --icmpv6-type 128 "));
}

#[test]
fn ipip_vxlan_and_bird_options() {
    let mut pool = crate::model::Pool::new("10.20.10.0/24".parse().unwrap());
    pool.ipip = true;
    let sc = Scenario::walkthrough()
        .pool(&pool)
        .set(&crate::layout::global_config("IpInIpEnabled"), "true");
    let state = sc.state();
    let ipip = render_host(&state, "hostA", RenderOptions::default()).unwrap();
    assert_eq!(
        ipip.tunnel,
        Some(Tunnel::IpIp {
            mtu: 1440,
            address: None
        })
    );
    assert_eq!(
        ipip.routes[&"10.20.10.64/26".parse().unwrap()].to_string(),
        "10.20.10.64/26 via 10.77.0.2 dev tunl0 onlink"
    );
    assert!(ipip.filter.chains["felix-INPUT"][0]
        .starts_with("-p 4 -m set ! --match-set felix-calico-hosts-4"));
    let opts = RenderOptions {
        ipip_as_vxlan: true,
        ..RenderOptions::default()
    };
    let vx = render_host(&state, "hostA", opts).unwrap();
    assert!(matches!(vx.tunnel, Some(Tunnel::Vxlan { .. })));
    assert_eq!(
        vx.routes[&"10.20.10.64/26".parse().unwrap()].to_string(),
        "10.20.10.64/26 via 10.77.0.2 dev vxlan.calico onlink"
    );
    let remote: IpAddr = "10.77.0.2".parse().unwrap();
    assert!(vx
        .neighbors
        .iter()
        .any(|n| n.ip == remote && n.dev == "vxlan.calico"));
    assert!(vx.fdb.iter().any(|f| f.dst == remote));
    assert!(vx.filter.chains["felix-INPUT"][0].contains("--dport 4789"));
    let bird = render_host(
        &state,
        "hostA",
        RenderOptions {
            routing: Routing::Bird,
            ..opts
        },
    )
    .unwrap();
    assert!(
        bird.routes.keys().all(|d| d.prefix() == 32),
        "only local routes with BIRD"
    );
    let conf = bird.bird_conf.unwrap();
    assert!(conf.contains("protocol bgp Mesh_10_77_0_2"));
    assert!(conf.contains("route 10.20.10.0/26 blackhole;"));
}

#[test]
fn endpoints_without_the_prefix_are_reported_not_programmed() {
    let mut sc = Scenario::new().host("h", "10.0.0.1");
    let (key, mut ep) = Scenario::make_endpoint("h", "w", "10.1.0.1/32", &[]);
    ep.name = "tap12345".into();
    sc = sc.set(&crate::layout::endpoint(&key), &ep.to_json());
    let plan = render_host(&sc.state(), "h", RenderOptions::default()).unwrap();
    assert!(plan.interfaces.is_empty());
    assert_eq!(plan.warnings.len(), 1);
}

// ---------------------------------------------------------------- property test

/// Profile names used by the generator ("ghost" is never defined).
const PROFILES: [&str; 4] = ["p0", "p1", "p2", "ghost"];
const TAGS: [&str; 4] = ["p0", "p1", "p2", "extra"];

fn arb_rule() -> impl Strategy<Value = Rule> {
    let proto = prop_oneof![
        Just(None),
        Just(Some(Protocol::Tcp)),
        Just(Some(Protocol::Udp)),
        Just(Some(Protocol::Icmp))
    ];
    let tag = prop_oneof![
        Just(None),
        (0..TAGS.len()).prop_map(|i| Some(TAGS[i].to_string()))
    ];
    let net = prop_oneof![
        3 => Just(None),
        1 => (0u8..8, 24u8..=32).prop_map(|(x, len)| Some(format!("10.20.10.{}/{len}", x).parse::<ipnetwork::IpNetwork>().unwrap())),
        1 => Just(Some("0.0.0.0/0".parse().unwrap())),
    ];
    let ports = prop_oneof![
        3 => Just(None),
        1 => proptest::collection::vec(prop_oneof![Just(22u16), Just(80), Just(443)], 1..3)
            .prop_map(|v| Some(v.into_iter().map(PortRange::single).collect::<Vec<_>>())),
        1 => Just(Some(vec![PortRange::new(1, 100).unwrap()])),
    ];
    let action =
        prop_oneof![3 => Just(Action::Allow), 2 => Just(Action::Deny), 1 => Just(Action::Log)];
    (
        action,
        proto,
        tag.clone(),
        tag,
        net.clone(),
        net,
        ports.clone(),
        ports,
        prop_oneof![
            Just(None),
            Just(Some(8u8)),
            Just(Some(0u8)),
            Just(Some(255u8))
        ],
    )
        .prop_map(
            |(
                action,
                protocol,
                src_tag,
                dst_tag,
                src_net,
                dst_net,
                src_ports,
                dst_ports,
                icmp_type,
            )| {
                let mut r = Rule {
                    action,
                    protocol,
                    src_tag,
                    dst_tag,
                    src_net,
                    dst_net,
                    ..Rule::default()
                };
                if protocol.is_some_and(Protocol::has_ports) {
                    r.src_ports = src_ports.filter(|_| false); // source ports are ephemeral: keep rare
                    r.dst_ports = dst_ports;
                }
                if protocol == Some(Protocol::Icmp) {
                    r.icmp_type = icmp_type;
                }
                r
            },
        )
}

/// Rules for profile `index`: calicoctl's defaults, allow-all, or random rules that
/// usually end in an allow (so that both verdicts are common).
fn arb_rules(index: usize) -> impl Strategy<Value = Rules> {
    let random = (
        proptest::collection::vec(arb_rule(), 0..4),
        proptest::collection::vec(arb_rule(), 0..4),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(mut inbound_rules, mut outbound_rules, close_in, close_out)| {
                if close_in {
                    inbound_rules.push(Rule::new(Action::Allow));
                }
                if close_out {
                    outbound_rules.push(Rule::new(Action::Allow));
                }
                Rules {
                    inbound_rules,
                    outbound_rules,
                }
            },
        );
    let open = Rules {
        inbound_rules: vec![Rule::new(Action::Allow)],
        outbound_rules: vec![Rule::new(Action::Allow)],
    };
    prop_oneof![
        2 => Just(Rules::profile_default(PROFILES[index])),
        1 => Just(open),
        3 => random,
    ]
}

#[derive(Debug, Clone)]
struct ArbEndpoint {
    host_b: bool,
    profiles: Vec<usize>,
    active: bool,
}

fn arb_endpoint() -> impl Strategy<Value = ArbEndpoint> {
    let profile = prop_oneof![3 => Just(0usize), 3 => Just(1), 3 => Just(2), 1 => Just(3)];
    let list = prop_oneof![1 => proptest::collection::vec(profile.clone(), 0..1), 6 => proptest::collection::vec(profile, 1..3)];
    (
        any::<bool>(),
        list,
        prop_oneof![9 => Just(true), 1 => Just(false)],
    )
        .prop_map(|(host_b, mut profiles, active)| {
            profiles.dedup();
            let mut seen = Vec::new();
            profiles.retain(|p| {
                if seen.contains(p) {
                    false
                } else {
                    seen.push(*p);
                    true
                }
            });
            ArbEndpoint {
                host_b,
                profiles,
                active,
            }
        })
}

fn build(endpoints: &[ArbEndpoint], profiles: &[(Rules, Vec<usize>)]) -> ClusterState {
    let mut sc = Scenario::new()
        .host("hostA", "10.77.0.1")
        .host("hostB", "10.77.0.2")
        .plain_pool("10.20.10.0/24");
    for (i, (rules, tags)) in profiles.iter().enumerate() {
        let name = PROFILES[i];
        let mut tags: Vec<String> = tags.iter().map(|t| TAGS[*t].to_string()).collect();
        if tags.is_empty() {
            tags.push(name.to_string()); // calicoctl's default: the profile's own name
        }
        sc = sc.profile(&crate::model::Profile {
            name: name.into(),
            tags,
            rules: rules.clone(),
            labels: Default::default(),
        });
    }
    for (i, e) in endpoints.iter().enumerate() {
        let host = if e.host_b { "hostB" } else { "hostA" };
        let profs: Vec<&str> = e.profiles.iter().map(|p| PROFILES[*p]).collect();
        let (key, mut ep) = Scenario::make_endpoint(
            host,
            &format!("w{i}"),
            &format!("10.20.10.{}/32", i + 1),
            &profs,
        );
        if !e.active {
            ep.state = crate::model::EndpointState::Inactive;
        }
        sc = sc.set(&crate::layout::endpoint(&key), &ep.to_json());
    }
    sc.state()
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// The rendered iptables + ipsets, interpreted, decide every endpoint pair and
    /// packet exactly as the reference policy does; and the compiled policy agrees too.
    #[test]
    fn rendered_rules_agree_with_policy(
        endpoints in proptest::collection::vec(arb_endpoint(), 2..7),
        profiles in (0..3usize).prop_flat_map(|_| (
            (arb_rules(0), proptest::collection::vec(0..TAGS.len(), 0..3)),
            (arb_rules(1), proptest::collection::vec(0..TAGS.len(), 0..3)),
            (arb_rules(2), proptest::collection::vec(0..TAGS.len(), 0..3)),
        )).prop_map(|(a, b, c)| vec![a, b, c]),
        packets in proptest::collection::vec((0usize..16, 0usize..16, 0usize..4, prop_oneof![Just(22u16), Just(80), Just(8080)], prop_oneof![Just(8u8), Just(0)]), 1..24),
    ) {
        let state = build(&endpoints, &profiles);
        let plans: BTreeMap<&str, Netfilter> = ["hostA", "hostB"]
            .into_iter()
            .map(|h| (h, load(&render_host(&state, h, RenderOptions::default()).unwrap())))
            .collect();
        let compiled = policy::Policy::new(&state);
        let keys: Vec<&EndpointKey> = state.endpoints.keys().collect();
        for (si, di, pi, port, icmp_type) in packets {
            let (sk, dk) = (keys[si % keys.len()], keys[di % keys.len()]);
            if sk == dk {
                continue;
            }
            let (s, d) = (&state.endpoints[sk], &state.endpoints[dk]);
            let proto = [Protocol::Tcp, Protocol::Udp, Protocol::Icmp, Protocol::Number(47)][pi];
            let (sa, da) = policy::pick_addresses(s, d).unwrap();
            let mut p = Packet::new(sa, da, proto, Some(port));
            if proto == Protocol::Icmp {
                p.icmp = Some((icmp_type, 0));
            }
            let want = policy::decide(&state, Some((sk, s)), Some((dk, d)), &p);
            prop_assert_eq!(forward(&plans, sk, s, dk, d, &p), want.is_allowed(), "{} -> {} {:?}: {:?}", sk, dk, p, want);
            if proto != Protocol::Icmp || icmp_type == 8 {
                let (cs, cd) = (compiled.endpoint_id(sk).unwrap(), compiled.endpoint_id(dk).unwrap());
                prop_assert_eq!(compiled.allowed(cs, cd, proto, Some(port)), policy::allowed(&state, sk, dk, proto, Some(port)));
            }
        }
    }
}
