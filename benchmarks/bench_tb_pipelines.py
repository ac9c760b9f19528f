"""Benchmark: TB pipelines on the features of one train-tb run, every variant in one table.

Reads a finished ``cxrlib train-tb`` run (its radiographs, labels, sites and hand-crafted
features, ``features.npz``) and scores variants of the pipeline on the same radiographs
with the same folds (5-fold x 2, stratified by site and label, seed 0):

* feature sets: the run's hand-crafted features; the same with left/right asymmetry
  (``|right - left|`` of every feature measured in both lungs, and in each pair of zones);
  either one standardised per site (each site's features centred and scaled with that
  site's own statistics, labels never used: what a new site's unlabelled batch allows);
* classifiers: :func:`cxrlib.tb.classifiers.make_classifier` names (``ensemble``: the mean of
  ``logreg`` and ``gboost``, the default of ``cxrlib train-tb``).

Uncalibrated and without inner folds (the fastest way to rank by AUC; ``train-tb``
calibrates inside the folds, which leaves the AUC nearly unchanged).

Columns: cross-validated AUC pooled over both sites with its 95 % bootstrap interval, the
AUC inside each site (out-of-fold probabilities of that site's radiographs), and transfer
(trained on all radiographs of one site, AUC on every radiograph of the other) both ways.
Every variant tried stays in the table, the losers too.

Usage::

    cxrlib train-tb ../shared/cxr-real --out RUN
    python benchmarks/bench_tb_pipelines.py --run RUN
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))


def feature_sets(X: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """The run's hand-crafted features without and with the asymmetry group.

    A run made before the group existed has none: they are computed from its columns
    (:func:`cxrlib.tb.features.handcrafted.asymmetry_pairs`, as the extractor does).
    """
    from cxrlib.tb.features.handcrafted import asymmetry_pairs

    plain = [i for i, name in enumerate(names) if not name.startswith("asymmetry_")]
    base = X[:, plain]
    pairs = asymmetry_pairs([names[i] for i in plain])
    asym = np.abs(base[:, [r for r, _, _ in pairs]] - base[:, [lt for _, lt, _ in pairs]])
    return {"handcrafted": base, "handcrafted + asymmetry": np.hstack([base, asym])}


def _score(X, y, sites, classifier, per_site_std):
    from cxrlib.tb.crossval import cross_validate
    from cxrlib.tb.metrics import auc_with_ci
    from cxrlib.tb.transfer import cross_site, standardize_per_site

    features = standardize_per_site(X, sites) if per_site_std else X
    cv = cross_validate(features, y, sites, classifier, n_splits=5, n_repeats=2, seed=0)
    auc, (low, high) = auc_with_ci(y, cv.proba)
    row = {"cv_auc": auc, "low": low, "high": high}
    for site in sorted(set(sites)):
        keep = sites == site
        row[f"auc_{site}"] = auc_with_ci(y[keep], cv.proba[:, keep], n_boot=200)[0]
    names = sorted(set(sites))
    for train, test in ((names[0], names[1]), (names[1], names[0])):
        result = cross_site(
            X, y, sites, classifier, train, test, site_standardize=per_site_std, n_boot=200
        )
        row[f"{train[:3]}->{test[:3]}"] = result.auc
    return row


def main(argv: list[str] | None = None) -> int:
    """Score every variant and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a cxrlib train-tb run folder")
    parser.add_argument(
        "--classifiers",
        default="logreg,svm,gboost",
        help="make_classifier names (logreg,svm,gboost)",
    )
    args = parser.parse_args(argv)
    from keras_env import cpu_description

    from cxrlib.tb.result import load_run

    run = load_run(args.run)
    y, sites = run.y, np.asarray(run.sites).astype(str)
    X = np.asarray(run.X, np.float64)
    sets = feature_sets(X, list(run.feature_names))
    n_asym = sets["handcrafted + asymmetry"].shape[1] - sets["handcrafted"].shape[1]
    rows = []
    for set_name, features in sets.items():
        for per_site in (False, True):
            for classifier in args.classifiers.split(","):
                start = time.perf_counter()
                row = _score(features, y, sites, classifier, per_site)
                rows.append(
                    {
                        "features": set_name,
                        "per-site std": per_site,
                        "classifier": classifier,
                        "D": features.shape[1],
                        **row,
                        "seconds": time.perf_counter() - start,
                    }
                )
                print(f"# done {set_name} / {per_site} / {classifier}", file=sys.stderr)
    table = pd.DataFrame(rows)
    load = os.getloadavg()[0]
    print(
        f"TB pipelines on {args.run} ({len(y)} radiographs: "
        + ", ".join(f"{s} {int((sites == s).sum())}" for s in sorted(set(sites)))
        + f"; {n_asym} asymmetry features); {cpu_description()}, load {load:.1f}"
    )
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
