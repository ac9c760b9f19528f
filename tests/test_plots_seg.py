"""Tests for cxrlib.book.plots_seg: every figure has the expected panels and content."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from cxrlib.book import plots_seg

matplotlib.use("Agg")


def _history(n: int = 5, offset: float = 0.0) -> pd.DataFrame:
    epochs = np.arange(n)
    return pd.DataFrame(
        {
            "epoch": epochs,
            "loss": 1.0 / (epochs + 1) + offset,
            "val_loss": 1.2 / (epochs + 1) + offset,
            "dice": 0.5 + 0.08 * epochs,
            "val_dice": [0.4, 0.6, 0.8, 0.7, 0.75][:n],
            "learning_rate": 1e-3 * 0.5**epochs,
        }
    )


def _scores() -> pd.DataFrame:
    rows = []
    for name, base in (("U-Net", 0.9), ("ResUNet", 0.92)):
        for site, n in (("montgomery", 6), ("shenzhen", 11), ("all", 17)):
            rows.append(
                {
                    "name": name,
                    "site": site,
                    "n": n,
                    "dice_mean": base,
                    "dice_low": base - 0.02,
                    "dice_high": base + 0.01,
                    "iou_mean": base - 0.1,
                    "iou_low": base - 0.13,
                    "iou_high": base - 0.08,
                }
            )
    return pd.DataFrame(rows)


def _cross_site() -> pd.DataFrame:
    rows = []
    for model in ("unet", "resunet"):
        for train in ("montgomery", "shenzhen"):
            for test in ("montgomery", "shenzhen"):
                mean = 0.9 if train == test else 0.8
                rows.append(
                    {
                        "train_site": train,
                        "test_site": test,
                        "model": model,
                        "dice_mean": mean,
                        "dice_low": mean - 0.03,
                        "dice_high": mean + 0.02,
                    }
                )
    return pd.DataFrame(rows)


def test_training_curves_one_run():
    fig = plots_seg.training_curves(_history())
    assert isinstance(fig, Figure)
    loss, dice, rate = fig.axes
    assert len(loss.lines) == 2  # train and validation
    assert len(dice.lines) == 3  # train, validation and the best-epoch dot
    best = dice.lines[-1]
    assert best.get_xdata()[0] == 3 and best.get_ydata()[0] == pytest.approx(0.8)
    assert rate.get_yscale() == "log"
    assert [t.get_text() for t in loss.get_legend().get_texts()] == ["train", "validation"]


def test_training_curves_several_runs_side_by_side():
    fig = plots_seg.training_curves({"U-Net": _history(), "ResUNet": _history(4, 0.1)})
    loss, dice, rate = fig.axes
    assert len(loss.lines) == 4 and len(rate.lines) == 2
    labels = [t.get_text() for t in loss.get_legend().get_texts()]
    assert "U-Net train" in labels and "ResUNet validation" in labels
    with pytest.raises(ValueError, match="val_dice"):
        plots_seg.training_curves(_history().drop(columns="val_dice"))


def test_outline_cases_draws_both_outlines():
    yy, xx = np.mgrid[:32, :32]
    truth = (yy - 16) ** 2 + (xx - 16) ** 2 < 64
    pred = (yy - 14) ** 2 + (xx - 16) ** 2 < 49
    images = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    truths = np.stack([truth] * 3)
    preds = np.stack([pred, pred, np.zeros_like(pred)])  # an empty prediction draws nothing
    fig = plots_seg.outline_cases(images, truths, preds, ["a", "b", "c"], ncols=2)
    assert isinstance(fig, Figure)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 3
    assert [ax.get_title() for ax in shown] == ["a", "b", "c"]
    assert len(shown[0].collections) >= 2 and len(shown[2].collections) >= 1
    assert len(shown[2].collections) < len(shown[0].collections)
    assert fig.legends, "the figure explains the two outline colours"
    with pytest.raises(ValueError, match="same length"):
        plots_seg.outline_cases(images, truths, preds, ["a"])
    long = "ResUNet (original) · random · shenzhen · Dice 0.957"
    fig = plots_seg.outline_cases(images, truths, preds, [long, "a", "b · c"], size=2.8)
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles[0] == "ResUNet (original) · random · shenzhen\nDice 0.957"
    assert titles[1:] == ["a", "b · c"]  # short titles stay on one line


def test_site_scores_chart_has_error_bars_per_run():
    fig = plots_seg.site_scores_chart(_scores())
    dice, iou = fig.axes
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["U-Net", "ResUNet"]
    ticks = [t.get_text() for t in dice.get_xticklabels()]
    assert len(ticks) == 3 and ticks[0].startswith("montgomery") and "n=6" in ticks[0]
    assert len(dice.containers) == 2 and len(iou.containers) == 2  # one errorbar per run
    with pytest.raises(ValueError, match="iou_low"):
        plots_seg.site_scores_chart(_scores().drop(columns="iou_low"))


def test_cross_site_chart_one_panel_per_model():
    fig = plots_seg.cross_site_chart(_cross_site())
    assert [ax.get_title() for ax in fig.axes] == ["unet", "resunet"]
    for ax in fig.axes:
        assert len(ax.containers) == 2  # one series per training site
        assert [t.get_text() for t in ax.get_xticklabels()] == ["montgomery", "shenzhen"]
    with pytest.raises(ValueError, match="no rows"):
        plots_seg.cross_site_chart(_cross_site().iloc[:0])
