//! Where the island's bundles run: one instance-holding member per bundle, placed as a
//! one-replica service with no constraints or reservations would be (`plan` with `replicas: 1`):
//! a bundle stays where it is while its member is up and active (no churn); one whose member
//! is down, drained or gone moves; a new or moved one goes to the up member that holds the
//! fewest bundles (then the fewest replicas of stacks, then by id), counting those placed in
//! this same look. A bundle that failed to start on a member leaves it for one where it has not
//! failed; where it failed everywhere up, it stays (its member keeps trying). With no member
//! up, a bundle waits unplaced. Pure.

use std::collections::BTreeMap;

use crate::{Node, NodeState};

/// A bundle as placement sees it: its name and the member (id) it is placed on, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleSlot {
    pub name: String,
    pub node: Option<String>,
    /// Members it failed to start on.
    pub avoid: Vec<String>,
}

/// The bundles whose member changes, with their new member (`None`: no member can take it).
/// `replicas` counts each member's running stack replicas (the second tie-break).
pub fn place_bundles(bundles: &[BundleSlot], nodes: &[Node], replicas: &BTreeMap<String, usize>) -> Vec<(String, Option<String>)> {
    let eligible = |id: &str| nodes.iter().any(|n| n.id == id && n.state == NodeState::Up);
    let mut load: BTreeMap<&str, usize> = nodes.iter().filter(|n| n.state == NodeState::Up).map(|n| (n.id.as_str(), 0)).collect();
    for b in bundles {
        if let Some(n) = b.node.as_deref()
            && let Some(c) = load.get_mut(n)
        {
            *c += 1;
        }
    }
    let mut changes = Vec::new();
    let mut sorted: Vec<&BundleSlot> = bundles.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for b in sorted {
        let avoided = |id: &str| b.avoid.iter().any(|a| a == id);
        let here_ok = b.node.as_deref().is_some_and(eligible);
        if here_ok && !b.node.as_deref().is_some_and(avoided) {
            continue;
        }
        let least = |avoid: bool| {
            load.iter()
                .filter(|(id, _)| !avoid || !avoided(id))
                .min_by_key(|(id, count)| (**count, replicas.get(**id).copied().unwrap_or(0), **id))
                .map(|(id, _)| (*id).to_owned())
        };
        let best = match least(true) {
            Some(id) => Some(id),
            // It failed on every member up: where it is, it keeps being tried.
            None if here_ok => continue,
            None => least(false),
        };
        if best != b.node {
            if let Some(id) = &best {
                *load.get_mut(id.as_str()).expect("a member of the load map") += 1;
            }
            changes.push((b.name.clone(), best));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{Resources, Role};

    fn node(id: &str, state: NodeState) -> Node {
        Node {
            id: id.into(),
            hostname: id.into(),
            role: Role::Private,
            labels: BTreeMap::new(),
            os: "linux".into(),
            arch: "x86_64".into(),
            state,
            capacity: Resources::default(),
        }
    }

    fn slot(name: &str, node: Option<&str>) -> BundleSlot {
        BundleSlot { name: name.into(), node: node.map(String::from), avoid: vec![] }
    }

    fn applied(bundles: &[BundleSlot], changes: &[(String, Option<String>)]) -> Vec<BundleSlot> {
        bundles
            .iter()
            .map(|b| match changes.iter().find(|(n, _)| *n == b.name) {
                Some((_, to)) => BundleSlot { node: to.clone(), ..b.clone() },
                None => b.clone(),
            })
            .collect()
    }

    #[test]
    fn new_bundles_spread_and_moved_ones_leave_down_and_drained_members() {
        let nodes = [node("a", NodeState::Up), node("b", NodeState::Up), node("c", NodeState::Down), node("d", NodeState::Drained)];
        let busy = BTreeMap::from([("a".to_owned(), 3)]);
        let bundles = [slot("x", None), slot("y", None), slot("z", Some("c")), slot("w", Some("d")), slot("v", Some("a"))];
        let changes = place_bundles(&bundles, &nodes, &busy);
        // v stays on a; by name then: w → b (a holds v); x → b (a tie, and a runs 3 replicas);
        // y → a (fewer bundles); z → b (a tie again).
        assert_eq!(
            changes,
            [
                ("w".into(), Some("b".into())),
                ("x".into(), Some("b".into())),
                ("y".into(), Some("a".into())),
                ("z".into(), Some("b".into()))
            ]
        );
        assert!(place_bundles(&applied(&bundles, &changes), &nodes, &busy).is_empty(), "planning again changes nothing");
    }

    #[test]
    fn a_bundle_leaves_a_member_it_failed_on_unless_it_failed_everywhere() {
        let nodes = [node("a", NodeState::Up), node("b", NodeState::Up)];
        let failed = |on: &[&str], at: &str| BundleSlot { avoid: on.iter().map(|s| (*s).to_owned()).collect(), ..slot("x", Some(at)) };
        assert_eq!(place_bundles(&[failed(&["a"], "a")], &nodes, &BTreeMap::new()), [("x".into(), Some("b".into()))]);
        assert!(place_bundles(&[failed(&["a", "b"], "b")], &nodes, &BTreeMap::new()).is_empty(), "stays where it is tried");
        let gone = BundleSlot { avoid: vec!["a".into(), "b".into()], ..slot("x", Some("c")) };
        assert_eq!(
            place_bundles(&[gone], &nodes, &BTreeMap::new()),
            [("x".into(), Some("a".into()))],
            "placed anyway when its member left"
        );
    }

    #[test]
    fn with_no_member_up_a_bundle_waits_unplaced() {
        let nodes = [node("a", NodeState::Down)];
        assert_eq!(place_bundles(&[slot("x", Some("a"))], &nodes, &BTreeMap::new()), [("x".into(), None)]);
        assert!(place_bundles(&[slot("x", None)], &nodes, &BTreeMap::new()).is_empty());
    }

    fn state() -> impl Strategy<Value = NodeState> {
        prop_oneof![Just(NodeState::Up), Just(NodeState::Down), Just(NodeState::Drained)]
    }

    proptest! {
        /// Every bundle ends on an up member when there is one, the ones already on an up
        /// member stay, loads differ by at most one among the bundles placed in the look, and a
        /// second look changes nothing.
        #[test]
        fn placement_is_total_stable_and_idempotent(
            states in proptest::collection::vec(state(), 0..5),
            placed in proptest::collection::vec(proptest::option::of(0usize..6), 0..12),
        ) {
            let nodes: Vec<Node> = states.iter().enumerate().map(|(i, s)| node(&format!("n{i}"), *s)).collect();
            let bundles: Vec<BundleSlot> =
                placed.iter().enumerate().map(|(i, p)| slot(&format!("b{i:02}"), p.map(|n| format!("n{n}")).as_deref())).collect();
            let changes = place_bundles(&bundles, &nodes, &BTreeMap::new());
            let after = applied(&bundles, &changes);
            let up = |id: &Option<String>| id.as_ref().is_some_and(|id| nodes.iter().any(|n| &n.id == id && n.state == NodeState::Up));
            let any_up = nodes.iter().any(|n| n.state == NodeState::Up);
            for (before, now) in bundles.iter().zip(&after) {
                prop_assert_eq!(up(&now.node), any_up, "{:?}", now);
                if up(&before.node) {
                    prop_assert_eq!(&before.node, &now.node);
                }
            }
            prop_assert!(place_bundles(&after, &nodes, &BTreeMap::new()).is_empty());
            if bundles.iter().all(|b| b.node.is_none()) && any_up {
                let mut count: BTreeMap<&str, usize> = BTreeMap::new();
                for n in nodes.iter().filter(|n| n.state == NodeState::Up) {
                    count.insert(&n.id, 0);
                }
                for b in &after {
                    *count.get_mut(b.node.as_deref().unwrap()).unwrap() += 1;
                }
                let (lo, hi) = (count.values().min().unwrap(), count.values().max().unwrap());
                prop_assert!(hi - lo <= 1, "{:?}", count);
            }
        }
    }
}
