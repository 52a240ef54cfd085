//! Command-line parsing as etcd 3.4's etcdctl v2 does it (urfave/cli v1 over Go's `flag`
//! package), so that every spelling users type is accepted — and rejected — the same way.
//!
//! Rules reproduced here:
//!
//! * `-name` and `--name` are the same flag; values are given as `--name value` or
//!   `--name=value`; a boolean takes no separate value (`--sort=false` is allowed). Short
//!   names (`-o`, `-C`, `-r`) are just other names: `-rp` is not `-r -p`.
//! * Parsing stops at the first argument that is not a flag (or at `-` or after `--`);
//!   everything from there on is a positional argument.
//! * Global flags must come before the command. A command's own flags may also come
//!   after its arguments: urfave/cli moves every argument that names one of the
//!   command's flags (and the argument right after it, unless it contains `=` or starts
//!   with `-` and names a flag) to the front before parsing. Quirk kept: the argument
//!   after a *boolean* flag is moved too, so `rm --dir /a --recursive` parses as
//!   `--dir /a --recursive` and `--recursive` ends up a positional argument.
//! * Integers are Go's `strconv.ParseInt(s, 0, 64)` (`0x10`, `0o7`, `1_000`), durations
//!   Go's `time.ParseDuration` (`2s`, `1m30s`, `250ms`), booleans Go's `ParseBool`.
//! * Errors carry Go's text: `flag provided but not defined: -bogus`,
//!   `invalid value "abc" for flag -ttl: parse error`, `flag needs an argument: -ttl`.

use std::collections::HashMap;
use std::time::Duration;

/// The type of a flag's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `--flag` or `--flag=true|false`.
    Bool,
    /// Any string.
    Str,
    /// A Go integer.
    Int,
    /// A Go duration.
    Duration,
}

/// One flag: its names (first is the canonical one) and type.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    /// Names without dashes, canonical first (`["output", "o"]`).
    pub names: &'static [&'static str],
    /// Value type.
    pub kind: Kind,
}

/// A parsed flag value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Boolean.
    Bool(bool),
    /// String.
    Str(String),
    /// Integer.
    Int(i64),
    /// Duration.
    Duration(Duration),
}

/// The result of parsing: the flags that were set (by canonical name) and the
/// positional arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    values: HashMap<&'static str, Value>,
    /// Positional arguments, in order.
    pub args: Vec<String>,
}

impl Parsed {
    /// A boolean flag (false when not given).
    pub fn bool(&self, name: &str) -> bool {
        matches!(self.values.get(name), Some(Value::Bool(true)))
    }

    /// A string flag (`""` when not given).
    pub fn str(&self, name: &str) -> String {
        match self.values.get(name) {
            Some(Value::Str(s)) => s.clone(),
            _ => String::new(),
        }
    }

    /// An integer flag (0 when not given).
    pub fn int(&self, name: &str) -> i64 {
        match self.values.get(name) {
            Some(Value::Int(i)) => *i,
            _ => 0,
        }
    }

    /// A duration flag, or `default` when not given.
    pub fn duration(&self, name: &str, default: Duration) -> Duration {
        match self.values.get(name) {
            Some(Value::Duration(d)) => *d,
            _ => default,
        }
    }

    /// Whether the flag was given at all.
    pub fn is_set(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
}

fn lookup<'a>(flags: &'a [Flag], name: &str) -> Option<&'a Flag> {
    flags.iter().find(|f| f.names.contains(&name))
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)`: optional sign, `0x`/`0o`/`0b`/leading-`0` bases,
/// `_` separators only with a base prefix.
pub fn parse_go_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if body.is_empty() {
        return None;
    }
    let lower = body.to_ascii_lowercase();
    let (radix, digits, prefixed) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d.to_string(), true)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d.to_string(), true)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d.to_string(), true)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_string(), true)
    } else {
        (10, lower.clone(), false)
    };
    let bad_separators = digits.contains('_')
        && (!prefixed || digits.starts_with('_') || digits.ends_with('_') || digits.contains("__"));
    if bad_separators {
        return None;
    }
    let digits: String = digits.chars().filter(|c| *c != '_').collect();
    if digits.is_empty() {
        return None;
    }
    let magnitude = u64::from_str_radix(&digits, radix).ok()?;
    if neg {
        if magnitude > 1u64 << 63 {
            return None;
        }
        Some((magnitude as i128).wrapping_neg() as i64)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Go's `time.ParseDuration` (negative durations are rejected: a timeout cannot be
/// negative, and Go's etcdctl would treat one as already expired).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let body = s.strip_prefix('+').unwrap_or(s);
    if body == "0" {
        return Some(Duration::ZERO);
    }
    if body.is_empty() || body.starts_with('-') {
        return None;
    }
    let mut total_nanos: f64 = 0.0;
    let mut rest = body;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..num_end];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total_nanos += value * scale;
    }
    if total_nanos > i64::MAX as f64 {
        return None;
    }
    Some(Duration::from_nanos(total_nanos as u64))
}

fn set_value(flag: &Flag, name: &str, raw: &str) -> Result<Value, String> {
    let bad = || {
        format!(
            "invalid value {} for flag -{name}: parse error",
            go_quote_simple(raw)
        )
    };
    match flag.kind {
        Kind::Bool => parse_go_bool(raw).map(Value::Bool).ok_or_else(|| {
            format!(
                "invalid boolean value {} for -{name}: parse error",
                go_quote_simple(raw)
            )
        }),
        Kind::Str => Ok(Value::Str(raw.to_string())),
        Kind::Int => parse_go_int(raw).map(Value::Int).ok_or_else(bad),
        Kind::Duration => parse_go_duration(raw).map(Value::Duration).ok_or_else(bad),
    }
}

/// `%q` for the short texts of flag errors.
fn go_quote_simple(s: &str) -> String {
    raft_kv::client::go_quote(s)
}

/// Go's `FlagSet.Parse` followed by urfave/cli's `normalizeFlags`.
pub fn parse(flags: &[Flag], args: &[String]) -> Result<Parsed, String> {
    let mut parsed = Parsed::default();
    let mut given: Vec<(&'static str, &'static str)> = Vec::new(); // (canonical, as typed)
    let mut i = 0;
    while i < args.len() {
        let s = &args[i];
        if s.len() < 2 || !s.starts_with('-') {
            break;
        }
        let mut minuses = 1;
        if s.as_bytes().get(1) == Some(&b'-') {
            minuses = 2;
            if s.len() == 2 {
                i += 1;
                break;
            }
        }
        let name_part = &s[minuses..];
        if name_part.is_empty() || name_part.starts_with('-') || name_part.starts_with('=') {
            return Err(format!("bad flag syntax: {s}"));
        }
        i += 1;
        let (name, inline) = match name_part.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (name_part, None),
        };
        let flag =
            lookup(flags, name).ok_or_else(|| format!("flag provided but not defined: -{name}"))?;
        let typed = flag
            .names
            .iter()
            .copied()
            .find(|n| *n == name)
            .unwrap_or(flag.names[0]);
        let value = match (flag.kind, inline) {
            (Kind::Bool, None) => Value::Bool(true),
            (_, Some(v)) => set_value(flag, name, v)?,
            (_, None) => {
                let Some(v) = args.get(i) else {
                    return Err(format!("flag needs an argument: -{name}"));
                };
                i += 1;
                set_value(flag, name, v)?
            }
        };
        parsed.values.insert(flag.names[0], value);
        given.push((flag.names[0], typed));
    }
    parsed.args = args[i.min(args.len())..].to_vec();
    // normalizeFlags: two spellings of one flag is an error.
    for flag in flags {
        let mut spellings: Vec<&str> = Vec::new();
        for name in flag.names {
            if given.iter().any(|(c, t)| *c == flag.names[0] && t == name) {
                spellings.push(name);
            }
        }
        if spellings.len() > 1 {
            return Err(format!(
                "Cannot use two forms of the same flag: {} {}",
                spellings[1], spellings[0]
            ));
        }
    }
    Ok(parsed)
}

/// urfave/cli v1.22's `reorderArgs`: moves the command's flags (and each one's possible
/// value) before the other arguments; stops reordering at `--`, which it keeps first
/// among the rest.
pub fn reorder(flags: &[Flag], args: &[String]) -> Vec<String> {
    let is_flag = |arg: &str| -> bool {
        if arg == "-" || arg == "--" || !arg.starts_with('-') {
            return false;
        }
        let stripped = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .unwrap_or(arg);
        let name = stripped.split('=').next().unwrap_or("");
        lookup(flags, name).is_some()
    };
    let mut reordered: Vec<String> = Vec::new();
    let mut remaining: Vec<String> = Vec::new();
    let mut may_be_value = false;
    for (i, arg) in args.iter().enumerate() {
        if may_be_value && !is_flag(arg) {
            may_be_value = false;
            reordered.push(arg.clone());
        } else if arg == "--" {
            remaining.insert(0, "--".to_string());
            remaining.extend(args[i + 1..].iter().cloned());
            break;
        } else if is_flag(arg) {
            reordered.push(arg.clone());
            may_be_value = !arg.contains('=');
        } else {
            remaining.push(arg.clone());
        }
    }
    reordered.extend(remaining);
    reordered
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Flag = Flag {
        names: &["ttl"],
        kind: Kind::Int,
    };
    const SWAP: Flag = Flag {
        names: &["swap-with-value"],
        kind: Kind::Str,
    };
    const DIR: Flag = Flag {
        names: &["dir"],
        kind: Kind::Bool,
    };
    const REC: Flag = Flag {
        names: &["recursive", "r"],
        kind: Kind::Bool,
    };
    const HELP: Flag = Flag {
        names: &["help", "h"],
        kind: Kind::Bool,
    };

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    fn command(flags: &[Flag], args: &[&str]) -> Result<Parsed, String> {
        parse(flags, &reorder(flags, &v(args)))
    }

    #[test]
    fn flags_after_arguments_are_moved_first() {
        let set = [TTL, SWAP, HELP];
        let p = command(&set, &["/k", "v", "--ttl", "30"]).unwrap();
        assert_eq!((p.args.clone(), p.int("ttl")), (v(&["/k", "v"]), 30));
        let p = command(&set, &["/k2", "--ttl", "30", "v"]).unwrap();
        assert_eq!(p.args, v(&["/k2", "v"]));
        let p = command(&set, &["/k", "v", "-ttl=5"]).unwrap();
        assert_eq!(p.int("ttl"), 5);
        // Unknown flags after the arguments are ignored (they stay positional) ...
        let p = command(&set, &["/k4", "v", "--endpoints", "x", "-o", "json"]).unwrap();
        assert_eq!(p.args, v(&["/k4", "v", "--endpoints", "x", "-o", "json"]));
        // ... but before them they are errors.
        assert_eq!(
            command(&[HELP], &["--bogus", "/k"]).unwrap_err(),
            "flag provided but not defined: -bogus"
        );
    }

    #[test]
    fn value_errors_use_gos_text() {
        let set = [TTL, HELP];
        assert_eq!(
            command(&set, &["/k5", "v", "--ttl"]).unwrap_err(),
            "invalid value \"/k5\" for flag -ttl: parse error"
        );
        assert_eq!(
            command(&set, &["/k5", "v", "--ttl=abc"]).unwrap_err(),
            "invalid value \"abc\" for flag -ttl: parse error"
        );
        assert_eq!(
            parse(&set, &v(&["--ttl"])).unwrap_err(),
            "flag needs an argument: -ttl"
        );
        assert_eq!(
            parse(&set, &v(&["---ttl"])).unwrap_err(),
            "bad flag syntax: ---ttl"
        );
        assert_eq!(
            parse(&[DIR], &v(&["--dir=maybe"])).unwrap_err(),
            "invalid boolean value \"maybe\" for -dir: parse error"
        );
    }

    #[test]
    fn boolean_flag_swallows_the_next_argument_when_reordering() {
        // `rm --dir /a --recursive`: --recursive becomes positional (etcdctl's quirk).
        let p = command(&[DIR, REC, HELP], &["--dir", "/a", "--recursive"]).unwrap();
        assert!(p.bool("dir") && !p.bool("recursive"));
        assert_eq!(p.args, v(&["/a", "--recursive"]));
        let p = command(&[DIR, REC, HELP], &["/a", "-r"]).unwrap();
        assert!(p.bool("recursive"));
    }

    #[test]
    fn double_dash_ends_flags() {
        let p = command(&[TTL, HELP], &["--", "/k", "-v"]).unwrap();
        assert_eq!(p.args, v(&["/k", "-v"]));
        // exec-watch's documented form keeps "--" among the arguments.
        let p = command(
            &[REC, HELP],
            &["--recursive", "/foo", "--", "sh", "-c", "env"],
        )
        .unwrap();
        assert_eq!(p.args, v(&["/foo", "--", "sh", "-c", "env"]));
        let p = command(&[REC, HELP], &["/foo", "--", "sh"]).unwrap();
        assert_eq!(p.args, v(&["/foo", "sh"]));
    }

    #[test]
    fn two_spellings_of_one_flag_are_rejected() {
        let out = Flag {
            names: &["output", "o"],
            kind: Kind::Str,
        };
        assert_eq!(
            parse(&[out], &v(&["-o", "json", "--output", "simple"])).unwrap_err(),
            "Cannot use two forms of the same flag: o output"
        );
        let p = parse(&[out], &v(&["-o=json", "get"])).unwrap();
        assert_eq!(
            (p.str("output"), p.args.clone()),
            ("json".to_string(), v(&["get"]))
        );
    }

    #[test]
    fn go_integers() {
        for (s, want) in [
            ("0", Some(0)),
            ("30", Some(30)),
            ("-5", Some(-5)),
            ("+7", Some(7)),
            ("0x10", Some(16)),
            ("010", Some(8)),
            ("0b11", Some(3)),
            ("0o17", Some(15)),
            ("1_000", None),
            ("0x1_0", Some(16)),
            ("1e3", None),
            ("", None),
            ("9223372036854775807", Some(i64::MAX)),
            ("9223372036854775808", None),
            ("-9223372036854775808", Some(i64::MIN)),
        ] {
            assert_eq!(parse_go_int(s), want, "{s}");
        }
    }

    #[test]
    fn go_durations() {
        for (s, want) in [
            ("2s", Some(Duration::from_secs(2))),
            ("0", Some(Duration::ZERO)),
            ("1m30s", Some(Duration::from_secs(90))),
            ("250ms", Some(Duration::from_millis(250))),
            ("1.5h", Some(Duration::from_secs(5400))),
            ("10us", Some(Duration::from_micros(10))),
            ("1", None),
            ("abc", None),
            ("", None),
            ("5x", None),
        ] {
            assert_eq!(parse_go_duration(s), want, "{s}");
        }
    }

    #[test]
    fn go_booleans() {
        assert_eq!(parse_go_bool("T"), Some(true));
        assert_eq!(parse_go_bool("False"), Some(false));
        assert_eq!(parse_go_bool("yes"), None);
    }
}
