"""Which hand-crafted features were measured on both lungs: :func:`asymmetry_pairs`.

The ``asymmetry`` group of :mod:`cxrlib.tb.features.handcrafted` is the absolute difference
of each such pair; the benchmarks use the same pairing on stored feature matrices.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["asymmetry_pairs"]


def asymmetry_pairs(names: Sequence[str]) -> list[tuple[int, int, str]]:
    """The features measured on both sides: ``(right column, left column, asymmetry name)``.

    Parameters
    ----------
    names : sequence of str
        Feature names (:class:`HandcraftedFeatures` columns).

    Returns
    -------
    list of (int, int, str)
        For every ``..._right...`` name whose ``..._left...`` twin is present: both
        positions and the ``asymmetry_...`` name of their absolute difference.
    """
    index = {name: i for i, name in enumerate(names)}
    pairs = []
    for i, name in enumerate(names):
        if "_right" in name and not name.startswith("asymmetry_"):
            other = index.get(name.replace("_right", "_left", 1))
            if other is not None:
                pairs.append((i, other, f"asymmetry_{name.replace('_right', '', 1)}"))
    return pairs
