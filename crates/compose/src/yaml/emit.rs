//! A small block-style emitter for `compose config`: keys in the value's order, strings
//! quoted whenever go-yaml would read them back as something else.

use std::fmt::Write as _;

use super::{Value, resolve::resolve_plain};

/// Renders JSON as block-style YAML (for `compose config`), keys in the value's order.
pub fn emit(v: &serde_json::Value) -> String {
    let mut out = String::new();
    emit_into(&mut out, v, 0, false);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// Characters libyaml reads as themselves inside a plain scalar.
fn plain_char(c: char) -> bool {
    matches!(c, '\u{20}'..='\u{7e}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fefe}' | '\u{ff00}'..='\u{fffd}' | '\u{10000}'..)
        && !matches!(c, '\u{2028}' | '\u{2029}')
}

fn plain_ok(s: &str) -> bool {
    !s.is_empty()
        && !matches!(resolve_plain(s), Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(_))
        && !s.starts_with(|c: char| " -?:,[]{}#&*!|>'\"%@`~".contains(c))
        && !s.starts_with("...")
        && s != "<<"
        && !s.ends_with([' ', ':'])
        && !s.contains(": ")
        && !s.contains(" #")
        && s.chars().all(plain_char)
        && !matches!(s, "yes" | "no" | "on" | "off" | "y" | "n" | "Yes" | "No" | "On" | "Off")
}

/// A double-quoted scalar, with YAML's escapes for what libyaml would not read back as is
/// (controls, line and paragraph separators, byte-order marks, non-characters).
fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if (c as u32) < 0x20 || ('\u{7f}'..='\u{9f}').contains(&c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            '\u{feff}' | '\u{fffe}' | '\u{ffff}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) if plain_ok(s) => s.clone(),
        serde_json::Value::String(s) => double_quoted(s),
        other => other.to_string(),
    }
}

fn emit_into(out: &mut String, v: &serde_json::Value, indent: usize, in_seq: bool) {
    use serde_json::Value as J;
    let pad = " ".repeat(indent);
    match v {
        J::Object(m) if !m.is_empty() => {
            for (i, (k, val)) in m.iter().enumerate() {
                if !(i == 0 && in_seq) {
                    out.push_str(&pad);
                }
                let mut key = scalar(&J::String(k.clone()));
                // Implicit keys are limited to 1024 characters; longer ones take `? key`.
                if key.len() > 1000 {
                    let _ = writeln!(out, "? {key}");
                    key = pad.clone();
                }
                match val {
                    J::Object(c) if !c.is_empty() => {
                        let _ = writeln!(out, "{key}:");
                        emit_into(out, val, indent + 2, false);
                    }
                    J::Array(c) if !c.is_empty() => {
                        let _ = writeln!(out, "{key}:");
                        emit_into(out, val, indent + 2, false);
                    }
                    _ => {
                        let _ = writeln!(out, "{key}: {}", inline(val));
                    }
                }
            }
        }
        J::Array(items) if !items.is_empty() => {
            for item in items {
                out.push_str(&pad);
                out.push_str("- ");
                match item {
                    J::Object(c) if !c.is_empty() => emit_into(out, item, indent + 2, true),
                    J::Array(c) if !c.is_empty() => {
                        out.push('\n');
                        emit_into(out, item, indent + 2, false);
                    }
                    _ => {
                        let _ = writeln!(out, "{}", inline(item));
                    }
                }
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{}", inline(other));
        }
    }
}

fn inline(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(_) => "{}".into(),
        serde_json::Value::Array(_) => "[]".into(),
        other => scalar(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let text = prop_oneof![
            "\\PC{0,12}",
            "[ -~]{0,12}",
            prop::sample::select(vec![
                "", "<<", "...", "--- x", "- x", "1", "0777", "1_0", "08", "true", "~", "null", "a: b", "a #b", "\t", "\u{85}", "\u{2028}",
                "\u{feff}", "\u{7f}", "x\ny", " x", "x ", "$x", "yes"
            ])
            .prop_map(str::to_owned),
        ];
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            (-1e9f64..1e9).prop_map(serde_json::Value::from),
            text.clone().prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 40, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array),
                prop::collection::vec((text.clone(), inner), 0..5).prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever `config` prints reads back, through libyaml, as the same value.
        #[test]
        fn emitted_yaml_reads_back_as_the_same_value(v in arb_json()) {
            let doc = serde_json::json!({ "x": v });
            let text = emit(&doc);
            let back = super::super::parse(&text, 0).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(back.to_json(), doc, "{}", text);
        }
    }
}
