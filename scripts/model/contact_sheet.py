#!/usr/bin/env python3
"""Contact sheet of the phantom generator's varied anatomy (`phantom.py --anatomy varied`).

A grid of chests, each shown as an axial slice at the hila (the mean height of both hilum
landmarks) and a coronal slice halfway between the hila and the heart's centre, in a lung window (or `--window mediastinum`),
labelled with seed, family id and name. Slices are rendered straight from the analytic scene
(in-plane PSF, edge enhancement and noise of the seed's drawn kernel), so a sheet takes seconds
per chest, not a whole series.

    nice -n 15 .venv/bin/python3 scripts/model/contact_sheet.py --out docs/anatomy-variants.png

makes docs/anatomy-variants.png: 16 chests, seeds 1..16 with families 0-5 in turn (so every
family appears at least twice), 1.2 mm pixels.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import phantom  # noqa: E402

WINDOWS = {"lung": (-600.0, 1500.0), "mediastinum": (40.0, 400.0)}


def to_u8(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    c, w = window
    return (np.clip((hu - (c - w / 2)) / w, 0, 1) * 255).astype(np.uint8)


def render_panels(seed: int, family: int | None, px: float, size: int, window) -> tuple[np.ndarray, np.ndarray, dict]:
    """(axial, coronal) uint8 images of `size` pixels square, and the case's anatomy landmarks."""
    scene = phantom.make_scene(seed, anatomy="varied", families=None if family is None else [family])
    geo = phantom.sample_geometry_varied(seed)
    lm = phantom.anatomy_landmarks(scene, geo)
    k = geo["kernel"]
    acq = phantom.Acquisition(psf_xy=geo["psf_mm"], psf_z=0.5, noise=min(geo["noise_hu"], 40.0),
                              noise_corr=k["noise_corr"], sharpen=k["edge_enhance"], sharpen_mm=k["edge_enhance_mm"])
    hil = np.array([lm["hilum"]["right"], lm["hilum"]["left"]])
    zc = float(hil[:, 2].mean())
    yc = 0.5 * float(hil[:, 1].mean()) + 0.5 * lm["heart"]["center"][1]  # between the hila and the heart's centre
    xs = scene.cx + (np.arange(size) - size / 2 + 0.5) * px
    ys = scene.cy + 0.1 * scene.body_b + (np.arange(size) - size / 2 + 0.5) * px
    zs = (scene.z0 + scene.z1) / 2 + (np.arange(size) - size / 2 + 0.5) * px
    rng = np.random.default_rng([seed, 0xC5])
    ax, _ = phantom.render(scene, phantom.Grid(xs, ys, np.array([zc])), acq, rng)
    co, _ = phantom.render(scene, phantom.Grid(xs, np.array([yc]), zs), None, rng)
    # the coronal plane: PSF and noise as an axial slice would get them, applied in its own plane
    co = phantom.acquire(co.transpose(1, 0, 2), phantom.Grid(xs, zs, np.array([yc])), acq, rng).transpose(1, 0, 2)
    axial = to_u8(ax[0], window)  # rows: y (anterior at the top), columns: x (patient's right on the left)
    coronal = to_u8(co[::-1, 0, :], window)  # rows: z from the top (superior first)
    return axial, coronal, lm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=pathlib.Path, required=True)
    ap.add_argument("--seed", type=int, default=1, help="first seed")
    ap.add_argument("--count", type=int, default=16, help="chests (4 to a row)")
    ap.add_argument("--families", default="cycle",
                    help="'cycle': families 0-5 in turn; 'drawn': as the seed draws it from all; or one id")
    ap.add_argument("--pixel", type=float, default=1.2, help="mm per pixel")
    ap.add_argument("--size", type=int, default=300, help="pixels per panel side")
    ap.add_argument("--window", choices=sorted(WINDOWS), default="lung")
    ap.add_argument("--cols", type=int, default=4)
    args = ap.parse_args()
    fams = sorted(phantom.ANATOMY_FAMILIES)
    tiles = []
    font = ImageFont.load_default()
    for i in range(args.count):
        seed = args.seed + i
        family = fams[i % len(fams)] if args.families == "cycle" else (None if args.families == "drawn" else int(args.families))
        axial, coronal, lm = render_panels(seed, family, args.pixel, args.size, WINDOWS[args.window])
        tile = Image.new("L", (2 * args.size + 4, args.size + 16), 0)
        tile.paste(Image.fromarray(axial), (0, 16))
        tile.paste(Image.fromarray(coronal), (args.size + 4, 16))
        d = ImageDraw.Draw(tile)
        kern = lm.get("scanner", {}).get("kernel", "")
        d.text((3, 2), f"seed {seed}  family {lm['family']} {lm['family_name']} ({lm['split']})  {kern}", fill=255,
               font=font)
        tiles.append(tile)
        print(f"seed {seed}: family {lm['family']} {lm['family_name']}", flush=True)
    cols = args.cols
    rows = (len(tiles) + cols - 1) // cols
    tw, th = tiles[0].size
    sheet = Image.new("L", (cols * (tw + 6), rows * (th + 6)), 40)
    for i, t in enumerate(tiles):
        sheet.paste(t, ((i % cols) * (tw + 6), (i // cols) * (th + 6)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({sheet.size[0]}x{sheet.size[1]})")


if __name__ == "__main__":
    main()
