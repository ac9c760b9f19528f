"""Faults of segmentation training (issue 13, items 1-5; build items 2-4), one test per case.

A tiny training (``test_train.TINY``: ResUNet 16-16-32 at 32 px, 2 epochs, 12 synthetic
images) is killed at every kind of write a run makes (key, split, history, checkpoint,
backup weights and state, model, scores) and run again: every rerun must finish without
hand cleaning and keep what was finished. Kills are simulated in-process (an exception
no library code catches, raised at the rename of the atomic write, leaving the temporary
file behind cut in half); one test kills a real training process with ``os._exit`` while
``model.keras`` is written, which also leaves its lock behind.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from test_train import TINY, make_dataset

from cxrlib import lock
from cxrlib.cli import main
from cxrlib.lock import LOCK_NAME, RunLockedError, lock_owner, run_lock
from cxrlib.runs import remove_stale_temporaries
from cxrlib.seg import checkpoints, train
from cxrlib.seg.checkpoints import DivergenceWatch, TrainingError, history_divergence
from cxrlib.seg.inference import ModelFileError, load_segmentation_model
from cxrlib.seg.train import RunDirError, train_segmentation
from cxrlib.seg.train_config import TrainConfig

TESTS = Path(__file__).resolve().parent
pytestmark = pytest.mark.filterwarnings(
    "ignore:Even though the `tf.config.experimental_run_functions_eagerly`:UserWarning"
)
CONFIG = TrainConfig(**TINY)


class _Killed(BaseException):
    """A simulated kill: not an Exception, so no handler of the library catches it."""


@pytest.fixture(scope="module", autouse=True)
def _eager():
    """Run the tiny models eagerly: tracing the graphs took 3 of each call's 4 seconds."""
    import tensorflow as tf

    before = tf.config.functions_run_eagerly()
    tf.config.run_functions_eagerly(True)
    yield
    tf.config.run_functions_eagerly(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("faults_training") / "data")


def _train(data: Path, run_dir: Path, config: TrainConfig = CONFIG, **kwargs):
    return train_segmentation(
        data, config, run_dir, progress=False, cache_dir=None, n_jobs=1, **kwargs
    )


@pytest.fixture
def epochs_run(monkeypatch) -> list[int]:
    """The epochs each training call runs (cleared by the test between calls)."""
    seen: list[int] = []
    real = train._callbacks

    class Count(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(epoch)

    monkeypatch.setattr(train, "_callbacks", lambda *a, **k: [*real(*a, **k), Count()])
    return seen


@contextmanager
def killed_at(name: str, n: int = 1):
    """Kill the run at the ``n``-th atomic write of a file called ``name``.

    The write's temporary file is complete when it is renamed; the kill leaves it behind
    (renamed aside, so the library's cleanup misses it) cut to half its size.
    """
    real = os.replace
    calls = {"n": 0}

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == name:
            calls["n"] += 1
            if calls["n"] == n:
                left = Path(f"{src}-killed")
                real(src, left)
                os.truncate(left, left.stat().st_size // 2)
                raise _Killed(f"killed while writing {dst}")
        return real(src, dst, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", replace)
        with pytest.raises(_Killed):
            yield
    assert calls["n"] >= n, f"the run never wrote {name} {n} time(s)"


def _status(run_dir: Path) -> str | None:
    stored = (
        json.loads((run_dir / "key.json").read_text()) if (run_dir / "key.json").exists() else {}
    )
    return stored.get("status")


def _hidden(run_dir: Path) -> list[str]:
    return sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob(".*"))


# --------------------------------------------------------------------------- build item 2


def test_a_run_killed_at_every_kind_of_write_finishes_on_rerun(data, tmp_path, epochs_run, capsys):
    """One run folder, killed at each write in turn; each rerun continues the last."""
    run_dir = tmp_path / "run"
    # (file killed at, which write of it in that call, epochs that call runs, notice of it)
    steps = [
        ("key.json", 1, [], None),  # the very first write
        ("split.csv", 1, [], "removed 1 temporary file(s)"),
        ("config.json", 1, [], "removed 1 temporary file(s)"),
        ("best.weights.h5", 1, [0], "removed 1 temporary file(s)"),
        ("state.json", 1, [0], "removed 1 temporary file(s)"),  # backup weights, no state
        ("history.csv", 2, [0, 1], None),  # the orphan backup weights: training restarts
        ("state.json", 1, [1], "resuming the training"),  # epoch 1's row was lost: redone
        ("key.json", 2, [1], "resuming the training"),  # the 'fitted' status
        ("model.keras", 1, [], "resuming the training"),  # after epoch 2: nothing to train
        ("history.json", 1, [], "rebuilding model.keras from best.weights.h5"),
        ("per_image.csv", 1, [], "scoring its saved model.keras"),
        ("metrics.json", 1, [], "scoring its saved model.keras"),
        ("key.json", 1, [], "scoring its saved model.keras"),  # the 'done' status
    ]
    for name, n, epochs, said in steps:
        epochs_run.clear()
        with killed_at(name, n):
            _train(data, run_dir)
        err = capsys.readouterr().err
        assert epochs_run == epochs, (name, n, epochs_run)
        if said:
            assert said in err, (name, err)
        assert not (run_dir / LOCK_NAME).exists()
        assert _hidden(run_dir), f"the kill at {name} left no temporary file"
    epochs_run.clear()
    result = _train(data, run_dir)
    err = capsys.readouterr().err
    assert "scoring its saved model.keras" in err and "removed 1 temporary file(s)" in err
    assert epochs_run == [] and result.trained and result.resumed
    assert _status(run_dir) == "done" and _hidden(run_dir) == []
    assert not (run_dir / "backup").exists() and not (run_dir / "best.weights.h5").exists()
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history["epoch"]) == [0, 1]  # one row per epoch, the redone ones replaced
    assert np.isfinite(history["val_loss"]).all()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["scores"]["test"]["original"]["raw"]["all"]["n"] == 4
    assert load_segmentation_model(run_dir / "model.keras").output_shape == (None, 32, 32, 1)
    again = _train(data, run_dir)  # and now it is a finished run like any other
    assert not again.trained and again.metrics == result.metrics


# --------------------------------------------------------------------------- items 3 and 4


_KILL_WHILE_SAVING = """
import os, sys
import keras
import tensorflow as tf
from test_train import TINY
from cxrlib.seg.train import train_segmentation
from cxrlib.seg.train_config import TrainConfig

def killed(self, *args, **kwargs):
    os._exit(137)  # killed while model.keras is written: the 0-byte temporary file stays

keras.Model.save = killed
tf.config.run_functions_eagerly(True)  # as in this module: quicker for a tiny model
train_segmentation(
    sys.argv[1], TrainConfig(**TINY), sys.argv[2], progress=False, cache_dir=None, n_jobs=1
)
"""


def test_a_process_killed_while_saving_the_model_is_rebuilt_not_retrained(
    data, tmp_path, epochs_run, capsys
):
    run_dir = tmp_path / "run"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", _KILL_WHILE_SAVING, str(data), str(run_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 137, done.stderr[-2000:]
    temporaries = list(run_dir.glob(".model.keras.*"))
    assert len(temporaries) == 1 and temporaries[0].stat().st_size == 0
    assert (run_dir / "best.weights.h5").is_file() and _status(run_dir) == "fitted"
    owner = lock_owner(run_dir)
    assert owner and owner["pid"] != os.getpid()  # the dead process's lock is still there

    with pytest.warns(UserWarning, match=r"taking over the stale lock .* no longer running"):
        result = _train(data, run_dir)
    err = capsys.readouterr().err
    assert "removed 1 temporary file(s)" in err and temporaries[0].name in err
    assert "rebuilding model.keras from best.weights.h5 instead of retraining" in err
    assert epochs_run == [] and result.resumed
    assert _status(run_dir) == "done" and _hidden(run_dir) == []
    assert result.timings["recovered_from"] == "best" and result.timings["train_images_per_s"]
    assert list(result.history["epoch"]) == [0, 1]


def test_stale_temporaries_are_only_those_of_the_run(tmp_path):
    for name in (".model.keras.abcd1234.keras", ".key.json.x_y9z0w1.part", ".keep", "a.txt"):
        (tmp_path / name).write_text("")
    (tmp_path / ".model.keras.short").write_text("")
    removed = remove_stale_temporaries(tmp_path, ("model.keras", "key.json"))
    assert [p.name for p in removed] == [".key.json.x_y9z0w1.part", ".model.keras.abcd1234.keras"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep", ".model.keras.short", "a.txt"]


# --------------------------------------------------------------------------- item 2


def _interrupted_run(data: Path, run_dir: Path) -> None:
    """A run stopped after its first epoch (its backup written)."""

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise _Killed("stopped after the first epoch")

    real = train._callbacks
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "_callbacks", lambda *a, **k: [*real(*a, **k), Stop()])
        with pytest.raises(_Killed):
            _train(data, run_dir)
    assert (run_dir / "backup" / "state.json").is_file()


@pytest.mark.parametrize("layout", ["cxrlib", "keras"])
def test_an_unreadable_backup_is_reported_discarded_and_training_restarts(
    data, tmp_path, epochs_run, capsys, layout
):
    run_dir = tmp_path / "run"
    _interrupted_run(data, run_dir)
    backup = run_dir / "backup"
    if layout == "keras":  # what Keras' BackupAndRestore left when killed while writing
        for path in backup.iterdir():
            path.unlink()
        (backup / "training_metadata.json").write_text('{"epoch": 1, "batch": 0}')
        broken = backup / "latest.weights.h5"
    else:
        broken = next(backup.glob("epoch-*.weights.h5"))
    broken.write_bytes(b"")  # "Unable to synchronously open file (file signature not found)"
    capsys.readouterr()
    epochs_run.clear()
    result = _train(data, run_dir)
    lines = [line for line in capsys.readouterr().err.splitlines() if "backup" in line]
    assert len(lines) == 1 and str(broken) in lines[0] and "discarding" in lines[0], lines
    assert epochs_run == [0, 1] and not result.resumed and _status(run_dir) == "done"
    assert list(result.history["epoch"]) == [0, 1]


def test_overwrite_always_clears_an_unfinished_run(data, tmp_path, epochs_run, capsys):
    run_dir = tmp_path / "run"
    _interrupted_run(data, run_dir)
    next((run_dir / "backup").glob("epoch-*.weights.h5")).write_bytes(b"\x89HDF garbage")
    epochs_run.clear()
    result = _train(data, run_dir, overwrite=True)
    assert "overwrite: discarding the unfinished run" in capsys.readouterr().err
    assert epochs_run == [0, 1] and not result.resumed and _status(run_dir) == "done"


# --------------------------------------------------------------------------- item 1


def test_divergence_rules():
    watch = DivergenceWatch()
    assert watch.epoch({"loss": 0.3, "val_loss": float("nan")}) == "the validation loss is nan"
    assert "validation Dice is inf" in DivergenceWatch().epoch({"val_dice": np.inf})
    assert "training loss is inf" in DivergenceWatch().epoch({"loss": np.float32("inf")})
    # a collapse: from >= 0.5 to under a tenth of the best, three epochs in a row
    watch = DivergenceWatch()
    assert [watch.epoch({"val_dice": d}) for d in (0.8, 0.01, 0.6, 0.02, 0.0)] == [None] * 5
    assert "collapsed from 0.800 to 0.010 (3 epochs in a row)" in watch.epoch({"val_dice": 0.01})
    small = DivergenceWatch(best=0.44)  # a tiny run's noise (0.44 -> 0.006) is no collapse
    assert [small.epoch({"val_dice": d}) for d in (0.006, 0.0, 0.0, 0.0)] == [None] * 4
    history = pd.DataFrame({"epoch": [0, 1], "val_loss": [0.5, np.nan], "val_dice": [0.1, 0.0]})
    assert history_divergence(history) == "the validation loss is nan in epoch 2"
    assert history_divergence(history.iloc[:1]) is None
    collapsed = pd.DataFrame({"epoch": range(5), "val_dice": [0.3, 0.9, 0.0, 0.0, 0.0]})
    assert "collapsed from 0.900 to 0.000 (3 epochs in a row) in epoch 5" in history_divergence(
        collapsed
    )


def test_the_guard_stops_training_when_it_diverges(tmp_path):
    guard = checkpoints.divergence_guard(tmp_path)
    guard.on_epoch_end(0, {"loss": 0.5, "val_loss": 0.6, "val_dice": 0.9})
    guard.on_epoch_end(1, {"loss": 0.5, "val_loss": 0.6, "val_dice": 0.0})
    guard.on_epoch_end(2, {"loss": 0.5, "val_loss": 0.6, "val_dice": 0.0})
    with pytest.raises(TrainingError, match=r"diverged: the validation Dice collapsed.* epoch 4"):
        guard.on_epoch_end(3, {"loss": 0.5, "val_loss": 0.6, "val_dice": 0.0})
    with pytest.raises(TrainingError, match=r"the validation loss is nan in epoch 1"):
        checkpoints.divergence_guard(tmp_path).on_epoch_end(0, {"val_loss": np.nan})
    with pytest.raises(TrainingError, match=r"training loss is nan in epoch 1"):
        checkpoints.divergence_guard(tmp_path).on_train_batch_end(3, {"loss": np.float32("nan")})


def test_a_diverged_training_fails_is_refused_and_never_reused(data, tmp_path, capsys, monkeypatch):
    """The reported command, at the tiny size: exit 2, one line, status failed."""
    monkeypatch.setenv("CXRLIB_CACHE_DIR", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    args = ["-q", "train-seg", str(data), "--out", str(run_dir), "--img-size", "32"]
    args += ["--filters", "16,16,32", "--epochs", "2", "--batch-size", "4"]
    args += ["--precision", "float32", "--learning-rate", "1e6"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "diverged" in err and str(run_dir) in err, err
    stored = json.loads((run_dir / "key.json").read_text())
    assert stored["status"] == "failed" and "diverged" in stored["error"]
    assert not (run_dir / "model.keras").exists() and not (run_dir / "backup").exists()
    assert not (run_dir / "best.weights.h5").exists() and not (run_dir / LOCK_NAME).exists()
    assert (run_dir / "history.csv").is_file()  # kept for the diagnosis

    # a model in the failed run's folder is refused, by the library and by cxrlib segment
    from standins import save_standin_model

    save_standin_model(run_dir / "model.keras")
    with pytest.raises(ModelFileError, match=re.escape(f"training run in {run_dir} failed")):
        load_segmentation_model(run_dir / "model.keras")
    images = data / "images"
    assert (
        main(["-q", "segment", str(run_dir / "model.keras"), str(images), str(tmp_path / "m")]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"training run in {run_dir} failed" in err, err

    # the same settings again: not reused, trained again (and failing again)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "failed" in err and "training it again" in err
    assert _status(run_dir) == "failed"


def test_a_model_predicting_nan_is_not_scored(monkeypatch):
    from types import SimpleNamespace

    from cxrlib.seg import inference, results

    split = pd.DataFrame({"id": ["a", "b"], "site": ["x", "x"], "split": ["val", "test"]})
    loaded = SimpleNamespace(images=np.zeros((2, 32, 32, 1), np.float32), masks=None)
    monkeypatch.setattr(inference, "predict_masks", lambda m, x, batch_size: x + np.nan)
    with pytest.raises(TrainingError, match="non-finite probabilities for 1 of 1 val images"):
        results.evaluate_model(None, CONFIG, split, loaded)


def test_a_finished_run_whose_history_diverged_is_not_reused(data, tmp_path, monkeypatch, capsys):
    """Runs saved as done before the guard existed (NaN validation loss) are retrained."""
    run_dir = tmp_path / "run"
    _train(data, run_dir)
    history = pd.read_csv(run_dir / "history.csv")
    history["val_loss"] = np.nan
    history.to_csv(run_dir / "history.csv", index=False)

    def no_fit(*args, **kwargs):
        raise TrainingError("would train again")

    monkeypatch.setattr(train, "_fit", no_fit)
    with pytest.raises(TrainingError, match="would train again"):
        _train(data, run_dir)
    assert (
        "its training diverged (the validation loss is nan in epoch 1)" in capsys.readouterr().err
    )
    assert _status(run_dir) == "failed"


# --------------------------------------------------------------------------- item 5


def test_a_tb_run_folder_is_refused(data, tmp_path):
    run_dir = tmp_path / "tb"
    run_dir.mkdir()
    (run_dir / "tb_config.json").write_text("{}")
    with pytest.raises(RunDirError, match=r"holds a TB run .*tb_config.json"):
        _train(data, run_dir, overwrite=True)
    assert sorted(p.name for p in run_dir.iterdir()) == ["tb_config.json"]


# --------------------------------------------------------------------------- build item 3


_HOLD = """
import sys, time
from cxrlib.lock import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


@contextmanager
def _held_by_another_process(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "locked"
        yield process
    finally:
        process.kill()
        process.wait()


def test_a_second_process_is_refused_naming_the_folder_and_the_owner(tmp_path):
    folder = tmp_path / "run"
    with _held_by_another_process(folder) as owner:
        with pytest.raises(RunLockedError) as error:
            with run_lock(folder):
                pass
        message = str(error.value)
        assert (
            str(folder) in message and f"process {owner.pid} on {socket.gethostname()}" in message
        )
        assert (folder / LOCK_NAME).is_file()  # the owner's lock is untouched
    # the owner was killed: its lock is stale and taken over with a warning
    with pytest.warns(
        UserWarning, match=rf"stale lock .* process {owner.pid} is no longer running"
    ):
        with run_lock(folder) as path:
            assert lock_owner(folder)["pid"] == os.getpid() and path.is_file()
    assert not (folder / LOCK_NAME).exists()


def test_lock_edge_cases(tmp_path):
    with run_lock(tmp_path):
        with pytest.raises(RunLockedError):  # not re-entrant: one run per folder
            with run_lock(tmp_path):
                pass
    path = tmp_path / LOCK_NAME
    other = {"pid": 1, "host": "elsewhere.example", "created": "then"}
    path.write_text(json.dumps(other))
    with pytest.raises(RunLockedError, match="process 1 on elsewhere.example"):
        with run_lock(tmp_path):  # another host's pid cannot be checked: never taken over
            pass
    path.write_text("")  # a crash between creating and writing the lock
    with pytest.raises(RunLockedError):
        with run_lock(tmp_path):
            pass
    old = time.time() - 3600
    os.utime(path, (old, old))
    with pytest.warns(UserWarning, match="unreadable"):
        with run_lock(tmp_path):
            pass
    # the lock is removed only while it is still the holder's
    with run_lock(tmp_path):
        path.write_text(json.dumps(other))
    assert json.loads(path.read_text()) == other
    assert lock._start_time(os.getpid())


def test_train_segmentation_and_train_tb_take_the_lock(data, tmp_path):
    from cxrlib.tb.train import train_tb

    seg, tb = tmp_path / "seg", tmp_path / "tb"
    with _held_by_another_process(seg) as owner:
        with pytest.raises(
            RunLockedError, match=rf"{re.escape(str(seg))} is in use .*process {owner.pid}"
        ):
            _train(data, seg)
    with _held_by_another_process(tb) as owner:
        with pytest.raises(
            RunLockedError, match=rf"{re.escape(str(tb))} is in use .*process {owner.pid}"
        ):
            train_tb(data, tb, progress=False, n_jobs=1)
        assert not (tb / "segmentation").exists()
