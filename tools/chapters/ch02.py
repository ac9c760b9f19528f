"""Source of notebooks/02_augmentation.ipynb (run: python tools/chapters/ch02.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nbtools import write_notebook  # noqa: E402

CELLS = [
    (
        "md",
        r"""
# Augmentation, and why it must come after the split

## Overview
Segmentation data sets are small: a few hundred radiographs with hand-drawn lung masks. The
original project enlarged them with *augmentations*: changes of contrast, added noise and
small rotations, shifts and zooms. This chapter shows each augmentation on one radiograph, and
measures a mistake that is easy to make with them: augmenting (or duplicating) the data
**before** splitting it into training and validation sets. Copies of the same radiograph then
land on both sides, and the validation score no longer measures how the model does on
radiographs it has never seen.

## Prerequisites
| concept | importance |
|---|---|
| {doc}`01_data_exploration` | necessary |
| training and validation sets, overfitting | necessary |
| what a U-Net does {cite}`ronneberger2015unet` | helpful (the next chapter explains it) |

- **Time to run**: one to two minutes on a laptop CPU with the default (smoke) parameters; the
  leakage experiment trains two small U-Nets.
- **Hardware**: any CPU; a GPU is optional.
""",
    ),
    (
        "code",
        r"""
import matplotlib.pyplot as plt
import numpy as np
from myst_nb import glue

from cxrlib import augment, datasets, explore, leakage, plots, plots_augment, preprocess, workspace
from cxrlib.splits import LeakageError
""",
    ),
    (
        "params",
        r"""
data_dir = None  # a dataset folder in any supported layout; None -> synthetic phantoms
n_phantoms = 120  # phantoms generated when data_dir is None
phantom_size = 256  # their side in pixels
image_size = 256  # side of the radiograph shown in the augmentation figures
experiment_size = 64  # image side in the leakage experiment (a multiple of 8)
n_radiographs = 32  # radiographs (with masks) in the leakage experiment
n_copies = 4  # augmented copies per radiograph
val_fraction = 0.25  # fraction of the radiographs for validation
test_fraction = 0.5  # fraction held out as a test set (costs no training time)
epochs = 100  # training epochs of each of the two U-Nets
batch_size = 8
learning_rate = 0.003
filters = [8, 16, 32, 64]  # U-Net filters per level
seed = 0
run_dir = "runs/02_augmentation"  # every file this notebook writes goes here
""",
    ),
    (
        "code",
        r"""
run_path = workspace.prepare_run_dir(run_dir)
data_path = workspace.resolve_data_dir(
    data_dir, run_path, n=n_phantoms, size=phantom_size, seed=seed
)
table = datasets.scan_dataset(data_path).table
masked = table[table["mask_path"].notna()].reset_index(drop=True)
print("data:", "synthetic phantoms" if workspace.is_phantom_folder(data_path) else data_path.name)
print(f"{len(masked)} of {len(table)} radiographs have a lung mask")
""",
    ),
    (
        "md",
        r"""
## The augmentations of the original project

The original notebooks used three intensity augmentations and, through Keras' image
generator, small geometric ones. `cxrlib.augment` implements all of them on `float32` images in
$[0, 1]$:

- **contrast v1**: the brightness/contrast adjustment of a well-known OpenCV tutorial, with the
  original settings brightness $b=-40$ and contrast $c=-120$ (on the 0-255 scale);
- **contrast v2**: $x \leftarrow \alpha x + \beta$ with the original $\alpha = 1.5$ and
  $\beta = 0.7$ grey levels, clipped to the valid range;
- **noise**: additive Gaussian noise with standard deviation $\epsilon = 0.1$;
- **rotation, shift and scale** (up to 10 degrees, 8 % of the image side, and a zoom between
  0.9 and 1.1), applied *identically* to the radiograph and its mask, so that the mask still
  outlines the lungs. The image is interpolated linearly, the mask by nearest neighbour, so it
  stays binary.

{numref}`fig-augmentations` applies each one, alone, to the same radiograph.
""",
    ),
    (
        "code",
        r"""
one = masked.iloc[explore.pick_examples(masked, n=1, seed=seed)]
shown = preprocess.load_arrays(one, size=image_size, cache_dir=run_path / "cache", progress=False)
config = augment.AugmentationConfig()
examples = augment.augment_examples(shown.images[0], shown.masks[0], config, seed=seed)
fig = plots_augment.augmentation_gallery(examples, config=config)
glue("fig_augmentations", fig, display=False)
plt.close(fig)
print(shown.ids[0], "->", list(examples))
""",
    ),
    (
        "md",
        r"""
```{glue:figure} fig_augmentations
:name: fig-augmentations

One radiograph and its augmentations, each applied alone, all drawn on the same grey scale
(black = 0, white = 1). The green outline is the lung mask after the same transform. Geometric
examples use the largest setting (10 degrees, 8 % shift, zoom 1.1).
```

### Contrast v1 squeezes the radiograph into a narrow grey band

Contrast v1 looks like a uniform grey square in {numref}`fig-augmentations`. It is not a
plotting artefact: with the original settings the contrast step multiplies the grey levels by
$f = 131 (c + 127) / (127 (131 - c)) \approx 0.029$ around mid-grey, after the brightness step
has already scaled them by $215/255$. {numref}`fig-intensity-augment` shows the grey-level
histograms.
""",
    ),
    (
        "code",
        r"""
intensity = plots_augment.intensity_summary(examples)
band = augment.brightness_contrast(np.array([0.0, 1.0]), config.brightness, config.contrast)
v1_share = intensity.loc["contrast_v1", "range"] / intensity.loc["original", "range"]
glue("orig_min", float(intensity.loc["original", "min"]), display=False)
glue("orig_max", float(intensity.loc["original", "max"]), display=False)
glue("v1_min", float(intensity.loc["contrast_v1", "min"]), display=False)
glue("v1_max", float(intensity.loc["contrast_v1", "max"]), display=False)
glue("v1_share", float(v1_share), display=False)
glue("band_low", float(band[0]), display=False)
glue("band_high", float(band[1]), display=False)
glue("v2_saturated", float((examples["contrast_v2"][0] >= 1.0).mean()), display=False)
glue("orig_saturated", float((examples["original"][0] >= 1.0).mean()), display=False)
glue("p_contrast", float(config.p_contrast_v1), display=False)
glue("p_geometric", float(config.p_geometric), display=False)
fig = plots_augment.intensity_histograms(examples, config=config)
glue("fig_intensity_augment", fig, display=False)
plt.close(fig)
intensity.round(3)
""",
    ),
    (
        "md",
        r"""
```{glue:figure} fig_intensity_augment
:name: fig-intensity-augment

Grey-level histograms of the radiograph and of its three intensity augmentations, each on the
full scale from 0 to 1 (the numbers in the corner are the smallest and largest grey level).
```

The radiograph spans grey levels {glue:text}`orig_min:.3f` to {glue:text}`orig_max:.3f`;
after contrast v1 it spans only {glue:text}`v1_min:.3f` to {glue:text}`v1_max:.3f`, about
{glue:text}`v1_share:.1%` of its original range. Whatever the input, contrast v1 with these
settings maps black to {glue:text}`band_low:.3f` and white to {glue:text}`band_high:.3f`:
every image becomes a faint grey picture of itself, a far stronger change than any exposure
difference between radiographs. Contrast v2 goes the other way: it stretches the contrast by
1.5 and clips, so {glue:text}`v2_saturated:.1%` of the pixels become pure white (against
{glue:text}`orig_saturated:.1%` before), and the detail in the brightest parts (bone, the
heart, the region below the diaphragm) is lost.

We keep both transforms with their original settings so that the book reproduces the original
training, but apply each only to a small share of the training images (probability
{glue:text}`p_contrast:.2f`, see `AugmentationConfig`). An exercise below asks you to choose
milder settings.

### Why there is no left-right flip

Flipping is the most common augmentation for natural images, and the original project did not
use it, rightly. A chest radiograph is not left-right symmetric: the heart lies on the
patient's left (the image's right), the left lung is smaller with a notch for the heart, the
aortic arch and the stomach bubble are on the left and the liver on the right, and the side
markers are letters that would read backwards. A flipped radiograph shows an anatomy
(*situs inversus*) that the model will almost never meet, and it teaches the model that lungs
may have either shape. `AugmentationConfig(hflip=False)` is therefore the default.

### What the training loop sees

During training the transforms are drawn at random for every image in every batch, each with
its own probability, and several can combine. {numref}`fig-augmented-draws` shows eight random
draws for the radiograph above, as `cxrlib.augment.Augmenter` produces them.
""",
    ),
    (
        "code",
        r"""
fig = plots_augment.augmented_draws(shown.images[0], shown.masks[0], config, n=8, seed=seed)
glue("fig_augmented_draws", fig, display=False)
plt.close(fig)
""",
    ),
    (
        "md",
        r"""
```{glue:figure} fig_augmented_draws
:name: fig-augmented-draws

Eight random draws of the training augmentation of the same radiograph. Each draw applies
the geometric transform with probability {glue:text}`p_geometric:.2f` and each intensity
transform with probability {glue:text}`p_contrast:.2f`.
```

## Leakage: augmenting before the split

The original notebooks built the augmented copies first (each radiograph with its contrast v1,
contrast v2 and noise versions) and split the enlarged set at random afterwards. The split
then sees images, not radiographs: a radiograph's original can land in training while its
noisy copy lands in validation. A model that has memorised the training radiograph scores
well on its copy, and the validation score says more about memory than about new patients.

To measure how much, we train the same small U-Net twice, on the same budget:

- **augment-then-split** (the original order): pool the radiographs with their augmented
  copies and split the pool at random;
- **split-then-augment** (the correct order): split the radiographs by id first, augment only
  the training radiographs, validate on the untouched validation radiographs.

A third set of radiographs, the **test set**, is split off by id before anything else; neither
model ever sees it; its score is the honest estimate that each design's validation score
should agree with. (All splits by id are stratified by site and label, as
`cxrlib.splits.split_table` does.) To isolate the leak, the copies change only the
intensities (contrast v2 and noise, at their original settings, each with probability 0.5; see
`leakage.COPY_CONFIG`): a copy has exactly the mask of its radiograph and is about as hard to
segment, so validation copies are not harder than test radiographs. Both designs train on the
same number of images, from the same pool of copies, from the same initial weights.
""",
    ),
    (
        "code",
        r"""
chosen = np.sort(np.random.default_rng(seed).permutation(len(masked))[:n_radiographs])
subset = masked.iloc[chosen].reset_index(drop=True)
arrays = preprocess.load_arrays(
    subset, size=experiment_size, cache_dir=run_path / "cache", progress=False
)
splits = leakage.split_designs(
    arrays.ids,
    n_copies=n_copies,
    val_fraction=val_fraction,
    test_fraction=test_fraction,
    seed=seed,
    sites=subset["site"].tolist(),
    labels=subset["label"].tolist(),
)
""",
    ),
    (
        "code",
        r"""
# NBVAL_CHECK_OUTPUT
design_counts = leakage.design_summary(splits)
print(design_counts.to_string())
""",
    ),
    (
        "code",
        r"""
leaky_counts = design_counts.loc["augment-then-split"]
honest_counts = design_counts.loc["split-then-augment"]
glue("n_experiment", len(arrays.ids), display=False)
glue("n_train_images", int(leaky_counts["train_images"]), display=False)
glue("n_test", len(splits.test), display=False)
glue("n_leaky_shared", int(leaky_counts["shared_radiographs"]), display=False)
glue("n_leaky_val_radiographs", int(leaky_counts["val_radiographs"]), display=False)
glue("n_leaky_train_radiographs", int(leaky_counts["train_radiographs"]), display=False)
glue("n_honest_train_radiographs", int(honest_counts["train_radiographs"]), display=False)
""",
    ),
    (
        "md",
        r"""
Of the {glue:text}`n_experiment` radiographs, {glue:text}`n_test` are held out for testing.
Both designs train on {glue:text}`n_train_images` images. Under augment-then-split, they are
copies of {glue:text}`n_leaky_train_radiographs` radiographs, and
{glue:text}`n_leaky_shared` of the {glue:text}`n_leaky_val_radiographs` radiographs in its
validation set also have a copy in
training. Under split-then-augment, the training images are copies of
{glue:text}`n_honest_train_radiographs` radiographs and no validation radiograph has a copy in
training. {numref}`fig-leaked-copies` follows one radiograph through the random split.
""",
    ),
    (
        "code",
        r"""
pool_images, pool_masks = leakage.make_pool(arrays.images, arrays.masks, splits, seed=seed)
where = leakage.copies_table(splits, "augment-then-split", arrays.ids)
leaked_id = arrays.ids[splits.shared_sources("augment-then-split")[0]]
copies = where[where["id"] == leaked_id]
titles = (copies["side"] + ", copy " + copies["copy"].astype(str)).tolist()
fig = plots.example_grid(
    pool_images[copies.index], pool_masks[copies.index], titles, ncols=len(copies)
)
glue("fig_leaked_copies", fig, display=False)
plt.close(fig)
copies
""",
    ),
    (
        "md",
        r"""
```{glue:figure} fig_leaked_copies
:name: fig-leaked-copies

The original (copy 0) and the augmented copies of one radiograph after the augment-then-split
design's random split: some are training images, others validation images. All share the
same lungs and the same mask; a copy that drew neither transform is an exact duplicate.
```

### The guard: `SegmentationSequence` refuses leaked ids

The training batches of `cxrlib` come from `augment.SegmentationSequence`. Given the
radiograph id of every training row and the ids of the validation radiographs, it refuses to
start when they meet. Here it is asked to train on the augment-then-split pool:
""",
    ),
    (
        "code",
        r"""
leaky_rows = splits.designs["augment-then-split"]
pool_ids = where["id"].to_numpy()
try:
    augment.SegmentationSequence(
        pool_images[leaky_rows.train],
        pool_masks[leaky_rows.train],
        batch_size,
        ids=pool_ids[leaky_rows.train],
        validation_ids=pool_ids[leaky_rows.val],
    )
except LeakageError as error:
    print(f"LeakageError: {error}")
""",
    ),
    (
        "md",
        r"""
The split-then-augment design passes the same check:
""",
    ),
    (
        "code",
        r"""
honest_rows = splits.designs["split-then-augment"]
batches = augment.SegmentationSequence(
    pool_images[honest_rows.train],
    pool_masks[honest_rows.train],
    batch_size,
    ids=pool_ids[honest_rows.train],
    validation_ids=pool_ids[honest_rows.val],
)
print(f"accepted: {len(batches)} batches of up to {batch_size} images")
""",
    ),
    (
        "md",
        r"""
### The experiment

`leakage.leakage_experiment` trains a U-Net with filters `filters` on each design for
`epochs` epochs (the same initial weights, batches per epoch and optimiser settings), then
scores the thresholded predictions with the Dice coefficient on the design's own validation
set and on the common test set. The intervals are 95 % bootstrap intervals that resample
whole radiographs (the copies of one radiograph are not independent). The experiment
deliberately trains long enough for both models to nearly memorise their few training
radiographs (compare the `train_dice` column with `test_dice`): that is when a leak matters.
""",
    ),
    (
        "code",
        r"""
results = leakage.leakage_experiment(
    arrays.images,
    arrays.masks,
    arrays.ids,
    n_copies=n_copies,
    epochs=epochs,
    filters=filters,
    batch_size=batch_size,
    learning_rate=learning_rate,
    val_fraction=val_fraction,
    test_fraction=test_fraction,
    sites=subset["site"].tolist(),
    labels=subset["label"].tolist(),
    seed=seed,
)
results.to_csv(run_path / "leakage_results.csv")
for key, value in leakage.summary_values(results).items():
    glue(key, value, display=False)
for key, text in leakage.interval_relations(results).items():
    glue(key, text, display=False)
fig = plots_augment.leakage_chart(results)
glue("fig_leakage", fig, display=False)
plt.close(fig)
results.round(3)
""",
    ),
    (
        "md",
        r"""
```{glue:figure} fig_leakage
:name: fig-leakage

Left: mean Dice of each design's model on its own validation set and on the held-out test set,
with 95 % bootstrap intervals (note where the axis starts). Right: validation minus test Dice,
the optimism of the validation score, with its 95 % bootstrap interval.
```

{numref}`fig-leakage` and the table show the result of this run (both trainings together took
{glue:text}`train_minutes:.1f` minutes):

- **augment-then-split**: validation Dice {glue:text}`leaky_val_dice:.3f` (95 % interval
  {glue:text}`leaky_val_low:.3f`-{glue:text}`leaky_val_high:.3f`), test Dice
  {glue:text}`leaky_test_dice:.3f`
  ({glue:text}`leaky_test_low:.3f`-{glue:text}`leaky_test_high:.3f`):
  validation minus test = {glue:text}`leaky_gap:+.3f`
  ({glue:text}`leaky_gap_low:+.3f` to {glue:text}`leaky_gap_high:+.3f`);
- **split-then-augment**: validation Dice {glue:text}`honest_val_dice:.3f`
  ({glue:text}`honest_val_low:.3f`-{glue:text}`honest_val_high:.3f`), test Dice
  {glue:text}`honest_test_dice:.3f`
  ({glue:text}`honest_test_low:.3f`-{glue:text}`honest_test_high:.3f`):
  validation minus test = {glue:text}`honest_gap:+.3f`
  ({glue:text}`honest_gap_low:+.3f` to {glue:text}`honest_gap_high:+.3f`).

How to read these numbers. The interval of the augment-then-split optimism (validation minus
test) {glue:text}`leaky_gap_relation` zero; that of split-then-augment
{glue:text}`honest_gap_relation` zero. The leaky validation score is an average over images that
the model has, for the most part, already seen in another version, so it tends to lie between
the model's score on its training images ({glue:text}`leaky_train_dice:.3f`) and its score on
new radiographs (the test set). The leak can therefore be only as large as the model's
overfitting, the difference between training and test Dice, and it is systematic: memory
can only push the validation score up. The difference between the split-then-augment
validation and test scores is not systematic: it depends on which radiographs happen to land
in the small validation set, and it can change sign from one seed to the next.

Lung segmentation generalises well, and the synthetic phantoms are much more alike than real
radiographs, so on phantoms the overfitting, and with it the leak, is small: a few hundredths
of Dice. It is of the same size as the noise of a validation set of a few radiographs, which is
why the intervals matter: a difference smaller than the intervals is not evidence of anything.
With the real radiographs (the `cpu` and `gpu` profiles) the models overfit more and the leak
is easier to see.

The original project reported a validation Dice loss of about 0.03 for its U-Net on data
split after augmentation. Scores like that are measured partly on copies of training
radiographs, and cannot be compared with scores on new patients; the segmentation chapters
of this book report test scores on radiographs held out by id.
""",
    ),
    (
        "md",
        r"""
## Summary
- The original project's augmentations are contrast v1 (brightness/contrast), contrast v2
  (gain and offset), additive noise and small rotations, shifts and zooms applied identically
  to image and mask. With its original settings, contrast v1 squeezes the image into a narrow
  band of grey levels, and contrast v2 saturates the brightest pixels.
- Left-right flips are not used: the anatomy of the chest is not symmetric.
- Augmenting or duplicating before the split puts copies of one radiograph in training and
  validation. The validation score then rewards memory: it is optimistic by up to the
  model's overfitting, as the experiment measures.
- In `cxrlib`, the split is made on radiograph ids first (`cxrlib.splits`), augmentation is
  applied on the fly to training batches only (`augment.SegmentationSequence`), and the
  sequence refuses training ids that meet the validation ids.

## What's next
The next chapter trains the segmentation models, U-Net {cite}`ronneberger2015unet` and
ResUNet {cite}`zhang2018resunet`, on a split made by radiograph id, with these augmentations
applied on the fly to the training batches.

## Exercises
1. Choose milder settings for contrast v1 so that a full-range image keeps at least half of
   its grey-level range. Which brightness and contrast values work?
2. Make the leak larger or smaller: rerun the experiment with more epochs, fewer training
   radiographs (a larger `val_fraction`) or more copies. How do the training, validation and
   test scores of the two designs move?
3. Write the correct pipeline for a real training run: split a dataset table by id, then build
   a training `SegmentationSequence` that augments on the fly and a validation sequence that
   does not.

```{admonition} Solution to exercise 1
:class: dropdown
`augment.brightness_contrast(np.array([0.0, 1.0]), b, c)` gives the grey levels of black and
white. With `b = 0` the contrast factor $f = 131 (c + 127) / (127 (131 - c))$ must be at least
0.5, which holds for `c >= -42` (for example `c = -40` gives $f \approx 0.52$); a negative `b`
shrinks the range further by $(255 + b) / 255$.
```

```{admonition} Solution to exercise 2
:class: dropdown
Pass other values through papermill, e.g. `-p epochs 150 -p val_fraction 0.35`. The more the
model memorises (longer training, fewer radiographs), the higher its training score and the
higher the augment-then-split validation score relative to the test score; the
split-then-augment validation score stays an estimate of the test score.
```

````{admonition} Solution to exercise 3
:class: dropdown
```python
from cxrlib.splits import split_table

split = split_table(table, require_mask=True, seed=0)
data = preprocess.load_arrays(split, size=128)
train = (split["split"] == "train").to_numpy()
val = (split["split"] == "val").to_numpy()
ids = np.asarray(data.ids)
train_batches = augment.SegmentationSequence(
    data.images[train], data.masks[train], 16, augment=True,
    ids=ids[train], validation_ids=ids[~train],
)
val_batches = augment.SegmentationSequence(data.images[val], data.masks[val], 16)
```
````
""",
    ),
]

#: Cells (by the start of their source) whose stderr the book hides: TensorFlow's start-up log.
HIDE_STDERR = ("leaky_rows = ", "results = leakage.leakage_experiment(")


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[2]
    write_notebook(root / "notebooks" / "02_augmentation.ipynb", CELLS, hide_stderr=HIDE_STDERR)
