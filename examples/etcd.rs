//! `etcd`: an etcd-2-compatible member (v2 API), with etcd's flags and `ETCD_*` variables.
//!
//! ```text
//! etcd --name node1 --initial-advertise-peer-urls http://127.0.0.1:2380 \
//!   --listen-peer-urls http://127.0.0.1:2380 \
//!   --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
//!   --initial-cluster-token etcd-cluster \
//!   --initial-cluster node1=http://127.0.0.1:2380,node2=http://127.0.0.1:2381 \
//!   --initial-cluster-state new
//! ```
//!
//! All the work is in [`raft_kv::server`]; this binary parses the command line, prints
//! etcd's messages for bad ones (exit 2 for usage errors, 1 for inconsistent settings) and
//! runs the member until SIGTERM or SIGINT.

use raft_kv::server::config::{usage, Invocation};
use raft_kv::server::{run_until_signal, ServerError, ETCD_VERSION};

/// The member's allocator (see the `mimalloc` line in Cargo.toml for why).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let config = match Invocation::parse(&args, &env) {
        Ok((Invocation::Help, _)) => {
            print!("{}", usage());
            return;
        }
        Ok((Invocation::Version, _)) => {
            println!(
                "etcd Version: {ETCD_VERSION}\nServer: tabby {}",
                env!("CARGO_PKG_VERSION")
            );
            return;
        }
        Ok((Invocation::Run(config), warnings)) => {
            for warning in warnings {
                eprintln!("etcdmain: warning: {warning}");
            }
            config
        }
        Err(error @ ServerError::Usage { .. }) => {
            eprintln!("{error}");
            eprint!("{}", usage());
            std::process::exit(error.exit_code());
        }
        Err(error) => {
            eprintln!("etcdmain: error verifying flags, {error}. See 'etcd --help'.");
            std::process::exit(error.exit_code());
        }
    };
    if let Err(error) = run_until_signal(*config) {
        eprintln!("etcdmain: {error}");
        std::process::exit(error.exit_code());
    }
}
