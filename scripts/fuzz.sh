#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of outside input (cargo-fuzz + libFuzzer).
#   scripts/fuzz.sh [SECONDS] [TARGET…]   default: 15 s for each target (what CI runs)
#   scripts/fuzz.sh 3600 compose          one target for an hour
# Stable Rust: RUSTC_BOOTSTRAP lets cargo-fuzz pass its -Z flags; no sanitizer (the code is
# safe Rust; the targets check their own promises). Corpora grow in $ATOLL_FUZZ_CORPUS,
# outside the clone; fuzz/regressions/<target>/ seeds them and is replayed by `cargo test`.
# A crash stops the run with the input saved: copy it to fuzz/regressions/<target>/, fix, rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-15}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(reference manifest image_config tar_layer compose api_bodies dns_message)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${ATOLL_FUZZ_TARGET:-/var/cache/atoll-fuzz-target}"
corpus_root="${ATOLL_FUZZ_CORPUS:-/var/cache/atoll-fuzz-corpus}"

(cd fuzz && cargo fuzz build --sanitizer none -O)
bin="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"
artifacts="$(mktemp -d)"
for t in "${targets[@]}"; do
  mkdir -p "$corpus_root/$t"
  seeds=(fuzz/regressions/"$t")
  [ "$t" = compose ] && seeds+=(crates/compose/tests/corpus)
  echo "fuzz: $t for ${secs}s"
  if ! "$bin/$t" -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$artifacts/$t-" "$corpus_root/$t" "${seeds[@]}" >"$artifacts/$t.log" 2>&1; then
    tail -40 "$artifacts/$t.log"
    echo "fuzz: $t crashed; the input is in $artifacts: copy it to fuzz/regressions/$t/ and fix" >&2
    exit 1
  fi
  grep -E '^stat::number_of_executed_units|^Done' "$artifacts/$t.log" | tr '\n' ' '; echo
done
rm -rf "$artifacts"
