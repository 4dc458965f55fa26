#!/usr/bin/env bash
# Sets up everything the tests need, then runs every check: formatting, clippy, all tests.
# This is the README's test command and what CI (.ci/run) runs, unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
bash scripts/setup/setup.sh --test
source scripts/setup/env.sh

step() { printf '\n== %s\n' "$*" >&2; }
step "cargo fmt --check"
cargo fmt --all -- --check
# One profile (release) for clippy, tests and the demo, so libtorch's C++ shim is built once.
step "cargo clippy"
cargo clippy --release --workspace --all-targets --locked -- -D warnings
step "test fixtures"
bash scripts/setup/fetch_fixtures.sh
step "cargo test"
cargo test --release --locked --workspace --all-targets
printf '\ntest.sh: all checks passed in %ss\n' "$((SECONDS - started))" >&2
