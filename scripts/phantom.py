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

    .venv/bin/python3 scripts/phantom.py --seed 7 --out /tmp/ph            # one series
    .venv/bin/python3 scripts/phantom.py --seed 1000 --cases 20 --out DIR  # a set

Each series lands in OUT/<seed>/ (one file per slice) and OUT/truth.json holds every case
(schema "pulmo.truth/1").
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

    # --- analytic fields (broadcasting over x, y, z arrays) ---

    def lung_sdf(self, x, y, z):
        """Signed distance-like field of the union of both lungs (negative inside)."""
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


def grow_trees(rng, scene: Scene, roots: list, r_min: float, max_segs: int) -> list:
    """Grow branching, tapering tube trees inside the lungs, one generation at a time.

    roots: [(start(3), direction(3), radius, hilum(3))]. Returns segments
    [ax, ay, az, bx, by, bz, r_start, r_end]. Every end point is tested against the lung
    field in one vectorised call per generation.
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
                ratio = rng.uniform(0.78, 0.92) if c == 0 else rng.uniform(0.6, 0.85)
                ang = math.radians(rng.uniform(12, 28) if c == 0 else rng.uniform(25, 55))
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
               diameters_mm: tuple[float, float] = NODULE_DIAMETERS_MM) -> Scene:
    """Build a random chest scene from a seed (optionally fitting a reconstruction FOV).

    Nodule diameters are drawn log-uniform in `diameters_mm`; another range changes the
    nodules' sizes only (the same random draws), so the rest of the case stays the same.
    """
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


def render_anatomy(scene: Scene, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free, PSF-free HU volume and nodule occupancy on the grid."""
    h = grid.h
    x, y, z = grid.axes()
    shape = grid.shape
    vol = np.full(shape, -1000.0, np.float32)
    # table: a curved carbon slab with foam above it
    ty = scene.table_y + 0.0015 * (x - scene.cx) ** 2
    blend(vol, np.broadcast_to(soft(np.abs(y - ty - 6) - 5, h), shape), -250.0)
    blend(vol, np.broadcast_to(soft(np.abs(y - ty - 13) - 2, h), shape), 150.0)
    body = soft(ellipse_sdf(x - scene.cx, y - scene.cy, scene.body_a, scene.body_b), h)
    blend(vol, np.broadcast_to(body, shape), -95.0)
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
    box = _lung_box(scene, 2 * h)
    sl = grid.sub(*box)
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


def acquire(vol: np.ndarray, grid: Grid, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """Apply PSF blur and correlated noise to a clean HU volume."""
    steps = [abs(a[1] - a[0]) if len(a) > 1 else 1.0 for a in (grid.zs, grid.ys, grid.xs)]
    sig = [acq.psf_z / steps[0], acq.psf_xy / steps[1], acq.psf_xy / steps[2]]
    out = ndimage.gaussian_filter(vol, sig, mode="nearest")
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


def fit_pixel_spacing(seed: int, matrix: int) -> float:
    """Pixel spacing so the FOV holds the body: 0.55-0.95 mm for 512, coarser for 256."""
    rng = np.random.default_rng([seed, 0x9A])
    base = make_scene_body_width(seed)
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
              scene_overrides: dict | None = None, diameters_mm: tuple[float, float] = NODULE_DIAMETERS_MM):
    """Scene, geometry and truth record for one seed.

    `scene_overrides` replaces scene fields after the scene is drawn (e.g. `vessel_hu` for a
    contrast-enhanced look), so the rest of the case is the same as without them.
    """
    geo = sample_geometry(seed)
    geo.update(geo_overrides or {})
    if geo["pixel_spacing_mm"] is None:
        geo["pixel_spacing_mm"] = fit_pixel_spacing(seed, geo["matrix"])
    scene = make_scene(seed, n_nodules, fov_mm=geo["matrix"] * geo["pixel_spacing_mm"], diameters_mm=diameters_mm)
    override(scene, scene_overrides)
    if geo.get("slices_wanted"):
        _fit_slices(scene, geo, geo.pop("slices_wanted"))
    grid, _, _ = series_grid(scene, geo)
    geo["slices"] = len(grid.zs)
    case = {
        "study_instance_uid": uid(seed, "study"),
        "series_instance_uid": uid(seed, "series"),
        "seed": seed,
        "geometry": dict(geo),
        "nodules": [dict(id=i + 1, **nodule_truth(nd)) for i, nd in enumerate(scene.nodules)],
    }
    return scene, geo, case


def override(scene: Scene, overrides: dict | None) -> None:
    """Changes a drawn scene: the variety options (`spiculate`, `solid_hu`, `ggo_hu`,
    `eccentric_cores`, `cavitate`; named as their command-line options) or any scene field by
    name (e.g. `vessel_hu`)."""
    for key, value in (overrides or {}).items():
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
    ds.ManufacturerModelName = "scripts/phantom.py"
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
    ds.ConvolutionKernel = "STANDARD"
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
                  scene_overrides: dict | None = None):
    """A whole chest rendered straight at an isotropic spacing: (HU, occupancy, scene, origin)."""
    scene = make_scene(seed, n_nodules, diameters_mm=diameters_mm)
    override(scene, scene_overrides)
    lo, hi = _lung_box(scene, 20.0)  # the lungs and a margin: where patches are drawn
    xs = np.arange(lo[0], hi[0], spacing)
    ys = np.arange(lo[1], hi[1], spacing)
    zs = np.arange(lo[2], hi[2], spacing)
    grid = Grid(xs, ys, zs)
    vol, occ = render(scene, grid, acq, rng)
    return vol, occ, scene, grid


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
    args = ap.parse_args()
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
        scene, geo, case = make_case(seed, over, args.nodules, scene_over, tuple(args.diameter_range))
        if not args.truth_only:
            write_series(scene, geo, case, args.out / str(seed), args.syntax)
        cases.append(case)
        print(f"seed {seed}: {geo['matrix']}x{geo['matrix']}x{geo['slices']} "
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
