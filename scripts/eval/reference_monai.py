#!/usr/bin/env python3
"""The stack users would pick instead of pulmo: pydicom + numpy + MONAI, same model, same rules.

One CT series folder in, a pulmo.report/1-like JSON out (findings with centre in patient LPS
mm, diameter, volume, score, and `timing_ms` per stage), doing what `pulmo analyze` does with
the tools the field uses:

  decode       pydicom reads every file (pylibjpeg/OpenJPEG for JPEG 2000), numpy sorts the
               slices along the slice normal and applies the modality LUT (slope, intercept)
  preprocess   MONAI `Spacing` to the manifest's working spacing (bilinear, float32) and
               `ScaleIntensityRange` over its HU window; a scipy lung mask (air inside the
               body, largest parts, holes filled) whose bounding box plus 8 mm is the region
               the network sees (MONAI's `CropForeground` idea; `--roi full` sends everything)
  inference    `monai.inferers.sliding_window_inference` with the manifest's patch and
               overlap, Gaussian blending (sigma = patch / 8, as pulmo), `sw_batch_size` 4,
               sigmoid in the predictor, under `torch.inference_mode()`; torch threads =
               cores; `--device cuda` and `--half` for a GPU; `--precision bfloat16` and
               `--channels-last` tune it the way pulmo runs on a CPU with native bfloat16
  postprocess  26-connected components above the manifest's probability threshold; each is
               measured on the source grid the way pulmo does (trilinear probability, largest
               part, trimmed to the lung-window edge, long and short axis on its largest axial
               slice, diameter = their mean); pulmo's filters: min score, min diameter, at most
               50 mm across, centre near the lungs, overlaps dropped

The model is the same TorchScript file and manifest (models/pulmo-nodule-v1). Run with the
project's venv:

    .venv/bin/python3 scripts/eval/reference_monai.py SERIES_DIR --out OUT/ [--device cuda --half]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import time
import tomllib

import numpy as np
import pydicom
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.transforms import ScaleIntensityRange, Spacing
from scipy import ndimage

SOLID_HU = -300.0  # voxels above this count as a nodule's solid core (pulmo: measure.rs)
LUNG_HU = -850.0  # aerated lung, the background a nodule edge is measured against
MAX_EXTENT_MM = 50.0  # wider candidates are anatomy, not nodules
LUNG_MARGIN_MM = 8.0  # around the lungs' bounding box, the region the network sees
EIGHT = np.ones((3, 3, 3), bool)  # 26-connectivity


# ----------------------------------------------------------------------------- decode


def read_series(folder: pathlib.Path) -> tuple[np.ndarray, dict]:
    """HU volume [k, j, i] ordered along the slice normal, and its geometry."""
    dss = [d for d in map(read_or_none, sorted(folder.rglob("*"))) if d is not None and "PixelData" in d]
    if not dss:
        raise SystemExit(f"{folder}: no DICOM images")
    iop = np.array(dss[0].ImageOrientationPatient, float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    dss.sort(key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, float), normal)))
    pos = np.array([np.dot(np.array(d.ImagePositionPatient, float), normal) for d in dss])
    hu = np.empty((len(dss), int(dss[0].Rows), int(dss[0].Columns)), np.float32)
    for k, d in enumerate(dss):
        hu[k] = d.pixel_array * np.float32(d.RescaleSlope) + np.float32(d.RescaleIntercept)
    dy, dx = (float(v) for v in dss[0].PixelSpacing)  # between rows, between columns
    dz = float(np.median(np.diff(pos))) if len(pos) > 1 else float(dss[0].SliceThickness)
    geo = {"origin": np.array(dss[0].ImagePositionPatient, float), "row": row, "col": col,
           "normal": normal, "spacing": np.array([dz, dy, dx]),
           "study": str(dss[0].StudyInstanceUID), "uid": str(dss[0].SeriesInstanceUID)}
    return hu, geo


def read_or_none(path: pathlib.Path) -> pydicom.Dataset | None:
    """The file's dataset, or None for folders and files that are not DICOM."""
    if not path.is_file():
        return None
    try:
        return pydicom.dcmread(path)
    except pydicom.errors.InvalidDicomError:
        return None


def affine(geo: dict) -> np.ndarray:
    """Array index (k, j, i) to patient LPS mm: the order the network was trained in."""
    a = np.eye(4)
    a[:3, 0] = geo["normal"] * geo["spacing"][0]
    a[:3, 1] = geo["col"] * geo["spacing"][1]
    a[:3, 2] = geo["row"] * geo["spacing"][2]
    a[:3, 3] = geo["origin"]
    return a


# ----------------------------------------------------------------------------- preprocess


def to_working_grid(hu: np.ndarray, geo: dict, manifest: dict) -> MetaTensor:
    """HU resampled to the manifest's spacing by MONAI `Spacing`; keeps its affine."""
    img = MetaTensor(torch.from_numpy(hu)[None], affine=torch.from_numpy(affine(geo)))
    spacing = Spacing(pixdim=manifest["input"]["spacing_mm"], mode="bilinear",
                      padding_mode="border", dtype=np.float32)
    return spacing(img)


def lung_mask(hu: np.ndarray) -> np.ndarray:
    """Air inside the body (not touching the in-plane border), largest parts, holes filled."""
    air = hu < -400
    lab, n = ndimage.label(air)
    if n == 0:
        return air
    border = np.unique(np.concatenate([lab[:, 0].ravel(), lab[:, -1].ravel(),
                                       lab[:, :, 0].ravel(), lab[:, :, -1].ravel()]))
    sizes = ndimage.sum_labels(air, lab, index=np.arange(1, n + 1))
    keep = np.zeros(n + 1, bool)
    for idx in np.argsort(sizes)[::-1][:3] + 1:
        if idx not in border and sizes[idx - 1] > 0.05 * sizes.max():
            keep[idx] = True
    mask = keep[lab]
    for k in range(mask.shape[0]):  # nodules and vessels inside the lungs belong to them
        mask[k] = ndimage.binary_fill_holes(mask[k])
    return mask


def lung_box(mask: np.ndarray, spacing: float, shape: tuple) -> tuple[slice, ...]:
    """Bounding box of the lungs plus a margin, as slices of the working grid."""
    if not mask.any():
        return tuple(slice(0, s) for s in shape)
    m = int(np.ceil(LUNG_MARGIN_MM / spacing))
    idx = np.nonzero(mask.any(axis=(1, 2)))[0], np.nonzero(mask.any(axis=(0, 2)))[0], \
        np.nonzero(mask.any(axis=(0, 1)))[0]
    return tuple(slice(max(0, int(i[0]) - m), min(s, int(i[-1]) + m + 1)) for i, s in zip(idx, shape))


# ----------------------------------------------------------------------------- inference


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model(model_dir: pathlib.Path, device: torch.device, dtype: torch.dtype, channels_last: bool):
    """The bundle's TorchScript module (frozen: BatchNorm folded) and its manifest."""
    manifest = tomllib.loads((model_dir / "manifest.toml").read_text())
    model = torch.jit.load(str(model_dir / manifest["file"]), map_location=device).eval()
    # Before freezing: a frozen module's weights are constants that .to() misses.
    model = model.to(dtype)
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    return torch.jit.freeze(model), manifest


def probabilities(model, image: torch.Tensor, manifest: dict, device: torch.device, dtype: torch.dtype,
                  channels_last: bool, sw_batch_size: int) -> torch.Tensor:
    """Sliding-window probabilities over `image` [k, j, i] (values in [0, 1]); with the
    manifest's `mirror_axes` (test-time augmentation, as pulmo) also over the image mirrored
    along each of them, mirrored back and averaged."""
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format

    def predictor(x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(model(x.to(dtype).contiguous(memory_format=layout)).float())

    def window(volume: torch.Tensor) -> torch.Tensor:
        return sliding_window_inference(
            volume, roi_size=manifest["input"]["patch"],
            sw_batch_size=sw_batch_size, predictor=predictor, overlap=manifest["input"]["overlap"],
            mode="gaussian", sigma_scale=0.125, padding_mode="constant", cval=0.0,
            sw_device=device, device=device)

    axes = manifest["input"].get("mirror_axes", [])
    with torch.inference_mode():
        volume = image[None, None].to(device)
        out = window(volume)
        for axis in axes:
            out += torch.flip(window(torch.flip(volume, dims=[2 + axis])), dims=[2 + axis])
        out /= 1 + len(axes)
    return out[0, 0].float().cpu()


def tiles(shape: tuple, manifest: dict) -> int:
    """How many patches sliding_window_inference runs over `shape` (its scan interval), times
    the passes (one plus one per mirrored axis)."""
    n = 1
    for size, roi in zip(shape, manifest["input"]["patch"]):
        step = max(int(roi * (1 - manifest["input"]["overlap"])), 1)
        n *= int(np.ceil(max(size - roi, 0) / step)) + 1
    return n * (1 + len(manifest["input"].get("mirror_axes", [])))


# ----------------------------------------------------------------------------- postprocess


def measure_region(prob: np.ndarray, lo_w: np.ndarray, hi_w: np.ndarray, src_from_work: np.ndarray,
                   hu: np.ndarray, thr: float) -> dict | None:
    """A candidate's working-grid box measured on the source grid: region, weighted centre."""
    corners = np.array([[a, b, c, 1.0] for a in (lo_w[0], hi_w[0]) for b in (lo_w[1], hi_w[1])
                        for c in (lo_w[2], hi_w[2])])
    s = corners @ src_from_work.T
    lo = np.maximum(np.floor(s[:, :3].min(0)), 0).astype(int)
    hi = np.minimum(np.ceil(s[:, :3].max(0)), np.array(hu.shape) - 1).astype(int)
    if np.any(hi < lo):
        return None
    grid = np.stack(np.meshgrid(*[np.arange(a, b + 1) for a, b in zip(lo, hi)], indexing="ij"), -1)
    pts = np.concatenate([grid, np.ones(grid.shape[:3] + (1,))], -1) @ np.linalg.inv(src_from_work).T
    weights = ndimage.map_coordinates(prob, pts[..., :3].reshape(-1, 3).T, order=1, mode="nearest")
    weights = weights.reshape(grid.shape[:3])
    region = largest(weights >= thr)
    if region is None:
        return None
    sub = hu[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1]
    region = trim(region, sub)
    w = np.where(region, weights, 0.0)
    centre = np.array(ndimage.center_of_mass(w)) + lo
    return {"centre_index": centre, "region": region, "hu": sub}


def largest(mask: np.ndarray) -> np.ndarray | None:
    """The largest 26-connected component, or None."""
    lab, n = ndimage.label(mask, structure=EIGHT)
    if n == 0:
        return None
    sizes = np.bincount(lab.ravel())[1:]
    return lab == (int(np.argmax(sizes)) + 1)


def trim(region: np.ndarray, hu: np.ndarray) -> np.ndarray:
    """Trims to the lung-window edge: HU above halfway between the dense part and lung."""
    dense = np.percentile(hu[region], 90, method="lower")
    if dense <= LUNG_HU + 100:
        return region
    trimmed = largest(region & (hu > (dense + LUNG_HU) / 2))
    return region if trimmed is None else trimmed


def axial_axes(region: np.ndarray, pixel: tuple[float, float]) -> tuple[float, float]:
    """Long and short axis (mm, edge to edge) on the axial slice where the region is largest."""
    k = int(np.argmax(region.sum(axis=(1, 2))))
    pts = np.argwhere(region[k]) * np.array(pixel)
    if len(pts) < 2:
        return float(pixel[0]), float(pixel[0])
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    a, b = np.unravel_index(np.argmax(d), d.shape)
    axis = (pts[b] - pts[a]) / d[a, b]
    perp = np.array([-axis[1], axis[0]])
    across = pts @ perp
    return float(d[a, b] + pixel[0]), float(across.max() - across.min() + pixel[0])


def findings(prob: np.ndarray, work_affine: np.ndarray, lungs: np.ndarray, hu: np.ndarray,
             geo: dict, manifest: dict) -> list[dict]:
    """Candidates -> measured, filtered, ranked findings (pulmo's rules)."""
    th = manifest["thresholds"]
    ws = float(manifest["input"]["spacing_mm"][0])
    lab, _ = ndimage.label(prob >= th["probability"], structure=EIGHT)
    source = affine(geo)
    work_to_src = np.linalg.solve(source, work_affine)  # working index -> source index
    out = []
    for n, box in enumerate(ndimage.find_objects(lab), start=1):
        if box is None or max(b.stop - b.start for b in box) * ws > MAX_EXTENT_MM:
            continue
        cand = lab[box] == n
        score = float(prob[box][cand].max())
        lo_w = np.array([b.start - 1 for b in box], float)
        hi_w = np.array([b.stop for b in box], float)
        m = measure_region(prob, lo_w, hi_w, work_to_src, hu, th["probability"])
        if m is None:
            continue
        long_mm, short_mm = axial_axes(m["region"], tuple(geo["spacing"][1:]))
        diameter = round((long_mm + short_mm) / 2, 1)
        centre_w = np.linalg.solve(work_to_src, np.append(m["centre_index"], 1.0))[:3]
        reach = (3.0 + long_mm / 4) / ws  # pulmo: any lung voxel within this box of the centre
        lo_n = np.maximum(centre_w - reach, 0).astype(int)
        near = lungs[tuple(slice(a, int(np.ceil(c + reach)) + 1) for a, c in zip(lo_n, centre_w))].any()
        if score < th["min_score"] or diameter < th["min_diameter_mm"] or not near:
            continue
        centre = (source @ np.append(m["centre_index"], 1.0))[:3]
        out.append({"center_patient_mm": [round(float(v), 2) for v in centre],
                    "center_voxel": [int(round(v)) for v in m["centre_index"][::-1]],
                    "diameter_mm": diameter, "long_axis_mm": round(long_mm, 1),
                    "short_axis_mm": round(short_mm, 1),
                    "volume_mm3": round(float(m["region"].sum() * np.prod(geo["spacing"])), 1),
                    "score": round(score, 4)})
    out.sort(key=lambda f: -f["score"])
    return suppress_overlaps(out)


def merge_passes(passes: list[list[dict]]) -> list[dict]:
    """pulmo's merge: a later pass's finding within an earlier one's long-axis radius (or 3 mm)
    raises its score; the others join; then ranked and overlaps dropped again."""
    merged = [dict(f) for f in passes[0]]
    for later in passes[1:]:
        known = len(merged)
        for f in later:
            c = np.array(f["center_patient_mm"])
            same = next((k for k in merged[:known] if np.linalg.norm(c - np.array(k["center_patient_mm"]))
                         <= max(max(k["long_axis_mm"], f["long_axis_mm"]) / 2, 3.0)), None)
            if same is None:
                merged.append(dict(f))
            else:
                same["score"] = max(same["score"], f["score"])
    merged.sort(key=lambda f: -f["score"])
    return suppress_overlaps(merged)


def suppress_overlaps(ranked: list[dict]) -> list[dict]:
    """Drops findings whose centre lies inside a higher-scoring one."""
    kept: list[dict] = []
    for f in ranked:
        c = np.array(f["center_patient_mm"])
        if not any(np.linalg.norm(c - np.array(k["center_patient_mm"]))
                   < max(k["long_axis_mm"], f["long_axis_mm"]) / 2 for k in kept):
            kept.append(f)
    for n, f in enumerate(kept, start=1):
        f["id"] = n
    return kept


# ----------------------------------------------------------------------------- driver


def analyze(folder: pathlib.Path, model, manifest: dict, args) -> dict:
    """One series, stage by stage, as a pulmo.report/1-like dict with timing_ms."""
    timing: dict[str, float] = {}
    clock = time.perf_counter()
    start = clock

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timing[name] = round(timing.get(name, 0.0) + (now - clock) * 1e3, 1)
        clock = now

    hu, geo = read_series(folder)
    lap("decode")
    passes, shapes, n_tiles = [], [], 0
    # One pass per working spacing, as pulmo: the manifest's, then input.extra_spacings_mm.
    for spacing in [manifest["input"]["spacing_mm"]] + manifest["input"].get("extra_spacings_mm", []):
        man = {**manifest, "input": {**manifest["input"], "spacing_mm": spacing}}
        work = to_working_grid(hu, geo, man)
        lo, hi = man["input"]["hu_window"]
        image = ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)(work)
        work_hu = work[0].numpy()
        lungs = lung_mask(work_hu)
        box = lung_box(lungs, float(spacing[0]), work_hu.shape) \
            if args.roi == "lungs" else tuple(slice(0, s) for s in work_hu.shape)
        crop = image[0].as_tensor()[box]
        lap("preprocess")
        prob = np.zeros(work_hu.shape, np.float32)
        prob[box] = probabilities(model, crop, man, args.device, DTYPES[args.precision], args.channels_last,
                                  args.sw_batch_size).numpy()
        lap("inference")
        work_affine = work.affine.numpy().astype(float)
        passes.append(findings(prob, work_affine, lungs, hu, geo, man))
        lap("postprocess")
        shapes.append((list(work_hu.shape), list(crop.shape)))
        n_tiles += tiles(tuple(crop.shape), man)
    found = merge_passes(passes)
    timing["total"] = round((time.perf_counter() - start) * 1e3, 1)
    return {"schema": "pulmo.report/1", "study_instance_uid": geo["study"],
            "series_instance_uid": geo["uid"], "model": {"id": manifest["id"], "sha256": manifest["sha256"]},
            "device": str(args.device), "precision": args.precision, "channels_last": args.channels_last,
            "series": {"slices": hu.shape[0], "rows": hu.shape[1], "columns": hu.shape[2],
                       "spacing_mm": [round(float(v), 4) for v in geo["spacing"][::-1]]},
            "timing_ms": timing, "findings": found,
            "reference": {"pipeline": "pydicom + numpy + MONAI", "monai": __import__("monai").__version__,
                          "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "roi": args.roi, "working_shape": shapes[0][0],
                          "network_shape": shapes[0][1], "tiles": n_tiles,
                          "sw_batch_size": args.sw_batch_size}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("series", type=pathlib.Path, nargs="+", help="series folders (one series each)")
    ap.add_argument("--out", type=pathlib.Path, required=True, help="writes <SeriesInstanceUID>.json here")
    ap.add_argument("--model", type=pathlib.Path, default=pathlib.Path("models/pulmo-nodule-v1"))
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--precision", choices=list(DTYPES), default="float32", help="the network's number format")
    ap.add_argument("--half", action="store_true", help="--precision float16 (on CUDA; pulmo: half_on_cuda)")
    ap.add_argument("--channels-last", action="store_true",
                    help="weights and patches channels-last (NDHWC), as pulmo runs on the CPU")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: cores)")
    ap.add_argument("--sw-batch-size", type=int, default=4, help="patches per network call (pulmo: 4)")
    ap.add_argument("--roi", choices=["lungs", "full"], default="lungs",
                    help="network region: the lungs' bounding box + 8 mm, or the whole volume")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.device = torch.device(args.device)
    if args.half:
        args.precision = "float16"
    if args.precision == "float16" and args.device.type != "cuda":
        ap.error("float16 needs --device cuda")
    model, manifest = load_model(args.model, args.device, DTYPES[args.precision], args.channels_last)
    args.out.mkdir(parents=True, exist_ok=True)
    for folder in args.series:
        rep = analyze(folder, model, manifest, args)
        (args.out / f"{rep['series_instance_uid']}.json").write_text(json.dumps(rep, indent=1) + "\n")
        t = rep["timing_ms"]
        print(f"{folder}: {len(rep['findings'])} findings, {rep['reference']['tiles']} tiles, "
              f"{t['total'] / 1e3:.1f} s", flush=True)


if __name__ == "__main__":
    main()
