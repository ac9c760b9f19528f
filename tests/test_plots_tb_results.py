"""Tests for cxrlib.book.plots_tb_results: each figure is built from the library's tables."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cxrlib.book import plots_tb_results  # noqa: E402
from cxrlib.tb import metrics  # noqa: E402
from cxrlib.tb.saliency import OcclusionMap  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _texts(fig: Figure) -> str:
    return " | ".join(t.get_text() for ax in fig.axes for t in ax.texts)


def _comparison() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "extractor": ["handcrafted", "handcrafted", "encoder", "vgg16"],
            "classifier": ["logreg", "svm", "logreg", "any"],
            "auc": [0.92, 0.90, 0.80, np.nan],
            "auc_low": [0.90, 0.87, 0.75, np.nan],
            "auc_high": [0.94, 0.92, 0.85, np.nan],
            "status": ["ok", "ok", "ok", "weights not available: put F in D"],
        }
    )


def test_pipeline_comparison_plots_points_and_lists_unavailable():
    fig = plots_tb_results.pipeline_comparison(_comparison(), references={"Jaeger 2014": 0.90})
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [
        "handcrafted + logreg",
        "handcrafted + svm",
        "encoder + logreg",
        "vgg16 (any classifier)",
    ]
    assert "weights not available" in _texts(fig).split(" | ")
    assert "Jaeger 2014" in _texts(fig)
    assert len(ax.lines) >= 3  # one marker per available pipeline (+ the reference line)
    assert ax.get_xlim()[1] == 1.0 and ax.get_xlim()[0] <= 0.70


def test_pipeline_comparison_rejects_bad_tables():
    with pytest.raises(ValueError, match="lacks column"):
        plots_tb_results.pipeline_comparison(pd.DataFrame({"auc": [0.5]}))
    with pytest.raises(ValueError, match="nothing to plot"):
        plots_tb_results.pipeline_comparison(_comparison().iloc[:0])


def _roc():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    p = np.clip(0.3 * y + rng.random(80) * 0.7, 0, 1)
    return y, p, metrics.roc_with_ci(y, p, n_boot=200)


def test_roc_curves_show_auc_intervals_and_operating_points():
    y, p, curve = _roc()
    points = metrics.operating_points(y, p)
    fig = plots_tb_results.roc_curves({"all": curve, "site": curve}, operating_points=points)
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == "WHO target"
    assert legend[1].startswith(f"all: AUC {curve[2]:.3f} [{curve[3][0]:.3f}")
    expected = [f"{letter}: {name}" for letter, name in zip("AB", points.index, strict=True)]
    assert legend[3:] == expected
    assert _texts(fig).split(" | ") == ["A", "B"]


def test_roc_curves_reject_bad_curves():
    with pytest.raises(ValueError, match="empty"):
        plots_tb_results.roc_curves({})
    with pytest.raises(ValueError, match="must be \\(fpr, tpr, auc"):
        plots_tb_results.roc_curves({"x": (1, 2)})


def test_confusion_matrix_shows_counts_and_shares():
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.9, 0.8, 0.3])
    table = metrics.confusion_matrix_table(y, p)
    fig = plots_tb_results.confusion_matrix(table, title="out-of-fold")
    text = _texts(fig)
    assert "2\n(67%)" in text and "1\n(33%)" in text and "1\n(50%)" in text
    assert fig.axes[0].get_title() == "out-of-fold"
    with pytest.raises(ValueError, match="2 x 2"):
        plots_tb_results.confusion_matrix(pd.DataFrame(np.zeros((3, 3))))


def test_saliency_grid_has_two_rows_and_a_colour_bar():
    images = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)
    masks = np.zeros((3, 16, 16), bool)
    masks[:, 4:12, 2:7] = True
    heat = np.zeros((16, 16), np.float32)
    heat[5:8, 3:6] = 0.2
    maps = [OcclusionMap(heat, 0.8, 4, 4, 2), heat, -heat]
    fig = plots_tb_results.saliency_grid(images, masks, maps, ["TB 1", "TB 2", "normal"])
    assert len(fig.axes) == 7  # 2 x 3 panels + colour bar
    assert [ax.get_title() for ax in fig.axes[:3]] == ["TB 1", "TB 2", "normal"]
    bar = fig.axes[-1]
    assert bar.get_ylim() == pytest.approx((-0.2, 0.2))  # one symmetric scale
    overlays = [ax.images[-1].get_array() for ax in fig.axes[3:6]]
    assert all(o.shape == (16, 16, 4) for o in overlays)
    alpha = overlays[0][..., 3]
    assert alpha[6, 4] > 0.5 and alpha[0, 0] == 0  # opaque where sensitive, clear elsewhere
    with pytest.raises(ValueError, match="got 3 images, 3 masks, 2 maps"):
        plots_tb_results.saliency_grid(images, masks, maps[:2], ["a", "b", "c"])
    with pytest.raises(ValueError, match="does not match"):
        plots_tb_results.saliency_grid(images[:1], masks[:1], [heat[:8]], ["a"])


def test_reliability_diagrams_draw_one_panel_per_site():
    from cxrlib.tb.calibration import reliability_table

    rng = np.random.default_rng(0)
    p = rng.random(300)
    y = (rng.random(300) < p).astype(int)
    sites = np.where(np.arange(300) % 3 == 0, "montgomery", "shenzhen")
    after = reliability_table(y, p, sites, n_bins=5)
    before = reliability_table(y, np.clip(1.6 * p - 0.3, 0, 1), sites, n_bins=5)
    fig = plots_tb_results.reliability_diagrams(after, before=before)
    assert len(fig.axes) == 3
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["montgomery (n = 100)", "shenzhen (n = 200)", "all (n = 300)"]
    assert fig.axes[0].get_legend() is not None
    with pytest.raises(ValueError, match="lacks column"):
        plots_tb_results.reliability_diagrams(after.drop(columns="observed"))
    with pytest.raises(ValueError, match="no bin"):
        plots_tb_results.reliability_diagrams(after.iloc[:0])
