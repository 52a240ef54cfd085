//! `calicoctl` — calicoctl 0.22's command set over tabby's Calico model: pools, profiles,
//! containers, endpoints and nodes, on an etcd cluster (`--etcd-endpoints`,
//! `ETCD_ENDPOINTS`, `ETCD_AUTHORITY`) or, with none configured, the embedded datastore.
//!
//! ```text
//! calicoctl pool add 10.20.10.0/24 --ipip --nat-outgoing
//! calicoctl container add centos-1 10.20.10.1
//! calicoctl profile add myprofile1
//! calicoctl container centos-1 profile append myprofile1
//! ```
//!
//! The program is `app::run`; this file wires it to the process's arguments,
//! environment, streams and exit status.

// The app module is also compiled into examples/walkthrough (through `#[path]`), which
// uses a different subset of it.
#[allow(dead_code)]
mod app;

fn main() {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let env = |name: &str| std::env::var(name).ok();
    let mut io = app::Io {
        out: Box::new(std::io::stdout()),
        err: Box::new(std::io::stderr()),
        stdin: Box::new(std::io::stdin()),
    };
    let code = app::run(&args, &env, &mut io, app::Overrides::default());
    std::process::exit(code);
}
