//! Swarm's placement constraints (`deploy.placement.constraints`), parsed and evaluated as
//! swarmkit's `manager/constraint` does: `KEY == VALUE` or `KEY != VALUE`, whitespace around
//! either side ignored, `==` looked for before `!=`, attribute names and values compared without
//! regard to case, label names with it, and a label a node lacks compared as the empty string
//! (so `node.labels.disk != ssd` holds on a node without a `disk` label).
//!
//! Stricter than swarmkit where it helps: a key Atoll does not know (swarmkit's `engine.labels`
//! and `node.ip`, or a typo) and a `node.role` other than the four below are errors at deploy,
//! where swarmkit would accept them and then never place the service.
//!
//! `node.role` on an island: Swarm's roles are `manager` and `worker`; an island's are `public`
//! (a member with a public address: lighthouse, relay, join endpoint, where the gateway runs)
//! and `private` (every other member). Swarm's `manager` means `public` and `worker` means
//! `private`: stacks pin their entry points (a proxy, a dashboard) to managers, and a public
//! member is an island's entry point. Raft's voters are not a role here: Atoll moves them
//! itself (`atoll_state::voters`), and a constraint on them would move services with them.

use std::fmt;

use crate::{Node, Role};

/// The operator of a constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
}

/// What a constraint looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// `node.id`: the member's id.
    Id,
    /// `node.hostname`: the member's name (`atoll node ls`).
    Hostname,
    /// `node.role`: `public`/`manager` or `private`/`worker`.
    Role,
    /// `node.platform.os`: `linux`.
    Os,
    /// `node.platform.arch`: as `uname -m` says (`x86_64`, `aarch64`), as in Swarm.
    Arch,
    /// `node.labels.<name>` (`atoll node label`), the name compared with case.
    Label(String),
}

/// One parsed constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub key: Key,
    pub op: Op,
    pub value: String,
    /// As written, for messages.
    pub text: String,
}

/// The keys a constraint may use, for messages.
pub const ACCEPTED_KEYS: &str = "node.id, node.hostname, node.role, node.platform.os, node.platform.arch or node.labels.<name>";

/// A constraint that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    #[error("the placement constraint {text:?} has no operator: write `KEY == VALUE` or `KEY != VALUE`")]
    NoOperator { text: String },
    #[error("the placement constraint {text:?} has no key before its operator: write `KEY == VALUE` with KEY one of {ACCEPTED_KEYS}")]
    EmptyKey { text: String },
    #[error(
        "the placement constraint {text:?} has the key {key:?}, which is not a name (a letter or `_`, then letters, digits, `-`, `_` or `.`)"
    )]
    BadKey { text: String, key: String },
    #[error("the placement constraint {text:?} constrains {key:?}, which Atoll does not know: {hint}")]
    UnknownKey { text: String, key: String, hint: &'static str },
    #[error(
        "the placement constraint {text:?} has the value {value:?}: a value is letters, digits, spaces and `:-_.*()?+[]\\^$|/`, not empty"
    )]
    BadValue { text: String, value: String },
    #[error(
        "the placement constraint {text:?} asks for the role {value:?}: a member's role is public or private (Swarm's manager means public, worker private)"
    )]
    BadRole { text: String, value: String },
}

const LABEL_PREFIX: &str = "node.labels.";

impl Constraint {
    /// Parses one constraint as written in a compose file.
    pub fn parse(text: &str) -> Result<Constraint, ConstraintError> {
        let owned = || text.to_owned();
        // swarmkit tries `==` first: `a!=b==c` is the key `a!=b`, which is then not a name
        let (op, (k, v)) = match text.split_once("==") {
            Some(kv) => (Op::Eq, kv),
            None => match text.split_once("!=") {
                Some(kv) => (Op::Ne, kv),
                None => return Err(ConstraintError::NoOperator { text: owned() }),
            },
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() {
            return Err(ConstraintError::EmptyKey { text: owned() });
        }
        if !is_name(k) {
            return Err(ConstraintError::BadKey { text: owned(), key: k.to_owned() });
        }
        if v.is_empty() || !v.chars().all(is_value_char) {
            return Err(ConstraintError::BadValue { text: owned(), value: v.to_owned() });
        }
        let lower = k.to_ascii_lowercase();
        let key = match lower.as_str() {
            "node.id" => Key::Id,
            "node.hostname" => Key::Hostname,
            "node.role" => Key::Role,
            "node.platform.os" => Key::Os,
            "node.platform.arch" => Key::Arch,
            _ if lower.starts_with(LABEL_PREFIX) && lower.len() > LABEL_PREFIX.len() => Key::Label(k[LABEL_PREFIX.len()..].to_owned()),
            _ => return Err(ConstraintError::UnknownKey { text: owned(), key: k.to_owned(), hint: hint(&lower) }),
        };
        if key == Key::Role && Role::parse(v).is_none() {
            return Err(ConstraintError::BadRole { text: owned(), value: v.to_owned() });
        }
        Ok(Constraint { key, op, value: v.to_owned(), text: text.trim().to_owned() })
    }

    /// Parses every constraint of a service; the first bad one is the error.
    pub fn parse_all<S: AsRef<str>>(texts: &[S]) -> Result<Vec<Constraint>, ConstraintError> {
        texts.iter().map(|t| Constraint::parse(t.as_ref())).collect()
    }

    /// Whether `node` satisfies this constraint.
    pub fn matches(&self, node: &Node) -> bool {
        let equal = match &self.key {
            Key::Id => self.value.eq_ignore_ascii_case(&node.id),
            Key::Hostname => self.value.eq_ignore_ascii_case(&node.hostname),
            Key::Role => Role::parse(&self.value) == Some(node.role),
            Key::Os => self.value.eq_ignore_ascii_case(&node.os),
            Key::Arch => self.value.eq_ignore_ascii_case(&node.arch),
            Key::Label(name) => self.value.eq_ignore_ascii_case(node.labels.get(name).map_or("", String::as_str)),
        };
        equal == (self.op == Op::Eq)
    }
}

/// Whether `node` satisfies every constraint.
pub fn all_match(constraints: &[Constraint], node: &Node) -> bool {
    constraints.iter().all(|c| c.matches(node))
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn hint(key: &str) -> &'static str {
    if key.starts_with("engine.labels.") {
        "an island has no engine labels; label the member (`atoll node label NODE KEY=VALUE`) and use node.labels.<name>"
    } else if key == "node.ip" {
        "placing by address is not supported; label the member and use node.labels.<name>"
    } else if key == "node.labels" || key == "node.labels." {
        "name the label: node.labels.<name>"
    } else {
        "use node.id, node.hostname, node.role, node.platform.os, node.platform.arch or node.labels.<name>"
    }
}

/// swarmkit's key pattern: `^(?i)[a-z_][a-z0-9\-_.]+$`.
fn is_name(k: &str) -> bool {
    let mut chars = k.chars();
    let first = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first && k.len() >= 2 && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// swarmkit's value pattern: `^(?i)[a-z0-9:\-_\s\.\*\(\)\?\+\[\]\\\^\$\|\/]+$` (no `<`, `>`,
/// `~`, `=` or `!`: operators, present or future).
fn is_value_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c.is_whitespace() || ":-_.*()?+[]\\^$|/".contains(c)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::NodeState;

    fn node() -> Node {
        Node {
            id: "n1a2b3".into(),
            hostname: "HomeServer".into(),
            role: Role::Private,
            labels: BTreeMap::from([("disk".into(), "ssd".into()), ("Zone".into(), "eu".into())]),
            os: "linux".into(),
            arch: "x86_64".into(),
            state: NodeState::Up,
            capacity: Default::default(),
        }
    }

    fn holds(text: &str) -> bool {
        Constraint::parse(text).unwrap_or_else(|e| panic!("{e}")).matches(&node())
    }

    #[test]
    fn each_key_with_each_operator() {
        assert!(holds("node.id == n1a2b3"));
        assert!(!holds("node.id != n1a2b3"));
        assert!(holds("node.hostname == homeserver"));
        assert!(holds("node.hostname != vps"));
        assert!(holds("node.role == private"));
        assert!(holds("node.role == worker"));
        assert!(!holds("node.role == manager"));
        assert!(holds("node.role != public"));
        assert!(holds("node.platform.os == linux"));
        assert!(holds("node.platform.arch == X86_64"));
        assert!(!holds("node.platform.arch == aarch64"));
        assert!(holds("node.labels.disk == ssd"));
        assert!(holds("node.labels.disk != hdd"));
    }

    #[test]
    fn whitespace_around_either_side_is_ignored_and_none_is_needed() {
        for text in ["node.labels.disk==ssd", "  node.labels.disk   ==\tssd ", "node.labels.disk== ssd"] {
            let c = Constraint::parse(text).unwrap();
            assert_eq!((c.key.clone(), c.op, c.value.as_str()), (Key::Label("disk".into()), Op::Eq, "ssd"), "{text}");
        }
        assert_eq!(Constraint::parse("node.role!=manager").unwrap().op, Op::Ne);
    }

    #[test]
    fn attribute_names_and_values_ignore_case_label_names_do_not() {
        assert!(holds("NODE.Hostname == HOMESERVER"));
        assert!(holds("Node.Labels.disk == SSD"));
        assert!(holds("node.labels.Zone == eu"));
        assert!(!holds("node.labels.zone == eu"), "label names keep their case, as in Swarm");
    }

    #[test]
    fn a_missing_label_compares_as_empty() {
        assert!(!holds("node.labels.gpu == true"));
        assert!(holds("node.labels.gpu != true"));
    }

    #[test]
    fn a_value_may_hold_inner_spaces_and_swarms_punctuation() {
        let c = Constraint::parse("node.labels.k == a b:c/d.e*(f)").unwrap();
        assert_eq!(c.value, "a b:c/d.e*(f)");
    }

    #[test]
    fn bad_constraints_name_themselves_and_say_what_is_accepted() {
        let err = |t: &str| Constraint::parse(t).unwrap_err().to_string();
        assert_eq!(
            err("node.labels.disk = ssd"),
            "the placement constraint \"node.labels.disk = ssd\" has no operator: write `KEY == VALUE` or `KEY != VALUE`"
        );
        assert_eq!(
            err("== ssd"),
            "the placement constraint \"== ssd\" has no key before its operator: write `KEY == VALUE` with KEY one of node.id, node.hostname, node.role, node.platform.os, node.platform.arch or node.labels.<name>"
        );
        assert!(err("node.labels.disk ==").contains("has the value \"\": a value is letters"));
        assert!(err("node.labels.disk == a>b").contains("has the value \"a>b\""));
        assert!(err("node.labels.disk == ssd == nvme").contains("has the value \"ssd == nvme\""));
        assert!(err("no de == x").contains("has the key \"no de\", which is not a name"));
        assert_eq!(
            err("node.name == vps"),
            "the placement constraint \"node.name == vps\" constrains \"node.name\", which Atoll does not know: use node.id, node.hostname, node.role, node.platform.os, node.platform.arch or node.labels.<name>"
        );
        assert!(err("engine.labels.os == ubuntu").contains("an island has no engine labels"));
        assert!(err("node.ip == 10.0.0.1").contains("placing by address is not supported"));
        assert!(err("node.labels. == x").contains("name the label"));
        assert_eq!(
            err("node.role == leader"),
            "the placement constraint \"node.role == leader\" asks for the role \"leader\": a member's role is public or private (Swarm's manager means public, worker private)"
        );
    }

    /// swarmkit splits at the first `==` if there is one, else at `!=`.
    #[test]
    fn double_equals_is_found_before_not_equals() {
        assert!(matches!(Constraint::parse("a!=b==c"), Err(ConstraintError::BadKey { .. })));
        assert!(matches!(Constraint::parse("node.id !== x"), Err(ConstraintError::BadKey { .. })));
    }

    #[test]
    fn parse_all_stops_at_the_first_bad_one() {
        let e = Constraint::parse_all(&["node.role == public", "node.labels.x ~ y", "bad"]).unwrap_err();
        assert!(e.to_string().contains("\"node.labels.x ~ y\""), "{e}");
        assert_eq!(Constraint::parse_all::<&str>(&[]).unwrap(), []);
    }

    mod prop {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// Parsing never panics, and `!=` always means the opposite of `==`.
            #[test]
            fn parse_is_total_and_ne_negates_eq(text in "\\PC{0,40}", value in "[a-zA-Z0-9_.-]{1,8}") {
                let _ = Constraint::parse(&text);
                let n = node();
                for key in ["node.id", "node.hostname", "node.platform.os", "node.platform.arch", "node.labels.disk", "node.labels.none"] {
                    let eq = Constraint::parse(&format!("{key}=={value}")).unwrap();
                    let ne = Constraint::parse(&format!("{key} != {value}")).unwrap();
                    prop_assert_ne!(eq.matches(&n), ne.matches(&n));
                }
            }
        }
    }
}
