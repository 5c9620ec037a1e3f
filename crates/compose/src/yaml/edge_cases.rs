//! YAML as users write it against docker compose (go-yaml, a port of libyaml): each case is
//! the text and what it must read as, or the error (with its line) it must give.

use serde_json::json;

use super::{YamlError, parse, parse_stream};

/// Text → the JSON it must read as.
const ACCEPTED: &[(&str, &str, &str)] = &[
    (
        "a flow sequence closed at its key's indentation (issue 12)",
        "services:\n  s:\n    image: busybox\n    command: [\n      \"true\"\n    ]\n",
        r#"{"services":{"s":{"image":"busybox","command":["true"]}}}"#,
    ),
    (
        "healthcheck.test over several lines with comments between the items",
        "s:\n  healthcheck:\n    test: [\n      \"CMD\", # the binary\n      # probe the local port\n      \"curl\", \"-f\",\n      \"http://localhost\"\n    ]\n    interval: 5s\n",
        r#"{"s":{"healthcheck":{"test":["CMD","curl","-f","http://localhost"],"interval":"5s"}}}"#,
    ),
    ("a flow sequence closed at column 0", "a:\n  b: [1,\n2\n]\n", r#"{"a":{"b":[1,2]}}"#),
    (
        "a flow mapping over several lines with comments",
        "env: {\n  # first\n  A: 1, # one\n  B: \"two\"\n}\n",
        r#"{"env":{"A":1,"B":"two"}}"#,
    ),
    ("a trailing comma in flow collections", "a: [x, y,]\nb: {k: v,}\n", r#"{"a":["x","y"],"b":{"k":"v"}}"#),
    ("keys without values in a flow mapping", "a: {x, y: }\n", r#"{"a":{"x":null,"y":null}}"#),
    ("a colon inside a flow plain scalar", "ports: [8080:80, 127.0.0.1:53:53/udp]\n", r#"{"ports":["8080:80","127.0.0.1:53:53/udp"]}"#),
    ("a multi-line plain scalar folds", "command: echo\n  hello\n\n  world\n", r#"{"command":"echo hello\nworld"}"#),
    ("a multi-line double-quoted scalar folds", "a: \"one\n  two \\\n  three\"\n", r#"{"a":"one two three"}"#),
    ("a multi-line single-quoted scalar keeps blank lines", "a: 'one\n\n  two'\n", r#"{"a":"one\ntwo"}"#),
    ("a literal block, clipped", "a: |\n  line 1\n    line 2\n\nb: x\n", r#"{"a":"line 1\n  line 2\n","b":"x"}"#),
    ("a literal block with an indentation indicator, stripped", "a: |2-\n    indented\n  x\n", r#"{"a":"  indented\nx"}"#),
    ("a folded block, kept", "a: >+\n  folded\n  text\n\n", r#"{"a":"folded text\n\n"}"#),
    ("a folded block, stripped", "a: >-\n  one\n  two\n\n  three\n", r#"{"a":"one two\nthree"}"#),
    ("a block scalar in a sequence", "- |\n  sh -c\n  'x'\n- >\n  y\n", r#"["sh -c\n'x'\n","y\n"]"#),
    ("a tab after the colon", "image:\tbusybox\n", r#"{"image":"busybox"}"#),
    ("a tab inside a flow collection", "a: [\n\t1,\t2\n]\n", r#"{"a":[1,2]}"#),
    ("a tab inside a scalar", "a: x\ty\n", r#"{"a":"x\ty"}"#),
    ("a byte-order mark", "\u{feff}a: 1\n", r#"{"a":1}"#),
    ("CRLF line ends", "a: 1\r\nb:\r\n  - x\r\n", r#"{"a":1,"b":["x"]}"#),
    ("an explicit document start and end", "---\na: 1\n...\n", r#"{"a":1}"#),
    ("a document start with a comment and a directive", "%YAML 1.2\n--- # c\na: 1\n", r#"{"a":1}"#),
    ("an empty document", "# only a comment\n", "null"),
    ("a quoted << is an ordinary key", "'<<': x\n", r#"{"<<":"x"}"#),
    ("merge keys in flow style", "b: &b {x: 1, y: 2}\nc: {<<: *b, y: 3}\n", r#"{"b":{"x":1,"y":2},"c":{"x":1,"y":3}}"#),
    (
        "the first of several merged mappings wins",
        "a: &a {x: 1}\nb: &b {x: 2, y: 2}\nc:\n  <<: [*a, *b]\n",
        r#"{"a":{"x":1},"b":{"x":2,"y":2},"c":{"x":1,"y":2}}"#,
    ),
    ("an anchor redefined", "a: &x 1\nb: *x\nc: &x 2\nd: *x\n", r#"{"a":1,"b":1,"c":2,"d":2}"#),
    ("!!str and !!int", "a: !!str 1\nb: !!int \"5\"\nc: !!float 1\nd: !custom 7\n", r#"{"a":"1","b":5,"c":1.0,"d":"7"}"#),
    ("indentless sequences under a key", "a:\n- x\n- y\nb: z\n", r#"{"a":["x","y"],"b":"z"}"#),
    ("a comment right after a key", "a: # nothing yet\n  b: 1\n", r#"{"a":{"b":1}}"#),
    ("a key with spaces and a value with #", "a b: c#d\n", r#"{"a b":"c#d"}"#),
    ("unicode", "ä: \"\\u00e9 \\U0001F600 é\"\n", r#"{"ä":"é 😀 é"}"#),
    // libyaml-safer 0.3.0 panicked on these three (vendor/libyaml-safer/PATCHES.md).
    ("a block scalar ending the file without a line break", "a: |\n  x", r#"{"a":"x"}"#),
    ("a folded block ending the file without a line break", "- >-\n  x\n  y", r#"["x y"]"#),
    ("a tag before a comma in a flow collection", "a: [!!str, x]\n", r#"{"a":["","x"]}"#),
];

/// Text → the error it must give.
const REFUSED: &[(&str, &str, &str)] = &[
    ("a duplicate key", "a: 1\nb: 2\na: 3\n", "line 3: mapping key \"a\" is already defined at line 1"),
    ("a duplicate key, nested", "s:\n  web:\n    image: x\n    image: y\n", "line 4: mapping key \"image\" is already defined at line 3"),
    ("a duplicate key in a flow mapping", "a: {x: 1, x: 2}\n", "line 1: mapping key \"x\" is already defined at line 1"),
    ("a duplicate key, quoted and plain", "a: 1\n\"a\": 2\n", "line 2: mapping key \"a\" is already defined at line 1"),
    ("a tab as indentation", "services:\n\tweb: {}\n", "line 2 column 1: found character that cannot start any token"),
    (
        "an unclosed flow sequence",
        "a: [1, 2\nb: 3\n",
        "line 2 column 2: did not find expected ',' or ']' (while parsing a flow sequence that starts at line 1 column 4)",
    ),
    ("a bad indentation", "a:\n  b: 1\n c: 2\n", "line 3 column 2: did not find expected key"),
    ("an unknown anchor", "a: *nope\n", "line 1 column 4: unknown anchor \"nope\" referenced"),
    ("!!int of a word", "a: !!int abc\n", "line 1 column 4: cannot decode \"abc\" as a !!int"),
    ("a mapping as a key", "? {a: 1}\n: x\n", "line 1: a mapping key must be a scalar"),
    ("a merge of a scalar", "a:\n  <<: 1\n", "line 2: `<<` merges a mapping or a list of mappings"),
    ("a control character", "a: 1\nb: \u{7f}\n", "line 2 column 4: control characters are not allowed"),
    ("a backslash ending the file in a double-quoted scalar", "a: \"x\\", "line 1 column 6: found unknown escape character"),
];

#[test]
fn yaml_that_libyaml_accepts_reads_as_go_yaml_reads_it() {
    let mut failures = Vec::new();
    for (what, text, want) in ACCEPTED {
        let want: serde_json::Value = serde_json::from_str(want).unwrap();
        match parse(text, 0) {
            Ok(n) if n.to_json() == want => {}
            Ok(n) => failures.push(format!("{what}: read as {}", n.to_json())),
            Err(e) => failures.push(format!("{what}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn yaml_that_libyaml_refuses_names_the_line() {
    let mut failures = Vec::new();
    for (what, text, want) in REFUSED {
        match parse(text, 0) {
            Ok(n) => failures.push(format!("{what}: accepted as {}", n.to_json())),
            Err(e) if e.to_string().starts_with(want) => {}
            Err(e) => failures.push(format!("{what}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn several_documents_are_read_in_order_and_parse_refuses_them() {
    let text = "a: 1\n---\nb: 2\n...\n---\n# empty\n";
    let docs: Vec<serde_json::Value> = parse_stream(text, 0).unwrap().iter().map(|n| n.to_json()).collect();
    assert_eq!(docs, [json!({"a": 1}), json!({"b": 2}), json!(null)]);
    assert_eq!(parse(text, 0), Err(YamlError::MultipleDocuments));
    // Anchors belong to their document.
    assert!(parse_stream("a: &x 1\n---\nb: *x\n", 0).is_err());
}

#[test]
fn positions_survive_byte_order_marks_and_tabs() {
    let n = parse("\u{feff}a:\n  b: [\n\tc ]\n", 0).unwrap();
    let c = &n.get("a").unwrap().get("b").unwrap();
    let super::Value::Seq(items) = &c.value else { panic!("a sequence") };
    assert_eq!((items[0].pos.line, items[0].pos.col), (3, 2));
}
