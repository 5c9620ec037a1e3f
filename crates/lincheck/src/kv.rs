//! A key-value store of registers, the object the island's state layer is tested as: reads,
//! writes and compare-and-sets on independent keys. Histories are split by key and each key
//! checked on its own (linearizability is local: Herlihy & Wing 1990, theorem 1).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Model, Operation, Outcome};

/// What a client asked of one key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Input {
    Read {
        key: String,
    },
    Write {
        key: String,
        value: u64,
    },
    /// Sets `value` if the key holds `expect` (`None`: if it is absent).
    Cas {
        key: String,
        expect: Option<u64>,
        value: u64,
    },
}

impl Input {
    pub fn key(&self) -> &str {
        match self {
            Input::Read { key } | Input::Write { key, .. } | Input::Cas { key, .. } => key,
        }
    }
}

/// What the client was told.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Output {
    Read {
        value: Option<u64>,
    },
    Written,
    /// Whether the compare-and-set took effect.
    Cas {
        ok: bool,
    },
}

/// One register: absent until written.
#[derive(Debug, Clone, Copy, Default)]
pub struct Register;

impl Model for Register {
    type State = Option<u64>;
    type Input = Input;
    type Output = Output;

    fn init(&self) -> Option<u64> {
        None
    }

    fn step(&self, state: &Option<u64>, input: &Input) -> (Option<u64>, Output) {
        match input {
            Input::Read { .. } => (*state, Output::Read { value: *state }),
            Input::Write { value, .. } => (Some(*value), Output::Written),
            Input::Cas { expect, value, .. } if expect == state => (Some(*value), Output::Cas { ok: true }),
            Input::Cas { .. } => (*state, Output::Cas { ok: false }),
        }
    }
}

/// The verdict on a whole history: linearizable if every key's is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Per key, what the search found (operation indices are into the whole history).
    pub keys: BTreeMap<String, Outcome>,
}

impl Report {
    pub fn is_linearizable(&self) -> bool {
        self.keys.values().all(Outcome::is_linearizable)
    }

    /// Keys whose history is not linearizable, or could not be decided within the budget.
    pub fn failures(&self) -> impl Iterator<Item = (&String, &Outcome)> {
        self.keys.iter().filter(|(_, o)| !o.is_linearizable())
    }
}

/// Checks a key-value history key by key, each search with at most `budget` steps.
pub fn check(history: &[Operation<Input, Output>], budget: u64) -> Report {
    let mut by_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.iter().enumerate() {
        by_key.entry(op.input.key().to_owned()).or_default().push(i);
    }
    let keys = by_key
        .into_iter()
        .map(|(key, idx)| {
            let sub: Vec<_> = idx.iter().map(|&i| history[i].clone()).collect();
            let global = |v: Vec<usize>| v.into_iter().map(|i| idx[i]).collect::<Vec<_>>();
            let outcome = match crate::check(&Register, &sub, budget) {
                Outcome::Linearizable(order) => Outcome::Linearizable(global(order)),
                Outcome::NotLinearizable { prefix, stuck } => Outcome::NotLinearizable { prefix: global(prefix), stuck: global(stuck) },
                Outcome::Unknown => Outcome::Unknown,
            };
            (key, outcome)
        })
        .collect();
    Report { keys }
}
