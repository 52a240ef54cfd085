//! The member's command line and `ETCD_*` environment, parsed and checked as etcd does.
//!
//! etcd parses its flags with Go's `flag` package, and operators' scripts rely on its
//! habits, so this module follows them rather than a Rust CLI library's:
//!
//! * `-name x`, `--name x`, `-name=x`, `--name=x` are all the same flag; a boolean flag
//!   takes its value only after `=` (`--enable-v2=true`; `--enable-v2 true` makes `true` a
//!   stray argument); `--` ends the flags. A flag given twice keeps the last value.
//! * Every flag can also come from `ETCD_<FLAG_IN_UPPER_SNAKE>` (`ETCD_NAME`,
//!   `ETCD_INITIAL_CLUSTER`, …). Setting both a flag and its variable is an error (etcd 3.4:
//!   "conflicting environment variable … is shadowed"); an unknown `ETCD_*` variable is a
//!   warning.
//! * Usage errors (unknown flag, missing or unparsable value) exit with status 2, as Go's
//!   `flag` does; inconsistent settings (a stray argument, election timeout shorter than five
//!   heartbeats, listening on client URLs without advertising any, this member's name
//!   missing from `--initial-cluster`) exit with status 1. The texts are etcd's.
//!
//! Defaults are etcd's: name `default`, data dir `<name>.etcd`, clients on
//! `http://localhost:2379`, peers on `http://localhost:2380`, token `etcd-cluster`, state
//! `new`, snapshot every 100000 entries, heartbeat 100 ms, election 1000 ms. When
//! `--initial-cluster` is not given it is `<name>=<initial advertise peer URLs>`.
//!
//! Caveats: only the flags this server acts on are accepted (plus `--enable-v2`, which is
//! accepted and meaningless because the v2 API is always on, and a few logging flags that
//! only select how much is printed). TLS, discovery, proxy and v3 flags are unknown flags
//! here, which is the honest answer for a server that does not implement them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::url::{join_urls, MemberUrl};
use super::ServerError;

/// Whether this member founds a new cluster or joins a running one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialClusterState {
    /// Found a cluster of the `--initial-cluster` members.
    New,
    /// Join a cluster that already knows this member (added with `member add`).
    Existing,
}

/// `--initial-cluster`: member name → its peer URLs (sorted), in name order.
pub type InitialCluster = BTreeMap<String, Vec<MemberUrl>>;

/// A member's settings after flags, environment and defaults.
#[derive(Clone, Debug)]
pub struct Config {
    /// `--name`: human-readable member name.
    pub name: String,
    /// `--data-dir`: identity, snapshots and (without `--wal-dir`) the WAL.
    pub data_dir: PathBuf,
    /// `--wal-dir`: a separate directory for the WAL.
    pub wal_dir: Option<PathBuf>,
    /// `--listen-client-urls`: where the v2 HTTP API listens.
    pub listen_client_urls: Vec<MemberUrl>,
    /// `--advertise-client-urls`: the member's published `clientURLs`.
    pub advertise_client_urls: Vec<MemberUrl>,
    /// `--listen-peer-urls`: where the raft transport listens.
    pub listen_peer_urls: Vec<MemberUrl>,
    /// `--initial-advertise-peer-urls`: the member's `peerURLs`.
    pub initial_advertise_peer_urls: Vec<MemberUrl>,
    /// `--initial-cluster`: every founding member (or, when joining, every member).
    pub initial_cluster: InitialCluster,
    /// `--initial-cluster-token`: part of every derived member id.
    pub initial_cluster_token: String,
    /// `--initial-cluster-state`.
    pub initial_cluster_state: InitialClusterState,
    /// `--force-new-cluster`: restart an existing data dir as a one-member cluster.
    pub force_new_cluster: bool,
    /// `--snapshot-count`: applied entries between snapshots.
    pub snapshot_count: u64,
    /// `--heartbeat-interval`: the raft tick.
    pub heartbeat_interval: Duration,
    /// `--election-timeout`.
    pub election_timeout: Duration,
    /// `--strict-reconfig-check`: refuse membership changes that could lose quorum.
    pub strict_reconfig_check: bool,
    /// Whether `--data-dir` was left to its default (etcd logs a warning then).
    pub data_dir_defaulted: bool,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// Run a member.
    Run(Box<Config>),
    /// `-h` / `--help`: print [`usage`] and exit 0.
    Help,
    /// `--version`: print the version and exit 0.
    Version,
}

/// The kinds of value a flag takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Bool,
    Uint,
    Urls,
}

/// Every flag the member accepts: name, kind, default as printed by `--help`, help text.
const FLAGS: &[(&str, Kind, &str, &str)] = &[
    (
        "name",
        Kind::Text,
        "default",
        "Human-readable name for this member.",
    ),
    (
        "data-dir",
        Kind::Text,
        "${name}.etcd",
        "Path to the data directory.",
    ),
    (
        "wal-dir",
        Kind::Text,
        "",
        "Path to the dedicated wal directory.",
    ),
    (
        "snapshot-count",
        Kind::Uint,
        "100000",
        "Number of committed transactions to trigger a snapshot to disk.",
    ),
    (
        "heartbeat-interval",
        Kind::Uint,
        "100",
        "Time (in milliseconds) of a heartbeat interval.",
    ),
    (
        "election-timeout",
        Kind::Uint,
        "1000",
        "Time (in milliseconds) for an election to timeout.",
    ),
    (
        "listen-peer-urls",
        Kind::Urls,
        "http://localhost:2380",
        "List of URLs to listen on for peer traffic.",
    ),
    (
        "listen-client-urls",
        Kind::Urls,
        "http://localhost:2379",
        "List of URLs to listen on for client traffic.",
    ),
    (
        "initial-advertise-peer-urls",
        Kind::Urls,
        "http://localhost:2380",
        "List of this member's peer URLs to advertise to the rest of the cluster.",
    ),
    (
        "initial-cluster",
        Kind::Text,
        "default=http://localhost:2380",
        "Initial cluster configuration for bootstrapping.",
    ),
    (
        "initial-cluster-state",
        Kind::Text,
        "new",
        "Initial cluster state ('new' or 'existing').",
    ),
    (
        "initial-cluster-token",
        Kind::Text,
        "etcd-cluster",
        "Initial cluster token for the etcd cluster during bootstrap.",
    ),
    (
        "advertise-client-urls",
        Kind::Urls,
        "http://localhost:2379",
        "List of this member's client URLs to advertise to the public.",
    ),
    (
        "strict-reconfig-check",
        Kind::Bool,
        "true",
        "Reject reconfiguration requests that would cause quorum loss.",
    ),
    (
        "force-new-cluster",
        Kind::Bool,
        "false",
        "Force to create a new one member cluster.",
    ),
    (
        "enable-v2",
        Kind::Bool,
        "true",
        "Accept etcd V2 client requests (always on in this server).",
    ),
    ("debug", Kind::Bool, "false", "Enable debug-level logging."),
    (
        "log-level",
        Kind::Text,
        "info",
        "Configures log level. Only supports debug, info, warn, error, panic, or fatal.",
    ),
    (
        "logger",
        Kind::Text,
        "capnslog",
        "Accepted for compatibility; logs always go to stderr.",
    ),
    (
        "version",
        Kind::Bool,
        "false",
        "Print the version and exit.",
    ),
];

/// The text `--help` prints.
pub fn usage() -> String {
    let mut out = String::from(
        "Usage:\n\n  etcd [flags]\n    Start an etcd (v2 API) member.\n\n  etcd --version\n    Show the version of etcd.\n\n  etcd -h | --help\n    Show the help information about etcd.\n\nFlags (each also as ETCD_<FLAG_IN_UPPER_SNAKE>, e.g. ETCD_NAME):\n",
    );
    for (name, _, default, help) in FLAGS {
        out.push_str(&format!("  --{name} '{default}'\n    {help}\n"));
    }
    out
}

fn env_name(flag: &str) -> String {
    format!("ETCD_{}", flag.replace('-', "_").to_ascii_uppercase())
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn usage_error(message: String) -> ServerError {
    ServerError::Usage { message }
}

fn invalid(message: String) -> ServerError {
    ServerError::InvalidConfig { message }
}

/// Checks one raw value against its flag's kind; the error is Go's reason text.
fn check_value(kind: Kind, value: &str) -> Result<(), String> {
    match kind {
        Kind::Text => Ok(()),
        Kind::Bool => parse_go_bool(value)
            .map(|_| ())
            .ok_or_else(|| "parse error".to_string()),
        Kind::Uint => value
            .parse::<u64>()
            .map(|_| ())
            .map_err(|_| "parse error".to_string()),
        Kind::Urls => MemberUrl::parse_list(value).map(|_| ()),
    }
}

/// Parses `--initial-cluster` (`a=http://h:1,a=http://h:2,b=http://h:3`).
pub fn parse_initial_cluster(text: &str) -> Result<InitialCluster, String> {
    let mut cluster = InitialCluster::new();
    for entry in text.split(',') {
        let (name, url) = entry.split_once('=').unwrap_or(("", ""));
        let url = MemberUrl::parse(url)?;
        cluster.entry(name.to_string()).or_default().push(url);
    }
    for urls in cluster.values_mut() {
        urls.sort();
    }
    Ok(cluster)
}

/// Formats an initial cluster as `--initial-cluster` spells it.
pub fn format_initial_cluster(cluster: &InitialCluster) -> String {
    let mut parts = Vec::new();
    for (name, urls) in cluster {
        for url in urls {
            parts.push(format!("{name}={url}"));
        }
    }
    parts.join(",")
}

impl Invocation {
    /// Parses `args` (without the program name) and the environment. Warnings (unknown
    /// `ETCD_*` variables) are returned beside the outcome for the caller to print.
    pub fn parse(
        args: &[String],
        env: &[(String, String)],
    ) -> Result<(Invocation, Vec<String>), ServerError> {
        let mut given: BTreeMap<&'static str, String> = BTreeMap::new();
        let mut stray: Option<String> = None;
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            i += 1;
            if arg == "--" {
                stray = args.get(i).cloned();
                break;
            }
            if arg.len() < 2 || !arg.starts_with('-') {
                stray = Some(arg.clone());
                break;
            }
            let body = arg.strip_prefix("--").unwrap_or(&arg[1..]);
            if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
                return Err(usage_error(format!("bad flag syntax: {arg}")));
            }
            let (name, inline_value) = match body.split_once('=') {
                Some((name, value)) => (name, Some(value.to_string())),
                None => (body, None),
            };
            if name == "h" || name == "help" {
                return Ok((Invocation::Help, Vec::new()));
            }
            let Some(&(flag, kind, _, _)) = FLAGS.iter().find(|(flag, ..)| *flag == name) else {
                return Err(usage_error(format!(
                    "flag provided but not defined: -{name}"
                )));
            };
            let value = match (kind, inline_value) {
                (_, Some(value)) => value,
                (Kind::Bool, None) => "true".to_string(),
                (_, None) => match args.get(i) {
                    Some(value) => {
                        i += 1;
                        value.clone()
                    }
                    None => return Err(usage_error(format!("flag needs an argument: -{name}"))),
                },
            };
            if let Err(reason) = check_value(kind, &value) {
                return Err(usage_error(if kind == Kind::Bool {
                    format!("invalid boolean value \"{value}\" for -{name}: {reason}")
                } else {
                    format!("invalid value \"{value}\" for flag -{name}: {reason}")
                }));
            }
            given.insert(flag, value);
        }
        if given.get("version").and_then(|v| parse_go_bool(v)) == Some(true) {
            return Ok((Invocation::Version, Vec::new()));
        }
        if let Some(arg) = stray {
            return Err(invalid(format!("'{arg}' is not a valid flag")));
        }

        let mut warnings = Vec::new();
        let mut from_env: BTreeMap<&'static str, String> = BTreeMap::new();
        for (key, value) in env {
            if !key.starts_with("ETCD_") {
                continue;
            }
            let Some(&(flag, kind, _, _)) = FLAGS.iter().find(|(flag, ..)| env_name(flag) == *key)
            else {
                warnings.push(format!("unrecognized environment variable {key}={value}"));
                continue;
            };
            if given.contains_key(flag) {
                return Err(invalid(format!(
                    "conflicting environment variable \"{key}\" is shadowed by corresponding command-line flag (either unset environment variable or disable flag)"
                )));
            }
            if let Err(reason) = check_value(kind, value) {
                return Err(usage_error(format!(
                    "invalid value \"{value}\" for {key}: {reason}"
                )));
            }
            from_env.insert(flag, value.clone());
        }
        given.extend(from_env);
        let config = Config::from_values(&given)?;
        Ok((Invocation::Run(Box::new(config)), warnings))
    }
}

impl Config {
    /// Builds and checks a config from already-syntax-checked flag values.
    fn from_values(given: &BTreeMap<&'static str, String>) -> Result<Config, ServerError> {
        let text = |flag: &str| -> String {
            given.get(flag).cloned().unwrap_or_else(|| {
                FLAGS
                    .iter()
                    .find(|(name, ..)| *name == flag)
                    .map(|(_, _, default, _)| default.to_string())
                    .unwrap_or_default()
            })
        };
        let urls = |flag: &str| MemberUrl::parse_list(&text(flag)).map_err(invalid);
        let uint = |flag: &str| {
            text(flag)
                .parse::<u64>()
                .map_err(|_| usage_error(format!("invalid value for flag -{flag}")))
        };
        let boolean = |flag: &str| parse_go_bool(&text(flag)).unwrap_or(false);

        let name = text("name");
        let data_dir_defaulted = !given.contains_key("data-dir");
        let data_dir = if data_dir_defaulted {
            PathBuf::from(format!("{name}.etcd"))
        } else {
            PathBuf::from(text("data-dir"))
        };
        let wal_dir = Some(text("wal-dir"))
            .filter(|d| !d.is_empty())
            .map(PathBuf::from);
        let initial_advertise_peer_urls = urls("initial-advertise-peer-urls")?;
        let initial_cluster = if given.contains_key("initial-cluster") {
            parse_initial_cluster(&text("initial-cluster"))
                .map_err(|e| invalid(format!("error setting up initial cluster: {e}")))?
        } else {
            let mut cluster = InitialCluster::new();
            cluster.insert(name.clone(), initial_advertise_peer_urls.clone());
            cluster
        };
        let initial_cluster_state = match text("initial-cluster-state").as_str() {
            "new" => InitialClusterState::New,
            "existing" => InitialClusterState::Existing,
            other => {
                return Err(usage_error(format!(
                    "invalid value \"{other}\" for flag -initial-cluster-state: invalid value"
                )))
            }
        };
        let heartbeat_ms = uint("heartbeat-interval")?;
        let election_ms = uint("election-timeout")?;
        if heartbeat_ms == 0 || 5 * heartbeat_ms > election_ms {
            return Err(invalid(format!(
                "--election-timeout[{election_ms}ms] should be at least as 5 times as --heartbeat-interval[{heartbeat_ms}ms]"
            )));
        }
        if election_ms > 50_000 {
            return Err(invalid(format!(
                "--election-timeout[{election_ms}ms] is too long, and should be set less than 50000ms"
            )));
        }
        if given.contains_key("listen-client-urls") && !given.contains_key("advertise-client-urls")
        {
            return Err(invalid(
                "--advertise-client-urls is required when --listen-client-urls is set explicitly"
                    .to_string(),
            ));
        }
        let config = Config {
            name,
            data_dir,
            wal_dir,
            listen_client_urls: urls("listen-client-urls")?,
            advertise_client_urls: urls("advertise-client-urls")?,
            listen_peer_urls: urls("listen-peer-urls")?,
            initial_advertise_peer_urls,
            initial_cluster,
            initial_cluster_token: text("initial-cluster-token"),
            initial_cluster_state,
            force_new_cluster: boolean("force-new-cluster"),
            snapshot_count: uint("snapshot-count")?.max(1),
            heartbeat_interval: Duration::from_millis(heartbeat_ms),
            election_timeout: Duration::from_millis(election_ms),
            strict_reconfig_check: boolean("strict-reconfig-check"),
            data_dir_defaulted,
        };
        Ok(config)
    }

    /// Checks that this member is in `--initial-cluster` under its own peer URLs (what a
    /// member that bootstraps or joins needs; a restart from an existing data dir ignores
    /// the `--initial-*` flags and skips this).
    pub fn check_initial_cluster(&self) -> Result<(), ServerError> {
        let Some(listed) = self.initial_cluster.get(&self.name) else {
            return Err(invalid(format!(
                "couldn't find local name \"{}\" in the initial cluster configuration",
                self.name
            )));
        };
        if *listed != self.initial_advertise_peer_urls {
            return Err(invalid(format!(
                "--initial-cluster has {}={} but missing from --initial-advertise-peer-urls={}",
                self.name,
                join_urls(listed),
                join_urls(&self.initial_advertise_peer_urls)
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for urls in self.initial_cluster.values() {
            for url in urls {
                if !seen.insert(url.as_str()) {
                    return Err(invalid(format!(
                        "error setting up initial cluster: peer URL {url} is given to more than one member"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The WAL directory (`--wal-dir`, else `<data-dir>/member/wal`).
    pub fn wal_dir(&self) -> PathBuf {
        self.wal_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("member").join("wal"))
    }

    /// The snapshot directory, `<data-dir>/member/snap`.
    pub fn snap_dir(&self) -> PathBuf {
        self.data_dir.join("member").join("snap")
    }

    /// A config for tests and embedding: one member named `name` on the given URLs.
    pub fn single(name: &str, data_dir: PathBuf, client: MemberUrl, peer: MemberUrl) -> Config {
        let mut initial_cluster = InitialCluster::new();
        initial_cluster.insert(name.to_string(), vec![peer.clone()]);
        Config {
            name: name.to_string(),
            data_dir,
            wal_dir: None,
            listen_client_urls: vec![client.clone()],
            advertise_client_urls: vec![client],
            listen_peer_urls: vec![peer.clone()],
            initial_advertise_peer_urls: vec![peer],
            initial_cluster,
            initial_cluster_token: "etcd-cluster".to_string(),
            initial_cluster_state: InitialClusterState::New,
            force_new_cluster: false,
            snapshot_count: 100_000,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: Duration::from_millis(1000),
            strict_reconfig_check: true,
            data_dir_defaulted: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn env(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(list: &[&str], vars: &[(&str, &str)]) -> Result<Config, ServerError> {
        match Invocation::parse(&args(list), &env(vars))?.0 {
            Invocation::Run(config) => Ok(*config),
            other => panic!("expected a run, got {other:?}"),
        }
    }

    fn error_text(list: &[&str], vars: &[(&str, &str)]) -> (String, i32) {
        let err = run(list, vars).unwrap_err();
        (err.to_string(), err.exit_code())
    }

    #[test]
    fn defaults_are_etcds() {
        let config = run(&[], &[]).unwrap();
        assert_eq!(config.name, "default");
        assert_eq!(config.data_dir, PathBuf::from("default.etcd"));
        assert!(config.data_dir_defaulted);
        assert_eq!(
            join_urls(&config.listen_client_urls),
            "http://localhost:2379"
        );
        assert_eq!(join_urls(&config.listen_peer_urls), "http://localhost:2380");
        assert_eq!(
            format_initial_cluster(&config.initial_cluster),
            "default=http://localhost:2380"
        );
        assert_eq!(config.initial_cluster_token, "etcd-cluster");
        assert_eq!(config.initial_cluster_state, InitialClusterState::New);
        assert_eq!(config.snapshot_count, 100_000);
        assert_eq!(config.heartbeat_interval, Duration::from_millis(100));
        assert_eq!(config.election_timeout, Duration::from_millis(1000));
        assert!(config.check_initial_cluster().is_ok());
    }

    /// The walkthrough's first command, verbatim.
    #[test]
    fn walkthrough_node1() {
        let config = run(
            &[
                "--name",
                "node1",
                "--initial-advertise-peer-urls",
                "http://192.168.1.23:2380",
                "--listen-peer-urls",
                "http://0.0.0.0:2380",
                "--listen-client-urls",
                "http://0.0.0.0:2379,http://0.0.0.0:4001",
                "--advertise-client-urls",
                "http://0.0.0.0:2379",
                "--initial-cluster-token",
                "etcd-cluster",
                "--initial-cluster",
                "node1=http://192.168.1.23:2380,node2=http://192.168.1.24:2380",
                "--initial-cluster-state",
                "new",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("node1.etcd"));
        assert_eq!(config.listen_client_urls.len(), 2);
        assert_eq!(config.initial_cluster.len(), 2);
        config.check_initial_cluster().unwrap();
    }

    /// The join step: name, cluster and state from the variables `member add` printed.
    #[test]
    fn walkthrough_join_from_environment() {
        let config = run(
            &[
                "--listen-client-urls", "http://0.0.0.0:2379,http://0.0.0.0:4001",
                "--advertise-client-urls", "http://0.0.0.0:2379",
                "--listen-peer-urls", "http://0.0.0.0:2380",
                "--initial-advertise-peer-urls", "http://192.168.1.25:2380",
            ],
            &[
                ("ETCD_NAME", "node3"),
                ("ETCD_INITIAL_CLUSTER", "node1=http://192.168.1.23:2380,node2=http://192.168.1.24:2380,node3=http://192.168.1.25:2380"),
                ("ETCD_INITIAL_CLUSTER_STATE", "existing"),
                ("PATH", "/bin"),
            ],
        )
        .unwrap();
        assert_eq!(config.name, "node3");
        assert_eq!(config.data_dir, PathBuf::from("node3.etcd"));
        assert_eq!(config.initial_cluster_state, InitialClusterState::Existing);
        config.check_initial_cluster().unwrap();
    }

    #[test]
    fn go_flag_spellings() {
        for list in [
            &["-name", "x"][..],
            &["--name", "x"],
            &["-name=x"],
            &["--name=x"],
            &["--name", "y", "--name", "x"],
        ] {
            assert_eq!(run(list, &[]).unwrap().name, "x", "{list:?}");
        }
        assert!(
            run(&["--force-new-cluster"], &[])
                .unwrap()
                .force_new_cluster
        );
        assert!(
            run(&["-force-new-cluster=true"], &[])
                .unwrap()
                .force_new_cluster
        );
        assert!(
            !run(&["--force-new-cluster=F"], &[])
                .unwrap()
                .force_new_cluster
        );
        assert!(run(&["--enable-v2=true"], &[]).is_ok());
    }

    #[test]
    fn help_and_version() {
        for list in [&["-h"][..], &["--help"], &["--name", "x", "-help"]] {
            assert!(matches!(
                Invocation::parse(&args(list), &[]).unwrap().0,
                Invocation::Help
            ));
        }
        assert!(matches!(
            Invocation::parse(&args(&["--version"]), &[]).unwrap().0,
            Invocation::Version
        ));
        assert!(usage().contains("--initial-cluster-token 'etcd-cluster'"));
    }

    /// Error texts and exit statuses as etcd 3.4 prints them.
    #[test]
    fn errors_are_etcds() {
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str, i32);
        let table: &[Case] = &[
            (&["--foo"], &[], "flag provided but not defined: -foo", 2),
            (&["-name"], &[], "flag needs an argument: -name", 2),
            (&["---name"], &[], "bad flag syntax: ---name", 2),
            (&["--snapshot-count", "abc"], &[], "invalid value \"abc\" for flag -snapshot-count: parse error", 2),
            (&["--snapshot-count=-1"], &[], "invalid value \"-1\" for flag -snapshot-count: parse error", 2),
            (&["--initial-cluster-state", "bogus"], &[], "invalid value \"bogus\" for flag -initial-cluster-state: invalid value", 2),
            (&["--enable-v2=maybe"], &[], "invalid boolean value \"maybe\" for -enable-v2: parse error", 2),
            (&["--listen-client-urls", "foo://x:1"], &[], "invalid value \"foo://x:1\" for flag -listen-client-urls: URL scheme must be http, https, unix, or unixs: foo://x:1", 2),
            (&["--listen-peer-urls", "http://127.0.0.1"], &[], "invalid value \"http://127.0.0.1\" for flag -listen-peer-urls: URL address does not have the form \"host:port\": http://127.0.0.1", 2),
            (&["--enable-v2", "true"], &[], "'true' is not a valid flag", 1),
            (&["extra"], &[], "'extra' is not a valid flag", 1),
            (&["--election-timeout", "100"], &[], "--election-timeout[100ms] should be at least as 5 times as --heartbeat-interval[100ms]", 1),
            (&["--election-timeout", "60000"], &[], "--election-timeout[60000ms] is too long, and should be set less than 50000ms", 1),
            (&["--listen-client-urls", "http://0.0.0.0:2379"], &[], "--advertise-client-urls is required when --listen-client-urls is set explicitly", 1),
            (&["--initial-cluster", "n1"], &[], "error setting up initial cluster: URL scheme must be http, https, unix, or unixs: ", 1),
            (&["--name", "yy"], &[("ETCD_NAME", "zz")], "conflicting environment variable \"ETCD_NAME\" is shadowed by corresponding command-line flag (either unset environment variable or disable flag)", 1),
            (&[], &[("ETCD_SNAPSHOT_COUNT", "x")], "invalid value \"x\" for ETCD_SNAPSHOT_COUNT: parse error", 2),
        ];
        for (list, vars, text, code) in table {
            let (got, got_code) = error_text(list, vars);
            assert_eq!(got, *text, "{list:?}");
            assert_eq!(got_code, *code, "{list:?}");
        }
    }

    #[test]
    fn unknown_environment_variable_is_a_warning() {
        let (_, warnings) =
            Invocation::parse(&[], &env(&[("ETCD_FOO", "1"), ("ETCDCTL_API", "2")])).unwrap();
        assert_eq!(
            warnings,
            vec!["unrecognized environment variable ETCD_FOO=1".to_string()]
        );
    }

    #[test]
    fn inconsistent_initial_cluster() {
        let config = run(
            &["--name", "a", "--initial-cluster", "b=http://127.0.0.1:1"],
            &[],
        )
        .unwrap();
        assert_eq!(
            config.check_initial_cluster().unwrap_err().to_string(),
            "couldn't find local name \"a\" in the initial cluster configuration"
        );
        let config = run(
            &[
                "--name",
                "n1",
                "--initial-cluster",
                "n1=http://127.0.0.1:5555",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:5556",
            ],
            &[],
        )
        .unwrap();
        assert!(config
            .check_initial_cluster()
            .unwrap_err()
            .to_string()
            .starts_with("--initial-cluster has n1=http://127.0.0.1:5555 but missing from --initial-advertise-peer-urls=http://127.0.0.1:5556"));
        let config = run(
            &[
                "--name",
                "n1",
                "--initial-cluster",
                "n1=http://127.0.0.1:5555,n2=http://127.0.0.1:5555",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:5555",
            ],
            &[],
        )
        .unwrap();
        assert!(config.check_initial_cluster().is_err());
    }

    #[test]
    fn name_without_initial_cluster_uses_advertised_peer_urls() {
        let config = run(
            &[
                "--name",
                "solo",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:7",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            format_initial_cluster(&config.initial_cluster),
            "solo=http://127.0.0.1:7"
        );
        config.check_initial_cluster().unwrap();
    }
}
