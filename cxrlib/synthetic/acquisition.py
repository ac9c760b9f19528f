"""From density to radiograph: exposure, processing, noise, collimation, markers, devices.

The detector response is ``1 - exp(-gain * density)`` followed by a gamma curve
and a black level (the site's "look"), a large-kernel unsharp mask (the edge
enhancement of digital radiography), a slight heel-effect gradient and
signal-dependent noise. The result is stretched to the full ``[0, 1]`` range, as
the real exports are (every real image has pixels at 0 and at 255). Overlays are
drawn last: lead side markers ("R"/"L"), the Montgomery "PA"/"ERECT" labels and
sometimes ECG electrodes with their leads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage as ndi

from ._canvas import Canvas, resize
from .sites import SiteProfile

__all__ = ["Exposure", "sample_exposure", "expose", "draw_overlays"]


@dataclass
class Exposure:
    """Acquisition parameters of one radiograph."""

    gain: float
    gamma: float
    black: float
    noise: float
    sharpen: float
    heel: float
    bands: tuple[float, float, float, float]  # top, bottom, left, right (fractions)


def sample_exposure(rng: np.random.Generator, profile: SiteProfile) -> Exposure:
    """Draw exposure and processing parameters for ``profile``'s site."""
    bottom = rng.uniform(0.02, 0.2) if rng.random() < profile.collimation_p else 0.0
    sides = [rng.uniform(0.005, 0.1) if rng.random() < profile.collimation_p * 0.4 else 0.0]
    sides.append(rng.uniform(0.005, 0.1) if rng.random() < profile.collimation_p * 0.4 else 0.0)
    top = rng.uniform(0.005, 0.02) if rng.random() < profile.collimation_p * 0.15 else 0.0
    return Exposure(
        gain=rng.uniform(*profile.gain),
        gamma=rng.uniform(*profile.gamma),
        black=rng.uniform(*profile.black),
        noise=rng.uniform(*profile.noise),
        sharpen=rng.uniform(0.2, 0.7),
        heel=rng.normal(0.0, 0.04),
        bands=(top, bottom, sides[0], sides[1]),
    )


def _blur_large(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur with a large sigma, computed on a 4x smaller image."""
    small_shape = (max(8, image.shape[0] // 4), max(8, image.shape[1] // 4))
    small = resize(image, small_shape)
    small = ndi.gaussian_filter(small, sigma_px / 4, mode="nearest")
    return resize(small, image.shape)


def expose(density: np.ndarray, exposure: Exposure, rng: np.random.Generator) -> np.ndarray:
    """Turn a density map into a processed radiograph.

    Parameters
    ----------
    density
        ``float32 (H, W)``: attenuation, about 0 (air) to 1.5.
    exposure
        Acquisition parameters.
    rng
        Random generator for the noise (consumed).

    Returns
    -------
    numpy.ndarray
        ``float32 (H, W)`` in ``[0, 1]`` with 0 and 1 both present.
    """
    height, width = density.shape
    gain = np.float32(exposure.gain)
    top = np.float32(1.0 - math.exp(-exposure.gain * 1.5))
    image = (1.0 - np.exp(-gain * np.maximum(density, 0.0))) / top
    np.clip(image, 0.0, 1.0, out=image)
    image **= np.float32(exposure.gamma)
    image = np.float32(exposure.black) + np.float32(1 - exposure.black) * image
    heel = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
    image *= np.float32(1.0) + np.float32(exposure.heel) * heel
    sharp = np.float32(exposure.sharpen)
    image += sharp * (image - _blur_large(image, 0.025 * max(height, width)))
    grain = rng.standard_normal((height, width), dtype=np.float32)
    grain = ndi.gaussian_filter(grain, 0.6)
    grain *= np.float32(exposure.noise * 1.6) * np.sqrt(np.clip(image, 0.02, 1.0))
    image += grain
    image = _collimate(image, exposure.bands)
    lo, hi = float(image.min()), float(image.max())
    image -= np.float32(lo)
    image /= np.float32(max(hi - lo, 1e-6))  # division: the maximum becomes exactly 1
    return np.clip(image, 0.0, 1.0)


def _collimate(image: np.ndarray, bands: tuple[float, float, float, float]) -> np.ndarray:
    height, width = image.shape
    top, bottom, left, right = bands
    keep = np.ones((height, width), np.float32)
    if top:
        keep[: max(1, round(top * height)), :] = 0.0
    if bottom:
        keep[height - max(1, round(bottom * height)) :, :] = 0.0
    if left:
        keep[:, : max(1, round(left * width))] = 0.0
    if right:
        keep[:, width - max(1, round(right * width)) :] = 0.0
    if keep.all():
        return image
    keep = ndi.uniform_filter(keep, 3)
    floor = np.float32(image.min())
    return floor + (image - floor) * keep


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=max(6, size))
    except (TypeError, OSError):  # Pillow built without FreeType
        return ImageFont.load_default()


def _text_layer(shape: tuple[int, int], items) -> np.ndarray:
    """Render text/rectangle items into a ``float32`` layer: 1 white, -1 black, 0 none."""
    height, width = shape
    layer = Image.new("F", (width, height), 0.0)
    draw = ImageDraw.Draw(layer)
    for kind, args in items:
        if kind == "text":
            xy, text, size, value = args
            draw.text(xy, text, fill=value, font=_font(size))
        elif kind == "rect":
            box, value = args
            draw.rectangle(box, fill=value)
        elif kind == "ring":
            box, width_px, value = args
            draw.ellipse(box, outline=value, width=width_px)
        elif kind == "dot":
            box, value = args
            draw.ellipse(box, fill=value)
        elif kind == "line":
            points, width_px, value = args
            draw.line(points, fill=value, width=width_px)
    return np.asarray(layer, np.float32)


def _markers(rng: np.random.Generator, profile: SiteProfile, shape: tuple[int, int]) -> list:
    height, width = shape
    items: list = []
    scale = min(height, width)
    if rng.random() < 0.85:
        letter = str(rng.choice(profile.letters))
        size = round(scale * rng.uniform(0.045, 0.07))
        left_corner = (letter == "R") == (profile.name == "montgomery") or rng.random() < 0.2
        x = rng.uniform(0.02, 0.08) * width
        if not left_corner:
            x = width - x - size * 0.7
        y = rng.uniform(0.01, 0.06) * height
        items.append(("text", ((x, y), letter, size, 1.0)))
        if profile.name == "shenzhen" and rng.random() < 0.5:
            small = max(6, round(size * 0.45))
            items.append(
                (
                    "text",
                    ((x + size * 0.9, y + size * 1.1), str(rng.choice(["pa", "ap"])), small, 0.9),
                )
            )
    if rng.random() < profile.text_boxes_p:
        size = max(6, round(scale * rng.uniform(0.025, 0.032)))
        x = width * rng.uniform(0.7, 0.8)
        y = height * rng.uniform(0.01, 0.04)
        for k, word in enumerate(("PA", "ERECT")):
            w_box = size * (0.75 * len(word) + 0.6)
            box_x = x + (0 if k == 0 else -size * 0.8)
            box_y = y + k * size * 1.5
            items.append(("rect", ((box_x, box_y, box_x + w_box, box_y + size * 1.25), 1.0)))
            items.append(("text", ((box_x + size * 0.3, box_y + size * 0.1), word, size, -1.0)))
    return items


def _devices(rng: np.random.Generator, canvas: Canvas) -> list:
    items: list = []
    if rng.random() >= 0.15:
        return items
    px = 1.0 / canvas.px
    for _ in range(int(rng.integers(1, 4))):
        u = rng.uniform(-0.65, 0.65)
        v = rng.uniform(-0.15, 0.4) if abs(u) > 0.3 else rng.uniform(-0.15, 0.1)
        col, row = canvas.to_pixels(np.array([u]), np.array([v]))
        col, row = float(col[0]), float(row[0])
        r = max(2.0, 0.022 * px)
        items.append(("ring", ((col - r, row - r, col + r, row + r), max(1, round(r / 4)), 0.95)))
        items.append(("dot", ((col - r / 3, row - r / 3, col + r / 3, row + r / 3), 1.0)))
        # Lead wire: a gentle curve leaving the frame.
        end_col = rng.choice([-5.0, canvas.shape[1] + 5.0]) if rng.random() < 0.6 else col
        end_row = -5.0 if end_col == col else rng.uniform(0, canvas.shape[0])
        bend = rng.normal(0.0, 0.2 * canvas.shape[1], 2)
        t = np.linspace(0.0, 1.0, 24)[:, None]
        start, end = np.array([col, row]), np.array([end_col, end_row])
        mid = (start + end) / 2 + bend
        curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * mid + t**2 * end
        width_px = max(1, round(0.004 * px))
        items.append(("line", ([tuple(p) for p in curve.tolist()], width_px, 0.85)))
    return items


def draw_overlays(
    image: np.ndarray, canvas: Canvas, rng: np.random.Generator, profile: SiteProfile
) -> np.ndarray:
    """Draw markers, labels and devices onto a radiograph (in place and returned).

    Parameters
    ----------
    image
        ``float32 (H, W)`` radiograph in ``[0, 1]``.
    canvas
        The phantom's canvas (for device positions).
    rng
        Random generator (consumed).
    profile
        Site profile (marker letters, text boxes).

    Returns
    -------
    numpy.ndarray
        The same array with overlays, still spanning exactly ``[0, 1]``.
    """
    items = _markers(rng, profile, image.shape) + _devices(rng, canvas)
    if not items:
        return image
    layer = _text_layer(image.shape, items)
    white = layer > 0
    image[white] = np.maximum(image[white], layer[white])
    image[layer < 0] = 0.0
    # Keep the full [0, 1] range (a marker may have covered the darkest pixel).
    lo, hi = float(image.min()), float(image.max())
    if lo > 0.0 or hi < 1.0:
        image -= np.float32(lo)
        image /= np.float32(max(hi - lo, 1e-6))  # division: the maximum becomes exactly 1
        np.clip(image, 0.0, 1.0, out=image)
    return image
