#!/usr/bin/env bash
# Installs the released OHIF viewer that `pulmo serve` offers at /viewer/: npm @ohif/app, the
# version pinned below, downloaded once from the npm registry (no npm needed), checked against
# the registry's sha512, and its built `dist/` unpacked into viewer/ohif/ (git-ignored; never
# committed). The build expects to be served at `/`; it is rebased to `/viewer/` here: its
# page's root-relative URLs and `window.PUBLIC_URL`, and the public path its bundles load
# their chunks, workers and WASM from (`__webpack_require__.p = "/"`, in 8 bundles of 3.13.2). `pulmo serve --viewer-dir viewer/ohif` serves it with its own app configuration
# (data source: pulmo's DICOMweb), see docs/service.md.
# Idempotent: a re-run with the files in place only checks the stamp.
#
# usage: scripts/setup/viewer.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION=3.13.2
URL=https://registry.npmjs.org/@ohif/app/-/app-$VERSION.tgz
SHA512=WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA==
OUT=viewer/ohif
STAMP=$OUT/.pulmo-ohif-version
MOUNT=/viewer/

if [ "$(cat "$STAMP" 2>/dev/null)" = "$VERSION $SHA512 $MOUNT" ] && [ -s "$OUT/index.html" ]; then
    printf 'viewer: OHIF %s is in %s\n' "$VERSION" "$OUT" >&2
    exit 0
fi
python3 - "$URL" "$SHA512" "$OUT" "$MOUNT" <<'PY'
import base64, hashlib, pathlib, shutil, sys, tarfile, tempfile, urllib.request
url, sha512, out, mount = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3]), sys.argv[4]
with tempfile.TemporaryDirectory() as tmp:
    archive = pathlib.Path(tmp) / "ohif.tgz"
    with urllib.request.urlopen(url, timeout=120) as r, open(archive, "wb") as f:
        shutil.copyfileobj(r, f)
    digest = hashlib.sha512()
    with open(archive, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if base64.b64encode(digest.digest()).decode() != sha512:
        sys.exit(f"viewer: {url} does not have the registry's sha512 {sha512}: not installed")
    staged = pathlib.Path(tmp) / "dist"
    staged.mkdir()
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = pathlib.PurePosixPath(member.name)
            if name.parts[:2] != ("package", "dist") or not member.isfile():
                continue
            rel = pathlib.PurePosixPath(*name.parts[2:])
            if ".." in rel.parts:
                sys.exit(f"viewer: {url} holds an unsafe path {member.name}")
            target = staged / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    index = staged / "index.html"
    if not index.is_file():
        sys.exit(f"viewer: {url} has no dist/index.html")
    # Rebase from / to the mount point.
    page = index.read_text()
    if 'window.PUBLIC_URL="/"' not in page:
        sys.exit(f"viewer: {url}'s index.html does not set window.PUBLIC_URL=\"/\": cannot rebase it")
    page = page.replace('window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{mount}"')
    page = page.replace('href="/', f'href="{mount}').replace('src="/', f'src="{mount}')
    index.write_text(page)
    runtime = '__webpack_require__.p = "/";'
    rebased = 0
    for js in staged.rglob("*.js"):
        code = js.read_bytes()
        if runtime.encode() in code:
            js.write_bytes(code.replace(runtime.encode(), f'__webpack_require__.p = "{mount}";'.encode()))
            rebased += 1
    if rebased == 0:
        sys.exit(f"viewer: no bundle of {url} sets its public path: cannot rebase it")
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(staged), str(out))
PY
echo "$VERSION $SHA512 $MOUNT" > "$STAMP"
printf 'viewer: installed OHIF %s (npm @ohif/app, sha512 checked) into %s\n' "$VERSION" "$OUT" >&2
