//! Merging compose documents, by the Compose Specification's rules: mappings merge key by key,
//! scalars and commands are replaced, mappings written as lists (`environment`, `labels`,
//! `depends_on`, service `networks`…) are merged as mappings, mounts merge by target, other
//! lists are appended without repeats; `!reset` removes a value, `!override` replaces it whole.
//! Used for several `-f` files and for `extends`.

use crate::yaml::{Node, Tag, Value};

/// Service keys whose list form is `KEY=VALUE` (or `KEY: VALUE`) strings.
const KV_LISTS: &[&str] = &["environment", "labels", "annotations", "sysctls"];
/// Service keys replaced, never merged.
const REPLACED: &[&str] = &["command", "entrypoint"];
/// Service lists whose items are merged by their target path.
const BY_TARGET: &[&str] = &["volumes", "secrets", "configs", "devices"];

/// Turns the list forms of mapping-valued service keys into mappings (in place).
pub fn normalise_service_maps(service: &mut Node) {
    let Value::Map(entries) = &mut service.value else { return };
    for (k, v) in entries.iter_mut() {
        let Value::Seq(items) = &v.value else { continue };
        let pos = v.pos;
        let map: Option<Vec<(String, Node)>> = match k.as_str() {
            k if KV_LISTS.contains(&k) => Some(
                items
                    .iter()
                    .filter_map(|i| i.scalar_text().map(|t| (t, i.pos)))
                    .map(|(t, p)| match t.split_once('=') {
                        Some((a, b)) => (a.to_owned(), Node::new(Value::Str(b.to_owned()), p)),
                        None => (t, Node::new(Value::Null, p)),
                    })
                    .collect(),
            ),
            "depends_on" => Some(
                items
                    .iter()
                    .filter_map(|i| i.scalar_text().map(|t| (t, i.pos)))
                    .map(|(t, p)| {
                        let cond = Node::new(Value::Str("service_started".into()), p);
                        (t, Node::new(Value::Map(vec![("condition".into(), cond)]), p))
                    })
                    .collect(),
            ),
            "networks" => Some(items.iter().filter_map(|i| i.scalar_text().map(|t| (t, Node::new(Value::Null, i.pos)))).collect()),
            _ => None,
        };
        if let Some(mut m) = map {
            // A later entry wins, as docker compose reads duplicate keys in list form.
            let mut seen = Vec::new();
            m.reverse();
            m.retain(|(k, _)| {
                let fresh = !seen.contains(k);
                seen.push(k.clone());
                fresh
            });
            m.reverse();
            *v = Node { value: Value::Map(m), pos, tag: v.tag };
        }
    }
}

/// The target path of a mount-like list item (`src:dst[:mode]` or `{target: …}`), its
/// identity when merging.
fn target_of(n: &Node) -> Option<String> {
    match &n.value {
        Value::Str(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            Some(match parts.as_slice() {
                [one] => (*one).to_owned(),
                [_, t, ..] => (*t).to_owned(),
                [] => return None,
            })
        }
        Value::Map(_) => n.get("target").and_then(Node::scalar_text).or_else(|| n.get("source").and_then(Node::scalar_text)),
        _ => None,
    }
}

fn merge_seq(key: &str, base: Vec<Node>, over: Vec<Node>) -> Vec<Node> {
    let mut out = base;
    for item in over {
        let same = |e: &Node| {
            if BY_TARGET.contains(&key) {
                target_of(e).is_some() && target_of(e) == target_of(&item)
            } else {
                e.to_json() == item.to_json()
            }
        };
        match out.iter().position(same) {
            Some(i) if BY_TARGET.contains(&key) => out[i] = item,
            Some(_) => {}
            None => out.push(item),
        }
    }
    out
}

/// Merges two mappings, `over` winning. `depth` is 0 for documents, 1 for a top-level
/// section, 2 for one service (or network…), deeper below.
fn merge_map(base: Vec<(String, Node)>, over: Vec<(String, Node)>, section: &str, depth: usize) -> Vec<(String, Node)> {
    let mut out = base;
    for (k, v) in over {
        let existing = out.iter().position(|(e, _)| *e == k);
        if v.tag == Some(Tag::Reset) {
            if let Some(i) = existing {
                out.remove(i);
            }
            continue;
        }
        let Some(i) = existing else {
            out.push((k, v));
            continue;
        };
        let section = if depth == 0 { k.as_str() } else { section };
        let b = std::mem::replace(&mut out[i].1, Node::new(Value::Null, v.pos));
        out[i].1 = merge_node(b, v, &k, section, depth + 1);
    }
    out
}

fn merge_node(base: Node, over: Node, key: &str, section: &str, depth: usize) -> Node {
    if over.tag == Some(Tag::Override) {
        return Node { tag: None, ..over };
    }
    let service_key = section == "services" && depth == 3;
    if service_key && REPLACED.contains(&key) {
        return over;
    }
    let pos = over.pos;
    match (base.value, over.value) {
        (Value::Map(mut b), Value::Map(o)) => {
            if section == "services" && depth == 2 {
                let mut bn = Node::new(Value::Map(std::mem::take(&mut b)), pos);
                let mut on = Node::new(Value::Map(o), pos);
                normalise_service_maps(&mut bn);
                normalise_service_maps(&mut on);
                let (Value::Map(b), Value::Map(o)) = (bn.value, on.value) else { unreachable!("still mappings") };
                return Node::new(Value::Map(merge_map(b, o, section, depth)), pos);
            }
            Node::new(Value::Map(merge_map(b, o, section, depth)), pos)
        }
        (Value::Seq(b), Value::Seq(o)) if !(key == "test" && section == "services") => Node::new(Value::Seq(merge_seq(key, b, o)), pos),
        (_, o) => Node { value: o, pos, tag: None },
    }
}

/// Merges whole documents: `over` on top of `base`.
pub fn merge_documents(base: Node, over: Node) -> Node {
    merge_node(base, over, "", "", 0)
}

/// Merges one service definition on top of another (for `extends`).
pub fn merge_services(base: Node, over: Node) -> Node {
    merge_node(base, over, "", "services", 2)
}

/// Removes `!reset` values that had nothing to reset (they would otherwise read as null).
pub fn strip_resets(n: &mut Node) {
    match &mut n.value {
        Value::Map(m) => {
            m.retain(|(_, v)| v.tag != Some(Tag::Reset));
            m.iter_mut().for_each(|(_, v)| strip_resets(v));
        }
        Value::Seq(s) => s.iter_mut().for_each(strip_resets),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse;
    use proptest::prelude::*;

    fn m(a: &str, b: &str) -> serde_json::Value {
        let mut n = merge_documents(parse(a, 0).unwrap(), parse(b, 1).unwrap());
        strip_resets(&mut n);
        n.to_json()
    }

    #[test]
    fn the_specification_rules() {
        let base = "services:\n  web:\n    image: a\n    command: [x, y]\n    environment: [A=1, B=2]\n    ports: ['80:80']\n    volumes: ['d:/data', '/h:/logs']\n    depends_on: [db]\n    cap_add: [NET_ADMIN]\n    healthcheck: {test: [CMD, a], interval: 5s}\n";
        let over = "services:\n  web:\n    image: b\n    command: [z]\n    environment: {B: 3, C: 4}\n    ports: ['80:80', '443:443']\n    volumes: ['e:/data']\n    depends_on: {cache: {condition: service_healthy}}\n    cap_add: [NET_ADMIN, SYS_TIME]\n    healthcheck: {test: [CMD, b]}\n";
        let v = m(base, over);
        let web = &v["services"]["web"];
        assert_eq!(web["image"], "b");
        assert_eq!(web["command"], serde_json::json!(["z"]));
        assert_eq!(web["environment"], serde_json::json!({"A":"1","B":3,"C":4}));
        assert_eq!(web["ports"], serde_json::json!(["80:80", "443:443"]));
        assert_eq!(web["volumes"], serde_json::json!(["e:/data", "/h:/logs"]));
        assert_eq!(web["depends_on"], serde_json::json!({"db":{"condition":"service_started"},"cache":{"condition":"service_healthy"}}));
        assert_eq!(web["cap_add"], serde_json::json!(["NET_ADMIN", "SYS_TIME"]));
        assert_eq!(web["healthcheck"], serde_json::json!({"test":["CMD","b"],"interval":"5s"}));
    }

    #[test]
    fn reset_and_override_tags() {
        let v = m(
            "services:\n  s:\n    ports: ['1:1']\n    environment: {A: 1, B: 2}\n",
            "services:\n  s:\n    ports: !reset []\n    environment: !override {C: 3}\n",
        );
        assert_eq!(v["services"]["s"], serde_json::json!({"environment":{"C":3}}));
    }

    fn arb_doc() -> impl Strategy<Value = serde_json::Value> {
        let scalar = prop_oneof![
            Just(serde_json::json!(null)),
            any::<i32>().prop_map(serde_json::Value::from),
            "[a-z]{1,3}".prop_map(serde_json::Value::from)
        ];
        let env = prop::collection::btree_map("[A-C]", "[a-z]{0,2}", 0..4);
        let ports = prop::collection::vec("[1-3]:[1-3]", 0..3);
        let service = (prop::option::of("[a-z]{1,3}"), env, ports, scalar).prop_map(|(image, env, ports, x)| {
            let mut s = serde_json::Map::new();
            if let Some(i) = image {
                s.insert("image".into(), i.into());
            }
            s.insert("environment".into(), serde_json::json!(env));
            s.insert("ports".into(), serde_json::json!(ports));
            s.insert("x-val".into(), x);
            serde_json::Value::Object(s)
        });
        prop::collection::btree_map("[a-c]", service, 0..3).prop_map(|s| serde_json::json!({ "services": s }))
    }

    fn node(v: &serde_json::Value) -> Node {
        parse(&serde_json::to_string(v).unwrap(), 0).unwrap()
    }

    proptest! {
        /// Merging is associative, a document merged with itself is unchanged, and every
        /// key of either side survives.
        #[test]
        fn merging_is_associative_and_idempotent(a in arb_doc(), b in arb_doc(), c in arb_doc()) {
            let ab_c = merge_documents(merge_documents(node(&a), node(&b)), node(&c)).to_json();
            let a_bc = merge_documents(node(&a), merge_documents(node(&b), node(&c))).to_json();
            prop_assert_eq!(&ab_c, &a_bc);
            prop_assert_eq!(merge_documents(node(&a), node(&a)).to_json(), a.clone());
            let ab = merge_documents(node(&a), node(&b)).to_json();
            for side in [&a, &b] {
                for (name, svc) in side["services"].as_object().unwrap() {
                    for key in svc.as_object().unwrap().keys() {
                        prop_assert!(ab["services"][name].get(key).is_some(), "{} of {} lost", key, name);
                    }
                }
            }
            // The later file wins for scalars.
            for (name, svc) in b["services"].as_object().unwrap() {
                if let Some(img) = svc.get("image") {
                    prop_assert_eq!(&ab["services"][name]["image"], img);
                }
            }
        }
    }
}
