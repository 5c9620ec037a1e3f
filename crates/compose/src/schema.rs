//! Checks a compose file's shape against the Compose Specification's JSON schema
//! (`compose-spec.json`, compiled in), reporting the first problem with its position, the
//! path of keys that leads to it and the shape that was expected there.
//!
//! Only the keywords that schema uses are implemented (`type`, `properties`,
//! `patternProperties`, `additionalProperties`, `required`, `items`, `oneOf`, `enum`,
//! `pattern`, `minimum`, `maximum`, `uniqueItems`, `$ref`); a test walks the schema and fails
//! if it grows another. As docker compose does after interpolation, a string that reads as a
//! number or boolean is accepted where one is expected.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value as J;

use crate::yaml::{Node, Pos, Value};

/// The keywords this validator understands (annotations like `description` are ignored).
pub const KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "patternProperties",
    "additionalProperties",
    "required",
    "items",
    "oneOf",
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "uniqueItems",
    "$ref",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SchemaError {
    pub pos: Pos,
    /// `services.web.ports[0]`.
    pub path: String,
    pub message: String,
}

struct Schema {
    root: J,
    patterns: HashMap<String, regex_lite::Regex>,
}

fn collect_patterns(v: &J, out: &mut HashMap<String, regex_lite::Regex>) {
    match v {
        J::Object(m) => {
            for (k, c) in m {
                if k == "pattern"
                    && let J::String(p) = c
                {
                    out.insert(p.clone(), regex_lite::Regex::new(&format!("^(?:{p})$")).expect("the schema's patterns compile"));
                }
                if k == "patternProperties"
                    && let J::Object(pp) = c
                {
                    for p in pp.keys() {
                        out.insert(p.clone(), regex_lite::Regex::new(p).expect("the schema's patterns compile"));
                    }
                }
                collect_patterns(c, out);
            }
        }
        J::Array(a) => a.iter().for_each(|c| collect_patterns(c, out)),
        _ => {}
    }
}

fn schema() -> &'static Schema {
    static S: OnceLock<Schema> = OnceLock::new();
    S.get_or_init(|| {
        let root: J = serde_json::from_str(include_str!("compose-spec.json")).expect("the compiled-in schema is JSON");
        let mut patterns = HashMap::new();
        collect_patterns(&root, &mut patterns);
        Schema { root, patterns }
    })
}

/// Validates a whole compose file.
pub fn validate(doc: &Node) -> Result<(), SchemaError> {
    let s = schema();
    Checker { s }.check(doc, &s.root, &mut String::new())
}

struct Checker<'a> {
    s: &'a Schema,
}

fn kind(n: &Node) -> &'static str {
    match &n.value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Int(_) | Value::Float(_) => "a number",
        Value::Str(_) => "a string",
        Value::Seq(_) => "a list",
        Value::Map(_) => "a mapping",
    }
}

fn type_matches(n: &Node, t: &str) -> bool {
    match (t, &n.value) {
        ("null", Value::Null) | ("boolean", Value::Bool(_)) | ("string", Value::Str(_)) => true,
        ("object", Value::Map(_)) | ("array", Value::Seq(_)) => true,
        ("number", Value::Int(_) | Value::Float(_)) => true,
        ("integer", Value::Int(_)) => true,
        ("integer", Value::Float(f)) => f.fract() == 0.0,
        // Interpolated values are strings; docker compose casts them.
        ("number", Value::Str(s)) => s.trim().parse::<f64>().is_ok(),
        ("integer", Value::Str(s)) => s.trim().parse::<i64>().is_ok(),
        ("boolean", Value::Str(s)) => matches!(s.as_str(), "true" | "false" | "True" | "False" | "TRUE" | "FALSE"),
        _ => false,
    }
}

fn type_name(t: &str) -> &str {
    match t {
        "object" => "a mapping",
        "array" => "a list",
        "string" => "a string",
        "number" => "a number",
        "integer" => "an integer",
        "boolean" => "a boolean",
        "null" => "null",
        other => other,
    }
}

fn or_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [a] => a.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

impl Checker<'_> {
    fn resolve<'b>(&'b self, mut sch: &'b J) -> &'b J {
        while let Some(r) = sch.get("$ref").and_then(J::as_str) {
            let path = r.strip_prefix("#/").expect("the schema's refs are local");
            sch = path.split('/').fold(&self.s.root, |v, k| &v[k]);
        }
        sch
    }

    /// A short description of what `sch` accepts.
    fn describe(&self, sch: &J) -> String {
        let sch = self.resolve(sch);
        if let Some(alts) = sch.get("oneOf").and_then(J::as_array) {
            return or_list(&alts.iter().map(|a| self.describe(a)).collect::<Vec<_>>());
        }
        if let Some(e) = sch.get("enum").and_then(J::as_array) {
            return format!("one of {}", e.iter().map(J::to_string).collect::<Vec<_>>().join(", "));
        }
        let types: Vec<String> = match sch.get("type") {
            Some(J::String(t)) => vec![type_name(t).to_owned()],
            Some(J::Array(ts)) => ts.iter().filter_map(J::as_str).map(|t| type_name(t).to_owned()).collect(),
            _ => return "anything".into(),
        };
        let mut d = or_list(&types);
        if let Some(props) = sch.get("properties").and_then(J::as_object)
            && types.len() == 1
            && !props.is_empty()
        {
            let keys: Vec<&str> = props.keys().map(String::as_str).take(8).collect();
            let more = if props.len() > 8 { ", …" } else { "" };
            d = format!("{d} with keys like {}{more}", keys.join(", "));
        }
        if let Some(items) = sch.get("items")
            && types.len() == 1
        {
            d = format!("{d} of {}", self.describe(items));
        }
        d
    }

    fn fail(&self, n: &Node, path: &str, message: String) -> Result<(), SchemaError> {
        Err(SchemaError { pos: n.pos, path: if path.is_empty() { "(top level)".into() } else { path.to_owned() }, message })
    }

    fn check(&self, n: &Node, sch: &J, path: &mut String) -> Result<(), SchemaError> {
        let sch = self.resolve(sch);
        if let Some(alts) = sch.get("oneOf").and_then(J::as_array) {
            let mut errors = Vec::new();
            for a in alts {
                match self.check(n, a, path) {
                    Ok(()) => return Ok(()),
                    Err(e) => errors.push((a, e)),
                }
            }
            // If only one alternative has the node's type, its complaint is the precise one.
            let typed: Vec<_> = errors.iter().filter(|(a, _)| self.type_ok(n, a)).collect();
            if let [(_, e)] = typed.as_slice() {
                return Err(e.clone());
            }
            return self.fail(n, path, format!("expected {}, found {}", self.describe(sch), kind(n)));
        }
        let type_ok = self.type_ok(n, sch);
        if !type_ok {
            return self.fail(n, path, format!("expected {}, found {}", self.describe(sch), kind(n)));
        }
        if let Some(e) = sch.get("enum").and_then(J::as_array) {
            let v = n.to_json();
            let text = n.scalar_text();
            if !e.iter().any(|c| *c == v || (c.as_str().is_some() && c.as_str().map(str::to_owned) == text)) {
                return self.fail(n, path, format!("expected {}, found {v}", self.describe(sch)));
            }
        }
        match &n.value {
            Value::Map(entries) => self.check_map(n, entries, sch, path),
            Value::Seq(items) => self.check_seq(items, sch, path),
            Value::Str(s) => {
                if let Some(p) = sch.get("pattern").and_then(J::as_str)
                    && !self.s.patterns[p].is_match(s)
                {
                    return self.fail(n, path, format!("{s:?} does not match the pattern {p}"));
                }
                Ok(())
            }
            Value::Int(_) | Value::Float(_) => {
                let v = n.to_json().as_f64().unwrap_or(0.0);
                if let Some(min) = sch.get("minimum").and_then(J::as_f64)
                    && v < min
                {
                    return self.fail(n, path, format!("{v} is below the minimum {min}"));
                }
                if let Some(max) = sch.get("maximum").and_then(J::as_f64)
                    && v > max
                {
                    return self.fail(n, path, format!("{v} is above the maximum {max}"));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn type_ok(&self, n: &Node, sch: &J) -> bool {
        let sch = self.resolve(sch);
        if let Some(alts) = sch.get("oneOf").and_then(J::as_array) {
            return alts.iter().any(|a| self.type_ok(n, a));
        }
        match sch.get("type") {
            Some(J::String(t)) => type_matches(n, t),
            Some(J::Array(ts)) => ts.iter().filter_map(J::as_str).any(|t| type_matches(n, t)),
            _ => true,
        }
    }

    fn check_map(&self, n: &Node, entries: &[(String, Node)], sch: &J, path: &mut String) -> Result<(), SchemaError> {
        if let Some(req) = sch.get("required").and_then(J::as_array) {
            for r in req.iter().filter_map(J::as_str) {
                if !entries.iter().any(|(k, _)| k == r) {
                    return self.fail(n, path, format!("missing the required key {r:?}"));
                }
            }
        }
        let props = sch.get("properties").and_then(J::as_object);
        let pattern_props = sch.get("patternProperties").and_then(J::as_object);
        for (k, v) in entries {
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(k);
            let mut matched = false;
            if let Some(s) = props.and_then(|p| p.get(k)) {
                matched = true;
                self.check(v, s, path)?;
            }
            for (pat, s) in pattern_props.into_iter().flatten() {
                if self.s.patterns[pat].is_match(k) {
                    matched = true;
                    self.check(v, s, path)?;
                }
            }
            if !matched {
                match sch.get("additionalProperties") {
                    Some(J::Bool(false)) => {
                        let known: Vec<&str> = props.map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
                        let hint = match closest(k, &known) {
                            Some(c) => format!(" (did you mean {c:?}?)"),
                            None if k.starts_with("x-") => String::new(),
                            None => " (extension fields start with \"x-\")".into(),
                        };
                        path.truncate(len);
                        return self.fail(v, path, format!("unknown key {k:?}{hint}"));
                    }
                    Some(s @ J::Object(_)) => self.check(v, s, path)?,
                    _ => {}
                }
            }
            path.truncate(len);
        }
        Ok(())
    }

    fn check_seq(&self, items: &[Node], sch: &J, path: &mut String) -> Result<(), SchemaError> {
        if let Some(s) = sch.get("items") {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                self.check(item, s, path)?;
                path.truncate(len);
            }
        }
        if sch.get("uniqueItems") == Some(&J::Bool(true)) {
            let values: Vec<J> = items.iter().map(Node::to_json).collect();
            for (i, v) in values.iter().enumerate() {
                if values[..i].contains(v) {
                    return self.fail(&items[i], path, format!("{v} is listed twice"));
                }
            }
        }
        Ok(())
    }
}

/// The known key closest to a misspelt one, if any is close.
fn closest<'a>(k: &str, known: &[&'a str]) -> Option<&'a str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1];
            for (j, cb) in b.iter().enumerate() {
                cur.push((prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1));
            }
            prev = cur;
        }
        prev[b.len()]
    }
    known.iter().map(|c| (distance(k, c), *c)).filter(|(d, _)| *d <= 2).min().map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse;

    fn err(text: &str) -> String {
        let e = validate(&parse(text, 0).unwrap()).unwrap_err();
        format!("{}:{}: {e}", e.pos.line, e.pos.col)
    }

    #[test]
    fn the_schema_uses_only_the_keywords_implemented() {
        fn walk(v: &J, out: &mut Vec<String>) {
            if let J::Object(m) = v {
                for (k, c) in m {
                    let annotation =
                        ["description", "title", "default", "deprecated", "$schema", "$id", "definitions"].contains(&k.as_str());
                    if !annotation && !KEYWORDS.contains(&k.as_str()) {
                        out.push(k.clone());
                    }
                    match k.as_str() {
                        "properties" | "patternProperties" | "definitions" => c.as_object().unwrap().values().for_each(|s| walk(s, out)),
                        "oneOf" => c.as_array().unwrap().iter().for_each(|s| walk(s, out)),
                        "items" | "additionalProperties" => walk(c, out),
                        _ => {}
                    }
                }
            }
        }
        let mut unknown = Vec::new();
        walk(&schema().root, &mut unknown);
        assert_eq!(unknown, Vec::<String>::new());
    }

    #[test]
    fn valid_files_pass() {
        let ok = "name: p\nservices:\n  web:\n    image: nginx\n    ports: ['80:80', {target: 443, published: '${P:-8443}'}]\n    environment: {A: 1}\n    x-note: hi\nvolumes:\n  data: {}\nx-anchors: 1\n";
        validate(&parse(ok, 0).unwrap()).unwrap();
    }

    #[test]
    fn errors_name_position_path_and_expected_shape() {
        expect_test::expect![[r#"4:13: services.web: unknown key "imagee" (did you mean "image"?)"#]]
            .assert_eq(&err("services:\n  web:\n    image: x\n    imagee: y\n"));
        expect_test::expect!["3:13: services.web.ports[0]: expected a number, a string or a mapping with keys like app_protocol, host_ip, mode, name, protocol, published, target, found a list"]
            .assert_eq(&err("services:\n  web:\n    ports: [[1]]\n"));
        expect_test::expect!["3:14: services.web.restart: expected a string, found a mapping"]
            .assert_eq(&err("services:\n  web:\n    restart: {a: 1}\n"));
        expect_test::expect![[r#"1:10: (top level): unknown key "service" (did you mean "services"?)"#]].assert_eq(&err("service: {}\n"));
        expect_test::expect![[r#"4:23: services.web.depends_on.db.condition: expected one of "service_started", "service_healthy", "service_completed_successfully", found "service_ready""#]]
            .assert_eq(&err("services:\n  web:\n    depends_on:\n      db: {condition: service_ready}\n"));
    }
}
