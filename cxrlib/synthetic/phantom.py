"""One procedural chest radiograph with its exact lung mask: :func:`make_phantom`."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ._canvas import Canvas, Placement, resize
from .acquisition import draw_overlays, expose, sample_exposure
from .anatomy import render_lungs, render_soft_tissue, sample_anatomy
from .bones import render_bones, sample_skeleton
from .markings import render_markings
from .pathology import Finding, draw_pathology
from .sites import SiteProfile, get_profile

__all__ = ["Phantom", "make_phantom", "compose_reading", "as_generator", "MIN_SIZE"]

#: Smallest image side accepted.
MIN_SIZE = 32

_SIDE_WORD = {"right": "right", "left": "left", "bilateral": "bilateral"}


@dataclass(eq=False)
class Phantom:
    """A synthetic chest radiograph.

    Attributes
    ----------
    image
        ``float32 (H, W)`` in ``[0, 1]`` (0 black); lungs are dark.
    mask
        ``bool (H, W)``: both lungs, without the parts hidden by the heart and
        mediastinum and without pleural effusions (like the real masks).
    site
        ``"montgomery"`` or ``"shenzhen"``.
    label
        0 normal, 1 tuberculosis.
    sex, age
        ``"F"``/``"M"`` and age in years.
    findings
        What was drawn, e.g. ``["cavity left upper zone"]`` (patient's sides).
    reading
        The clinical reading text in the site's format.
    left_mask
        ``bool (H, W)``: the patient's left lung (image right), a subset of ``mask``.
    severity
        TB severity in ``(0, 1]`` (0 for normals).
    """

    image: np.ndarray
    mask: np.ndarray
    site: str
    label: int
    sex: str
    age: int
    findings: list[str] = field(default_factory=list)
    reading: str = ""
    left_mask: np.ndarray | None = None
    severity: float = 0.0

    @property
    def right_mask(self) -> np.ndarray:
        """``bool (H, W)``: the patient's right lung (image left)."""
        left = self.left_mask if self.left_mask is not None else np.zeros_like(self.mask)
        return self.mask & ~left

    def __repr__(self) -> str:
        return (
            f"Phantom(site={self.site!r}, label={self.label}, sex={self.sex!r}, age={self.age}, "
            f"shape={self.image.shape}, lung_fraction={self.mask.mean():.3f}, "
            f"findings={self.findings!r})"
        )


def as_generator(rng_or_seed: object) -> np.random.Generator:
    """Return a NumPy Generator from a Generator, SeedSequence, int or None."""
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    if isinstance(rng_or_seed, np.random.SeedSequence):
        return np.random.default_rng(rng_or_seed)
    if rng_or_seed is None or (
        isinstance(rng_or_seed, numbers.Integral) and not isinstance(rng_or_seed, bool)
    ):
        if rng_or_seed is not None and int(rng_or_seed) < 0:
            raise ValueError(f"rng_or_seed must be a non-negative integer, got {rng_or_seed}")
        return np.random.default_rng(rng_or_seed)
    raise ValueError(
        "rng_or_seed must be an int seed, a numpy.random.Generator or a SeedSequence; "
        f"got {type(rng_or_seed).__name__}"
    )


def _check_args(site: str, label: object, size: object, aspect: object) -> SiteProfile:
    profile = get_profile(site)
    if label not in (0, 1) or isinstance(label, bool | float):
        raise ValueError(f"label must be 0 (normal) or 1 (tuberculosis), got {label!r}")
    if not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < MIN_SIZE:
        raise ValueError(f"size must be an integer >= {MIN_SIZE}, got {size!r}")
    if aspect is not None:
        ok = isinstance(aspect, numbers.Real) and math.isfinite(aspect) and 0.5 <= aspect <= 2.0
        if not ok:
            raise ValueError(
                f"aspect must be None or a height/width ratio in [0.5, 2], got {aspect!r}"
            )
    return profile


def _demographics(rng: np.random.Generator, profile: SiteProfile) -> tuple[str, int]:
    sex = "M" if rng.random() < profile.male_p else "F"
    lo, hi = profile.age_range
    age = int(np.clip(round(rng.normal(*profile.age)), lo, hi))
    return sex, age


def _frame(
    rng: np.random.Generator, profile: SiteProfile, size: int, aspect: float | None
) -> tuple[tuple[int, int], float, float]:
    """Pixel shape, physical aspect (height/width) and a patient-size factor."""
    mean, sd = profile.aspect
    natural = mean + rng.normal(0.0, sd) if sd else mean
    landscape = rng.random() < profile.landscape_p
    if landscape:
        natural = 1.0 / natural
    physical = natural if aspect is None else float(aspect)
    # The patient is the same size whatever the film: scale by the film's width.
    width_factor = 1.0 / max(natural, 1.0 / natural) if landscape else 1.0
    if aspect is None:
        shape = (size, size)
    elif physical >= 1.0:
        shape = (size, max(MIN_SIZE // 2, round(size / physical)))
    else:
        shape = (max(MIN_SIZE // 2, round(size * physical)), size)
    return shape, physical, width_factor


def _placement(
    rng: np.random.Generator, profile: SiteProfile, physical: float, width_factor: float
) -> Placement:
    scale = rng.normal(*profile.lung_scale) * width_factor
    scale = float(np.clip(scale, 0.5, 0.98))
    apex = float(np.clip(rng.normal(*profile.apex_y), 0.02, 0.25))
    y0 = apex * physical
    # Keep the lungs inside the frame.
    y0 = min(y0, physical - 1.05 * scale)
    return Placement(
        x0=float(rng.normal(0.0, 0.02)),
        y0=max(0.01, y0),
        scale=scale,
        angle=float(np.clip(rng.normal(0.0, math.radians(1.8)), -0.09, 0.09)),
    )


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 4-connected component (drops one-pixel specks at sharp tips)."""
    labels, count = ndi.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def compose_reading(
    site: str, sex: str, age: int, label: int, findings: list[Finding], rng: np.random.Generator
) -> str:
    """Write a clinical reading in the site's format.

    Montgomery: ``Patient's Sex: F\\nPatient's Age: 047Y\\n<finding>``;
    Shenzhen: ``male 35yrs\\n<finding>`` (or ``female, 45yr``). The finding is
    ``normal`` for normals, else a description of the drawn TB findings.
    """
    text = _describe(site, label, findings, rng)
    if site == "montgomery":
        return f"Patient's Sex: {sex}\nPatient's Age: {age:03d}Y\n{text}\n"
    word = "male" if sex == "M" else "female"
    sep = ", " if rng.random() < 0.3 else " "
    unit = "yrs" if rng.random() < 0.7 else "yr"
    return f"{word}{sep}{age}{unit}\n{text}\n"


def _describe(site: str, label: int, findings: list[Finding], rng: np.random.Generator) -> str:
    if label == 0:
        return "normal"
    tb = [f for f in findings if f.kind != "calcified granuloma"]
    sides = {f.side for f in tb if f.kind not in ("pleural effusion", "miliary pattern")}
    effusion = [f.side for f in tb if f.kind == "pleural effusion"]
    kinds = {f.kind for f in tb}
    zone = next((f.zone for f in tb if f.zone), "upper")
    if site == "montgomery":
        parts = []
        for f in tb:
            if f.kind == "pleural effusion":
                parts.append(f"{f.side} pleural effusion")
            elif f.kind == "miliary pattern":
                parts.append("diffuse miliary nodules")
            else:
                lobe = {"upper": "upper lobe", "middle": "mid lung", "lower": "lower lobe"}[f.zone]
                parts.append(f"{f.side} {lobe} {f.kind}")
        return ", ".join(dict.fromkeys(parts)) + ", consistent with tuberculosis"
    if "miliary pattern" in kinds:
        text = "miliary PTB"
    elif len(sides) > 1:
        text = "bilateral secondary PTB" if rng.random() < 0.5 else "bilateral PTB"
    elif sides:
        text = f"PTB in the {next(iter(sides))} {zone} field"
    else:
        text = "PTB"
    if "cavity" in kinds:
        text += " with cavitation"
    if "fibrotic streaks" in kinds:
        text += ", fibrous lesions"
    if effusion:
        text += f" with {effusion[0]} pleural effusion"
    return text


def make_phantom(
    rng_or_seed: object = None,
    *,
    site: str = "montgomery",
    label: int = 0,
    size: int = 512,
    aspect: float | None = None,
) -> Phantom:
    """Draw one synthetic chest radiograph with its lung mask.

    Parameters
    ----------
    rng_or_seed
        An int seed, a ``numpy.random.SeedSequence`` or a ``Generator`` (consumed).
        The same seed gives the same phantom; None draws fresh entropy.
    site
        ``"montgomery"`` (portrait film squeezed into the square frame, high
        contrast, black around the body) or ``"shenzhen"`` (square, brighter and
        flatter, smaller lungs in the frame).
    label
        0 normal, 1 tuberculosis.
    size
        Image side in pixels (at least 32).
    aspect
        None for the square compilation frame; otherwise the frame's height /
        width ratio (e.g. ``4892 / 4020`` for a Montgomery portrait film), and
        the longer side has ``size`` pixels.

    Returns
    -------
    Phantom
        ``image`` ``float32 (H, W)`` in ``[0, 1]`` and ``mask`` ``bool (H, W)``.

    Raises
    ------
    ValueError
        For an unknown site, a label other than 0/1, a size below 32 or a bad aspect.
    """
    profile = _check_args(site, label, size, aspect)
    rng = as_generator(rng_or_seed)
    sex, age = _demographics(rng, profile)
    anatomy = sample_anatomy(rng, profile, sex, age)
    skeleton = sample_skeleton(rng, profile.rib)
    exposure = sample_exposure(rng, profile)
    shape, physical, width_factor = _frame(rng, profile, int(size), aspect)
    canvas = Canvas(shape[0], shape[1], physical, _placement(rng, profile, physical, width_factor))
    coarse = canvas.scaled(2)

    lungs = render_lungs(canvas, anatomy)
    path = draw_pathology(rng, canvas, coarse, anatomy, lungs, int(label))
    soft = resize(render_soft_tissue(coarse, anatomy, rng), shape)
    marks = resize(render_markings(coarse, anatomy, rng), shape)
    bones = render_bones(canvas, coarse, anatomy, skeleton, rng)

    clear = np.float32(1.0) - path.opacity
    air = lungs.air * clear + path.lucency * lungs.visible
    density = soft + bones + path.density
    density -= np.float32(anatomy.air) * air
    density += marks * lungs.air * clear
    image = expose(density, exposure, rng)
    image = draw_overlays(image, canvas, rng, profile)

    mask = (lungs.visible > 0.5) & ~path.exclude
    left = _largest_component(lungs.left & mask)
    mask = left | _largest_component(mask & ~lungs.left)
    return Phantom(
        image=image.astype(np.float32, copy=False),
        mask=mask,
        site=site,
        label=int(label),
        sex=sex,
        age=age,
        findings=[str(f) for f in path.findings],
        reading=compose_reading(site, sex, age, int(label), path.findings, rng),
        left_mask=left,
        severity=path.severity,
    )
