//! `calico-libnetwork`: Calico's Docker network and IPAM driver (what `calicoctl node
//! --libnetwork` started as the `calico-libnetwork` container), as one process serving
//! Docker's remote plugin protocols on a unix socket.
//!
//! ```text
//! calico-libnetwork [--socket /run/docker/plugins/calico.sock] [--hostname H]
//!                   [--etcd-endpoints http://127.0.0.1:2379 | --datastore memory]
//!                   [--scope local|global] [--call-log calls.jsonl]
//!                   [--ipam-socket /run/docker/plugins/calico-ipam.sock]
//!                   [--gc-interval 300] [--gc-min-age 600]
//! calico-libnetwork call <Interface.Method> [JSON]      # talk to a running plugin
//! calico-libnetwork gc                                  # release orphaned addresses once
//! ```
//!
//! Docker finds the plugin by the socket's file name: `/run/docker/plugins/calico.sock`
//! answers to `--driver calico` and `--ipam-driver calico`. Any other name in that
//! directory works the same way, which is how tests run a private copy
//! (`--socket /run/docker/plugins/<unique>.sock`, `--driver <unique>`).
//!
//! Environment, as Calico's tools read it: `HOSTNAME` (the Calico host id),
//! `ETCD_ENDPOINTS` (comma-separated URLs) or `ETCD_AUTHORITY` (`host:port`, default
//! `127.0.0.1:2379`) with `ETCD_SCHEME` (`http`), `CALICO_LIBNETWORK_SOCKET`, `RUST_LOG`.
//!
//! The plugin answers `Scope: local` by default: Docker 20.10+ dropped `--cluster-store`,
//! and a `global` driver needs swarm. Networks are then per-daemon objects, while
//! profiles, endpoints and addresses still live in the shared etcd (see the plugin's
//! driver docs).

// The plugin module is also compiled into tests/libnetwork_*.rs (through `#[path]`), which
// use the test doubles and helpers this binary has no use for.
#[allow(dead_code)]
mod plugin;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use calico_model::datastore::{Datastore, MemoryDatastore};
use clap::{Parser, Subcommand};
use parking_lot::Mutex;

use plugin::addresses::CalicoIpam;
use plugin::driver::{Driver, DriverConfig, IpamOnly, Scope};
use plugin::links::IpRoute2;
use plugin::server::{self, CallObserver, CallRecord};

#[derive(Debug, Parser)]
#[command(
    name = "calico-libnetwork",
    about = "Calico's Docker network and IPAM plugin"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send one call to a running plugin, framed as Docker frames it, and print the answer.
    Call {
        /// `Interface.Method`, e.g. `NetworkDriver.GetCapabilities`.
        method: String,
        /// The JSON body (omit for the no-argument calls).
        body: Option<String>,
    },
    /// Release this host's orphaned allocations once (see `--gc-min-age`) and print them.
    Gc,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Unix socket to serve on; Docker discovers plugins in /run/docker/plugins.
    #[arg(
        long,
        env = "CALICO_LIBNETWORK_SOCKET",
        default_value = "/run/docker/plugins/calico.sock"
    )]
    socket: PathBuf,
    /// Calico host id (defaults to the kernel's host name).
    #[arg(long, env = "HOSTNAME")]
    hostname: Option<String>,
    /// Scope reported to Docker: `local` (works without swarm) or `global`.
    #[arg(long, default_value = "local")]
    scope: Scope,
    /// `etcd` (shared with calicoctl and calico-node) or `memory` (this process only).
    #[arg(long, default_value = "etcd")]
    datastore: String,
    /// etcd client URLs, comma-separated.
    #[arg(long, env = "ETCD_ENDPOINTS", value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// etcd `host:port` when no endpoints are given.
    #[arg(long, env = "ETCD_AUTHORITY", default_value = "127.0.0.1:2379")]
    etcd_authority: String,
    /// `http` or `https` (with `--etcd-authority`).
    #[arg(long, env = "ETCD_SCHEME", default_value = "http")]
    etcd_scheme: String,
    /// Also serve the IPAM role alone on this socket (e.g.
    /// /run/docker/plugins/calico-ipam.sock for `--ipam-driver calico-ipam`, as Calico's
    /// Go plugin named it); the main socket serves both roles either way.
    #[arg(long, env = "CALICO_LIBNETWORK_IPAM_SOCKET")]
    ipam_socket: Option<PathBuf>,
    /// Append every call (method, request, status, response) as a JSON line to this file.
    #[arg(long)]
    call_log: Option<PathBuf>,
    /// Seconds between sweeps for orphaned allocations (0: never; one sweep at start).
    #[arg(long, default_value_t = 300)]
    gc_interval: u64,
    /// Age (seconds) after which an allocation no endpoint or network uses is orphaned.
    #[arg(long, default_value_t = 600)]
    gc_min_age: u64,
}

fn host_name(given: Option<String>) -> anyhow::Result<String> {
    let name = match given.filter(|h| !h.is_empty()) {
        Some(h) => h,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("reading the host name (set HOSTNAME or --hostname)")?
            .trim()
            .to_string(),
    };
    calico_model::names::validate_key_segment("host name", &name)?;
    Ok(name)
}

fn datastore(args: &ServeArgs) -> anyhow::Result<Arc<dyn Datastore>> {
    match args.datastore.as_str() {
        "memory" => Ok(Arc::new(MemoryDatastore::new())),
        "etcd" => {
            let endpoints = if args.etcd_endpoints.is_empty() {
                if args.etcd_scheme != "http" && args.etcd_scheme != "https" {
                    bail!(
                        "ETCD_SCHEME must be http or https, not {:?}",
                        args.etcd_scheme
                    );
                }
                vec![format!("{}://{}", args.etcd_scheme, args.etcd_authority)]
            } else {
                args.etcd_endpoints.clone()
            };
            Ok(Arc::new(calico_model::etcd::EtcdDatastore::connect(
                &endpoints,
            )?))
        }
        other => bail!("--datastore must be etcd or memory, not {other:?}"),
    }
}

fn call_log(path: &PathBuf) -> anyhow::Result<CallObserver> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening the call log {}", path.display()))?;
    let file = Mutex::new(file);
    Ok(Arc::new(move |record: &CallRecord| {
        let line = serde_json::json!({
            "method": record.method,
            "request": record.request,
            "status": record.status,
            "response": record.response,
        });
        let mut file = file.lock();
        if let Err(e) = writeln!(file, "{line}").and_then(|()| file.flush()) {
            tracing::warn!(error = %e, "could not write the call log");
        }
    }))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process ends by default action; serve forever.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn driver(args: &ServeArgs) -> anyhow::Result<Driver> {
    let host = host_name(args.hostname.clone())?;
    let store = datastore(args)?;
    // Calico IPAM over the same datastore: blocks, affinities and handles under
    // /calico/ipam/v2, pools under /calico/v1/ipam, exactly where calicoctl looks.
    let blocks = calico_model::ipam_store::DatastoreBlockStore::new(Arc::clone(&store));
    let ipam = Arc::new(CalicoIpam::new(ipam::Ipam::new(blocks)));
    Ok(Driver::new(
        DriverConfig {
            host,
            scope: args.scope,
        },
        store,
        ipam,
        Arc::new(IpRoute2),
    ))
}

/// Sweeps for orphaned allocations now and then every `interval` (if not zero).
async fn collect_garbage(driver: Arc<Driver>, interval: Duration, min_age: Duration) {
    loop {
        let sweeper = Arc::clone(&driver);
        match tokio::task::spawn_blocking(move || sweeper.collect_garbage(min_age)).await {
            Ok(Ok(released)) if !released.is_empty() => {
                tracing::warn!(?released, "released orphaned allocations")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "garbage collection failed"),
            Err(e) => tracing::warn!(error = %e, "garbage collection panicked"),
        }
        if interval.is_zero() {
            return;
        }
        tokio::time::sleep(interval).await;
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let driver = Arc::new(driver(&args)?);
    let host = driver.host().to_string();
    tokio::spawn(collect_garbage(
        Arc::clone(&driver),
        Duration::from_secs(args.gc_interval),
        Duration::from_secs(args.gc_min_age),
    ));
    let observer = args.call_log.as_ref().map(call_log).transpose()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        // An error means the sender is gone: stop as well.
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let mut sockets = vec![args.socket.clone()];
    let mut servers = tokio::task::JoinSet::new();
    let listener = server::bind_socket(&args.socket)
        .with_context(|| format!("binding {}", args.socket.display()))?;
    let handler: Arc<dyn server::Handler> = Arc::clone(&driver) as Arc<dyn server::Handler>;
    servers.spawn(server::serve(
        listener,
        handler,
        observer.clone(),
        stopped(stop_rx.clone()),
    ));
    if let Some(path) = &args.ipam_socket {
        let listener =
            server::bind_socket(path).with_context(|| format!("binding {}", path.display()))?;
        let ipam_only: Arc<dyn server::Handler> = Arc::new(IpamOnly(Arc::clone(&driver)));
        servers.spawn(server::serve(
            listener,
            ipam_only,
            observer,
            stopped(stop_rx),
        ));
        sockets.push(path.clone());
    }
    tracing::info!(?sockets, %host, scope = args.scope.as_str(), "serving");
    let mut result = Ok(());
    while let Some(done) = servers.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(anyhow::Error::from(e)),
            Err(e) => result = Err(anyhow::Error::from(e)),
        }
    }
    // Leave no socket behind: Docker would keep trying to connect to it.
    for socket in &sockets {
        if let Err(e) = std::fs::remove_file(socket) {
            tracing::warn!(socket = %socket.display(), error = %e, "could not remove the socket");
        }
    }
    tracing::info!("stopped");
    result
}

fn call(socket: &std::path::Path, method: &str, body: Option<&str>) -> anyhow::Result<()> {
    let body = body
        .map(serde_json::from_str::<serde_json::Value>)
        .transpose()
        .context("the body is not JSON")?;
    let answer = plugin::client::call(socket, method, body.as_ref())
        .with_context(|| format!("calling {method} on {}", socket.display()))?;
    println!("{}", answer.body);
    if answer.status != 200 {
        bail!("HTTP {}", answer.status);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match args.command {
        Some(Command::Call { method, body }) => call(&args.serve.socket, &method, body.as_deref()),
        Some(Command::Gc) => {
            let driver = driver(&args.serve)?;
            for address in driver.collect_garbage(Duration::from_secs(args.serve.gc_min_age))? {
                println!("released {address}");
            }
            Ok(())
        }
        None => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(serve(args.serve))
        }
    }
}
