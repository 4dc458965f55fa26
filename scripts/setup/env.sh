# Sourced by the other scripts: the project's virtualenv first on PATH, so its python3
# (with torch, pydicom and the reference tools) is the one every step uses.
# libtorch itself is found through .cargo/config.toml and build.rs, not through this file.
PULMO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PULMO_ROOT
export PATH="$PULMO_ROOT/.venv/bin:$PATH"
export VIRTUAL_ENV="$PULMO_ROOT/.venv"
# Two cores are the norm here; let rayon and libtorch each see them all.
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
