#!/usr/bin/env bash
# Installs the Rust-side build tools, skipping whatever is already there. Offline-safe:
# everything comes from crates.io (worker-build would otherwise download binaries itself).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi
for component in rustfmt clippy; do
  if ! rustup component list --installed | grep -q "^$component"; then
    rustup component add "$component"
  fi
done

if [ "$(worker-build --version 2>/dev/null || true)" != "0.8.7" ]; then
  cargo install worker-build --version 0.8.7 --locked
fi

# libFuzzer targets (fuzz/, `make fuzz-short` in `make test`). It drives nightly-only
# compiler flags, which scripts/fuzz.sh enables on stable with RUSTC_BOOTSTRAP.
if [ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz 0.13.2" ]; then
  cargo install cargo-fuzz --version 0.13.2 --locked
fi

# The wasm-bindgen CLI must match the library version that Cargo.lock resolved.
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
if [ -z "$want" ]; then
  echo "setup-tools: cannot find wasm-bindgen in Cargo.lock" >&2
  exit 1
fi
if [ "$(wasm-bindgen --version 2>/dev/null || true)" != "wasm-bindgen $want" ]; then
  # Not --locked: the registry mirror lacks some of its locked dependencies.
  cargo install wasm-bindgen-cli --version "$want"
fi

# A real browser for the dashboard test (tests/sync/dashboard.test.mjs, driven by playwright-core,
# which never downloads one): Debian's Chromium.
if ! command -v chromium >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  if ! sudo_if_needed apt-get install -y --no-install-recommends chromium; then
    sudo_if_needed apt-get update
    sudo_if_needed apt-get install -y --no-install-recommends chromium
  fi
fi
