//! `calicoctl pool add|remove|show` and `calicoctl ipam release|info` (spec/calico.md
//! §2.2, §2.8): pools are validated and checked for overlap before anything is written;
//! `--ipip` turns on `IpInIpEnabled`; removal disables the pool, releases its block
//! affinities through Calico IPAM and deletes it (allocated addresses stay, as in 0.22).

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use calico_model::model::{Pool, BLOCK_PREFIX_V4, BLOCK_PREFIX_V6};

use super::args::Args;
use super::table::Table;
use super::Ctx;

/// `calicoctl pool --help`.
pub const USAGE: &str = "\
Usage:
  calicoctl pool (add|remove) <CIDRS>... [--ipip] [--nat-outgoing]
  calicoctl pool show [--ipv4 | --ipv6]

Description:
  Configure IP Pools

Options:
  --ipv4          Show IPv4 information only
  --ipv6          Show IPv6 information only
  --nat-outgoing  Apply NAT to outgoing traffic
  --ipip          Use IP-over-IP encapsulation across hosts (this kernel may lack
                  IP-in-IP: calico-node then reports it and uses VXLAN)
";

/// `calicoctl ipam --help`.
pub const IPAM_USAGE: &str = "\
Usage:
  calicoctl ipam release <IP>
  calicoctl ipam info <IP>

Description:
  Manage Calico assigned IP addresses

Options:
  <IP>   The IP address to release or describe
";

/// Dispatches `pool ...`.
pub fn run(ctx: &mut Ctx<'_>, args: &Args) -> anyhow::Result<()> {
    if args.has("help") {
        ctx.print(USAGE);
        return Ok(());
    }
    match (args.word(1), args.words.len()) {
        (Some("add"), n) if n >= 3 => {
            if args.unexpected(&["ipip", "nat-outgoing"]).is_some() {
                return Err(ctx.usage(USAGE));
            }
            add(
                ctx,
                &args.words[2..],
                args.has("ipip"),
                args.has("nat-outgoing"),
            )
        }
        (Some("remove"), n) if n >= 3 => {
            if args.unexpected(&[]).is_some() {
                return Err(ctx.usage(USAGE));
            }
            remove(ctx, &args.words[2..])
        }
        (Some("show"), 2) => {
            if args.unexpected(&["ipv4", "ipv6"]).is_some()
                || (args.has("ipv4") && args.has("ipv6"))
            {
                return Err(ctx.usage(USAGE));
            }
            show(ctx, !args.has("ipv6"), !args.has("ipv4"))
        }
        _ => Err(ctx.usage(USAGE)),
    }
}

fn parse_cidr(text: &str) -> Option<IpNetwork> {
    text.parse::<IpNetwork>().ok()
}

fn add(ctx: &mut Ctx<'_>, cidrs: &[String], ipip: bool, nat: bool) -> anyhow::Result<()> {
    let mut pools = Vec::new();
    for text in cidrs {
        let Some(net) = parse_cidr(text) else {
            return Err(ctx.fail(1, format!("Invalid CIDR specified {text}")));
        };
        pools.push(net);
    }
    let v4 = pools.first().is_some_and(IpNetwork::is_ipv4);
    if ipip && !v4 {
        return Err(ctx.fail(1, "IP in IP not supported for IPv6 pools"));
    }
    let block = if v4 { BLOCK_PREFIX_V4 } else { BLOCK_PREFIX_V6 };
    let mut out = Vec::new();
    for net in pools {
        if net.is_ipv4() != v4 {
            return Err(ctx.fail(
                1,
                format!(
                    "Invalid CIDR specified {net}: all pools of one command must be one IP version"
                ),
            ));
        }
        if net.prefix() > block {
            return Err(ctx.fail(
                1,
                format!(
                    "An IPv{} pool must have a prefix length of {block} or lower.\nGiven: {net}.\nNo pools added.",
                    if v4 { 4 } else { 6 }
                ),
            ));
        }
        let mut pool = Pool::new(net);
        pool.ipip = ipip;
        pool.masquerade = nat;
        out.push(pool);
    }
    let store = ctx.store()?;
    match store.add_pools(&out) {
        Ok(()) => Ok(()),
        Err(e @ calico_model::Error::Invalid { .. }) => Err(ctx.fail(1, super::model_message(&e))),
        Err(e) => Err(e.into()),
    }
}

fn remove(ctx: &mut Ctx<'_>, cidrs: &[String]) -> anyhow::Result<()> {
    for text in cidrs {
        let Some(net) = parse_cidr(text) else {
            return Err(ctx.fail(1, format!("Invalid CIDR specified {text}")));
        };
        let net = IpNetwork::new(net.network(), net.prefix())?;
        let store = ctx.store()?;
        if !store.snapshot()?.pools.contains_key(&net) {
            return Err(ctx.fail(1, format!("{text} is not a configured pool.")));
        }
        let ipam = ctx.ipam()?;
        ctx.say("Disabling IP Pool");
        ipam.disable_pool(net)?;
        ctx.say("Removing IPAM configuration for pool");
        if let Err(e) = ipam.release_pool_affinities(net) {
            if matches!(e, ipam::IpamError::RetriesExhausted { .. }) {
                return Err(ctx.fail(
                    1,
                    "Conflicting modifications have been made to the IPAM configuration for this pool.  Please retry the command.",
                ));
            }
            return Err(e.into());
        }
        ipam.delete_pool(net)?;
        ctx.say("Deleted IP Pool");
    }
    Ok(())
}

fn show(ctx: &mut Ctx<'_>, v4: bool, v6: bool) -> anyhow::Result<()> {
    let pools = ctx.store()?.snapshot()?.pools;
    for (want, title) in [(v4, "IPv4 CIDR"), (v6, "IPv6 CIDR")] {
        if !want {
            continue;
        }
        let is_v4 = title.starts_with("IPv4");
        let mut table = Table::new(&[title, "Options"]);
        for pool in pools.values().filter(|p| p.cidr.is_ipv4() == is_v4) {
            let mut options = Vec::new();
            if is_v4 && pool.ipip {
                options.push("ipip");
            }
            if is_v4 && pool.masquerade {
                options.push("nat-outgoing");
            }
            if pool.disabled {
                options.push("disabled");
            }
            table.row(vec![pool.cidr.to_string(), options.join(",")]);
        }
        table.sort_by_column(0);
        ctx.print(table.render());
    }
    Ok(())
}

/// Dispatches `ipam ...`.
pub fn ipam_command(ctx: &mut Ctx<'_>, args: &Args) -> anyhow::Result<()> {
    if args.has("help") {
        ctx.print(IPAM_USAGE);
        return Ok(());
    }
    let (Some(verb), Some(ip), 3) = (args.word(1), args.word(2), args.words.len()) else {
        return Err(ctx.usage(IPAM_USAGE));
    };
    let Ok(addr) = ip.parse::<IpAddr>() else {
        return Err(ctx.fail(1, "Invalid IP address specified."));
    };
    let ipam = ctx.ipam()?;
    match verb {
        "release" => {
            let unallocated = ipam.release_ips(&[addr])?;
            if unallocated.contains(&addr) {
                ctx.say("Failed to release address");
                Err(super::Exit(1).into())
            } else {
                ctx.say("Address successfully released");
                Ok(())
            }
        }
        "info" => {
            match ipam.assignment(addr)? {
                None => ctx.say(format!("IP {addr} is not currently assigned")),
                Some(attr) => match attr.secondary.as_map() {
                    Some(map) if !map.is_empty() => {
                        for (k, v) in map {
                            ctx.say(format!("{k}: {v}"));
                        }
                    }
                    _ => ctx.say(format!("No attributes defined for {addr}")),
                },
            }
            Ok(())
        }
        _ => Err(ctx.usage(IPAM_USAGE)),
    }
}
