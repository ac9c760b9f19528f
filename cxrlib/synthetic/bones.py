"""Bones of a chest phantom: ribs, spine, clavicles, scapulae and humeral heads.

Ribs are drawn with a *rib coordinate*: for each side a smooth warp of the
patient coordinates turns every posterior rib into a level band ``r = k + phase``,
so all ribs of a side cost one vectorised evaluation. Bones have a bright cortex
(edges) and a paler medulla, like the real radiographs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._canvas import Canvas, ramp, resize, smooth_noise, smoothstep
from .anatomy import Anatomy

__all__ = ["Skeleton", "sample_skeleton", "render_bones"]

_PI = np.float32(math.pi)


@dataclass
class Skeleton:
    """Bone parameters of one phantom (patient coordinates, lung-height units)."""

    rib_density: float
    rib_top: float
    rib_spacing: float
    rib_growth: float
    rib_fill: float
    rib_arch: float
    rib_slope: float
    ant_density: float
    ant_top: float
    ant_spacing: float
    ant_drop: float
    spine_density: float
    spine_width: float
    spine_shift: float
    spine_top: float
    spine_period: float
    clavicle_density: float
    clavicle: tuple[float, float, float, float]
    clavicle_width: float
    scapula: float
    humerus: float


def sample_skeleton(rng: np.random.Generator, rib_contrast: tuple[float, float]) -> Skeleton:
    """Draw the bone parameters.

    Parameters
    ----------
    rng
        Random generator (consumed).
    rib_contrast
        ``(low, high)`` range of rib density.
    """
    rib = rng.uniform(*rib_contrast)
    return Skeleton(
        rib_density=rib,
        rib_top=rng.uniform(-0.13, -0.07),
        rib_spacing=rng.uniform(0.074, 0.09),
        rib_growth=rng.uniform(0.02, 0.045),
        rib_fill=rng.uniform(0.45, 0.56),
        rib_arch=rng.uniform(0.15, 0.24),
        rib_slope=rng.uniform(0.0, 0.08),
        ant_density=rib * rng.uniform(0.25, 0.45),
        ant_top=rng.uniform(0.0, 0.06),
        ant_spacing=rng.uniform(0.12, 0.15),
        ant_drop=rng.uniform(0.18, 0.3),
        spine_density=rng.uniform(0.08, 0.15),
        spine_width=rng.uniform(0.052, 0.065),
        spine_shift=rng.normal(0.0, 0.008),
        spine_top=rng.uniform(-0.1, 0.0),
        spine_period=rng.uniform(0.085, 0.1),
        clavicle_density=rib * rng.uniform(1.6, 2.4),
        clavicle=(
            rng.uniform(0.04, 0.07),  # medial end distance from the midline
            rng.uniform(0.16, 0.28),  # medial end height
            rng.uniform(0.6, 0.7),  # lateral end distance
            rng.uniform(-0.14, 0.05),  # lateral end height
        ),
        clavicle_width=rng.uniform(0.03, 0.038),
        scapula=rng.uniform(0.0, 0.07) if rng.random() < 0.75 else 0.0,
        humerus=rib * rng.uniform(0.8, 1.3),
    )


def _rib_profile(z: np.ndarray) -> np.ndarray:
    """Rib profile, ``z`` from -1 (upper edge) to 1 (lower edge, the thicker cortex)."""
    upper = np.exp(-(((z + 1) * np.float32(4.0)) ** 2))
    lower = np.exp(-(((z - 1) * np.float32(3.0)) ** 2))
    return np.float32(0.5) + np.float32(0.3) * upper + np.float32(0.5) * lower


def _cortex(z: np.ndarray) -> np.ndarray:
    """Bone profile across a band, ``z`` in ``[-1, 1]``: bright cortex, paler centre."""
    z2 = z * z
    return np.float32(0.4) + np.float32(0.6) * z2 * z2


def _rib_geometry(
    coarse: Canvas, anatomy: Anatomy, skel: Skeleton, wobble: np.ndarray
) -> list[np.ndarray]:
    """Smooth rib coordinates on a coarse canvas (both sides in one map).

    Returns the posterior rib index, its visibility, the anterior rib index and
    its visibility, each ``float32`` of shape ``coarse.shape``. The indices are
    continuous, so they survive upsampling; the bands are cut at full resolution.
    """
    fields = [np.zeros(coarse.shape, np.float32) for _ in range(4)]
    for side in (-1, 1):
        lung = anatomy.left if side > 0 else anatomy.right
        lo, hi = sorted((side * -0.02, side * (lung.width * 1.3)))
        win = coarse.window(lo, hi, skel.rib_top - 0.15, lung.v_cp + 0.35)
        u, v = coarse.u[win], coarse.v[win]
        if u.size == 0:
            continue
        d = u * np.float32(side)
        t = (v - np.float32(lung.v_apex)) * np.float32(1.0 / lung.height)
        local = lung.lateral(np.sqrt(np.clip(t, 0.0, 1.0)))
        x = d / np.maximum(local, np.float32(0.05))
        # Posterior ribs: arched bands, straightened by the arch and slope terms.
        arch = np.float32(skel.rib_arch) * np.sin(_PI * np.clip(x, 0.0, 1.3) / np.float32(1.3))
        arch -= np.float32(skel.rib_arch * 2.5) * np.maximum(x - np.float32(0.85), 0.0) ** 2
        straight = v + arch - np.float32(skel.rib_slope) * x + wobble[win]
        k = np.float32(skel.rib_growth)
        rel = np.maximum(straight - np.float32(skel.rib_top), 0.0) / np.float32(skel.rib_spacing)
        index = np.log1p(k * rel) / k
        fade = ramp(d - np.float32(0.05), 0.06) * (1 - smoothstep((x - np.float32(1.08)) * 5))
        fade *= ramp(np.float32(11.6) - index, 0.3) * ramp(t + np.float32(0.06), 0.1)
        # Anterior ribs: fainter bands that drop towards the midline.
        drop = v - np.float32(skel.ant_drop) * (1 - np.clip(x, 0.0, 1.2)) + wobble[win] * 0.5
        ai = (drop - np.float32(skel.ant_top)) / np.float32(skel.ant_spacing)
        afade = ramp(x - np.float32(0.45), 0.2) * (1 - smoothstep((x - np.float32(1.0)) * 5))
        afade *= ramp(ai, 0.2) * ramp(np.float32(6.5) - ai, 0.2)
        mine = d > 0
        for out, value in zip(fields, (index, fade, ai, afade), strict=True):
            out[win] = np.where(mine, value, out[win])
    return fields


def _rib_bands(
    canvas: Canvas, skel: Skeleton, fields: list[np.ndarray], rib_var: np.ndarray
) -> np.ndarray:
    """Cut the rib bands from upsampled rib coordinates at full resolution.

    ``rib_var`` is ``(2 sides, 2, 16)``: per-rib width and density factors.
    """
    out = np.zeros(canvas.shape, np.float32)
    visible = (fields[1] > 0) | (fields[3] > 0)
    rows = np.flatnonzero(visible.any(axis=1))
    cols = np.flatnonzero(visible.any(axis=0))
    if rows.size == 0:
        return out
    win = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    index, fade, ai, afade = (f[win] for f in fields)
    eps = np.float32(canvas.px)
    k = np.float32(skel.rib_growth)
    side = (canvas.u[win] > 0).astype(np.int32)
    number = np.clip(index, 0, 15).astype(np.int32)
    phase = index - np.floor(index)
    fill = np.float32(skel.rib_fill) * rib_var[side, 0, number]
    step = eps / np.float32(skel.rib_spacing) * np.exp(-k * index)
    band = ramp(phase, step) * ramp(fill - phase, step)
    prof = _rib_profile(phase * np.float32(2.0) / fill - 1) * rib_var[side, 1, number]
    ribs = np.float32(skel.rib_density) * band * prof * fade
    ap = ai - np.floor(ai)
    astep = eps / np.float32(skel.ant_spacing)
    aband = ramp(ap, astep * 3) * ramp(np.float32(0.42) - ap, astep * 3)
    ribs += np.float32(skel.ant_density) * aband * afade
    out[win] = ribs
    return out


def _spine(canvas: Canvas, skel: Skeleton, out: np.ndarray) -> None:
    win = canvas.window(-0.16, 0.16, -3.0, 3.0)
    u, v = canvas.u[win], canvas.v[win]
    if u.size == 0:
        return
    eps = canvas.px
    us = u - np.float32(skel.spine_shift)
    w = np.float32(skel.spine_width) * (1 + np.float32(0.35) * np.clip(v, -0.3, 1.5))
    rel = us / w
    column = ramp(w - np.abs(us), eps)
    per = np.float32(skel.spine_period)
    pos = (v - np.float32(skel.spine_top)) / per
    index = pos + np.float32(0.06) * pos * np.clip(pos, 0, None) / 10
    phase = index - np.floor(index)
    disc = smoothstep((phase - np.float32(0.8)) * 12) * smoothstep((np.float32(1.0) - phase) * 12)
    body = column * _cortex(np.clip(rel, -1, 1)) * (1 - np.float32(0.3) * disc)
    # Pedicles: small rings at both sides of each vertebral body.
    pu = (np.abs(rel) - np.float32(0.7)) / np.float32(0.2)
    pv = (phase - np.float32(0.35)) / np.float32(0.17)
    ring = np.sqrt(pu * pu + pv * pv)
    pedicle = np.exp(-(((ring - 1) / np.float32(0.35)) ** 2))
    # Spinous process: a faint drop in the middle.
    sp = (rel / np.float32(0.16)) ** 2 + ((phase - np.float32(0.6)) / np.float32(0.3)) ** 2
    spinous = np.clip(1 - sp, 0, 1)
    out[win] += np.float32(skel.spine_density) * (
        body + np.float32(0.3) * pedicle * column + np.float32(0.25) * spinous * column
    )


def _clavicles(canvas: Canvas, skel: Skeleton, out: np.ndarray) -> None:
    d0, v0, d1, v1 = skel.clavicle
    for side in (-1, 1):
        lo, hi = sorted((side * 0.0, side * (d1 + 0.08)))
        win = canvas.window(lo, hi, min(v0, v1) - 0.12, max(v0, v1) + 0.12)
        u, v = canvas.u[win], canvas.v[win]
        if u.size == 0:
            continue
        d = u * np.float32(side)
        x = (d - np.float32(d0)) / np.float32(d1 - d0)
        centre = (
            np.float32(v0)
            + np.float32(v1 - v0) * x
            - np.float32(0.03) * np.sin(np.float32(2 * math.pi) * np.clip(x, 0, 1))
        )
        hw = np.float32(skel.clavicle_width) * (
            np.float32(1.25) - np.float32(0.4) * np.sin(_PI * np.clip(x, 0, 1))
        )
        z = (v - centre) / hw
        band = ramp(1 - np.abs(z), np.float32(canvas.px) / hw)
        ends = ramp(x, 0.04) * ramp(np.float32(1.02) - x, 0.06)
        out[win] += np.float32(skel.clavicle_density) * band * ends * _cortex(np.clip(z, -1, 1))


def _shoulders(canvas: Canvas, anatomy: Anatomy, skel: Skeleton, out: np.ndarray) -> None:
    body = anatomy.body
    for side in (-1, 1):
        lung = anatomy.left if side > 0 else anatomy.right
        chest = float(body.torso(np.float32(0.3)))
        cu, cv, r = chest + 0.08, body.arm_top + 0.12, 0.09
        lo, hi = sorted((side * (cu - r - 0.02), side * (cu + r + 0.1)))
        win = canvas.window(lo, hi, cv - r - 0.05, cv + 0.6)
        u, v = canvas.u[win], canvas.v[win]
        if u.size > 0:
            d = u * np.float32(side)
            du, dv = (d - np.float32(cu)) / np.float32(r), (v - np.float32(cv)) / np.float32(r)
            rr = np.sqrt(du * du + dv * dv)
            head = ramp(1 - rr, canvas.px / r) * _cortex(np.clip(rr, 0, 1))
            shaft_z = (d - np.float32(cu + 0.015)) / np.float32(0.055)
            shaft = (
                ramp(1 - np.abs(shaft_z), canvas.px / 0.055) * ramp(v - np.float32(cv), 0.05) * 0.6
            )
            bone = np.maximum(head, shaft * _cortex(np.clip(shaft_z, -1, 1)))
            out[win] += np.float32(skel.humerus) * bone
        if skel.scapula > 0:
            # Medial border of the scapula: a faint sloping edge over the upper lung.
            top, bottom = -0.1, 0.62
            win = canvas.window(*sorted((side * 0.2, side * (chest + 0.05))), top, bottom + 0.1)
            u, v = canvas.u[win], canvas.v[win]
            if u.size == 0:
                continue
            d = u * np.float32(side)
            line = np.float32(lung.width * 1.02) - np.float32(0.28) * np.clip(v, 0, 0.7)
            scap = ramp(d - line, 0.015) * ramp(np.float32(bottom) - v, 0.1) * ramp(v - top, 0.05)
            scap *= ramp(np.float32(chest) - d, 0.03)
            out[win] += np.float32(skel.scapula) * scap


def render_bones(
    canvas: Canvas,
    coarse: Canvas,
    anatomy: Anatomy,
    skel: Skeleton,
    rng: np.random.Generator,
) -> np.ndarray:
    """Draw all bones.

    Smooth geometry is computed on ``coarse``; rib edges are cut on ``canvas``.

    Returns
    -------
    numpy.ndarray
        ``float32`` bone density of shape ``canvas.shape``.
    """
    wobble = np.float32(0.012) * smooth_noise(rng, coarse.shape, cells=10, sigma=1.0)
    # Each rib gets its own width and density, per side.
    rib_var = np.stack(
        [
            rng.uniform(0.85, 1.15, (2, 16)),
            rng.uniform(0.7, 1.2, (2, 16)),
        ],
        axis=1,
    ).astype(np.float32)
    fields = [resize(f, canvas.shape) for f in _rib_geometry(coarse, anatomy, skel, wobble)]
    other = np.zeros(coarse.shape, np.float32)
    _spine(coarse, skel, other)
    _clavicles(coarse, skel, other)
    _shoulders(coarse, anatomy, skel, other)
    return _rib_bands(canvas, skel, fields, rib_var) + resize(other, canvas.shape)
