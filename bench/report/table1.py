"""Table 1, Figure 3 and the significance of the paper's claims, from the run records.

The report reads the parquet tree written by ``bench run`` (see :mod:`bench.records`),
takes each run's numbers at its final epoch, and writes

* ``out`` (markdown): per dataset and recipe (the config's ``recipe``: ``described``, or
  ``author`` for the paper's own code), Table 1 beside the paper's numbers, the runs left out
  of the means, Welch tests of CFactorVAE against every other model with Holm correction,
  and one verdict line per claim of the paper; an ``author`` section also says how that
  recipe differs from the described one, and every section compares its ablations (other
  configurations of a model, often from a second records folder) with the table's runs. Runs of
  two recipes are never averaged or tested together;
* ``out`` with a ``.csv`` suffix: the same table with numeric mean, SD and n columns;
* next to ``out``: ``figure3.png/.svg`` (test reconstruction error per epoch),
  ``figure-loss.png/.svg`` (train and test loss per epoch) and, for records with per-dimension
  KLs, ``figure-kl-dims.png/.svg``; with several datasets each name gets the dataset as a
  suffix, e.g. ``figure3-mnist.png``, and with several recipes the recipe, e.g. ``figure3-author.png``;
* for a dataset with known factors, a section with the disentanglement scores of the metric
  records (mean ± SD per model, Welch tests of CFactorVAE against each model, Holm-corrected);
* in ``figures/`` next to ``out``, the pictures of :mod:`bench.eval.traverse` for seed 0 of each
  model whose final weights are in the records.

Only runs whose status is ``finished`` enter means, tests and curves. The report never
trains; it imports torch only to draw the pictures. This module writes the report; its numbers
come from :mod:`bench.report.finals`, its tests from :mod:`bench.report.significance` and
:mod:`bench.report.scores`, its figures from :mod:`bench.report.figures`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.paper import (
    AUTHOR_CODE,
    AUTHOR_TEST_PRINT,
    LABELS,
    MODELS,
    PAPER_DATASET,
    PAPER_TABLE1,
    PAPER_TEST_SCALE,
    model_order,
)
from bench.records import read_metrics, read_trees, weights_path
from bench.report.cells import cell, num
from bench.report.figures import FIGURE_TYPES, figure3, figure_kl_dims, figure_loss
from bench.report.finals import (
    DEFAULT_RECIPE,
    HEADERS,
    RUN_KEYS,
    TABLE1_COLUMNS,
    final_epoch_table,
    machine,
    outside_table,
    paper_ratios,
    section_rows,
    sections,
    summarise,
)
from bench.report.scores import finished_scores, scores_markdown
from bench.report.significance import ablations, ablations_markdown, compare, significance_markdown, variants
from bench.writable import check_files, check_folders

# What loss - recon holds per recipe: each objective's terms beside the reconstruction.
ADDED_TERMS = {
    "described": "|KL − C| for CVAE, KL + γ TC for FactorVAE, |KL − C| + γ TC for CFactorVAE",
    "author": "4 · mean_i |KL_i − C| for CVAE, KL + γ · mean_i D(z_i) for FactorVAE, mean_i |KL_i − C| + "
              "γ · mean_i D(z_i) for CFactorVAE",
}

# How the author recipe trains against the described one, one row each: (what, author, described).
AUTHOR_DIFFERENCES = (
    ("Batches", "128 images, the last partial batch of 96 kept: 469 updates an epoch on MNIST's 60,000 images, "
     "and the epoch mean weights that batch by its size", "64 images, the partial batch dropped"),
    ("Adam", "lr 1e-3 with the default betas, for the VAE and for D", "lr 1e-4; D's betas (0.5, 0.9)"),
    ("Networks", "the author's: conv 1→32→64→64, conv-transpose 64→64→32→1, a sigmoid output and binary "
     "cross-entropy on its probabilities as torch 0.4 computed it (1e-12 inside each log; today's torch clamps "
     "the log at −100)", "Table 2's conv 32→32→64 and its mirror, cross-entropy of the logits"),
    ("Initialisation", "torch 0.4's: U(±1/√n), n = in_channels · k · k for conv and conv-transpose alike",
     "current torch's (a conv-transpose's fan from its out_channels)"),
    ("Capacity term", "per sample, β · mean_i \\|KL_i − C\\|: β = 4 for CVAE, 1 for CFactorVAE",
     "\\|mean KL − C\\|, weight 1"),
    ("C", "a staircase, epoch / 2: 0, 0.5, …, 24.5, fixed within an epoch and at test time",
     "a linear ramp over the updates to 25"),
    ("TC weight γ", "3.5 (argparse's `type=int` never parses the float default)", "6.4"),
    ("Discriminator", "Linear 20→1000→1000→1000→1 with `nn.LeakyReLU(True)`, i.e. negative slope 1, the "
     "identity, and a ReLU on its single output: an affine map clipped at 0",
     "6 × 1000 with LeakyReLU(0.2), 2 logits"),
    ("TC term", "γ · mean_i D(z_i)", "γ · mean(logit_0 − logit_1)"),
    ("D's update", "BCE with logits of [D(z), D(perm z′)] against [1, 0], z′ a second encoding of the same images "
     "after the VAE's step", "the permuted codes of an independent batch"),
    ("Gradient", "losses summed over the batch (reduction sum)", "means over the batch"),
)


@dataclass(frozen=True)
class ReportSummary:
    """What :func:`write_report` wrote.

    Attributes
    ----------
    markdown : Path
        The report with Table 1, significance and verdicts.
    csv : Path
        Table 1 with numeric columns.
    figures : tuple of Path
        Every PNG and SVG written.
    datasets : tuple of str
        The datasets reported, in report order.
    sections : tuple of (str, str)
        The (dataset, recipe) pairs reported, one section each, in report order.
    """

    markdown: Path
    csv: Path
    figures: tuple[Path, ...]
    datasets: tuple[str, ...]
    sections: tuple[tuple[str, str], ...]

    @property
    def paths(self) -> tuple[Path, ...]:
        """All written files."""
        return (self.markdown, self.csv, *self.figures)


def _subset(value) -> str:
    return "full split" if int(value) == 0 else f"first {int(value)} images"


def _per_model(done: pd.DataFrame, describe) -> str:
    """One description if every model agrees, else the value per model."""
    values = {}
    for model in model_order(done["model"].unique()):
        runs = done[done["model"] == model]
        if len(runs):
            values[model] = ", ".join(sorted({describe(r) for r in runs.to_dict("records")}))
    distinct = set(values.values())
    if len(distinct) <= 1:
        return next(iter(distinct), "—")
    return "differs between models: " + "; ".join(f"{m} {v}" for m, v in values.items())


def _config_value(run: dict, key: str):
    return (run.get("config") or {}).get(key)


def _seeds_line(seeds: dict[str, str]) -> str:
    """The finished seeds, once if every model has the same, else per model."""
    if not seeds:
        return "none finished"
    if len(set(seeds.values())) == 1:
        return next(iter(seeds.values()))
    return "differs between models: " + "; ".join(f"{model} {listed}" for model, listed in seeds.items())


def _provenance(mine: pd.DataFrame) -> list[str]:
    """Where the table's numbers of one section come from, and which runs it leaves out."""
    table = mine[mine["in_table"]]
    done = table[table["status"] == "finished"]
    seeds = {model: ", ".join(str(s) for s in sorted(int(s) for s in done.loc[done["model"] == model, "seed"].unique()))
             for model in model_order(done["model"].unique()) if (done["model"] == model).any()}
    lines = [
        f"- Profile: {_per_model(done, lambda r: str(r.get('profile')))}",
        f"- Epochs: {_per_model(done, lambda r: str(_config_value(r, 'epochs')))}",
        f"- Train subset: {_per_model(done, lambda r: _subset(_config_value(r, 'train_subset')))}; "
        f"test subset: {_per_model(done, lambda r: _subset(_config_value(r, 'test_subset')))} (0 in the config = full split)",
        f"- Seeds finished: {_seeds_line(seeds)}",
        f"- Trained on: {_per_model(done, machine)}",
        f"- Runs: {len(done)} finished runs averaged; excluded from the means: "
        f"{int((table['status'] == 'diverged').sum())} diverged, "
        f"{int((~table['status'].isin(['finished', 'diverged'])).sum())} unfinished, "
        f"{int((~mine['in_table']).sum())} of other configurations",
    ]
    for model in model_order(done["model"].unique()):
        finals_epochs = sorted(done.loc[done["model"] == model, "test_recon_epoch"].dropna().astype(int).unique())
        if len(finals_epochs) > 1:
            lines.append(f"- Note: the final epochs of the {model} runs differ ({', '.join(map(str, finals_epochs))})")
    return lines


def _other_configs(mine: pd.DataFrame) -> list[str]:
    """A line per configuration of one section left out of its table, naming what differs from the table's."""
    lines = []
    for model, _, group, reference, other, changed in outside_table(mine):
        what = ", ".join(f"{k}={other.get(k)} (table: {reference.get(k)})" for k in changed)
        lines.append(f"- {model}: {len(group)} runs ({int((group['status'] == 'finished').sum())} finished) "
                     f"with {what or 'a different configuration'}")
    return lines


def _table1_markdown(summary: pd.DataFrame) -> list[str]:
    headers = [HEADERS[key] for key, *_ in TABLE1_COLUMNS]
    lines = [
        "| Model | " + " | ".join(headers) + " | Diverged (excluded) | Trained on |",
        "|---" * (3 + len(headers)) + "|",
    ]
    for row in summary.to_dict("records"):
        ours = [cell(row[f"{k}_mean"], row[f"{k}_sd"], row[f"{k}_n"]) for k, *_ in TABLE1_COLUMNS]
        lines.append(f"| {row['label']} | " + " | ".join(ours) + f" | {row['n_diverged']} | {row['trained_on']} |")
    return lines


def _per_seed_table(first: str, groups: list[tuple[str, pd.DataFrame]]) -> list[str]:
    """A row per (label, finished runs) of each seed's final test recon error and their median."""
    seeds = sorted({int(s) for _, runs in groups for s in runs["seed"]})
    lines = [f"| {first} | " + " | ".join(f"Seed {s}" for s in seeds) + " | Median |", "|---" * (2 + len(seeds)) + "|"]
    for label, runs in groups:
        values = runs.set_index("seed")["test_recon"]
        cells = [num(values[s]) if s in values.index else "—" for s in seeds]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {num(values.median())} |")
    return lines


def _per_seed_markdown(section: pd.DataFrame) -> list[str]:
    """Each finished seed's final test recon error: a mean ± SD over five seeds hides one seed far from the rest."""
    done = section[section["in_table"] & (section["status"] == "finished")]
    if done.empty:
        return []
    groups = [(LABELS.get(m, m), done[done["model"] == m]) for m in model_order(done["model"].unique())
              if (done["model"] == m).any()]
    return ["", "Per seed: the final test recon error of each finished run averaged above, and the median over seeds.",
            "", *_per_seed_table("Model", groups)]


def _last_tenth_markdown(curves: pd.DataFrame) -> list[str]:
    """How far each model's test recon error still moved over the last tenth of its epochs.

    A ranking read at the final epoch holds only where the curves have flattened: a model still
    falling when training stopped may pass another given more epochs (a capacity schedule that ends
    with the training, for one).
    """
    changes: dict[str, list[float]] = {}
    spans = set()
    for _, run in curves[curves["split"] == "test"].groupby("run_id", sort=False):
        recon = run.set_index("epoch")["recon"]
        last = int(recon.index.max())
        start = last - max(1, last // 10)
        if start in recon.index:
            changes.setdefault(run["model"].iloc[0], []).append(float(recon[last] - recon[start]))
            spans.add((start, last))
    if not changes:
        return []
    if len(spans) == 1:
        ((start, last),) = spans
        between = f"at epoch {last} minus at epoch {start}"
    else:
        between = "at each run's final epoch minus a tenth of its epochs before"
    cells = []
    for model in (m for m in model_order(changes) if m in changes):
        values = np.array(changes[model])
        spread = values.std(ddof=1) if len(values) > 1 else np.nan
        cells.append(f"{LABELS.get(model, model)} {cell(values.mean(), spread, len(values), signed=True)}")
    return ["", f"Over the last epochs: test recon error {between} (the last tenth of the epochs, at least one), "
                "mean ± SD over the finished seeds; a negative change means the model was still improving when "
                f"training stopped, and more epochs may change the ranking: {'; '.join(cells)}."]


def _ablation_seeds_markdown(section: pd.DataFrame) -> list[str]:
    """Each ablation's finished seeds under its model's table seeds (variants come grouped by model)."""
    done = section[section["status"] == "finished"]
    groups, shown = [], set()
    for model, key, label in variants(section):
        if model not in shown:
            shown.add(model)
            groups.append((model, done[(done["model"] == model) & done["in_table"]]))
        groups.append((label, done[done["config_key"] == key]))
    if not groups:
        return []
    return ["", "Per seed, test recon error: each variant's finished runs under its model's table runs (one seed, "
                "one VAE initialisation and one batch order, unless the variant changes the VAE or the data).", "",
            *_per_seed_table("Configuration", groups)]


def _against_paper_markdown(summary: pd.DataFrame, recipe: str) -> list[str]:
    """The paper's Table 1 as printed and on our scale, ours minus it, and the loss - recon consistency lines.

    ``summary`` holds the rows of one section, ``recipe`` its recipe, which decides what loss - recon holds.
    """
    ratios = paper_ratios()
    listed = ", ".join(f"{LABELS[m].split(' (')[0]} {q} {r:.3f}" for (m, q), r in ratios.items())
    lines = [
        "The paper's test columns are on another scale than its train columns: in all six (train, test) pairs "
        f"its train number is {min(ratios.values()):.2f} to {max(ratios.values()):.2f} times its test number "
        f"({listed}). MNIST has 60,000 training and 10,000 test images, and the paper's code prints test-set sums "
        f"divided by the training-set size: `main.py` of {AUTHOR_CODE}, in `process_cvae` and in `process_fvae`, "
        f"prints its test line as `{AUTHOR_TEST_PRINT}`. That confirms the reading the ratios suggest, so we "
        f"multiply the paper's test columns by {PAPER_TEST_SCALE:g} to put them on our per-image scale; the paper "
        "itself states no normalisation. Its train columns are used as printed.",
        "",
        "| Model | Metric | Ours | Paper as printed | Paper on our scale | Ours − paper |",
        "|---|---|---|---|---|---|",
    ]
    paper_rows = [r for r in summary.to_dict("records") if r["model"] in PAPER_TABLE1]
    for row in paper_rows:
        for key, header in TABLE1_COLUMNS:
            scaled = f"{row[f'paper_scaled_{key}']:.2f}" + (f" (× {PAPER_TEST_SCALE:g})" if key.startswith("test_") else "")
            diff = "—" if pd.isna(row[f"diff_{key}"]) else f"{row[f'diff_{key}']:+.2f}"
            lines.append(f"| {row['label']} | {header} | {cell(row[f'{key}_mean'], row[f'{key}_sd'], row[f'{key}_n'])} "
                         f"| {row[f'paper_{key}']:.2f} | {scaled} | {diff} |")
    added = f" ({ADDED_TERMS[recipe]})" if recipe in ADDED_TERMS else ""
    lines += [
        "",
        f"Consistency: loss − recon is what each objective adds to the reconstruction term{added}, comparable "
        "between the paper and us without any reading of its units. Ours is the mean ± SD over seeds of each "
        "run's own difference.",
        "",
        "| Model | Paper: train loss − recon | Ours: train | Paper: test loss − recon (× 6) | Ours: test |",
        "|---|---|---|---|---|",
    ]
    for row in paper_rows:
        ours = {split: cell(row[f"{split}_gap_mean"], row[f"{split}_gap_sd"], row["n_finished"]) for split in ("train", "test")}
        lines.append(f"| {row['label']} | {row['paper_train_gap']:.2f} | {ours['train']} | "
                     f"{row['paper_test_gap']:.2f} | {ours['test']} |")
    return lines


def _author_recipe_markdown(curves: pd.DataFrame, section: pd.DataFrame) -> list[str]:
    """How the author recipe differs from the described one, and whether its discriminator went dead.

    ``curves`` holds the per-epoch rows of the section's finished runs (:func:`_curves`), ``section``
    their records (the machines that trained them). The author's D is an affine map clipped at 0,
    so the VAE can push it to 0 on every real z; its ``tc`` column (the mean of D(z) over real codes) is then exactly 0 and the TC term has no gradient.
    """
    lines = [
        f"The author recipe trains as the paper's code does ({AUTHOR_CODE}, `main.py`); the described recipe as the "
        "paper's text, its Table 2 and the works it cites describe. Each difference moves the numbers.",
        "",
        "| | Author recipe | Described recipe |",
        "|---|---|---|",
    ]
    lines += [f"| {what} | {author} | {described} |" for what, author, described in AUTHOR_DIFFERENCES]
    lines += [
        "",
        "The author's D can be driven to output 0 on every real z (its output ReLU clips an affine map); from then "
        "on the TC term γ · mean_i D(z_i) is 0 with zero gradient, and the FactorVAE and CFactorVAE runs train "
        "without it. D(z) on real z at the final epoch: `tc` is the mean of D(z) over the split's real codes, "
        "`disc_acc` D's accuracy with an output above 0 read as real (0.5 when D outputs 0 everywhere); mean ± SD "
        "over seeds.",
        "",
    ]
    with_d = curves[curves["model"].isin(["factorvae", "cfactorvae"])]
    if with_d.empty:
        lines.append("No finished FactorVAE or CFactorVAE run of this recipe yet: nothing to say of its D.")
    else:
        last = with_d[with_d["epoch"] == with_d.groupby(["run_id", "split"])["epoch"].transform("max")]
        lines += ["| Model | tc, train | tc, test | disc_acc, train | disc_acc, test "
                  "| Runs with tc = 0 on both splits |", "|---|---|---|---|---|---|"]
        dead_runs = 0
        for model in ("factorvae", "cfactorvae"):
            mine = last[last["model"] == model]
            if mine.empty:
                continue
            cells = []
            for column in ("tc", "disc_acc"):
                for split in ("train", "test"):
                    values = mine.loc[mine["split"] == split, column].to_numpy(dtype=float)
                    values = values[np.isfinite(values)]
                    cells.append(cell(values.mean() if values.size else np.nan,
                                       values.std(ddof=1) if values.size > 1 else np.nan, values.size, digits=3))
            # Dead on both splits: D said 0 to every real z of the final epoch's updates and of the test set.
            dead = mine.groupby("run_id")["tc"].agg(lambda tc: len(tc) == 2 and bool((tc == 0).all()))
            dead_runs += int(dead.sum())
            lines.append(f"| {LABELS[model]} | " + " | ".join(cells) + f" | {int(dead.sum())} of {len(dead)} |")
        consequence = ": in those the TC term no longer acts." if dead_runs else "."
        lines += ["", f"D outputs 0 on every real z of both splits at the final epoch in {dead_runs} of "
                      f"{with_d['run_id'].nunique()} runs{consequence}"]
    twins = _twin_markdown(curves, section)
    if twins:
        lines += ["", *twins]
    lines += [
        "",
        "CVAE and CFactorVAE differ here in their capacity weight as well as in the TC term: 4 · mean_i |KL_i − C| "
        "for CVAE, 1 · mean_i |KL_i − C| for CFactorVAE. A CFactorVAE that beats CVAE in this section may owe it to "
        "the weight alone. The ablation that tells them apart trains CFactorVAE without its TC term, "
        "`bench run --models cfactorvae --recipe author --set gamma=0`, into a records folder of its own (`--out`); "
        "`bench report --runs <this table's folder> --runs <that folder>` reports it under Ablations: what it keeps "
        "of CFactorVAE's lead is the weight's.",
    ]
    return lines


# Test recon errors closer than this (nats per image) count as the same: float32 rounding of equal weights.
TWIN_TOLERANCE = 1e-6


def _same_machine(pair: pd.DataFrame) -> bool | None:
    """Whether two runs trained on one kind of machine: True, False, or None where a CPU run's record lacks its CPU."""
    runs = pair.to_dict("records")
    if any(run.get("device") == "cpu" and not isinstance(run.get("cpu"), str) for run in runs):
        return None
    return len({machine(run) for run in runs}) == 1


def _twin_markdown(curves: pd.DataFrame, section: pd.DataFrame) -> list[str]:
    """Whether the author's CFactorVAE and FactorVAE of one seed trained as one, and until which epoch.

    Per sample, |KL_i − C| has the gradient of KL_i wherever KL_i > C; with the same initialisation
    and streams (one seed), the two objectives then take the same steps and differ in loss by C
    alone. Their test reconstructions part at the first epoch where C reaches some image's KL, on
    one machine; runs of two CPUs part from the first epoch by rounding alone.
    """
    test = curves[(curves["split"] == "test") & curves["model"].isin(["factorvae", "cfactorvae"])]
    pivot = test.pivot_table(index=["seed", "epoch"], columns="model", values="recon", aggfunc="first")
    if not {"factorvae", "cfactorvae"} <= set(pivot.columns):
        return []
    pivot = pivot.dropna()
    if pivot.empty:
        return []
    runs = section[section["run_id"].isin(test["run_id"].unique())]
    parts, unlike = [], 0
    for seed, group in pivot.groupby(level="seed"):
        diff = (group["cfactorvae"] - group["factorvae"]).droplevel("seed")
        apart = diff[diff.abs() > TWIN_TOLERANCE]
        last = int(diff.index.max())
        first = int(apart.index.min()) if not apart.empty else None
        text = (f"the same through epoch {last}" if first is None else
                f"apart from epoch {first} ({diff.loc[last]:+.2f} nats at epoch {last})" if first == int(diff.index.min())
                else f"the same through epoch {first - 1}, then apart ({diff.loc[last]:+.2f} nats at epoch {last})")
        same = _same_machine(runs[runs["seed"] == seed]) if first is not None else True
        if same is not True:
            unlike += 1
            text += ", trained on different machines" if same is False else ", the CPUs not recorded"
        parts.append(f"seed {seed}: {text}")
    lines = [
        "CFactorVAE against FactorVAE of the same seed: per sample, |KL_i − C| has the gradient of KL_i wherever "
        "KL_i > C, so from the same initialisation and streams the two take the same steps, their losses differ by C "
        f"alone, until C reaches some image's KL. Test recon error, CFactorVAE's minus FactorVAE's (the same: within "
        f"{TWIN_TOLERANCE:g} nats): " + "; ".join(parts) + ".",
    ]
    if unlike:
        lines[0] += (" Only runs of one machine take bitwise the same steps: on two CPUs (or where the records do not "
                     "say which) the pair parts from its first epoch by floating-point rounding, whatever C does.")
    return lines


def _where(run: dict) -> str:
    return "yes" if run["in_table"] else "no (other configuration)"


def _excluded_runs(section: pd.DataFrame) -> list[str]:
    mine = section.copy()
    mine["order"] = mine["model"].map({m: i for i, m in enumerate(model_order(mine["model"].unique()))})
    mine = mine.sort_values(["order", "seed"])
    lines = []
    unfinished = mine[~mine["status"].isin(["finished", "diverged"])]
    if len(unfinished):
        lines += ["", "#### Unfinished runs (listed, not averaged)", "",
                  "| Model | Seed | Status | Epochs done | Table's configuration |", "|---|---|---|---|---|"]
        lines += [
            f"| {r['model']} | {r['seed']} | {r['status']} | {r['epochs_done']}/{r['epochs']} | {_where(r)} |"
            for r in unfinished.to_dict("records")
        ]
    diverged = mine[mine["status"] == "diverged"]
    if len(diverged):
        headers = [HEADERS[key] for key, *_ in TABLE1_COLUMNS]
        lines += ["", "#### Diverged runs (excluded from the means; last finite value and its epoch)", "",
                  "| Model | Seed | Epochs done | " + " | ".join(headers) + " | Table's configuration |",
                  "|---" * (4 + len(headers)) + "|"]
        for r in diverged.to_dict("records"):
            values = [
                "none finite" if pd.isna(r[k]) else f"{r[k]:.2f} (epoch {r[f'{k}_epoch']})" for k, *_ in TABLE1_COLUMNS
            ]
            lines.append(f"| {r['model']} | {r['seed']} | {r['epochs_done']}/{r['epochs']} | " + " | ".join(values) + f" | {_where(r)} |")
    others = _other_configs(section)
    if others:
        lines += ["", "#### Other configurations (not in the table)", "",
                  "The table holds one configuration per model: the first records folder's, and of its configurations "
                  "the one with the most finished seeds. Those that train as long on the same data are compared with "
                  "it under Ablations.", "", *others]
    return lines


def _curves(rows: pd.DataFrame, section: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch rows of one section's finished runs in the table of the paper's five objectives, with a display label.

    Variants such as ``cvae-burgess`` stay out of the figures: their losses, hundreds of nats
    above the rest, would flatten every other curve.
    """
    keep = section[section["in_table"] & (section["status"] == "finished") & section["model"].isin(MODELS)]
    curves = rows.merge(keep[RUN_KEYS], on=RUN_KEYS)
    return curves.assign(label=curves["model"].map(lambda m: LABELS.get(m, m)))


UNITS = (
    "Units: our numbers are nats per image (each term summed over the pixels or latent dimensions of an image, "
    "then averaged over the images). The paper's train columns appear to be on the same scale; its test columns "
    "are about 6 times smaller, which the section against the paper's Table 1 explains and corrects."
)


def _has_pictures(runs: pd.DataFrame) -> bool:
    """Whether :func:`_pictures` draws anything for these runs: a finished seed 0 with its final weights."""
    seed0 = runs[(runs["seed"] == 0) & (runs["status"] == "finished")]
    return bool(seed0["path"].map(lambda p: weights_path(Path(p)).is_file()).any())


def _pictures(roots: tuple[Path, ...], runs: pd.DataFrame, folder: Path, data_root,
              datasets: list[str]) -> tuple[list[str], list[Path]]:
    """Traversals, reconstructions and samples of seed 0 of each model whose final weights are there, in
    ``folder``/figures; each model's from the first of ``roots`` that holds it, as its table row.

    Drawing needs torch and the test images, so it happens only when such weights exist; without them, or
    when a dataset cannot be loaded, a line says why instead of stopping the report.
    """
    if not _has_pictures(runs):
        return ["", "## Pictures (seed 0)", "",
                "Not drawn: no finished seed-0 run here has its final weights (`seed-0/_weights/<run id>.pt`; "
                "committed records carry them only where a report draws from them: docs/records.md)."], []
    from bench.data.datasets import resolve_root
    from bench.eval.traverse import figures_for_report

    try:
        paths = figures_for_report(roots, folder / "figures", resolve_root(data_root), datasets)
    except BenchError as exc:
        return ["", "## Pictures (seed 0)", "", f"Not drawn: {exc}"], []
    lines = ["", "## Pictures (seed 0)", "",
             "Latent traversals (each dimension from -3 to 3 around test image 0's posterior mean, rows by KL, "
             "inactive dimensions in grey), reconstructions under their originals, and samples from the prior."]
    lines += [f"![{p.stem}](figures/{p.name})" for p in paths]
    return lines, paths


def _folders(roots: tuple[Path, ...]) -> str:
    """The records folders of a report, as its first line names them."""
    named = [f"`{root}`" for root in roots]
    if len(named) == 1:
        return named[0]
    return (", ".join(named[:-1]) + f" and {named[-1]} (each model's table configuration from the first folder "
            "that holds it)")


def write_report(runs_root, out, dataset: str | None = None, data_root=None) -> ReportSummary:
    """Write Table 1 (markdown and CSV), Figure 3 and the loss figure from the run records.

    Every path the report writes is checked before anything is written; the files are drawn
    into a hidden folder beside ``out`` and renamed into place once all are whole, figures
    first and the markdown last, so a failure leaves the previous report as it was.

    Parameters
    ----------
    runs_root : path-like, or a sequence of them
        The records folder, or several: each model's table configuration comes from the first
        folder that holds the model, its other configurations are reported as ablations, and its
        pictures come from that folder too.
    out : path-like
        The markdown file to write (e.g. ``results/table1.md``). The CSV goes to the same
        path with a ``.csv`` suffix, the figures into the same folder.
    dataset : str, optional
        Report only this dataset; by default every dataset in the records gets a section, one
        per recipe found for it.
    data_root : path-like, optional
        Where the test images for the pictures are (see :func:`bench.data.datasets.resolve_root`); the
        pictures are drawn only for runs whose final weights are in the records.

    Returns
    -------
    ReportSummary
        The paths written.

    Raises
    ------
    bench.records.RecordError
        If there are no run files under ``runs_root`` or one of them is not a valid run.
    bench.errors.BenchError
        If ``dataset`` is not among the records, ``out`` is a folder, or a path of the report
        cannot be written.
    """
    roots = (Path(runs_root),) if isinstance(runs_root, (str, os.PathLike)) else tuple(map(Path, runs_root))
    out = Path(out)
    if out.suffix.lower() == ".csv":
        raise BenchError(f"--out {out}: give the markdown path (e.g. results/table1.md); the CSV is written beside it")
    if out.is_dir():
        raise BenchError(f"--out {out} is a folder; give the markdown file's path, e.g. {out / 'table1.md'}")
    rows, runs = read_trees(roots)
    scores = pd.concat([read_metrics(root) for root in roots], ignore_index=True)
    finals = final_epoch_table(rows, runs)
    available = sorted(finals["dataset"].dropna().unique())
    if dataset is not None and dataset not in available:
        raise BenchError(
            f"unknown dataset {dataset!r}: the runs under {', '.join(map(str, roots))} hold {', '.join(available)}; "
            "pass one of those or leave --dataset out"
        )
    datasets = [dataset] if dataset is not None else available
    finals = finals[finals["dataset"].isin(datasets)]
    summary = summarise(finals)
    reported = sections(finals)
    recipes = sorted({recipe for _, recipe in reported})
    # A tree of described runs only reads as before recipes existed: no recipe in headings or file names.
    named = recipes != [DEFAULT_RECIPE]
    csv = out.with_suffix(".csv")
    folder = out.parent
    # Everything the report will write is named and checked before the first byte of it is written.
    planned = []
    for name, recipe in reported:
        section = section_rows(finals, name, recipe)
        suffix = (f"-{name}" if len(datasets) > 1 else "") + (f"-{recipe}" if len(recipes) > 1 else "")
        curves = _curves(rows, section)
        stems = [f"figure3{suffix}", f"figure-loss{suffix}"]
        if curves["kl_dims"].notna().any():
            stems.append(f"figure-kl-dims{suffix}")
        planned.append((name, recipe, section, curves, stems))
    outputs = [out, csv, *(folder / f"{stem}{ext}" for *_, stems in planned for stem in stems for ext in FIGURE_TYPES)]
    if len(set(outputs)) < len(outputs):
        raise BenchError(f"--out {out}: the report writes a figure of that name; choose another name")
    # The pictured runs: each model's from the first folder that holds it, as its table row.
    first = runs.groupby(["dataset", "model"])["source"].transform("min")
    shown = runs[runs["dataset"].isin(datasets) & (runs["source"] == first)]
    fix = "pass an --out in a writable folder"
    check_folders([folder, *([folder / "figures"] if _has_pictures(shown) else [])], fix)
    check_files(outputs, fix)
    lines = [
        "# Reconstruction quality: Table 1 and Figure 3 of the CFactorVAE paper",
        "",
        f"From the run records under {_folders(roots)}. Each run contributes its numbers at its final epoch; "
        "cells are mean ± SD over seeds (ddof = 1) with n, and only finished runs are averaged.",
        "",
        UNITS,
    ]
    if len(recipes) > 1:
        lines += ["", "Each recipe has sections of its own: runs of two recipes trained different objectives and are "
                      "never averaged or tested together."]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Drawn into a hidden folder beside the report, then renamed into place: a failure while drawing
        # or writing (a full disk) leaves the previous report, its table, CSV and figures, as they were.
        staging = Path(tempfile.mkdtemp(prefix=".report-", dir=folder))
    except OSError as exc:
        raise BenchError(f"cannot write the report to {folder}: {exc.strerror or exc}; {fix}") from None
    try:
        staged: list[Path] = []
        for name, recipe, section, curves, stems in planned:
            rows_of = summary[(summary["dataset"] == name) & (summary["recipe"] == recipe)]
            scope = f"{name}, {recipe} recipe" if named else name
            fig3 = figure3(curves, scope, staging / stems[0])
            loss = figure_loss(curves, scope, staging / stems[1])
            kl_dims = figure_kl_dims(curves, scope, staging / stems[2]) if len(stems) > 2 else []
            staged += fig3 + loss + kl_dims
            mine = finished_scores(scores, section)
            heading = f"## Dataset: {name}, recipe: {recipe}" if named else f"## Dataset: {name}"
            lines += ["", heading, "", "### Table 1: reconstruction quality at the final epoch", ""]
            lines += _provenance(section)
            lines += [""] + _table1_markdown(rows_of)
            lines += _per_seed_markdown(section)
            lines += _last_tenth_markdown(curves)
            lines += _excluded_runs(section)
            if name == PAPER_DATASET:
                lines += ["", "### Against the paper's Table 1", ""] + _against_paper_markdown(rows_of, recipe)
            else:
                lines += ["", f"The paper's Table 1 is measured on {PAPER_DATASET}; there is nothing of it to compare on {name}."]
            if recipe == "author":
                lines += ["", "### How the author recipe differs from the described one", ""]
                lines += _author_recipe_markdown(curves, section)
            claims = compare(finals, name, recipe)
            lines += ["", "### Significance", ""] + significance_markdown(claims)
            ablated = ablations(finals, name, recipe)
            if len(ablated):
                lines += ["", "### Ablations", ""] + ablations_markdown(section, ablated, claims)
                lines += _ablation_seeds_markdown(section)
            lines += [
                "", "### Figures", "",
                f"![Figure 3, {scope}: test reconstruction error per epoch, mean ± 1 SD over seeds]({fig3[0].name})",
                "",
                f"![Train and test loss per epoch, {scope}, mean ± 1 SD over seeds]({loss[0].name})",
                "",
                "Bands are ±1 SD over seeds, not confidence intervals: a 95% bootstrap band under-covers at 5 seeds.",
            ]
            if kl_dims:
                lines += ["", f"![Per-dimension KL and active dimensions, {scope}]({kl_dims[0].name})"]
            if len(mine):
                lines += ["", "### Disentanglement on ground-truth factors", ""] + scores_markdown(mine)
        picture_lines, pictures = _pictures(roots, shown, staging, data_root, datasets)
        lines += picture_lines
        (staging / out.name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        summary.to_csv(staging / csv.name, index=False)
        check_files([folder / "figures" / p.name for p in pictures], fix)
        figures = [folder / p.relative_to(staging) for p in [*staged, *pictures]]
        # The markdown goes last, so it never names a figure that is not in place yet.
        for source, target in zip([*staged, *pictures, staging / csv.name, staging / out.name], [*figures, csv, out]):
            target.parent.mkdir(exist_ok=True)
            os.replace(source, target)
    except OSError as exc:
        raise BenchError(f"cannot write the report to {folder}: {exc.strerror or exc}; {fix}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ReportSummary(markdown=out, csv=csv, figures=tuple(figures), datasets=tuple(datasets),
                         sections=tuple(reported))
