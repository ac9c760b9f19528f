"""Coordinate grids and small drawing helpers shared by the phantom modules.

A phantom is drawn in *patient coordinates* ``(u, v)``: ``u`` runs across the
image (positive towards the image's right, which is the patient's left, as in
radiological convention), ``v`` runs down. The unit is the height of the lungs:
the lung apices sit near ``v = 0`` and the costophrenic angles near ``v = 1``;
the patient midline is ``u = 0``.

The frame has its own *physical* coordinates ``(x, y)`` in units of the frame
width (``x`` in ``[-0.5, 0.5]``, ``y`` in ``[0, aspect]``). A :class:`Placement`
maps patient to frame coordinates (shift, scale, small rotation); a
:class:`Canvas` samples both on a pixel grid. A portrait frame sampled on a
square grid draws anatomy squashed vertically, which is how the 512 x 512
compilation of the Montgomery set looks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

__all__ = [
    "Placement",
    "Canvas",
    "Curve",
    "pchip",
    "ramp",
    "smoothstep",
    "smooth_noise",
    "resize",
]


@dataclass(frozen=True)
class Placement:
    """Where the patient lies in the frame.

    Attributes
    ----------
    x0, y0
        Frame position of the patient origin (midline at lung-apex level), in
        frame-width units; ``x0 = 0`` is the frame centre, ``y0`` is from the top.
    scale
        Frame-width units per patient unit (the lung height in the frame).
    angle
        Rotation of the patient in radians (positive turns the patient clockwise).
    """

    x0: float
    y0: float
    scale: float
    angle: float

    def to_frame(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map patient coordinates to frame coordinates."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        x = self.x0 + self.scale * (u * c - v * s)
        y = self.y0 + self.scale * (u * s + v * c)
        return x, y


class Canvas:
    """A pixel grid with patient coordinates for every pixel.

    Parameters
    ----------
    height, width
        Pixel grid shape.
    aspect
        Physical height / width of the frame.
    placement
        Patient placement in the frame.
    """

    def __init__(self, height: int, width: int, aspect: float, placement: Placement) -> None:
        self.shape = (int(height), int(width))
        self.aspect = float(aspect)
        self.placement = placement
        c, s = math.cos(placement.angle), math.sin(placement.angle)
        inv = 1.0 / placement.scale
        x = ((np.arange(width, dtype=np.float32) + 0.5) / width - 0.5 - placement.x0)[None, :]
        y = ((np.arange(height, dtype=np.float32) + 0.5) * (aspect / height) - placement.y0)[
            :, None
        ]
        self.u = ((x * c + y * s) * inv).astype(np.float32)
        self.v = ((y * c - x * s) * inv).astype(np.float32)
        #: Size of one pixel in patient units (the larger of its two sides).
        self.px = max(1.0 / width, aspect / height) * inv

    def to_pixels(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map patient coordinates to (column, row) pixel coordinates (floats)."""
        x, y = self.placement.to_frame(np.asarray(u, float), np.asarray(v, float))
        col = (x + 0.5) * self.shape[1] - 0.5
        row = y / self.aspect * self.shape[0] - 0.5
        return col, row

    def window(self, u0: float, u1: float, v0: float, v1: float) -> tuple[slice, slice]:
        """Return the pixel slices that cover a patient-coordinate rectangle.

        The slices may be empty when the rectangle lies outside the frame.
        """
        cols, rows = self.to_pixels(np.array([u0, u1, u0, u1]), np.array([v0, v0, v1, v1]))
        r0 = int(np.clip(math.floor(rows.min()) - 1, 0, self.shape[0]))
        r1 = int(np.clip(math.ceil(rows.max()) + 2, 0, self.shape[0]))
        c0 = int(np.clip(math.floor(cols.min()) - 1, 0, self.shape[1]))
        c1 = int(np.clip(math.ceil(cols.max()) + 2, 0, self.shape[1]))
        return slice(r0, r1), slice(c0, c1)

    def scaled(self, factor: int) -> Canvas:
        """Return a canvas of the same frame with ``factor`` times fewer pixels per side."""
        height = max(8, -(-self.shape[0] // factor))
        width = max(8, -(-self.shape[1] // factor))
        return Canvas(height, width, self.aspect, self.placement)


class Curve:
    """A smooth monotone-piecewise curve through knots, evaluated by table lookup.

    Parameters
    ----------
    xs, ys
        Knot positions (increasing) and values; a PCHIP spline goes through them.
    n
        Table size; evaluation clamps ``x`` to the knot range.
    """

    def __init__(self, xs: np.ndarray, ys: np.ndarray, n: int = 512) -> None:
        xs = np.asarray(xs, dtype=float)
        ys = np.asarray(ys, dtype=float)
        self.x0 = float(xs[0])
        self.x1 = float(xs[-1])
        grid = np.linspace(self.x0, self.x1, n + 1)
        table = pchip(xs, ys, grid).astype(np.float32)
        self._table = table
        self._slope = np.append(np.diff(table), np.float32(0.0)).astype(np.float32)
        self._scale = np.float32(n / (self.x1 - self.x0))
        self._top = np.float32(n - 1e-3)

    def __call__(self, x: np.ndarray | float) -> np.ndarray:
        """Evaluate the curve; returns float32 with the shape of ``x``."""
        g = np.clip(
            (np.asarray(x, dtype=np.float32) - np.float32(self.x0)) * self._scale, 0, self._top
        )
        i = g.astype(np.int32)
        return self._table[i] + (g - i) * self._slope[i]


def _pchip_slopes(h: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Fritsch-Carlson derivatives at the knots (as scipy's PchipInterpolator)."""
    n = delta.size + 1
    slopes = np.zeros(n)
    if n == 2:
        slopes[:] = delta[0]
        return slopes
    w1 = 2 * h[1:] + h[:-1]
    w2 = h[1:] + 2 * h[:-1]
    same = delta[:-1] * delta[1:] > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        harmonic = (w1 + w2) / (w1 / delta[:-1] + w2 / delta[1:])
    slopes[1:-1] = np.where(same, harmonic, 0.0)
    for end, (h0, h1, d0, d1) in (
        (0, (h[0], h[1], delta[0], delta[1])),
        (-1, (h[-1], h[-2], delta[-1], delta[-2])),
    ):
        d = ((2 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
        if np.sign(d) != np.sign(d0):
            d = 0.0
        elif np.sign(d0) != np.sign(d1) and abs(d) > abs(3 * d0):
            d = 3 * d0
        slopes[end] = d
    return slopes


def pchip(xs: np.ndarray, ys: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Evaluate the monotone PCHIP spline through ``(xs, ys)`` at ``x`` (float64).

    Same curve as :class:`scipy.interpolate.PchipInterpolator`, without its set-up
    cost; ``x`` outside the knots is clamped.
    """
    xs = np.asarray(xs, dtype=float)
    ys = np.asarray(ys, dtype=float)
    h = np.diff(xs)
    if np.any(h <= 0):
        raise ValueError("pchip knots must be strictly increasing")
    delta = np.diff(ys) / h
    slopes = _pchip_slopes(h, delta)
    x = np.clip(np.asarray(x, dtype=float), xs[0], xs[-1])
    k = np.clip(np.searchsorted(xs, x, side="right") - 1, 0, xs.size - 2)
    t = (x - xs[k]) / h[k]
    t2, t3 = t * t, t * t * t
    return (
        (2 * t3 - 3 * t2 + 1) * ys[k]
        + (t3 - 2 * t2 + t) * h[k] * slopes[k]
        + (-2 * t3 + 3 * t2) * ys[k + 1]
        + (t3 - t2) * h[k] * slopes[k + 1]
    )


def ramp(z: np.ndarray, width: float) -> np.ndarray:
    """Anti-aliased step: 0 below ``-width/2``, 1 above ``width/2``, linear between."""
    out = np.asarray(z, dtype=np.float32) * np.float32(1.0 / width)
    out += np.float32(0.5)
    return np.clip(out, 0.0, 1.0, out=out)


def smoothstep(z: np.ndarray) -> np.ndarray:
    """Cubic smooth step of ``z`` clipped to ``[0, 1]``."""
    z = np.clip(np.asarray(z, dtype=np.float32), 0.0, 1.0)
    return z * z * (np.float32(3.0) - np.float32(2.0) * z)


def resize(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a float image with bilinear interpolation (pixel centres aligned).

    Parameters
    ----------
    array
        ``(h, w)`` float array.
    shape
        Output ``(H, W)``.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of shape ``shape``.
    """
    if array.shape == tuple(shape):
        return array.astype(np.float32, copy=False)
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32), mode="F")
    resample = Image.Resampling.BICUBIC if min(array.shape) < 48 else Image.Resampling.BILINEAR
    return np.array(image.resize((shape[1], shape[0]), resample), dtype=np.float32)


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], cells: int, sigma: float = 1.0
) -> np.ndarray:
    """A smooth random field with zero mean and unit standard deviation.

    Parameters
    ----------
    rng
        Random generator.
    shape
        Output ``(H, W)``.
    cells
        Number of independent random values along the longer side (feature size
        is about ``1 / cells`` of the frame).
    sigma
        Gaussian blur in coarse cells.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of shape ``shape``.
    """
    ratio = shape[0] / shape[1]
    coarse = (max(4, round(cells * min(1.0, ratio))), max(4, round(cells * min(1.0, 1 / ratio))))
    field = rng.standard_normal(coarse).astype(np.float32)
    if sigma > 0:
        field = ndi.gaussian_filter(field, sigma, mode="reflect")
    field -= field.mean()
    field /= max(float(field.std()), 1e-6)
    return resize(field, shape)
