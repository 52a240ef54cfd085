//! `calicoctl container ...` (spec/calico.md §2.3): give a container Calico networking —
//! an address from Calico IPAM (a literal address inside a pool, `ipv4`/`ipv6` for any
//! pool, or a pool's exact CIDR), a `cali<11>` veth with the container side inside it,
//! the link-local gateway route, and the workload endpoint in the datastore (no
//! profiles: it can reach nobody until one is appended).
//!
//! The endpoint lives at `/calico/v1/host/<HOSTNAME>/workload/<orchestrator>/<workload>/
//! endpoint/<32-hex id>`; the OS side is [`super::runtime`]'s. Every step that fails
//! undoes the ones before it (address released, veth deleted), so a failed `add` leaves
//! neither a leaked address nor a half-made endpoint.

use std::net::IpAddr;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use calico_model::layout;
use calico_model::model::{EndpointKey, WorkloadEndpoint};

use super::args::Args;
use super::endpoint::{self, Filter};
use super::runtime::{host_net, ResolveError, Workload};
use super::Ctx;

/// `calicoctl container --help`.
pub const USAGE: &str = "\
Usage:
  calicoctl container <CONTAINER> ip (add|remove) <IP> [--interface=<INTERFACE>]
  calicoctl container <CONTAINER> endpoint show
  calicoctl container <CONTAINER> endpoint-id show
  calicoctl container <CONTAINER> profile (append|remove|set) [<PROFILES>...]
  calicoctl container <CONTAINER> profile show
  calicoctl container add <CONTAINER> <IP> [--interface=<INTERFACE>]
  calicoctl container remove <CONTAINER>

Description:
  Add or remove containers to calico networking, manage their IP addresses and profiles.
  All these commands must be run on the host that contains the container.

Options:
  <IP>                   The IP address desired. If \"ipv4\", \"ipv6\", or a CIDR is
                         given, then Calico will attempt to automatically assign an
                         available IPv4 address, IPv6 address, or an IP from the
                         given CIDR, respectively.
  --interface=<INTERFACE>  The name to give to the interface in the container
                         [default: eth1]

<CONTAINER> is a Docker container name or id, else a network namespace (ip netns) of
that name, or an absolute path to a namespace file.
";

/// The container-side interface calicoctl 0.22 created by default.
pub const DEFAULT_INTERFACE: &str = "eth1";

/// Dispatches `container ...`.
pub fn run(ctx: &mut Ctx<'_>, args: &Args) -> anyhow::Result<()> {
    if args.has("help") {
        ctx.print(USAGE);
        return Ok(());
    }
    let words: Vec<&str> = args.words.iter().map(String::as_str).collect();
    let iface = args
        .value("interface")
        .unwrap_or(DEFAULT_INTERFACE)
        .to_string();
    match words.as_slice() {
        ["container", "add", name, ip] if args.unexpected(&["interface"]).is_none() => {
            add(ctx, name, ip, &iface)
        }
        ["container", "remove", name] if args.unexpected(&[]).is_none() => remove(ctx, name),
        ["container", name, "ip", verb @ ("add" | "remove"), ip]
            if args.unexpected(&["interface"]).is_none() =>
        {
            ip_edit(ctx, name, *verb == "add", ip, &iface)
        }
        ["container", name, "endpoint", "show"] if args.unexpected(&[]).is_none() => {
            let ((host, orch, id), _) = networked(ctx, name)?;
            let filter = Filter {
                host: Some(host),
                orchestrator: Some(orch),
                workload: Some(id),
                endpoint: None,
            };
            endpoint_table(ctx, &filter)
        }
        ["container", name, "endpoint-id", "show"] if args.unexpected(&[]).is_none() => {
            let (_, found) = networked(ctx, name)?;
            for (key, _) in found {
                ctx.say(key.endpoint);
            }
            Ok(())
        }
        ["container", name, "profile", "show"] if args.unexpected(&[]).is_none() => {
            let (_, found) = networked(ctx, name)?;
            if let Some((_, ep)) = found.first() {
                endpoint::show_profiles(ctx, ep);
            }
            Ok(())
        }
        ["container", name, "profile", verb @ ("append" | "remove" | "set"), profiles @ ..]
            if args.unexpected(&[]).is_none() =>
        {
            let (_, found) = networked(ctx, name)?;
            let key = match found.as_slice() {
                [(key, _)] => key.clone(),
                _ => {
                    return Err(ctx.fail(
                        1,
                        format!("Container {name} has more than one endpoint; use calicoctl endpoint <ENDPOINT_ID> profile ..."),
                    ))
                }
            };
            let profiles: Vec<String> = profiles.iter().map(|s| s.to_string()).collect();
            endpoint::update_profiles(ctx, &key, verb, &profiles)
        }
        _ => Err(ctx.usage(USAGE)),
    }
}

fn endpoint_table(ctx: &mut Ctx<'_>, filter: &Filter) -> anyhow::Result<()> {
    let found = endpoint::lookup(ctx, filter)?;
    if found.is_empty() {
        return Err(ctx.fail(1, "No endpoints found."));
    }
    ctx.print(endpoint::detailed_table(&found));
    Ok(())
}

fn resolve(ctx: &mut Ctx<'_>, name: &str) -> anyhow::Result<Workload> {
    match ctx.runtime.resolve(name) {
        Ok(w) => Ok(w),
        Err(ResolveError::NotFound) => Err(ctx.fail(1, format!("Container {name} was not found."))),
        Err(ResolveError::NotRunning) => {
            Err(ctx.fail(1, format!("{name} is not currently running.")))
        }
        Err(ResolveError::HostNetwork) => Err(ctx.fail(
            1,
            format!("Can't add {name} to Calico because it is running NetworkMode = host."),
        )),
    }
}

/// (host, orchestrator, workload id) of a container: from the datastore when an endpoint
/// for this name exists on this host, else from the runtime.
fn ids(ctx: &mut Ctx<'_>, name: &str) -> anyhow::Result<(String, String, String)> {
    let host = ctx.hostname()?;
    let state = ctx.store()?.snapshot()?;
    for orch in ["namespace", "docker"] {
        if state
            .endpoints
            .keys()
            .any(|k| k.host == host && k.orchestrator == orch && k.workload == name)
        {
            return Ok((host, orch.to_string(), name.to_string()));
        }
    }
    let w = resolve(ctx, name)?;
    Ok((host, w.orchestrator, w.id))
}

/// (host, orchestrator, workload id).
type WorkloadIds = (String, String, String);

/// Endpoints with their keys.
type Endpoints = Vec<(EndpointKey, WorkloadEndpoint)>;

/// The container's endpoints on this host; "unknown to Calico" when it has none.
fn networked(ctx: &mut Ctx<'_>, name: &str) -> anyhow::Result<(WorkloadIds, Endpoints)> {
    let (host, orch, id) = ids(ctx, name)?;
    let found = endpoint::lookup(
        ctx,
        &Filter {
            host: Some(host.clone()),
            orchestrator: Some(orch.clone()),
            workload: Some(id.clone()),
            endpoint: None,
        },
    )?;
    if found.is_empty() {
        return Err(ctx.fail(1, format!("Container {name} is unknown to Calico.")));
    }
    Ok(((host, orch, id), found))
}

/// How the `<IP>` argument asks for an address.
enum Want {
    Literal(IpAddr),
    Auto(ipam::PoolChoice, bool),
}

fn parse_want(ctx: &mut Ctx<'_>, text: &str) -> anyhow::Result<Want> {
    match text {
        "ipv4" => return Ok(Want::Auto(ipam::PoolChoice::v4(), true)),
        "ipv6" => return Ok(Want::Auto(ipam::PoolChoice::v6(), false)),
        _ => {}
    }
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Ok(Want::Literal(addr));
    }
    if let Ok(net) = text.parse::<IpNetwork>() {
        let pools = ctx.store()?.snapshot()?.pools;
        if pools.contains_key(&net) {
            return Ok(Want::Auto(ipam::PoolChoice::only(net), net.is_ipv4()));
        }
        return Err(ctx.fail(
            1,
            format!("Invalid CIDR specified for desired pool. No pool found for {text}."),
        ));
    }
    Err(ctx.fail(
        1,
        "Invalid IP address specified.  Argument must be a valid IP or CIDR.",
    ))
}

/// Takes the address from IPAM for `host`, with calicoctl's messages.
fn assign(ctx: &mut Ctx<'_>, want: &Want, host: &str) -> anyhow::Result<IpAddr> {
    let ipam = ctx.ipam()?;
    match want {
        Want::Literal(addr) => {
            let pools = ctx.store()?.snapshot()?.pools;
            let Some(pool) = pools.values().find(|p| p.cidr.contains(*addr)) else {
                return Err(ctx.fail(1, format!("{addr} is not in any configured pools")));
            };
            let pool = pool.cidr;
            match ipam.assign_ip(*addr, None, &ipam::Attrs::empty(), host) {
                Ok(()) => Ok(*addr),
                Err(ipam::IpamError::AlreadyAssigned { .. }) => {
                    Err(ctx.fail(1, format!("IP address is already assigned in pool {pool}.")))
                }
                Err(
                    e @ (ipam::IpamError::PoolNotUsable { .. } | ipam::IpamError::NotInPool { .. }),
                ) => Err(ctx.fail(1, format!("{addr} cannot be assigned: {e}"))),
                Err(e) => Err(e.into()),
            }
        }
        Want::Auto(choice, v4) => {
            let got = ipam.auto_assign(host, 1, None, &ipam::Attrs::empty(), choice)?;
            match got.first() {
                Some(a) => Ok(*a),
                None => Err(ctx.fail(
                    1,
                    format!(
                        "Failed to allocate any IPs (requested {} IPv4s and {} IPv6s). Pools are likely exhausted.",
                        u8::from(*v4),
                        u8::from(!*v4)
                    ),
                )),
            }
        }
    }
}

fn release(ctx: &mut Ctx<'_>, addrs: &[IpAddr]) {
    if let Ok(ipam) = ctx.ipam() {
        if let Err(e) = ipam.release_ips(addrs) {
            let _ = std::io::Write::write_fmt(
                &mut ctx.io.err,
                format_args!("warning: could not release {addrs:?}: {e}\n"),
            );
        }
    }
}

/// A fresh endpoint id: 32 hex digits (calicoctl used `uuid1().hex`).
pub fn new_endpoint_id() -> String {
    let mut bytes = [0u8; 16];
    let filled = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if !filled {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mixed = nanos ^ (u128::from(std::process::id()) << 64);
        bytes = mixed.to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn add(ctx: &mut Ctx<'_>, name: &str, ip: &str, iface: &str) -> anyhow::Result<()> {
    ctx.enforce_root()?;
    if calico_model::names::validate_interface_name(iface).is_err() {
        return Err(ctx.fail(1, format!("Invalid interface name {iface}.")));
    }
    let workload = resolve(ctx, name)?;
    let host = ctx.hostname()?;
    let existing = endpoint::lookup(
        ctx,
        &Filter {
            host: Some(host.clone()),
            orchestrator: Some(workload.orchestrator.clone()),
            workload: Some(workload.id.clone()),
            endpoint: None,
        },
    )?;
    if !existing.is_empty() {
        return Err(ctx.fail(
            1,
            format!("{name} has already been configured with Calico Networking."),
        ));
    }
    let want = parse_want(ctx, ip)?;
    let addr = assign(ctx, &want, &host)?;
    let endpoint_id = new_endpoint_id();
    let suffix: String = endpoint_id.chars().take(11).collect();
    let host_if = WorkloadEndpoint::interface_name_for(&endpoint_id);
    let temp_if = format!("tmp{suffix}");
    let net = host_net(addr);
    let mac = match ctx
        .runtime
        .attach(&workload, &host_if, &temp_if, iface, &[net])
    {
        Ok(mac) => mac,
        Err(e) => {
            release(ctx, &[addr]);
            return Err(e.context(format!("plumbing {name}")));
        }
    };
    let (v4, v6): (Vec<Ipv4Network>, Vec<Ipv6Network>) = match net {
        IpNetwork::V4(n) => (vec![n], vec![]),
        IpNetwork::V6(n) => (vec![], vec![n]),
    };
    let ep = WorkloadEndpoint::new(&host_if, mac, v4, v6);
    let key = EndpointKey::new(&host, &workload.orchestrator, &workload.id, &endpoint_id)?;
    if let Err(e) = ctx.store()?.create_endpoint(&key, &ep) {
        let _ = ctx.runtime.detach(&host_if);
        release(ctx, &[addr]);
        return Err(e.into());
    }
    ctx.say(format!("IP {addr} added to {name}"));
    Ok(())
}

fn remove(ctx: &mut Ctx<'_>, name: &str) -> anyhow::Result<()> {
    ctx.enforce_root()?;
    let (host, orch, id) = ids(ctx, name)?;
    let found = endpoint::lookup(
        ctx,
        &Filter {
            host: Some(host.clone()),
            orchestrator: Some(orch.clone()),
            workload: Some(id.clone()),
            endpoint: None,
        },
    )?;
    for (_, ep) in &found {
        let addrs: Vec<IpAddr> = ep.addresses().collect();
        release(ctx, &addrs);
        if ctx.runtime.detach(&ep.name).is_err() {
            ctx.say(format!("Could not remove Calico interface {}", ep.name));
        }
    }
    if ctx.store()?.remove_workload(&host, &orch, &id)? {
        ctx.say(format!("Removed Calico from {name}"));
    } else {
        ctx.say(format!("Failed find Calico data for {name}"));
    }
    Ok(())
}

fn ip_edit(ctx: &mut Ctx<'_>, name: &str, add: bool, ip: &str, iface: &str) -> anyhow::Result<()> {
    ctx.enforce_root()?;
    let workload = resolve(ctx, name)?;
    let host = ctx.hostname()?;
    let found = endpoint::lookup(
        ctx,
        &Filter {
            host: Some(host.clone()),
            orchestrator: Some(workload.orchestrator.clone()),
            workload: Some(workload.id.clone()),
            endpoint: None,
        },
    )?;
    let Some((key, _)) = found.first().cloned() else {
        let verb = if add {
            "add IP address to"
        } else {
            "remove IP address from"
        };
        return Err(ctx.fail(
            1,
            format!("Failed to {verb} container.\nContainer {name} is unknown to Calico."),
        ));
    };
    let ds = ctx.ds()?;
    let path = layout::endpoint(&key);
    let Some((json, index)) = ds.get_value(&path)? else {
        return Err(ctx.fail(1, format!("Container {name} is unknown to Calico.")));
    };
    let mut ep = WorkloadEndpoint::from_json(&json)?;
    let store = ctx.store()?;
    if add {
        if !ctx.runtime.has_interface(&workload, iface)? {
            return Err(ctx.fail(
                1,
                "Interface provided does not exist in container. Aborting.",
            ));
        }
        let want = parse_want(ctx, ip)?;
        let addr = assign(ctx, &want, &host)?;
        let net = host_net(addr);
        match net {
            IpNetwork::V4(n) => ep.ipv4_nets.push(n),
            IpNetwork::V6(n) => ep.ipv6_nets.push(n),
        }
        ep.ipv4_nets.sort();
        ep.ipv6_nets.sort();
        let new_index = match store.replace_endpoint(&key, &ep, index) {
            Ok(i) => i,
            Err(_) => {
                release(ctx, &[addr]);
                return Err(ctx.fail(1, "Error updating datastore. Aborting."));
            }
        };
        if let Err(e) = ctx.runtime.add_address(&workload, iface, net) {
            let original = WorkloadEndpoint::from_json(&json)?;
            let _ = store.replace_endpoint(&key, &original, new_index);
            release(ctx, &[addr]);
            return Err(e.context("adding the address in the container"));
        }
        ctx.say(format!("IP {addr} added to {name}"));
    } else {
        let Ok(addr) = ip.parse::<IpAddr>() else {
            return Err(ctx.fail(
                1,
                "Invalid IP address specified.  Argument must be a valid IP or CIDR.",
            ));
        };
        let before = ep.ipv4_nets.len() + ep.ipv6_nets.len();
        ep.ipv4_nets.retain(|n| IpAddr::V4(n.ip()) != addr);
        ep.ipv6_nets.retain(|n| IpAddr::V6(n.ip()) != addr);
        if ep.ipv4_nets.len() + ep.ipv6_nets.len() == before {
            return Err(ctx.fail(1, "IP address is not assigned to container. Aborting."));
        }
        if store.replace_endpoint(&key, &ep, index).is_err() {
            return Err(ctx.fail(1, "Error updating datastore. Aborting."));
        }
        if let Err(e) = ctx.runtime.remove_address(&workload, iface, host_net(addr)) {
            let _ = std::io::Write::write_fmt(&mut ctx.io.err, format_args!("warning: {e:#}\n"));
        }
        release(ctx, &[addr]);
        ctx.say(format!("IP {addr} removed from {name}"));
    }
    Ok(())
}
