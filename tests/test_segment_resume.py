"""`cxrlib segment` is resumable, writes Parquet and DICOM-SEG, and runs on Dask.

The manifest (``OUT_DIR/manifest/``) records finished batches; a rerun segments only
what is not recorded; a run killed mid-way redoes only its unfinished batches; a local
Dask cluster gives the same masks as an in-process run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from standins import save_standin_model

from cxrlib.data.imageio import read_mask, write_png
from cxrlib.seg.folder import segment_folder
from cxrlib.seg.manifest import Manifest, ManifestMismatchError, SegmentJob
from cxrlib.seg.scheduling import choose_scheduler, local_workers

REPO = Path(__file__).resolve().parents[1]


def _images(folder: Path, n: int) -> Path:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = np.full((48, 40), 0.8, np.float32)
        width = 10 + i % 5
        image[8:40, 4 : 4 + width] = 0.2 + 0.05 * rng.random((32, width))
        image[8:40, 22:36] = 0.2 + 0.05 * rng.random((32, 14))
        write_png(folder / f"CHNCXR_{i:04d}_0.png", image)
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_standin_model(tmp_path_factory.mktemp("model") / "model.keras")


def _masks(out: Path) -> dict[str, np.ndarray]:
    return {p.name: read_mask(p) for p in sorted(out.glob("*.png"))}


# ------------------------------------------------------------------ the manifest


def _job(**changes) -> SegmentJob:
    values = dict(
        model_sha256="ab" * 32, input_size=(32, 32), threshold=0.5, postprocess=True,
        overlays=False,
    )  # fmt: skip
    values.update(changes)
    return SegmentJob(**values)


def _row(name: str, source: Path, area: float = 0.5) -> dict:
    stat = source.stat()
    return {
        "file": name, "source_size": stat.st_size, "source_mtime_ns": stat.st_mtime_ns,
        "lung_area_fraction": area, "right_lung_area_fraction": area / 2,
        "left_lung_area_fraction": area / 2, "mask_path": f"{Path(name).stem}.png",
        "overlay_path": None, "dicom_seg_path": None, "runtime": "keras", "seconds": 0.1,
    }  # fmt: skip


def test_the_manifest_refuses_another_job_unless_overwritten(tmp_path):
    manifest = Manifest(tmp_path)
    assert manifest.start(_job()) is False
    assert manifest.start(_job()) is True  # same job: resumed
    with pytest.raises(ManifestMismatchError, match=r"threshold: 0\.5 -> 0\.7"):
        manifest.start(_job(threshold=0.7))
    assert manifest.start(_job(threshold=0.7), overwrite=True) is False
    assert manifest.job() == _job(threshold=0.7)


def test_done_keeps_only_unchanged_inputs_whose_outputs_exist(tmp_path):
    images = _images(tmp_path / "images", 3)
    files = sorted(images.glob("*.png"))
    manifest = Manifest(tmp_path / "out")
    manifest.start(_job())
    manifest.record([_row(f.name, f) for f in files[:2]])
    manifest.record([_row(files[2].name, files[2])])
    for f in files:
        (tmp_path / "out" / f"{f.stem}.png").write_bytes(b"mask")
    assert list(manifest.done(files)["file"]) == [f.name for f in files]
    (tmp_path / "out" / f"{files[0].stem}.png").unlink()  # an output is gone
    os.utime(files[1], ns=(1, 1))  # the input changed
    assert list(manifest.done(files)["file"]) == [files[2].name]


def test_compact_merges_the_parts_and_the_newest_row_wins(tmp_path):
    images = _images(tmp_path / "images", 2)
    files = sorted(images.glob("*.png"))
    manifest = Manifest(tmp_path / "out")
    manifest.start(_job())
    manifest.record([_row(files[0].name, files[0], 0.1)])
    manifest.record([_row(files[0].name, files[0], 0.3), _row(files[1].name, files[1])])
    table = manifest.compact()
    assert sorted(p.name for p in manifest.folder.iterdir()) == ["done.parquet", "job.json"]
    assert table.set_index("file").loc[files[0].name, "lung_area_fraction"] == 0.3
    assert len(manifest.records()) == 2


# ------------------------------------------------------------------ resuming


def test_a_rerun_segments_only_what_changed(model, tmp_path):
    images = _images(tmp_path / "images", 10)
    out = tmp_path / "out"
    first = segment_folder(model, images, out, batch_size=4, progress=False, runtime="keras")
    assert (first.resumed, first.n_segmented) == (0, 10)
    again = segment_folder(model, images, out, batch_size=4, progress=False, runtime="keras")
    assert (again.resumed, again.n_segmented) == (10, 0)
    assert again.table.drop(columns="seconds").equals(first.table.drop(columns="seconds"))
    (out / "CHNCXR_0003_0.png").unlink()
    write_png(images / "CHNCXR_0005_0.png", np.full((48, 40), 0.3, np.float32))
    third = segment_folder(model, images, out, batch_size=4, progress=False, runtime="keras")
    assert (third.resumed, third.n_segmented) == (8, 2)
    assert (out / "CHNCXR_0003_0.png").is_file()
    assert third.table.set_index("file").loc["CHNCXR_0005_0.png", "lung_area_fraction"] > 0.9


def test_lungs_parquet_holds_every_column_and_agrees_with_the_csv(model, tmp_path):
    images = _images(tmp_path / "images", 5)
    out = tmp_path / "out"
    segment_folder(model, images, out, batch_size=2, progress=False, runtime="keras")
    parquet, csv = pd.read_parquet(out / "lungs.parquet"), pd.read_csv(out / "lungs.csv")
    assert {"file", "lung_area_fraction", "runtime", "seconds", "mask_path"} <= set(parquet)
    assert list(parquet["file"]) == list(csv["file"])
    assert np.allclose(parquet["lung_area_fraction"], csv["lung_area_fraction"])
    assert (parquet["runtime"] == "keras").all() and (parquet["seconds"] > 0).all()


def test_a_run_killed_mid_way_redoes_only_its_unfinished_batches(model, tmp_path):
    images = _images(tmp_path / "images", 12)
    out = tmp_path / "out"
    # the child dies while writing its third manifest part: two batches of 4 are recorded
    code = textwrap.dedent(
        f"""
        import os
        import cxrlib.atomic as atomic
        real = atomic.atomic_write
        count = [0]
        def dying(path, write, suffix):
            if str(path).endswith(".parquet"):
                count[0] += 1
                if count[0] == 3:
                    os._exit(137)
            return real(path, write, suffix)
        atomic.atomic_write = dying
        from cxrlib.seg.folder import segment_folder
        segment_folder({str(model)!r}, {str(images)!r}, {str(out)!r}, batch_size=4,
                       progress=False, runtime="keras", io_threads=1)
        """
    )
    child = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True)
    assert child.returncode == 137, child.stderr.decode()[-2000:]
    with pytest.warns(UserWarning, match="stale lock"):  # the killed run's lock
        report = segment_folder(model, images, out, batch_size=4, progress=False, runtime="keras")
    assert (report.resumed, report.n_segmented) == (8, 4)
    clean = tmp_path / "clean"
    segment_folder(model, images, clean, batch_size=4, progress=False, runtime="keras")
    assert _masks(out).keys() == _masks(clean).keys()
    assert all(np.array_equal(_masks(out)[k], _masks(clean)[k]) for k in _masks(clean))
    assert not [p for p in out.rglob(".*") if p.is_file()], "temporary files left"


# ------------------------------------------------------------------ where it runs


def test_choose_scheduler_and_local_workers():
    assert choose_scheduler("auto", 10_000, cores=16) == "local"
    assert choose_scheduler("auto", 10, cores=16) == "inline"
    assert choose_scheduler("auto", 10_000, cores=2) == "inline"
    assert choose_scheduler("tcp://host:8786", 1) == "tcp://host:8786"
    assert local_workers(None, cores=16) == (8, 2)
    assert local_workers(3, cores=16) == (3, 5)
    assert local_workers(None, cores=1) == (1, 1)
    with pytest.raises(ValueError, match="positive"):
        local_workers(0)


def test_a_local_dask_cluster_gives_the_in_process_masks(model, tmp_path):
    pytest.importorskip("distributed")
    images = _images(tmp_path / "images", 9)
    inline = segment_folder(
        model, images, tmp_path / "inline", batch_size=2, progress=False, runtime="keras"
    )
    dask = segment_folder(
        model, images, tmp_path / "dask", batch_size=2, progress=False, runtime="keras",
        scheduler="local", n_workers=2,
    )  # fmt: skip
    assert dask.scheduler == "local" and dask.n_segmented == 9
    assert list(dask.table["file"]) == list(inline.table["file"])
    got, want = _masks(tmp_path / "dask"), _masks(tmp_path / "inline")
    assert got.keys() == want.keys()
    assert all(np.array_equal(got[k], want[k]) for k in want)


def test_an_unreachable_scheduler_is_a_clear_error(model, tmp_path):
    pytest.importorskip("distributed")
    from cxrlib.seg.cluster import ClusterError

    images = _images(tmp_path / "images", 1)
    with pytest.raises(ClusterError, match="tcp://127.0.0.1:9"):
        segment_folder(
            model, images, tmp_path / "out", progress=False, runtime="keras",
            scheduler="tcp://127.0.0.1:9",
        )  # fmt: skip


# ------------------------------------------------------------------ DICOM-SEG


def test_dicom_inputs_get_a_dicom_seg_readable_with_pydicom(model, tmp_path):
    pytest.importorskip("highdicom")
    from cxrlib.seg.dicomseg import read_dicom_seg
    from cxrlib.synthetic.dicom import dicom_bytes

    images = tmp_path / "images"
    _images(images, 2)
    picture = np.full((48, 40), 0.8, np.float32)
    picture[8:40, 4:18] = 0.2
    picture[8:40, 22:36] = 0.2
    picture[0, 0] = 0.0  # span [0, 1]
    picture[0, 1] = 1.0
    (images / "scan.dcm").write_bytes(dicom_bytes(picture, patient_id="P1"))
    out = tmp_path / "out"
    report = segment_folder(model, images, out, progress=False, runtime="keras", dicom_seg=True)
    rows = report.table.set_index("file")
    assert rows["dicom_seg_path"].notna().sum() == 1  # only the DICOM input
    seg_path = Path(rows.loc["scan.dcm", "dicom_seg_path"])
    assert seg_path == out / "dicom-seg" / "scan.dcm"
    assert np.array_equal(read_dicom_seg(seg_path), read_mask(out / "scan.png"))
    import pydicom

    seg = pydicom.dcmread(seg_path)
    assert seg.Modality == "SEG" and seg.SegmentSequence[0].SegmentLabel == "Lung"
    source = pydicom.dcmread(images / "scan.dcm")
    referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID


def test_a_dicom_seg_of_the_wrong_size_is_refused(tmp_path):
    pytest.importorskip("highdicom")
    from cxrlib.seg.dicomseg import DicomSegError, write_dicom_seg
    from cxrlib.synthetic.dicom import dicom_bytes

    source = tmp_path / "scan.dcm"
    source.write_bytes(dicom_bytes(np.linspace(0, 1, 48 * 40).reshape(48, 40), patient_id="P"))
    with pytest.raises(DicomSegError, match=r"scan\.dcm.*10x10.*48x40"):
        write_dicom_seg(source, np.ones((10, 10), bool), tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()
