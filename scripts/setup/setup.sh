#!/usr/bin/env bash
# Sets up everything pulmo needs on a fresh Debian machine that has Rust and Python 3:
#   - the project's own virtualenv (.venv/) with torch (libtorch for tch) and the Python tools,
#   - the released OHIF viewer that `pulmo serve` offers at /viewer/ (viewer/ohif/),
#   - with --test, the Python tools only the tests use (requirements-test.txt: schemathesis)
#     and the Debian packages the tests start (real DICOM peers: dcmtk, dicom3tools...).
# Idempotent: a re-run only checks what is already there.
#
# usage: scripts/setup/setup.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=.venv
REQ=requirements.txt
STAMP="$VENV/.pulmo-requirements.sha256"
TEST_REQ=requirements-test.txt
TEST_STAMP="$VENV/.pulmo-test-requirements.sha256"

log() { printf 'setup: %s\n' "$*" >&2; }
apt_updated=0
apt_install() {
    local sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    if [ "$apt_updated" = 0 ]; then $sudo apt-get update -qq; apt_updated=1; fi
    log "installing Debian packages: $*"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ -x "$VENV/bin/python3" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
    log "virtualenv $VENV is up to date"
else
    if [ ! -x "$VENV/bin/python3" ]; then
        log "creating $VENV"
        if ! python3 -m venv "$VENV"; then
            # Debian's python3 ships venv support in a separate package.
            rm -rf "$VENV"; apt_install python3-venv; python3 -m venv "$VENV"
        fi
    fi
    log "installing $REQ into $VENV (torch pulls the CUDA runtime wheels: a few GB)"
    "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check -r "$REQ"
    echo "$want" > "$STAMP"
fi

# The tests' own Python tools, pinned together with requirements.txt (as constraints) so that
# none of the main pins moves; a stamp of both files makes a re-run a no-op.
if [ "${1:-}" = "--test" ]; then
    want_test=$(cat "$REQ" "$TEST_REQ" | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$TEST_STAMP" 2>/dev/null)" = "$want_test" ]; then
        log "test tools in $VENV are up to date"
    else
        log "installing $TEST_REQ into $VENV"
        "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check -r "$TEST_REQ" -c "$REQ"
        echo "$want_test" > "$TEST_STAMP"
    fi
fi

# tch's build finds libtorch through this link (see .cargo/config.toml); the binaries get
# an rpath to the real directory behind it (build.rs).
torch_dir=$("$VENV/bin/python3" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
ln -sfn "$(realpath --relative-to="$VENV" "$torch_dir")" "$VENV/libtorch"

# Debian packages for the tests: real DICOM peers (dcmtk, dicom3tools) and the like.
if [ "${1:-}" = "--test" ] && [ -s scripts/setup/apt-packages.txt ]; then
    missing=()
    while read -r pkg; do
        [ -z "$pkg" ] || [ "${pkg#\#}" != "$pkg" ] && continue
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done < scripts/setup/apt-packages.txt
    [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
fi
# The OHIF viewer `pulmo serve` offers at /viewer/ (npm @ohif/app, pinned, sha512-checked).
bash scripts/setup/viewer.sh
log "done"
