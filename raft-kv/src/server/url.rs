//! URLs as etcd accepts them for members: `scheme://host:port`, nothing more.
//!
//! etcd (Go's `types.NewURLs`) accepts a member URL only when its scheme is one of
//! `http`, `https`, `unix`, `unixs`, its authority has the form `host:port` and it has no
//! path. Lists of URLs are kept sorted (etcd sorts them), so two members that were given
//! the same URLs in a different order derive the same member id. The error texts below are
//! etcd's, word for word: clients and the conformance suite compare them.
//!
//! Caveats: only the checks etcd makes are made; a host name is not resolved here, and a
//! `unix://` URL is accepted as etcd accepts it, although this server only listens on TCP.

use std::fmt;

/// One member URL (`http://127.0.0.1:2380`), validated; `Display` gives it back as given.
///
/// Invariant: `text` parsed with [`MemberUrl::parse`] without error, so `scheme`, `host`
/// and `port` are its parts.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberUrl {
    text: String,
    scheme_len: usize,
    host: String,
    port: u16,
}

impl MemberUrl {
    /// Parses one URL with etcd's checks and error messages.
    pub fn parse(input: &str) -> Result<MemberUrl, String> {
        let text = input.trim();
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => (scheme, rest),
            None => {
                // Go's url.Parse treats "host:port" as a scheme "host" with an opaque part,
                // or fails on a colon in the first path segment; either way the scheme check
                // is what etcd reports for a URL without `//`.
                if let Some((first, _)) = text.split_once(':') {
                    if first
                        .chars()
                        .any(|c| c.is_ascii_digit() && first.starts_with(c))
                    {
                        return Err(format!(
                            "parse \"{text}\": first path segment in URL cannot contain colon"
                        ));
                    }
                }
                return Err(format!(
                    "URL scheme must be http, https, unix, or unixs: {text}"
                ));
            }
        };
        if text.chars().any(|c| c.is_control() || c == ' ') {
            return Err(format!("parse \"{text}\": invalid character in URL"));
        }
        if !matches!(scheme, "http" | "https" | "unix" | "unixs") {
            return Err(format!(
                "URL scheme must be http, https, unix, or unixs: {text}"
            ));
        }
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let (host, port) = split_host_port(authority)
            .ok_or_else(|| format!("URL address does not have the form \"host:port\": {text}"))?;
        if !path.is_empty() {
            return Err(format!("URL must not contain a path: {text}"));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("parse \"{text}\": invalid port \":{port}\" after host"))?;
        Ok(MemberUrl {
            text: text.to_string(),
            scheme_len: scheme.len(),
            host: host.to_string(),
            port,
        })
    }

    /// Parses a comma-separated list (`a,b`), sorted as etcd sorts it.
    pub fn parse_list(input: &str) -> Result<Vec<MemberUrl>, String> {
        let mut urls = input
            .split(',')
            .map(MemberUrl::parse)
            .collect::<Result<Vec<_>, _>>()?;
        urls.sort();
        Ok(urls)
    }

    /// The URL as text (`http://127.0.0.1:2380`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `http`, `https`, `unix` or `unixs`.
    pub fn scheme(&self) -> &str {
        &self.text[..self.scheme_len]
    }

    /// The host part without brackets (`127.0.0.1`, `::1`, `localhost`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port` as a socket address string (IPv6 hosts in brackets), for binding and
    /// connecting.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for MemberUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Go's `net.SplitHostPort`: `host:port` or `[v6]:port`; the port must be present (it may
/// be empty text in Go, which the port parse then rejects).
fn split_host_port(authority: &str) -> Option<(&str, &str)> {
    let authority = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return Some((host, port));
    }
    let (host, port) = authority.rsplit_once(':')?;
    if host.contains(':') {
        return None;
    }
    Some((host, port))
}

/// Joins URLs with `,` (as flags and `ETCD_INITIAL_CLUSTER` spell lists).
pub fn join_urls(urls: &[MemberUrl]) -> String {
    let mut out = String::new();
    for (i, url) in urls.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(url.as_str());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_scheme_host_port() {
        let url = MemberUrl::parse("http://127.0.0.1:2380").unwrap();
        assert_eq!(url.scheme(), "http");
        assert_eq!(url.host(), "127.0.0.1");
        assert_eq!(url.port(), 2380);
        assert_eq!(url.host_port(), "127.0.0.1:2380");
        let v6 = MemberUrl::parse("https://[::1]:2379").unwrap();
        assert_eq!(v6.host(), "::1");
        assert_eq!(v6.host_port(), "[::1]:2379");
    }

    #[test]
    fn etcd_error_texts() {
        let table = [
            (
                "ftp://127.0.0.1:22489",
                "URL scheme must be http, https, unix, or unixs: ftp://127.0.0.1:22489",
            ),
            (
                "http://127.0.0.1",
                "URL address does not have the form \"host:port\": http://127.0.0.1",
            ),
            (
                "http://127.0.0.1/x",
                "URL address does not have the form \"host:port\": http://127.0.0.1/x",
            ),
            (
                "http://127.0.0.1:22489/x",
                "URL must not contain a path: http://127.0.0.1:22489/x",
            ),
            ("", "URL scheme must be http, https, unix, or unixs: "),
        ];
        for (input, want) in table {
            assert_eq!(MemberUrl::parse(input).unwrap_err(), want, "{input}");
        }
        assert!(MemberUrl::parse("127.0.0.1:22489").is_err());
        assert!(MemberUrl::parse("http://a:99999").is_err());
    }

    #[test]
    fn lists_are_sorted() {
        let urls = MemberUrl::parse_list("http://b:2,http://a:1").unwrap();
        assert_eq!(join_urls(&urls), "http://a:1,http://b:2");
    }
}
