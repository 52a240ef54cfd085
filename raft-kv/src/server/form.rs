//! Query strings and form bodies, decoded the way Go's `net/http` decodes them for etcd.
//!
//! etcd reads every keys-API parameter from `r.Form`: the form body (for `PUT`, `POST`,
//! `PATCH` with `Content-Type: application/x-www-form-urlencoded`) followed by the query
//! string, and takes the *first* value of a name. So a body `value=` wins over a query
//! `value=`. Decoding follows Go's `url.ParseQuery`: `+` is a space, `%XX` a byte, a bad
//! escape is an error naming it (`invalid URL escape "%zz"`), pairs are split on `&`.
//!
//! Values are decoded to UTF-8 lossily (invalid sequences become U+FFFD) because the
//! store keeps keys and values as Rust strings; etcd itself keeps raw bytes, but JSON
//! responses cannot carry invalid UTF-8 either, so clients see the same text.

/// Decoded `name=value` pairs in order: body pairs first, then query pairs.
#[derive(Debug, Default, Clone)]
pub struct Form {
    pairs: Vec<(String, String)>,
}

/// Go's `url.ParseQuery` failure text (etcd answers errorCode 210 with it as the cause).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormError(pub String);

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `text`; `plus_is_space` for query/form components (not for paths).
pub fn percent_decode(text: &str, plus_is_space: bool) -> Result<String, FormError> {
    let bytes = text.as_bytes();
    // One pass without early exit (vectorized) finds whether anything needs decoding.
    let plus = if plus_is_space { b'+' } else { b'%' };
    if !bytes
        .iter()
        .fold(false, |acc, &b| acc | (b == b'%') | (b == plus))
    {
        return Ok(text.to_string());
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'%' => {
                let high = bytes.get(i + 1).copied().and_then(hex_value);
                let low = bytes.get(i + 2).copied().and_then(hex_value);
                match (high, low) {
                    (Some(high), Some(low)) => {
                        out.push(high << 4 | low);
                        i += 3;
                    }
                    _ => {
                        let end = text.len().min(i + 3);
                        let shown = text.get(i..end).unwrap_or("%");
                        return Err(FormError(format!("invalid URL escape \"{shown}\"")));
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8(out)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

impl Form {
    /// An empty form.
    pub fn new() -> Form {
        Form::default()
    }

    /// Appends the pairs of a query string or form body (`a=1&b=2`).
    pub fn append_encoded(&mut self, encoded: &str) -> Result<(), FormError> {
        for part in encoded.split('&') {
            if part.is_empty() {
                continue;
            }
            if part.contains(';') {
                return Err(FormError(
                    "invalid semicolon separator in query".to_string(),
                ));
            }
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let name = percent_decode(name, true)?;
            let value = percent_decode(value, true)?;
            self.pairs.push((name, value));
        }
        Ok(())
    }

    /// The first value given for `name`, if any (Go's `r.Form[name][0]`).
    pub fn first(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `name` was given at all (even as `name=`).
    pub fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(n, _)| n == name)
    }

    /// Go's `r.FormValue(name)`: the first value or `""`.
    pub fn value(&self, name: &str) -> &str {
        self.first(name).unwrap_or("")
    }
}

/// Go's `strconv.ParseUint(s, 10, 64)`: decimal digits only (no sign, no spaces).
pub fn parse_go_uint(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_first_then_query_first_value_wins() {
        let mut form = Form::new();
        form.append_encoded("value=frombody").unwrap();
        form.append_encoded("value=fromquery&ttl=5&value=x")
            .unwrap();
        assert_eq!(form.value("value"), "frombody");
        assert_eq!(form.value("ttl"), "5");
        assert_eq!(form.value("missing"), "");
        assert!(!form.has("missing"));
    }

    #[test]
    fn decoding() {
        let mut form = Form::new();
        form.append_encoded("value=Hello+Docker%20%E4%BD%A0&empty=&bare")
            .unwrap();
        assert_eq!(form.value("value"), "Hello Docker 你");
        assert!(form.has("empty") && form.has("bare"));
        assert_eq!(form.first("bare"), Some(""));
        assert_eq!(percent_decode("a+b%2Fc", false).unwrap(), "a+b/c");
    }

    #[test]
    fn bad_escapes_name_the_escape() {
        let mut form = Form::new();
        assert_eq!(
            form.append_encoded("a=%zz").unwrap_err(),
            FormError("invalid URL escape \"%zz\"".to_string())
        );
        assert_eq!(
            form.append_encoded("a=%4").unwrap_err(),
            FormError("invalid URL escape \"%4\"".to_string())
        );
    }

    #[test]
    fn go_uints() {
        assert_eq!(parse_go_uint("42"), Some(42));
        for bad in [
            "",
            "-1",
            "+5",
            "1.5",
            "0x10",
            "1e3",
            " 1",
            "18446744073709551616",
        ] {
            assert_eq!(parse_go_uint(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        /// Encoding any text byte-wise and decoding it gives the text back.
        #[test]
        fn percent_round_trip(text in ".*") {
            let encoded: String = text.bytes().map(|b| format!("%{b:02X}")).collect();
            proptest::prop_assert_eq!(percent_decode(&encoded, true).unwrap(), text);
        }

        /// Decoding never panics on arbitrary input.
        #[test]
        fn decoding_never_panics(text in "[%+a-f0-9=&;]{0,40}") {
            let _ = Form::new().append_encoded(&text);
        }
    }
}
