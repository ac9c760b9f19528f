"""Tuberculosis manifestations and benign findings drawn into a phantom's lungs.

TB phantoms (label 1) get one to three of the patterns seen in the Montgomery
and Shenzhen sets, at a random severity (some subtle):

* patchy upper-zone infiltrates (consolidation replaces lung air);
* cavities (a thick-walled ring around extra air);
* nodules, and the miliary pattern (hundreds of tiny nodules in both lungs);
* fibrotic streaks pulling towards the hilum;
* pleural effusion: a meniscus-shaped opacity that blunts the costophrenic angle.
  Like the real masks, the effusion is *excluded* from the lung mask.

Normal phantoms may carry a benign calcified granuloma. Every finding is reported
as a short string such as ``"cavity left upper zone"`` (patient's sides).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from ._canvas import Canvas, ramp, resize, smooth_noise, smoothstep
from .anatomy import Anatomy, Lung, LungFields

__all__ = ["Finding", "Pathology", "draw_pathology", "ZONES"]

#: Height fractions (apex 0, costophrenic angle 1) of the three lung zones.
ZONES: dict[str, tuple[float, float]] = {
    "upper": (0.06, 0.36),
    "middle": (0.36, 0.66),
    "lower": (0.66, 0.92),
}
_SIDE_NAME = {-1: "right", 1: "left"}


@dataclass(frozen=True)
class Finding:
    """One drawn finding: ``kind`` (e.g. ``"cavity"``), patient side, zone."""

    kind: str
    side: str
    zone: str = ""

    def __str__(self) -> str:
        if self.kind == "pleural effusion":
            return f"pleural effusion {self.side}"
        if self.side == "bilateral":
            return f"{self.kind} bilateral"
        return f"{self.kind} {self.side} {self.zone} zone"


@dataclass
class Pathology:
    """Maps of drawn findings (all ``float32 (H, W)`` except ``exclude``).

    Attributes
    ----------
    opacity
        Fraction of lung air replaced by tissue or fluid, in ``[0, 1]``.
    density
        Extra density independent of air (calcification).
    lucency
        Extra air (cavity lumens).
    exclude
        ``bool`` pixels removed from the lung mask (pleural effusion).
    findings
        What was drawn.
    severity
        0 for normals, else in ``(0, 1]``.
    """

    opacity: np.ndarray
    density: np.ndarray
    lucency: np.ndarray
    exclude: np.ndarray
    findings: list[Finding] = field(default_factory=list)
    severity: float = 0.0


def _zone_point(rng: np.random.Generator, lung: Lung, zone: str) -> tuple[float, float]:
    lo, hi = ZONES[zone]
    return lung.point(rng.uniform(lo, hi), rng.uniform(0.25, 0.85))


def _pick_zone(rng: np.random.Generator, upper: float = 0.75) -> str:
    r = rng.random()
    return "upper" if r < upper else ("middle" if r < upper + 0.7 * (1 - upper) else "lower")


def _blob(canvas: Canvas, cu: float, cv: float, radius: float, reach: float = 3.0):
    """Window and squared normalised distance around a point."""
    win = canvas.window(
        cu - reach * radius, cu + reach * radius, cv - reach * radius, cv + reach * radius
    )
    r2 = (
        (canvas.u[win] - np.float32(cu)) ** 2 + (canvas.v[win] - np.float32(cv)) ** 2
    ) * np.float32(1.0 / radius**2)
    return win, r2


def _infiltrate(rng, coarse: Canvas, centre, radius: float, amount: float, out: np.ndarray) -> None:
    win, r2 = _blob(coarse, centre[0], centre[1], radius, reach=2.5)
    if r2.size == 0:
        return
    patch = smooth_noise(rng, r2.shape, cells=max(4, int(r2.shape[1] / 3)), sigma=0.8)
    patch = smoothstep(np.float32(0.5) + np.float32(0.45) * patch)
    out[win] = np.maximum(out[win], np.float32(amount) * np.exp(-r2) * (0.25 + 0.75 * patch))


def _cavity(
    canvas: Canvas, centre, radius: float, wall: float, amount: float, phase, path: Pathology
) -> None:
    win, r2 = _blob(canvas, centre[0], centre[1], radius, reach=1.6)
    if r2.size == 0:
        return
    rho = np.sqrt(r2)
    # An irregular outline: the radius wobbles around the cavity.
    angle = np.arctan2(canvas.v[win] - np.float32(centre[1]), canvas.u[win] - np.float32(centre[0]))
    rho = rho * (np.float32(1.0) + np.float32(0.12) * np.sin(2 * angle + phase[0]))
    rho *= np.float32(1.0) + np.float32(0.07) * np.sin(3 * angle + phase[1])
    inner = np.float32(1.0 - wall)
    ring = np.exp(-(((rho - (1 + inner) / 2) / np.float32(wall * 0.8)) ** 2))
    path.opacity[win] = np.maximum(path.opacity[win], np.float32(amount) * ring)
    lumen = ramp(inner - rho, np.float32(canvas.px / radius) * 2)
    path.lucency[win] += np.float32(0.25 * amount) * lumen


def _nodule(canvas: Canvas, centre, radius: float, amount: float, out: np.ndarray, add=False):
    win, r2 = _blob(canvas, centre[0], centre[1], radius, reach=1.5)
    if r2.size == 0:
        return
    disc = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0)) * ramp(1.0 - r2, np.float32(canvas.px / radius))
    if add:
        out[win] += np.float32(amount) * disc
    else:
        out[win] = np.maximum(out[win], np.float32(amount) * disc)


def _miliary(rng, canvas: Canvas, lungs: LungFields, amount: float, out: np.ndarray) -> None:
    inside = np.flatnonzero(lungs.visible.ravel() > 0.5)
    if inside.size == 0:
        return
    count = int(rng.integers(800, 1800) * inside.size / (0.25 * lungs.visible.size))
    points = rng.choice(inside, size=max(count, 1))
    impulses = np.zeros(lungs.visible.size, np.float32)
    np.add.at(impulses, points, 1.0)
    sigma = max(0.6, 0.0035 / canvas.px)
    dots = ndi.gaussian_filter(impulses.reshape(lungs.visible.shape), sigma)
    dots *= np.float32(2 * math.pi * sigma * sigma * amount)
    np.maximum(out, np.minimum(dots, 1.0), out=out)


def _effusion(canvas: Canvas, lung: Lung, level: float, curve: float, path: Pathology) -> None:
    lo, hi = sorted((0.0, lung.side * (lung.width + 0.15)))
    v_top = lung.v_apex + level * lung.height
    win = canvas.window(lo, hi, v_top - 0.05, lung.v_cp + 0.1)
    u, v = canvas.u[win], canvas.v[win]
    if u.size == 0:
        return
    x = np.clip(u * np.float32(lung.side / lung.width), 0.0, 1.2)
    meniscus = np.float32(v_top) + np.float32(curve) * (1 - np.minimum(x, 1.0)) ** 2
    fluid = smoothstep((v - meniscus) * np.float32(1 / 0.035) + 0.5)
    path.opacity[win] = np.maximum(path.opacity[win], fluid)
    path.exclude[win] |= fluid > 0.5


def _streaks(rng, canvas: Canvas, lung: Lung, hilum, zone: str, amount: float, out: np.ndarray):
    height, width = canvas.shape
    image = Image.new("F", (width, height), 0.0)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 8))):
        u0, v0 = _zone_point(rng, lung, zone)
        pts_u = np.linspace(u0, u0 + 0.55 * (hilum[0] - u0), 6) + rng.normal(0, 0.008, 6)
        pts_v = np.linspace(v0, v0 + 0.55 * (hilum[1] - v0), 6) + rng.normal(0, 0.008, 6)
        cols, rows = canvas.to_pixels(pts_u, pts_v)
        w = max(1, round(rng.uniform(0.004, 0.009) / canvas.px))
        draw.line(list(zip(cols.tolist(), rows.tolist(), strict=True)), fill=1.0, width=w)
    lines = ndi.gaussian_filter(np.asarray(image, np.float32), 1.2)
    np.maximum(out, np.float32(amount) * np.minimum(lines * 1.5, 1.0), out=out)


def _granuloma(rng, canvas: Canvas, anatomy: Anatomy, path: Pathology) -> None:
    side = int(rng.choice([-1, 1]))
    lung = anatomy.left if side > 0 else anatomy.right
    zone = _pick_zone(rng, upper=0.4)
    centre = _zone_point(rng, lung, zone)
    _nodule(canvas, centre, rng.uniform(0.006, 0.013), rng.uniform(0.25, 0.5), path.density, True)
    path.findings.append(Finding("calcified granuloma", _SIDE_NAME[side], zone))


def _tb(rng, canvas: Canvas, coarse: Canvas, anatomy: Anatomy, lungs: LungFields, path: Pathology):
    severity = float(np.clip(rng.beta(1.6, 1.8), 0.08, 1.0))
    path.severity = severity
    main = int(rng.choice([-1, 1]))
    sides = [main, -main] if rng.random() < 0.35 else [main]
    miliary = rng.random() < 0.07
    kinds = []
    if miliary:
        kinds.append("miliary")
    for kind, p in (
        ("infiltrate", 0.8),
        ("cavity", 0.3),
        ("nodules", 0.3),
        ("fibrosis", 0.25),
        ("effusion", 0.14),
    ):
        if rng.random() < p * (0.4 if miliary else 1.0):
            kinds.append(kind)
    if not kinds:
        kinds.append("infiltrate")
    strength = 0.25 + 0.6 * severity
    coarse_opacity = np.zeros(coarse.shape, np.float32)
    for kind in kinds:
        if kind == "miliary":
            _miliary(rng, canvas, lungs, (0.05 + 0.08 * severity), path.opacity)
            path.findings.append(Finding("miliary pattern", "bilateral"))
            continue
        if kind == "effusion":
            side = sides[-1] if len(sides) > 1 and rng.random() < 0.5 else main
            lung = anatomy.left if side > 0 else anatomy.right
            level = rng.uniform(0.93, 0.99) - 0.25 * severity * rng.random()
            _effusion(canvas, lung, level, rng.uniform(0.06, 0.16), path)
            path.findings.append(Finding("pleural effusion", _SIDE_NAME[side]))
            continue
        for side in sides:
            lung = anatomy.left if side > 0 else anatomy.right
            zone = _pick_zone(rng, upper=0.8 if kind != "nodules" else 0.55)
            centre = _zone_point(rng, lung, zone)
            if kind == "infiltrate":
                radius = (0.06 + 0.18 * severity) * rng.uniform(0.8, 1.25)
                _infiltrate(rng, coarse, centre, radius, strength, coarse_opacity)
                if rng.random() < 0.5:
                    other = _zone_point(rng, lung, zone)
                    _infiltrate(rng, coarse, other, radius * 0.6, strength * 0.8, coarse_opacity)
                path.findings.append(Finding("infiltrate", _SIDE_NAME[side], zone))
            elif kind == "cavity":
                radius = rng.uniform(0.025, 0.05) * (0.7 + 0.6 * severity)
                _infiltrate(rng, coarse, centre, radius * 2.2, strength * 0.6, coarse_opacity)
                wall = rng.uniform(0.25, 0.5)
                phase = rng.uniform(0, 2 * math.pi, 2)
                _cavity(canvas, centre, radius, wall, 0.3 + 0.45 * severity, phase, path)
                path.findings.append(Finding("cavity", _SIDE_NAME[side], zone))
            elif kind == "nodules":
                for _ in range(int(rng.integers(1, 6))):
                    spot = _zone_point(rng, lung, zone)
                    size = rng.uniform(0.009, 0.025)
                    _nodule(canvas, spot, size, rng.uniform(0.35, 0.8) * strength, path.opacity)
                path.findings.append(Finding("nodules", _SIDE_NAME[side], zone))
            elif kind == "fibrosis":
                hilum = anatomy.hila[0 if side < 0 else 1]
                _streaks(rng, canvas, lung, hilum, "upper", 0.2 + 0.35 * severity, path.opacity)
                path.findings.append(Finding("fibrotic streaks", _SIDE_NAME[side], "upper"))
    if coarse_opacity.any():
        np.maximum(path.opacity, resize(coarse_opacity, canvas.shape), out=path.opacity)


def draw_pathology(
    rng: np.random.Generator,
    canvas: Canvas,
    coarse: Canvas,
    anatomy: Anatomy,
    lungs: LungFields,
    label: int,
) -> Pathology:
    """Draw findings for a phantom.

    Parameters
    ----------
    rng
        Random generator (consumed).
    canvas, coarse
        Full-resolution canvas and a coarser one for smooth opacities.
    anatomy, lungs
        The phantom's anatomy and lung maps.
    label
        0 (normal: at most a benign granuloma) or 1 (tuberculosis).

    Returns
    -------
    Pathology
        Maps of shape ``canvas.shape`` and the list of findings.
    """
    shape = canvas.shape
    path = Pathology(
        opacity=np.zeros(shape, np.float32),
        density=np.zeros(shape, np.float32),
        lucency=np.zeros(shape, np.float32),
        exclude=np.zeros(shape, bool),
    )
    if label == 1:
        _tb(rng, canvas, coarse, anatomy, lungs, path)
    if rng.random() < (0.12 if label == 0 else 0.2):
        _granuloma(rng, canvas, anatomy, path)
    np.clip(path.opacity, 0.0, 1.0, out=path.opacity)
    return path
