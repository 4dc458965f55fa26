#!/usr/bin/env bash
# A model bundle with another candidate classifier: BUNDLE's files (the detector untouched, byte for
# byte) with CLASSIFIER_DIR's classifier.pt/.pth/-log.json, and a manifest saying so (version, the
# classifier's sha256 and crop, its weight in the score, the operating score).
#
# usage: scripts/model/bundle_classifier.sh BUNDLE CLASSIFIER_DIR OUT VERSION CROP WEIGHT OPERATING
#   e.g. scripts/model/bundle_classifier.sh models/pulmo-nodule-v1 /work/s38/m/ctx1 /tmp/b 1.10.0 64 0.5 0.90
# (how 1.10.0 was made: docs/model-history.md, stages 15 and 17)
set -euo pipefail
[ $# -eq 7 ] || { sed -n 2,7p "$0" >&2; exit 2; }
BUNDLE=$1 CLF=$2 OUT=$3 VERSION=$4 CROP=$5 WEIGHT=$6 OPERATING=$7
for f in classifier.pt classifier.pth classifier-log.json; do
    [ -s "$CLF/$f" ] || { echo "bundle_classifier: $CLF/$f is missing" >&2; exit 1; }
done
staged=$(mktemp -d)
cp -r "$BUNDLE"/. "$staged"/
cp "$CLF"/classifier.pt "$CLF"/classifier.pth "$CLF"/classifier-log.json "$staged"/
python3 - "$staged/manifest.toml" "$(sha256sum "$staged/classifier.pt" | cut -d' ' -f1)" "$VERSION" "$CROP" "$WEIGHT" "$OPERATING" <<'PY'
import re, sys
path, sha, version, crop, weight, operating = sys.argv[1:]
text = open(path).read()
def sub(pattern, repl, section=None):
    global text
    new, n = re.subn(pattern, repl, text, count=1, flags=re.M)
    if n != 1:
        sys.exit(f"bundle_classifier: no line matching {pattern!r} in {path}")
    text = new
sub(r'^version = "[^"]*"', f'version = "{version}"')
sub(r'^operating_score = [0-9.]+', f'operating_score = {operating}')
head, sep, classifier = text.partition("[classifier]")
if not sep:
    sys.exit(f"bundle_classifier: {path} has no [classifier] section")
classifier = re.sub(r'^sha256 = "[0-9a-f]*"', f'sha256 = "{sha}"', classifier, count=1, flags=re.M)
classifier = re.sub(r'^crop = \[[^\]]*\]', f'crop = [{crop}, {crop}, {crop}]', classifier, count=1, flags=re.M)
classifier = re.sub(r'^weight = [0-9.]+', f'weight = {weight}', classifier, count=1, flags=re.M)
open(path, "w").write(head + sep + classifier)
PY
rm -rf "$OUT"; mkdir -p "$(dirname "$OUT")"; mv "$staged" "$OUT"
diff "$BUNDLE/manifest.toml" "$OUT/manifest.toml" || true
