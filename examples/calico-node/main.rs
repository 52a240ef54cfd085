//! `calico-node`: Calico's per-host agent — felix (the host's routes, iptables chains,
//! ipsets and tunnel, kept current from the datastore) and confd (BIRD's `bird.conf`)
//! in one process, programming the network namespace it runs in.
//!
//! ```text
//! calico-node --name <host> --ip <v4> [--ip6 <v6>] [--as <asn>]
//!             [--etcd-endpoints <urls> | ETCD_ENDPOINTS | ETCD_AUTHORITY] [--data-dir <dir>]
//!             [--routing static|bird] [--encap vxlan|ipip|none] [--ipip]
//!             [--iptables-backend system|legacy|nft] [--run-dir <dir>]
//!             [--once] [--cleanup] [--log-level <level>]
//! ```
//!
//! It registers the host (`/calico/v1/host/<name>/...`, `/calico/bgp/v1/host/<name>/...`),
//! programs the plan, then follows the datastore: a container added, removed or moved
//! between profiles is in the kernel within a second. On SIGTERM/SIGINT it exits and
//! leaves the dataplane as programmed (as felix does), unless `--cleanup` asks it to
//! remove its chains, sets, routes and tunnel first. When the host is removed from the
//! datastore it removes what it owns and exits.
//!
//! The datastore is etcd (flag, `ETCD_ENDPOINTS`, `ETCD_AUTHORITY`, default
//! 127.0.0.1:2379), or with `--data-dir` an embedded single-member store in that
//! directory (one process at a time). The kernel here has no IP-in-IP: `--ipip` /
//! `--encap ipip` says so with a warning and carries IP-in-IP pools over VXLAN.
//!
//! Exit status: 0 on a signal, `--once` success or host removal; 1 on a startup error
//! (bad flags, unreachable datastore, a plan the kernel refuses) — the message names it.

mod agent;
mod bird;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use calico_model::dataplane::Routing;
use calico_model::datastore::Datastore;
use calico_model::embedded::EmbeddedDatastore;
use calico_model::etcd::{endpoints_from_env, EtcdDatastore};
use calico_model::linux::{Applier, IptablesBackend, Netns};
use calico_model::Error;
use clap::{Parser, ValueEnum};

use agent::{Agent, AgentConfig, Step};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RoutingArg {
    /// Routes to other hosts' workloads from IPAM block affinities and endpoints.
    Static,
    /// BIRD with a full iBGP mesh (needs `bird` and `birdc`).
    Bird,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum EncapArg {
    /// Carry IP-in-IP pools over VXLAN (`vxlan.calico`).
    Vxlan,
    /// IP-in-IP for IP-in-IP pools (falls back to VXLAN, with a warning, on kernels
    /// without it).
    Ipip,
    /// As the pools say; IP-in-IP pools fail on kernels without IP-in-IP.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    /// `iptables-restore` (whatever the system's alternative is).
    System,
    /// `iptables-legacy-restore`.
    Legacy,
    /// `iptables-nft-restore`.
    Nft,
}

#[derive(Debug, Parser)]
#[command(
    name = "calico-node",
    about = "Calico's per-host agent: programs this host's routes, iptables and BIRD from the datastore"
)]
struct Args {
    /// Calico host name (default: $HOSTNAME, else the kernel's host name).
    #[arg(long, env = "HOSTNAME")]
    name: Option<String>,
    /// This host's IPv4 address (BGP router id, next hop of its workloads).
    #[arg(long, env = "IP")]
    ip: Ipv4Addr,
    /// This host's IPv6 address (also programs the IPv6 filter table).
    #[arg(long, env = "IP6")]
    ip6: Option<Ipv6Addr>,
    /// This host's AS number (default: the global one).
    #[arg(long = "as", env = "AS")]
    as_number: Option<u32>,
    /// etcd client URLs, comma-separated (else ETCD_ENDPOINTS, else ETCD_AUTHORITY).
    #[arg(long)]
    etcd_endpoints: Option<String>,
    /// Use an embedded single-member store in this directory instead of etcd.
    #[arg(long, conflicts_with = "etcd_endpoints")]
    data_dir: Option<PathBuf>,
    /// Where routes to other hosts come from.
    #[arg(long, value_enum, default_value = "static")]
    routing: RoutingArg,
    /// Encapsulation of IP-in-IP pools.
    #[arg(long, value_enum, default_value = "vxlan")]
    encap: EncapArg,
    /// Same as `--encap ipip` (unsupported on kernels without IP-in-IP: warns, uses VXLAN).
    #[arg(long)]
    ipip: bool,
    /// iptables implementation to program.
    #[arg(
        long,
        value_enum,
        default_value = "system",
        env = "FELIX_IPTABLESBACKEND"
    )]
    iptables_backend: BackendArg,
    /// Directory for BIRD's configuration, control socket and log.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Seconds between full re-reads and re-applies of the plan.
    #[arg(long, default_value_t = 60)]
    resync_interval: u64,
    /// Register, program the dataplane once and exit.
    #[arg(long)]
    once: bool,
    /// On exit (signal or --once), remove the chains, ipsets, routes and tunnel this agent
    /// programmed instead of leaving them in place.
    #[arg(long)]
    cleanup: bool,
    /// Log level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(long, default_value = "info", env = "CALICO_NODE_LOG_LEVEL")]
    log_level: String,
}

fn host_name(given: Option<String>) -> anyhow::Result<String> {
    let name = match given.filter(|h| !h.is_empty()) {
        Some(h) => h,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("reading the host name (set --name or HOSTNAME)")?
            .trim()
            .to_string(),
    };
    calico_model::names::validate_key_segment("host name", &name)?;
    Ok(name)
}

/// Decides whether IP-in-IP pools are carried over VXLAN, probing the kernel when
/// IP-in-IP is asked for.
fn ipip_as_vxlan(encap: EncapArg, backend: IptablesBackend) -> anyhow::Result<bool> {
    match encap {
        EncapArg::Vxlan => Ok(true),
        EncapArg::Ipip | EncapArg::None => {
            match Applier::new(Netns::current(), backend, false).check_ipip() {
                Ok(()) => Ok(false),
                Err(Error::Unsupported { reason, .. }) => {
                    tracing::warn!(
                        "IP-in-IP is not supported on this kernel ({reason}); IP-in-IP pools are carried over VXLAN (vxlan.calico, VNI 4096, UDP 4789) instead"
                    );
                    Ok(true)
                }
                Err(e) => Err(e).context("probing for IP-in-IP support"),
            }
        }
    }
}

fn install_signal_handler(stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the signal runtime")?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let handlers = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                );
                let (Ok(mut term), Ok(mut int)) = handlers else {
                    let _ = ready_tx.send(false);
                    return;
                };
                let _ = ready_tx.send(true);
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                    _ = int.recv() => tracing::info!("SIGINT: stopping"),
                }
                stop.store(true, Ordering::SeqCst);
            })
        })
        .context("starting the signal thread")?;
    match ready_rx.recv() {
        Ok(true) => Ok(()),
        _ => anyhow::bail!("could not install the SIGTERM/SIGINT handlers"),
    }
}

/// Whether an error is the datastore being unreachable (worth waiting for).
fn datastore_unavailable(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<Error>(),
            Some(Error::Unavailable { .. })
        )
    })
}

fn run<D: Datastore + Clone>(args: &Args, config: AgentConfig, datastore: D) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    if !args.once {
        install_signal_handler(stop.clone())?;
    }
    // Started before its etcd (a host booting): wait for the datastore, as calico-node
    // does; with --once, give a failing-over cluster three tries, then report it.
    // Starting again is safe: registration is idempotent.
    let mut attempts = 0;
    let mut agent = loop {
        attempts += 1;
        match Agent::start(config.clone(), datastore.clone()) {
            Ok(agent) => break agent,
            Err(e) if (!args.once || attempts < 3) && datastore_unavailable(&e) => {
                tracing::warn!("{}; retrying in 2 s", format!("{e:#}").trim_end());
                for _ in 0..20 {
                    if stop.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            Err(e) => return Err(e),
        }
    };
    // calico/node 0.22's startup line (what `calicoctl node` waits for).
    tracing::info!("Calico node started successfully");
    if args.once {
        if args.cleanup {
            agent.cleanup()?;
        }
        agent.stop();
        return Ok(());
    }
    while !stop.load(Ordering::SeqCst) {
        match agent.step(Duration::from_millis(250)) {
            Ok(Step::HostRemoved) => {
                agent.stop();
                return Ok(());
            }
            Ok(_) => {}
            Err(e) => {
                // The datastore may be failing over or the kernel busy: keep trying, as
                // felix does, with a resync once the datastore answers again.
                tracing::error!("{e:#}");
                std::thread::sleep(Duration::from_secs(1));
                if let Err(e) = agent.resync() {
                    tracing::error!("resync failed: {e:#}");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }
    if args.cleanup {
        agent.cleanup()?;
    } else {
        tracing::info!("leaving the dataplane as programmed (use --cleanup to remove it)");
    }
    agent.stop();
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match agent_main(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("calico-node: error: {}", format!("{e:#}").trim_end());
            ExitCode::FAILURE
        }
    }
}

fn agent_main(args: Args) -> anyhow::Result<()> {
    // A bare level keeps the embedded raft node's chatter at warnings.
    let filter = if args.log_level.contains(['=', ',']) {
        args.log_level.clone()
    } else {
        format!("{},raft=warn,raft_kv=warn", args.log_level)
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter)
                .with_context(|| format!("bad --log-level {:?}", args.log_level))?,
        )
        .with_writer(std::io::stderr)
        .init();
    let name = host_name(args.name.clone())?;
    let backend = match args.iptables_backend {
        BackendArg::System => IptablesBackend::System,
        BackendArg::Legacy => IptablesBackend::Legacy,
        BackendArg::Nft => IptablesBackend::Nft,
    };
    let encap = if args.ipip {
        EncapArg::Ipip
    } else {
        args.encap
    };
    let config = AgentConfig {
        ip: args.ip,
        ip6: args.ip6,
        as_number: args.as_number,
        routing: match args.routing {
            RoutingArg::Static => Routing::Static,
            RoutingArg::Bird => Routing::Bird,
        },
        ipip_as_vxlan: ipip_as_vxlan(encap, backend)?,
        backend,
        run_dir: args
            .run_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/var/run/calico").join(&name)),
        resync: Duration::from_secs(args.resync_interval.max(1)),
        name,
    };
    match &args.data_dir {
        Some(dir) => {
            let ds = EmbeddedDatastore::open(dir)
                .with_context(|| format!("opening the embedded datastore in {}", dir.display()))?;
            tracing::info!(data_dir = %dir.display(), "embedded datastore");
            run(&args, config, ds)
        }
        None => {
            let endpoints = endpoints_from_env(args.etcd_endpoints.as_deref());
            tracing::info!(endpoints = %endpoints.join(","), "etcd datastore");
            let ds = EtcdDatastore::connect(&endpoints)?;
            run(&args, config, ds)
        }
    }
}
