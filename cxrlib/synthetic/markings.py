"""Lung markings: pulmonary vessels fanning out of the hila, hilar shadows, texture.

Vessels are random binary trees grown from each hilum (branch angles 15-35
degrees, length and width shrinking at each split), drawn as anti-aliased
polylines with Pillow and softened with a small Gaussian blur.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from ._canvas import Canvas, smooth_noise
from .anatomy import Anatomy

__all__ = ["grow_vessels", "render_markings"]


def grow_vessels(
    rng: np.random.Generator, hilum: tuple[float, float], side: int, depth: int = 6
) -> np.ndarray:
    """Grow a vessel tree from a hilum, one generation at a time.

    Parameters
    ----------
    rng
        Random generator (consumed).
    hilum
        ``(u, v)`` of the hilum.
    side
        -1 (right lung, growing towards -u) or +1.
    depth
        Number of branching generations.

    Returns
    -------
    numpy.ndarray
        ``(n, 5)`` segments ``(u0, v0, u1, v1, width)`` in patient coordinates.
    """
    count = 6
    angle = np.deg2rad(np.linspace(-80.0, 80.0, count) + rng.normal(0, 7, count))
    radial = angle.copy()
    u = np.full(count, hilum[0])
    v = np.full(count, hilum[1])
    length = rng.uniform(0.11, 0.16, count)
    width = np.full(count, 0.022)
    parts = []
    for level in range(depth):
        # Each branch is two slightly bent pieces.
        for bend in rng.normal(0.0, 0.04, (2, angle.size)):
            # Bend a little, and drift back towards the radial direction of the trunk.
            angle = angle + bend + 0.25 * (radial - angle)
            nu = u + side * np.cos(angle) * length / 2
            nv = v + np.sin(angle) * length / 2
            parts.append(np.stack([u, v, nu, nv, width], axis=1))
            u, v = nu, nv
        if level + 1 == depth:
            break
        spread = rng.uniform(0.2, 0.45, angle.size)
        sign = np.array([-1.0, 1.0])[:, None]
        angle = (angle + sign * spread * rng.uniform(0.6, 1.0, (2, angle.size))).ravel()
        radial = np.tile(radial, 2)
        length = (length * rng.uniform(0.68, 0.82, (2, length.size))).ravel()
        u, v, width = np.tile(u, 2), np.tile(v, 2), np.tile(width * 0.7, 2)
    return np.concatenate(parts)


def _draw_segments(canvas: Canvas, segments: np.ndarray) -> np.ndarray:
    """Render segments as soft lines: splat points along them, blur per width class."""
    height, width = canvas.shape
    c0, r0 = canvas.to_pixels(segments[:, 0], segments[:, 1])
    c1, r1 = canvas.to_pixels(segments[:, 2], segments[:, 3])
    widths = segments[:, 4] / canvas.px
    step = 0.6
    counts = np.maximum(1, np.ceil(np.hypot(c1 - c0, r1 - r0) / step)).astype(int)
    owner = np.repeat(np.arange(len(segments)), counts)
    frac = np.arange(owner.size) - np.repeat(np.cumsum(counts) - counts, counts) + 0.5
    frac /= counts[owner]
    cols = np.rint(c0[owner] + (c1 - c0)[owner] * frac).astype(np.int64)
    rows = np.rint(r0[owner] + (r1 - r0)[owner] * frac).astype(np.int64)
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    out = np.zeros((height, width), np.float32)
    value = np.minimum(1.0, 0.35 + 0.5 * segments[:, 4] / 0.022)
    seg_len = np.hypot(c1 - c0, r1 - r0) / counts
    for lo, hi in ((0.0, 1.5), (1.5, 3.0), (3.0, np.inf)):
        pick = inside & (widths[owner] >= lo) & (widths[owner] < hi)
        if not pick.any():
            continue
        sigma = max(0.6, float(np.median(widths[owner][pick])) / 2.0)
        weights = value[owner][pick] * seg_len[owner][pick] * (math.sqrt(2 * math.pi) * sigma)
        flat = np.bincount(rows[pick] * width + cols[pick], weights, minlength=height * width)
        out += ndi.gaussian_filter(flat.reshape(height, width).astype(np.float32), sigma)
    return out


def render_markings(canvas: Canvas, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Draw vessels, hila and fine parenchymal texture on ``canvas``.

    Returns
    -------
    numpy.ndarray
        ``float32`` density of shape ``canvas.shape`` (to be weighted by lung air).
    """
    width = canvas.shape[1]
    trees = [
        grow_vessels(rng, hilum, side) for side, hilum in zip((-1, 1), anatomy.hila, strict=True)
    ]
    vessels = np.minimum(_draw_segments(canvas, np.concatenate(trees)), 1.0)

    # Hilar shadows: pulmonary arteries and bronchi at the lung roots.
    u, v = canvas.u, canvas.v
    hila = np.zeros(canvas.shape, np.float32)
    for hu, hv in anatomy.hila:
        r2 = ((u - np.float32(hu)) / np.float32(0.06)) ** 2 + ((v - np.float32(hv)) / 0.1) ** 2
        hila += np.exp(-r2)
    texture = smooth_noise(rng, canvas.shape, cells=max(8, width // 2), sigma=0.7)
    texture += smooth_noise(rng, canvas.shape, cells=max(8, width // 5), sigma=0.8)
    texture += np.float32(0.6) * smooth_noise(rng, canvas.shape, cells=24, sigma=1.0)
    return vessels * np.float32(0.13) + hila * np.float32(0.09) + texture * np.float32(0.025)
