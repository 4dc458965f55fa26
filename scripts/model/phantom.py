#!/usr/bin/env python3
"""Synthetic chest CT phantoms with exact ground truth, for pulmo's model and tests.

A phantom is a *scene*: analytic anatomy in patient LPS millimetres (x to the patient's
left, y posterior, z superior), built deterministically from a seed. Rendering evaluates
the scene on any axis-aligned grid, so the same code writes full DICOM series and renders
small training patches straight at the model's working spacing.

Anatomy: body (fat, muscle), thoracic cavity with mediastinum, heart and aorta, both lungs
(parenchymal texture, gravity gradient), trachea, main bronchi and a bronchial tree,
branching tapering pulmonary vessel trees (arteries and veins), spine, ribs, sternum and the
table. Nodules (0-6, 3.5-30 mm nominal, `--diameter-range` for other sizes; solid,
part-solid, ground-glass; round to lobulated; some juxtapleural, some juxtavascular; for
variety the generator does not draw by default: `--solid-hu` denser solid ones, `--ggo-hu`
fainter or denser ground glass, `--spiculate`, `--eccentric-cores` off-centre part-solid
cores, `--cavitate` cavities in solid ones of 8 mm or more, none of which changes the truth).
Partial volume comes from soft (anti-aliased) edges and a Gaussian PSF, then correlated noise.

CLI examples (run with the project's venv):

    .venv/bin/python3 scripts/model/phantom.py --seed 7 --out /tmp/ph            # one series
    .venv/bin/python3 scripts/model/phantom.py --seed 1000 --cases 20 --out DIR  # a set

Each series lands in OUT/<seed>/ (one file per slice) and OUT/truth.json holds every case
(schema "pulmo.truth/1").

Varied anatomy (`--anatomy varied`; off by default, when every output is what it always was).
The classic scene draws the mediastinum, hila and domes with little variety; the varied mode
draws, on random streams of its own ([seed, 0xA7, ...]): habitus (thin to obese, narrow to
barrel); lungs (size, apex, taper, basal flare); a heart of rotated chambers (LV, RV, RA, LA)
or a superellipsoid ventricle mass, sized, turned and tilted, shifted left, against the
sternum and on the central tendon, with epicardial fat, pericardium and cardiophrenic fat
pads; ascending aorta, arch (over the left hilum, with its three branches), tortuous
descending aorta; SVC; pulmonary trunk (20-37 mm across; main arteries 14-33 mm), right
(axial, behind the ascending aorta) and left (over the left main bronchus) pulmonary
arteries to the hila; four pulmonary veins from a left atrium behind the heart; then lobar arteries and veins inside the lungs as
curving, tapering tubes (some kept in the axial plane) whose branches seed the vessel trees
(density, calibre and branching angles drawn); domes (asymmetric, flat, high, lobulated,
eventrated) with posterior recesses and a central tendon, liver, spleen and stomach (often
with air) below; contrast (one case in seven); and a reconstruction kernel (SOFT, STANDARD,
LUNG with edge-enhancement overshoot; noise level and texture to match; slices 0.5-5 mm).
Nodules are drawn and measured exactly as in the classic scene.

Families (`--anatomy-family`, `ANATOMY_FAMILIES`): styles combined so that a model can be
trained on some and tested on others never seen ("held out by family, not only by seed"):

    id name               split    heart / great vessels                  domes / habitus
    0  average            train    chambers, 35-50 deg                     normal, right higher
    1  thin-hyperinflated train    small vertical heart, PA 24-32 mm       flat, low; thin, tall lungs
    2  broad-obese        train    big horizontal heart, big fat pads      high; obese, wide
    3  elderly-tortuous   train    tortuous wide aorta, curvy hilar vessels lobulated
    4  cardiomegaly-pah   heldout  superellipsoid cardiomegaly, big LA,    asymmetric (one high)
                                   PA trunk 30-37 mm, wide veins
    5  eventration        heldout  heart shifted left                      one eventrated dome,
                                                                           the other lobulated

Train on 0-3 (`train.py --varied-anatomy P --families train`); evaluate on 4-5
(`--anatomy varied --anatomy-family heldout`) with seeds outside the training range.

Truth key "anatomy" (varied cases always; classic ones with `--landmarks`), schema
"pulmo.anatomy/1", all positions patient LPS mm, lengths mm:

    family, family_name, split        id, name, "train"/"heldout" (null/"classic" for classic)
    mode                              "varied" or "classic"
    hilum.right/.left [x,y,z]         where the main pulmonary artery meets the lung
    carina, pulmonary_bifurcation     [x,y,z] (varied only)
    heart: shape, center, radii, axes an ellipsoid about the heart (chambers, no fat): radii
                                      along the three unit vectors `axes` (long axis first)
           chambers[]                 name, center, radii, axes, exponent (2: an ellipsoid)
           fat_pads[], epicardial_fat_mm
    diaphragm.right/.left: apex       [x,y,z] of the dome's top; lowest_z (posterior recess), style
    diaphragm.central_tendon_z        under the heart
    mediastinum: center_xy, half_width_mm, half_depth_mm   the central column the lungs avoid
    lungs.right/.left: base_z, apex_z
    vessels[]: name, kind, points     kind "central" (mediastinal: aorta, trunk, main arteries,
                                      SVC, veins to the LA) or "hilar" (lobar arteries and
                                      veins inside the lungs); points [[x,y,z,radius], ...]
    contrast                          whether the blood is enhanced
    scanner: kernel, psf_mm, noise_hu, noise_corr, edge_enhance, edge_enhance_mm
                                      (series only; geometry keeps its classic keys)

It marks where anatomy lies; it classifies nothing. `scripts/model/contact_sheet.py` shows the
range (docs/anatomy-variants.png), `scripts/model/check_anatomy.py` checks it.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import pathlib
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

NODULE_TYPES = ("solid", "part-solid", "ground-glass")
# Nominal diameters are drawn log-uniform here (mm). Lobes and ellipsoids make the measured
# equivalent diameter in the truth differ by a few tenths of a millimetre either way, so a
# nodule drawn at 3.5 mm can be recorded at 3.2. `--diameter-range 3 6` makes a set that
# reaches down to the LUNA16 limit of 3 mm (docs/model-card.md, Metrics).
NODULE_DIAMETERS_MM = (3.5, 30.0)
SOLID_HU = (0.0, 60.0)  # solid nodules' density, drawn uniform (`--solid-hu` maps it elsewhere)
GGO_HU = (-650.0, -450.0)  # ground-glass density (nodules and part-solid halos; `--ggo-hu`)


# ----------------------------------------------------------------------------- grids


@dataclass
class Grid:
    """An axis-aligned sampling grid: volume[k, j, i] sits at (xs[i], ys[j], zs[k]) mm."""

    xs: np.ndarray
    ys: np.ndarray
    zs: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.zs), len(self.ys), len(self.xs))

    @property
    def h(self) -> float:
        """Edge softness: the largest voxel step (mm)."""
        steps = [abs(a[1] - a[0]) for a in (self.xs, self.ys, self.zs) if len(a) > 1]
        return float(max(steps)) if steps else 1.0

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable coordinate arrays (x, y, z) of shape (1,1,nx), (1,ny,1), (nz,1,1)."""
        return self.xs[None, None, :], self.ys[None, :, None], self.zs[:, None, None]

    def sub(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index slices (k, j, i) of the voxels inside the box lo..hi (x, y, z), or None."""
        out = []
        for coords, a, b in ((self.zs, lo[2], hi[2]), (self.ys, lo[1], hi[1]), (self.xs, lo[0], hi[0])):
            idx = np.nonzero((coords >= a) & (coords <= b))[0]
            if idx.size == 0:
                return None
            out.append(slice(int(idx[0]), int(idx[-1]) + 1))
        return tuple(out)

    def subgrid(self, sl: tuple[slice, slice, slice]) -> "Grid":
        return Grid(self.xs[sl[2]], self.ys[sl[1]], self.zs[sl[0]])


def soft(sdf: np.ndarray, h: float) -> np.ndarray:
    """Occupancy in [0, 1] from a signed distance (negative inside), edge width h."""
    return np.clip(0.5 - sdf / h, 0.0, 1.0).astype(np.float32)


def ellipse_sdf(dx, dy, a, b):
    """First-order signed distance to an axial ellipse with semi-axes a, b."""
    q = np.sqrt((dx / a) ** 2 + (dy / b) ** 2) + 1e-9
    g = np.sqrt((dx / a**2) ** 2 + (dy / b**2) ** 2) / q + 1e-9
    return (q - 1.0) / g


def ellipsoid_sdf(p: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Approximate signed distance to an ellipsoid; p has a last axis of 3 (local frame)."""
    k0 = np.sqrt(((p / radii) ** 2).sum(-1)) + 1e-9
    k1 = np.sqrt(((p / radii**2) ** 2).sum(-1)) + 1e-9
    return k0 * (k0 - 1.0) / k1


# ----------------------------------------------------------------------------- scene


@dataclass
class Nodule:
    """One nodule: ellipsoid core plus lobes; all in patient mm."""

    center: np.ndarray
    radii: np.ndarray
    rot: np.ndarray
    lobes: list  # [(offset(3), radius)]
    kind: str
    hu: float
    core_frac: float = 0.0
    core_hu: float = 30.0
    core_offset: np.ndarray = field(default_factory=lambda: np.zeros(3))  # in the nodule's own frame

    def sdf(self, p: np.ndarray) -> np.ndarray:
        """Signed distance (mm) at points p[..., 3]."""
        q = (p - self.center) @ self.rot
        d = ellipsoid_sdf(q, self.radii)
        for off, r in self.lobes:
            d = np.minimum(d, np.sqrt(((q - off) ** 2).sum(-1)) - r)
        return d

    def core_sdf(self, p: np.ndarray) -> np.ndarray:
        q = (p - self.center) @ self.rot - self.core_offset
        return ellipsoid_sdf(q, self.radii * self.core_frac)

    def extent(self) -> float:
        r = float(self.radii.max())
        for off, rl in self.lobes:
            r = max(r, float(np.linalg.norm(off)) + rl)
        return r


@dataclass
class Scene:
    """Analytic chest anatomy, in patient LPS mm."""

    seed: int
    cx: float
    cy: float
    body_a: float
    body_b: float
    fat: float
    muscle: float
    cav_a: float
    cav_b: float
    z0: float
    z1: float
    z_base: float
    z_apex: float
    lungs: list  # [(cx, cy, lx, ly, dome_h)]
    heart: tuple  # (center(3), radii(3))
    aorta: tuple  # (x, y, r)
    spine: tuple  # (x, y, r)
    table_y: float
    lung_hu: float
    gravity: float
    texture: np.ndarray  # (n, 5): kx, ky, kz, phase, amp
    vessels: np.ndarray  # (n, 8): ax, ay, az, bx, by, bz, ra, rb
    roots: np.ndarray  # unmasked vessel segments (hilar trunks)
    airways: np.ndarray  # (n, 8) segments: lumen radii; wall added at render
    ribs: np.ndarray  # (n, 8) segments
    nodules: list = field(default_factory=list)
    vessel_hu: float = 40.0
    varied: dict | None = None  # the varied-anatomy mode's extra anatomy (None: the classic scene)

    # --- analytic fields (broadcasting over x, y, z arrays) ---

    def lung_sdf(self, x, y, z):
        """Signed distance-like field of the union of both lungs (negative inside)."""
        if self.varied is not None:
            return _varied_lung_sdf(self, x, y, z)
        span = self.z_apex - self.z_base
        d = None
        for lcx, lcy, lx, ly, dome in self.lungs:
            t = (z - self.z_base) / span
            s = np.sqrt(np.clip(1.0 - np.clip((t - 0.45) / 0.58, 0, None) ** 2, 1e-4, None))
            e = ellipse_sdf(x - lcx, y - lcy, lx * s, ly * s)
            rr = np.clip(((x - lcx) / lx) ** 2 + ((y - lcy) / ly) ** 2, 0, 1)
            floor = self.z_base + dome * (1.0 - rr)
            e = np.maximum(e, floor - z)
            e = np.maximum(e, z - self.z_apex)
            d = e if d is None else np.minimum(d, e)
        cav = ellipse_sdf(x - self.cx, y - self.cy, self.cav_a, self.cav_b)
        d = np.maximum(d, cav + 3.0)
        hc, hr = self.heart
        heart = ellipsoid_sdf(np.stack(np.broadcast_arrays(x - hc[0], y - hc[1], z - hc[2]), -1), hr + 4.0)
        d = np.maximum(d, -heart)
        med = ellipse_sdf(x - self.cx, y - self.cy, 24.0, self.cav_b * 1.2)
        d = np.maximum(d, -med)
        sx, sy, sr = self.spine
        d = np.maximum(d, -(np.sqrt((x - sx) ** 2 + (y - sy) ** 2) - sr - 10.0))
        ax_, ay_, ar = self.aorta
        d = np.maximum(d, -(np.sqrt((x - ax_) ** 2 + (y - ay_) ** 2) - ar - 3.0))
        return d

    def texture_at(self, x, y, z):
        """Low-frequency parenchymal texture (HU), grid independent.

        A sum of plane waves, evaluated separably: cos(a+b+c) = Re(e^ia e^ib e^ic).
        """
        x, y, z = (np.asarray(v, np.float64) for v in (x, y, z))
        out = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), np.float32)
        for kx, ky, kz, ph, amp in self.texture:
            exy = (amp * np.exp(1j * (kx * x + ky * y + ph))).astype(np.complex64)
            ez = np.exp(1j * kz * z).astype(np.complex64)
            out += exy.real * ez.real - exy.imag * ez.imag
        return out


def _rand_unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _rotate_towards(d: np.ndarray, angle: float, rng: np.random.Generator) -> np.ndarray:
    """Rotate unit vector d by angle (rad) about a random perpendicular axis."""
    perp = np.cross(d, _rand_unit(rng))
    perp /= np.linalg.norm(perp) + 1e-9
    return d * math.cos(angle) + perp * math.sin(angle)


def grow_trees(rng, scene: Scene, roots: list, r_min: float, max_segs: int,
               angles: tuple = ((12, 28), (25, 55)), ratios: tuple = ((0.78, 0.92), (0.6, 0.85))) -> list:
    """Grow branching, tapering tube trees inside the lungs, one generation at a time.

    roots: [(start(3), direction(3), radius, hilum(3))]. Returns segments
    [ax, ay, az, bx, by, bz, r_start, r_end]. Every end point is tested against the lung
    field in one vectorised call per generation. `angles` and `ratios`: the ranges (degrees, radius
    ratio) of a branch's first child and of the others (the varied anatomy draws them).
    """
    segs: list = []
    front = [(np.asarray(p, float), np.asarray(d, float), float(r), np.asarray(h, float)) for p, d, r, h in roots]
    while front and len(segs) < max_segs:
        p = np.array([f[0] for f in front])
        d = np.array([f[1] for f in front])
        r = np.array([f[2] for f in front])
        length = np.clip(r * rng.uniform(4.0, 7.0, len(r)) + 2.0, 3.0, 30.0)
        end = p + d * length[:, None]
        ok = scene.lung_sdf(end[:, 0], end[:, 1], end[:, 2]) < -0.5 * r
        short = p + d * (0.4 * length)[:, None]
        ok_short = scene.lung_sdf(short[:, 0], short[:, 1], short[:, 2]) < -0.2 * r
        end = np.where(ok[:, None], end, short)
        keep = ok | ok_short
        r_end = r * rng.uniform(0.9, 0.97, len(r))
        nxt = []
        for i in np.nonzero(keep)[0]:
            segs.append([*p[i], *end[i], r[i], r_end[i]])
            if r_end[i] < r_min or not ok[i]:
                continue
            hil = front[i][3]
            out = end[i] - hil
            out /= np.linalg.norm(out) + 1e-9
            n_child = 3 if rng.random() < 0.12 else 2
            for c in range(n_child):
                ratio = rng.uniform(*ratios[0]) if c == 0 else rng.uniform(*ratios[1])
                ang = math.radians(rng.uniform(*angles[0]) if c == 0 else rng.uniform(*angles[1]))
                nd = _rotate_towards(d[i], ang, rng) + 0.5 * out
                nd /= np.linalg.norm(nd)
                nxt.append((end[i], nd, r_end[i] * ratio, hil))
        front = nxt
    return segs


def _inside_start(scene: Scene, p: np.ndarray, lateral: float, margin: float) -> np.ndarray:
    """Move p laterally (sign of `lateral`) until it lies `margin` mm inside a lung."""
    q = p.copy()
    for _ in range(60):
        if scene.lung_sdf(*q) < -margin:
            return q
        q[0] += lateral * 2.0
    return q


def make_scene(seed: int, n_nodules: int | None = None, fov_mm: float | None = None,
               diameters_mm: tuple[float, float] = NODULE_DIAMETERS_MM, anatomy: str = "classic",
               families=None) -> Scene:
    """Build a random chest scene from a seed (optionally fitting a reconstruction FOV).

    Nodule diameters are drawn log-uniform in `diameters_mm`; another range changes the
    nodules' sizes only (the same random draws), so the rest of the case stays the same.
    `anatomy="varied"` draws the varied anatomy instead (`families`: which ANATOMY_FAMILIES
    the seed's family is drawn from, as `parse_families` reads them; default all).
    """
    if anatomy == "varied":
        return _make_varied_scene(seed, n_nodules, fov_mm, diameters_mm, families)
    if anatomy != "classic":
        raise ValueError(f"anatomy {anatomy!r}: classic or varied")
    rng = np.random.default_rng([seed, 0xC7])
    body_a = rng.uniform(135, 180)
    if fov_mm is not None:
        body_a = min(body_a, fov_mm / 2 - 8)
    body_b = body_a * rng.uniform(0.62, 0.75)
    fat, muscle = rng.uniform(4, 22), rng.uniform(6, 14)
    cav_a = body_a - fat - muscle - 9
    cav_b = body_b - fat - muscle - 9
    cx, cy = rng.uniform(-8, 8), rng.uniform(-10, 10)
    length = rng.uniform(270, 330)
    z0 = rng.uniform(-400, -50)
    z1 = z0 + length
    z_apex = z1 - rng.uniform(8, 25)
    z_base = z0 + rng.uniform(25, 55)
    lungs = []
    for side in (-1, 1):
        lx = cav_a * rng.uniform(0.40, 0.46)
        lcx = cx + side * cav_a * rng.uniform(0.50, 0.55)
        ly = cav_b * rng.uniform(0.82, 0.92)
        lcy = cy + cav_b * rng.uniform(0.0, 0.1)
        dome = rng.uniform(35, 60) if side < 0 else rng.uniform(25, 45)
        lungs.append((lcx, lcy, lx, ly, dome))
    heart = (np.array([cx + cav_a * 0.18, cy - cav_b * 0.3, z_base + rng.uniform(40, 60)]),
             np.array([cav_a * 0.42, cav_b * 0.5, rng.uniform(45, 58)]))
    sr = rng.uniform(15, 20)
    spine = (cx, cy + cav_b - sr * 0.5, sr)
    aorta = (cx + rng.uniform(18, 28), cy + cav_b * 0.58, rng.uniform(10, 14))
    n_tex = 10
    tex = np.column_stack([rng.normal(0, 0.12, (n_tex, 3)), rng.uniform(0, 2 * np.pi, n_tex),
                           rng.uniform(3, 9, n_tex)])
    scene = Scene(
        seed=seed, cx=cx, cy=cy, body_a=body_a, body_b=body_b, fat=fat, muscle=muscle,
        cav_a=cav_a, cav_b=cav_b, z0=z0, z1=z1, z_base=z_base, z_apex=z_apex, lungs=lungs,
        heart=heart, aorta=aorta, spine=spine, table_y=cy + body_b + rng.uniform(2, 12),
        lung_hu=rng.uniform(-880, -820), gravity=rng.uniform(20, 70), texture=tex,
        vessels=np.zeros((0, 8)), roots=np.zeros((0, 8)), airways=np.zeros((0, 8)),
        ribs=np.zeros((0, 8)), vessel_hu=rng.uniform(30, 55),
    )
    _add_trees(scene, rng)
    scene.ribs = _make_ribs(scene, rng)
    scene.nodules = _make_nodules(scene, rng, n_nodules, diameters_mm)
    return scene


def _add_trees(scene: Scene, rng: np.random.Generator) -> None:
    """Vessel trees (artery + vein per lung), hilar trunks, trachea and bronchi."""
    z_carina = scene.z_apex - rng.uniform(70, 95)
    z_hilum = z_carina - rng.uniform(10, 25)
    carina = np.array([scene.cx, scene.cy + scene.cav_b * 0.25, z_carina])
    vessels, roots, airways = [], [], []
    airways.append([carina[0], carina[1], scene.z1 + 5, *carina, 8.5, 8.0])
    vroots, aroots = [], []
    for side, (lcx, lcy, lx, ly, _) in zip((-1, 1), scene.lungs):
        hilum = np.array([lcx - side * lx * 0.55, lcy - ly * 0.05, z_hilum])
        for dy, r0, dz in ((-12.0, rng.uniform(5.5, 7.5), 8.0), (10.0, rng.uniform(5, 7), -10.0)):
            start = _inside_start(scene, hilum + np.array([0, dy, dz]), side, r0)
            trunk = np.array([scene.cx + side * 8, scene.heart[0][1] + 10, z_hilum + dz])
            roots.append([*trunk, *start, r0 * 1.2, r0])
            for _ in range(9):  # lobar/segmental branches aimed at random lung points
                tgt = _lung_point(scene, rng, 5.0, side=side)
                d = (tgt - start) if tgt is not None else np.array([side, 0, 0.0])
                vroots.append((start, d / np.linalg.norm(d), r0 * rng.uniform(0.4, 0.6), hilum))
        bstart = _inside_start(scene, hilum + np.array([0, 4.0, 2.0]), side, 4.0)
        airways.append([*carina, *bstart, 6.5, 5.5])
        for d0 in (np.array([0, 0, 1.0]), np.array([side * 0.6, 0.3, -1.0]), np.array([side * 0.5, -0.6, -0.4])):
            aroots.append((bstart, d0 / np.linalg.norm(d0), 4.5, hilum))
    vessels = grow_trees(rng, scene, vroots, 0.35, 14000)
    airways += grow_trees(rng, scene, aroots, 1.2, 300)
    scene.vessels = np.asarray(vessels, float).reshape(-1, 8)
    scene.roots = np.asarray(roots, float).reshape(-1, 8)
    scene.airways = np.asarray(airways, float).reshape(-1, 8)


def _make_ribs(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Ribs as chains of capsules following the chest wall, sloping down anteriorly."""
    segs = []
    a = scene.cav_a + 4.5
    b = scene.cav_b + 4.5
    z = scene.z_apex + 10
    while z > scene.z_base - 40:
        drop = rng.uniform(35, 60)
        for side in (-1, 1):
            ths = np.linspace(0.12, 0.88 * np.pi, 14)
            pts = [(scene.cx + side * a * math.sin(t), scene.cy + b * math.cos(t), z - drop * t / np.pi) for t in ths]
            for p, q in zip(pts[:-1], pts[1:]):
                segs.append([*p, *q, 4.5, 4.5])
        z -= rng.uniform(22, 28)
    return np.asarray(segs, float).reshape(-1, 8)


def _lung_point(scene: Scene, rng, margin: float, tries: int = 400, side: int = 0):
    """A random point inside the lungs (one side when side is -1/+1) `margin` mm deep."""
    for _ in range(tries):
        lcx, lcy, lx, ly, _ = scene.lungs[rng.integers(2) if side == 0 else (side + 1) // 2]
        p = np.array([lcx + rng.uniform(-lx, lx), lcy + rng.uniform(-ly, ly),
                      rng.uniform(scene.z_base, scene.z_apex)])
        if scene.lung_sdf(*p) < -margin:
            return p
    return None


def _place(scene: Scene, rng, r: float, mode: str):
    """Centre for a nodule of radius r: 'free', 'pleural' or 'vascular'."""
    if mode == "pleural":
        for _ in range(400):
            p = _lung_point(scene, rng, 1.0)
            if p is None:
                break
            g = np.array([scene.lung_sdf(*(p + e)) - scene.lung_sdf(*(p - e)) for e in np.eye(3) * 0.5])
            g /= np.linalg.norm(g) + 1e-9
            q = p - g * (scene.lung_sdf(*p) + r * rng.uniform(0.55, 0.85))
            if scene.lung_sdf(*q) < -0.3 * r:
                return q
    if mode == "vascular" and len(scene.vessels):
        big = scene.vessels[scene.vessels[:, 6] > 1.0]
        for _ in range(200):
            s = big[rng.integers(len(big))]
            t = rng.uniform(0.2, 0.8)
            c = s[:3] + t * (s[3:6] - s[:3])
            axis = (s[3:6] - s[:3]) / (np.linalg.norm(s[3:6] - s[:3]) + 1e-9)
            off = np.cross(axis, _rand_unit(rng))
            off /= np.linalg.norm(off) + 1e-9
            q = c + off * (r + s[6] * rng.uniform(0.0, 0.7))
            if scene.lung_sdf(*q) < -r * 0.8:
                return q
    return _lung_point(scene, rng, r + 2.0)


def _make_nodules(scene: Scene, rng, n: int | None, diameters_mm: tuple[float, float]) -> list:
    """Random nodules (count 0-6 unless given), non-overlapping."""
    if n is None:
        n = int(rng.choice(7, p=[0.12, 0.2, 0.2, 0.18, 0.13, 0.1, 0.07]))
    out: list[Nodule] = []
    for _ in range(n * 5):
        if len(out) >= n:
            break
        diam = float(np.exp(rng.uniform(np.log(diameters_mm[0]), np.log(diameters_mm[1]))))
        kind = str(rng.choice(NODULE_TYPES, p=[0.6, 0.15, 0.25]))
        mode = str(rng.choice(["free", "pleural", "vascular"], p=[0.5, 0.25, 0.25]))
        nod = _make_nodule(rng, diam, kind)
        c = _place(scene, rng, nod.extent(), mode)
        if c is None or any(np.linalg.norm(c - o.center) < o.extent() + nod.extent() + 3 for o in out):
            continue
        nod.center = c
        out.append(nod)
    return out


def _make_nodule(rng, diam: float, kind: str) -> Nodule:
    """Shape and density of one nodule (centre filled in by the caller)."""
    r = diam / 2
    radii = r * rng.uniform(0.8, 1.15, 3)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    lobes = []
    if diam > 6 and rng.random() < 0.5:
        for _ in range(int(rng.integers(1, 5))):
            lobes.append((_rand_unit(rng) * r * rng.uniform(0.45, 0.75), r * rng.uniform(0.35, 0.6)))
    if kind == "solid":
        hu = rng.uniform(*SOLID_HU)
    else:
        hu = rng.uniform(*GGO_HU)
    return Nodule(center=np.zeros(3), radii=radii, rot=q, lobes=lobes, kind=kind, hu=hu,
                  core_frac=rng.uniform(0.3, 0.6) if kind == "part-solid" else 0.0,
                  core_hu=rng.uniform(0, 50))


def densify(scene: Scene, hu_range: tuple[float, float], ground_glass: bool = False) -> None:
    """Moves every solid nodule's density from the drawn SOLID_HU linearly onto `hu_range`
    (e.g. 150-400 HU, a densely or partly calcified nodule), or with `ground_glass` the
    ground-glass density (of ground-glass nodules and part-solid halos) from GGO_HU (e.g. onto
    -750 to -600 HU, fainter); nothing is drawn again, so the rest of the case, truth
    included, stays the same."""
    (lo, hi), (a, b) = hu_range, GGO_HU if ground_glass else SOLID_HU
    for n in scene.nodules:
        if (n.kind != "solid") == ground_glass:
            n.hu = lo + (n.hu - a) / (b - a) * (hi - lo)


def _move_core(nod: Nodule, rng: np.random.Generator, lo: float, hi: float) -> None:
    """Moves the nodule's core a random way by lo-hi of the room it has inside the outline."""
    room = (1.0 - nod.core_frac) * float(nod.radii.min())
    nod.core_offset = _rand_unit(rng) * room * rng.uniform(lo, hi)


def eccentric_cores(scene: Scene, p: float) -> None:
    """Moves the solid core of each part-solid nodule, with probability `p`, off the centre of
    its ground-glass halo towards the edge (60-90 % of the room there is), as it often lies in
    real adenocarcinomas; the nodule's outline, and so its truth, is unchanged. Its own random
    stream, so the scene is otherwise the one the seed gives."""
    rng = np.random.default_rng([scene.seed, 0xECC])
    for nod in scene.nodules:
        if nod.kind != "part-solid" or rng.random() >= p:
            continue
        _move_core(nod, rng, 0.6, 0.9)


def cavitate(scene: Scene, p: float) -> None:
    """Gives each solid nodule of 8 mm or more, with probability `p`, an air-filled cavity
    (-1000 HU) of 35-60 % of its radii, somewhat off centre, inside a wall that stays whole;
    drawn as a core, so the outline and the truth (outer diameter, volume, type solid) are
    unchanged. Its own random stream."""
    rng = np.random.default_rng([scene.seed, 0xCA7])
    for nod in scene.nodules:
        if nod.kind != "solid" or float(nod.radii.mean()) * 2 < 8 or rng.random() >= p:
            continue
        nod.core_frac = rng.uniform(0.35, 0.6)
        nod.core_hu = -1000.0
        _move_core(nod, rng, 0.0, 0.5)


def spiculate(scene: Scene, p: float) -> None:
    """Gives each solid or part-solid nodule over 6 mm, with probability `p`, 5-12 spicules:
    tapering strands (2.0 mm thick at the surface, 0.6 mm at the tip) reaching 0.5-1.2
    radii beyond it, drawn as chains of small spheres. Its own random stream, so the scene is
    otherwise the one the seed gives."""
    rng = np.random.default_rng([scene.seed, 0x5B1C])
    for nod in scene.nodules:
        if nod.kind == "ground-glass" or float(nod.radii.mean()) * 2 <= 6 or rng.random() >= p:
            continue
        r = float(nod.radii.mean())
        for _ in range(int(rng.integers(5, 13))):
            d = _rand_unit(rng)
            start, end = 0.75 * r, r * (1.0 + rng.uniform(0.5, 1.2))
            for t in np.arange(start, end, 0.4):
                f = (t - start) / (end - start)
                nod.lobes.append((d * t, 1.0 - 0.7 * f))


# ----------------------------------------------------------------------------- render


def _segments_in(segs: np.ndarray, grid: Grid, pad: float) -> np.ndarray:
    """Segments whose bounding boxes meet the grid box (padded)."""
    if len(segs) == 0:
        return segs
    r = np.maximum(segs[:, 6], segs[:, 7])[:, None] + pad
    lo = np.minimum(segs[:, 0:3], segs[:, 3:6]) - r
    hi = np.maximum(segs[:, 0:3], segs[:, 3:6]) + r
    g_lo = np.array([grid.xs.min(), grid.ys.min(), grid.zs.min()])
    g_hi = np.array([grid.xs.max(), grid.ys.max(), grid.zs.max()])
    keep = np.all((hi >= g_lo) & (lo <= g_hi), axis=1)
    return segs[keep]


def render_tubes(segs: np.ndarray, grid: Grid, grow: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """Max-combined occupancy of tapered capsules (radius*scale + grow) on the grid."""
    out = np.zeros(grid.shape, np.float32)
    h = grid.h
    for s in _segments_in(segs, grid, grow + 2 * h):
        a, b = s[0:3], s[3:6]
        ra, rb = s[6] * scale + grow, s[7] * scale + grow
        if max(ra, rb) <= 0:
            continue
        rm = max(ra, rb) + h
        sl = grid.sub(np.minimum(a, b) - rm, np.maximum(a, b) + rm)
        if sl is None:
            continue
        x, y, z = grid.subgrid(sl).axes()
        ab = b - a
        l2 = float(ab @ ab) + 1e-9
        t = np.clip(((x - a[0]) * ab[0] + (y - a[1]) * ab[1] + (z - a[2]) * ab[2]) / l2, 0, 1)
        d = np.sqrt((x - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2 + (z - a[2] - t * ab[2]) ** 2)
        r = ra + t * (rb - ra)
        occ = np.clip(0.5 + (r - d) / h, 0, 1) * min(1.0, 2 * max(ra, rb) / h)
        np.maximum(out[sl], occ.astype(np.float32), out=out[sl])
    return out


def render_nodules(scene: Scene, grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nodule occupancy, core occupancy, nodule HU and core HU maps on the grid."""
    occ = np.zeros(grid.shape, np.float32)
    core = np.zeros(grid.shape, np.float32)
    hu = np.zeros(grid.shape, np.float32)
    chu = np.zeros(grid.shape, np.float32)
    h = grid.h
    for nod in scene.nodules:
        e = nod.extent() + 2 * h
        sl = grid.sub(nod.center - e, nod.center + e)
        if sl is None:
            continue
        x, y, z = grid.subgrid(sl).axes()
        p = np.stack(np.broadcast_arrays(x, y, z), -1)
        o = soft(nod.sdf(p), h)
        np.maximum(occ[sl], o, out=occ[sl])
        hu[sl] = np.where(o > 0, nod.hu, hu[sl])
        if nod.core_frac > 0:
            c = soft(nod.core_sdf(p), h)
            np.maximum(core[sl], c, out=core[sl])
            chu[sl] = np.where(c > 0, nod.core_hu, chu[sl])
    return occ, core, hu, chu


def blend(base: np.ndarray, occ: np.ndarray, value) -> np.ndarray:
    """Paint value over base with occupancy occ (in place)."""
    base += occ * (value - base)
    return base


def _table_and_body(scene: Scene, grid: Grid, fat_hu: float) -> np.ndarray:
    """Air, the table (a curved carbon slab with foam above it) and the body's fat ellipse:
    the start of every rendered volume, classic or varied."""
    h = grid.h
    x, y, _ = grid.axes()
    shape = grid.shape
    vol = np.full(shape, -1000.0, np.float32)
    ty = scene.table_y + 0.0015 * (x - scene.cx) ** 2
    blend(vol, np.broadcast_to(soft(np.abs(y - ty - 6) - 5, h), shape), -250.0)
    blend(vol, np.broadcast_to(soft(np.abs(y - ty - 13) - 2, h), shape), 150.0)
    body = soft(ellipse_sdf(x - scene.cx, y - scene.cy, scene.body_a, scene.body_b), h)
    blend(vol, np.broadcast_to(body, shape), fat_hu)
    return vol


def render_anatomy(scene: Scene, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free, PSF-free HU volume and nodule occupancy on the grid."""
    if scene.varied is not None:
        return _render_varied(scene, grid)
    h = grid.h
    x, y, z = grid.axes()
    shape = grid.shape
    vol = _table_and_body(scene, grid, -95.0)
    inner_a, inner_b = scene.body_a - scene.fat, scene.body_b - scene.fat
    blend(vol, np.broadcast_to(soft(ellipse_sdf(x - scene.cx, y - scene.cy, inner_a, inner_b), h), shape), 45.0)
    cav = soft(ellipse_sdf(x - scene.cx, y - scene.cy, scene.cav_a + 9, scene.cav_b + 9), h)
    blend(vol, np.broadcast_to(cav, shape), -60.0)  # mediastinal fat / intercostal default
    below = soft(z - (scene.z_base + 25), 8.0)  # abdomen (liver) below the domes
    blend(vol, np.broadcast_to(cav * below, shape), 55.0)
    hc, hr = scene.heart
    heart = soft(ellipsoid_sdf(np.stack(np.broadcast_arrays(x - hc[0], y - hc[1], z - hc[2]), -1), hr), h)
    blend(vol, heart, 42.0)
    ax_, ay_, ar = scene.aorta
    aorta = soft(np.sqrt((x - ax_) ** 2 + (y - ay_) ** 2) - ar, h) * soft(z - (scene.z_apex - 40), 3.0)
    blend(vol, np.broadcast_to(aorta, shape), 45.0)
    _render_bones(scene, grid, vol)
    lung = np.zeros(shape, np.float32)
    return _render_lungs(scene, grid, vol, lung)


def _render_lungs(scene: Scene, grid: Grid, vol: np.ndarray, lung: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paints the lungs (parenchyma, texture, gravity gradient), the vessel trees, the airways
    and the nodules over `vol`, the same for classic and varied anatomy; fills `lung` with
    the lungs' occupancy. Returns the volume and the nodules' occupancy."""
    h = grid.h
    sl = grid.sub(*_lung_box(scene, 2 * h))
    if sl is not None:
        lx_, ly_, lz_ = grid.subgrid(sl).axes()
        lung[sl] = soft(scene.lung_sdf(lx_, ly_, lz_), h)
        par = scene.lung_hu + scene.texture_at(lx_, ly_, lz_) + scene.gravity * (ly_ - scene.cy) / scene.cav_b
        blend(vol[sl], lung[sl], par.astype(np.float32))
    blend(vol, render_tubes(scene.roots, grid), scene.vessel_hu)
    blend(vol, render_tubes(scene.vessels, grid) * np.clip(lung * 1.5, 0, 1), scene.vessel_hu)
    blend(vol, render_tubes(scene.airways, grid, grow=0.6, scale=1.15), 10.0)
    blend(vol, render_tubes(scene.airways, grid), -1000.0)
    occ, core, nhu, chu = render_nodules(scene, grid)
    blend(vol, occ, nhu)
    blend(vol, core, chu)
    return vol, occ


def _lung_box(scene: Scene, pad: float) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box (lo, hi) of both lungs, padded."""
    lo = np.array([min(l[0] - l[2] for l in scene.lungs), min(l[1] - l[3] for l in scene.lungs), scene.z_base])
    hi = np.array([max(l[0] + l[2] for l in scene.lungs), max(l[1] + l[3] for l in scene.lungs), scene.z_apex])
    return lo - pad, hi + pad


def _render_bones(scene: Scene, grid: Grid, vol: np.ndarray) -> None:
    """Spine (vertebral bodies, discs, canal), ribs and sternum."""
    h = grid.h
    x, y, z = grid.axes()
    sx, sy, sr = scene.spine
    rad = np.sqrt((x - sx) ** 2 + (y - sy) ** 2)
    vb = np.broadcast_to(soft(rad - sr, h), vol.shape)
    phase = np.mod(z - scene.z0, 27.0)
    disc = soft(np.abs(phase - 3.0) - 3.0, h)
    blend(vol, vb, 650.0)
    blend(vol, np.broadcast_to(soft(rad - sr + 2.0, h), vol.shape), 230.0)
    blend(vol, vb * disc, 85.0)
    post = soft(np.maximum(np.abs(x - sx) - sr * 1.1, np.abs(y - sy - sr - 9) - 8), h)
    blend(vol, np.broadcast_to(post * (1 - disc), vol.shape), 400.0)
    canal = soft(np.sqrt((x - sx) ** 2 + (y - sy - sr - 8) ** 2) - 7.5, h)
    blend(vol, np.broadcast_to(canal, vol.shape), 25.0)
    blend(vol, render_tubes(scene.ribs, grid), 600.0)
    blend(vol, render_tubes(scene.ribs, grid, grow=-2.0), 220.0)
    st_y = scene.cy - scene.cav_b - 6
    sternum = soft(np.maximum(np.abs(x - scene.cx) - 14, np.abs(y - st_y) - 5), h)
    sternum = sternum * soft(z - (scene.z_apex - 15), 3.0) * soft((scene.z_base + 20) - z, 3.0)
    blend(vol, np.broadcast_to(sternum, vol.shape), 350.0)


@dataclass
class Acquisition:
    """Scanner effects: PSF (mm, Gaussian sigma) and correlated noise (HU)."""

    psf_xy: float = 0.6
    psf_z: float = 0.8
    noise: float = 20.0
    noise_corr: float = 0.7  # voxels
    sharpen: float = 0.0  # edge enhancement of a sharp kernel: out + sharpen * (out - blur(out)); 0: off
    sharpen_mm: float = 1.0  # the in-plane Gaussian sigma (mm) of that unsharp mask


def acquire(vol: np.ndarray, grid: Grid, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """Apply PSF blur and correlated noise to a clean HU volume."""
    steps = [abs(a[1] - a[0]) if len(a) > 1 else 1.0 for a in (grid.zs, grid.ys, grid.xs)]
    sig = [acq.psf_z / steps[0], acq.psf_xy / steps[1], acq.psf_xy / steps[2]]
    out = ndimage.gaussian_filter(vol, sig, mode="nearest")
    if acq.sharpen > 0:  # a sharp kernel's edge enhancement: overshoot and undershoot at edges
        blur = ndimage.gaussian_filter(out, [0.0, acq.sharpen_mm / steps[1], acq.sharpen_mm / steps[2]], mode="nearest")
        out += acq.sharpen * (out - blur)
    n = rng.standard_normal(vol.shape, dtype=np.float32)
    if acq.noise_corr > 0:
        n = ndimage.gaussian_filter(n, [0.0, acq.noise_corr, acq.noise_corr])
        n *= 1.0 / (np.sqrt(1.0 / (4 * np.pi * acq.noise_corr**2)))
    out += acq.noise * n
    return out


def render(scene: Scene, grid: Grid, acq: Acquisition | None, rng: np.random.Generator):
    """HU volume (with scanner effects when acq is given) and nodule occupancy."""
    vol, occ = render_anatomy(scene, grid)
    if acq is not None:
        vol = acquire(vol, grid, acq, rng)
    return vol, occ


# ----------------------------------------------------------------------------- truth


def nodule_truth(nod: Nodule, step: float = 0.2) -> dict:
    """Exact-ish measurements from a fine local grid: centroid, volume, diameters, axes."""
    e = nod.extent() + step
    ax = np.arange(-e, e + step / 2, step)
    g = Grid(nod.center[0] + ax, nod.center[1] + ax, nod.center[2] + ax)
    x, y, z = g.axes()
    mask = nod.sdf(np.stack(np.broadcast_arrays(x, y, z), -1)) <= 0
    vol = float(mask.sum()) * step**3
    k, j, i = np.nonzero(mask)
    centre = [float(g.xs[i].mean()), float(g.ys[j].mean()), float(g.zs[k].mean())]
    areas = mask.sum(axis=(1, 2))
    kk = int(np.argmax(areas))
    long_ax, short_ax = _axial_axes(mask[kk], step)
    return {
        "center_patient_mm": [round(c, 3) for c in centre],
        "diameter_mm": round((6 * vol / np.pi) ** (1 / 3), 3),
        "long_axis_mm": round(long_ax, 3),
        "short_axis_mm": round(short_ax, 3),
        "volume_mm3": round(vol, 2),
        "type": nod.kind,
    }


def _axial_axes(sl: np.ndarray, step: float) -> tuple[float, float]:
    """Longest diameter on an axial section and the longest perpendicular to it."""
    edge = sl & ~ndimage.binary_erosion(sl)
    pts = np.argwhere(edge).astype(float) * step
    if len(pts) < 2:
        return step, step
    if len(pts) > 1500:
        pts = pts[:: len(pts) // 1500 + 1]
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    a, b = np.unravel_index(np.argmax(d), d.shape)
    long_ax = float(d[a, b]) + step
    u = (pts[b] - pts[a]) / (d[a, b] + 1e-9)
    perp = pts @ np.array([-u[1], u[0]])
    along = pts @ u
    # widest chord perpendicular to the long axis: group by position along the long axis
    bins = np.round(along / step).astype(int)
    width = 0.0
    for bval in np.unique(bins):
        sel = perp[bins == bval]
        width = max(width, float(sel.max() - sel.min()))
    return long_ax, width + step


# ----------------------------------------------------------------------------- DICOM


def uid(seed: int, what: str) -> str:
    """A deterministic UUID-derived UID under the 2.25 root."""
    digest = hashlib.sha256(f"pulmo-phantom/{seed}/{what}".encode()).digest()[:16]
    return "2.25." + str(uuid.UUID(bytes=digest).int)


def sample_geometry(seed: int) -> dict:
    """Random acquisition geometry for a seed."""
    rng = np.random.default_rng([seed, 0x6E0])
    matrix = int(rng.choice([256, 512], p=[0.25, 0.75]))
    slice_spacing = float(rng.choice([0.625, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5]))
    thickness = slice_spacing * float(rng.choice([1.0, 1.0, 1.25, 1.6]))
    signed = bool(rng.random() < 0.5)
    return {
        "matrix": matrix,
        "pixel_spacing_mm": None,  # fitted to the patient in make_case
        "slice_spacing_mm": slice_spacing,
        "slice_thickness_mm": round(thickness, 3),
        "patient_position": str(rng.choice(["HFS", "FFS"])),
        "pixel_representation": 1 if signed else 0,
        "rescale_intercept": float(rng.choice([0.0, -1024.0])) if signed else -1024.0,
        "noise_hu": float(rng.uniform(10, 30) * math.sqrt(1.25 / slice_spacing)),
        "psf_mm": float(rng.uniform(0.45, 0.75)),
        "fov_padding": bool(rng.random() < 0.5),
    }


def fit_pixel_spacing(seed: int, matrix: int, width: float | None = None) -> float:
    """Pixel spacing so the FOV holds the body (`width` mm wide, by default the classic scene's):
    0.55-0.95 mm for 512, coarser for 256."""
    rng = np.random.default_rng([seed, 0x9A])
    base = make_scene_body_width(seed) if width is None else width
    need = (base + 30) / matrix
    lo, hi = (0.55, 0.95) if matrix == 512 else (1.1, 1.6)
    return float(round(np.clip(rng.uniform(max(lo, need), max(hi, need + 0.05)), lo, 1.6), 4))


def make_scene_body_width(seed: int) -> float:
    """The body's full width (mm) that make_scene would draw with no FOV limit."""
    rng = np.random.default_rng([seed, 0xC7])
    return 2 * rng.uniform(135, 180)


def series_grid(scene: Scene, geo: dict) -> tuple[Grid, np.ndarray, np.ndarray]:
    """Grid in instance order, plus the row direction and slice z positions."""
    n, px, dz = geo["matrix"], geo["pixel_spacing_mm"], geo["slice_spacing_mm"]
    fov = n * px
    ffs = geo["patient_position"] == "FFS"
    row_dir = np.array([-1.0, 0, 0]) if ffs else np.array([1.0, 0, 0])
    x0 = scene.cx - row_dir[0] * (fov / 2 - px / 2)
    xs = x0 + row_dir[0] * px * np.arange(n)
    ys = (scene.cy + 0.1 * scene.body_b) - fov / 2 + px / 2 + px * np.arange(n)
    nz = int((scene.z1 - scene.z0) / dz)
    zs = scene.z0 + dz * np.arange(nz)
    if not ffs:
        zs = zs[::-1].copy()
    return Grid(xs, ys, zs), row_dir, zs


def make_case(seed: int, geo_overrides: dict | None = None, n_nodules: int | None = None,
              scene_overrides: dict | None = None, diameters_mm: tuple[float, float] = NODULE_DIAMETERS_MM,
              anatomy: str = "classic", families=None, landmarks: bool = False):
    """Scene, geometry and truth record for one seed.

    `scene_overrides` replaces scene fields after the scene is drawn (e.g. `vessel_hu` for a
    contrast-enhanced look), so the rest of the case is the same as without them; its keys
    `anatomy` and `anatomy_family` (if any) stand for the arguments `anatomy` and `families`.
    `anatomy="varied"` draws the varied anatomy and its scanner (sample_geometry_varied); its
    truth gets the key "anatomy" (landmarks), which `landmarks` adds to a classic case too.
    """
    scene_overrides = dict(scene_overrides or {})
    anatomy = scene_overrides.pop("anatomy", anatomy)
    families = scene_overrides.pop("anatomy_family", families)
    varied = anatomy == "varied"
    geo = sample_geometry_varied(seed) if varied else sample_geometry(seed)
    geo.update(geo_overrides or {})
    if geo["pixel_spacing_mm"] is None:
        geo["pixel_spacing_mm"] = fit_pixel_spacing(seed, geo["matrix"], varied_body_width(seed, families) if varied else None)
    scene = make_scene(seed, n_nodules, fov_mm=geo["matrix"] * geo["pixel_spacing_mm"], diameters_mm=diameters_mm,
                       anatomy=anatomy, families=families)
    override(scene, scene_overrides)
    if geo.get("slices_wanted"):
        _fit_slices(scene, geo, geo.pop("slices_wanted"))
    grid, _, _ = series_grid(scene, geo)
    geo["slices"] = len(grid.zs)
    case = {
        "study_instance_uid": uid(seed, "study"),
        "series_instance_uid": uid(seed, "series"),
        "seed": seed,
        "geometry": {k: v for k, v in geo.items() if k != "kernel"},
        "nodules": [dict(id=i + 1, **nodule_truth(nd)) for i, nd in enumerate(scene.nodules)],
    }
    if varied or landmarks:
        case["anatomy"] = anatomy_landmarks(scene, geo)
    return scene, geo, case


def override(scene: Scene, overrides: dict | None) -> None:
    """Changes a drawn scene: the variety options (`spiculate`, `solid_hu`, `ggo_hu`,
    `eccentric_cores`, `cavitate`; named as their command-line options) or any scene field by
    name (e.g. `vessel_hu`). The anatomy itself (`anatomy`, `anatomy_family`) is chosen when the
    scene is drawn: make_case and training_case take those keys out of their overrides first."""
    for key, value in (overrides or {}).items():
        if key in ("anatomy", "anatomy_family"):
            raise ValueError(f"{key}: the anatomy is drawn with the scene (make_scene, make_case, training_case)")
        if key == "spiculate":
            spiculate(scene, value)
        elif key == "solid_hu":
            densify(scene, value)
        elif key == "ggo_hu":
            densify(scene, value, ground_glass=True)
        elif key == "eccentric_cores":
            eccentric_cores(scene, value)
        elif key == "cavitate":
            cavitate(scene, value)
        else:
            setattr(scene, key, value)


def _fit_slices(scene: Scene, geo: dict, slices: int) -> None:
    """Slice spacing (and thickness, noise) such that the scene's z range gives `slices`."""
    dz = (scene.z1 - scene.z0) / (slices + 0.5)
    geo.update(slice_spacing_mm=dz, slice_thickness_mm=dz, noise_hu=20.0 * math.sqrt(1.25 / dz))


def render_series(scene: Scene, geo: dict, chunk: int = 48):
    """Yield (first_index, HU slab) in instance order, rendered chunk by chunk."""
    grid, _, _ = series_grid(scene, geo)
    acq = Acquisition(psf_xy=geo["psf_mm"], psf_z=geo["slice_thickness_mm"] * 0.42,
                      noise=geo["noise_hu"])
    kernel = geo.get("kernel")  # varied anatomy only: the reconstruction kernel's settings
    if kernel:
        acq.noise_corr, acq.sharpen, acq.sharpen_mm = kernel["noise_corr"], kernel["edge_enhance"], kernel["edge_enhance_mm"]
    dz = geo["slice_spacing_mm"]
    margin = int(math.ceil(3 * acq.psf_z / dz)) + 1
    nz = len(grid.zs)
    for c0 in range(0, nz, chunk):
        c1 = min(nz, c0 + chunk)
        lo, hi = max(0, c0 - margin), min(nz, c1 + margin)
        sub = Grid(grid.xs, grid.ys, grid.zs[lo:hi])
        rng = np.random.default_rng([scene.seed, 0x5E, c0])
        vol, _ = render(scene, sub, acq, rng)
        yield c0, vol[c0 - lo: c0 - lo + (c1 - c0)]


def write_series(scene: Scene, geo: dict, case: dict, out: pathlib.Path, syntax: str = "explicit") -> int:
    """Write one CT series as DICOM files; returns the number of slices."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

    out.mkdir(parents=True, exist_ok=True)
    grid, row_dir, zs = series_grid(scene, geo)
    n, px = geo["matrix"], geo["pixel_spacing_mm"]
    signed = geo["pixel_representation"] == 1
    icpt = geo["rescale_intercept"]
    fov_mask = None
    if geo.get("fov_padding"):
        yy, xx = np.mgrid[0:n, 0:n]
        fov_mask = (yy - (n - 1) / 2) ** 2 + (xx - (n - 1) / 2) ** 2 > (n / 2) ** 2
    for c0, slab in render_series(scene, geo):
        for k in range(slab.shape[0]):
            idx = c0 + k
            stored = np.rint(slab[k] - icpt)
            lo, hi = (-32768, 32767) if signed else (0, 4095)
            stored = np.clip(stored, lo, hi)
            if fov_mask is not None:
                stored[fov_mask] = -2048 - icpt if signed else 0
            arr = stored.astype(np.int16 if signed else np.uint16)
            ds = _slice_dataset(scene, geo, case, idx, arr, grid, row_dir)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CTImageStorage
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = "2.25.201600746217313404846183419391722925473"
            ds.file_meta = meta
            if syntax == "rle":
                ds.compress(RLELossless, arr, encoding_plugin="pydicom", generate_instance_uid=False)
            elif syntax == "j2k":
                ds.compress(JPEG2000Lossless, arr, encoding_plugin="pylibjpeg", generate_instance_uid=False)
            pydicom.dcmwrite(out / f"CT{idx + 1:04d}.dcm", ds, enforce_file_format=True)
    return len(zs)


def _slice_dataset(scene, geo, case, idx, arr, grid, row_dir):
    """The CT Image dataset for one slice."""
    from pydicom.dataset import Dataset
    from pydicom.uid import CTImageStorage

    seed = case["seed"]
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = uid(seed, f"sop/{idx}")
    ds.StudyInstanceUID = case["study_instance_uid"]
    ds.SeriesInstanceUID = case["series_instance_uid"]
    ds.FrameOfReferenceUID = uid(seed, "for")
    ds.PatientName = f"PHANTOM^{seed}"
    ds.PatientID = f"PHANTOM-{seed}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = f"PH{seed}"
    ds.StudyID = str(seed % 100000)
    ds.ReferringPhysicianName = ""
    ds.Modality = "CT"
    ds.Manufacturer = "pulmo phantom"
    # The name it had when the committed sample was written (kept so the sample stays byte-identical).
    ds.ManufacturerModelName = "scripts/" + "phantom.py"
    ds.StudyDescription = "CT CHEST (synthetic phantom)"
    ds.SeriesDescription = "Chest phantom"
    ds.BodyPartExamined = "CHEST"
    ds.SeriesNumber = 2
    ds.InstanceNumber = idx + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientPosition = geo["patient_position"]
    ds.ImagePositionPatient = [f"{grid.xs[0]:.4f}", f"{grid.ys[0]:.4f}", f"{grid.zs[idx]:.4f}"]
    ds.ImageOrientationPatient = [f"{row_dir[0]:.0f}", "0", "0", "0", "1", "0"]
    ds.SliceLocation = f"{grid.zs[idx]:.4f}"
    ds.PixelSpacing = [f"{geo['pixel_spacing_mm']:.4f}"] * 2
    ds.SliceThickness = f"{geo['slice_thickness_mm']:.3f}"
    ds.SpacingBetweenSlices = f"{geo['slice_spacing_mm']:.3f}"
    ds.KVP = "120"
    ds.ConvolutionKernel = geo["kernel"]["name"] if geo.get("kernel") else "STANDARD"
    ds.RescaleIntercept = f"{geo['rescale_intercept']:.0f}"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "-600"
    ds.WindowWidth = "1500"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = arr.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16 if geo["pixel_representation"] == 1 else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = geo["pixel_representation"]
    ds.PixelData = arr.tobytes()
    return ds


# ----------------------------------------------------------------------------- training volumes


def training_case(seed: int, spacing: float, rng: np.random.Generator, acq: Acquisition,
                  n_nodules: int | None = None, diameters_mm: tuple[float, float] = NODULE_DIAMETERS_MM,
                  scene_overrides: dict | None = None, anatomy: str = "classic", families=None):
    """A whole chest rendered straight at an isotropic spacing: (HU, occupancy, scene, origin).
    `anatomy`/`families` as in make_scene (or as `scene_overrides` keys `anatomy`, `anatomy_family`)."""
    scene_overrides = dict(scene_overrides or {})
    anatomy = scene_overrides.pop("anatomy", anatomy)
    families = scene_overrides.pop("anatomy_family", families)
    scene = make_scene(seed, n_nodules, diameters_mm=diameters_mm, anatomy=anatomy, families=families)
    override(scene, scene_overrides)
    lo, hi = _lung_box(scene, 20.0)  # the lungs and a margin: where patches are drawn
    xs = np.arange(lo[0], hi[0], spacing)
    ys = np.arange(lo[1], hi[1], spacing)
    zs = np.arange(lo[2], hi[2], spacing)
    grid = Grid(xs, ys, zs)
    vol, occ = render(scene, grid, acq, rng)
    return vol, occ, scene, grid


# ----------------------------------------------------------------------------- varied anatomy
#
# The classic scene draws the mediastinum, the hila and the diaphragm with little variety: one
# axis-aligned ellipsoid heart, a vertical cylinder aorta, two straight hilar trunks a side,
# simple domes. `make_scene(..., anatomy="varied")` draws them instead from named families of
# styles (ANATOMY_FAMILIES), on random streams of their own ([seed, 0xA7, ...]), so the classic
# scene of every seed is untouched. Everything is still analytic: the heart is a union of
# rotated chambers (or a superellipsoid), the great vessels and hilar vessels are Catmull-Rom
# tubes, the domes are height fields; nodules are drawn (and measured) exactly as before.

_VARIED_BASE = dict(
    body_a=(140, 175), aspect=(0.62, 0.75), fat=(6, 22), med_w=(14, 24),
    lung_lx=(0.41, 0.47), lung_ly=(0.82, 0.92), apex_above_carina=(65, 95),
    heart="chambers", heart_scale=(0.92, 1.08), heart_axial_deg=(35, 50), heart_tilt_deg=(22, 35),
    heart_shift=(0.08, 0.16), epi_fat=(2, 5), fat_pad=(8, 20), la_scale=(0.9, 1.1),
    trunk_r=(10, 14), pa_ratio=(0.72, 0.85), aorta_r=(12, 16), tortuous=(0, 4), arch_rise=(14, 24),
    vein_r=(5.5, 7.5), wander=(0.08, 0.2), axial_p=0.4, branch_deg=((15, 35), (30, 65)),
    tree_segs=(10000, 15000), tree_rmin=(0.32, 0.42), domes="normal",
)
ANATOMY_FAMILIES: dict[int, dict] = {
    0: dict(_VARIED_BASE, name="average", split="train"),
    1: dict(_VARIED_BASE, name="thin-hyperinflated", split="train", body_a=(125, 155), aspect=(0.72, 0.86),
            fat=(2, 8), med_w=(11, 18), lung_lx=(0.45, 0.5), lung_ly=(0.88, 0.95), apex_above_carina=(85, 115),
            heart_scale=(0.78, 0.92), heart_axial_deg=(20, 35), heart_tilt_deg=(35, 50), heart_shift=(0.03, 0.1),
            epi_fat=(1, 3), fat_pad=(0, 8), trunk_r=(12, 16), tree_segs=(7000, 10000), tree_rmin=(0.4, 0.5),
            domes="flat"),
    2: dict(_VARIED_BASE, name="broad-obese", split="train", body_a=(165, 205), aspect=(0.58, 0.70),
            fat=(25, 45), med_w=(20, 30), lung_lx=(0.38, 0.44), lung_ly=(0.80, 0.88), apex_above_carina=(55, 80),
            heart_scale=(1.05, 1.2), heart_axial_deg=(50, 68), heart_tilt_deg=(10, 22), heart_shift=(0.12, 0.2),
            epi_fat=(4, 9), fat_pad=(20, 40), trunk_r=(12, 15), axial_p=0.7, wander=(0.05, 0.15),
            tree_segs=(13000, 18000), tree_rmin=(0.3, 0.36), domes="high"),
    3: dict(_VARIED_BASE, name="elderly-tortuous", split="train", body_a=(140, 180), heart_scale=(1.0, 1.15),
            heart_axial_deg=(40, 58), aorta_r=(15, 19), tortuous=(8, 18), arch_rise=(22, 34),
            wander=(0.2, 0.35), axial_p=0.6, branch_deg=((20, 45), (35, 80)), domes="lobulated"),
    4: dict(_VARIED_BASE, name="cardiomegaly-pah", split="heldout", heart="superellipsoid",
            heart_scale=(1.2, 1.4), heart_axial_deg=(45, 65), heart_tilt_deg=(15, 30), heart_shift=(0.12, 0.22),
            la_scale=(1.2, 1.5), trunk_r=(15, 18.5), pa_ratio=(0.8, 0.9), vein_r=(7.5, 10), epi_fat=(3, 7),
            fat_pad=(10, 25), domes="asymmetric"),
    5: dict(_VARIED_BASE, name="eventration", split="heldout", body_a=(130, 165), fat=(3, 14),
            heart_shift=(0.15, 0.24), heart_axial_deg=(40, 55), apex_above_carina=(70, 100), wander=(0.1, 0.25),
            domes="eventration"),
}
TRAIN_FAMILIES = tuple(k for k, f in ANATOMY_FAMILIES.items() if f["split"] == "train")
HELDOUT_FAMILIES = tuple(k for k, f in ANATOMY_FAMILIES.items() if f["split"] == "heldout")
ANATOMY_SCHEMA = "pulmo.anatomy/1"


def checked_anatomy_options(ap, args) -> tuple[int, ...]:
    """For the training scripts' `--varied-anatomy P --families SPEC`: the families, with P
    checked; a bad value is an argparse error that names the option."""
    try:
        families = parse_families(args.families)
    except ValueError as e:
        ap.error(f"--families: {e}")
    if not 0 <= args.varied_anatomy <= 1:
        ap.error(f"--varied-anatomy {args.varied_anatomy}: a probability, needs 0 <= P <= 1")
    return families


def parse_families(spec) -> tuple[int, ...]:
    """Family ids from 'all', 'train', 'heldout', or a comma list of ids or names (e.g. '0,2,broad-obese')."""
    if spec is None:
        return tuple(ANATOMY_FAMILIES)
    if isinstance(spec, int):
        spec = str(spec)
    if not isinstance(spec, str):
        return tuple(int(f) for f in spec)
    spec = spec.strip().lower()
    if spec == "all":
        return tuple(ANATOMY_FAMILIES)
    if spec in ("train", "training"):
        return TRAIN_FAMILIES
    if spec in ("heldout", "held-out", "test"):
        return HELDOUT_FAMILIES
    names = {f["name"]: k for k, f in ANATOMY_FAMILIES.items()}
    out = []
    for part in spec.split(","):
        part = part.strip()
        if part.isdigit() and int(part) in ANATOMY_FAMILIES:
            out.append(int(part))
        elif part in names:
            out.append(names[part])
        else:
            raise ValueError(f"unknown anatomy family {part!r} (ids {sorted(ANATOMY_FAMILIES)}, names "
                             f"{sorted(names)}, or all / train / heldout)")
    return tuple(dict.fromkeys(out))


def _varied_habitus(seed: int, families) -> tuple[np.random.Generator, int, dict, tuple]:
    """The varied mode's stream, its family and body size: its first draws (so the FOV can be fitted)."""
    vrng = np.random.default_rng([seed, 0xA7])
    fams = parse_families(families)
    fam = int(fams[int(vrng.integers(len(fams)))])
    F = ANATOMY_FAMILIES[fam]
    body_a = vrng.uniform(*F["body_a"])
    aspect = vrng.uniform(*F["aspect"])
    fat = vrng.uniform(*F["fat"])
    return vrng, fam, F, (body_a, aspect, fat)


def varied_body_width(seed: int, families=None) -> float:
    """The body's full width (mm) of the varied scene of a seed, with no FOV limit."""
    return 2 * _varied_habitus(seed, families)[3][0]


def _frame(axial_deg: float, tilt_deg: float, roll_deg: float) -> np.ndarray:
    """Rotation whose columns are the heart's axes: u (base to apex: anterior, leftward, down),
    w (across it, to the right and anterior), v (about up)."""
    a, t = math.radians(axial_deg), math.radians(tilt_deg)
    u = np.array([math.sin(a) * math.cos(t), -math.cos(a) * math.cos(t), -math.sin(t)])
    w = np.array([u[1], -u[0], 0.0])
    w /= np.linalg.norm(w)
    v = np.cross(w, u)
    r = math.radians(roll_deg)
    w, v = w * math.cos(r) + v * math.sin(r), -w * math.sin(r) + v * math.cos(r)
    return np.column_stack([u, w, v])


def _chamber(name, center, axes, radii, n=2.0) -> dict:
    return {"name": name, "center": np.asarray(center, float), "axes": np.asarray(axes, float),
            "radii": np.asarray(radii, float), "n": float(n)}


def _chamber_extent(ch: dict) -> np.ndarray:
    """Half extent of a chamber along x, y, z (exact for an ellipsoid, a bound for a superellipsoid)."""
    e = np.sqrt(((ch["axes"] * ch["radii"][None, :]) ** 2).sum(1))
    return e if ch["n"] <= 2 else np.minimum(np.abs(ch["axes"]) @ ch["radii"], e * 1.3)


def _chamber_sdf(ch: dict, p: np.ndarray) -> np.ndarray:
    """Approximate signed distance to an ellipsoid (n = 2) or superellipsoid chamber at p[..., 3]."""
    q = (p - ch["center"]) @ ch["axes"]
    if ch["n"] == 2.0:
        return ellipsoid_sdf(q, ch["radii"])
    n, r = ch["n"], ch["radii"]
    a = np.abs(q) / r + 1e-9
    f = (a ** n).sum(-1) ** (1 / n)
    g = np.sqrt((((a ** (n - 1)) / r) ** 2).sum(-1)) * f ** (1 - n) + 1e-9
    return (f - 1.0) / g


def _spline(ctrl, radii, step: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """Catmull-Rom curve through control points, sampled about every `step` mm; radii linear per span."""
    P = np.asarray(ctrl, float)
    R = np.asarray(radii, float)
    ext = np.vstack([2 * P[0] - P[1], P, 2 * P[-1] - P[-2]])
    pts, rad = [], []
    for i in range(len(P) - 1):
        p0, p1, p2, p3 = ext[i], ext[i + 1], ext[i + 2], ext[i + 3]
        n = max(2, int(math.ceil(np.linalg.norm(p2 - p1) / step)))
        for t in np.arange(n) / n:
            t2, t3 = t * t, t * t * t
            pts.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                              + (-p0 + 3 * p1 - 3 * p2 + p3) * t3))
            rad.append(R[i] + (R[i + 1] - R[i]) * t)
    pts.append(P[-1])
    rad.append(R[-1])
    return np.array(pts), np.array(rad)


def _tube_segs(pts, rad) -> np.ndarray:
    pts, rad = np.asarray(pts, float), np.asarray(rad, float)
    return np.column_stack([pts[:-1], pts[1:], rad[:-1], rad[1:]]).reshape(-1, 8)


def _is_grid(x, y, z) -> bool:
    return (x.ndim == 3 and y.ndim == 3 and z.ndim == 3 and x.shape[:2] == (1, 1) and y.shape[0] == 1
            and y.shape[2] == 1 and z.shape[1:] == (1, 1))


def _carve(d: np.ndarray, x, y, z, lo, hi, fn, grid: bool) -> None:
    """d = max(d, -fn(x, y, z)) in place, evaluating fn (an exclusion's signed distance) only in
    the box lo..hi; outside it the exclusion is taken to be too far away to matter."""
    if grid:
        idx = []
        for a, l, h_ in ((z[:, 0, 0], lo[2], hi[2]), (y[0, :, 0], lo[1], hi[1]), (x[0, 0, :], lo[0], hi[0])):
            nz = np.nonzero((a >= l) & (a <= h_))[0]
            if nz.size == 0:
                return
            idx.append(slice(int(nz[0]), int(nz[-1]) + 1))
        k, j, i = idx
        sub = fn(x[:, :, i], y[:, j, :], z[k])
        np.maximum(d[k, j, i], -sub, out=d[k, j, i])
    else:
        m = ((x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1]) & (z >= lo[2]) & (z <= hi[2]))
        if m.any():
            d[m] = np.maximum(d[m], -fn(x[m], y[m], z[m]))


_CAP = 22.0  # mm: exclusions farther than this from a point do not change its lung field


def _seg_field(segs: np.ndarray, grow: float):
    """fn(x, y, z): distance to the union of tapered capsules, minus radius and `grow`."""
    def fn(x, y, z):
        out = None
        for s in segs:
            a, ab = s[0:3], s[3:6] - s[0:3]
            l2 = float(ab @ ab) + 1e-9
            t = np.clip(((x - a[0]) * ab[0] + (y - a[1]) * ab[1] + (z - a[2]) * ab[2]) / l2, 0, 1)
            dd = np.sqrt((x - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2 + (z - a[2] - t * ab[2]) ** 2)
            dd = dd - (s[6] + t * (s[7] - s[6])) - grow
            out = dd if out is None else np.minimum(out, dd)
        return out
    return fn


def _seg_field_points(P: np.ndarray, segs: np.ndarray, grow: float) -> np.ndarray:
    """_seg_field at a list of points P[n, 3], vectorised over the segments (in chunks of points)."""
    a, b = segs[:, 0:3], segs[:, 3:6]
    ab = b - a
    l2 = (ab * ab).sum(1) + 1e-9
    out = np.empty(len(P))
    for i in range(0, len(P), 4096):
        q = P[i:i + 4096, None, :] - a[None]
        t = np.clip((q * ab[None]).sum(-1) / l2, 0, 1)
        dd = np.sqrt(((q - t[..., None] * ab[None]) ** 2).sum(-1)) - (segs[:, 6] + t * (segs[:, 7] - segs[:, 6])) - grow
        out[i:i + 4096] = dd.min(1)
    return out


def _dome(L: dict, lung: tuple, x, y, grad: bool = True):
    """A lung's floor height z(x, y) (the dome with its posterior recess and lobulations) and,
    with `grad`, the length of its slope (for a first-order distance)."""
    lcx, lcy, lx, ly, _ = lung
    u = (x - lcx - L["ax"] * lx) / lx
    v = (y - lcy - L["ay"] * ly) / ly
    rr = u * u + v * v
    base = np.clip(1.0 - rr, 0.0, 1.0)
    p, h = L["p"], L["h"]
    floor = L["base"] + h * base ** p
    post = np.clip((y - lcy) / ly, 0.0, 1.0)
    floor = floor - L["recess"] * post ** 2
    for bx, by, amp, w in L["bumps"]:
        floor = floor + amp * base * np.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * w * w))
    if "tendon" in L:  # the central tendon under the heart: no lung below the heart
        zc, hx, hy, hax, hay = L["tendon"]
        q = np.sqrt(((x - hx) / hax) ** 2 + ((y - hy) / hay) ** 2)
        floor = np.maximum(floor, zc - 6.0 * np.minimum(q, 1.0) ** 2 - 60.0 * np.maximum(q - 1.0, 0.0))
    if not grad:
        return floor, None
    dfdr = np.where(base > 1e-3, -p * h * np.clip(base, 1e-3, 1.0) ** (p - 1), 0.0)
    gx = dfdr * 2 * u / lx
    gy = dfdr * 2 * v / ly - L["recess"] * 2 * post / ly
    return floor, np.sqrt(1.0 + np.minimum(gx * gx + gy * gy, 15.0))


def _diaphragm_z(scene: Scene, x, y):
    """Height of the diaphragm (the top of the abdomen) at x, y: the higher of both lungs'
    floors and the central tendon under the heart."""
    V = scene.varied
    zd = None
    for L, lung in zip(V["lungs"], scene.lungs):
        f, _ = _dome(L, lung, x, y, grad=False)
        zd = f if zd is None else np.maximum(zd, f)
    return zd


def _varied_lung_sdf(scene: Scene, x, y, z, carve_tubes: bool = True):
    """The varied anatomy's lung field (negative inside): both lungs with their own domes and
    apices, carved by the chest wall, the mediastinum, the heart with its fat, the spine and
    the central vessels (each only where it is near)."""
    V = scene.varied
    x, y, z = (np.asarray(v, float) for v in (x, y, z))
    scalar = x.ndim == 0 and y.ndim == 0 and z.ndim == 0
    grid = _is_grid(x, y, z)
    if not grid:
        x, y, z = (np.atleast_1d(a) for a in np.broadcast_arrays(x, y, z))
    d = None
    for L, lung in zip(V["lungs"], scene.lungs):
        lcx, lcy, lx, ly, _ = lung
        t = (z - scene.z_base) / (L["apex"] - scene.z_base)
        s = np.sqrt(np.clip(1.0 - np.clip((t - L["t0"]) / L["tw"], 0, None) ** 2, 1e-4, None))
        s = s * (1.0 + L["flare"] * (0.5 - np.clip(t, 0, 1)))
        e = ellipse_sdf(x - lcx, y - lcy, lx * s, ly * s)
        floor, slope = _dome(L, lung, x, y)
        e = np.maximum(e, (floor - z) / slope)
        e = np.maximum(e, z - L["apex"])
        d = e if d is None else np.minimum(d, e)
    d = np.maximum(d, ellipse_sdf(x - scene.cx, y - scene.cy, scene.cav_a, scene.cav_b) + 3.0)
    mx, mw = V["mediastinum"]
    d = np.maximum(d, -ellipse_sdf(x - mx, y - scene.cy, mw, scene.cav_b * 1.2))
    sx, sy, sr = scene.spine
    d = np.maximum(d, -(np.sqrt((x - sx) ** 2 + (y - sy) ** 2) - sr - 10.0))
    d = np.array(np.broadcast_to(d, np.broadcast_shapes(x.shape, y.shape, z.shape)), float)
    grow = V["epi_fat"] + 1.5 + 2.0
    for ch in V["chambers"]:
        e = _chamber_extent(ch) + grow + _CAP
        fn = (lambda c: lambda a, b, cc: _chamber_sdf(c, np.stack(np.broadcast_arrays(a, b, cc), -1)) - grow)(ch)
        _carve(d, x, y, z, ch["center"] - e, ch["center"] + e, fn, grid)
    for c, r in V["pads"]:
        e = r + _CAP
        fn = (lambda c, r: lambda a, b, cc: ellipsoid_sdf(np.stack(np.broadcast_arrays(a - c[0], b - c[1], cc - c[2]), -1), r) - 1.0)(c, r)
        _carve(d, x, y, z, c - e, c + e, fn, grid)
    segs = V["central"] if carve_tubes else np.zeros((0, 8))
    if len(segs):
        m = V["carve_margin"]
        if grid:
            for s in segs:
                rm = max(s[6], s[7]) + m + _CAP
                _carve(d, x, y, z, np.minimum(s[0:3], s[3:6]) - rm, np.maximum(s[0:3], s[3:6]) + rm,
                       _seg_field(s[None], m), grid)
        else:
            lo = np.minimum(segs[:, 0:3], segs[:, 3:6]).min(0) - 40 - _CAP
            hi = np.maximum(segs[:, 0:3], segs[:, 3:6]).max(0) + 40 + _CAP
            _carve(d, x, y, z, lo, hi, lambda a, b, c: _seg_field_points(np.stack([a, b, c], -1), segs, m), grid)
    return float(d.reshape(-1)[0]) if scalar else d


def _walk_in(scene: Scene, p, side: int, margin: float, carve: bool = False, step: float = 2.0):
    """Move p along x (to the patient's left for side +1) until it lies `margin` mm inside a
    lung, without leaving the thoracic cavity; where that finds no lung, from p moved posteriorly,
    up or down a little (the first that does)."""
    for off in ((0, 0, 0), (0, 8, 0), (0, 0, 8), (0, 8, 8), (0, 16, 0), (0, 0, -8), (0, 16, 8), (0, -8, 0),
                (0, 8, -8), (0, 24, 0), (0, 0, 16), (0, 24, 16)):
        q = np.array(p, float) + off
        while ((q[0] - scene.cx) / scene.cav_a) ** 2 + ((q[1] - scene.cy) / scene.cav_b) ** 2 < 0.9:
            if _varied_lung_sdf(scene, *q, carve_tubes=carve) < -margin:
                return q
            q[0] += side * step
    return _lung_point(scene, np.random.default_rng(0), margin, side=side)


def _side_point(scene: Scene, rng, side: int, margin: float, zlo=-np.inf, zhi=np.inf, ylo=-np.inf, yhi=np.inf,
                tries: int = 300):
    """A random lung point on one side (-1 right, +1 left) within the given z / y limits."""
    lcx, lcy, lx, ly, _ = scene.lungs[(side + 1) // 2]
    zlo, zhi = max(zlo, scene.z_base), min(zhi, scene.z_apex)
    ylo, yhi = max(ylo, lcy - ly), min(yhi, lcy + ly)
    if zlo < zhi and ylo < yhi:
        for _ in range(tries):
            p = np.array([lcx + rng.uniform(-lx, lx), rng.uniform(ylo, yhi), rng.uniform(zlo, zhi)])
            if scene.lung_sdf(*p) < -margin:
                return p
    return _lung_point(scene, rng, margin, side=side)


def _lung_path(scene: Scene, rng, start, target, r0: float, r1: float, wander: float, axial: bool,
               max_len: float, step: float = 4.0):
    """A curving, tapering vessel from `start` towards `target`, through the lung: it wanders
    (a slowly turning random bias), and with `axial` keeps in the axial plane; it stops near the
    target, at `max_len`, or before it would leave the lung."""
    pts = [np.asarray(start, float)]
    to = target - pts[0]
    d = to / (np.linalg.norm(to) + 1e-9)
    if axial:
        d[2] *= 0.15
        d /= np.linalg.norm(d) + 1e-9
    w = np.zeros(3)
    length = 0.0
    while length < max_len:
        to = target - pts[-1]
        dist = float(np.linalg.norm(to))
        if dist < 10.0:
            break
        w = 0.75 * w + rng.normal(0.0, wander, 3)
        nd = 0.65 * d + 0.35 * to / dist + w
        if axial:
            nd[2] *= 0.15
        nd /= np.linalg.norm(nd) + 1e-9
        r = r0 + (r1 - r0) * min(1.0, length / max_len)
        p = pts[-1] + nd * step
        if length >= 16.0 and scene.lung_sdf(*p) > -0.7 * r:  # about to leave the lung: steer, or stop
            for alt in (0.5 * nd + 0.5 * to / dist, to / dist):
                alt = alt / (np.linalg.norm(alt) + 1e-9)
                if scene.lung_sdf(*(pts[-1] + alt * step)) < -0.7 * r:
                    nd, p = alt, pts[-1] + alt * step
                    break
            else:
                break
        pts.append(p)
        d = nd
        length += step
    pts = np.array(pts)
    rad = r0 + (r1 - r0) * np.clip(np.arange(len(pts)) * step / max_len, 0, 1)
    return pts, rad


def _make_varied_scene(seed: int, n_nodules, fov_mm, diameters_mm, families) -> Scene:
    """The varied anatomy of a seed (see ANATOMY_FAMILIES); nodules as in the classic scene."""
    rng, fam, F, (body_a, aspect, fat) = _varied_habitus(seed, families)
    U = rng.uniform
    if fov_mm is not None:
        body_a = min(body_a, fov_mm / 2 - 8)
    body_b = body_a * aspect
    muscle = U(5, 15)
    cav_a = body_a - fat - muscle - 9
    cav_b = body_b - fat - muscle - 9
    cx, cy = U(-8, 8), U(-10, 10)
    sr = U(14, 21)
    spine = (cx, cy + cav_b - sr * 0.5, sr)
    # lungs (footprints) and domes
    z0 = U(-400, -50)
    z_base = z0 + U(25, 55)
    lungs, Ls = [], []
    dome_style = F["domes"]
    high_side = int(rng.choice([-1, 1], p=[0.35, 0.65]))  # an eventrated / high dome: more often the left
    for side in (-1, 1):
        lx = cav_a * U(*F["lung_lx"])
        lcx = cx + side * cav_a * U(0.49, 0.56)
        ly = cav_b * U(*F["lung_ly"])
        lcy = cy + cav_b * U(0.0, 0.1)
        L = {"side": side, "ax": U(-0.2, 0.15) * -side, "ay": U(-0.35, 0.05), "p": U(0.8, 1.4),
             "recess": U(8, 20), "bumps": [], "t0": U(0.40, 0.55), "flare": U(0.0, 0.12)}
        L["tw"] = U(1.0, 1.05) - L["t0"]
        h = U(35, 60) if side < 0 else U(25, 45)
        lift = U(0, 12)
        if dome_style == "flat":
            h, L["p"], L["recess"], lift = U(6, 20), U(0.45, 0.8), U(15, 30), U(0, 5)
        elif dome_style == "high":
            h, lift = U(50, 75), U(10, 25)
        elif dome_style == "asymmetric" and side == high_side:
            h, lift = U(55, 75), U(15, 35)
        elif dome_style == "eventration" and side == high_side:
            h, L["p"], lift = U(70, 100), U(0.55, 0.9), U(20, 40)
        if dome_style == "lobulated" or (dome_style == "eventration" and side != high_side) or \
                (dome_style in ("normal", "asymmetric") and rng.random() < 0.15):
            for _ in range(int(rng.integers(2, 5))):
                ang, rad = U(0, 2 * np.pi), U(0.1, 0.65)
                L["bumps"].append((lcx + rad * lx * math.cos(ang), lcy + rad * ly * math.sin(ang), U(5, 14), U(9, 20)))
        L["h"] = h
        L["base"] = z_base + L["recess"] + lift
        lungs.append((lcx, lcy, lx, ly, h))
        Ls.append(L)
    dome_tops = []
    for L, lung in zip(Ls, lungs):
        lcx, lcy, lx, ly, _ = lung
        xs_ = lcx + np.linspace(-lx, lx, 41)[None, :]
        ys_ = lcy + np.linspace(-ly, ly, 41)[:, None]
        f, _ = _dome(L, lung, xs_, ys_, grad=False)
        j, i = np.unravel_index(np.argmax(f), f.shape)
        dome_tops.append(np.array([float(xs_[0, i]), float(ys_[j, 0]), float(f[j, i])]))
    z_c = min(t[2] for t in dome_tops) - U(5, 15)
    # heart: chambers in its own frame, sitting on the central tendon, behind the sternum
    S = float(np.clip(0.46 * cav_a * U(*F["heart_scale"]), 40, 90))
    R = _frame(U(*F["heart_axial_deg"]), U(*F["heart_tilt_deg"]), U(-15, 15))
    la_s = U(*F["la_scale"])
    shift = U(*F["heart_shift"]) * cav_a
    gap = U(3, 18)
    epi = U(*F["epi_fat"])
    la_off = np.array([U(-0.1, 0.05), U(0.72, 0.86), U(0.42, 0.58)])
    ar_off, rvot_off = np.array([-0.15, 0.32, 0.55]), np.array([0.16, -0.22, 0.62])
    style = F["heart"]
    for _ in range(12):
        def local(off):
            return R @ (np.asarray(off) * S)
        if style == "chambers":
            chs = [("LV", (0.18, -0.12, -0.02), (0.68, 0.42, 0.44)), ("RV", (0.05, 0.30, -0.12), (0.62, 0.30, 0.40)),
                   ("RA", (-0.40, 0.42, 0.05), (0.36, 0.34, 0.42))]
            parts = [_chamber(n, local(o), R, np.array(r) * S) for n, o, r in chs]
        else:
            parts = [_chamber("ventricles", local((0.05, 0.05, -0.05)), R, np.array([0.8, 0.6, 0.56]) * S,
                              n=U(2.2, 3.0)),
                     _chamber("RA", local((-0.42, 0.45, 0.05)), R, np.array([0.38, 0.36, 0.44]) * S)]
        parts.append(_chamber("LA", la_off * S, np.eye(3), np.array([0.55, 0.32, 0.36]) * S * la_s))
        lo = np.min([p["center"] - _chamber_extent(p) for p in parts], 0)
        hi = np.max([p["center"] + _chamber_extent(p) for p in parts], 0)
        hc = np.array([cx + shift, cy - cav_b + gap - lo[1], z_c + U(0, 3) - lo[2]])
        for p in parts:
            p["center"] = p["center"] + hc
        la = parts[-1]
        post_limit = spine[1] - sr - 9
        over = la["center"][1] + _chamber_extent(la)[1] - post_limit
        if over > 0:
            la["center"][1] -= over
        # inside the cavity, with room for the pericardial fat?
        ok = True
        for p in parts:
            for sgn in (-1, 1):
                for ax_ in range(2):
                    q = p["center"].copy()
                    q[ax_] += sgn * (_chamber_extent(p)[ax_] + epi + 2)
                    if ((q[0] - cx) / cav_a) ** 2 + ((q[1] - cy) / cav_b) ** 2 > 0.97:
                        ok = False
        if ok:
            break
        S *= 0.94
        shift *= 0.9
    chambers = parts
    la = chambers[-1]
    la_top = la["center"][2] + la["radii"][2]
    aortic_root = hc + ar_off * S
    rvot = hc + rvot_off * S
    foot = (z_c, hc[0], hc[1], max(-lo[0], hi[0]) + epi + 2, max(-lo[1], hi[1]) + epi + 2)
    for L in Ls:
        L["tendon"] = foot
    # fat pads at the cardiophrenic angles, on the diaphragm
    pads = []
    pad_r = U(*F["fat_pad"])
    if pad_r > 3:
        for side, scale in ((1, 1.0), (-1, U(0.4, 0.9))):
            r = pad_r * scale
            ext_x = hi[0] + hc[0] if side > 0 else lo[0] + hc[0]
            rad = np.array([r, r * U(0.7, 1.0), r * U(0.5, 0.8)])
            c = np.array([ext_x - side * r * 0.5, cy - cav_b + gap + r * U(0.7, 1.2), 0.0])
            c[2] = max(float(_dome(L, lung, c[0], c[1], grad=False)[0]) for L, lung in zip(Ls, lungs)) + rad[2] * 0.3
            pads.append((c, rad))
    # the vertical chain: pulmonary bifurcation over the left atrium, carina, apices
    trunk_r = U(*F["trunk_r"])
    rpa_r, lpa_r = trunk_r * U(*F["pa_ratio"]), trunk_r * U(*F["pa_ratio"]) * U(0.9, 1.0)
    bif_z = la_top + rpa_r + U(2, 8)
    z_car = bif_z + U(8, 20)
    z_apex = z_car + U(*F["apex_above_carina"])
    z1 = z_apex + U(8, 25)
    for L in Ls:
        L["apex"] = z_apex - U(0, 10)
    carina = np.array([cx + U(-3, 3), cy + cav_b * U(0.12, 0.28), z_car])
    bif = np.array([cx + U(10, 22), carina[1] - U(18, 30), bif_z])
    tex = np.column_stack([rng.normal(0, 0.12, (10, 3)), rng.uniform(0, 2 * np.pi, 10), rng.uniform(3, 9, 10)])
    contrast = rng.random() < 0.15
    vessel_hu = U(150, 320) if contrast else U(30, 55)
    scene = Scene(
        seed=seed, cx=cx, cy=cy, body_a=body_a, body_b=body_b, fat=fat, muscle=muscle, cav_a=cav_a, cav_b=cav_b,
        z0=z0, z1=z1, z_base=z_base, z_apex=z_apex, lungs=lungs,
        heart=(hc, np.maximum(np.abs(lo), np.abs(hi))), aorta=(0.0, 0.0, 0.0), spine=spine,
        table_y=cy + body_b + U(2, 12), lung_hu=U(-900, -800), gravity=U(15, 80), texture=tex,
        vessels=np.zeros((0, 8)), roots=np.zeros((0, 8)), airways=np.zeros((0, 8)), ribs=np.zeros((0, 8)),
        vessel_hu=vessel_hu)
    scene.varied = V = {
        "family": fam, "lungs": Ls, "dome_tops": dome_tops, "z_c": z_c, "heart_center": hc, "heart_frame": R,
        "heart_style": style, "chambers": chambers, "epi_fat": epi, "pads": pads,
        "mediastinum": (cx + U(-4, 6), U(*F["med_w"])), "central": np.zeros((0, 8)), "carve_margin": U(1.5, 3.5),
        "carina": carina, "bifurcation": bif, "paths": [], "hilum": {},
        "fat_hu": U(-115, -85), "med_fat_hu": U(-100, -50), "liver_hu": U(10, 40) if rng.random() < 0.15 else U(45, 70),
        "heart_hu": vessel_hu if contrast else U(30, 50), "contrast": bool(contrast),
        "liver_edge": U(-0.05, 0.2) * cav_a, "gastric_air": bool(rng.random() < 0.6),
    }
    # airways first: the left main bronchus runs under the left pulmonary artery
    b_r = U(7.5, 10)
    airways = [[carina[0] + U(-3, 3), carina[1] + U(-5, 3), z1 + 5, *carina, b_r, b_r * 0.95]]
    bronchi = {}
    for side, dz, dx in ((-1, U(15, 25), 10), (1, U(25, 38), 20)):
        bronchi[side] = _walk_in(scene, carina + np.array([side * dx, U(3, 8), -dz]), side, 4.0)
        airways.append([*carina, *bronchi[side], U(6, 7.5), U(5, 6)])
    # great vessels
    paths = V["paths"]
    central, painted = [], []

    def add(name, ctrl, radii, kind="central"):
        pts, rad = _spline(ctrl, radii)
        paths.append((name, kind, pts, rad))
        if kind == "central":
            central.append(_tube_segs(*_spline(ctrl, radii, step=10.0)))  # coarser: only carves the lungs
            painted.append(_tube_segs(pts, rad))
        return pts, rad

    ao_r = U(*F["aorta_r"])
    tort = U(*F["tortuous"])
    rd = ao_r * U(0.78, 0.9)
    xd = cx + sr * 0.55 + rd * 0.9 + U(0, 6)
    yd = spine[1] - sr * 0.55 - rd * 0.5 + U(-4, 4)
    dist = math.hypot(xd - spine[0], yd - spine[1])
    if dist < sr + rd + 3:
        xd = spine[0] + math.sqrt(max((sr + rd + 3) ** 2 - (yd - spine[1]) ** 2, 0)) + 1
    y_rpa = carina[1] - rpa_r - U(5, 9)
    ya = y_rpa - rpa_r - ao_r - U(2, 6)
    xa = cx + U(-10, 2)
    top_a = np.array([xa, ya, z_car + U(0, 8)])
    top_d = np.array([xd, yd, z_car + U(0, 8)])
    rise = U(*F["arch_rise"])
    mid = (top_a + top_d) / 2
    arch = [mid + (top_a - mid) * math.cos(t) + np.array([0, 0, rise]) * math.sin(t) for t in np.linspace(0, np.pi, 9)]
    asc_mid = (aortic_root + top_a) / 2 + np.array([-U(0, 3 + tort / 2), U(-6, 0), 0])
    zs_d = np.arange(top_d[2], z0 - 30, -35.0)
    ph = U(0, 2 * np.pi)
    desc = []
    for zz in zs_d[1:]:
        f = (top_d[2] - zz) / (top_d[2] - z0 + 30)
        xx = xd + tort * math.sin(ph + zz / 45.0) - f * (xd - cx - 6) * 0.5
        yy = yd - f * U(0, 12)
        q = math.hypot(xx - spine[0], yy - spine[1])
        if q < sr + rd + 2:
            xx = spine[0] + math.sqrt(max((sr + rd + 2) ** 2 - (yy - spine[1]) ** 2, 0)) + 1
        desc.append([xx, yy, zz])
    add("ascending aorta", [aortic_root, asc_mid, top_a], [ao_r * 0.95, ao_r, ao_r])
    add("aortic arch", arch, [ao_r] * 4 + [ao_r * 0.95] * 5)
    add("descending aorta", [top_d] + desc, [rd] * (1 + len(desc)))
    for t, dx, r in ((0.25, -U(10, 20), U(5, 7)), (0.45, U(-4, 4), U(3.5, 5)), (0.62, U(6, 14), U(4, 6))):
        k = int(round(t * 8))
        p0 = arch[k] + np.array([0, 0, ao_r * 0.6])
        add("arch branch", [p0, p0 + np.array([dx * 0.5, U(-5, 5), 30]), p0 + np.array([dx, U(-8, 8), z1 + 10 - p0[2]])],
            [r, r, r * 0.9])
    # pulmonary trunk and main arteries
    add("pulmonary trunk", [rvot, (rvot + bif) / 2 + np.array([U(0, 6), -U(4, 10), U(0, 6)]), bif],
        [trunk_r * 0.95, trunk_r, trunk_r * 0.92])
    h_r = _walk_in(scene, np.array([xa - ao_r, y_rpa + U(-4, 4), bif_z - U(0, 8)]), -1, rpa_r * 0.5)
    add("right pulmonary artery", [bif, np.array([xa, y_rpa, bif_z - U(0, 5)]), h_r], [rpa_r, rpa_r, rpa_r * 0.9])
    bl = bronchi[1]
    l1x = bif[0] + U(8, 16)
    f = np.clip((l1x - carina[0]) / max(bl[0] - carina[0], 1.0), 0, 1)
    bz = carina[2] + f * (bl[2] - carina[2])
    l1 = np.array([l1x, bif[1] + U(12, 22), max(bif_z + U(8, 14), bz + 7 + lpa_r + 2)])
    h_l = _walk_in(scene, np.array([l1[0], l1[1] + U(0, 10), l1[2] - U(0, 6)]), 1, lpa_r * 0.5)
    add("left pulmonary artery", [bif, l1, h_l], [lpa_r, lpa_r, lpa_r * 0.9])
    ra = chambers[-2] if style == "chambers" else chambers[1]
    svc_r = U(8, 11)
    svc_x = min(xa - ao_r - svc_r - 2, ra["center"][0])
    add("superior vena cava", [[svc_x, ya + U(0, 8), z_apex - 5], [svc_x, ya + U(0, 8), z_car - 10],
                               ra["center"] + np.array([0, 0, ra["radii"][2] * 0.5])], [svc_r] * 3)
    # pulmonary veins into the left atrium
    vein_r = U(*F["vein_r"])
    veins = {}
    for side in (-1, 1):
        for which, dz in (("superior", 1), ("inferior", -1)):
            st = la["center"] + np.array([side * la["radii"][0] * 0.7, U(-5, 5), dz * la["radii"][2] * 0.45])
            if which == "superior":
                q = np.array([st[0], la["center"][1] - U(10, 25), st[2] + U(5, 20)])
            else:
                q = np.array([st[0], la["center"][1] + U(0, 15), st[2] - U(0, 10)])
            ent = _walk_in(scene, q, side, vein_r * 0.6)
            add(f"{'right' if side < 0 else 'left'} {which} pulmonary vein", [st, (st + ent) / 2, ent],
                [vein_r * 1.1, vein_r, vein_r * 0.95])
            veins[(side, which)] = ent
    V["central"] = np.vstack(central)
    V["central_painted"] = np.vstack(painted)
    V["hilum"] = {"right": h_r, "left": h_l}
    # lobar arteries and veins inside the lungs: curving, tapering, some in the axial plane
    wander = U(*F["wander"])
    ang_first, ang_other = F["branch_deg"]
    roots, hilar = [], []

    def lobar(name, side, start, target, r0, axial_ok, hil):
        if target is None:
            target = start + np.array([side * 40.0, 0.0, 0.0])
        axial = axial_ok and rng.random() < F["axial_p"] or rng.random() < 0.1
        pts, rad = _lung_path(scene, rng, start, target, r0, r0 * U(0.6, 0.8), wander, axial, U(30, 75))
        paths.append((name, "hilar", pts, rad))
        hilar.append(_tube_segs(pts, rad))
        for i in range(int(rng.integers(1, 3)), len(pts) - 1, int(rng.integers(2, 4))):
            dd = pts[i + 1] - pts[i]
            dd /= np.linalg.norm(dd) + 1e-9
            for _ in range(4):
                nd = _rotate_towards(dd, math.radians(U(*ang_other)), rng)
                if scene.lung_sdf(*(pts[i] + nd * 8)) < -rad[i] * 0.6:
                    roots.append((pts[i], nd, rad[i] * U(0.45, 0.7), hil))
                    break
        end = pts[-1]
        dd = pts[-1] - pts[-2] if len(pts) > 1 else target - end
        dd /= np.linalg.norm(dd) + 1e-9
        for _ in range(int(rng.integers(3, 6))):
            tgt = _side_point(scene, rng, side, 5.0, end[2] - 50, end[2] + 50)
            nd = (tgt - end) if tgt is not None else dd
            nd = nd / (np.linalg.norm(nd) + 1e-9) + dd
            roots.append((end, nd / np.linalg.norm(nd), rad[-1] * U(0.6, 0.85), hil))

    for side, hil, r_main in ((-1, h_r, rpa_r), (1, h_l, lpa_r)):
        lcx, lcy, lx, ly, _ = scene.lungs[(side + 1) // 2]
        floor_top = dome_tops[(side + 1) // 2][2]
        nm = "right" if side < 0 else "left"
        up = _side_point(scene, rng, side, 12, hil[2] + 25, z_apex - 20, ylo=lcy - ly * 0.6)
        lower = _side_point(scene, rng, side, 12, floor_top - 10, hil[2] - 35, ylo=lcy)
        mid_ = _side_point(scene, rng, side, 12, hil[2] - U(30, 55), hil[2] - U(5, 20), yhi=lcy - ly * 0.2)
        lobar(f"{nm} upper lobe artery", side, hil, up, r_main * U(0.5, 0.65), False, hil)
        lobar(f"{nm} interlobar artery", side, hil, lower, r_main * U(0.6, 0.75), False, hil)
        lobar(f"{'middle lobe' if side < 0 else 'lingular'} artery", side, hil, mid_, r_main * U(0.4, 0.55), True, hil)
        vs, vi = veins[(side, "superior")], veins[(side, "inferior")]
        up_v = _side_point(scene, rng, side, 12, vs[2] + 10, z_apex - 30, yhi=lcy)
        low_v = _side_point(scene, rng, side, 12, vi[2] - 8, vi[2] + 8, ylo=lcy)
        lobar(f"{nm} superior vein branch", side, vs, up_v, vein_r * U(0.7, 0.85), False, vs)
        lobar(f"{nm} inferior vein branch", side, vi, low_v, vein_r * U(0.75, 0.9), True, vi)
    scene.roots = np.vstack(hilar)
    scene.vessels = np.asarray(grow_trees(rng, scene, roots, U(*F["tree_rmin"]), int(U(*F["tree_segs"])),
                                          angles=(ang_first, ang_other)), float).reshape(-1, 8)
    aroots = []
    for side in (-1, 1):
        for d0 in (np.array([0, 0, 1.0]), np.array([side * 0.6, 0.3, -1.0]), np.array([side * 0.5, -0.6, -0.4])):
            aroots.append((bronchi[side], d0 / np.linalg.norm(d0), 4.5, V["hilum"]["right" if side < 0 else "left"]))
    airways += grow_trees(rng, scene, aroots, 1.2, 300)
    scene.airways = np.asarray(airways, float).reshape(-1, 8)
    scene.aorta = (float(top_d[0]), float(top_d[1]), float(rd))
    scene.ribs = _make_ribs(scene, rng)
    scene.nodules = _make_nodules(scene, np.random.default_rng([seed, 0xA7, 0x0D]), n_nodules, diameters_mm)
    return scene


def _render_varied(scene: Scene, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """render_anatomy for a varied scene: noise-free HU volume and nodule occupancy."""
    V = scene.varied
    h = grid.h
    x, y, z = grid.axes()
    shape = grid.shape
    vol = _table_and_body(scene, grid, V["fat_hu"])
    inner_a, inner_b = scene.body_a - scene.fat, scene.body_b - scene.fat
    blend(vol, np.broadcast_to(soft(ellipse_sdf(x - scene.cx, y - scene.cy, inner_a, inner_b), h), shape), 45.0)
    cav = soft(ellipse_sdf(x - scene.cx, y - scene.cy, scene.cav_a + 9, scene.cav_b + 9), h)
    blend(vol, np.broadcast_to(cav, shape), V["med_fat_hu"])
    # abdomen under the diaphragm: muscle, liver (right), stomach (with air) and spleen (left)
    zd = _diaphragm_z(scene, x, y)
    blend(vol, cav * soft(z - zd, h), 45.0)
    organs = cav * soft(z - (zd - 4.0), h)
    liver = organs * soft(x - (scene.cx + V["liver_edge"]), 6.0)
    blend(vol, liver, V["liver_hu"])
    lcx, lcy, lx, ly, _ = scene.lungs[1]
    top_l = V["dome_tops"][1]
    for c, r, hu in ((np.array([lcx + 0.35 * lx, lcy + 0.45 * ly, top_l[2] - 45]), np.array([0.35 * lx, 0.3 * ly, 45.0]), 48.0),
                     (np.array([lcx - 0.1 * lx, lcy - 0.35 * ly, top_l[2] - 35]), np.array([0.5 * lx, 0.4 * ly, 32.0]), 25.0)):
        sl = grid.sub(c - r - 2 * h, c + r + 2 * h)
        if sl is None:
            continue
        sx, sy, sz = grid.subgrid(sl).axes()
        occ = soft(ellipsoid_sdf(np.stack(np.broadcast_arrays(sx - c[0], sy - c[1], sz - c[2]), -1), r), h) * organs[sl]
        blend(vol[sl], occ, hu)
        if hu == 25.0 and V["gastric_air"]:
            blend(vol[sl], occ * soft((c[2] + 0.3 * r[2]) - sz, h), -1000.0)
    # heart: pericardial fat pads, pericardium, epicardial fat, chambers; then the great vessels
    sdf = None
    lo = np.min([ch["center"] - _chamber_extent(ch) for ch in V["chambers"]], 0) - V["epi_fat"] - 4 * h - 3
    hi = np.max([ch["center"] + _chamber_extent(ch) for ch in V["chambers"]], 0) + V["epi_fat"] + 4 * h + 3
    for c, r in V["pads"]:
        sl = grid.sub(c - r - 2 * h, c + r + 2 * h)
        if sl is not None:
            sx, sy, sz = grid.subgrid(sl).axes()
            blend(vol[sl], soft(ellipsoid_sdf(np.stack(np.broadcast_arrays(sx - c[0], sy - c[1], sz - c[2]), -1), r), h),
                  -100.0)
    sl = grid.sub(lo, hi)
    if sl is not None:
        sx, sy, sz = grid.subgrid(sl).axes()
        pp = np.stack(np.broadcast_arrays(sx, sy, sz), -1)
        for ch in V["chambers"]:
            e = _chamber_sdf(ch, pp)
            sdf = e if sdf is None else np.minimum(sdf, e)
        del pp
        g = V["epi_fat"]
        blend(vol[sl], soft(sdf - g - 1.5, h), 25.0)
        blend(vol[sl], soft(sdf - g, h), -90.0)
        blend(vol[sl], soft(sdf, h), V["heart_hu"])
    blend(vol, render_tubes(V["central_painted"], grid), scene.vessel_hu)
    _render_bones(scene, grid, vol)
    lung = np.zeros(shape, np.float32)
    return _render_lungs(scene, grid, vol, lung)


def sample_geometry_varied(seed: int) -> dict:
    """sample_geometry for the varied mode: wider slice spacings and thicknesses, and a
    reconstruction kernel (soft, standard or sharp with edge enhancement) with its own noise
    level and texture. Its own random stream."""
    rng = np.random.default_rng([seed, 0xA7, 0x6E0])
    matrix = int(rng.choice([256, 512], p=[0.25, 0.75]))
    spacing = float(rng.choice([0.5, 0.625, 0.75, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0],
                               p=[0.05, 0.12, 0.05, 0.08, 0.15, 0.15, 0.1, 0.1, 0.08, 0.05, 0.07]))
    thickness = min(5.0, spacing * float(rng.choice([1.0, 1.0, 1.25, 1.6, 2.0])))
    signed = bool(rng.random() < 0.5)
    name = str(rng.choice(["SOFT", "STANDARD", "LUNG"], p=[0.25, 0.4, 0.35]))
    if name == "SOFT":
        psf, corr, factor, edge = rng.uniform(0.75, 1.2), rng.uniform(0.9, 1.3), rng.uniform(0.55, 0.85), 0.0
    elif name == "STANDARD":
        psf, corr, factor, edge = rng.uniform(0.5, 0.8), rng.uniform(0.6, 0.9), 1.0, rng.uniform(0.0, 0.15)
    else:
        psf, corr, factor, edge = rng.uniform(0.3, 0.5), rng.uniform(0.35, 0.55), rng.uniform(1.6, 2.6), rng.uniform(0.3, 1.0)
    return {
        "matrix": matrix,
        "pixel_spacing_mm": None,
        "slice_spacing_mm": spacing,
        "slice_thickness_mm": round(thickness, 3),
        "patient_position": str(rng.choice(["HFS", "FFS"])),
        "pixel_representation": 1 if signed else 0,
        "rescale_intercept": float(rng.choice([0.0, -1024.0])) if signed else -1024.0,
        "noise_hu": float(min(150.0, rng.uniform(8, 35) * factor * math.sqrt(1.25 / spacing))),
        "psf_mm": float(psf),
        "fov_padding": bool(rng.random() < 0.5),
        "kernel": {"name": name, "noise_corr": float(corr), "edge_enhance": float(edge),
                   "edge_enhance_mm": float(rng.uniform(0.7, 1.5))},
    }


def _r(v, nd: int = 1):
    return [round(float(a), nd) for a in np.asarray(v).reshape(-1)]


def anatomy_landmarks(scene: Scene, geo: dict | None = None) -> dict:
    """The truth's additive "anatomy" key (schema pulmo.anatomy/1; see the module docstring)."""
    V = scene.varied
    out: dict = {"schema": ANATOMY_SCHEMA}
    lung_names = ("right", "left")
    if V is None:
        hc, hr = scene.heart
        roots = scene.roots
        hil = {n: _r(roots[2 * k:2 * k + 2, 3:6].mean(0)) for k, n in enumerate(lung_names)}
        out.update(mode="classic", family=None, family_name="classic", split=None, hilum=hil,
                   heart={"shape": "ellipsoid", "center": _r(hc), "radii": _r(hr), "axes": np.eye(3).tolist()},
                   diaphragm={n: {"apex": _r([l[0], l[1], scene.z_base + l[4]])} for n, l in zip(lung_names, scene.lungs)},
                   mediastinum={"center_xy": _r([scene.cx, scene.cy]), "half_width_mm": 24.0,
                                "half_depth_mm": round(scene.cav_b * 1.2, 1)},
                   lungs={n: {"base_z": round(scene.z_base, 1), "apex_z": round(scene.z_apex, 1)} for n in lung_names},
                   vessels=[{"name": "hilar trunk", "kind": "central", "points": [_r(s[0:3]) + [round(s[6], 1)],
                                                                                  _r(s[3:6]) + [round(s[7], 1)]]}
                            for s in scene.roots]
                   + [{"name": "descending aorta", "kind": "central",
                       "points": [[round(scene.aorta[0], 1), round(scene.aorta[1], 1), round(z, 1), round(scene.aorta[2], 1)]
                                  for z in (scene.z_apex - 40, scene.z0)]}])
        return out
    F = ANATOMY_FAMILIES[V["family"]]
    R = V["heart_frame"]
    hc = V["heart_center"]
    ext = np.zeros(3)
    for ch in V["chambers"]:  # half lengths of the heart along its own axes
        for k in range(3):
            ext[k] = max(ext[k], abs(float((ch["center"] - hc) @ R[:, k])) + float(np.abs(R[:, k] @ ch["axes"]) @ ch["radii"]) * 0.9)
    tops = V["dome_tops"]
    mx, mw = V["mediastinum"]
    out.update(
        mode="varied", family=V["family"], family_name=F["name"], split=F["split"],
        hilum={n: _r(V["hilum"][n]) for n in lung_names},
        carina=_r(V["carina"]), pulmonary_bifurcation=_r(V["bifurcation"]),
        heart={"shape": V["heart_style"], "center": _r(hc), "radii": _r(ext), "axes": [_r(R[:, k], 4) for k in range(3)],
               "epicardial_fat_mm": round(V["epi_fat"], 1),
               "chambers": [{"name": ch["name"], "center": _r(ch["center"]), "radii": _r(ch["radii"]),
                             "axes": [_r(ch["axes"][:, k], 4) for k in range(3)], "exponent": round(ch["n"], 2)}
                            for ch in V["chambers"]],
               "fat_pads": [{"center": _r(c), "radii": _r(r)} for c, r in V["pads"]]},
        diaphragm={**{n: {"apex": _r(t), "lowest_z": round(L["base"] - L["recess"], 1), "style": F["domes"]}
                      for n, t, L in zip(lung_names, tops, V["lungs"])}, "central_tendon_z": round(V["z_c"], 1)},
        mediastinum={"center_xy": _r([mx, scene.cy]), "half_width_mm": round(mw, 1),
                     "half_depth_mm": round(scene.cav_b * 1.2, 1)},
        lungs={n: {"base_z": round(L["base"] - L["recess"], 1), "apex_z": round(L["apex"], 1)}
               for n, L in zip(lung_names, V["lungs"])},
        vessels=[{"name": name, "kind": kind, "points": [_r(p) + [round(float(r), 1)] for p, r in zip(pts, rad)]}
                 for name, kind, pts, rad in V["paths"]],
        contrast=V["contrast"],
    )
    if geo is not None and geo.get("kernel"):
        k = geo["kernel"]
        out["scanner"] = {"kernel": k["name"], "psf_mm": round(geo["psf_mm"], 3), "noise_hu": round(geo["noise_hu"], 2),
                          "noise_corr": round(k["noise_corr"], 3), "edge_enhance": round(k["edge_enhance"], 3),
                          "edge_enhance_mm": round(k["edge_enhance_mm"], 3)}
    return out


# ----------------------------------------------------------------------------- CLI


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, required=True, help="first seed")
    ap.add_argument("--cases", type=int, default=1, help="number of consecutive seeds")
    ap.add_argument("--out", type=pathlib.Path, required=True)
    ap.add_argument("--nodules", type=int, default=None, help="force the nodule count")
    ap.add_argument("--matrix", type=int, choices=[256, 512], default=None)
    ap.add_argument("--pixel-spacing", type=float, default=None)
    ap.add_argument("--slice-spacing", type=float, default=None)
    ap.add_argument("--slice-thickness", type=float, default=None)
    ap.add_argument("--position", choices=["HFS", "FFS"], default=None)
    ap.add_argument("--signed", choices=["yes", "no"], default=None)
    ap.add_argument("--slices", type=int, default=None,
                    help="slice count: sets the slice spacing (and thickness) to cover the chest in this many")
    ap.add_argument("--syntax", choices=["explicit", "rle", "j2k"], default="explicit",
                    help="transfer syntax: explicit VR little endian, RLE or JPEG 2000 lossless")
    ap.add_argument("--truth-only", action="store_true", help="write truth.json but no DICOM")
    ap.add_argument("--vessel-hu", type=float, default=None,
                    help="HU of the pulmonary vessels (drawn 30-55; ~150-300 looks contrast-enhanced)")
    ap.add_argument("--lung-hu", type=float, default=None,
                    help="mean HU of the lung parenchyma (drawn -880 to -820)")
    ap.add_argument("--spiculate", type=float, default=None, metavar="P",
                    help="give solid and part-solid nodules over 6 mm spicules with probability P")
    ap.add_argument("--ggo-hu", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                    help="ground-glass density in HU (drawn -650 to -450 and mapped linearly onto [LO, HI]); "
                         "e.g. -750 -600 for fainter ground-glass nodules and halos")
    ap.add_argument("--eccentric-cores", type=float, default=None, metavar="P",
                    help="move part-solid nodules' solid cores off centre with probability P")
    ap.add_argument("--cavitate", type=float, default=None, metavar="P",
                    help="give solid nodules of 8 mm or more an air-filled cavity with probability P")
    ap.add_argument("--diameter-range", type=float, nargs=2, default=list(NODULE_DIAMETERS_MM), metavar=("LO", "HI"),
                    help="draw nodule diameters log-uniform in [LO, HI] mm (default %(default)s); e.g. 3 6 for a "
                         "small-nodule set down to the LUNA16 limit")
    ap.add_argument("--solid-hu", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                    help="solid nodules' density in HU (drawn 0-60 and mapped linearly onto [LO, HI]); e.g. "
                         "150 400 for dense, calcified-looking nodules")
    ap.add_argument("--anatomy", choices=["classic", "varied"], default="classic",
                    help="classic: the scene every release so far was trained and tested on (default); varied: "
                         "heart, great and hilar vessels, domes, habitus and kernel drawn from the anatomy "
                         "families (see above), with landmarks in the truth")
    ap.add_argument("--anatomy-family", default=None, metavar="SPEC",
                    help="with --anatomy varied: the families each seed's family is drawn from: all (default), "
                         "train (0-3), heldout (4-5), or a comma list of ids or names, e.g. 4 or 2,eventration")
    ap.add_argument("--landmarks", action="store_true",
                    help="give classic cases the truth key 'anatomy' too (varied ones always have it)")
    args = ap.parse_args()
    if args.anatomy_family is not None:
        if args.anatomy != "varied":
            ap.error("--anatomy-family needs --anatomy varied")
        try:
            args.anatomy_family = parse_families(args.anatomy_family)
        except ValueError as e:
            ap.error(f"--anatomy-family: {e}")
    if not 0 < args.diameter_range[0] <= args.diameter_range[1]:
        ap.error(f"--diameter-range {args.diameter_range}: needs 0 < LO <= HI")
    for name in ("spiculate", "eccentric_cores", "cavitate"):
        value = getattr(args, name)
        if value is not None and not 0 <= value <= 1:
            ap.error(f"--{name.replace('_', '-')} {value}: a probability, needs 0 <= P <= 1")
    for name in ("solid_hu", "ggo_hu"):
        value = getattr(args, name)
        if value is not None and not value[0] <= value[1]:
            ap.error(f"--{name.replace('_', '-')} {value}: needs LO <= HI")
    over = _overrides(args)
    scene_over = {}
    for name in ("vessel_hu", "lung_hu", "spiculate", "eccentric_cores", "cavitate", "solid_hu", "ggo_hu"):
        value = getattr(args, name)
        if value is not None:
            scene_over[name] = tuple(value) if isinstance(value, list) else value
    cases = []
    for seed in range(args.seed, args.seed + args.cases):
        t0 = time.time()
        scene, geo, case = make_case(seed, over, args.nodules, scene_over, tuple(args.diameter_range),
                                     args.anatomy, args.anatomy_family, args.landmarks)
        if not args.truth_only:
            write_series(scene, geo, case, args.out / str(seed), args.syntax)
        cases.append(case)
        fam = f" anatomy {case['anatomy']['family_name']}" if args.anatomy == "varied" else ""
        print(f"seed {seed}:{fam} {geo['matrix']}x{geo['matrix']}x{geo['slices']} "
              f"px {geo['pixel_spacing_mm']} dz {geo['slice_spacing_mm']} {geo['patient_position']} "
              f"nodules {len(case['nodules'])} ({time.time() - t0:.1f} s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "truth.json").write_text(json.dumps({"schema": "pulmo.truth/1", "cases": cases}, indent=1) + "\n")


def _overrides(args) -> dict:
    """Geometry keys forced from the command line."""
    over: dict = {}
    if args.matrix:
        over["matrix"] = args.matrix
    if args.pixel_spacing:
        over["pixel_spacing_mm"] = args.pixel_spacing
    if args.slice_spacing:
        over["slice_spacing_mm"] = args.slice_spacing
        over["slice_thickness_mm"] = args.slice_thickness or args.slice_spacing
        over["noise_hu"] = 20.0 * math.sqrt(1.25 / args.slice_spacing)
    if args.position:
        over["patient_position"] = args.position
    if args.signed:
        over["pixel_representation"] = 1 if args.signed == "yes" else 0
        over["rescale_intercept"] = 0.0 if args.signed == "yes" else -1024.0
    if args.slices:
        over["slices_wanted"] = args.slices
    if args.syntax == "rle":
        over["transfer_syntax"] = "1.2.840.10008.1.2.5"
    elif args.syntax == "j2k":
        over["transfer_syntax"] = "1.2.840.10008.1.2.4.90"
    else:
        over["transfer_syntax"] = "1.2.840.10008.1.2.1"
    return over


if __name__ == "__main__":
    main()
