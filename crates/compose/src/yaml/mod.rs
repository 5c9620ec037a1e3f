//! YAML to a tree of [`Node`]s that remember where they came from (file, line, column), with
//! the limits that make hostile input cheap to refuse: a size cap on the text, a nesting cap,
//! and a budget on nodes *after* alias expansion (an alias bomb spends it in a few steps).
//! The events come from `libyaml-safer`, a port of libyaml, which go-yaml (and so docker
//! compose) is also a port of: what docker compose reads, this reads the same way. Anchors,
//! aliases and `<<` merge keys are resolved here; plain scalars are typed as go-yaml types
//! them ([`resolve`]). Also a small emitter for `compose config` ([`emit`]).

#[cfg(test)]
mod edge_cases;
mod emit;
mod resolve;

use std::collections::HashMap;
use std::fmt::Write as _;

use libyaml_safer::{EventData, Parser, ScalarStyle};

pub use emit::emit;
pub use resolve::{float_text, resolve_plain};

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
    #[error("line {line}: mapping key {key:?} is already defined at line {first}")]
    DuplicateKey { line: u32, key: String, first: u32 },
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
            Value::Float(f) => Some(float_text(*f)),
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

enum Frame {
    Seq { pos: Pos, anchor: Option<String>, tag: Option<Tag>, items: Vec<Node> },
    Map { pos: Pos, anchor: Option<String>, tag: Option<Tag>, entries: Vec<Entry>, key: Option<(Node, bool)> },
}

/// A mapping entry as parsed; `merge` marks a plain `<<` key.
struct Entry {
    key: Node,
    value: Node,
    merge: bool,
}

struct Builder {
    file: u32,
    nodes: usize,
    /// Anchors of the current document, with the size of what they name.
    anchors: HashMap<String, (Node, usize)>,
    stack: Vec<Frame>,
    root: Option<Node>,
}

const CORE_TAG: &str = "tag:yaml.org,2002:";

fn merge_tag(t: Option<&str>) -> Option<Tag> {
    match t {
        Some("!reset") => Some(Tag::Reset),
        Some("!override") => Some(Tag::Override),
        _ => None,
    }
}

/// A scalar's value: plain ones typed as go-yaml types them, quoted and block ones strings,
/// `!!str`/`!!int`/… as they say (go-yaml refuses `!!int abc`).
fn scalar_value(text: String, plain: bool, tag: Option<&str>, pos: Pos) -> Result<Value, YamlError> {
    let core = tag.and_then(|t| t.strip_prefix(CORE_TAG));
    let want = match core {
        None if tag.is_none() || merge_tag(tag).is_some() => return Ok(if plain { resolve_plain(&text) } else { Value::Str(text) }),
        None | Some("str" | "binary" | "timestamp") => return Ok(Value::Str(text)),
        Some(t) => t,
    };
    let v = resolve_plain(&text);
    let ok = match (want, &v) {
        ("null", Value::Null) | ("bool", Value::Bool(_)) | ("int", Value::Int(_)) | ("float", Value::Float(_)) => true,
        ("float", Value::Int(i)) => return Ok(Value::Float(*i as f64)),
        _ => false,
    };
    if ok {
        Ok(v)
    } else {
        Err(YamlError::Syntax { line: pos.line, col: pos.col, message: format!("cannot decode {text:?} as a !!{want}") })
    }
}

impl Builder {
    fn spend(&mut self, n: usize, line: u32) -> Result<(), YamlError> {
        self.nodes += n;
        if self.nodes > MAX_NODES { Err(YamlError::TooManyNodes(line)) } else { Ok(()) }
    }

    fn push_node(&mut self, node: Node, merge_key: bool) {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some((node, merge_key)),
                Some((k, merge)) => entries.push(Entry { key: k, value: node, merge }),
            },
        }
    }

    fn finish(&mut self, node: Node, anchor: Option<String>, merge_key: bool) {
        if let Some(a) = anchor {
            let n = node.count();
            self.anchors.insert(a, (node.clone(), n));
        }
        self.push_node(node, merge_key);
    }

    fn end_map(&mut self, pos: Pos, anchor: Option<String>, tag: Option<Tag>, entries: Vec<Entry>) -> Result<(), YamlError> {
        let mut out: Vec<(String, Node)> = Vec::with_capacity(entries.len());
        let mut lines: HashMap<String, u32> = HashMap::new();
        let mut merges = Vec::new();
        for Entry { key: k, value: v, merge } in entries {
            if merge {
                merges.push(v);
                continue;
            }
            let key = match &k.value {
                Value::Seq(_) | Value::Map(_) => return Err(YamlError::ComplexKey(k.pos.line)),
                Value::Null => "null".to_owned(),
                _ => k.scalar_text().unwrap_or_default(),
            };
            if let Some(&first) = lines.get(&key) {
                return Err(YamlError::DuplicateKey { line: k.pos.line, key, first });
            }
            lines.insert(key.clone(), k.pos.line);
            out.push((key, v));
        }
        // Keys written in the mapping win over merged ones; earlier merged mappings win over
        // later ones, as go-yaml merges.
        for m in merges {
            let sources = match m.value {
                Value::Map(_) => vec![m],
                Value::Seq(items) => items,
                _ => return Err(YamlError::Merge(m.pos.line)),
            };
            for s in sources {
                let Value::Map(entries) = s.value else { return Err(YamlError::Merge(s.pos.line)) };
                for (k, v) in entries {
                    if !lines.contains_key(&k) {
                        lines.insert(k.clone(), v.pos.line);
                        out.push((k, v));
                    }
                }
            }
        }
        self.finish(Node { value: Value::Map(out), pos, tag }, anchor, false);
        Ok(())
    }

    fn event(&mut self, ev: EventData, pos: Pos) -> Result<(), YamlError> {
        match ev {
            EventData::Scalar { anchor, tag, value, style, .. } => {
                self.spend(1, pos.line)?;
                let plain = style == ScalarStyle::Plain;
                let merge_key = plain && tag.is_none() && value == "<<";
                let t = merge_tag(tag.as_deref());
                let value = scalar_value(value, plain, tag.as_deref(), pos)?;
                self.finish(Node { value, pos, tag: t }, anchor, merge_key);
                Ok(())
            }
            EventData::Alias { anchor } => {
                let unknown =
                    || YamlError::Syntax { line: pos.line, col: pos.col, message: format!("unknown anchor {anchor:?} referenced") };
                let n = self.anchors.get(&anchor).ok_or_else(unknown)?.1;
                self.spend(n, pos.line)?;
                let mut node = self.anchors[&anchor].0.clone();
                node.pos = pos;
                self.push_node(node, false);
                Ok(())
            }
            EventData::SequenceStart { .. } | EventData::MappingStart { .. } if self.stack.len() >= MAX_DEPTH => {
                Err(YamlError::TooDeep(pos.line))
            }
            EventData::SequenceStart { anchor, tag, .. } => {
                self.spend(1, pos.line)?;
                self.stack.push(Frame::Seq { pos, anchor, tag: merge_tag(tag.as_deref()), items: Vec::new() });
                Ok(())
            }
            EventData::MappingStart { anchor, tag, .. } => {
                self.spend(1, pos.line)?;
                self.stack.push(Frame::Map { pos, anchor, tag: merge_tag(tag.as_deref()), entries: Vec::new(), key: None });
                Ok(())
            }
            EventData::SequenceEnd => match self.stack.pop() {
                Some(Frame::Seq { pos, anchor, tag, items }) => {
                    self.finish(Node { value: Value::Seq(items), pos, tag }, anchor, false);
                    Ok(())
                }
                _ => unreachable!("the parser balances sequences"),
            },
            EventData::MappingEnd => match self.stack.pop() {
                Some(Frame::Map { pos, anchor, tag, entries, .. }) => self.end_map(pos, anchor, tag, entries),
                _ => unreachable!("the parser balances mappings"),
            },
            _ => Ok(()),
        }
    }
}

/// Where the first character libyaml's reader refuses is (it reports only a byte offset).
fn first_unreadable(text: &str) -> (u32, u32) {
    let readable = |c: char| matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{7e}' | '\u{85}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..);
    let at = text.find(|c| !readable(c)).unwrap_or(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() as u32 + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u32 + 1;
    (line, col)
}

fn syntax_error(e: &libyaml_safer::Error, text: &str) -> YamlError {
    let Some(mark) = e.problem_mark() else {
        let (line, col) = first_unreadable(text);
        return YamlError::Syntax { line, col, message: e.problem().to_owned() };
    };
    let mut message = e.problem().to_owned();
    if let (Some(context), Some(at)) = (e.context(), e.context_mark()) {
        let _ = write!(message, " ({context} that starts at line {} column {})", at.line + 1, at.column + 1);
    }
    YamlError::Syntax { line: mark.line as u32 + 1, col: mark.column as u32 + 1, message }
}

/// Parses every document of a YAML stream (`---` separates them; a stream with no content is
/// one `Null` document). Limits count over the whole stream.
pub fn parse_stream(text: &str, file: u32) -> Result<Vec<Node>, YamlError> {
    if text.len() > MAX_BYTES {
        return Err(YamlError::TooLarge(text.len()));
    }
    let mut parser = Parser::new();
    parser.set_input(text.as_bytes());
    let mut b = Builder { file, nodes: 0, anchors: HashMap::new(), stack: Vec::new(), root: None };
    let mut documents = Vec::new();
    loop {
        let ev = parser.parse().map_err(|e| syntax_error(&e, text))?;
        let pos = Pos { file: b.file, line: ev.start_mark.line as u32 + 1, col: ev.start_mark.column as u32 + 1 };
        match ev.data {
            EventData::StreamEnd => break,
            EventData::DocumentStart { .. } => {
                b.anchors.clear();
                b.root = None;
            }
            EventData::DocumentEnd { .. } => {
                documents.push(b.root.take().unwrap_or(Node::new(Value::Null, pos)));
            }
            data => b.event(data, pos)?,
        }
    }
    if documents.is_empty() {
        documents.push(Node::new(Value::Null, Pos { file, line: 1, col: 1 }));
    }
    Ok(documents)
}

/// Parses a stream that holds one document (an empty stream is `Null`).
pub fn parse(text: &str, file: u32) -> Result<Node, YamlError> {
    let mut docs = parse_stream(text, file)?;
    if docs.len() > 1 {
        return Err(YamlError::MultipleDocuments);
    }
    Ok(docs.remove(0))
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
        assert_eq!(parse("a: 1\nb: 2\na: 3\n", 0), Err(YamlError::DuplicateKey { line: 3, key: "a".into(), first: 1 }));
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
        // Refused at the 65th level, before the parser reads further: no recursion, no stack.
        let start = std::time::Instant::now();
        for deeper in
            ["[".repeat(100_000), "{a: ".repeat(100_000), "- ".repeat(100_000) + "x", (0..1000).map(|i| " ".repeat(i) + "a:\n").collect()]
        {
            assert!(matches!(parse(&deeper, 0), Err(YamlError::TooDeep(_))), "{}", &deeper[..10]);
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(2), "{:?}", start.elapsed());
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
