//! Which members vote (issue 14): a pure plan from what the leader knows of the members, so
//! the policy is tested on its own and the leader only carries it out (openraft's
//! `change_membership`, one step at a time).
//!
//! The policy, as Consul's autopilot and etcd's learner promotion do it, for hosts that come
//! and go: one voter, then three as soon as three suitable members exist, then five; never an
//! even number (it buys no fault tolerance); public, long-lived members first; every other
//! member is a learner with a full replica. A voter gone longer than `down_after` is replaced
//! when a majority of the voters is still up (the replacement is safe); when it is not, the
//! plan is to ask the operator (`atoll island recover`), never to guess.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::NodeId;

/// What the leader knows of one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: NodeId,
    /// Reachable on the public internet (a lighthouse): its uptime does not depend on a home
    /// connection.
    pub public: bool,
    /// How long it has been a member.
    pub age: Duration,
    /// How long since it was last heard from; zero if it is up.
    pub silent: Duration,
    /// Its log is caught up with the leader's (a learner must be before it is promoted).
    pub caught_up: bool,
    /// It is the leader (which plans): it stays a voter while it is one (openraft's leader
    /// would otherwise go on leading as a learner).
    pub leading: bool,
}

/// The policy's knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// At most this many voters (odd).
    pub max_voters: usize,
    /// A voter silent for longer is replaced, if that is safe.
    pub down_after: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { max_voters: 5, down_after: Duration::from_secs(300) }
    }
}

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The voters are as they should be.
    Keep,
    /// Make these the voters (every other member a learner).
    Change { voters: BTreeSet<NodeId>, why: String },
    /// A majority of the voters is gone: only the operator can decide to go on without them.
    AskOperator { lost: BTreeSet<NodeId>, why: String },
}

/// The voter count for `n` suitable members: 1, 3 or 5 (never even), at most `max`.
pub fn target_count(n: usize, max: usize) -> usize {
    let max = if max.is_multiple_of(2) { max.saturating_sub(1) } else { max }.max(1);
    let n = n.min(max).max(1);
    if n.is_multiple_of(2) { n - 1 } else { n }
}

/// Plans the next membership change from the current voters and what is known of every
/// member (voters included). Deterministic: the same input gives the same step.
pub fn plan(voters: &BTreeSet<NodeId>, members: &[Candidate], policy: Policy) -> Step {
    let up = |c: &Candidate| c.silent <= policy.down_after;
    let lost: BTreeSet<NodeId> = members.iter().filter(|c| voters.contains(&c.id) && !up(c)).map(|c| c.id).collect();
    // Voters the leader no longer knows as members count as lost too.
    let known: BTreeSet<NodeId> = members.iter().map(|c| c.id).collect();
    let lost: BTreeSet<NodeId> = lost.union(&voters.difference(&known).copied().collect()).copied().collect();
    let alive = voters.len() - lost.len();
    if !voters.is_empty() && alive * 2 <= voters.len() {
        return Step::AskOperator {
            why: format!(
                "{} of {} voters are gone: without a majority the island cannot agree on anything, and going on without them may lose their latest writes",
                lost.len(),
                voters.len()
            ),
            lost,
        };
    }
    // Suitable: up and caught up (voters are caught up by definition while they vote).
    let mut suitable: Vec<&Candidate> = members.iter().filter(|c| up(c) && (c.caught_up || voters.contains(&c.id))).collect();
    // The leader if it votes, then sitting voters (no churn), then public, then the
    // longest-lived, then by id.
    suitable.sort_by_key(|c| (!(c.leading && voters.contains(&c.id)), !voters.contains(&c.id), !c.public, std::cmp::Reverse(c.age), c.id));
    let want = target_count(suitable.len(), policy.max_voters);
    let next: BTreeSet<NodeId> = suitable.iter().take(want).map(|c| c.id).collect();
    if next == *voters || next.is_empty() {
        return Step::Keep;
    }
    let added: Vec<_> = next.difference(voters).collect();
    let removed: Vec<_> = voters.difference(&next).collect();
    Step::Change { voters: next.clone(), why: format!("{} voters: adding {added:?}, removing {removed:?}", next.len()) }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn c(id: NodeId, public: bool, age_h: u64) -> Candidate {
        Candidate { id, public, age: Duration::from_secs(age_h * 3600), silent: Duration::ZERO, caught_up: true, leading: false }
    }
    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn grows_one_three_five_never_even() {
        assert_eq!((1..=8).map(|n| target_count(n, 5)).collect::<Vec<_>>(), [1, 1, 3, 3, 5, 5, 5, 5]);
        assert_eq!(target_count(9, 4), 3, "an even maximum rounds down");
        assert_eq!(plan(&set(&[1]), &[c(1, true, 9), c(2, false, 1)], Policy::default()), Step::Keep);
        let Step::Change { voters, .. } = plan(&set(&[1]), &[c(1, true, 9), c(2, false, 1), c(3, false, 2)], Policy::default()) else {
            panic!("three members make three voters")
        };
        assert_eq!(voters, set(&[1, 2, 3]));
    }

    #[test]
    fn prefers_public_then_long_lived_hosts() {
        let members = [c(1, true, 9), c(2, false, 100), c(3, true, 1), c(4, false, 50), c(5, false, 5)];
        let Step::Change { voters, .. } = plan(&set(&[1]), &members[..4], Policy::default()) else { panic!() };
        assert_eq!(voters, set(&[1, 2, 3]), "public 1 and 3, then the oldest home host");
    }

    #[test]
    fn a_learner_that_is_behind_is_not_promoted() {
        let mut behind = c(3, true, 9);
        behind.caught_up = false;
        assert_eq!(plan(&set(&[1]), &[c(1, true, 9), c(2, false, 9), behind], Policy::default()), Step::Keep);
    }

    #[test]
    fn a_lost_voter_is_replaced_while_a_majority_remains() {
        let mut gone = c(3, true, 9);
        gone.silent = Duration::from_secs(600);
        let members = [c(1, true, 9), c(2, true, 9), gone, c(4, false, 1)];
        let Step::Change { voters, .. } = plan(&set(&[1, 2, 3]), &members, Policy::default()) else { panic!() };
        assert_eq!(voters, set(&[1, 2, 4]));
        // Briefly silent is not gone.
        let mut blip = c(3, true, 9);
        blip.silent = Duration::from_secs(10);
        assert_eq!(plan(&set(&[1, 2, 3]), &[c(1, true, 9), c(2, true, 9), blip, c(4, false, 1)], Policy::default()), Step::Keep);
    }

    /// Found by QA: with four voters and room for three, the youngest (the leader) was
    /// dropped, and openraft's leader went on leading as a learner.
    #[test]
    fn the_leader_is_never_the_voter_dropped() {
        let mut leader = c(4, false, 1);
        leader.leading = true;
        let members = [c(1, true, 9), c(2, true, 9), c(3, false, 5), leader];
        let Step::Change { voters, .. } = plan(&set(&[1, 2, 3, 4]), &members, Policy::default()) else { panic!() };
        assert_eq!(voters, set(&[1, 2, 4]));
    }

    #[test]
    fn losing_the_majority_asks_the_operator() {
        let mut a = c(2, true, 9);
        a.silent = Duration::from_secs(900);
        let mut b = c(3, true, 9);
        b.silent = Duration::from_secs(900);
        let step = plan(&set(&[1, 2, 3]), &[c(1, true, 9), a, b, c(4, false, 1), c(5, false, 1)], Policy::default());
        let Step::AskOperator { lost, why } = step else { panic!("{step:?}") };
        assert_eq!(lost, set(&[2, 3]));
        assert!(why.contains("2 of 3 voters"), "{why}");
    }

    fn arb_members() -> impl Strategy<Value = (BTreeSet<NodeId>, Vec<Candidate>)> {
        let member = (any::<bool>(), 0u64..1000, prop_oneof![Just(0u64), 0u64..1000], any::<bool>());
        proptest::collection::vec(member, 1..12).prop_flat_map(|ms| {
            let n = ms.len();
            let members: Vec<Candidate> = ms
                .into_iter()
                .enumerate()
                .map(|(i, (public, age, silent, caught_up))| Candidate {
                    id: i as NodeId,
                    public,
                    age: Duration::from_secs(age * 60),
                    silent: Duration::from_secs(silent),
                    caught_up,
                    leading: i == 0,
                })
                .collect();
            (proptest::sample::subsequence((0..n as NodeId).collect::<Vec<_>>(), 1..=n.min(5)), Just(members))
                .prop_map(|(v, m)| (v.into_iter().collect(), m))
        })
    }

    proptest! {
        /// Whatever the members, a change keeps a majority of the sitting voters' survivors
        /// (never drops the island below quorum in one step), never makes an even or empty
        /// voter set, never promotes a silent or lagging member, and never exceeds the maximum.
        #[test]
        fn every_change_is_safe((voters, members) in arb_members()) {
            let policy = Policy::default();
            match plan(&voters, &members, policy) {
                Step::Keep => {}
                Step::AskOperator { lost, .. } => prop_assert!(lost.len() * 2 >= voters.len()),
                Step::Change { voters: next, .. } => {
                    prop_assert!(!next.is_empty() && next.len() % 2 == 1 && next.len() <= policy.max_voters);
                    for id in &next {
                        let m = members.iter().find(|m| m.id == *id).unwrap();
                        prop_assert!(m.silent <= policy.down_after);
                        prop_assert!(m.caught_up || voters.contains(id));
                    }
                    // The voters that are up all stay while there is room: no churn.
                    let up_sitting: BTreeSet<NodeId> = members.iter().filter(|m| voters.contains(&m.id) && m.silent <= policy.down_after).map(|m| m.id).collect();
                    if up_sitting.len() <= next.len() {
                        prop_assert!(up_sitting.is_subset(&next), "{up_sitting:?} ⊄ {next:?}");
                    }
                    // Applying the plan again changes nothing: it converges.
                    prop_assert_eq!(plan(&next, &members, policy), Step::Keep);
                }
            }
        }
    }
}
