"""Source of notebooks/05_tb_exploration.ipynb (run: python tools/chapters/ch05.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nbtools import write_notebook  # noqa: E402

CELLS = [
    (
        "md",
        r"""
# Tuberculosis: what the data show

## Overview
The second half of the book asks a different question: not *where are the lungs?* but *does
this radiograph show tuberculosis (TB)?* Before building a classifier we look at what the data
say about the disease: how many normal and TB radiographs each site contributes, what TB looks
like next to a normal radiograph, which findings the radiologists wrote in their clinical
readings (and where in the lungs), and whether age and sex differ between the two labels.
We end with what all this implies for the classifier of the next chapter.

The chapter runs unchanged on the synthetic phantoms (the default) and on a real dataset
folder. Folders without clinical readings, such as the "Chest Xray Masks and Labels"
compilation, still run: the sections that need readings say so.

## Prerequisites
| concept | importance |
|---|---|
| {doc}`01_data_exploration` | necessary |
| regular expressions (Python's `re`) | helpful |
| what a chest radiograph shows | helpful |

- **Time to run**: well under a minute on phantoms; about a minute on the 640 real radiographs.
- **Hardware**: any CPU; no GPU needed.
""",
    ),
    (
        "code",
        r"""
import matplotlib.pyplot as plt
import pandas as pd
from myst_nb import glue

from cxrlib import datasets, explore, findings, plots_tb, preprocess, workspace
""",
    ),
    (
        "params",
        r"""
data_dir = None  # a dataset folder in any supported layout; None -> synthetic phantoms
n_phantoms = 120  # phantoms generated when data_dir is None
phantom_size = 256  # their side in pixels
image_size = 256  # side of the radiographs shown side by side
n_examples = 3  # radiographs shown per site and label
seed = 0
run_dir = "runs/05_tb_exploration"  # every file this notebook writes goes here
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
print("data:", "synthetic phantoms" if workspace.is_phantom_folder(data_path) else data_path.name)
print(f"{len(table)} radiographs")
""",
    ),
    (
        "md",
        r"""
## Samples per site and label

As in the original project, we first count the radiographs of each site and label (the label
is the last digit of the file name: 0 normal, 1 TB).
""",
    ),
    (
        "code",
        r"""
# NBVAL_CHECK_OUTPUT
counts = explore.label_counts(table)
print(counts.to_string())
""",
    ),
    (
        "code",
        r"""
glue("n_images", int(counts["total"].sum()), display=False)
glue("n_tb", int(counts["tb"].sum()), display=False)
glue("n_normal", int(counts["normal"].sum()), display=False)
glue("pct_tb", float(100 * counts["tb"].sum() / counts["total"].sum()), display=False)
glue("balance_note", findings.describe_label_balance(counts), display=False)
fig = plots_tb.counts_by_site(counts)
glue("fig_tb_counts", fig, display=False)
plt.close(fig)
""",
    ),
    (
        "md",
        r"""
```{glue:figure} fig_tb_counts
:name: fig-tb-counts

Radiographs per label at each site, with each label's share of the site.
```

Of the {glue:text}`n_images` radiographs, {glue:text}`n_tb` show TB and
{glue:text}`n_normal` are normal ({glue:text}`pct_tb:.0f` % TB overall;
{numref}`fig-tb-counts`). {glue:text}`balance_note` Wherever the share of TB differs between
sites, the site itself carries information about the label: a classifier that recognises
*which hospital* took a radiograph (from its exposure, its markers, its framing) can then look
better than it is. This is why every split of the book is stratified by site *and* label, and
why results are reported per site.
""",
    ),
    (
        "md",
        r"""
## Normal and TB radiographs side by side

Each row of {numref}`fig-normal-tb` shows normal radiographs (left) and TB radiographs
(right) from one site, with the clinical reading quoted when there is one. Look for what
distinguishes them: patchy or nodular opacities, most often in the upper zones; cavities
(dark rings inside an opacity); fibrotic streaks that pull structures upward; a pleural
effusion that blunts the angle between the diaphragm and the chest wall.
""",
    ),
    (
        "code",
        r"""
chosen = findings.pick_by_site_and_label(table, n_examples, seed=seed)
shown = table.iloc[chosen]
arrays = preprocess.load_arrays(
    shown, size=image_size, cache_dir=run_path / "cache", progress=False
)
fig = plots_tb.normal_vs_tb(arrays.images, shown)
glue("fig_normal_tb", fig, display=False)
plt.close(fig)
shown[["id", "site", "label", "reading"]]
""",
    ),
    (
        "md",
        r"""
```{glue:figure} fig_normal_tb
:name: fig-normal-tb

Normal (left, blue titles) and TB (right, orange titles) radiographs, one row per site. The
titles quote the clinical reading when the folder has one.
```

Many TB radiographs are hard to tell from normal ones at this size: the findings are often
small, faint and confined to one part of one lung. The readings tell us where to look.
""",
    ),
    (
        "md",
        r"""
## What the readings say

Each radiograph of the official Montgomery and Shenzhen sets comes with a short clinical
reading {cite}`jaeger2014screening`. Montgomery readings are free text
(`"Bilateral upper lobe cavitary lesions"`); Shenzhen readings are terse
(`"PTB in the left upper field"`, `"STB,ATB,tuberculosis pleuritis"`, where PTB means
pulmonary TB). `cxrlib.datasets` stores the finding text in the `reading` column.
""",
    ),
    (
        "code",
        r"""
glue("readings_note", findings.describe_readings(table), display=False)
glue("has_readings", findings.has_readings(table), display=False)
table.groupby(["site", "label"]).head(2)[["id", "site", "label", "sex", "age", "reading"]]
""",
    ),
    (
        "md",
        r"""
{glue:text}`readings_note`

Radiologists use many words for the same finding: *cavity*, *cavities*, *cavitary*,
*cavitation*, *fibrocavitary*. `cxrlib.findings` groups them into **keyword families**, each
a case-insensitive regular expression written out word form by word form (so that
*concavity* is no cavity). A mention in the scope of a simple negation (*no effusion*,
*without cavitation*) does not count. The families and their patterns:
""",
    ),
    (
        "code",
        r"""
pd.Series(findings.KEYWORD_FAMILIES, name="regular expression").rename_axis("family").to_frame()
""",
    ),
    (
        "md",
        r"""
For each family we count the readings that mention it, among the TB readings and among the
normal ones (a reading that names a family twice counts once).
""",
    ),
    (
        "code",
        r"""
# NBVAL_CHECK_OUTPUT
print(findings.readings_per_label(table["reading"], table["label"]))
""",
    ),
    (
        "code",
        r"""
keywords = findings.keyword_table(table["reading"], table["label"])
glue("keywords_note", findings.describe_keywords(keywords), display=False)
fig = plots_tb.keyword_bars(keywords)
glue("fig_keywords", fig, display=False)
plt.close(fig)
keywords.round(1)
""",
    ),
    (
        "md",
        r"""
```{glue:figure} fig_keywords
:name: fig-keywords

Share of TB readings (orange) and of normal readings (blue) that mention each keyword family,
most frequent among TB readings on top.
```

{glue:text}`keywords_note` ({numref}`fig-keywords`.) A normal reading may still name a
finding that does not mean active TB, such as a calcified granuloma: the labels are clinical
judgements, not a list of visible lesions.
""",
    ),
    (
        "md",
        r"""
## Age and sex by label

The readings also give each patient's age and sex. If TB patients are older, or more often
men, than the normal controls, a classifier could learn age or sex from the radiograph
(bone density, breast shadows, heart size) and seem to detect TB.
""",
    ),
    (
        "code",
        r"""
glue("demographics_note", findings.describe_demographics(table), display=False)
fig = plots_tb.age_by_label(table)
glue("fig_age_label", fig, display=False)
plt.close(fig)
fig = plots_tb.sex_by_label(table)
glue("fig_sex_label", fig, display=False)
plt.close(fig)
findings.age_summary(table).round(1)
""",
    ),
    (
        "md",
        r"""
```{glue:figure} fig_age_label
:name: fig-age-label

Age by label at each site (violins with the median and quartiles as dashed lines; dots:
radiographs).
```

```{glue:figure} fig_sex_label
:name: fig-sex-label

Share of women and men among the normal and TB radiographs of each site.
```

{glue:text}`demographics_note` ({numref}`fig-age-label` and {numref}`fig-sex-label`.)
Differences in age or sex between the labels do not make a classifier wrong, but they mean
that its accuracy alone cannot show that it looks at the lungs. Checking its errors by age and
sex, and looking at where in the image it looks, are part of evaluating it.
""",
    ),
    (
        "md",
        r"""
## What this implies for the classifier

- **Where to look.** Post-primary (adult) TB favours the upper zones of the lungs; compare
  the zone families of {numref}`fig-keywords` when the folder has readings. A classifier
  should therefore keep *location*: segment the lungs first (chapters 3 and 4), as the
  hand-crafted screening system of Jaeger et al. did before computing its texture and shape
  features {cite}`jaeger2014screening`, then split each lung into upper, middle and lower
  zones and describe each zone separately. Averaging over the whole image dilutes a finding
  that covers a tenth of one lung.
- **Left against right.** Many readings name one side only; the difference between the two
  lungs is a cheap and telling feature.
- **Small findings need pixels.** Cavities, nodules and miliary patterns are small; a
  classifier working at 64 or 128 pixels will miss some of them.
- **Not everything is inside the mask.** An effusion fills the lowest part of the pleural
  space and hides the lung edge, so a lung mask can cut it away. Features should include a
  margin around the lungs, or the whole image as well.
- **Confounders.** The TB share can differ between sites, and age and sex between labels:
  stratify splits by site and label, report results per site, and compare against what age,
  sex or site alone would predict.
- **Targets.** The WHO asks a screening test for a sensitivity of at least 0.90 at a
  specificity of at least 0.70 {cite}`who2014tpp`; chapter 6 reports both, with confidence
  intervals.

## Summary
- The sites contribute different numbers of radiographs, and possibly different shares of TB;
  the site is a potential shortcut for a classifier.
- TB findings are often small and local. {glue:text}`keywords_note`
- `cxrlib.findings.keyword_table` counts keyword families in readings of both formats, with
  robust word forms and simple negation; it returns an empty table when a folder has no
  readings.
- Age and sex can differ between labels; they must be checked as confounders.

## What's next
The next chapter, *TB classification*, turns these observations into a classifier: lung-zone
features from the segmented radiographs and pretrained convolutional networks, compared per
site against the WHO targets.

## Exercises
1. Do the two sites write about TB differently? Compute the keyword table for each site
   separately and compare the most frequent families.
2. Add a keyword family for hilar lymph-node enlargement ("hilar adenopathy",
   "lymphadenopathy") and count it.
3. How well does **age alone** separate TB from normal radiographs? Compute the area under
   the ROC curve of age as a score, per site.

```{admonition} Solution to exercise 1
:class: dropdown
`site = table[table["site"] == "shenzhen"]` then
`findings.keyword_table(site["reading"], site["label"])`, and the same for `"montgomery"`.
Montgomery readings describe lobes and lesion types; Shenzhen readings mostly name the
disease (PTB) and the field.
```

```{admonition} Solution to exercise 2
:class: dropdown
`families = {**findings.KEYWORD_FAMILIES, "hilar adenopathy":
r"\bhil(?:ar|um)\b|\b(?:lymph)?adenopath\w*"}` then
`findings.keyword_table(table["reading"], table["label"], families=families)`.
```

```{admonition} Solution to exercise 3
:class: dropdown
`from sklearn.metrics import roc_auc_score`; for one site,
`known = table[(table["site"] == "shenzhen") & table["age"].notna()]` and
`roc_auc_score(known["label"].astype(int), known["age"])`. An AUC near 0.5 means age alone
says little; well above 0.5 means age is a confounder to watch.
```
""",
    ),
]

if __name__ == "__main__":
    root = Path(__file__).resolve().parents[2]
    write_notebook(root / "notebooks" / "05_tb_exploration.ipynb", CELLS)
