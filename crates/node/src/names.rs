//! Friendly generated names (`calm_lagoon`), for containers started without `--name`.

const ADJECTIVES: &[&str] = &[
    "amber", "azure", "brave", "breezy", "calm", "coral", "deep", "distant", "eager", "gentle", "golden", "green", "hidden", "jolly",
    "keen", "lucid", "mellow", "misty", "quiet", "rapid", "salty", "sandy", "sunny", "swift", "tidal", "tranquil", "vivid", "warm", "wild",
    "windy",
];
const NOUNS: &[&str] = &[
    "atoll",
    "bay",
    "beacon",
    "breaker",
    "cove",
    "current",
    "delta",
    "dune",
    "fjord",
    "gull",
    "harbor",
    "isle",
    "kelp",
    "lagoon",
    "lighthouse",
    "mangrove",
    "marlin",
    "orca",
    "pelican",
    "reef",
    "sail",
    "shoal",
    "shore",
    "skiff",
    "sound",
    "spray",
    "surf",
    "tern",
    "tide",
    "wave",
];

/// A name not rejected by `taken`, with a numeric suffix if the pairs run out.
pub fn generate(mut taken: impl FnMut(&str) -> bool) -> String {
    for _ in 0..64 {
        let n = format!("{}_{}", ADJECTIVES[fastrand::usize(..ADJECTIVES.len())], NOUNS[fastrand::usize(..NOUNS.len())]);
        if !taken(&n) {
            return n;
        }
    }
    loop {
        let n = format!(
            "{}_{}_{}",
            ADJECTIVES[fastrand::usize(..ADJECTIVES.len())],
            NOUNS[fastrand::usize(..NOUNS.len())],
            fastrand::u32(..10_000)
        );
        if !taken(&n) {
            return n;
        }
    }
}
