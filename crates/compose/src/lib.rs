//! Compose files, as the Compose Specification defines them and real apps use them.
//!
//! Pipeline: [`yaml`] (text → positioned tree, limits) → [`interpolate`] (variables) →
//! [`schema`] (shape, against the specification's JSON schema) → [`load`] (include, extends,
//! several `-f` merged, profiles) → [`model`] (the normalised project, long syntax) →
//! [`plan`] (container specs and what `up` must change); [`stack`] (the `deploy:` sections,
//! for `stack deploy`). Pure: file reads and the environment
//! come from the caller.

pub mod dotenv;
pub mod interpolate;
pub mod load;
pub mod merge;
pub mod model;
pub mod plan;
pub mod schema;
pub mod stack;
pub mod yaml;
