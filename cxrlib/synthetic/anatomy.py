"""Soft-tissue anatomy of a chest phantom: lungs, mediastinum and heart, diaphragm, body.

Everything is drawn as *density* (X-ray attenuation, arbitrary units: about 1 for
the full thickness of the chest, 0 for air around the body); :mod:`.acquisition`
turns density into a radiograph. Shapes are smooth PCHIP curves through randomly
jittered knots (see :class:`._canvas.Curve`), in patient coordinates (see
:mod:`._canvas`).

Lungs follow the convention of the real masks: a lung's mask is the part of the
lung that is not hidden by the heart and mediastinum (its *visible* region); the
lung behind the heart (its *hidden* part) still darkens the image a little.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._canvas import Canvas, Curve, ramp, smooth_noise, smoothstep
from .sites import SiteProfile

__all__ = [
    "Lung",
    "Body",
    "Anatomy",
    "LungFields",
    "sample_anatomy",
    "render_lungs",
    "render_soft_tissue",
]

# Knot positions along q = sqrt(t) (t = 0 at the apex, 1 at the costophrenic angle).
_LATERAL_Q = np.array([0.0, 0.15, 0.3, 0.5, 0.7, 0.85, 1.0])
_LATERAL_F = np.array([0.0, 0.24, 0.44, 0.66, 0.85, 0.95, 1.0])
_DOME_X = np.array([0.0, 0.15, 0.3, 0.45, 0.6, 0.75, 0.88, 1.0])
_DOME_F = np.array([0.72, 0.88, 0.97, 1.0, 0.93, 0.72, 0.42, 0.0])


@dataclass
class Lung:
    """One lung's outline in patient coordinates.

    Attributes
    ----------
    side
        -1 for the patient's right lung (image left), +1 for the left lung.
    v_apex, v_cp
        Heights of the apex and of the costophrenic angle.
    width
        Distance from the midline to the costophrenic angle.
    lateral, cap
        Lateral border and medial side of the apical cap, as distance from the
        midline over ``q = sqrt(t)``.
    medial, hidden
        Visible medial border (mediastinum, heart) and anatomical medial border
        (behind the heart), as distance from the midline over ``v``.
    dome_height, dome
        Height of the diaphragm dome above the costophrenic angle and its shape
        over ``x = d / width``.
    """

    side: int
    v_apex: float
    v_cp: float
    width: float
    lateral: Curve
    cap: Curve
    medial: Curve
    hidden: Curve
    dome_height: float
    dome: Curve

    @property
    def height(self) -> float:
        """Apex-to-costophrenic-angle height."""
        return self.v_cp - self.v_apex

    def dome_v(self, d: np.ndarray) -> np.ndarray:
        """Height of the diaphragm under the lung at distance ``d`` from the midline."""
        return np.float32(self.v_cp) - np.float32(self.dome_height) * self.dome(
            np.asarray(d, np.float32) * np.float32(1.0 / self.width)
        )

    def point(self, t: float, s: float) -> tuple[float, float]:
        """Patient coordinates of a point inside the visible lung.

        Parameters
        ----------
        t
            Height fraction (0 apex, 1 costophrenic angle).
        s
            Fraction across the lung (0 medial border, 1 lateral border).
        """
        t = float(np.clip(t, 0.02, 0.98))
        v = self.v_apex + t * self.height
        q = math.sqrt(t)
        d_med = max(float(self.medial(v)), float(self.cap(q)))
        d_lat = float(self.lateral(q))
        d = d_med + float(np.clip(s, 0.0, 1.0)) * (d_lat - d_med)
        v = min(v, float(self.dome_v(d)) - 0.02)
        return self.side * d, v


@dataclass
class Body:
    """Body outline and soft-tissue extras.

    Attributes
    ----------
    torso
        Half width of the torso over ``v``.
    arm_gap, arm_width, arm_top
        Gap between arm and chest wall (at the axilla and below), arm half
        width, and height of the top of the shoulder.
    abdomen
        Extra density below the diaphragm.
    mediastinum
        Extra density of the mediastinum and heart.
    breast
        Breast-shadow density (0 for none), centre height and radii.
    bubble
        Gastric air bubble ``(u, v, ru, rv, density)`` or None.
    trachea
        Density removed by the tracheal air column.
    bowel
        Density removed by bowel gas in the upper abdomen.
    """

    torso: Curve
    arm_gap: float
    arm_width: float
    arm_top: float
    abdomen: float
    mediastinum: float
    breast: float
    breast_v: float
    breast_r: tuple[float, float]
    bubble: tuple[float, float, float, float, float] | None
    trachea: float
    bowel: float


@dataclass
class Anatomy:
    """All soft-tissue parameters of one phantom."""

    right: Lung
    left: Lung
    body: Body
    heart_scale: float
    hila: tuple[tuple[float, float], tuple[float, float]]
    air: float

    @property
    def lungs(self) -> tuple[Lung, Lung]:
        """(right lung, left lung)."""
        return (self.right, self.left)


@dataclass
class LungFields:
    """Lung maps on a canvas.

    Attributes
    ----------
    visible
        ``float32 (H, W)`` anti-aliased visible lung (mask before pathology).
    air
        ``float32 (H, W)`` air thickness in ``[0, 1]`` (includes the lung behind
        the heart at a lower weight).
    left
        ``bool (H, W)``: visible patient's-left lung.
    zone
        ``float32 (H, W)``: height fraction ``t`` inside the lungs (NaN outside),
        useful for zone statistics.
    """

    visible: np.ndarray
    air: np.ndarray
    left: np.ndarray
    zone: np.ndarray


def _jitter(rng: np.random.Generator, values: np.ndarray, sd: float) -> np.ndarray:
    return values + rng.normal(0.0, sd, size=values.shape)


def _sample_lung(
    rng: np.random.Generator, side: int, width: float, heart_scale: float, shape: dict
) -> Lung:
    """Draw one lung. ``shape`` carries values shared by both lungs."""
    right = side < 0
    v_apex = rng.normal(0.0, 0.018)
    v_cp = 1.0 + (-0.025 if right else 0.02) + rng.normal(0.0, 0.02)
    width = width * (1.0 + rng.normal(0.0, 0.025))
    height = v_cp - v_apex
    d_apex = shape["d_apex"] + rng.normal(0.0, 0.012)

    lat_f = np.maximum.accumulate(np.clip(_jitter(rng, _LATERAL_F, 0.025), 0.0, 1.0))
    lat_f[0], lat_f[-1] = 0.0, 1.0
    lat_f = np.maximum.accumulate(lat_f)
    lateral = Curve(_LATERAL_Q, d_apex + (width - d_apex) * lat_f)

    cap_d = np.array([d_apex, d_apex - 0.05, d_apex - 0.11, 0.01, 0.0])
    cap = Curve(np.array([0.0, 0.12, 0.25, 0.5, 1.0]) * shape["cap"], cap_d)

    hs = heart_scale
    if right:
        t_knots = np.array([-1.6, -0.3, 0.1, 0.3, 0.45, 0.6, 0.75, 0.88, 1.0, 1.3])
        d_knots = np.array([0.1, 0.1, 0.1, 0.1, 0.1, 0.115, 0.13, 0.145, 0.135, 0.1])
        d_knots[5:] = 0.06 + (d_knots[5:] - 0.06) * hs
        hidden_d = np.full_like(d_knots, 0.06)
    else:
        t_knots = np.array([-1.6, -0.3, 0.1, 0.2, 0.28, 0.36, 0.46, 0.6, 0.75, 0.9, 1.0, 1.3])
        knob = shape["knob"]
        d_knots = np.array(
            [0.1, 0.1, 0.105, knob, knob - 0.015, 0.14, 0.15, 0.21, 0.28, 0.325, 0.33, 0.28]
        )
        d_knots[6:] = 0.07 + (d_knots[6:] - 0.07) * hs
        hidden_d = np.full_like(d_knots, 0.07)
    d_knots = _jitter(rng, d_knots, 0.007)
    d_knots = np.minimum(d_knots, width - 0.1)
    v_knots = v_apex + t_knots * height
    medial = Curve(v_knots, d_knots)
    hidden = Curve(v_knots, np.minimum(hidden_d, d_knots))

    dome_height = shape["dome"] * (1.25 if right else 0.95) * (1.0 + rng.normal(0.0, 0.08))
    dome_f = np.clip(_jitter(rng, _DOME_F, 0.03), 0.0, 1.0)
    dome_f[3], dome_f[-1] = 1.0, 0.0
    dome = Curve(_DOME_X, dome_f)
    return Lung(side, v_apex, v_cp, width, lateral, cap, medial, hidden, dome_height, dome)


def _sample_body(
    rng: np.random.Generator, profile: SiteProfile, sex: str, age: int, width: float
) -> Body:
    wall = rng.uniform(*profile.chest_wall)
    chest = width + wall
    neck = rng.uniform(0.15, 0.2)
    v = np.array([-2.0, -0.5, -0.38, -0.28, -0.18, -0.05, 0.1, 0.3, 0.7, 1.0, 1.3, 2.2])
    f = np.array([0.0, 0.0, 0.3, 0.62, 0.82, 0.9, 0.94, 0.98, 1.0, 1.0, 1.0, 0.97])
    belly = rng.uniform(-0.03, 0.06)
    half = neck + (chest - neck) * f
    half[-3:] += np.array([0.0, 0.5, 1.0]) * belly
    half[:2] = neck
    torso = Curve(v, _jitter(rng, half, 0.006))

    breast = 0.0
    if sex == "F" and age >= 14:
        breast = rng.uniform(0.04, 0.16)
    bubble = None
    if rng.random() < 0.75:
        bubble = (
            rng.uniform(0.15, 0.32),
            rng.uniform(0.03, 0.09),
            rng.uniform(0.05, 0.14),
            rng.uniform(0.03, 0.08),
            rng.uniform(0.1, 0.5),
        )
    return Body(
        torso=torso,
        arm_gap=rng.uniform(*profile.arm_gap) + (0.4 if rng.random() < profile.arms_out_p else 0.0),
        arm_width=rng.uniform(0.09, 0.13),
        arm_top=rng.uniform(-0.2, -0.05),
        abdomen=rng.uniform(0.4, 0.6),
        mediastinum=rng.uniform(0.22, 0.36),
        breast=breast,
        breast_v=rng.uniform(0.82, 1.02),
        breast_r=(rng.uniform(0.2, 0.3), rng.uniform(0.15, 0.24)),
        bubble=bubble,
        trachea=rng.uniform(0.04, 0.1),
        bowel=rng.uniform(0.0, 0.25),
    )


def sample_anatomy(rng: np.random.Generator, profile: SiteProfile, sex: str, age: int) -> Anatomy:
    """Draw the soft-tissue anatomy of one patient.

    Parameters
    ----------
    rng
        Random generator (consumed).
    profile
        Site profile (lung proportions, arm position, chest wall).
    sex, age
        ``"F"``/``"M"`` and age in years (breasts, heart size).

    Returns
    -------
    Anatomy
    """
    width = rng.normal(*profile.lung_width)
    heart_scale = float(np.clip(rng.normal(1.0 + 0.004 * (age - 40), 0.1), 0.8, 1.3))
    shape = {
        "d_apex": rng.uniform(0.17, 0.24),
        "cap": rng.uniform(0.8, 1.2),
        "knob": rng.uniform(0.12, 0.16) + 0.0006 * max(age - 40, 0),
        "dome": rng.uniform(0.09, 0.17),
    }
    right = _sample_lung(rng, -1, width, heart_scale, shape)
    left = _sample_lung(rng, +1, width, heart_scale, shape)
    body = _sample_body(rng, profile, sex, age, max(right.width, left.width))
    hila = (
        (-rng.uniform(0.11, 0.15), rng.uniform(0.4, 0.46)),
        (rng.uniform(0.12, 0.16), rng.uniform(0.34, 0.41)),
    )
    return Anatomy(right, left, body, heart_scale, hila, rng.uniform(*profile.air))


def render_lungs(canvas: Canvas, anatomy: Anatomy) -> LungFields:
    """Draw both lungs on ``canvas``.

    Returns
    -------
    LungFields
        Maps of shape ``canvas.shape``.
    """
    shape = canvas.shape
    visible = np.zeros(shape, np.float32)
    air = np.zeros(shape, np.float32)
    left = np.zeros(shape, bool)
    zone = np.full(shape, np.nan, np.float32)
    eps = canvas.px
    for lung in anatomy.lungs:
        lo, hi = sorted((lung.side * 0.0, lung.side * (lung.width + 0.03)))
        win = canvas.window(lo, hi, lung.v_apex - 0.02, lung.v_cp + 0.02)
        u, v = canvas.u[win], canvas.v[win]
        if u.size == 0:
            continue
        d = u * np.float32(lung.side)
        t = (v - np.float32(lung.v_apex)) * np.float32(1.0 / lung.height)
        q = np.sqrt(np.clip(t, 0.0, 1.0))
        d_lat = lung.lateral(q)
        d_cap = lung.cap(q)
        d_med = np.maximum(lung.medial(v), d_cap)
        d_hid = np.maximum(lung.hidden(v), d_cap)
        bottom = lung.dome_v(d)
        outer = ramp(d_lat - d, eps) * ramp(bottom - v, eps) * ramp(v - lung.v_apex, eps)
        vis = outer * ramp(d - d_med, eps)
        env = outer * ramp(d - d_hid, eps)
        # Air thickness: rises like a square root from the lateral border and the
        # apex (the x-ray grazes a rounded surface there), grows towards the base.
        lateral = np.sqrt(np.clip((d_lat - d) * np.float32(1 / 0.06), 0.0, 1.0))
        medial = np.sqrt(np.clip((d - d_hid) * np.float32(1 / 0.08), 0.0, 1.0))
        apex = np.sqrt(np.clip((v - np.float32(lung.v_apex)) * np.float32(1 / 0.08), 0.0, 1.0))
        depth = lateral * medial * apex
        depth *= np.float32(0.72) + np.float32(0.28) * smoothstep(t * np.float32(1.0 / 0.45))
        depth *= np.float32(0.8) + np.float32(0.2) * smoothstep((bottom - v) * np.float32(8.0))
        visible[win] = np.maximum(visible[win], vis)
        air[win] = np.maximum(air[win], depth * (vis + np.float32(0.35) * (env - vis)))
        inside = vis > 0.5
        zone[win] = np.where(inside, t, zone[win])
        if lung.side > 0:
            left[win] |= inside
    return LungFields(visible, air, left, zone)


def diaphragm(lungs: tuple[Lung, Lung], u: np.ndarray) -> np.ndarray:
    """Height of the diaphragm across the body (lateral to the lungs it drops steeply)."""
    parts = []
    for lung in lungs:
        d = u * np.float32(lung.side)
        beyond = np.maximum(d - np.float32(lung.width), 0.0)
        parts.append(lung.dome_v(np.maximum(d, 0.0)) + np.float32(1.5) * beyond)
    blend = smoothstep((u + np.float32(0.1)) * np.float32(5.0))
    return parts[0] * (1 - blend) + parts[1] * blend


def render_soft_tissue(canvas: Canvas, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Draw the body's soft-tissue density (no lungs, no bones) on ``canvas``.

    ``rng`` draws the bowel-gas pattern.

    Returns
    -------
    numpy.ndarray
        ``float32`` density of shape ``canvas.shape``.
    """
    u, v = canvas.u, canvas.v
    body = anatomy.body
    eps = canvas.px
    au = np.abs(u)
    half = body.torso(v)
    rel = au / half
    torso = np.clip(1.0 - rel * rel, 0.0, 1.0) ** np.float32(0.35) * ramp(half - au, eps)
    # The upper chest is thinner front-to-back than the abdomen.
    torso *= np.float32(0.5) + np.float32(0.5) * smoothstep((v + np.float32(0.2)) * np.float32(1.6))

    # Arms hang lateral to the chest wall, touching it at the shoulder.
    aw = np.float32(body.arm_width)
    gap = np.float32(body.arm_gap) * smoothstep((v - np.float32(0.08)) * np.float32(3.0))
    chest = body.torso(np.maximum(v, np.float32(0.3)))
    centre = chest + gap + aw * np.float32(0.9)
    across = (au - centre) / aw
    # The shoulder is rounded on the outside and merges with the neck slope inside.
    cap = np.sqrt(np.clip(1 - np.maximum(across, 0.0) ** 2, 0.0, 1.0))
    top = np.float32(body.arm_top) + aw * np.float32(1.5) * (1 - cap)
    arm = np.sqrt(np.clip(1.0 - across**2, 0.0, 1.0)) * ramp(v - top, eps * 2)
    density = np.maximum(torso, np.float32(0.9) * arm)

    # Abdomen below the diaphragm, mediastinum and heart between the lungs; where they
    # meet (the heart resting on the diaphragm) the denser of the two wins.
    dia = diaphragm(anatomy.lungs, u)
    abdomen = np.float32(body.abdomen) * smoothstep((v - dia) * np.float32(12.0) + 0.3)
    right, left = anatomy.lungs
    m_right, m_left = right.medial(v), left.medial(v)
    med = ramp(u + m_right, eps) * ramp(m_left - u, eps)
    # The heart (where the borders bulge) is thicker than the upper mediastinum, and
    # rounder: densest in its middle.
    span = m_right + m_left
    middle = np.clip(1.0 - ((u - (m_left - m_right) / 2) / (span / 2 + 1e-3)) ** 2, 0.0, 1.0)
    med *= np.float32(1.0) + np.float32(0.5) * smoothstep((span - np.float32(0.24)) * 8) * middle
    v_top = np.float32(min(right.v_apex, left.v_apex))
    med *= np.float32(0.45) + np.float32(0.55) * smoothstep((v - v_top) * np.float32(2.0))
    med *= smoothstep((v - v_top + np.float32(0.04)) * np.float32(8.0))
    med *= np.float32(1.0) - smoothstep((v - dia) * np.float32(5.0) - np.float32(0.2))
    density += np.maximum(abdomen, np.float32(body.mediastinum) * med) * torso

    # Trachea: an air column down to the carina.
    carina = np.float32(0.32 + 0.04 * anatomy.heart_scale)
    tr = smoothstep((np.float32(0.035) - np.abs(u - np.float32(0.005))) * np.float32(30.0))
    tr *= ramp(carina - v, 0.08)
    density -= np.float32(body.trachea) * tr

    if body.bubble is not None:
        bu, bv, ru, rv, amount = body.bubble
        cu = np.float32(bu)
        cv = left.dome_v(np.float32(bu)) + np.float32(bv)
        r2 = ((u - cu) / np.float32(ru)) ** 2 + ((v - cv) / np.float32(rv)) ** 2
        gas = ramp(1.0 - r2, 0.8) * ramp(cv + np.float32(rv * 0.3) - v, eps * 4)
        density -= np.float32(amount) * gas * torso

    if body.bowel > 0:
        gas = smooth_noise(rng, canvas.shape, cells=max(8, canvas.shape[1] // 8), sigma=0.8)
        gas = np.clip((gas - np.float32(0.4)) * np.float32(0.6), 0.0, 1.0)
        gas *= smoothstep((v - dia - np.float32(0.12)) * np.float32(6.0)) * torso
        density -= np.float32(body.bowel) * gas

    if body.breast > 0:
        for sign in (-1.0, 1.0):
            ru, rv = body.breast_r
            du = (u - np.float32(sign * 0.36)) / np.float32(ru)
            dv = (v - np.float32(body.breast_v)) / np.float32(rv)
            # Sharp lower edge, fading out upwards.
            r2 = du**2 + np.minimum(dv, 0.0) ** 2 * np.float32(0.25) + np.maximum(dv, 0.0) ** 2
            breast = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0)) * ramp(1.0 - r2, 0.25)
            density += np.float32(body.breast) * breast
    return density.astype(np.float32, copy=False)
