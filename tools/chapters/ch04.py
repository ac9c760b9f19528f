"""Source of notebooks/04_unet_vs_resunet.ipynb (run: python tools/chapters/ch04.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nbtools import write_notebook  # noqa: E402

CELLS = [
    (
        "md",
        r"""
# U-Net versus ResUNet

## Overview
The previous chapter trained two lung-segmentation networks with the same data, split and
recipe: the U-Net {cite}`ronneberger2015unet` and the residual U-Net (ResUNet)
{cite}`zhang2018resunet`. Here we compare them side by side: their size, how they trained, how
well they segment the test radiographs of each site (with confidence intervals and a *paired*
comparison on the same radiographs), how fast they train and predict, and where each fails.
Then we ask a harder question: how well does a model trained at one hospital work at the
other? Finally we put our numbers next to those of the original project and of the
literature, and say what can and cannot be compared.

## Prerequisites
| concept | importance |
|---|---|
| {doc}`03a_unet_training` (the training recipe and the scores) | necessary |
| bootstrap confidence intervals | helpful |

- **Time to run**: about two minutes on a laptop CPU with the default (smoke) parameters when
  the runs of the previous chapter exist (it trains them if not); the cross-site experiment
  trains two more models per architecture.
- **Hardware**: any CPU; a GPU is optional.
""",
    ),
    (
        "code",
        r"""
import matplotlib.pyplot as plt
from myst_nb import glue

from cxrlib import crosssite, datasets, plots_seg, seg_runs, workspace
""",
    ),
    (
        "params",
        r"""
data_dir = None  # a dataset folder in any supported layout; None -> synthetic phantoms
n_phantoms = 120  # phantoms generated when data_dir is None
phantom_size = 256  # their side in pixels
runs_root = None  # folder with the runs of chapter 03 (03a_unet_training, 03b_resunet_training)
# used only to train a run of chapter 03 that is missing (keep them equal to chapter 03's):
img_size = 64
filters = [16, 16, 32, 64]  # filters per level; "recipe": the CPU recipe; None: the original
epochs = 10
batch_size = 8
precision = "float32"  # "float32", "mixed_bfloat16", "mixed_float16" or "auto"
lr_schedule = "plateau"  # "plateau" (lower the rate when stuck) or "cosine" (the CPU recipe)
patience = 6  # early stopping: epochs without a better validation Dice
cross_site_models = ["unet", "resunet"]  # architectures in the cross-site experiment
cross_site_epochs = None  # epochs of the cross-site models; None: those of chapter 03
n_cases = 2  # best and worst test cases shown per model
n_timing = 16  # test radiographs in the timed prediction
seed = 0
overwrite = True  # replace models in run_dir trained with other parameters or data
run_dir = "runs/04_unet_vs_resunet"  # every file this notebook writes goes here
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
results = seg_runs.find_chapter_runs(
    table,
    run_path,
    runs_root=runs_root,
    overwrite=overwrite,
    cache_dir=run_path / "cache",
    img_size=img_size,
    filters=filters,
    epochs=epochs,
    batch_size=batch_size,
    precision=precision,
    lr_schedule=lr_schedule,
    patience=patience,
    seed=seed,
)
print("data:", "synthetic phantoms" if workspace.is_phantom_folder(data_path) else data_path.name)
seg_runs.run_overview(results)
""",
    ),
    (
        "md",
        r"""
The table says where each model comes from: `trained_now` is False for a run found in the
folder of chapter 03 (the book passes it as `runs_root`), True when this notebook had to
train it (with the parameters above).

## Size
""",
    ),
    (
        "code",
        r"""
sizes = seg_runs.parameter_table(results)
for key, value in seg_runs.table_values(sizes, "size").items():
    glue(key, value, display=False)
for key, value in seg_runs.REFERENCE.items():
    glue(f"ref_{key}", value, display=False)
original_share = sizes.loc["ResUNet", "original_params"] / sizes.loc["U-Net", "original_params"]
glue("original_share", float(original_share), display=False)
""",
    ),
    (
        "code",
        r"""
# NBVAL_CHECK_OUTPUT
print(sizes[["original_filters", "original_params", "trained_filters", "trained_params"]])
""",
    ),
    (
        "md",
        r"""
With their original filters, the U-Net has {glue:text}`size_u_net_original_params:,`
parameters and the ResUNet {glue:text}`size_resunet_original_params:,`
({glue:text}`original_share:.0%` of the U-Net), the counts of the original project
({glue:text}`ref_unet_params:,` and {glue:text}`ref_resunet_params:,`). The ResUNet starts with
half as many filters (16 instead of 32) and doubles them at each level, like the U-Net, so it is
smaller although every level holds a residual unit with batch normalisation. The networks
trained here have filters {glue:text}`size_u_net_trained_filters` (U-Net,
{glue:text}`size_u_net_trained_params:,` parameters) and
{glue:text}`size_resunet_trained_filters` (ResUNet,
{glue:text}`size_resunet_trained_params:,` parameters); see the previous chapter for why the
CPU recipes are narrower.

## Training curves
""",
    ),
    (
        "code",
        r"""
for key, value in seg_runs.history_values(results).items():
    glue(key, value, display=False)
fig = plots_seg.training_curves({name: result.history for name, result in results.items()})
glue("fig_curves_both", fig, display=False)
plt.close(fig)
""",
    ),
    (
        "md",
        r"""
```{glue:figure} fig_curves_both
:name: fig-curves-both

Loss, Dice and learning rate per epoch of both networks: training dashed, validation solid;
dots mark the epochs whose weights were kept.
```

{numref}`fig-curves-both` puts the two trainings together. The U-Net reached its best
validation Dice, {glue:text}`u_net_best_val_dice:.3f`, at epoch
{glue:text}`u_net_best_epoch` of {glue:text}`u_net_epochs`; the ResUNet reached
{glue:text}`resunet_best_val_dice:.3f` at epoch {glue:text}`resunet_best_epoch` of
{glue:text}`resunet_epochs`. Batch normalisation usually lets the ResUNet start faster; the
plain U-Net often needs a few epochs before its predictions leave the "all background" state.
The validation sets are small, so the validation curves are noisy: compare the test scores
below, not the best validation epochs.

## Test scores per site

Both runs used the same data, seed and split fractions, so they were tested on the same
radiographs, scored at the original resolution (without post-processing).
""",
    ),
    (
        "code",
        r"""
scores = seg_runs.score_table(results)
for key, value in seg_runs.score_values(scores).items():
    glue(key, value, display=False)
difference = seg_runs.paired_difference(
    results["U-Net"], results["ResUNet"], names=("U-Net", "ResUNet")
)
for key, value in seg_runs.table_values(difference, "diff").items():
    glue(key, value, display=False)
fig = plots_seg.site_scores_chart(scores)
glue("fig_scores_both", fig, display=False)
plt.close(fig)
scores.round(3)
""",
    ),
    (
        "md",
        r"""
```{glue:figure} fig_scores_both
:name: fig-scores-both

Mean test Dice (left) and IoU (right) per site, with 95 % bootstrap intervals, for both
networks. Note where the axes start.
```

On all {glue:text}`u_net_all_n` test radiographs, the U-Net reaches a mean Dice of
{glue:text}`u_net_all_dice_mean:.3f` ({glue:text}`u_net_all_dice_low:.3f` to
{glue:text}`u_net_all_dice_high:.3f`) and the ResUNet {glue:text}`resunet_all_dice_mean:.3f`
({glue:text}`resunet_all_dice_low:.3f` to {glue:text}`resunet_all_dice_high:.3f`);
{numref}`fig-scores-both` shows the sites.

Two intervals that overlap do not mean that the models are equal, and a difference between
two means is not necessarily real. Because both models segmented the *same* radiographs, the
better question is: by how much does the ResUNet beat the U-Net on each radiograph, on
average? That paired difference (ResUNet minus U-Net) and its bootstrap interval over
radiographs:
""",
    ),
    (
        "code",
        r"""
difference.round(3)
""",
    ),
    (
        "md",
        r"""
Over all test radiographs the mean paired difference in Dice (ResUNet minus U-Net) is
{glue:text}`diff_all_diff_mean:+.3f` (95 % interval {glue:text}`diff_all_diff_low:+.3f` to
{glue:text}`diff_all_diff_high:+.3f`): {glue:text}`diff_all_verdict` (an interval that
contains zero means no clear difference). Per site: Montgomery
{glue:text}`diff_montgomery_diff_mean:+.3f` ({glue:text}`diff_montgomery_verdict`), Shenzhen
{glue:text}`diff_shenzhen_diff_mean:+.3f` ({glue:text}`diff_shenzhen_verdict`).

## Speed

Training speed comes from the runs (training images per second, without the first epoch,
which includes building the computation graph). Inference speed is measured here, on
{glue:text}`n_timing` test radiographs already resized to the model input, the best of three
passes. Both depend on the machine and on what else it is doing: compare the two networks
with each other, not with numbers measured elsewhere.
""",
    ),
    (
        "code",
        r"""
inference = seg_runs.measure_inference(results, table, n=n_timing, batch_size=batch_size)
speed = seg_runs.speed_table(results, inference)
glue("n_timing", n_timing, display=False)
for key, value in seg_runs.table_values(speed, "speed").items():
    glue(key, value, display=False)
speed.round(2)
""",
    ),
    (
        "md",
        r"""
The U-Net trained at {glue:text}`speed_u_net_train_images_per_s:.1f` images per second and
predicts {glue:text}`speed_u_net_inference_images_per_s:.0f` per second; the ResUNet
{glue:text}`speed_resunet_train_images_per_s:.1f` and
{glue:text}`speed_resunet_inference_images_per_s:.0f`. Fewer parameters do not make a network
faster by themselves: the cost is in the convolutions at the finest levels, where the images
are largest, and in the ResUNet's batch normalisation and extra shortcut convolutions.

## The best and the worst test cases
""",
    ),
    (
        "code",
        r"""
images, truths, preds, titles = seg_runs.case_panels(results, table, n=n_cases)
fig = plots_seg.outline_cases(images, truths, preds, titles, ncols=2 * n_cases)
glue("fig_cases_both", fig, display=False)
plt.close(fig)
""",
    ),
    (
        "md",
        r"""
```{glue:figure} fig_cases_both
:name: fig-cases-both

Best and worst test radiographs of each network (top row: U-Net, bottom row: ResUNet), by Dice
of the raw prediction: reference outline in green, prediction in orange (dashed).
```

When both networks fail on the same radiographs ({numref}`fig-cases-both`), the difficulty is
in the image (or in its reference mask), not in the architecture; a failure of only one of
them points to the model.

## Across sites: train at one hospital, test at the other

The Montgomery and Shenzhen radiographs come from different countries, machines and
populations. So far every model was trained on both sites. Here each architecture is trained
again, with the same recipe, on **one site only**, and tested

- on the held-out test split of its own site (a new patient, the same hospital), and
- on every radiograph with a mask from the other site (a hospital it has never seen).
""",
    ),
    (
        "code",
        r"""
configs = crosssite.configs_from_runs(results, cross_site_models, epochs=cross_site_epochs)
cross = crosssite.cross_site_experiment(
    table, configs, run_path / "cross_site", overwrite=overwrite, cache_dir=run_path / "cache"
)
headline = cross_site_models[-1]
glue("xs_model", seg_runs.MODEL_NAMES[headline], display=False)
for key, value in crosssite.summary_values(cross, model=headline).items():
    glue(key, value, display=False)
pooled = seg_runs.score_table({"pooled": results[seg_runs.MODEL_NAMES[headline]]})
for key, value in seg_runs.score_values(pooled).items():
    glue(key, value, display=False)
fig = plots_seg.cross_site_chart(cross)
glue("fig_cross_site", fig, display=False)
plt.close(fig)
cross.round(3)
""",
    ),
    (
        "md",
        r"""
```{glue:figure} fig_cross_site
:name: fig-cross-site

Mean Dice (95 % bootstrap interval) of models trained on one site only, on each test site:
filled points on the training site's own test split, hollow points on the other site.
```

For the {glue:text}`xs_model` ({numref}`fig-cross-site`):

- trained on Montgomery ({glue:text}`xs_montgomery_to_montgomery_n_train` radiographs), it
  reaches a Dice of {glue:text}`xs_montgomery_to_montgomery_dice_mean:.3f` on the Montgomery
  test split and {glue:text}`xs_montgomery_to_shenzhen_dice_mean:.3f`
  ({glue:text}`xs_montgomery_to_shenzhen_dice_low:.3f` to
  {glue:text}`xs_montgomery_to_shenzhen_dice_high:.3f`) on the
  {glue:text}`xs_montgomery_to_shenzhen_n_test` Shenzhen radiographs;
- trained on Shenzhen ({glue:text}`xs_shenzhen_to_shenzhen_n_train` radiographs), it reaches
  {glue:text}`xs_shenzhen_to_shenzhen_dice_mean:.3f` on the Shenzhen test split and
  {glue:text}`xs_shenzhen_to_montgomery_dice_mean:.3f`
  ({glue:text}`xs_shenzhen_to_montgomery_dice_low:.3f` to
  {glue:text}`xs_shenzhen_to_montgomery_dice_high:.3f`) on the
  {glue:text}`xs_shenzhen_to_montgomery_n_test` Montgomery radiographs.

The difference between the model trained at a site and the model trained at the other site,
both scored on that site's radiographs, is {glue:text}`xs_shenzhen_drop:+.3f` on Shenzhen and
{glue:text}`xs_montgomery_drop:+.3f` on Montgomery: a positive difference means that the
hospital's own model does better there. For comparison, the same network trained on both sites
(chapter 03) scored {glue:text}`pooled_montgomery_dice_mean:.3f` on the Montgomery and
{glue:text}`pooled_shenzhen_dice_mean:.3f` on the Shenzhen test radiographs.

How to read this. The own-site scores rest on a small test split, the cross-site scores on all
radiographs of the other site, so the intervals differ in width. The training sets differ in
size too (here {glue:text}`xs_shenzhen_to_shenzhen_n_train` Shenzhen against
{glue:text}`xs_montgomery_to_montgomery_n_train` Montgomery training radiographs), which alone
can make the model of the larger site the better one everywhere. A model that does clearly
worse at the other hospital has learned something specific to its own: lung size and position
in the frame, exposure, the patient population, even the style of the reference masks. The
phantoms imitate some of these differences (lung size, exposure, body habitus, markers), so
they show the effect too, although its size on real radiographs can differ. The lesson carries
over: train on radiographs from every site where the model will be used, and test at each of
them.

## Against the reference numbers

The original project reported a *validation Dice loss* of {glue:text}`ref_unet_val_dice_loss`
for its U-Net and {glue:text}`ref_resunet_val_dice_loss` for its ResUNet, that is a validation
Dice of about 0.97. Our best validation Dice losses ($1 -$ validation Dice) are
{glue:text}`u_net_best_val_dice_loss:.3f` (U-Net) and
{glue:text}`resunet_best_val_dice_loss:.3f` (ResUNet). The numbers cannot be compared
directly, for four reasons:

1. **Leakage.** The original notebooks augmented the data before splitting it, so their
   validation sets held copies of training radiographs (chapter {doc}`02_augmentation`
   measures the effect). Their validation loss is optimistic; ours is measured on radiographs
   whose copies the model never saw.
2. **Model selection.** A best validation score is chosen on the same radiographs it is
   reported on, so it is optimistic too. Only the test scores above are unbiased.
3. **Resolution.** The original scored at 256 x 256; we score at each radiograph's original
   resolution, where a thin border of error costs more.
4. **Data and budget.** The smoke edition trains small networks on synthetic phantoms for a
   few epochs; the `cpu` edition trains the width-reduced CPU recipe on the real development
   set; only the `gpu` edition trains the original networks at 256 x 256.

The best published lung segmentations with U-Net-family models reach a Dice of about
{glue:text}`ref_best_dice_montgomery` on Montgomery and {glue:text}`ref_best_dice_shenzhen_low`
to {glue:text}`ref_best_dice_shenzhen_high` on Shenzhen, on held-out test radiographs. Our test
Dice here, {glue:text}`u_net_montgomery_dice_mean:.3f` and
{glue:text}`resunet_montgomery_dice_mean:.3f` on Montgomery (U-Net, ResUNet) and
{glue:text}`u_net_shenzhen_dice_mean:.3f` and {glue:text}`resunet_shenzhen_dice_mean:.3f` on
Shenzhen, should be read with the data, the recipe and the intervals above in mind. On the
synthetic phantoms (the default data) they measure the pipeline, not the networks' ability on
real radiographs. On real radiographs they are closer to the literature's, but still not
equal: different test radiographs, width-reduced networks trained for a few epochs on a CPU,
and scores at the original resolution.
""",
    ),
    (
        "md",
        r"""
## Summary
- The original ResUNet has {glue:text}`original_share:.0%` of the U-Net's parameters. Trained
  with the same recipe and tested on the same radiographs, the paired difference in Dice
  (ResUNet minus U-Net) is {glue:text}`diff_all_diff_mean:+.3f`
  ({glue:text}`diff_all_diff_low:+.3f` to {glue:text}`diff_all_diff_high:+.3f`):
  {glue:text}`diff_all_verdict`.
- Speed depends on the convolutions at the finest levels more than on the parameter count.
- A model trained at one hospital can lose accuracy at the other; report scores per site and
  across sites, with intervals.
- The original project's validation Dice losses were measured on leaked validation sets; only
  test scores on radiographs held out by id are comparable with the literature.

## What's next
With lungs segmented, the book turns to the diagnosis of tuberculosis: {doc}`05_tb_exploration`
looks at what distinguishes the TB radiographs.

## Exercises
1. Rerun the comparison with another `seed` (pass it to chapter 03 too, or let this notebook
   train the runs). Does the verdict of the paired comparison change?
2. Which of the two networks gains more from post-processing? Use
   `seg_runs.score_table(results, postprocess="postprocessed")`.
3. In the cross-site experiment, give both sites the same number of training radiographs (for
   example by sub-sampling the Shenzhen rows of `table`). Does the Shenzhen model still
   transfer better?

```{admonition} Solution to exercise 2
:class: dropdown
Compare `seg_runs.score_table(results)` with
`seg_runs.score_table(results, postprocess="postprocessed")`: the Dice changes little for
both, the median HD95 more, and most for the network that leaves more islands outside the
lungs.
```

````{admonition} Solution to exercise 3
:class: dropdown
```python
montgomery = table[(table["site"] == "montgomery") & table["mask_path"].notna()]
shenzhen = table[(table["site"] == "shenzhen") & table["mask_path"].notna()]
balanced = pd.concat([montgomery, shenzhen.sample(len(montgomery), random_state=seed)])
crosssite.cross_site_experiment(balanced, configs, run_path / "cross_site_balanced")
```
(`import pandas as pd` first.) With equal training sets, the difference between the two
directions measures the sites rather than the amount of data.
````
""",
    ),
]

#: Cells (by the start of their source) whose stderr the book hides: TensorFlow's start-up log.
HIDE_STDERR = (
    "import matplotlib",
    "run_path = ",
    "sizes = ",
    "inference = ",
    "images, truths, preds",
    "configs = ",
)


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[2]
    write_notebook(root / "notebooks" / "04_unet_vs_resunet.ipynb", CELLS, hide_stderr=HIDE_STDERR)
