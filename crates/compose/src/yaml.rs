//! YAML to a tree of [`Node`]s that remember where they came from (file, line, column), with
//! the limits that make hostile input cheap to refuse: a size cap on the text, a nesting cap,
//! and a budget on nodes *after* alias expansion (an alias bomb spends it in a few steps).
//! Anchors, aliases and `<<` merge keys are resolved here; scalars are typed by the YAML 1.2
//! core schema, as docker compose does. Also a small emitter for `compose config`.

use std::collections::HashMap;
use std::fmt::Write as _;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

/// Largest compose file accepted.
pub const MAX_BYTES: usize = 4 << 20;
/// Most nodes one document may expand to (aliases count their whole subtree).
pub const MAX_NODES: usize = 250_000;
/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 64;

/// Where a node starts: an index into the loader's file table, and a 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub file: u32,
    pub line: u32,
    pub col: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Keys in document order; duplicates are refused at parse time.
    Map(Vec<(String, Node)>),
}

/// Compose's merge tags: `!reset` drops the value inherited from earlier files, `!override`
/// replaces it instead of merging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Reset,
    Override,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
    pub tag: Option<Tag>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YamlError {
    #[error("line {line} column {col}: {message}")]
    Syntax { line: u32, col: u32, message: String },
    #[error("the file is {0} bytes; compose files are limited to {MAX_BYTES}")]
    TooLarge(usize),
    #[error("line {0}: the document expands to more than {MAX_NODES} nodes (an alias bomb?)")]
    TooManyNodes(u32),
    #[error("line {0}: nested deeper than {MAX_DEPTH} levels")]
    TooDeep(u32),
    #[error("line {line}: mapping key {key:?} is defined twice")]
    DuplicateKey { line: u32, key: String },
    #[error("line {0}: a mapping key must be a scalar")]
    ComplexKey(u32),
    #[error("line {0}: `<<` merges a mapping or a list of mappings")]
    Merge(u32),
    #[error("the file holds more than one YAML document")]
    MultipleDocuments,
}

impl Node {
    pub fn new(value: Value, pos: Pos) -> Self {
        Self { value, pos, tag: None }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The scalar as text (numbers and booleans too), as compose reads e.g. ports and env.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    fn count(&self) -> usize {
        1 + match &self.value {
            Value::Seq(s) => s.iter().map(Node::count).sum(),
            Value::Map(m) => m.iter().map(|(_, v)| v.count()).sum(),
            _ => 0,
        }
    }

    /// Converts to JSON (positions dropped).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(s) => J::Array(s.iter().map(Node::to_json).collect()),
            Value::Map(m) => J::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        }
    }
}

/// Types a plain scalar by the YAML 1.2 core schema.
fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let digits = |t: &str, radix| !t.is_empty() && t.chars().all(|c| c.is_digit(radix));
    if let Some(h) = s.strip_prefix("0x")
        && digits(h, 16)
    {
        return i64::from_str_radix(h, 16).map_or_else(|_| Value::Str(s.into()), Value::Int);
    }
    if let Some(o) = s.strip_prefix("0o")
        && digits(o, 8)
    {
        return i64::from_str_radix(o, 8).map_or_else(|_| Value::Str(s.into()), Value::Int);
    }
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits(unsigned, 10) {
        return s.parse().map_or_else(|_| Value::Str(s.into()), Value::Int);
    }
    let float_like = unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && unsigned.chars().all(|c| c.is_ascii_digit() || "eE.+-".contains(c))
        && unsigned.chars().any(|c| c.is_ascii_digit());
    if float_like && let Ok(f) = s.parse::<f64>() {
        return Value::Float(f);
    }
    Value::Str(s.into())
}

enum Frame {
    Seq { pos: Pos, anchor: usize, tag: Option<Tag>, items: Vec<Node> },
    Map { pos: Pos, anchor: usize, tag: Option<Tag>, entries: Vec<(Node, Node)>, key: Option<Node> },
}

struct Builder {
    file: u32,
    nodes: usize,
    anchors: HashMap<usize, (Node, usize)>,
    stack: Vec<Frame>,
    root: Option<Node>,
}

fn tag_of(t: Option<&yaml_rust2::parser::Tag>) -> Option<Tag> {
    match t.map(|t| t.suffix.as_str()) {
        Some("reset") => Some(Tag::Reset),
        Some("override") => Some(Tag::Override),
        _ => None,
    }
}

impl Builder {
    fn spend(&mut self, n: usize, line: u32) -> Result<(), YamlError> {
        self.nodes += n;
        if self.nodes > MAX_NODES { Err(YamlError::TooManyNodes(line)) } else { Ok(()) }
    }

    fn push_node(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }

    fn finish(&mut self, node: Node, anchor: usize) -> Result<(), YamlError> {
        if anchor > 0 {
            let n = node.count();
            self.anchors.insert(anchor, (node.clone(), n));
        }
        self.push_node(node);
        Ok(())
    }

    fn end_map(&mut self, pos: Pos, anchor: usize, tag: Option<Tag>, entries: Vec<(Node, Node)>) -> Result<(), YamlError> {
        let mut out: Vec<(String, Node)> = Vec::with_capacity(entries.len());
        let mut merges = Vec::new();
        for (k, v) in entries {
            let key = match &k.value {
                Value::Str(s) if s == "<<" => {
                    merges.push(v);
                    continue;
                }
                Value::Seq(_) | Value::Map(_) => return Err(YamlError::ComplexKey(k.pos.line)),
                Value::Null => "null".to_owned(),
                _ => k.scalar_text().unwrap_or_default(),
            };
            if out.iter().any(|(e, _)| *e == key) {
                return Err(YamlError::DuplicateKey { line: k.pos.line, key });
            }
            out.push((key, v));
        }
        for m in merges {
            let sources = match m.value {
                Value::Map(_) => vec![m],
                Value::Seq(items) => items,
                _ => return Err(YamlError::Merge(m.pos.line)),
            };
            for s in sources {
                let Value::Map(entries) = s.value else { return Err(YamlError::Merge(s.pos.line)) };
                for (k, v) in entries {
                    if !out.iter().any(|(e, _)| *e == k) {
                        out.push((k, v));
                    }
                }
            }
        }
        self.finish(Node { value: Value::Map(out), pos, tag }, anchor)
    }

    fn event(&mut self, ev: Event, pos: Pos) -> Result<(), YamlError> {
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                self.spend(1, pos.line)?;
                let t = tag_of(tag.as_ref());
                let as_str = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let value = if style == TScalarStyle::Plain && !as_str { resolve_plain(&text) } else { Value::Str(text) };
                self.finish(Node { value, pos, tag: t }, anchor)
            }
            Event::Alias(id) => {
                let unknown = || YamlError::Syntax { line: pos.line, col: pos.col, message: "alias to an unknown anchor".into() };
                let n = self.anchors.get(&id).ok_or_else(unknown)?.1;
                self.spend(n, pos.line)?;
                let node = self.anchors[&id].0.clone();
                self.push_node(node);
                Ok(())
            }
            Event::SequenceStart(..) | Event::MappingStart(..) if self.stack.len() >= MAX_DEPTH => Err(YamlError::TooDeep(pos.line)),
            Event::SequenceStart(anchor, tag) => {
                self.spend(1, pos.line)?;
                self.stack.push(Frame::Seq { pos, anchor, tag: tag_of(tag.as_ref()), items: Vec::new() });
                Ok(())
            }
            Event::MappingStart(anchor, tag) => {
                self.spend(1, pos.line)?;
                self.stack.push(Frame::Map { pos, anchor, tag: tag_of(tag.as_ref()), entries: Vec::new(), key: None });
                Ok(())
            }
            Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq { pos, anchor, tag, items }) => self.finish(Node { value: Value::Seq(items), pos, tag }, anchor),
                _ => unreachable!("the parser balances sequences"),
            },
            Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Map { pos, anchor, tag, entries, .. }) => self.end_map(pos, anchor, tag, entries),
                _ => unreachable!("the parser balances mappings"),
            },
            _ => Ok(()),
        }
    }
}

/// Parses one YAML document. An empty file is `Null`.
pub fn parse(text: &str, file: u32) -> Result<Node, YamlError> {
    if text.len() > MAX_BYTES {
        return Err(YamlError::TooLarge(text.len()));
    }
    let mut parser = Parser::new_from_str(text);
    let mut b = Builder { file, nodes: 0, anchors: HashMap::new(), stack: Vec::new(), root: None };
    let mut documents = 0;
    loop {
        let (ev, mark) = parser.next_token().map_err(|e| YamlError::Syntax {
            line: e.marker().line() as u32,
            col: e.marker().col() as u32 + 1,
            message: e.info().to_owned(),
        })?;
        let pos = Pos { file: b.file, line: mark.line() as u32, col: mark.col() as u32 + 1 };
        match ev {
            Event::StreamEnd => break,
            Event::DocumentStart => {
                documents += 1;
                if documents > 1 {
                    return Err(YamlError::MultipleDocuments);
                }
            }
            ev => b.event(ev, pos)?,
        }
    }
    Ok(b.root.unwrap_or(Node::new(Value::Null, Pos { file, line: 1, col: 1 })))
}

/// Renders JSON as block-style YAML (for `compose config`), keys in the value's order.
pub fn emit(v: &serde_json::Value) -> String {
    let mut out = String::new();
    emit_into(&mut out, v, 0, false);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

fn plain_ok(s: &str) -> bool {
    !s.is_empty()
        && !matches!(resolve_plain(s), Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(_))
        && !s.starts_with(|c: char| " -?:,[]{}#&*!|>'\"%@`~".contains(c))
        && !s.ends_with([' ', ':'])
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.chars().any(|c| c.is_control())
        && !matches!(s, "yes" | "no" | "on" | "off" | "y" | "n" | "Yes" | "No" | "On" | "Off")
}

fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) if plain_ok(s) => s.clone(),
        serde_json::Value::String(s) => serde_json::to_string(s).expect("strings serialise"),
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

    fn j(text: &str) -> serde_json::Value {
        parse(text, 0).unwrap().to_json()
    }

    #[test]
    fn scalars_follow_the_core_schema() {
        let v = j("a: 1\nb: '1'\nc: true\nd: yes\ne: ~\nf: 1.5\ng: 0x10\nh: 08:00\ni: \"\"\n");
        assert_eq!(v, serde_json::json!({"a":1,"b":"1","c":true,"d":"yes","e":null,"f":1.5,"g":16,"h":"08:00","i":""}));
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let v = j("x-base: &b\n  image: a\n  restart: always\nservices:\n  s:\n    <<: *b\n    image: c\n  t:\n    <<: [*b]\n");
        assert_eq!(v["services"]["s"], serde_json::json!({"image":"c","restart":"always"}));
        assert_eq!(v["services"]["t"], serde_json::json!({"image":"a","restart":"always"}));
    }

    #[test]
    fn positions_are_one_based() {
        let n = parse("services:\n  web:\n    image: x\n", 3).unwrap();
        let img = n.get("services").unwrap().get("web").unwrap().get("image").unwrap();
        assert_eq!(img.pos, Pos { file: 3, line: 3, col: 12 });
    }

    #[test]
    fn duplicate_keys_are_refused_with_their_line() {
        assert_eq!(parse("a: 1\nb: 2\na: 3\n", 0), Err(YamlError::DuplicateKey { line: 3, key: "a".into() }));
    }

    #[test]
    fn an_alias_bomb_is_refused_quickly() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
        }
        let start = std::time::Instant::now();
        assert!(matches!(parse(&text, 0), Err(YamlError::TooManyNodes(_))));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn deep_nesting_and_huge_files_are_refused() {
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(matches!(parse(&deep, 0), Err(YamlError::TooDeep(_))));
        let deeper = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(parse(&deeper, 0).is_err(), "the parser's own recursion limit");
        let huge = "#".repeat(MAX_BYTES + 1);
        assert!(matches!(parse(&huge, 0), Err(YamlError::TooLarge(_))));
    }

    #[test]
    fn tags_reset_and_override() {
        let n = parse("ports: !reset []\nenv: !override {A: 1}\n", 0).unwrap();
        assert_eq!(n.get("ports").unwrap().tag, Some(Tag::Reset));
        assert_eq!(n.get("env").unwrap().tag, Some(Tag::Override));
    }

    /// Found by the `compose` fuzz target: `config` printed a 1200-character key as an
    /// implicit key, which YAML limits to 1024.
    #[test]
    fn long_keys_are_emitted_as_explicit_keys() {
        let v = serde_json::json!({ "x".repeat(1500): {"a": [1]}, "b": "x".repeat(2000) });
        assert_eq!(j(&emit(&v)), v);
    }

    #[test]
    fn emitted_yaml_parses_back_to_the_same_value() {
        let v = serde_json::json!({"name":"p","services":{"web":{"command":["sh","-c","echo: hi # x"],"ports":[{"target":80,"published":"8080"}],"e":{},"l":[],"t":true,"s":"true","n":null,"q":"yes"}}});
        assert_eq!(j(&emit(&v)), v);
    }
}
