"""Source of notebooks/03_segmentation_training.ipynb (run: python tools/chapters/ch03.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nbtools import write_notebook  # noqa: E402

CELLS = [
    (
        "md",
        r"""
# Training a lung segmentation model

## Overview
This chapter trains a network that outlines the lungs on a chest radiograph: for every pixel
it predicts the probability that the pixel belongs to a lung. The book runs the chapter twice,
once with each of the two architectures of the original project, the U-Net
{cite}`ronneberger2015unet` and the deep residual U-Net (ResUNet) {cite}`zhang2018resunet`;
the `model` parameter chooses which. We

- look at the architecture and its size,
- split the radiographs into training, validation and test sets by radiograph (before any
  augmentation), and check that no radiograph lands in two sets,
- train with on-the-fly augmentation, keep the epoch with the best validation Dice, and save
  the model (a second run with the same parameters and data reuses it),
- score the model on the test radiographs at their **original resolution**, per site, with
  95 % confidence intervals, with and without a simple post-processing step,
- and look at the best and the worst test cases.

## Prerequisites
| concept | importance |
|---|---|
| {doc}`02_augmentation` (splitting before augmenting) | necessary |
| convolutional networks, training and validation loss | necessary |
| Dice coefficient and intersection over union (IoU) | helpful (defined below) |

- **Time to run**: about a minute per architecture on a laptop CPU with the default (smoke)
  parameters; the `cpu` profile trains the CPU recipe on the real radiographs in minutes per
  architecture on two cores (the run time of every chapter is on the {doc}`../reproducibility`
  page); the `gpu` profile trains the original networks at 256 x 256.
- **Hardware**: any CPU; a GPU is optional (see the GPU recipe at the end).
""",
    ),
    (
        "code",
        r"""
import matplotlib.pyplot as plt
from myst_nb import glue

from cxrlib import datasets, models, plots_seg, seg_runs, splits, train, workspace
""",
    ),
    (
        "params",
        r"""
data_dir = None  # a dataset folder in any supported layout; None -> synthetic phantoms
n_phantoms = 120  # phantoms generated when data_dir is None
phantom_size = 256  # their side in pixels
model = "resunet"  # "unet" or "resunet" (the book runs this chapter once for each)
img_size = 64  # side of the model input; divisible by 2 ** (len(filters) - 1)
filters = [16, 16, 32, 64]  # filters per level; "recipe": the CPU recipe; None: the original
epochs = 10  # maximum number of epochs (early stopping may end sooner)
batch_size = 8
precision = "float32"  # "float32", "mixed_bfloat16", "mixed_float16" or "auto"
lr_schedule = "plateau"  # "plateau" (lower the rate when stuck) or "cosine" (the CPU recipe)
patience = 6  # early stopping: epochs without a better validation Dice
n_cases = 2  # best and worst test cases shown
seed = 0
overwrite = True  # replace a model in run_dir trained with other parameters or data
run_dir = "runs/03_segmentation_training"  # every file this notebook writes goes here
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
config = seg_runs.segmentation_config(
    model,
    img_size=img_size,
    filters=filters,
    epochs=epochs,
    batch_size=batch_size,
    precision=precision,
    lr_schedule=lr_schedule,
    patience=patience,
    seed=seed,
)
model_name = seg_runs.MODEL_NAMES[config.model]
glue("model_name", model_name, display=False)
print("data:", "synthetic phantoms" if workspace.is_phantom_folder(data_path) else data_path.name)
print(f"{table['mask_path'].notna().sum()} of {len(table)} radiographs have a lung mask")
print("training configuration:", config)
""",
    ),
    (
        "md",
        r"""
## The architecture

Both networks are *encoder-decoder* networks with skip connections, the design of the U-Net
{cite}`ronneberger2015unet`. The encoder halves the image size at each of its levels and
doubles the number of feature maps (*filters*), so that deep levels see a large part of the
chest at a coarse resolution; the decoder doubles the size back at each level and
concatenates the encoder's feature maps of the same size (the skip connections), so that the
final outline can be as sharp as the input. A 1 x 1 convolution with a sigmoid turns the last
feature maps into one lung probability per pixel.

- The **U-Net** of the original project uses two 3 x 3 convolutions with ReLU per level,
  max pooling to go down, 2 x 2 transposed convolutions to go up, and 32-64-128-256-512
  filters.
- The **ResUNet** {cite}`zhang2018resunet` replaces each pair of convolutions with a
  *residual unit*: batch normalisation, ReLU and convolution, twice, plus a shortcut that adds
  the unit's input to its output, which makes deep networks easier to train. It goes down with
  stride-2 convolutions and up with plain up-sampling, and uses 16-32-64-128-256 filters.

The networks are fully convolutional, so their number of weights does not depend on the
image size. This run trains the {glue:text}`model_name`:
""",
    ),
    (
        "code",
        r"""
original_params = seg_runs.parameter_counts(config.model)
trained_params = seg_runs.parameter_counts(config.model, config.resolved_filters)
original_filters = "-".join(map(str, train.DEFAULT_FILTERS[config.model]))
trained_filters = "-".join(map(str, config.resolved_filters))
glue("original_params", original_params, display=False)
glue("trained_params", trained_params, display=False)
glue("params_share", trained_params / original_params, display=False)
glue("original_filters", original_filters, display=False)
glue("trained_filters", trained_filters, display=False)
glue("img_size", config.img_size, display=False)
""",
    ),
    (
        "code",
        r"""
# NBVAL_CHECK_OUTPUT
print(f"original {model_name}, filters {original_filters}: {original_params:,} parameters")
print(f"trained here, filters {trained_filters}: {trained_params:,} parameters")
""",
    ),
    (
        "md",
        r"""
The original {glue:text}`model_name` has {glue:text}`original_params:,` parameters
(filters {glue:text}`original_filters` at a 256 x 256 x 1 input). The network trained here has
filters {glue:text}`trained_filters` and {glue:text}`trained_params:,` parameters
({glue:text}`params_share:.1%` of the original), at an input of {glue:text}`img_size` x
{glue:text}`img_size` pixels.

Why smaller? Training time grows with the number of pixels and, per pixel, roughly with the
square of the width (the filters), so a network half as wide on images half as large trains
about sixteen times faster. On a CPU this is the difference between minutes and hours. The
book's CPU recipe (`cxrlib.train.cpu_recipe`, the `cpu` profile) trains width-reduced
networks at 128 x 128; the smoke defaults of this notebook go smaller still, so that the
whole book builds in minutes. A smaller input loses little for *lungs*, which are large
smooth shapes: the predicted probability map is up-sampled to each radiograph's original
size before scoring, and the scores below are measured there. Pass `filters=None` and
`img_size=256` (the `gpu` profile) to train the original network.
""",
    ),
    (
        "md",
        r"""
## Training, with load-or-train

`cxrlib.train.train_segmentation` runs the whole chain: it keeps the radiographs that have a
lung mask, splits them by radiograph (stratified by site and label), loads them at the model
size, trains with on-the-fly augmentation of the training batches only (chapter
{doc}`02_augmentation`), keeps the weights of the epoch with the best validation Dice, and
scores the model on the validation and test radiographs. Everything goes into the run folder
(model, configuration, split, history, scores). The run is keyed by a hash of the
configuration and of the data files: running the notebook again with the same parameters
reuses the saved model instead of training again.
""",
    ),
    (
        "code",
        r"""
result = train.train_segmentation(
    table, config, run_path, overwrite=overwrite, cache_dir=run_path / "cache", progress=False
)
history = seg_runs.history_summary(result)
for key, value in history.items():
    glue(key, value, display=False)
speed = seg_runs.speed_table({model_name: result}).loc[model_name]
glue("train_minutes", float(speed["train_minutes"]), display=False)
glue("train_images_per_s", float(speed["train_images_per_s"]), display=False)
print("trained in this run:", result.trained, "| epochs:", result.epochs_run)
""",
    ),
    (
        "md",
        r"""
## A split by radiograph, checked for leakage

The split was made before any augmentation, on radiograph ids. `cxrlib.splits.check_no_leakage`
verifies that every id occurs once and in one split only (it raises `LeakageError`
otherwise):
""",
    ),
    (
        "code",
        r"""
splits.check_no_leakage(result.split)
counts = seg_runs.split_counts(result.split)
glue("n_train", int(counts.loc["all", "train"]), display=False)
glue("n_val", int(counts.loc["all", "val"]), display=False)
glue("n_test", int(counts.loc["all", "test"]), display=False)
""",
    ),
    (
        "code",
        r"""
# NBVAL_CHECK_OUTPUT
print(counts.to_string())
""",
    ),
    (
        "md",
        r"""
The model learns from {glue:text}`n_train` radiographs; {glue:text}`n_val` validation
radiographs choose the best epoch (and drive the learning-rate schedule and early stopping);
{glue:text}`n_test` test radiographs are used only to report the scores below.

## Learning curves
""",
    ),
    (
        "code",
        r"""
fig = plots_seg.training_curves(result.history)
glue("fig_curves", fig, display=False)
plt.close(fig)
result.history.round(4)
""",
    ),
    (
        "md",
        r"""
```{glue:figure} fig_curves

Training (dashed) and validation (solid) loss and Dice per epoch, and the learning rate. The
dot marks the epoch whose weights were kept (best validation Dice).
```

The figure above shows the training. The best validation Dice,
{glue:text}`best_val_dice:.3f`, was reached at epoch {glue:text}`best_epoch` of
{glue:text}`epochs`; training took {glue:text}`train_minutes:.1f` minutes at about
{glue:text}`train_images_per_s:.0f` training images per second. The learning rate follows
the `lr_schedule` parameter: `"plateau"` lowers it when the validation Dice stops improving,
`"cosine"` (the CPU recipe, what `cxrlib train-seg` trains by default) lets it fall smoothly
to a small floor by the last epoch; here it ended at {glue:text}`final_learning_rate:.1e`.
The training Dice is measured
on augmented images while the weights change during the epoch, so it can lie below the
validation Dice early on. The validation set is small: its Dice jumps from epoch to epoch,
which is why the final scores come from the separate test set, with confidence intervals.

## Test scores per site

Three scores compare a predicted mask $P$ with the reference mask $T$:

- the **Dice coefficient** $2|P \cap T| / (|P| + |T|)$, from 0 (no overlap) to 1 (identical),
- the **intersection over union** (IoU, Jaccard index) $|P \cap T| / |P \cup T|$, always
  below the Dice except for a perfect match,
- the **95th percentile Hausdorff distance** (HD95), in pixels of the original image: 95 % of
  the points of each outline lie within this distance of the other outline. Dice and IoU
  barely notice a small stray blob far from the lungs; HD95 does.

Each radiograph is scored at its **original resolution**: the probability map is up-sampled
to the size of the original mask, thresholded at 0.5 and compared with the original mask. The
intervals are 95 % bootstrap intervals over the test radiographs.
""",
    ),
    (
        "code",
        r"""
scores = seg_runs.postprocess_table(result)
for key, value in seg_runs.score_values(scores).items():
    glue(key, value, display=False)
fig = plots_seg.site_scores_chart(scores)
glue("fig_scores", fig, display=False)
plt.close(fig)
scores.round(3)
""",
    ),
    (
        "md",
        r"""
```{glue:figure} fig_scores

Mean test Dice (left) and IoU (right) per site with 95 % bootstrap intervals, without and
with post-processing. Note where the axes start.
```

On all {glue:text}`raw_all_n` test radiographs the mean Dice is
{glue:text}`raw_all_dice_mean:.3f` (95 % interval {glue:text}`raw_all_dice_low:.3f` to
{glue:text}`raw_all_dice_high:.3f`) and the mean IoU {glue:text}`raw_all_iou_mean:.3f`. Per
site (figure above): Montgomery {glue:text}`raw_montgomery_dice_mean:.3f`
({glue:text}`raw_montgomery_dice_low:.3f` to {glue:text}`raw_montgomery_dice_high:.3f`,
{glue:text}`raw_montgomery_n` radiographs), Shenzhen {glue:text}`raw_shenzhen_dice_mean:.3f`
({glue:text}`raw_shenzhen_dice_low:.3f` to {glue:text}`raw_shenzhen_dice_high:.3f`,
{glue:text}`raw_shenzhen_n` radiographs). With so few test radiographs per site, the intervals
are wide; differences smaller than them are not evidence of anything.

### Post-processing

A segmentation network decides pixel by pixel, so it can leave small islands of "lung" outside
the chest, or holes inside a lung. The post-processing of `cxrlib.postprocess` keeps the two
largest connected regions (the two lungs) and fills their holes. It changes the mean Dice from
{glue:text}`raw_all_dice_mean:.3f` to {glue:text}`post_processed_all_dice_mean:.3f` and the
median HD95 from {glue:text}`raw_all_hd95_median:.1f` to
{glue:text}`post_processed_all_hd95_median:.1f` pixels. As expected, the distance-based score
gains far more than the overlap scores: an island far from the lungs costs a few pixels of
overlap but moves the outline's farthest points a long way.

## The best and the worst test cases
""",
    ),
    (
        "code",
        r"""
images, truths, preds, titles = seg_runs.case_panels({model_name: result}, table, n=n_cases)
fig = plots_seg.outline_cases(images, truths, preds, titles, ncols=2 * n_cases)
glue("fig_cases", fig, display=False)
plt.close(fig)
seg_runs.pick_cases(seg_runs.per_image_table(result), n_cases).round(3)
""",
    ),
    (
        "md",
        r"""
```{glue:figure} fig_cases

The test radiographs with the highest and the lowest Dice (raw predictions, before
post-processing): reference lung outline in green, predicted outline in orange (dashed).
```

The worst cases in the figure above show where the model struggles. Two kinds of error are
common: islands of "lung" outside the lung fields (which the post-processing removes), and
outlines that stop short of, or run past, the true border, most often at the lung bases
(where the diaphragm and the heart overlap the lung fields) and at the apices behind the
clavicles. On real radiographs a third kind appears: lungs whose lower parts are hidden by
effusion or consolidation, where the reference mask follows the anatomy but the image shows
no air. Reading such cases is the quickest way to find out what the training data lack.

## The GPU recipe

The same notebook trains the original networks on a GPU; only the parameters change. The `gpu`
profile (`cxrlib book --profile gpu --data DIR`, or papermill with `-f book/params/gpu.yml`)
runs it with:

- **image size 256** (`img_size: 256`) and the **original filters** (`filters: null`);
- **batch size 16** and **50 epochs** (early stopping usually ends sooner);
- **mixed precision**: `precision: mixed_float16` on most NVIDIA GPUs, or `mixed_bfloat16` on
  GPUs and TPUs with bfloat16 units (NVIDIA Ampere and later); `"auto"` picks `mixed_float16`
  when Keras sees a GPU. The last layer and the loss stay in float32 either way.

`cxrlib` uses only Keras 3 and `keras.ops`, so any backend with GPU support works: set
`KERAS_BACKEND=torch` (PyTorch with CUDA) or `KERAS_BACKEND=jax` (JAX with CUDA) before
starting Jupyter, or install TensorFlow with GPU support and keep the default backend.
""",
    ),
    (
        "md",
        r"""
## Summary
- The {glue:text}`model_name` trained here has {glue:text}`trained_params:,` parameters
  (the original: {glue:text}`original_params:,`); it was trained at
  {glue:text}`img_size` x {glue:text}`img_size` pixels and scored at each radiograph's
  original resolution.
- The radiographs were split by id before augmentation, and the split was checked for
  leakage; the test radiographs were never used for training or model selection.
- Test Dice {glue:text}`raw_all_dice_mean:.3f` (95 % interval {glue:text}`raw_all_dice_low:.3f`
  to {glue:text}`raw_all_dice_high:.3f`); keeping the two largest regions and filling holes
  mostly improves the boundary distance (HD95).
- The run is saved with its configuration, split, history and scores; re-running the chapter
  with the same parameters and data reuses it.

## What's next
The book runs this chapter for both architectures. The next chapter,
{doc}`04_unet_vs_resunet`, compares them side by side (size, speed, scores per site with
intervals) and asks how well a model trained at one hospital works at the other.

## Exercises
1. Train with more epochs, a larger `img_size` or `filters="recipe"`. How do the test Dice and
   the width of its interval change? Which costs more time?
2. Score the model at its input size instead of the original resolution
   (`result.summary_table("test", resolution="model")`). Which scores change most, and why?
3. Change the threshold: predict the test radiographs with `cxrlib.inference.predict_masks`
   and compute the Dice at thresholds 0.3, 0.5 and 0.7 with `cxrlib.metrics.per_image_scores`.

```{admonition} Solution to exercise 2
:class: dropdown
Dice and IoU change little: the lungs are large, and a coarser grid changes only a thin band
along the outline. HD95 is measured in pixels, so at the (smaller) model size it is smaller in
pixels although the outline is not better; only scores at the original resolution can be
compared across models trained at different sizes.
```

````{admonition} Solution to exercise 3
:class: dropdown
```python
from cxrlib import inference, metrics, preprocess

test = result.split[result.split["split"] == "test"].merge(table, on=["id", "site", "label"])
arrays = preprocess.load_arrays(test, size=config.img_size, progress=False)
probs = inference.predict_masks(result.load_model(), arrays.images)
for threshold in (0.3, 0.5, 0.7):
    scores = metrics.per_image_scores(probs > threshold, arrays.masks)
    print(threshold, scores["dice"].mean().round(3))
```
````
""",
    ),
]

#: Cells (by the start of their source) whose stderr the book hides: TensorFlow's start-up log.
HIDE_STDERR = (
    "import matplotlib",
    "original_params = ",
    "result = train.train_segmentation(",
    "images, truths, preds",
)


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[2]
    write_notebook(
        root / "notebooks" / "03_segmentation_training.ipynb", CELLS, hide_stderr=HIDE_STDERR
    )
