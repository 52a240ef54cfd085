//! etcdctl's three output formats for a keys response (`-o simple|extended|json`).
//!
//! `json` is not the server's body but etcd's client re-serialising its own `Response`
//! struct with Go's `encoding/json`: fields in struct order (`key, dir, value, nodes,
//! createdIndex, modifiedIndex, expiration, ttl`), `"value":""` and `"nodes":null` always
//! present, `"prevNode":null` when absent, and Go's HTML-safe escaping (`<` → `\u003c`).

use std::io::{self, Write};

use raft_kv::client::{KeysResponse, Node};

/// Go's `encoding/json` string encoding (Go 1.19: only `\n \r \t` get short escapes).
pub fn go_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn go_json_node(n: &Node, out: &mut String) {
    out.push_str("{\"key\":");
    out.push_str(&go_json_string(&n.key));
    if n.dir {
        out.push_str(",\"dir\":true");
    }
    out.push_str(",\"value\":");
    out.push_str(&go_json_string(n.value_str()));
    out.push_str(",\"nodes\":");
    if n.nodes.is_empty() {
        out.push_str("null");
    } else {
        out.push('[');
        for (i, child) in n.nodes.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            go_json_node(child, out);
        }
        out.push(']');
    }
    out.push_str(&format!(
        ",\"createdIndex\":{},\"modifiedIndex\":{}",
        n.created_index, n.modified_index
    ));
    if let Some(exp) = &n.expiration {
        out.push_str(",\"expiration\":");
        out.push_str(&go_json_string(exp));
    }
    if let Some(ttl) = n.ttl.filter(|t| *t != 0) {
        out.push_str(&format!(",\"ttl\":{ttl}"));
    }
    out.push('}');
}

/// The `-o json` line of a response (without the trailing newline).
pub fn go_json_response(resp: &KeysResponse) -> String {
    let mut out = String::from("{\"action\":");
    out.push_str(&go_json_string(resp.action.as_str()));
    out.push_str(",\"node\":");
    match &resp.node {
        Some(n) => go_json_node(n, &mut out),
        None => out.push_str("null"),
    }
    out.push_str(",\"prevNode\":");
    match &resp.prev_node {
        Some(n) => go_json_node(n, &mut out),
        None => out.push_str("null"),
    }
    out.push('}');
    out
}

/// etcdctl's `printResponseKey`: writes `resp` in `format` to `out`; an unknown format
/// is reported on `err` (and, as in etcdctl, is not an error exit).
pub fn print_response_key(
    resp: &KeysResponse,
    format: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<()> {
    let node = resp.node_or_default();
    let is_delete = resp.action.as_str() == "delete";
    match format {
        "simple" => {
            if is_delete {
                let prev = resp.prev_node.clone().unwrap_or_default();
                writeln!(out, "PrevNode.Value: {}", prev.value_str())
            } else {
                writeln!(out, "{}", node.value_str())
            }
        }
        "extended" => {
            writeln!(out, "Key: {}", node.key)?;
            writeln!(out, "Created-Index: {}", node.created_index)?;
            writeln!(out, "Modified-Index: {}", node.modified_index)?;
            if let Some(prev) = &resp.prev_node {
                writeln!(out, "PrevNode.Value: {}", prev.value_str())?;
            }
            writeln!(out, "TTL: {}", node.ttl.unwrap_or(0))?;
            writeln!(out, "Index: {}", resp.meta.etcd_index.unwrap_or(0))?;
            if !is_delete {
                writeln!(out)?;
                writeln!(out, "{}", node.value_str())?;
            }
            Ok(())
        }
        "json" => writeln!(out, "{}", go_json_response(resp)),
        other => writeln!(err, "Unsupported output format: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_kv::client::{Action, ResponseMeta};

    fn file(key: &str, value: &str, index: u64) -> Node {
        Node {
            key: key.into(),
            value: Some(value.into()),
            modified_index: index,
            created_index: index,
            ..Node::default()
        }
    }

    fn resp(action: Action, node: Node, prev: Option<Node>, index: u64) -> KeysResponse {
        KeysResponse {
            action,
            node: Some(node),
            prev_node: prev,
            meta: ResponseMeta {
                etcd_index: Some(index),
                ..ResponseMeta::default()
            },
            status: 200,
        }
    }

    fn render(r: &KeysResponse, format: &str) -> (String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        print_response_key(r, format, &mut out, &mut err).unwrap();
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn json_matches_etcdctl_byte_for_byte() {
        // Observed from etcd 3.4.23's etcdctl.
        let mut n = file("/k", "x y", 5);
        n.expiration = Some("2026-11-26T19:23:44.039032499Z".into());
        n.ttl = Some(30);
        let r = resp(Action::Get, n, None, 6);
        assert_eq!(
            go_json_response(&r),
            r#"{"action":"get","node":{"key":"/k","value":"x y","nodes":null,"createdIndex":5,"modifiedIndex":5,"expiration":"2026-11-26T19:23:44.039032499Z","ttl":30},"prevNode":null}"#
        );
        let del = resp(
            Action::Delete,
            Node {
                key: "/x".into(),
                modified_index: 21,
                created_index: 20,
                ..Node::default()
            },
            Some(file("/x", "2", 20)),
            21,
        );
        assert_eq!(
            go_json_response(&del),
            r#"{"action":"delete","node":{"key":"/x","value":"","nodes":null,"createdIndex":20,"modifiedIndex":21},"prevNode":{"key":"/x","value":"2","nodes":null,"createdIndex":20,"modifiedIndex":20}}"#
        );
        let root = resp(
            Action::Get,
            Node {
                dir: true,
                nodes: vec![file("/k3", "v", 7)],
                ..Node::default()
            },
            None,
            25,
        );
        assert_eq!(
            go_json_response(&root),
            r#"{"action":"get","node":{"key":"","dir":true,"value":"","nodes":[{"key":"/k3","value":"v","nodes":null,"createdIndex":7,"modifiedIndex":7}],"createdIndex":0,"modifiedIndex":0},"prevNode":null}"#
        );
    }

    #[test]
    fn go_json_escaping() {
        assert_eq!(
            go_json_string("a<b>&\"\\\n\u{1}\u{8}é\u{2028}"),
            "\"a\\u003cb\\u003e\\u0026\\\"\\\\\\n\\u0001\\u0008é\\u2028\""
        );
    }

    #[test]
    fn extended_and_simple_match_etcdctl() {
        let set = resp(
            Action::Set,
            file("/x", "2", 20),
            Some(file("/x", "1", 19)),
            20,
        );
        assert_eq!(
            render(&set, "extended").0,
            "Key: /x\nCreated-Index: 20\nModified-Index: 20\nPrevNode.Value: 1\nTTL: 0\nIndex: 20\n\n2\n"
        );
        assert_eq!(render(&set, "simple").0, "2\n");
        let rmdir = resp(
            Action::Delete,
            Node {
                key: "/dir2".into(),
                dir: true,
                modified_index: 25,
                created_index: 24,
                ..Node::default()
            },
            Some(Node {
                key: "/dir2".into(),
                dir: true,
                modified_index: 24,
                created_index: 24,
                ..Node::default()
            }),
            25,
        );
        assert_eq!(
            render(&rmdir, "extended").0,
            "Key: /dir2\nCreated-Index: 24\nModified-Index: 25\nPrevNode.Value: \nTTL: 0\nIndex: 25\n"
        );
        let cad = resp(
            Action::CompareAndDelete,
            file("/k", "", 9),
            Some(file("/k", "v", 8)),
            9,
        );
        assert_eq!(render(&cad, "simple").0, "\n");
        assert_eq!(
            render(&set, "yaml"),
            (String::new(), "Unsupported output format: yaml\n".into())
        );
    }
}
