#!/usr/bin/env bash
# Sets up what is missing, builds pulmo, and runs the main job on the bundled sample:
# `pulmo analyze` on sample-dicom/ (a synthetic chest CT series with three nodules), with the
# JSON report written to target/demo/ and compared with the sample's ground truth.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup/setup.sh
source scripts/setup/env.sh
cargo build --release --locked
./target/release/pulmo --version
./target/release/pulmo selftest
out=target/demo
rm -rf "$out" && mkdir -p "$out"
./target/release/pulmo analyze sample-dicom --out "$out"
echo
echo "Ground truth (sample-dicom/truth.json) against the report, LUNA16 rules:"
./target/release/pulmo evaluate --truth sample-dicom/truth.json --reports "$out"
