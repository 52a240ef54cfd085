//! Command-line words for calicoctl: docopt-style `--name=value` / `--name value` options
//! anywhere on the line, and the remaining positional words.
//!
//! calicoctl 0.22 parsed each command with docopt; this keeps its surface (options may
//! come before or after the positional words, `--opt=value` and `--opt value` are the
//! same) with one table of known options, so a typo is a usage error, not a silent
//! positional word.

use std::collections::BTreeMap;

/// Options that take a value.
const VALUE_OPTIONS: &[&str] = &[
    "ip",
    "ip6",
    "as",
    "name",
    "hostname",
    "interface",
    "at",
    "host",
    "orchestrator",
    "workload",
    "endpoint",
    "etcd-endpoints",
    "data-dir",
    "log-dir",
    "run-dir",
    "node-image",
    "libnetwork-image",
    "runtime",
    "detach",
    "dataplane",
];

/// Options that are switches.
const FLAG_OPTIONS: &[&str] = &[
    "ipip",
    "nat-outgoing",
    "libnetwork",
    "detailed",
    "no-check",
    "remove-endpoints",
    "force",
    "ipv4",
    "ipv6",
    "no-pull",
    "help",
];

/// Parsed words.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    /// Positional words, in order.
    pub words: Vec<String>,
    options: BTreeMap<String, Vec<String>>,
}

impl Args {
    /// Splits `argv` (without the program name). `Err` names an unknown option or one
    /// missing its value.
    pub fn parse(argv: &[String]) -> Result<Args, String> {
        let mut args = Args::default();
        let mut it = argv.iter();
        let mut only_words = false;
        while let Some(word) = it.next() {
            if only_words || !word.starts_with("--") || word == "--" {
                if word == "--" && !only_words {
                    only_words = true;
                    continue;
                }
                args.words.push(word.clone());
                continue;
            }
            let body = word.trim_start_matches("--");
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            if VALUE_OPTIONS.contains(&name) {
                let value = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .cloned()
                        .ok_or_else(|| format!("--{name} requires a value"))?,
                };
                args.options
                    .entry(name.to_string())
                    .or_default()
                    .push(value);
            } else if FLAG_OPTIONS.contains(&name) {
                if inline.is_some() {
                    return Err(format!("--{name} does not take a value"));
                }
                args.options.entry(name.to_string()).or_default();
            } else {
                return Err(format!("unknown option --{name}"));
            }
        }
        Ok(args)
    }

    /// The value of an option (the last one given).
    pub fn value(&self, name: &str) -> Option<&str> {
        self.options
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    /// Whether an option (switch or valued) was given.
    pub fn has(&self, name: &str) -> bool {
        self.options.contains_key(name)
    }

    /// Removes an option, returning its last value (`Some("")` for a switch).
    pub fn take(&mut self, name: &str) -> Option<String> {
        self.options
            .remove(name)
            .map(|v| v.last().cloned().unwrap_or_default())
    }

    /// Options given that are not in `allowed` (for per-command usage errors).
    pub fn unexpected(&self, allowed: &[&str]) -> Option<String> {
        self.options
            .keys()
            .find(|k| !allowed.contains(&k.as_str()))
            .map(|k| format!("--{k}"))
    }

    /// Positional word `i`.
    pub fn word(&self, i: usize) -> Option<&str> {
        self.words.get(i).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Args, String> {
        Args::parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn options_anywhere_both_forms() {
        let a = parse("pool add 10.20.10.0/24 --ipip --nat-outgoing").unwrap();
        assert_eq!(a.words, vec!["pool", "add", "10.20.10.0/24"]);
        assert!(a.has("ipip") && a.has("nat-outgoing"));
        let a = parse("node --ip 192.168.1.23 --libnetwork").unwrap();
        assert_eq!(a.value("ip"), Some("192.168.1.23"));
        let a = parse("node --ip=192.168.1.23").unwrap();
        assert_eq!(a.value("ip"), Some("192.168.1.23"));
        assert_eq!(a.unexpected(&["ip"]), None);
        assert_eq!(a.unexpected(&[]), Some("--ip".into()));
    }

    #[test]
    fn unknown_and_valueless_options_are_errors() {
        assert!(parse("pool add --ipipp").unwrap_err().contains("--ipipp"));
        assert!(parse("node --ip").unwrap_err().contains("requires a value"));
        assert!(parse("pool add x --ipip=yes").is_err());
    }
}
