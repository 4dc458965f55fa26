#!/usr/bin/env bash
# The GPU figures of issues 5 and 10, ready for a machine that has a CUDA GPU and torch 2.11.0
# in its own Python but no Rust and no project venv (docs/DEVELOPERS.md).
#
#   scripts/setup/gpu_check.sh prepare [N]        # here: stripped binary + N copies of sample-dicom
#                                           # with fresh UIDs, in gpu-check/ (git-ignored)
#   scripts/setup/gpu_check.sh run [DEVICE] [OUT] # there: selftest, per-stage timings in each number
#                                           # format, throughput of N series in flight
#
# `run` defaults to --device cuda and writes OUT (default gpu-check/out): selftest.txt,
# <precision>-resample-<where>-<rep>.json (the reports; resampling on the GPU and, to
# compare, with rayon), timings.txt, batch/ and throughput.txt. It also runs
# here with `run cpu`, which is how it is checked without a GPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=gpu-check

prepare() {
    local copies=${1:-4}
    source scripts/setup/env.sh
    cargo build --release --locked
    mkdir -p "$DIR"
    strip -o "$DIR/pulmo" target/release/pulmo
    rm -rf "$DIR/series"
    "$PULMO_ROOT/.venv/bin/python3" - "$copies" "$DIR/series" <<'EOF'
import pathlib, sys
import pydicom
from pydicom.uid import generate_uid
copies, out = int(sys.argv[1]), pathlib.Path(sys.argv[2])
files = sorted(p for p in pathlib.Path("sample-dicom").rglob("*") if p.is_file() and p.suffix not in (".md", ".json"))
for c in range(copies):
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    folder = out / f"study{c + 1}"
    folder.mkdir(parents=True)
    for f in files:
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(folder / f.name, enforce_file_format=True)
print(f"{copies} copies of {len(files)} slices in {out}")
EOF
    du -sh "$DIR"
}

run() {
    local device=${1:-cuda} out=${2:-$DIR/out}
    local bin=$DIR/pulmo
    [ -x "$bin" ] || bin=target/release/pulmo
    if torch=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null); then
        local nv
        nv=$(python3 -c 'import nvidia; print(nvidia.__path__[0])' 2>/dev/null || true)
        LD_LIBRARY_PATH="$torch/lib$(for d in "$nv"/*/lib; do [ -d "$d" ] && printf ':%s' "$d"; done)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        export LD_LIBRARY_PATH
    fi
    export PULMO_MODEL=models/pulmo-nodule-v1 PULMO_LOG=warn
    mkdir -p "$out"
    "$bin" --version | tee "$out/selftest.txt"
    "$bin" selftest --device "$device" --model models/smoke/model.pt | tee -a "$out/selftest.txt"
    # precision:resampling; resampling on the model's device (auto on a GPU) against rayon.
    local runs="float16:auto float16:cpu float32:auto"
    [[ "$device" == cpu ]] && runs="auto:auto auto:device float32:auto"
    : > "$out/timings.txt"
    for run in $runs; do
        local precision=${run%%:*} resample=${run##*:}
        for rep in 1 2 3; do
            local name=$precision-resample-$resample-$rep
            "$bin" analyze sample-dicom --device "$device" --precision "$precision" \
                --resample "$resample" --json > "$out/$name.json" 2> "$out/$name.log"
            python3 - "$out/$name.json" "$rep" "$resample" <<'EOF' | tee -a "$out/timings.txt"
import json, sys
report = json.load(open(sys.argv[1]))[0]
print(f"{report['device']} {report['precision']} resample {sys.argv[3]} rep {sys.argv[2]}: "
      f"{len(report['findings'])} findings, timing_ms {json.dumps(report['timing_ms'], sort_keys=True)}")
EOF
        done
    done
    if [ -d "$DIR/series" ]; then
        local n started wall
        n=$(find "$DIR/series" -mindepth 1 -maxdepth 1 -type d | wc -l)
        rm -rf "$out/batch"
        started=$(date +%s.%N)
        "$bin" batch "$DIR/series" --out "$out/batch" --device "$device" --jobs 4 --max-batch 16 \
            > "$out/batch.log" 2>&1
        wall=$(python3 -c "import time; print(f'{time.time() - $started:.2f}')")
        python3 -c "print(f'$n series in $wall s as one process ($device, auto precision): {3600 * $n / $wall:.0f} series per hour')" \
            | tee "$out/throughput.txt"
    else
        echo "no $DIR/series (scripts/setup/gpu_check.sh prepare makes it): throughput skipped" | tee "$out/throughput.txt"
    fi
}

case "${1:-}" in
    prepare) shift; prepare "$@" ;;
    run) shift; run "$@" ;;
    *) sed -n 2,12p "$0"; exit 2 ;;
esac
