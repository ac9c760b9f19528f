"""Write phantom datasets to disk in the layouts of the real downloads.

:func:`write_dataset` writes ``n`` phantoms in one of four layouts:

``compilation``
    ``Lung Segmentation/CXR_png/`` (both sites), ``Lung Segmentation/masks/``
    (Montgomery masks carry the image name, Shenzhen masks ``<stem>_mask.png``)
    and ``Lung Segmentation/test/`` (copies of the Shenzhen images without mask),
    with the clinical readings in ``Lung Segmentation/ClinicalReadings/<stem>.txt``.
``montgomery``
    ``MontgomerySet/CXR_png/``, ``MontgomerySet/ManualMask/leftMask/`` and
    ``rightMask/`` (the lungs split at the patient midline; the patient's left
    lung is on the image's right), ``MontgomerySet/ClinicalReadings/<stem>.txt``.
``shenzhen``
    ``ChinaSet_AllFiles/CXR_png/``, ``ChinaSet_AllFiles/ClinicalReadings/`` and the
    separately published masks in ``shcxr-lung-mask/mask/<stem>_mask.png``.
``plain``
    ``images/`` and ``masks/`` with the same file names.

File names follow the real sets: ``MCUCXR_####_y.png`` / ``CHNCXR_####_y.png``
(``y`` the label, ``####`` a counter per site). With ``quirks=True`` the folder
also carries the clutter of the real zips (``Thumbs.db``, ``.DS_Store``,
``__MACOSX/._*``) and about 10% of the Shenzhen images have no mask.

Every phantom draws from its own random stream, derived from ``(seed, index)``
with :class:`numpy.random.SeedSequence`, so the same seed gives byte-identical
files whatever the number of worker processes.

A second call with the same settings reuses a complete phantom folder without rewriting
a file (file times are part of the trained runs' keys); a folder left half-written by an
interrupted call is cleaned and rewritten (:mod:`cxrlib.synthetic.outdir`).

DICOM encoding is :mod:`cxrlib.synthetic.dicom`; the clutter is :mod:`cxrlib.synthetic.quirks`;
the manifest (``phantoms.json``) is :mod:`cxrlib.synthetic.manifest`.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ..data.imageio import atomic_write_bytes, write_mask_png, write_png
from .dicom import _dicom_for, dicom_bytes
from .manifest import MANIFEST_NAME, SynthManifest
from .outdir import finish_out_dir, prepare_out_dir
from .phantom import MIN_SIZE, make_phantom
from .quirks import quirk_files
from .sites import SITE_PROFILES

__all__ = [
    "LAYOUTS",
    "MANIFEST_NAME",
    "SynthManifest",
    "write_dataset",
    "generate_arrays",
    "phantom_seed",
    "dicom_bytes",
]

#: Folder layouts written by :func:`write_dataset`.
LAYOUTS: tuple[str, ...] = ("compilation", "montgomery", "shenzhen", "plain")
#: Fraction of Shenzhen images left without a mask when ``quirks=True``.
MISSING_MASK_FRACTION = 0.1
_PLAN_KEY = 0x706C616E  # "plan": the plan's stream, apart from the phantoms' (0, 1, 2, ...)


@dataclass(frozen=True)
class _Item:
    """One planned phantom."""

    index: int
    site: str
    label: int
    stem: str
    has_mask: bool


def phantom_seed(seed: int, index: int) -> np.random.SeedSequence:
    """The random stream of phantom ``index`` of a dataset drawn with ``seed``."""
    return np.random.SeedSequence(seed, spawn_key=(index,))


# --------------------------------------------------------------------------- checks


def _check_int(name: str, value: object, minimum: int) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_fraction(name: str, value: object) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not 0.0 <= float(value) <= 1.0 or math.isnan(float(value)):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_jobs(n_jobs: object) -> int:
    if n_jobs is None:
        return max(1, os.cpu_count() or 1)
    return _check_int("n_jobs", n_jobs, 1)


def _check_site(site: object) -> str | None:
    if site is None or site in SITE_PROFILES:
        return site  # type: ignore[return-value]
    raise ValueError(f"site must be None or one of {', '.join(SITE_PROFILES)}; got {site!r}")


# --------------------------------------------------------------------------- planning


def _split(rng: np.random.Generator, count: int, fraction: float, both: bool) -> np.ndarray:
    """Boolean array with ``round(count * fraction)`` True values, shuffled."""
    k = round(count * fraction)
    if both and count >= 2 and 0.0 < fraction < 1.0:
        k = min(max(k, 1), count - 1)
    flags = np.zeros(count, bool)
    flags[:k] = True
    return rng.permutation(flags)


def _plan(
    n: int,
    seed: int,
    sites: Sequence[str],
    site_fraction: float,
    tb_fraction: float,
    missing_masks: bool,
) -> list[_Item]:
    """Decide site, label, name and mask presence of every phantom."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_PLAN_KEY,)))
    if len(sites) == 1:
        site_of = np.array([sites[0]] * n)
    else:
        site_of = np.where(_split(rng, n, site_fraction, True), "montgomery", "shenzhen")
    labels = np.zeros(n, int)
    missing = np.zeros(n, bool)
    for site in ("montgomery", "shenzhen"):
        where = np.flatnonzero(site_of == site)
        labels[where] = _split(rng, where.size, tb_fraction, True).astype(int)
        if site == "shenzhen" and missing_masks and where.size:
            k = round(where.size * MISSING_MASK_FRACTION)
            if k == 0 and where.size >= 4:
                k = 1
            missing[rng.choice(where, size=k, replace=False)] = True
    counters = {"montgomery": 0, "shenzhen": 0}
    items = []
    width = max(4, len(str(n)))
    for index in range(n):
        site = str(site_of[index])
        counters[site] += 1
        stem = f"{SITE_PROFILES[site].prefix}_{counters[site]:0{width}d}_{labels[index]}"
        items.append(_Item(index, site, int(labels[index]), stem, not bool(missing[index])))
    return items


def _layout_sites(layout: str) -> tuple[str, ...]:
    return {"montgomery": ("montgomery",), "shenzhen": ("shenzhen",)}.get(
        layout, ("montgomery", "shenzhen")
    )


# --------------------------------------------------------------------------- files


def _paths(layout: str, item: _Item, suffix: str) -> dict[str, list[str]]:
    """Relative paths of an item's files: image, masks, extra copies, reading."""
    stem = item.stem
    image = f"{stem}{suffix}"
    out: dict[str, list[str]] = {"image": [], "mask": [], "left": [], "right": [], "copy": []}
    out["reading"] = []
    if layout == "compilation":
        out["image"] = [f"Lung Segmentation/CXR_png/{image}"]
        out["reading"] = [f"Lung Segmentation/ClinicalReadings/{stem}.txt"]
        if item.has_mask:
            name = f"{stem}.png" if item.site == "montgomery" else f"{stem}_mask.png"
            out["mask"] = [f"Lung Segmentation/masks/{name}"]
        else:
            out["copy"] = [f"Lung Segmentation/test/{image}"]
    elif layout == "montgomery":
        out["image"] = [f"MontgomerySet/CXR_png/{image}"]
        out["left"] = [f"MontgomerySet/ManualMask/leftMask/{stem}.png"]
        out["right"] = [f"MontgomerySet/ManualMask/rightMask/{stem}.png"]
        out["reading"] = [f"MontgomerySet/ClinicalReadings/{stem}.txt"]
    elif layout == "shenzhen":
        out["image"] = [f"ChinaSet_AllFiles/CXR_png/{image}"]
        out["reading"] = [f"ChinaSet_AllFiles/ClinicalReadings/{stem}.txt"]
        if item.has_mask:
            out["mask"] = [f"shcxr-lung-mask/mask/{stem}_mask.png"]
    else:
        out["image"] = [f"images/{image}"]
        if item.has_mask:
            out["mask"] = [f"masks/{stem}.png"]
    return out


def _write_item(
    root: Path,
    layout: str,
    item: _Item,
    size: int,
    seed: int,
    dicom: bool,
    native_aspect: bool,
) -> dict:
    """Draw one phantom and write its files; return its record."""
    aspect = None
    if native_aspect and item.site == "montgomery":
        aspect = 4892 / 4020
    phantom = make_phantom(
        phantom_seed(seed, item.index), site=item.site, label=item.label, size=size, aspect=aspect
    )
    paths = _paths(layout, item, ".dcm" if dicom else ".png")
    if dicom:
        data = _dicom_for(phantom, item.stem, seed, item.index)
        for rel in paths["image"] + paths["copy"]:
            atomic_write_bytes(root / rel, data)
    else:
        for rel in paths["image"] + paths["copy"]:
            write_png(root / rel, phantom.image, bits=8)
    for rel in paths["mask"]:
        write_mask_png(root / rel, phantom.mask)
    for rel in paths["left"]:
        write_mask_png(root / rel, phantom.left_mask)
    for rel in paths["right"]:
        write_mask_png(root / rel, phantom.right_mask)
    for rel in paths["reading"]:
        atomic_write_bytes(root / rel, phantom.reading.encode("utf-8"))
    files = [rel for rels in paths.values() for rel in rels]
    n_masks = len(paths["mask"]) + len(paths["left"]) + len(paths["right"])
    return {"index": item.index, "files": files, "n_masks": n_masks}


def _write_chunk(args: tuple) -> list[dict]:
    """Write a chunk of items (one worker task)."""
    root, layout, items, size, seed, dicom, native_aspect = args
    return [_write_item(Path(root), layout, it, size, seed, dicom, native_aspect) for it in items]


def _chunks(items: list, n_jobs: int) -> Iterator[list]:
    step = max(1, min(16, len(items) // (n_jobs * 4) or 1))
    for start in range(0, len(items), step):
        yield items[start : start + step]


def _run(tasks: list[tuple], worker, n_jobs: int, total: int, progress: bool, desc: str) -> list:
    """Run ``worker`` over ``tasks`` (inline or in a process pool) with a progress bar."""
    from tqdm.auto import tqdm

    results: list = []
    with tqdm(total=total, desc=desc, unit="img", disable=not progress) as bar:
        if n_jobs == 1 or len(tasks) == 1:
            for task in tasks:
                out = worker(task)
                results.extend(out)
                bar.update(len(out))
        else:
            workers = min(n_jobs, len(tasks))
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                futures = [pool.submit(worker, task) for task in tasks]
                for future in as_completed(futures):
                    out = future.result()
                    results.extend(out)
                    bar.update(len(out))
    return results


# --------------------------------------------------------------------------- public API


def write_dataset(
    out_dir: str | os.PathLike[str],
    *,
    n: int,
    size: int = 512,
    seed: int = 0,
    layout: str = "compilation",
    dicom: bool = False,
    site_fraction: float = 0.3,
    tb_fraction: float = 0.5,
    quirks: bool = True,
    native_aspect: bool = False,
    progress: bool = True,
    n_jobs: int | None = None,
    overwrite: bool = False,
) -> SynthManifest:
    """Write ``n`` phantoms with masks (and readings) in a real dataset's layout.

    Parameters
    ----------
    out_dir
        Destination folder: new or empty; a phantom folder with the same phantoms
        (same settings) is reused as it is, nothing rewritten; one left half-written
        by an interrupted call is cleaned and rewritten. A phantom folder with other
        settings, or any other non-empty folder, is refused unless ``overwrite=True``.
    n
        Number of radiographs (>= 1).
    size
        Image side in pixels (>= 32).
    seed
        Dataset seed; the same seed gives byte-identical files.
    layout
        ``"compilation"``, ``"montgomery"``, ``"shenzhen"`` or ``"plain"`` (see the
        module docstring).
    dicom
        Write radiographs as 16-bit DICOM (``.dcm``; some MONOCHROME1, with rescale
        and window values) instead of 8-bit PNG. Masks stay PNG.
    site_fraction
        Fraction of Montgomery phantoms in the ``compilation`` and ``plain``
        layouts (both sites appear whenever ``n >= 2`` and it is strictly
        between 0 and 1).
    tb_fraction
        Fraction of tuberculosis phantoms per site.
    quirks
        Add the clutter of the real zips and leave about 10% of the Shenzhen
        images without mask (``compilation`` and ``shenzhen`` layouts).
    native_aspect
        Draw Montgomery films in their portrait frame (``4892 / 4020``, the
        longer side ``size``) instead of the square compilation frame.
    progress
        Show a progress bar.
    n_jobs
        Worker processes (default: all CPUs); 1 draws in this process. Workers are
        started with ``spawn``: in a script, call this under
        ``if __name__ == "__main__":`` (notebooks need nothing).
    overwrite
        Replace a phantom folder (also one with the same settings), or write into a
        non-empty folder that is not a phantom folder (only the phantoms' files are
        written; nothing else is removed).

    Returns
    -------
    SynthManifest
        Also written to ``out_dir/phantoms.json``; its ``action`` says whether the
        folder was written, reused, replaced, recovered or repaired
        (:mod:`cxrlib.synthetic.outdir`).

    Raises
    ------
    ValueError
        For a bad parameter (the message names it).
    FileExistsError
        If ``out_dir`` holds other phantoms or other files and ``overwrite`` is False.
    """
    n = _check_int("n", n, 1)
    size = _check_int("size", size, MIN_SIZE)
    seed = _check_int("seed", seed, 0)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    site_fraction = _check_fraction("site_fraction", site_fraction)
    tb_fraction = _check_fraction("tb_fraction", tb_fraction)
    jobs = _check_jobs(n_jobs)
    out = Path(out_dir)
    suffix = ".dcm" if dicom else ".png"
    missing = quirks and layout in ("compilation", "shenzhen")
    items = _plan(n, seed, _layout_sites(layout), site_fraction, tb_fraction, missing)
    paths = [_paths(layout, item, suffix) for item in items]
    clutter: list[tuple[str, bytes]] = []
    if quirks:
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_PLAN_KEY, 1)))
        clutter = quirk_files([p["image"][0] for p in paths], rng)
    files = [rel for p in paths for rels in p.values() for rel in rels]
    files += [rel for rel, _ in clutter]
    by_site: dict[str, dict[str, int]] = {}
    for item in items:
        counts = by_site.setdefault(item.site, {"normal": 0, "tb": 0})
        counts["tb" if item.label else "normal"] += 1
    manifest = SynthManifest(
        out_dir=str(out),
        layout=layout,
        n_images=n,
        n_masks=sum(len(p["mask"]) + len(p["left"]) + len(p["right"]) for p in paths),
        images_without_mask=[it.stem for it in items if not it.has_mask],
        by_site=by_site,
        seed=seed,
        size=size,
        dicom=bool(dicom),
        quirks=bool(quirks),
        native_aspect=bool(native_aspect),
        files=sorted(files + [MANIFEST_NAME]),
    )
    action, previous = prepare_out_dir(out, manifest, overwrite)
    if previous is not None:  # the folder already holds exactly these phantoms
        previous.action = action
        previous.out_dir = str(out)  # where it is now (it may have been moved)
        return previous
    manifest.action = action

    tasks = [
        (str(out), layout, chunk, size, seed, dicom, native_aspect)
        for chunk in _chunks(items, jobs)
    ]
    _run(tasks, _write_chunk, jobs, n, progress, "phantoms")
    for rel, data in clutter:
        atomic_write_bytes(out / rel, data)
    text = json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(out / MANIFEST_NAME, text.encode("utf-8"))
    finish_out_dir(out)
    return manifest


def _array_chunk(args: tuple) -> list[dict]:
    items, size, seed = args
    out = []
    for item in items:
        p = make_phantom(
            phantom_seed(seed, item.index), site=item.site, label=item.label, size=size
        )
        out.append(
            {
                "index": item.index,
                "image": p.image,
                "mask": p.mask,
                "row": {
                    "id": item.stem,
                    "site": p.site,
                    "label": p.label,
                    "sex": p.sex,
                    "age": p.age,
                    "reading": p.reading.strip(),
                    "findings": "; ".join(p.findings),
                    "severity": round(float(p.severity), 4),
                },
            }
        )
    return out


def generate_arrays(
    n: int,
    *,
    size: int = 128,
    seed: int = 0,
    site: str | None = None,
    site_fraction: float = 0.3,
    tb_fraction: float = 0.5,
    n_jobs: int | None = 1,
    progress: bool = False,
):
    """Draw phantoms in memory.

    The phantoms are those :func:`write_dataset` writes with the same ``n``,
    ``seed``, ``size`` and fractions in the ``plain`` layout (or the
    ``montgomery``/``shenzhen`` layout when ``site`` is given).

    Parameters
    ----------
    n
        Number of phantoms (>= 1).
    size
        Image side in pixels (>= 32).
    seed
        Dataset seed.
    site
        None for both sites (``site_fraction`` Montgomery), or one site name.
    site_fraction, tb_fraction
        Fractions of Montgomery and of tuberculosis phantoms.
    n_jobs
        Worker processes (None: all CPUs; default 1: this process).
    progress
        Show a progress bar.

    Returns
    -------
    images : numpy.ndarray
        ``float32 (n, size, size)`` in ``[0, 1]``.
    masks : numpy.ndarray
        ``bool (n, size, size)``.
    table : pandas.DataFrame
        One row per phantom: ``id``, ``site``, ``label``, ``sex``, ``age``,
        ``reading``, ``findings`` (``"; "``-joined) and ``severity``.
    """
    import pandas as pd

    n = _check_int("n", n, 1)
    size = _check_int("size", size, MIN_SIZE)
    seed = _check_int("seed", seed, 0)
    site = _check_site(site)
    site_fraction = _check_fraction("site_fraction", site_fraction)
    tb_fraction = _check_fraction("tb_fraction", tb_fraction)
    jobs = _check_jobs(n_jobs)
    sites = (site,) if site else ("montgomery", "shenzhen")
    items = _plan(n, seed, sites, site_fraction, tb_fraction, missing_masks=False)
    tasks = [(chunk, size, seed) for chunk in _chunks(items, jobs)]
    records = sorted(
        _run(tasks, _array_chunk, jobs, n, progress, "phantoms"), key=lambda r: r["index"]
    )
    images = np.stack([r["image"] for r in records]).astype(np.float32, copy=False)
    masks = np.stack([r["mask"] for r in records]).astype(bool, copy=False)
    table = pd.DataFrame([r["row"] for r in records])
    return images, masks, table
