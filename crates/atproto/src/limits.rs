//! Bounds on what a PDS, a PLC directory or a well-known endpoint may hand us: they are run by
//! strangers, so every answer is capped in size, JSON nesting and time before it is parsed.

use std::time::Duration;

/// The limits every request of a [`crate::Client`] obeys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest JSON answer (a record, a DID document, an XRPC reply), in bytes.
    pub max_json_bytes: u64,
    /// Deepest nesting of arrays and objects in a JSON answer.
    pub max_json_depth: usize,
    /// Largest blob (a bundle's code), in bytes.
    pub max_blob_bytes: u64,
    /// Longest a whole request may take, from connecting to the last byte of the body.
    pub timeout: Duration,
    /// Longest connecting may take.
    pub connect_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // A PDS refuses records over 1 MiB of CBOR; the JSON of one is not much larger.
            max_json_bytes: 2 << 20,
            max_json_depth: 32,
            max_blob_bytes: 64 << 20,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Whether `json` nests arrays and objects more than `limit` levels deep. A byte scan that
/// skips strings, so it runs before (and protects) any recursive parser; it does not check that
/// `json` is valid.
pub fn json_deeper_than(json: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn depth(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<i64>().prop_map(serde_json::Value::from),
            // Strings full of brackets, quotes and backslashes must not count.
            "[\\[\\]{}\"\\\\a-z]{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(12, 64, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("[\\[{\"a-z]{0,4}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn the_scan_agrees_with_the_parsed_depth(v in value(), limit in 0usize..14) {
            let text = serde_json::to_string(&v).unwrap();
            prop_assert_eq!(json_deeper_than(text.as_bytes(), limit), depth(&v) > limit, "{}", text);
        }
    }

    #[test]
    fn deep_nesting_is_caught_without_recursion() {
        let deep = "[".repeat(1_000_000);
        assert!(json_deeper_than(deep.as_bytes(), 32));
        assert!(!json_deeper_than(br#"{"a":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"["}"#, 1));
    }
}
