//! The checker against hand-made histories whose verdicts are known (the textbook cases), a
//! brute-force reference on small random histories, and real executions of the model.

use proptest::prelude::*;

use crate::kv::{self, Input, Output, Register};
use crate::{Operation, Outcome, check};

const BUDGET: u64 = 1_000_000;

fn w(client: u64, call: u64, ret: Option<u64>, value: u64) -> Operation<Input, Output> {
    Operation { client, call, ret: ret.map(|t| (t, Output::Written)), input: Input::Write { key: "k".into(), value } }
}
fn r(client: u64, call: u64, ret: u64, value: Option<u64>) -> Operation<Input, Output> {
    Operation { client, call, ret: Some((ret, Output::Read { value })), input: Input::Read { key: "k".into() } }
}
fn cas(client: u64, call: u64, ret: u64, expect: Option<u64>, value: u64, ok: bool) -> Operation<Input, Output> {
    Operation { client, call, ret: Some((ret, Output::Cas { ok })), input: Input::Cas { key: "k".into(), expect, value } }
}
fn lin(h: &[Operation<Input, Output>]) -> bool {
    match check(&Register, h, BUDGET) {
        Outcome::Unknown => panic!("budget exhausted on a tiny history"),
        o => o.is_linearizable(),
    }
}

#[test]
fn sequential_histories_that_follow_the_model_are_linearizable() {
    assert!(lin(&[]));
    assert!(lin(&[r(0, 0, 1, None), w(0, 2, Some(3), 1), r(0, 4, 5, Some(1)), cas(0, 6, 7, Some(1), 2, true), r(0, 8, 9, Some(2))]));
    assert!(lin(&[cas(0, 0, 1, Some(5), 2, false), cas(1, 2, 3, None, 2, true)]));
}

#[test]
fn a_read_overlapping_a_write_may_see_either_value() {
    assert!(lin(&[w(0, 0, Some(10), 1), r(1, 5, 6, None)]));
    assert!(lin(&[w(0, 0, Some(10), 1), r(1, 5, 6, Some(1))]));
    // Touching at an instant counts as overlapping.
    assert!(lin(&[w(0, 0, Some(5), 1), r(1, 5, 6, None)]));
}

#[test]
fn a_stale_read_after_an_acknowledged_write_is_caught() {
    let h = [w(0, 0, Some(10), 1), r(1, 20, 30, None)];
    let Outcome::NotLinearizable { prefix, stuck } = check(&Register, &h, BUDGET) else { panic!("stale read accepted") };
    assert_eq!(prefix, vec![0], "the write is the longest order");
    assert_eq!(stuck, vec![1], "the read is what cannot follow");
}

#[test]
fn a_read_of_a_value_never_written_is_caught() {
    assert!(!lin(&[w(0, 0, Some(10), 1), r(1, 0, 10, Some(2))]));
}

#[test]
fn reads_that_go_back_in_time_are_caught() {
    // Both reads overlap the write, but the second starts after the first ended: once the new
    // value has been seen, the old one may not come back.
    assert!(lin(&[w(0, 0, Some(100), 1), r(1, 10, 20, None), r(2, 30, 40, Some(1))]));
    assert!(!lin(&[w(0, 0, Some(100), 1), r(1, 10, 20, Some(1)), r(2, 30, 40, None)]));
}

#[test]
fn two_compare_and_sets_from_the_same_value_cannot_both_win() {
    assert!(!lin(&[w(0, 0, Some(1), 1), cas(1, 2, 10, Some(1), 2, true), cas(2, 3, 11, Some(1), 3, true)]));
    assert!(lin(&[w(0, 0, Some(1), 1), cas(1, 2, 10, Some(1), 2, true), cas(2, 3, 11, Some(1), 3, false)]));
}

#[test]
fn an_unanswered_write_may_or_may_not_have_happened_but_not_both() {
    assert!(lin(&[w(0, 0, None, 1), r(1, 10, 20, None)]));
    assert!(lin(&[w(0, 0, None, 1), r(1, 10, 20, Some(1))]));
    // Seen, then unseen: it cannot have happened and not happened.
    assert!(!lin(&[w(0, 0, None, 1), r(1, 10, 20, Some(1)), r(1, 30, 40, None)]));
    // An unanswered operation's output is not checked, whatever it was recorded as.
    let mut pending_read = r(1, 0, 1, Some(7));
    pending_read.ret = None;
    assert!(lin(&[pending_read, w(0, 5, Some(6), 1)]));
}

#[test]
fn keys_are_checked_independently_and_failures_name_their_key() {
    let mut h = vec![w(0, 0, Some(10), 1), r(1, 20, 30, Some(1))];
    h.push(Operation { client: 2, call: 0, ret: Some((10, Output::Written)), input: Input::Write { key: "j".into(), value: 5 } });
    h.push(Operation { client: 3, call: 20, ret: Some((30, Output::Read { value: None })), input: Input::Read { key: "j".into() } });
    let report = kv::check(&h, BUDGET);
    assert!(!report.is_linearizable());
    let failed: Vec<_> = report.failures().map(|(k, _)| k.as_str()).collect();
    assert_eq!(failed, ["j"]);
    // Indices in the report are the whole history's.
    assert_eq!(report.keys["j"], Outcome::NotLinearizable { prefix: vec![2], stuck: vec![3] });
    assert_eq!(report.keys["k"], Outcome::Linearizable(vec![0, 1]));
}

#[test]
fn a_budget_too_small_says_unknown_rather_than_guessing() {
    let h: Vec<_> = (0..12).map(|i| w(i, 0, Some(100), i)).chain([r(99, 200, 201, Some(1000))]).collect();
    assert_eq!(check(&Register, &h, 10), Outcome::Unknown);
    assert!(matches!(check(&Register, &h, BUDGET), Outcome::NotLinearizable { .. }));
}

/// Every order of the operations that respects real time, tried one by one: the definition,
/// for histories small enough to enumerate.
fn brute_force(h: &[Operation<Input, Output>]) -> bool {
    fn go(h: &[Operation<Input, Output>], done: &mut Vec<bool>, state: Option<u64>) -> bool {
        if done.iter().all(|d| *d) {
            return true;
        }
        for i in 0..h.len() {
            if done[i] {
                continue;
            }
            // Minimal: no pending operation returned before this one was called.
            let blocked = (0..h.len()).any(|j| !done[j] && j != i && h[j].ret.as_ref().is_some_and(|(t, _)| *t < h[i].call));
            if blocked {
                continue;
            }
            let (next, out) = crate::Model::step(&Register, &state, &h[i].input);
            if h[i].ret.as_ref().is_some_and(|(_, o)| *o != out) {
                continue;
            }
            done[i] = true;
            if go(h, done, next) {
                return true;
            }
            done[i] = false;
        }
        false
    }
    go(h, &mut vec![false; h.len()], None)
}

fn arb_op() -> impl Strategy<Value = Operation<Input, Output>> {
    let value = 0u64..3;
    let input = prop_oneof![
        Just(Input::Read { key: "k".into() }),
        value.clone().prop_map(|value| Input::Write { key: "k".into(), value }),
        (proptest::option::of(0u64..3), value).prop_map(|(expect, value)| Input::Cas { key: "k".into(), expect, value }),
    ];
    (input, 0u64..20, 0u64..10, any::<bool>(), proptest::option::of(0u64..3), any::<bool>()).prop_map(
        |(input, call, len, answered, read, ok)| {
            let out = match &input {
                Input::Read { .. } => Output::Read { value: read },
                Input::Write { .. } => Output::Written,
                Input::Cas { .. } => Output::Cas { ok },
            };
            Operation { client: 0, call, ret: answered.then_some((call + len, out)), input }
        },
    )
}

/// An operation as planned: whether it takes effect, and what it is.
type Planned = (bool, Operation<Input, Output>);

/// A real concurrent execution: each operation takes effect at one instant inside its
/// interval, and its output is the model's at that instant.
fn arb_execution() -> impl Strategy<Value = Vec<Operation<Input, Output>>> {
    let op = (0u64..4, 0u64..4, any::<bool>(), 0u64..1000, 0u64..50, 0u64..50, 0u8..3, 0.0f64..1.0);
    proptest::collection::vec(op, 0..40).prop_map(|ops| {
        let mut planned: Vec<(u64, Planned)> = ops
            .into_iter()
            .enumerate()
            .map(|(i, (key, value, answered, effect, before, after, kind, lost))| {
                let key = format!("k{key}");
                let input = match kind {
                    0 => Input::Read { key },
                    1 => Input::Write { key, value: value + 10 * i as u64 },
                    _ => Input::Cas { key, expect: (value > 0).then_some(value), value: value + 10 * i as u64 },
                };
                let call = effect.saturating_sub(before);
                let op = Operation { client: i as u64, call, ret: answered.then_some((effect + after, Output::Written)), input };
                // An unanswered operation may also never have happened at all.
                (effect * 64 + i as u64, (answered || lost < 0.5, op))
            })
            .collect();
        planned.sort_by_key(|p| p.0);
        let mut state: std::collections::BTreeMap<String, Option<u64>> = Default::default();
        planned
            .into_iter()
            .map(|(_, (happened, mut op))| {
                let s = state.entry(op.input.key().to_owned()).or_default();
                let (next, out) = crate::Model::step(&Register, s, &op.input);
                if happened {
                    *s = next;
                }
                if let Some((_, o)) = op.ret.as_mut() {
                    *o = out;
                }
                op
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn agrees_with_brute_force_on_small_histories(h in proptest::collection::vec(arb_op(), 0..7)) {
        prop_assert_eq!(check(&Register, &h, BUDGET).is_linearizable(), brute_force(&h), "{:?}", h);
    }
}

proptest! {
    #[test]
    fn real_executions_are_linearizable_and_the_order_found_replays(h in arb_execution()) {
        let report = kv::check(&h, BUDGET);
        prop_assert!(report.is_linearizable(), "{:?}", report);
        // The order found is an order: every operation once, and replaying it gives every
        // answered operation its output.
        for outcome in report.keys.values() {
            let Outcome::Linearizable(order) = outcome else { unreachable!() };
            let mut state = None;
            for &i in order {
                let (next, out) = crate::Model::step(&Register, &state, &h[i].input);
                if let Some((_, seen)) = &h[i].ret { prop_assert_eq!(seen, &out); }
                state = next;
            }
        }
        let total: usize = report.keys.values().map(|o| match o { Outcome::Linearizable(v) => v.len(), _ => 0 }).sum();
        prop_assert_eq!(total, h.len());
    }

    #[test]
    fn a_read_of_a_value_nobody_wrote_is_never_accepted(h in arb_execution(), pick in any::<prop::sample::Index>()) {
        let reads: Vec<usize> = (0..h.len()).filter(|&i| matches!(h[i].input, Input::Read { .. }) && h[i].ret.is_some()).collect();
        prop_assume!(!reads.is_empty());
        let mut h = h;
        let i = reads[pick.index(reads.len())];
        h[i].ret.as_mut().unwrap().1 = Output::Read { value: Some(u64::MAX) };
        prop_assert!(!kv::check(&h, BUDGET).is_linearizable());
    }
}

#[test]
fn histories_round_trip_through_json() {
    let h = vec![w(0, 0, None, 1), cas(1, 2, 3, None, 4, false)];
    let text = serde_json::to_string(&h).unwrap();
    let back: Vec<Operation<Input, Output>> = serde_json::from_str(&text).unwrap();
    assert_eq!(back, h);
}
