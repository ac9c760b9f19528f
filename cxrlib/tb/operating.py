"""Named operating points of a TB classifier: the rules that choose a threshold, and their rates.

An *operating point* is the threshold at which a probability becomes a call (TB when
``p >= threshold``). The rules:

``"who"``
    The World Health Organization's target for a TB triage test is a sensitivity of at
    least 0.90 at a specificity of at least 0.70 (target product profile, 2014). The rule
    takes the threshold with the highest specificity among those that reach a
    sensitivity of 0.90 on the data it is chosen on; the target is *missed* there when
    that specificity is below 0.70.
``"youden"``
    The threshold that maximises Youden's J = sensitivity + specificity - 1.
a number in (0, 1)
    That fixed threshold (``"0.5"``: the usual default).

A rule is honest only when the threshold is chosen on other radiographs than those it is
scored on: :func:`cxrlib.tb.crossval.cross_validate` chooses it inside each outer training
part, on inner out-of-fold probabilities (:class:`cxrlib.tb.calibration.InnerCalibrated`).

* :func:`choose_threshold` -- a rule applied to labels and probabilities;
* :func:`parse_operating_point` -- ``"who"``, ``"youden"``, ``"0.5"``, ``0.3`` checked;
* :func:`rates_table` -- sensitivity and specificity of given calls per site and overall,
  with Wilson intervals (:func:`cxrlib.stats.binomial_ci`) and the WHO verdict.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from cxrlib.stats import binomial_ci
from cxrlib.tb.metrics import WHO_MIN_SENSITIVITY, WHO_MIN_SPECIFICITY

__all__ = [
    "OPERATING_RULES",
    "WHO_MIN_SENSITIVITY",
    "WHO_MIN_SPECIFICITY",
    "choose_threshold",
    "choose_thresholds",
    "parse_operating_point",
    "rates_table",
]

#: The rules :func:`choose_threshold` knows.
OPERATING_RULES = ("who", "youden")
_TOL = 1e-12


def parse_operating_point(value: Any) -> tuple[str, float | None]:
    """Check an operating point: a rule name or a threshold in (0, 1).

    Parameters
    ----------
    value : str or float
        ``"who"``, ``"youden"`` (any case), or a number in (0, 1) (e.g. ``"0.5"``).

    Returns
    -------
    (name, threshold) : (str, float or None)
        ``("who", None)``, ``("youden", None)``, or ``("0.5", 0.5)`` for a number
        (its name written with :func:`format` ``g``).

    Raises
    ------
    ValueError
        For anything else, with the accepted values in the message.
    """
    text = str(value).strip().lower()
    if text in OPERATING_RULES:
        return text, None
    try:
        number = float(text)
    except ValueError:
        number = float("nan")
    if not (np.isfinite(number) and 0.0 < number < 1.0):
        raise ValueError(
            f"operating point must be 'who', 'youden' or a threshold strictly between 0 and 1 "
            f"(e.g. 0.5), got {value!r}"
        )
    return f"{number:g}", number


def _checked(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(np.int64).ravel()
    p = np.asarray(p, np.float64).ravel()
    if y.size != p.size:
        raise ValueError(f"p has {p.size} values but y has {y.size} labels")
    if not np.isin(y, (0, 1)).all() or np.unique(y).size < 2:
        raise ValueError("choosing a threshold needs labels 0 and 1, both present")
    if not np.isfinite(p).all():
        raise ValueError("p contains NaN or infinite values")
    return y, p


def choose_threshold(
    y: Any,
    p: Any,
    rule: str = "who",
    *,
    min_sensitivity: float = WHO_MIN_SENSITIVITY,
    min_specificity: float = WHO_MIN_SPECIFICITY,
) -> dict[str, Any]:
    """The threshold a rule chooses on labels and probabilities (see the module).

    The candidate thresholds are the distinct values of ``p``; the one chosen is
    reported as the midpoint between it and the next lower value (the same calls on
    ``p``, and a margin on new data), or the lowest value when all are called TB.

    Parameters
    ----------
    y : array_like, shape (N,)
        Labels 0/1, both present.
    p : array_like, shape (N,)
        TB probabilities (out-of-fold ones, for an honest choice).
    rule : {"who", "youden"}, default "who"
    min_sensitivity, min_specificity : float
        The WHO target (0.90, 0.70).

    Returns
    -------
    dict
        ``threshold`` (float), ``sensitivity``, ``specificity`` (float: of the calls
        ``p >= threshold`` on these data), ``meets_target`` (bool: both minimums
        reached), ``degenerate`` (bool: all or none of the cases called TB).
    """
    if rule not in OPERATING_RULES:
        raise ValueError(f"rule must be one of {list(OPERATING_RULES)}, got {rule!r}")
    y, p = _checked(y, p)
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    spec = 1.0 - fpr
    if rule == "who":
        ok = np.flatnonzero(tpr >= min_sensitivity - _TOL)
        best = ok[np.lexsort((tpr[ok], spec[ok]))[-1]]  # max specificity, then sensitivity
    else:
        best = np.lexsort((tpr, tpr - fpr))[-1]  # max J, then sensitivity
    if best == 0:  # roc_curve's first threshold calls nothing TB
        threshold = float(np.nextafter(p.max(), np.inf))
    elif best + 1 < thresholds.size:
        threshold = float((thresholds[best] + thresholds[best + 1]) / 2.0)
    else:
        threshold = float(thresholds[best])
    calls = p >= threshold
    sensitivity = float(calls[y == 1].mean())
    specificity = float((~calls[y == 0]).mean())
    return {
        "threshold": threshold,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "meets_target": bool(
            sensitivity >= min_sensitivity - _TOL and specificity >= min_specificity - _TOL
        ),
        "degenerate": bool(calls.all() or not calls.any()),
    }


def choose_thresholds(y: Any, p: Any) -> dict[str, dict[str, Any]]:
    """:func:`choose_threshold` of every rule in :data:`OPERATING_RULES`, by name."""
    return {rule: choose_threshold(y, p, rule) for rule in OPERATING_RULES}


def _rates_row(y: np.ndarray, share: np.ndarray, ci: float) -> dict[str, Any]:
    row: dict[str, Any] = {"n": int(y.size), "n_tb": int(y.sum())}
    for name, label, called in (("sensitivity", 1, share), ("specificity", 0, 1.0 - share)):
        cases = called[y == label]
        if cases.size == 0:
            row.update({name: np.nan, f"{name}_low": np.nan, f"{name}_high": np.nan})
            continue
        low, high = binomial_ci(int(round(float(cases.sum()))), int(cases.size), ci=ci)
        row.update({name: float(cases.mean()), f"{name}_low": low, f"{name}_high": high})
    return row


def rates_table(
    y: Any,
    calls: Any,
    sites: Any = None,
    *,
    ci: float = 0.95,
    min_sensitivity: float = WHO_MIN_SENSITIVITY,
    min_specificity: float = WHO_MIN_SPECIFICITY,
) -> pd.DataFrame:
    """Sensitivity and specificity of TB calls per site and overall, with Wilson intervals.

    Parameters
    ----------
    y : array_like, shape (N,)
        Labels 0/1.
    calls : array_like of bool, shape (N,) or (R, N)
        TB calls; with ``R`` rows (the repeats of a cross-validation, each calling
        every case once) a rate is the mean over the repeats, and its interval is the
        Wilson interval of the case-averaged count over the ``n`` cases (as if the
        cases had been called once: repeats are not new radiographs).
    sites : array_like, shape (N,), optional
    ci : float, default 0.95
    min_sensitivity, min_specificity : float
        The WHO target (0.90, 0.70).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``site`` (sorted, then ``"all"``); columns ``n``, ``n_tb`` (int),
        ``sensitivity``, ``sensitivity_low``, ``sensitivity_high``, ``specificity``,
        ``specificity_low``, ``specificity_high`` (float; NaN without cases of that
        class), ``meets_target`` (bool: both point estimates reach the target),
        ``ci_excludes_target`` (bool: an upper bound lies below its minimum, so the
        data rule the target out) and ``ci_above_target`` (bool: both lower bounds
        reach the minimums, so the data establish it).
    """
    y = np.asarray(y).astype(np.int64).ravel()
    calls = np.atleast_2d(np.asarray(calls, dtype=bool))
    if calls.ndim != 2 or calls.shape[1] != y.size:
        raise ValueError(f"calls must have shape (N,) or (R, N) with N = {y.size}")
    share = calls.mean(axis=0)
    if sites is None:
        sites = np.full(y.size, "all", dtype=object)
    sites = np.asarray(sites, dtype=object).astype(str)
    if sites.shape != (y.size,):
        raise ValueError(f"sites has {sites.size} values but y has {y.size} labels")
    groups = [(s, sites == s) for s in sorted(set(sites)) if s != "all"]
    groups.append(("all", np.ones(y.size, bool)))
    rows = {name: _rates_row(y[keep], share[keep], ci) for name, keep in groups}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "site"
    sens_ok = table["sensitivity"] >= min_sensitivity - _TOL
    spec_ok = table["specificity"] >= min_specificity - _TOL
    table["meets_target"] = sens_ok & spec_ok
    table["ci_excludes_target"] = (table["sensitivity_high"] < min_sensitivity - _TOL) | (
        table["specificity_high"] < min_specificity - _TOL
    )
    table["ci_above_target"] = (table["sensitivity_low"] >= min_sensitivity - _TOL) & (
        table["specificity_low"] >= min_specificity - _TOL
    )
    return table
