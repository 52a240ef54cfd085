//! calico-model benchmarks (one entry point, three suites):
//!
//! * `policy`: compiled policy decisions (target ≥ 20 M decisions/s);
//! * `render`: rendering one host with 1,000 local endpoints and 200 profiles
//!   (target < 50 ms);
//! * `incremental`: the plan delta after one endpoint change on that host
//!   (target < 1 ms).
//!
//! Each is measured twice: wall-clock time (`.../wall`) and this thread's CPU time
//! (`.../cpu`, from `/proc/thread-self/schedstat`, tick-granular per reading but summed
//! over batches of hundreds of milliseconds) — on a shared 2-core machine the wall
//! figure includes time spent waiting for a core, the CPU figure does not.
//!
//! `cargo bench -p calico-model -- --test` runs each once (CI); plain `cargo bench`
//! measures.

use std::hint::black_box;
use std::time::{Duration, Instant};

use calico_model::dataplane::incremental::HostDataplane;
use calico_model::dataplane::{render_host, RenderOptions};
use calico_model::datastore::{Action as EventAction, Event, Node};
use calico_model::layout;
use calico_model::model::Profile;
use calico_model::policy::Policy;
use calico_model::rule::{Action, PortRange, Protocol, Rule};
use calico_model::scenario::Scenario;
use calico_model::state::ClusterState;
use criterion::{Criterion, Throughput};

/// This thread's CPU time so far, when the kernel exposes it.
fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Runs `f` `iters` times and returns the CPU time used (wall time where CPU time is
/// unavailable). The CPU clock advances in scheduler ticks, so short batches are
/// repeated until at least 20 ms of CPU time accumulated, and the average is returned.
fn cpu_time(iters: u64, mut f: impl FnMut()) -> Duration {
    let (c0, w0) = (thread_cpu(), Instant::now());
    let mut rounds = 0u32;
    loop {
        for _ in 0..iters {
            f();
        }
        rounds += 1;
        match (c0, thread_cpu()) {
            (Some(a), Some(b))
                if b.saturating_sub(a) >= Duration::from_millis(20)
                    || w0.elapsed() > Duration::from_secs(2) =>
            {
                return b.saturating_sub(a).max(Duration::from_nanos(1)) / rounds;
            }
            (Some(_), Some(_)) => {}
            _ => return w0.elapsed() / rounds,
        }
    }
}

const ENDPOINTS: usize = 1000;
const PROFILES: usize = 200;

/// 200 profiles (calicoctl defaults plus a port rule and a deny), 1,000 endpoints on
/// hostA and 1,000 on hostB, each in one or two profiles.
fn big_scenario() -> Scenario {
    let mut sc = Scenario::new()
        .host("hostA", "10.77.0.1")
        .host("hostB", "10.77.0.2")
        .plain_pool("10.0.0.0/16");
    for p in 0..PROFILES {
        let name = format!("prof{p}");
        let mut profile = Profile::with_defaults(&name);
        profile.rules.inbound_rules.insert(
            0,
            Rule {
                protocol: Some(Protocol::Tcp),
                dst_ports: Some(vec![PortRange::single(22)]),
                ..Rule::new(Action::Deny)
            },
        );
        profile.rules.inbound_rules.push(Rule {
            protocol: Some(Protocol::Tcp),
            dst_ports: Some(vec![
                PortRange::single(80),
                PortRange::new(8000, 8080).unwrap_or(PortRange::single(8000)),
            ]),
            ..Rule::new(Action::Allow)
        });
        sc = sc.profile(&profile);
    }
    for i in 0..2 * ENDPOINTS {
        let host = if i < ENDPOINTS { "hostA" } else { "hostB" };
        let p1 = format!("prof{}", i % PROFILES);
        let p2 = format!("prof{}", (i * 7 + 3) % PROFILES);
        let profiles: Vec<&str> = if i % 3 == 0 {
            vec![&p1, &p2]
        } else {
            vec![&p1]
        };
        let ip = format!("10.0.{}.{}/32", i / 250, i % 250 + 1);
        sc = sc.endpoint(host, &format!("w{i}"), &ip, &profiles);
    }
    sc
}

fn policy_suite(c: &mut Criterion, state: &ClusterState) {
    let policy = Policy::new(state);
    let keys: Vec<_> = state.endpoints.keys().collect();
    let pairs: Vec<_> = (0..1024usize)
        .map(|i| {
            let s = policy.endpoint_id(keys[(i * 37) % keys.len()]);
            let d = policy.endpoint_id(keys[(i * 101 + 13) % keys.len()]);
            (s, d, if i % 2 == 0 { 80 } else { 22 })
        })
        .filter_map(|(s, d, port)| Some((s?, d?, port)))
        .collect();
    let mut group = c.benchmark_group("policy");
    group.throughput(Throughput::Elements(pairs.len() as u64));
    let run = || {
        let mut n = 0u32;
        for (s, d, port) in &pairs {
            n += u32::from(policy.allowed(*s, *d, Protocol::Tcp, Some(*port)));
        }
        black_box(n);
    };
    group.bench_function("allowed_x1024/wall", |b| b.iter(run));
    group.bench_function("allowed_x1024/cpu", |b| {
        b.iter_custom(|iters| cpu_time(iters, run))
    });
    group.finish();
}

fn render_suite(c: &mut Criterion, state: &ClusterState) {
    let mut group = c.benchmark_group("render");
    group.sample_size(20);
    let run = || {
        let rendered = render_host(state, "hostA", RenderOptions::default());
        black_box(rendered.is_ok());
    };
    group.bench_function("host_1000_endpoints_200_profiles/wall", |b| b.iter(run));
    group.bench_function("host_1000_endpoints_200_profiles/cpu", |b| {
        b.iter_custom(|iters| cpu_time(iters, run))
    });
    group.finish();
}

fn incremental_suite(c: &mut Criterion, state: &ClusterState) {
    let Ok(mut dp) = HostDataplane::new(state.clone(), "hostA", RenderOptions::default()) else {
        return;
    };
    // Toggle one local endpoint between two profile lists.
    let (key, mut ep) = Scenario::make_endpoint("hostA", "w42", "10.0.0.43/32", &["prof42"]);
    let path = layout::endpoint(&key);
    let event = |json: String, index: u64| Event {
        action: EventAction::Set,
        node: Node {
            key: path.clone(),
            value: Some(json),
            dir: false,
            nodes: Vec::new(),
            created_index: index,
            modified_index: index,
        },
        prev_node: None,
    };
    let a = ep.to_json();
    ep.profile_ids = vec!["prof42".into(), "prof7".into()];
    let b = ep.to_json();
    let mut index = state.index + 1;
    let mut flip = false;
    let mut group = c.benchmark_group("incremental");
    let mut run = || {
        flip = !flip;
        index += 1;
        let ev = event(if flip { b.clone() } else { a.clone() }, index);
        let delta = dp.update(&ev);
        black_box(delta.is_ok());
    };
    group.bench_function("one_endpoint_change/wall", |bench| bench.iter(&mut run));
    group.bench_function("one_endpoint_change/cpu", |bench| {
        bench.iter_custom(|iters| cpu_time(iters, &mut run))
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let state = big_scenario().state();
    policy_suite(c, &state);
    render_suite(c, &state);
    incremental_suite(c, &state);
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
