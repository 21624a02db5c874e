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
trains; it imports torch only to draw the pictures.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd

from bench.config import ADDED_DEFAULTS
from bench.errors import BenchError
from bench.paper import (
    AUTHOR_CODE,
    AUTHOR_TEST_PRINT,
    CHALLENGER,
    CLAIM_NAMES,
    CLAIMS,
    LABELS,
    MODELS,
    PAPER_DATASET,
    PAPER_TABLE1,
    PAPER_TEST_SCALE,
    PLANNED_METRICS,
    model_order,
)
from bench.records import FINAL_METRICS, config_rank, final_values, read_metrics, read_trees, weights_path
from bench.report.figures import FIGURE_TYPES, figure3, figure_kl_dims, figure_loss
from bench.report.stats import hedges_g, holm, mean_diff_ci, min_detectable_effect, prob_superiority, welch
from bench.writable import check_files, check_folders

# The recipes in report order. A record written before configs had a recipe was trained by the
# described one, and bench.records.read_tree gives it that recipe (ADDED_DEFAULTS).
RECIPES = ("described", "author")
DEFAULT_RECIPE = ADDED_DEFAULTS["recipe"]
HEADERS = {
    "train_loss": "Train loss",
    "train_recon": "Train recon loss",
    "test_loss": "Test loss",
    "test_recon": "Test recon error",
}
# Table 1's columns, in the order of the final values the records give (bench.records.FINAL_METRICS).
TABLE1_COLUMNS = tuple((key, HEADERS[key]) for key, _, _ in FINAL_METRICS)
ALPHA = 0.05
POWER = 0.8
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
RUN_KEYS = ["run_id", "dataset", "model", "seed"]
# The disentanglement metrics of bench.eval.metrics, as stored in the metric records; higher is better for all.
# Records scored before DCI came from disentanglement_lib's estimator hold the first, third and last alone.
SCORES = {
    "factorvae_score": "FactorVAE score",
    "mig": "MIG",
    "dci_disentanglement": "DCI disentanglement",
    "dci_completeness": "DCI completeness",
    "dci_informativeness_train": "DCI informativeness (train)",
    "dci_informativeness_test": "DCI informativeness (test)",
    "sap": "SAP",
}


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


def sections(finals: pd.DataFrame) -> list[tuple[str, str]]:
    """The (dataset, recipe) pairs in ``finals``: datasets sorted, recipes in :data:`RECIPES` order, then any other."""
    rank = {recipe: i for i, recipe in enumerate(RECIPES)}
    pairs = set(zip(finals["dataset"], finals["recipe"]))
    return sorted(pairs, key=lambda pair: (pair[0], rank.get(pair[1], len(RECIPES)), pair[1]))


def _section(finals: pd.DataFrame, dataset: str, recipe: str) -> pd.DataFrame:
    """The rows of one report section: one dataset, one recipe."""
    return finals[(finals["dataset"] == dataset) & (finals["recipe"] == recipe)]


def paper_ratios() -> dict[tuple[str, str], float]:
    """The paper's train / test ratio for each model and quantity (``"loss"``, ``"recon"``): the six pairs."""
    ratios = {}
    for model, (train_loss, train_recon, test_loss, test_recon) in PAPER_TABLE1.items():
        ratios[(model, "loss")] = train_loss / test_loss
        ratios[(model, "recon")] = train_recon / test_recon
    return ratios


def paper_on_our_scale(model: str) -> dict[str, float]:
    """The paper's Table 1 row per metric key, its test columns times :data:`PAPER_TEST_SCALE`."""
    printed = dict(zip((key for key, *_ in TABLE1_COLUMNS), PAPER_TABLE1[model]))
    return {key: value * PAPER_TEST_SCALE if key.startswith("test_") else value for key, value in printed.items()}


def final_epoch_table(rows: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run with its final-epoch numbers and whether it belongs in Table 1.

    Parameters
    ----------
    rows, runs : pandas.DataFrame
        As returned by :func:`bench.records.read_tree`.

    Returns
    -------
    pandas.DataFrame
        The ``runs`` columns plus ``config_key`` (the config minus the seed), ``recipe``
        (the config's), ``in_table`` and, for each metric key of :data:`TABLE1_COLUMNS`, the
        value and ``<key>_epoch``. A finished or running run gives its values at the last
        epoch recorded for the split; a diverged run gives, per metric, the last finite value.
        ``in_table`` marks, per (dataset, recipe, model), the runs of the configuration with
        the most finished seeds (ties: most runs, then most epochs), so that runs of different
        settings are never averaged together and each recipe has a table of its own; runs read
        from several folders (a ``source`` column) take it from the first folder with the model.
    """
    finals = final_values(rows, runs)
    finals["recipe"] = finals["config"].map(lambda config: config["recipe"])
    finals["in_table"] = False
    for _, group in finals.groupby(["dataset", "recipe", "model"], sort=False):
        def rank(key, group=group):
            members = group[group["config_key"] == key]
            # Read from several folders (read_trees), the first folder that holds the model gives its table config.
            return (-members["source"].min() if "source" in members else 0, config_rank(members, key))
        chosen = max(group["config_key"].unique(), key=rank)
        finals.loc[group.index[group["config_key"] == chosen], "in_table"] = True
    return finals


def summarise(finals: pd.DataFrame) -> pd.DataFrame:
    """Table 1 as numbers: per (dataset, recipe, model), mean, SD (ddof=1) and n of each metric.

    Parameters
    ----------
    finals : pandas.DataFrame
        From :func:`final_epoch_table`.

    Returns
    -------
    pandas.DataFrame
        Columns ``dataset, recipe, model, label, epochs, trained_on, n_finished, n_diverged,
        n_unfinished``, then ``<key>_mean, <key>_sd, <key>_n`` per metric; the paper's
        number as printed (``paper_<key>``), on our scale (``paper_scaled_<key>``: test
        columns times :data:`PAPER_TEST_SCALE`) and ours minus that (``diff_<key>``); and
        loss minus recon per run, ``<split>_gap_mean, <split>_gap_sd`` with the paper's
        ``paper_<split>_gap`` on our scale. Every one of the five models has a row for every
        (dataset, recipe) of the records, with n = 0 where it has no runs. Only finished runs
        of the table's configuration enter the means; ``n_diverged`` and ``n_unfinished``
        count the runs of that configuration left out.
    """
    table = []
    for dataset, recipe in sections(finals.dropna(subset=["dataset"])):
        mine = _section(finals, dataset, recipe)
        mine = mine[mine["in_table"]]
        for model in model_order(mine["model"].dropna().unique()):
            runs = mine[mine["model"] == model]
            done = runs[runs["status"] == "finished"]
            epochs = sorted(pd.to_numeric(done["epochs"], errors="coerce").dropna().astype(int).unique())
            row = {
                "dataset": dataset,
                "recipe": recipe,
                "model": model,
                "label": LABELS.get(model, model),
                "epochs": "/".join(map(str, epochs)),
                "trained_on": "; ".join(sorted({_machine(r) for r in done.to_dict("records")})) or "—",
                "n_finished": len(done),
                "n_diverged": int((runs["status"] == "diverged").sum()),
                "n_unfinished": int((~runs["status"].isin(["finished", "diverged"])).sum()),
            }
            for key, *_ in TABLE1_COLUMNS:
                values = done[key].to_numpy(dtype=float)
                values = values[np.isfinite(values)]
                row[f"{key}_mean"] = values.mean() if values.size else np.nan
                row[f"{key}_sd"] = values.std(ddof=1) if values.size > 1 else np.nan
                row[f"{key}_n"] = values.size
            scaled = paper_on_our_scale(model) if model in PAPER_TABLE1 else {}
            for key, value in zip((m[0] for m in TABLE1_COLUMNS), PAPER_TABLE1.get(model, (np.nan,) * 4)):
                row[f"paper_{key}"] = value
                row[f"paper_scaled_{key}"] = scaled.get(key, np.nan)
                row[f"diff_{key}"] = row[f"{key}_mean"] - row[f"paper_scaled_{key}"]
            for split in ("train", "test"):
                gaps = (done[f"{split}_loss"] - done[f"{split}_recon"]).to_numpy(dtype=float)
                gaps = gaps[np.isfinite(gaps)]
                row[f"{split}_gap_mean"] = gaps.mean() if gaps.size else np.nan
                row[f"{split}_gap_sd"] = gaps.std(ddof=1) if gaps.size > 1 else np.nan
                row[f"paper_{split}_gap"] = (scaled[f"{split}_loss"] - scaled[f"{split}_recon"]) if scaled else np.nan
            table.append(row)
    return pd.DataFrame(table)


def _scores(section: pd.DataFrame, model: str, key: str) -> np.ndarray:
    """Finite final-epoch values of one metric over the table's finished seeds of one section."""
    runs = section[(section["model"] == model) & section["in_table"] & (section["status"] == "finished")]
    values = runs[key].to_numpy(dtype=float)
    return values[np.isfinite(values)]


def _variant_scores(section: pd.DataFrame, config_key: str, key: str) -> np.ndarray:
    """Finite final-epoch values of one metric over the finished seeds of one configuration (an ablation's)."""
    runs = section[(section["config_key"] == config_key) & (section["status"] == "finished")]
    values = runs[key].to_numpy(dtype=float)
    return values[np.isfinite(values)]


def _welch_row(metric: str, a_name: str, a: np.ndarray, b_name: str, b: np.ndarray) -> dict:
    """One two-sided Welch comparison of A's finished seeds with B's, as :func:`compare` returns it (Holm aside)."""
    nan = float("nan")
    row = dict(metric=metric, a=a_name, b=b_name, n_a=a.size, n_b=b.size,
               mean_a=a.mean() if a.size else nan, mean_b=b.mean() if b.size else nan,
               diff=nan, lo=nan, hi=nan, t=nan, df=nan, p=nan, g=nan, p_sup=nan, mde_d=nan, mde_nats=nan, reason="")
    if a.size < 2 or b.size < 2:
        row["reason"] = f"not enough seeds: {a_name} has {a.size} finished, {b_name} has {b.size} (need at least 2 each)"
        return row
    test = welch(a, b)
    row["diff"], row["lo"], row["hi"] = mean_diff_ci(a, b, level=0.95)
    row.update(t=test.t, df=test.df, p=test.p, g=hedges_g(a, b), p_sup=prob_superiority(a, b))
    pooled_sd = np.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2))
    row["mde_d"] = min_detectable_effect(a.size, b.size, alpha=ALPHA, power=POWER)
    row["mde_nats"] = row["mde_d"] * pooled_sd
    if np.isnan(test.p):
        row["reason"] = "every seed of both has the same value (zero variance)"
    return row


def compare(finals: pd.DataFrame, dataset: str, recipe: str = DEFAULT_RECIPE) -> pd.DataFrame:
    """CFactorVAE against every other model of one dataset and recipe on the planned metrics.

    Each comparison is a two-sided Welch t-test of A = cfactorvae against B on the
    final-epoch scores of the finished seeds; Holm's correction runs over the whole
    family (every B times both metrics of :data:`PLANNED_METRICS`) of this dataset and
    recipe. Runs of another recipe never enter: they trained another objective.

    Parameters
    ----------
    finals : pandas.DataFrame
        From :func:`final_epoch_table`.
    dataset : str
        The dataset whose runs are compared.
    recipe : str
        The recipe whose runs are compared.

    Returns
    -------
    pandas.DataFrame
        One row per (metric, B) with ``n_a, n_b, mean_a, mean_b, diff, lo, hi`` (A - B and
        its 95% CI), ``t, df, p, p_holm, g`` (Hedges), ``p_sup`` (P(A > B)), ``mde_d`` and
        ``mde_nats`` (smallest |d| detectable at alpha 0.05 with power 0.8, and that times
        the pooled SD) and ``reason``: empty when the test ran, else why it could not.
    """
    section = _section(finals, dataset, recipe)
    present = set(section["model"].dropna())
    # The paper's two baselines are always compared, so a missing one shows as untestable.
    others = [m for m in model_order(present) if m != CHALLENGER and (m in present or m in ("factorvae", "cvae"))]
    comparisons = [_welch_row(key, CHALLENGER, _scores(section, CHALLENGER, key), model, _scores(section, model, key))
                   for key in PLANNED_METRICS for model in others]
    table = pd.DataFrame(comparisons)
    table["p_holm"] = holm(table["p"].to_numpy(dtype=float))
    return table


# What a configuration must share with its model's table configuration to be compared with it as an
# ablation: the same training length and data, so that only the objective or the training differs.
ABLATION_SAME = ("epochs", "train_subset", "test_subset")


def variants(section: pd.DataFrame) -> list[tuple[str, str, str]]:
    """The ablations of one section: (model, config_key, label) of each configuration outside the table.

    Only configurations that share :data:`ABLATION_SAME` with their model's table runs count; the
    label names what differs, e.g. ``cfactorvae gamma=0.0``.
    """
    return [(model, key, f"{model} " + " ".join(f"{k}={other.get(k)}" for k in changed))
            for model, key, _, _, other, changed in _outside_table(section)
            if changed and not set(changed) & set(ABLATION_SAME)]


def ablations(finals: pd.DataFrame, dataset: str, recipe: str = DEFAULT_RECIPE) -> pd.DataFrame:
    """Each ablation of one dataset and recipe (:func:`variants`) against its model's table runs.

    A variant of model M is compared with M's table configuration and, when M is CFactorVAE, with
    each other model of the section as well, as :func:`compare` compares CFactorVAE itself: what
    the variant keeps of CFactorVAE's differences. Two-sided Welch t-tests on the planned metrics;
    Holm's correction runs over this family alone, apart from the planned one.

    Returns
    -------
    pandas.DataFrame
        The columns of :func:`compare`, ``a`` being the variant's label; no rows without variants.
    """
    section = _section(finals, dataset, recipe)
    present = [m for m in model_order(section["model"].unique()) if section.loc[section["model"] == m, "in_table"].any()]
    rows = []
    for model, key, label in variants(section):
        against = [model] + ([m for m in present if m != model] if model == CHALLENGER else [])
        rows += [_welch_row(metric, label, _variant_scores(section, key, metric), other, _scores(section, other, metric))
                 for metric in PLANNED_METRICS for other in against]
    table = pd.DataFrame(rows)
    if len(table):
        table["p_holm"] = holm(table["p"].to_numpy(dtype=float))
    return table


def difference(row: dict) -> str:
    """One line on a two-sided comparison of :func:`ablations`: whether A and B differ, and by how much."""
    head = f"{row['a']} against {row['b']}, {CLAIM_NAMES[row['metric']]}"
    if row["reason"]:
        return f"{head}: cannot be tested: {row['reason']}"
    if row["p_holm"] < ALPHA:
        outcome = "lower" if row["diff"] < 0 else "higher"
        outcome = f"significantly {outcome} at alpha = {ALPHA} (Holm)"
    else:
        outcome = (f"no significant difference at alpha = {ALPHA} (Holm; 80% power only for |d| ≥ "
                   f"{row['mde_d']:.2f}, {row['mde_nats']:.2f} nats)")
    return (f"{head}: {outcome}, n = {row['n_a']} vs {row['n_b']} (difference {row['diff']:+.2f} nats, "
            f"95% CI [{row['lo']:+.2f}, {row['hi']:+.2f}], Holm p = {_p(row['p_holm'])})")


def lead_kept(planned: dict, ablated: dict) -> str:
    """One line on how much of CFactorVAE's lead over B an ablation of CFactorVAE keeps.

    ``planned`` is the :func:`compare` row of CFactorVAE against B, ``ablated`` the :func:`ablations`
    row of the variant against the same B and metric. The share is the ratio of the two mean
    differences, a point estimate: the CIs of its two terms are in the tables. Only a lead the
    planned comparisons support (lower, Holm p below :data:`ALPHA`) has a share to report.
    """
    head = f"{ablated['a']}, {CLAIM_NAMES[planned['metric']]} against {planned['b']}"
    if planned["reason"] or not (planned["p_holm"] < ALPHA and planned["diff"] < 0):
        return f"{head}: CFactorVAE has no supported lead over {planned['b']} to keep"
    if ablated["reason"]:
        return f"{head}: cannot be compared: {ablated['reason']}"
    share = ablated["diff"] / planned["diff"]
    return (f"{head}: {ablated['diff']:+.2f} nats, {share:.0%} of CFactorVAE's {planned['diff']:+.2f} "
            f"(Holm p = {_p(planned['p_holm'])})")


def verdict(comparisons: pd.DataFrame, metric: str, baseline: str, name: str) -> str:
    """One line on the claim "CFactorVAE has a lower <metric> than <name>".

    The claim is supported when A - B < 0 and the Holm-adjusted p is below
    :data:`ALPHA`, contradicted when A - B > 0 and significant, not supported otherwise;
    when the test could not run the line says why.

    Parameters
    ----------
    comparisons : pandas.DataFrame
        From :func:`compare`.
    metric : str
        A key of :data:`PLANNED_METRICS`.
    baseline : str
        The model compared with; :func:`compare` always includes ``"factorvae"`` and ``"cvae"``.
    name : str
        The baseline as the paper names it.

    Returns
    -------
    str
        The verdict line.
    """
    claim = f"CFactorVAE has a lower {CLAIM_NAMES[metric]} than {name}"
    row = comparisons[(comparisons["metric"] == metric) & (comparisons["b"] == baseline)].iloc[0]
    if row["reason"]:
        return f"{claim}: cannot be tested: {row['reason']}"
    significant = row["p_holm"] < ALPHA
    if significant and row["diff"] < 0:
        outcome = "supported"
    elif significant and row["diff"] > 0:
        outcome = "contradicted (significantly higher)"
    else:
        outcome = "not supported"
    return (
        f"{claim}: {outcome} at alpha = {ALPHA} (Holm), n = {row['n_a']} vs {row['n_b']}"
        f" (difference {row['diff']:+.2f} nats, 95% CI [{row['lo']:+.2f}, {row['hi']:+.2f}],"
        f" Holm p = {_p(row['p_holm'])})"
    )


def _num(value: float, digits: int = 2) -> str:
    return "—" if pd.isna(value) else f"{value:.{digits}f}"


def _p(value: float) -> str:
    if pd.isna(value):
        return "—"
    return f"{value:.1e}" if value < 1e-4 else f"{value:.4f}"


def _cell(mean: float, sd: float, n: int, digits: int = 2) -> str:
    if n == 0:
        return "—"
    if n == 1:
        return f"{mean:.{digits}f} (n = 1, no SD)"
    return f"{mean:.{digits}f} ± {sd:.{digits}f} (n = {n})"


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


def _machine(run: dict) -> str:
    """Device (with the CPU's model where the record has it), torch version and threads of one run."""
    on_cpu = run.get("device") == "cpu"
    threads = f", {run['threads']} thread(s)" if on_cpu and run.get("threads") else ""
    cpu = f" ({run['cpu']})" if on_cpu and isinstance(run.get("cpu"), str) else ""
    return f"{run['device']}{cpu}, torch {run.get('torch') or '?'}{threads}"


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
        f"- Trained on: {_per_model(done, _machine)}",
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


def _outside_table(section: pd.DataFrame):
    """Per model of one section, each configuration left out of its table.

    Yields ``(model, config_key, runs, table_config, config, changed)``: its runs, the model's
    table configuration, its own, and the keys (seed aside) whose values differ between the two.
    """
    for model in model_order(section["model"].unique()):
        runs = section[section["model"] == model]
        chosen = runs[runs["in_table"]]
        if chosen.empty:
            continue
        reference = dict(chosen.iloc[0]["config"] or {})
        for key, group in runs[~runs["in_table"]].groupby("config_key", sort=True):
            other = dict(group.iloc[0]["config"] or {})
            changed = sorted(k for k in set(reference) | set(other) if k != "seed" and reference.get(k) != other.get(k))
            yield model, key, group, reference, other, changed


def _other_configs(mine: pd.DataFrame) -> list[str]:
    """A line per configuration of one section left out of its table, naming what differs from the table's."""
    lines = []
    for model, _, group, reference, other, changed in _outside_table(mine):
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
        ours = [_cell(row[f"{k}_mean"], row[f"{k}_sd"], row[f"{k}_n"]) for k, *_ in TABLE1_COLUMNS]
        lines.append(f"| {row['label']} | " + " | ".join(ours) + f" | {row['n_diverged']} | {row['trained_on']} |")
    return lines


def _per_seed_markdown(section: pd.DataFrame) -> list[str]:
    """Each finished seed's final test recon error: a mean ± SD over five seeds hides one seed far from the rest."""
    done = section[section["in_table"] & (section["status"] == "finished")]
    if done.empty:
        return []
    seeds = sorted(int(s) for s in done["seed"].unique())
    lines = ["", "Per seed: the final test recon error of each finished run averaged above, and the median over seeds.", "",
             "| Model | " + " | ".join(f"Seed {s}" for s in seeds) + " | Median |", "|---" * (2 + len(seeds)) + "|"]
    for model in [m for m in model_order(done["model"].unique()) if (done["model"] == m).any()]:
        values = done[done["model"] == model].set_index("seed")["test_recon"]
        cells = [_num(values[s]) if s in values.index else "—" for s in seeds]
        lines.append(f"| {LABELS.get(model, model)} | " + " | ".join(cells) + f" | {_num(values.median())} |")
    return lines


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
            lines.append(f"| {row['label']} | {header} | {_cell(row[f'{key}_mean'], row[f'{key}_sd'], row[f'{key}_n'])} "
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
        ours = {split: _cell(row[f"{split}_gap_mean"], row[f"{split}_gap_sd"], row["n_finished"]) for split in ("train", "test")}
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
                    cells.append(_cell(values.mean() if values.size else np.nan,
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
    return len({_machine(run) for run in runs}) == 1


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


def _comparisons_table(comparisons: pd.DataFrame) -> list[str]:
    """The markdown table of Welch comparisons (rows of :func:`compare` or :func:`ablations`)."""
    lines = ["| Metric | A vs B | n (A vs B) | Mean A − B [95% CI] | Welch t (df) | p | Holm p | Hedges' g | P(A > B) "
             "| MDE d (nats) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in comparisons.to_dict("records"):
        head = f"| {HEADERS[r['metric']]} | {r['a']} vs {r['b']} | {r['n_a']} vs {r['n_b']} |"
        if r["reason"] and np.isnan(r["diff"]):
            lines.append(f"{head} {r['reason']} | | | | | | |")
            continue
        lines.append(
            f"{head} {r['diff']:+.2f} [{_num(r['lo'])}, {_num(r['hi'])}] | {_num(r['t'])} ({_num(r['df'], 1)}) | "
            f"{_p(r['p'])} | {_p(r['p_holm'])} | {_num(r['g'])} | {_num(r['p_sup'])} | "
            f"{_num(r['mde_d'])} ({_num(r['mde_nats'])}) |"
        )
    return lines


def _ablations_markdown(section: pd.DataFrame, comparisons: pd.DataFrame, planned: pd.DataFrame) -> list[str]:
    """The ablations of one section: each variant's final numbers, its comparisons, a line per comparison
    and, for a variant of CFactorVAE, what it keeps of CFactorVAE's leads (``planned``: from :func:`compare`)."""
    tested = comparisons[comparisons["reason"] == ""]
    lines = [
        "Each configuration of a model outside the table that trains as long on the same data is an ablation: it "
        "is compared with the table's runs of its model and, for a variant of CFactorVAE, with each other model, "
        "as the planned comparisons compare CFactorVAE. Two-sided Welch t-tests, Holm correction over the "
        f"{len(tested)} tests of this family that could run (of {len(comparisons)}), apart from the planned family.",
        "",
        "| Variant | " + " | ".join(HEADERS[key] for key in PLANNED_METRICS) + " |",
        "|---|" + "---|" * len(PLANNED_METRICS),
    ]
    for _, key, label in variants(section):
        cells = []
        for metric in PLANNED_METRICS:
            x = _variant_scores(section, key, metric)
            cells.append(_cell(x.mean() if x.size else np.nan, x.std(ddof=1) if x.size > 1 else np.nan, x.size))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", *_comparisons_table(comparisons), ""]
    lines += [f"- {difference(row)}" for row in comparisons.to_dict("records")]
    leads = {(row["metric"], row["b"]): row for row in planned.to_dict("records")}
    kept = [lead_kept(leads[(row["metric"], row["b"])], row) for row in comparisons.to_dict("records")
            if row["b"] != CHALLENGER and (row["metric"], row["b"]) in leads]
    if kept:
        lines += ["", "What each variant of CFactorVAE keeps of CFactorVAE's leads in the planned comparisons: the "
                      "variant's mean difference from the other model, and that as a share of CFactorVAE's own "
                      "(a ratio of means: 100% keeps the whole lead, 0% none of it).", ""]
        lines += [f"- {line}" for line in kept]
    return lines


def _significance_markdown(comparisons: pd.DataFrame) -> list[str]:
    tested = comparisons[comparisons["reason"] == ""]
    lines = [
        f"Planned comparisons: CFactorVAE (A) against each other model (B) on the final test recon error and "
        f"test loss, two-sided Welch t-tests, Holm correction over the {len(tested)} tests that could run "
        f"(of {len(comparisons)} planned). Lower is better for both metrics, so the paper's claims predict "
        "A − B < 0 and P(A > B) near 0. MDE: the smallest |Cohen's d| a two-sided test at alpha = 0.05 detects "
        "with 80% power at this n (before Holm, so the corrected family needs more), and that in nats via the "
        "pooled SD.",
        "",
        *_comparisons_table(comparisons),
    ]
    if len(tested):
        n_pairs = sorted({(r["n_a"], r["n_b"]) for r in tested.to_dict("records")})
        for n_a, n_b in n_pairs:
            d = min_detectable_effect(n_a, n_b, alpha=ALPHA, power=POWER)
            at = tested[(tested["n_a"] == n_a) & (tested["n_b"] == n_b)]
            nats = ", ".join(f"{HEADERS[r['metric']].lower()} vs {r['b']} {r['mde_nats']:.2f}" for r in at.to_dict("records"))
            lines += ["", f"At n = {n_a} vs {n_b}, only effects of |d| ≥ {d:.2f} are detected with 80% power "
                          f"(in nats: {nats}); smaller true differences are likely to read as not supported."]
    lines += ["", "#### Verdicts on the paper's claims", ""]
    lines += [f"- {verdict(comparisons, metric, model, name)}" for metric, model, name in CLAIMS]
    lines += ["", "The paper's Table 1 also reports lower train loss and train recon loss for CFactorVAE; "
                  "those columns are descriptive here, outside the planned family."]
    return lines


def _finished_scores(scores: pd.DataFrame, section: pd.DataFrame) -> pd.DataFrame:
    """The metric rows of the finished runs in the table's configuration of one section."""
    keep = section[section["in_table"] & (section["status"] == "finished")]
    return scores.merge(keep[RUN_KEYS], on=RUN_KEYS)


def _scored(scores: pd.DataFrame) -> list[str]:
    """The metrics of SCORES that the records hold, in SCORES order."""
    return [metric for metric in SCORES if (scores["metric"] == metric).any()]


def summarise_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Per model and metric the records hold: mean, SD (ddof = 1) and n over seeds, models in Table 1 order."""
    table = []
    for model in model_order(scores["model"].unique()):
        for metric in _scored(scores):
            values = scores.loc[(scores["model"] == model) & (scores["metric"] == metric), "value"].to_numpy(float)
            values = values[np.isfinite(values)]
            table.append({"model": model, "metric": metric, "n": values.size,
                          "mean": values.mean() if values.size else np.nan,
                          "sd": values.std(ddof=1) if values.size > 1 else np.nan})
    return pd.DataFrame(table, columns=["model", "metric", "n", "mean", "sd"])


def compare_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """CFactorVAE against every other model on each disentanglement metric, as :func:`compare` does for Table 1.

    Two-sided Welch t-tests of A = cfactorvae against B per metric the records hold, 95% CI of A - B,
    Hedges' g, P(A > B), and Holm's correction over the whole family (every B times every metric).
    """
    rows = []
    others = [m for m in model_order(scores["model"].unique()) if m != CHALLENGER]
    for metric in _scored(scores):
        pick = lambda model: scores.loc[(scores["model"] == model) & (scores["metric"] == metric), "value"].to_numpy(float)  # noqa: E731
        a = pick(CHALLENGER)
        for model in others:
            rows.append(_welch_row(metric, CHALLENGER, a, model, pick(model)))
    table = pd.DataFrame(rows, columns=["metric", "a", "b", "n_a", "n_b", "diff", "lo", "hi", "t", "df", "p", "g",
                                        "p_sup", "reason"])
    table["p_holm"] = holm(table["p"].to_numpy(dtype=float)) if len(table) else []
    return table


def _counts_profile(r) -> str:
    """Which profile's metric sample counts a record's are, and how they stand to disentanglement_lib's."""
    # Imported here: sklearn, which bench.eval.metrics loads, is paid for only by reports with scores.
    from bench.config import METRIC_COUNTS
    from bench.eval.metrics import MetricCounts

    found = tuple(int(r[field.name]) for field in fields(MetricCounts))
    profile = next((name for name, changed in METRIC_COUNTS.items() if astuple(MetricCounts(**changed)) == found),
                   None)
    dl = MetricCounts()
    if found == astuple(dl):
        return "disentanglement_lib's sample counts (the paper profile's)"
    which = (f"the {profile} profile's sample counts, fewer than" if profile
             else "sample counts of no profile, other than")
    return (f"{which} disentanglement_lib's ({dl.n_train:,} training and {dl.n_test:,} test samples, "
            f"{dl.factorvae_n_train:,} and {dl.factorvae_n_eval:,} FactorVAE votes); the scores move with the "
            "counts, so these do not compare with published ones")


def _counts_line(scores: pd.DataFrame) -> str:
    """How the scores were measured, from the metric records themselves."""
    columns = ["metric_seed", "n_train", "n_test", "mig_bins", "factorvae_batch_size", "factorvae_n_train",
               "factorvae_n_eval", "factorvae_n_variance", "representation"]
    settings = scores[columns].drop_duplicates()
    runs = scores["run_id"].nunique()
    # Records written before DCI and SAP came from disentanglement_lib's estimators have no completeness.
    earlier = runs - scores.loc[scores["metric"] == "dci_completeness", "run_id"].nunique()
    note = (f" {earlier} of the {runs} runs were scored before, their DCI disentanglement from gradient-boosted "
            "stumps and their SAP from least-squares classifiers: those two scores of theirs are left out of the "
            "table and the tests below; `bench metrics --again` scores them anew." if 0 < earlier < runs else "")
    if len(settings) != 1:
        return f"The runs were scored with {len(settings)} different sample settings (see the metric records).{note}"
    r = settings.iloc[0]
    if earlier == runs:
        estimators = (f"DCI disentanglement (gradient-boosted stumps) on the same samples and SAP (least-squares "
                      f"classifiers) trained on them and tested on {r['n_test']:,} more, this harness's estimators "
                      "before disentanglement_lib's (`bench metrics --again` rescores runs that have their weights)")
    else:
        estimators = (f"DCI (sklearn's GradientBoostingClassifier per factor) and SAP (LinearSVC(C=0.01) per code and "
                      f"factor), as disentanglement_lib, trained on those {r['n_train']:,} and tested on "
                      f"{r['n_test']:,} more")
    return (f"Representation: the encoder's {r['representation']}; metric seed {r['metric_seed']}; "
            f"{_counts_profile(r)}. MIG ({r['mig_bins']} equal-width bins) on {r['n_train']:,} uniform factor "
            f"samples; {estimators}; FactorVAE score from {r['factorvae_n_train']:,} training and "
            f"{r['factorvae_n_eval']:,} evaluation votes of {r['factorvae_batch_size']} samples, global variances "
            f"from {r['factorvae_n_variance']:,}.{note}")


def _comparable(scores: pd.DataFrame) -> pd.DataFrame:
    """The scores to tabulate: where some runs have disentanglement_lib's DCI and SAP, not the earlier runs' own."""
    current = scores.loc[scores["metric"] == "dci_completeness", "run_id"].unique()
    if not len(current):
        return scores
    return scores[scores["run_id"].isin(current) | ~scores["metric"].isin(["dci_disentanglement", "sap"])]


def _scores_markdown(scores: pd.DataFrame) -> list[str]:
    line = _counts_line(scores)
    scores = _comparable(scores)
    summary = summarise_scores(scores)
    metrics = _scored(scores)
    lines = [line, "", "| Model | " + " | ".join(SCORES[m] for m in metrics) + " |",
             "|---|" + "---|" * len(metrics)]
    for model in model_order(scores["model"].unique()):
        cells = []
        for metric in metrics:
            r = summary[(summary["model"] == model) & (summary["metric"] == metric)].iloc[0]
            cells.append("—" if r["n"] == 0 else f"{r['mean']:.3f} (n = 1)" if r["n"] == 1
                         else f"{r['mean']:.3f} ± {r['sd']:.3f} (n = {r['n']})")
        lines.append(f"| {LABELS.get(model, model)} | " + " | ".join(cells) + " |")
    comparisons = compare_scores(scores)
    tested = comparisons[comparisons["reason"] == ""]
    lines += ["", f"CFactorVAE (A) against each other model (B), two-sided Welch t-tests, Holm correction over the "
                  f"{len(tested)} tests that could run (of {len(comparisons)}). Higher is better on every metric; the "
                  "paper's claim that CFactorVAE stays as disentangled as FactorVAE predicts no significant "
                  "difference from FactorVAE, which a small n cannot confirm on its own.", "",
              "| Metric | A vs B | n (A vs B) | Mean A − B [95% CI] | Welch t (df) | p | Holm p | Hedges' g | P(A > B) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in comparisons.to_dict("records"):
        head = f"| {SCORES[r['metric']]} | {r['a']} vs {r['b']} | {r['n_a']} vs {r['n_b']} |"
        if r["reason"] and np.isnan(r["diff"]):
            lines.append(f"{head} {r['reason']} | | | | | |")
            continue
        lines.append(f"{head} {r['diff']:+.3f} [{_num(r['lo'], 3)}, {_num(r['hi'], 3)}] | {_num(r['t'])} "
                     f"({_num(r['df'], 1)}) | {_p(r['p'])} | {_p(r['p_holm'])} | {_num(r['g'])} | {_num(r['p_sup'])} |")
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


def _pictures(runs_root: Path, runs: pd.DataFrame, folder: Path, data_root) -> tuple[list[str], list[Path]]:
    """Traversals, reconstructions and samples of seed 0 of each model whose final weights are there, in
    ``folder``/figures.

    Drawing needs torch and the test images, so it happens only when such weights exist; a dataset
    that cannot be loaded leaves a line saying why instead of stopping the report.
    """
    if not _has_pictures(runs):
        return [], []
    from bench.data.datasets import resolve_root
    from bench.eval.traverse import figures_for_report

    try:
        paths = figures_for_report(runs_root, folder / "figures", resolve_root(data_root))
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
        folder that holds the model, its other configurations are reported as ablations, and the
        pictures come from the first folder.
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
        section = _section(finals, name, recipe)
        suffix = (f"-{name}" if len(datasets) > 1 else "") + (f"-{recipe}" if len(recipes) > 1 else "")
        curves = _curves(rows, section)
        stems = [f"figure3{suffix}", f"figure-loss{suffix}"]
        if curves["kl_dims"].notna().any():
            stems.append(f"figure-kl-dims{suffix}")
        planned.append((name, recipe, section, curves, stems))
    outputs = [out, csv, *(folder / f"{stem}{ext}" for *_, stems in planned for stem in stems for ext in FIGURE_TYPES)]
    if len(set(outputs)) < len(outputs):
        raise BenchError(f"--out {out}: the report writes a figure of that name; choose another name")
    shown = runs[runs["dataset"].isin(datasets) & (runs["source"] == 0)]
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
            mine = _finished_scores(scores, section)
            heading = f"## Dataset: {name}, recipe: {recipe}" if named else f"## Dataset: {name}"
            lines += ["", heading, "", "### Table 1: reconstruction quality at the final epoch", ""]
            lines += _provenance(section)
            lines += [""] + _table1_markdown(rows_of)
            lines += _per_seed_markdown(section)
            lines += _excluded_runs(section)
            if name == PAPER_DATASET:
                lines += ["", "### Against the paper's Table 1", ""] + _against_paper_markdown(rows_of, recipe)
            else:
                lines += ["", f"The paper's Table 1 is measured on {PAPER_DATASET}; there is nothing of it to compare on {name}."]
            if recipe == "author":
                lines += ["", "### How the author recipe differs from the described one", ""]
                lines += _author_recipe_markdown(curves, section)
            planned = compare(finals, name, recipe)
            lines += ["", "### Significance", ""] + _significance_markdown(planned)
            ablated = ablations(finals, name, recipe)
            if len(ablated):
                lines += ["", "### Ablations", ""] + _ablations_markdown(section, ablated, planned)
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
                lines += ["", "### Disentanglement on ground-truth factors", ""] + _scores_markdown(mine)
        picture_lines, pictures = _pictures(roots[0], shown, staging, data_root)
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
