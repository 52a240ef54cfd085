//! `etcdctl` — etcd 3.4's etcdctl in v2 mode (`ETCDCTL_API=2`), for any etcd v2 server.
//!
//! ```text
//! cargo run --example etcdctl -- -C http://127.0.0.1:2379 set /zy/message "Hello Docker"
//! ```
//!
//! The program is `cli::run`; this file only connects it to the process's arguments,
//! environment, standard streams and exit status.

mod backup;
mod cli;
mod flags;
mod format;
mod help;

fn main() {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let env = |name: &str| std::env::var(name).ok();
    let mut io = cli::Io {
        out: cli::Sink::new(std::io::stdout()),
        err: cli::Sink::new(std::io::stderr()),
        stdin: Box::new(std::io::stdin()),
    };
    let code = cli::run(&args, &env, &mut io);
    std::process::exit(code);
}
