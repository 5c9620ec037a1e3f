//! Linearizability checking of recorded histories (Herlihy & Wing 1990), by the
//! Wing–Gong search with Lowe's memoisation ("Testing for linearizability", Lowe 2017), the
//! algorithm of Jepsen's knossos `wgl` and of porcupine.
//!
//! A history is a list of [`Operation`]s: what a client asked ([`Model::Input`]), when it
//! asked (`call`), and, if it heard back, when (`ret`) and what it was told
//! ([`Model::Output`]). An operation with no answer (the client timed out, or its server was
//! killed) may or may not have taken effect: it is treated as returning at the end of time
//! and its output is not checked, so the search may place it anywhere after its call, or last,
//! where it changes nothing anyone saw. The history is linearizable if there is one order of
//! the operations that respects real time (an operation that returned before another was
//! called comes first) and in which a sequential [`Model`] gives every answered operation the
//! output it was given.
//!
//! The search is exponential in the worst case. [`check`] takes a budget of search steps and
//! says [`Outcome::Unknown`] past it, rather than running forever; histories of independent
//! keys are checked key by key ([`kv::check`]), which linearizability's locality allows and
//! which keeps each search small.

pub mod kv;

use std::collections::HashSet;
use std::hash::Hash;

/// A sequential specification: the object's state and what each operation does to it.
pub trait Model {
    type State: Clone + Eq + Hash;
    type Input;
    type Output: PartialEq;
    /// The state before any operation.
    fn init(&self) -> Self::State;
    /// Applies `input` to `state`: the next state and the output a correct object gives.
    /// Total: every input applies in every state (a refused compare-and-set is an output).
    fn step(&self, state: &Self::State, input: &Self::Input) -> (Self::State, Self::Output);
}

/// One operation of a history. Times are in any unit, from one clock shared by all clients
/// (the recorder's).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Operation<I, O> {
    /// Who issued it (for reports only).
    pub client: u64,
    /// When it was issued.
    pub call: u64,
    /// When its answer came, with the answer; `None` if none came.
    pub ret: Option<(u64, O)>,
    pub input: I,
}

/// What the search found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An order exists; it is given as indices into the history.
    Linearizable(Vec<usize>),
    /// No order exists. `prefix` is the longest order the search could build (indices into the
    /// history); `stuck` are the operations that had to come next and could not, each of them
    /// answered differently from what the model gives.
    NotLinearizable { prefix: Vec<usize>, stuck: Vec<usize> },
    /// The budget of search steps ran out first.
    Unknown,
}

impl Outcome {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Outcome::Linearizable(_))
    }
}

/// One end of an operation in the time-ordered event list.
#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
    /// For a call, the index of its return event.
    matching: usize,
    prev: usize,
    next: usize,
}

/// The event list: a doubly linked list over `events`, with a sentinel head at index 0.
struct Events {
    ev: Vec<Event>,
}

impl Events {
    const HEAD: usize = 0;
    const NIL: usize = usize::MAX;

    fn new<I, O>(history: &[Operation<I, O>]) -> Self {
        // (time, is_return_last?, op, is_call). At equal times calls come before returns, so
        // operations that touch at an instant count as concurrent (the lenient reading).
        let end = history.iter().filter_map(|o| o.ret.as_ref().map(|r| r.0)).chain(history.iter().map(|o| o.call)).max().unwrap_or(0);
        let mut points: Vec<(u64, bool, usize)> = Vec::with_capacity(history.len() * 2);
        for (i, o) in history.iter().enumerate() {
            points.push((o.call, false, i));
            // An unanswered operation returns after everything else.
            let ret = o.ret.as_ref().map_or(end.saturating_add(1), |r| r.0.max(o.call));
            points.push((ret, true, i));
        }
        points.sort_by_key(|&(t, is_ret, i)| (t, is_ret, i));
        let n = points.len();
        let mut ev = Vec::with_capacity(n + 1);
        ev.push(Event { op: usize::MAX, is_call: false, matching: Self::NIL, prev: Self::NIL, next: if n > 0 { 1 } else { Self::NIL } });
        let mut ret_at = vec![0usize; history.len()];
        for (k, &(_, is_ret, op)) in points.iter().enumerate() {
            let idx = k + 1;
            if is_ret {
                ret_at[op] = idx;
            }
            ev.push(Event { op, is_call: !is_ret, matching: Self::NIL, prev: idx - 1, next: if idx < n { idx + 1 } else { Self::NIL } });
        }
        for e in ev.iter_mut().skip(1) {
            if e.is_call {
                e.matching = ret_at[e.op];
            }
        }
        Events { ev }
    }

    /// Takes a call and its return out of the list.
    fn lift(&mut self, call: usize) {
        let ret = self.ev[call].matching;
        for i in [call, ret] {
            let Event { prev, next, .. } = self.ev[i];
            self.ev[prev].next = next;
            if next != Self::NIL {
                self.ev[next].prev = prev;
            }
        }
    }

    /// Puts a lifted call and its return back, in the reverse order of [`Events::lift`].
    fn unlift(&mut self, call: usize) {
        let ret = self.ev[call].matching;
        for i in [ret, call] {
            let Event { prev, next, .. } = self.ev[i];
            self.ev[prev].next = i;
            if next != Self::NIL {
                self.ev[next].prev = i;
            }
        }
    }
}

/// A set of operation indices, as the memo's key.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// Searches for a linearization of `history` under `model`, taking at most `budget` search
/// steps (each one an attempt to linearize one operation next).
pub fn check<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>], budget: u64) -> Outcome {
    let mut events = Events::new(history);
    let mut state = model.init();
    let mut linearized = Bits::new(history.len());
    let mut seen: HashSet<(Bits, M::State)> = HashSet::new();
    // The calls lifted so far, with the state before each.
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut best: Vec<usize> = Vec::new();
    let mut stuck: Vec<usize> = Vec::new();
    let mut steps = 0u64;
    let mut entry = events.ev[Events::HEAD].next;
    while events.ev[Events::HEAD].next != Events::NIL {
        steps += 1;
        if steps > budget {
            return Outcome::Unknown;
        }
        let e = events.ev[entry];
        if e.is_call {
            let op = &history[e.op];
            let (next, out) = model.step(&state, &op.input);
            let fits = op.ret.as_ref().is_none_or(|(_, seen)| *seen == out);
            if fits {
                let mut with = linearized.clone();
                with.set(e.op);
                if seen.insert((with.clone(), next.clone())) {
                    stack.push((entry, std::mem::replace(&mut state, next)));
                    linearized = with;
                    events.lift(entry);
                    if stack.len() > best.len() {
                        best = stack.iter().map(|&(c, _)| events.ev[c].op).collect();
                        stuck.clear();
                    }
                    entry = events.ev[Events::HEAD].next;
                    continue;
                }
            } else if stack.len() == best.len() && !stuck.contains(&e.op) {
                stuck.push(e.op);
            }
            entry = e.next;
        } else {
            // A return: the operation it ends had to be linearized by now. Backtrack.
            let Some((call, before)) = stack.pop() else {
                return Outcome::NotLinearizable { prefix: best, stuck };
            };
            state = before;
            linearized.clear(events.ev[call].op);
            events.unlift(call);
            entry = events.ev[call].next;
        }
    }
    Outcome::Linearizable(stack.iter().map(|&(c, _)| events.ev[c].op).collect())
}

#[cfg(test)]
mod tests;
