# Sourced by the scripts that need root: as root, does nothing; otherwise runs the calling
# script again through sudo, keeping the Rust toolchain of the user who called it (sudo
# resets PATH and HOME, which rustup's cargo depends on).
if [ "$(id -u)" != 0 ]; then
  if ! command -v sudo >/dev/null; then
    echo "$(basename "$0"): run as root (and sudo is not installed)" >&2
    exit 1
  fi
  exec sudo env PATH="$PATH" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" \
    CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-}" ATOLL_PGO="${ATOLL_PGO:-}" "$0" "$@"
fi
