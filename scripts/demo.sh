#!/usr/bin/env bash
# Sets up what is missing, builds pulmo, and runs the main job on the bundled sample.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
cargo build --release --locked
# Until the analysis pipeline lands, the main job is the libtorch smoke path.
./target/release/pulmo --version
./target/release/pulmo selftest
