"""Source of notebooks/01_data_exploration.ipynb (run: python tools/chapters/ch01.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nbtools import write_notebook  # noqa: E402

CELLS = [
    (
        "md",
        r"""
# Exploring the chest X-ray data

## Overview
Before training anything we look at the data: how images, lung masks and clinical readings
pair up (and where they do not), what the radiographs of the two hospitals look like, how big
the lungs are at each site, how the labels are balanced, and how intensities differ inside and
outside the lungs. The chapter runs unchanged on the embedded synthetic phantoms (the default)
and on a real dataset folder.

## Prerequisites
| concept | importance |
|---|---|
| numpy arrays, pandas tables | necessary |
| what a chest radiograph shows | helpful |

- **Time to run**: about a minute on phantoms, a few minutes on the 640 real radiographs.
- **Hardware**: any CPU; no GPU needed.
""",
    ),
    (
        "code",
        r"""
import matplotlib.pyplot as plt
from myst_nb import glue

from cxrlib import datasets, explore, plots, preprocess, workspace
""",
    ),
    (
        "params",
        r"""
data_dir = None  # a dataset folder in any supported layout; None -> synthetic phantoms
n_phantoms = 120  # phantoms generated when data_dir is None
phantom_size = 256  # their side in pixels
image_size = 128  # side the images are resized to for the statistics below
n_examples = 4  # radiographs shown per figure
compare_dir = None  # real radiographs for the side-by-side figure (default: $CXR_REAL_DIR)
seed = 0
run_dir = "runs/01_data_exploration"  # every file this notebook writes goes here
""",
    ),
    (
        "code",
        r"""
run_path = workspace.prepare_run_dir(run_dir)
data_path = workspace.resolve_data_dir(
    data_dir, run_path, n=n_phantoms, size=phantom_size, seed=seed
)
using_phantoms = workspace.is_phantom_folder(data_path)
print("data:", "synthetic phantoms" if using_phantoms else data_path.name)
""",
    ),
    (
        "md",
        r"""
## Pairing images, masks and readings

`cxrlib.datasets.scan_dataset` walks the folder at any depth, recognises the layouts the public
sets come in (the "Chest Xray Masks and Labels" compilation, the official Montgomery and
Shenzhen folders, or a plain `images/` + `masks/` pair), and pairs every radiograph with its
lung mask and clinical reading **by name, never by order**. Anything it cannot use is listed
with a reason rather than silently dropped.
""",
    ),
    (
        "code",
        r"""
scan = datasets.scan_dataset(data_path)
report = scan.report
print(report.summary())
""",
    ),
    (
        "code",
        r"""
# NBVAL_CHECK_OUTPUT
counts = report.to_dict()
keys = ("images", "masks", "images_without_mask", "masks_without_image")
print({key: counts[key] for key in keys})
""",
    ),
    (
        "code",
        r"""
glue("n_images", report.images, display=False)
glue("n_masks", report.masks, display=False)
glue("n_without_mask", len(report.images_without_mask), display=False)
glue("n_renamed", len(report.renamed_masks), display=False)
glue("n_skipped", len(report.skipped), display=False)
datasets.relative_paths(scan.table, data_path).head()  # paths shown relative to the folder
""",
    ),
    (
        "md",
        r"""
The folder holds {glue:text}`n_images` radiographs and {glue:text}`n_masks` lung masks;
{glue:text}`n_without_mask` radiographs have no mask, and {glue:text}`n_renamed` masks carry a
name that differs from their image (the Shenzhen masks end in `_mask`). The scan skipped
{glue:text}`n_skipped` files that are not radiographs (operating-system clutter such as
`Thumbs.db` or `__MACOSX/`, notes, unreadable files); each is listed with its reason in
`report.skipped`. A model trained on these data must therefore never assume that the *n*-th
mask belongs to the *n*-th image.
""",
    ),
    (
        "md",
        r"""
## What the radiographs look like

We load every radiograph and mask at a common size with `cxrlib.preprocess.load_arrays`, which
uses all CPU cores and caches the arrays on disk (keyed by the files and the parameters).
""",
    ),
    (
        "code",
        r"""
arrays = preprocess.load_arrays(
    scan.table, size=image_size, cache_dir=run_path / "cache", progress=False
)
table = scan.table
chosen = explore.pick_examples(table, arrays.has_mask, n=2 * n_examples, seed=seed)
titles = [
    f"{row.site} · {'TB' if row.label == 1 else 'normal'}"
    for row in table.iloc[chosen].itertuples()
]
fig = plots.example_grid(arrays.images[chosen], arrays.masks[chosen], titles, ncols=n_examples)
glue("fig_examples", fig, display=False)
plt.close(fig)
""",
    ),
    (
        "md",
        r"""
```{glue:figure} fig_examples
:name: fig-examples

Example radiographs from each site, with the lung mask outlined in green. The masks cover the
lung fields behind the ribs but leave out the heart and the mediastinum.
```

{numref}`fig-examples` shows the typical appearance: dark (air-filled) lung fields, bright
bone and soft tissue, the heart shadow on the image's right (the patient's left).
""",
    ),
    (
        "md",
        r"""
## Label balance

Labels come from the file names: the last digit is 0 for a normal radiograph and 1 for TB.
""",
    ),
    (
        "code",
        r"""
label_table = explore.label_counts(table)
fig = plots.label_balance(label_table)
glue("fig_labels", fig, display=False)
plt.close(fig)
label_table
""",
    ),
    (
        "md",
        r"""
```{glue:figure} fig_labels
:name: fig-labels

Radiographs per site and label.
```

Both classes are well represented overall ({numref}`fig-labels`), but the sites differ in
size: most radiographs come from Shenzhen, so a pooled metric is dominated by that site. Later
chapters therefore report metrics per site.
""",
    ),
    (
        "md",
        r"""
## Lung size per site

The original project observed that the Shenzhen lungs *look* smaller. With the masks we can
measure it: the fraction of the image covered by lung, and the height and width of the lung
fields relative to the image.
""",
    ),
    (
        "code",
        r"""
stats = explore.lung_statistics(table, arrays.masks, arrays.has_mask)
size_summary = explore.lung_size_summary(stats)
comparison = explore.compare_sites(stats)
glue("ratio_lung", float(comparison["ratio"]), display=False)
glue("p_lung", float(comparison["p_value"]), display=False)
glue("lung_verdict", explore.describe_difference(comparison), display=False)
for site in size_summary.index:
    glue(f"lung_{site}", float(size_summary.loc[site, "mean_lung_fraction"]), display=False)
fig = plots.lung_size_by_site(stats)
glue("fig_lung_size", fig, display=False)
plt.close(fig)
size_summary.round(3)
""",
    ),
    (
        "md",
        r"""
```{glue:figure} fig_lung_size
:name: fig-lung-size

Lung area, height and width relative to the image, per site (boxes: quartiles; dots:
radiographs).
```

In these data the Shenzhen lung area is {glue:text}`lung_verdict` the Montgomery lung area
(mean ratio Shenzhen / Montgomery {glue:text}`ratio_lung:.2f`, two-sided Mann-Whitney U test
p = {glue:text}`p_lung:.2g`; {numref}`fig-lung-size`). Area is only one measure: compare the
height and width panels too. The Shenzhen films show more of the body around the chest, and
the compilation stretched every film to a square without keeping its aspect ratio, which
changes the lungs' proportions differently at each site. A segmentation model has to cope
with both sites, and one trained on a single site may struggle on the other.
""",
    ),
    (
        "md",
        r"""
## Age and sex

The official Montgomery and Shenzhen folders ship a clinical reading for every radiograph with
the patient's sex and age; `cxrlib.readings` parses both formats. Folders without readings
(such as the compilation) show an empty panel here.
""",
    ),
    (
        "code",
        r"""
fig = plots.demographics(table)
glue("fig_demographics", fig, display=False)
plt.close(fig)
table[["sex", "age"]].describe(include="all")
""",
    ),
    (
        "md",
        r"""
```{glue:figure} fig_demographics
:name: fig-demographics

Age by label (left) and sex by site (right), from the clinical readings.
```
""",
    ),
    (
        "md",
        r"""
## Intensities inside and outside the lungs

Segmentation is possible because the lungs are darker than their surroundings, but the
exposure differs between sites and between radiographs.
""",
    ),
    (
        "code",
        r"""
samples = explore.intensity_samples(
    arrays.images, arrays.masks, arrays.has_mask, table["site"].to_numpy(), seed=seed
)
fig = plots.intensity_histograms(samples)
glue("fig_intensity", fig, display=False)
plt.close(fig)
samples.groupby(["site", "region"])["intensity"].describe()[["mean", "50%", "std"]].round(3)
""",
    ),
    (
        "md",
        r"""
```{glue:figure} fig_intensity
:name: fig-intensity

Distribution of pixel intensities inside the lungs and outside them, per site.
```

The lung and non-lung distributions overlap ({numref}`fig-intensity`): a threshold alone
cannot segment the lungs, which is why the next chapters learn the shape as well.
""",
    ),
    (
        "md",
        r"""
## Phantoms next to real radiographs

The book's default data are procedural phantoms made by `cxrlib.synthetic`. Judge the
resemblance yourself: phantoms above, real radiographs below (when a real folder is available:
set `compare_dir`, or the `CXR_REAL_DIR` environment variable).
""",
    ),
    (
        "code",
        r"""
phantoms, real = workspace.phantom_and_real_examples(
    data_path, n=n_examples, size=image_size * 2, compare_dir=compare_dir, seed=seed
)
fig = plots.side_by_side(
    phantoms, real, top_label="synthetic phantoms", bottom_label="real radiographs"
)
glue("fig_resemblance", fig, display=False)
glue("has_real", real is not None, display=False)
plt.close(fig)
print("real radiographs shown:", real is not None)
""",
    ),
    (
        "md",
        r"""
```{glue:figure} fig_resemblance
:name: fig-resemblance

Synthetic phantoms (top) and real radiographs (bottom, when available) at the same size.
```
""",
    ),
    (
        "md",
        r"""
## Summary
- Images, masks and readings are paired by name; every file the scan could not use is listed
  with a reason.
- The two sites differ: lung size in the frame, exposure, and the number of radiographs. We
  will report every metric per site.
- Lungs are darker than their surroundings, but not separable by intensity alone.

## What's next
The next chapter shows the augmentations used to train the segmentation models, and why they
must be applied only after the data are split.

## Exercises
1. Run this notebook on a plain `images/` + `masks/` folder of your own (or
   `cxrlib synth OUT --layout plain`). What does the pairing report say?
2. Is the site difference in lung size the same for normal and TB radiographs? Group `stats`
   by site and label.
3. Which images have the smallest lung fraction? Show them with `plots.example_grid`.

```{admonition} Solution to exercise 2
:class: dropdown
`stats.groupby(["site", "label"])["lung_fraction"].describe()` gives the table; compare the
means within each site.
```

```{admonition} Solution to exercise 3
:class: dropdown
`smallest = stats.nsmallest(4, "lung_fraction")`, find their positions with
`table.index[table["id"].isin(smallest["id"])]`, and pass those images and masks to
`plots.example_grid`.
```
""",
    ),
]

if __name__ == "__main__":
    root = Path(__file__).resolve().parents[2]
    write_notebook(root / "notebooks" / "01_data_exploration.ipynb", CELLS)
