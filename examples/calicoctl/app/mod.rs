//! calicoctl 0.22 as a function: [`run`] takes the arguments, an environment lookup and
//! three streams and returns the exit status, so tests and the walkthrough run it
//! in-process while `main.rs` wires it to the real process.
//!
//! Command set (spec/calico.md §2): `node` (start, `stop`, `remove`, `show`), `status`,
//! `pool add|remove|show`, `container add|remove`, `container <C> ip add|remove`,
//! `container <C> profile append|remove|set|show`, `container <C> endpoint show`,
//! `container <C> endpoint-id show`, `profile add|remove|show`, `profile <P> tag
//! add|remove|show`, `profile <P> rule add|remove|show|json|update`, `endpoint show`,
//! `endpoint <E> profile append|remove|set|show`, `ipam release|info`, `version`.
//! Messages and exit statuses are calicoctl's: informational answers exit 0, "not
//! found"/"invalid" exit 1, usage errors print the command's usage and exit 1, commands
//! that plumb namespaces without root print "This command must be run as root." on
//! stderr and exit 2, datastore failures print what failed and exit 1.
//!
//! Where the data lives is [`backend`]'s choice (etcd, or the embedded store by default);
//! how containers are plumbed is [`runtime`]'s (Linux namespaces, or the model only).
//!
//! Not implemented (they print the top-level help and exit 1, as any unknown command):
//! `bgp`, `config`, `checksystem`, `diags`, `pool range add`, `node bgp peer`.

pub mod args;
pub mod backend;
pub mod container;
pub mod endpoint;
pub mod node;
pub mod pool;
pub mod profile;
pub mod rule_args;
pub mod runtime;
pub mod table;

use std::fmt;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use calico_model::datastore::Datastore;
use calico_model::ipam_store::DatastoreBlockStore;
use calico_model::store::CalicoStore;

use self::args::Args;
use self::backend::Selection;
use self::runtime::Runtime;

/// The version calicoctl 0.22 printed.
pub const VERSION: &str = "0.22.0";

/// The process's streams (or buffers in tests).
pub struct Io {
    /// Standard output: calicoctl printed its messages and tables here.
    pub out: Box<dyn Write + Send>,
    /// Standard error: root enforcement, datastore and internal failures.
    pub err: Box<dyn Write + Send>,
    /// Standard input (`profile <P> rule update` reads JSON from it).
    pub stdin: Box<dyn Read + Send>,
}

/// Looks up an environment variable.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What an embedding program supplies instead of the process's defaults.
#[derive(Default, Clone)]
pub struct Overrides {
    /// Use this datastore instead of choosing one from flags and environment.
    pub datastore: Option<Arc<dyn Datastore>>,
    /// Use this runtime instead of `--dataplane` / `CALICOCTL_DATAPLANE`.
    pub runtime: Option<Arc<dyn Runtime>>,
}

/// A failure whose message is already printed: exit with this status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit(pub i32);

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for Exit {}

/// The IPAM client calicoctl uses.
pub type Ipam = ipam::Ipam<DatastoreBlockStore<Arc<dyn Datastore>>>;

/// One command's context: streams, environment, datastore (opened on first use), runtime.
pub struct Ctx<'a> {
    /// Streams.
    pub io: &'a mut Io,
    /// Environment.
    pub env: Env<'a>,
    selection: Option<Selection>,
    ds: Option<Arc<dyn Datastore>>,
    /// How containers are plumbed.
    pub runtime: Arc<dyn Runtime>,
    /// Whether the runtime was chosen by an embedding program (the walkthrough).
    pub embedded_caller: bool,
}

impl Ctx<'_> {
    /// Prints a line on stdout.
    pub fn say(&mut self, line: impl AsRef<str>) {
        let _ = writeln!(self.io.out, "{}", line.as_ref());
    }

    /// Prints text on stdout as is.
    pub fn print(&mut self, text: impl AsRef<str>) {
        let _ = write!(self.io.out, "{}", text.as_ref());
    }

    /// Prints `message` on stdout and returns the failure that exits with `code`.
    pub fn fail(&mut self, code: i32, message: impl AsRef<str>) -> anyhow::Error {
        self.say(message);
        Exit(code).into()
    }

    /// Prints `usage` and returns the usage failure (exit 1).
    pub fn usage(&mut self, usage: &str) -> anyhow::Error {
        self.print(usage);
        Exit(1).into()
    }

    /// The datastore, opened on first use.
    pub fn ds(&mut self) -> anyhow::Result<Arc<dyn Datastore>> {
        if let Some(ds) = &self.ds {
            return Ok(Arc::clone(ds));
        }
        let selection = self
            .selection
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no datastore configured"))?;
        let ds = selection.open()?;
        self.ds = Some(Arc::clone(&ds));
        Ok(ds)
    }

    /// The datastore as Calico's typed store.
    pub fn store(&mut self) -> anyhow::Result<CalicoStore<Arc<dyn Datastore>>> {
        Ok(CalicoStore::new(self.ds()?))
    }

    /// Calico IPAM over the datastore.
    pub fn ipam(&mut self) -> anyhow::Result<Ipam> {
        Ok(ipam::Ipam::new(DatastoreBlockStore::new(self.ds()?)))
    }

    /// The Calico host id: `HOSTNAME`, else the kernel's host name.
    pub fn hostname(&self) -> anyhow::Result<String> {
        let name = match (self.env)("HOSTNAME").filter(|h| !h.is_empty()) {
            Some(h) => h,
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map_err(|e| anyhow::anyhow!("reading the host name (set HOSTNAME): {e}"))?
                .trim()
                .to_string(),
        };
        calico_model::names::validate_key_segment("host name", &name)?;
        Ok(name)
    }

    /// calicoctl's `enforce_root` for commands that plumb namespaces.
    pub fn enforce_root(&mut self) -> anyhow::Result<()> {
        if self.runtime.needs_root() && !backend::is_root() {
            let _ = writeln!(self.io.err, "This command must be run as root.");
            return Err(Exit(2).into());
        }
        Ok(())
    }

    /// Closes this process's handle on a datastore it opened itself (so another process
    /// can open the embedded store); it is reopened on next use.
    pub fn release_datastore(&mut self) {
        if self.selection.is_some() {
            self.ds = None;
        }
    }

    /// The datastore selection (`None` when an embedding program supplied the store).
    pub fn selection(&self) -> Option<&Selection> {
        self.selection.as_ref()
    }
}

/// The top-level help.
pub fn help() -> String {
    format!(
        "\
Override the host:port of the ETCD server by setting the environment variable
ETCD_AUTHORITY [default: none, see Datastore below]

Usage: calicoctl <command> [<args>...]

    status            Print current status information
    node              Configure the main calico-node agent and establish Calico networking
    container         Configure containers and their addresses
    profile           Configure endpoint profiles
    endpoint          Configure the endpoints assigned to existing containers
    pool              Configure ip-pools
    ipam              Configure IP address management
    version           Display the version of calicoctl

See 'calicoctl <command> --help' to read about a specific subcommand.

Datastore (any command, any position):
    --etcd-endpoints=<URLS>   etcd client URLs, comma separated (also ETCD_ENDPOINTS;
                              ETCD_AUTHORITY=host:port with ETCD_SCHEME=http|https)
    --data-dir=<DIR>          with no etcd configured, the EMBEDDED datastore (a
                              single-member raft-kv store) in DIR (also CALICO_DATA_DIR;
                              default /var/lib/calico/datastore as root, else
                              $XDG_DATA_HOME/calico/datastore or
                              ~/.local/share/calico/datastore). One process at a time:
                              use etcd for calico-node agents and several hosts.
    --dataplane=<linux|model> linux (default): containers are Docker containers or
                              network namespaces (ip netns), plumbed for real (root);
                              model: nothing is plumbed, the datastore alone decides
                              (also CALICOCTL_DATAPLANE). CALICOCTL_HOST_NETNS=<ns>
                              makes a named namespace play this host.

calicoctl {VERSION} (tabby {})
",
        env!("CARGO_PKG_VERSION")
    )
}

/// Runs one calicoctl command line (without the program name); returns the exit status.
pub fn run(argv: &[String], env: Env<'_>, io: &mut Io, overrides: Overrides) -> i32 {
    let mut args = match Args::parse(argv) {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(io.out, "{e}");
            let usage = match argv
                .iter()
                .find(|w| !w.starts_with("--"))
                .map(String::as_str)
            {
                Some("pool") => pool::USAGE.to_string(),
                Some("profile") => profile::USAGE.to_string(),
                Some("endpoint") => endpoint::USAGE.to_string(),
                Some("container") => container::USAGE.to_string(),
                Some("node") => node::USAGE.to_string(),
                Some("ipam") => pool::IPAM_USAGE.to_string(),
                _ => help(),
            };
            let _ = write!(io.out, "{usage}");
            return 1;
        }
    };
    let etcd_flag = args.take("etcd-endpoints");
    let data_dir_flag = args.take("data-dir");
    let dataplane = args
        .take("dataplane")
        .or_else(|| env("CALICOCTL_DATAPLANE"));
    let command = args.word(0).map(String::from);
    let Some(command) = command else {
        let _ = write!(io.out, "{}", help());
        return if args.has("help") { 0 } else { 1 };
    };
    if command == "version" {
        let _ = writeln!(io.out, "{VERSION}");
        return 0;
    }
    if command == "help" {
        let _ = write!(io.out, "{}", help());
        return 0;
    }
    let embedded_caller = overrides.runtime.is_some();
    let runtime: Arc<dyn Runtime> = match (overrides.runtime, dataplane.as_deref()) {
        (Some(r), _) => r,
        (None, None | Some("linux")) => Arc::new(runtime::Linux {
            host_netns: env("CALICOCTL_HOST_NETNS").filter(|n| !n.is_empty()),
        }),
        (None, Some("model")) => Arc::new(runtime::Model),
        (None, Some(other)) => {
            let _ = writeln!(
                io.out,
                "Invalid --dataplane {other:?}: it must be linux or model."
            );
            return 1;
        }
    };
    let (selection, ds) = match overrides.datastore {
        Some(ds) => (None, Some(ds)),
        None => match Selection::choose(etcd_flag.as_deref(), data_dir_flag.as_deref(), env) {
            Ok(s) => (Some(s), None),
            Err(e) => {
                let _ = writeln!(io.out, "{e}");
                return 1;
            }
        },
    };
    let mut ctx = Ctx {
        io,
        env,
        selection,
        ds,
        runtime,
        embedded_caller,
    };
    let result = match command.as_str() {
        "pool" => pool::run(&mut ctx, &args),
        "profile" => profile::run(&mut ctx, &args),
        "endpoint" => endpoint::run(&mut ctx, &args),
        "container" => container::run(&mut ctx, &args),
        "node" => node::run(&mut ctx, &args),
        "status" => node::status(&mut ctx, &args),
        "ipam" => pool::ipam_command(&mut ctx, &args),
        _ => {
            ctx.print(help());
            Err(Exit(1).into())
        }
    };
    let result = result.and_then(|()| {
        if mutates(&args) {
            node::resync_embedded(&mut ctx)
        } else {
            Ok(())
        }
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            if let Some(Exit(code)) = e.downcast_ref::<Exit>() {
                return *code;
            }
            report(&mut ctx, &e);
            1
        }
    }
}

/// Whether a command (that succeeded) changed what the dataplane is made from.
fn mutates(args: &Args) -> bool {
    let words: Vec<&str> = args.words.iter().map(String::as_str).collect();
    matches!(
        words.first(),
        Some(&("pool" | "profile" | "container" | "endpoint"))
    ) && !words.iter().any(|w| matches!(*w, "show" | "json"))
        && !args.has("help")
}

/// Prints an unexpected failure the way calicoctl did: datastore trouble as
/// "Error accessing etcd (...).  Is etcd running?", anything else with its causes.
fn report(ctx: &mut Ctx<'_>, e: &anyhow::Error) {
    let etcd = ctx.selection().is_none_or(Selection::is_etcd);
    let unavailable = e.chain().find_map(|c| match c.downcast_ref() {
        Some(calico_model::Error::Unavailable { context, message }) => Some(format!(
            "{context}: Error accessing etcd ({message}).  Is etcd running?"
        )),
        _ => None,
    });
    let text = match unavailable {
        Some(t) if etcd => t,
        _ => format!("{e:#}"),
    };
    let _ = writeln!(ctx.io.err, "{text}");
}

/// A path beside the running executable (where `calicoctl node` finds calico-node).
pub fn beside_exe(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.join(name);
    path.exists().then_some(path)
}

/// Maps a model error to calicoctl's wording where one exists.
pub fn model_message(e: &calico_model::Error) -> String {
    match e {
        calico_model::Error::Invalid { reason, .. } if reason.starts_with("Cannot ") => {
            reason.clone()
        }
        other => other.to_string(),
    }
}
