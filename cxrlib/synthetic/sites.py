"""The two acquisition sites the phantoms imitate, and what differs between them.

Measured on the 512 x 512 real development compilation (``cxr-real``): Montgomery
radiographs are portrait films squeezed into a square frame, with high contrast
(lungs mean about 0.32 on a 0-1 scale) and black air around the body; Shenzhen
radiographs are square, brighter and flatter (lungs mean about 0.55) with the
arms close to the body and little black in the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SiteProfile", "SITE_PROFILES", "SITES", "get_profile"]


@dataclass(frozen=True)
class SiteProfile:
    """Parameters that describe one site's radiographs.

    Ranges are ``(low, high)`` for a uniform draw; ``(mean, sd)`` where noted.
    """

    name: str
    prefix: str
    #: Physical frame height / width (mean, sd) and the chance of a landscape film.
    aspect: tuple[float, float]
    landscape_p: float
    #: Lung height in frame-width units (mean, sd).
    lung_scale: tuple[float, float]
    #: Frame y of the lung apices, as a fraction of the frame height (mean, sd).
    apex_y: tuple[float, float]
    #: Lateral half-span of a lung at the costophrenic angle (mean, sd), lung-height units.
    lung_width: tuple[float, float]
    #: Gap between the arms and the chest wall (low, high), and the chance that the
    #: arms are out of the field (only air beside the chest).
    arm_gap: tuple[float, float]
    arms_out_p: float
    #: Chest-wall thickness beyond the lungs (low, high).
    chest_wall: tuple[float, float]
    #: Tone: exposure gain (low, high), gamma (low, high), black level (low, high).
    gain: tuple[float, float]
    gamma: tuple[float, float]
    black: tuple[float, float]
    #: Overall lung darkness: attenuation removed by a full lung (low, high).
    air: tuple[float, float]
    #: Rib contrast (low, high).
    rib: tuple[float, float]
    #: Quantum noise standard deviation (low, high).
    noise: tuple[float, float]
    #: Chance of a black collimator band at the bottom of the frame.
    collimation_p: float
    #: Chance that a male patient's record says female, etc. is not modelled; sex ratio:
    male_p: float
    #: Age (mean, sd) and (min, max) in years.
    age: tuple[float, float]
    age_range: tuple[int, int]
    #: Side letter marker: letter choices and chance of the MC text boxes.
    letters: tuple[str, ...]
    text_boxes_p: float


SITE_PROFILES: dict[str, SiteProfile] = {
    "montgomery": SiteProfile(
        name="montgomery",
        prefix="MCUCXR",
        aspect=(4892 / 4020, 0.0),
        landscape_p=0.12,
        lung_scale=(0.785, 0.06),
        apex_y=(0.105, 0.03),
        lung_width=(0.5, 0.03),
        arm_gap=(0.05, 0.22),
        arms_out_p=0.3,
        chest_wall=(0.07, 0.16),
        gain=(1.2, 1.8),
        gamma=(1.4, 2.0),
        black=(0.0, 0.02),
        air=(0.62, 0.78),
        rib=(0.1, 0.19),
        noise=(0.006, 0.014),
        collimation_p=0.8,
        male_p=0.5,
        age=(42.0, 18.0),
        age_range=(2, 89),
        letters=("R", "R", "R", "L"),
        text_boxes_p=0.75,
    ),
    "shenzhen": SiteProfile(
        name="shenzhen",
        prefix="CHNCXR",
        aspect=(1.0, 0.03),
        landscape_p=0.0,
        lung_scale=(0.645, 0.05),
        apex_y=(0.145, 0.035),
        lung_width=(0.55, 0.03),
        arm_gap=(0.0, 0.03),
        arms_out_p=0.05,
        chest_wall=(0.08, 0.15),
        gain=(1.0, 1.5),
        gamma=(1.05, 1.4),
        black=(0.0, 0.08),
        air=(0.4, 0.53),
        rib=(0.11, 0.19),
        noise=(0.007, 0.016),
        collimation_p=0.15,
        male_p=0.66,
        age=(36.0, 14.0),
        age_range=(5, 85),
        letters=("L", "L", "R"),
        text_boxes_p=0.0,
    ),
}

#: Site names accepted by :func:`cxrlib.synthetic.make_phantom`.
SITES: tuple[str, ...] = tuple(SITE_PROFILES)


def get_profile(site: str) -> SiteProfile:
    """Return the profile of ``site``; raise ValueError naming the parameter if unknown."""
    try:
        return SITE_PROFILES[site]
    except (KeyError, TypeError):
        raise ValueError(f"site must be one of {', '.join(SITES)}; got {site!r}") from None
