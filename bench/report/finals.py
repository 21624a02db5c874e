"""Each run's numbers at its final epoch, and Table 1's means over seeds, from the run records.

Every section of a report (one dataset, one recipe) is built from :func:`final_epoch_table`:
one row per run, with the configuration Table 1 averages marked ``in_table``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.config import ADDED_DEFAULTS
from bench.paper import LABELS, PAPER_TABLE1, PAPER_TEST_SCALE, model_order
from bench.records import FINAL_METRICS, config_rank, final_values

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

RUN_KEYS = ["run_id", "dataset", "model", "seed"]


def sections(finals: pd.DataFrame) -> list[tuple[str, str]]:
    """The (dataset, recipe) pairs in ``finals``: datasets sorted, recipes in :data:`RECIPES` order, then any other."""
    rank = {recipe: i for i, recipe in enumerate(RECIPES)}
    pairs = set(zip(finals["dataset"], finals["recipe"]))
    return sorted(pairs, key=lambda pair: (pair[0], rank.get(pair[1], len(RECIPES)), pair[1]))


def section_rows(finals: pd.DataFrame, dataset: str, recipe: str) -> pd.DataFrame:
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
    """The paper's Table 1 row per metric key, its test columns times :data:`bench.paper.PAPER_TEST_SCALE`."""
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
        columns times :data:`bench.paper.PAPER_TEST_SCALE`) and ours minus that (``diff_<key>``); and
        loss minus recon per run, ``<split>_gap_mean, <split>_gap_sd`` with the paper's
        ``paper_<split>_gap`` on our scale. Every one of the five models has a row for every
        (dataset, recipe) of the records, with n = 0 where it has no runs. Only finished runs
        of the table's configuration enter the means; ``n_diverged`` and ``n_unfinished``
        count the runs of that configuration left out.
    """
    table = []
    for dataset, recipe in sections(finals.dropna(subset=["dataset"])):
        mine = section_rows(finals, dataset, recipe)
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
                "trained_on": "; ".join(sorted({machine(r) for r in done.to_dict("records")})) or "—",
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


def machine(run: dict) -> str:
    """Device (with the CPU's model and torch's kernels where the record has them), torch version and threads of one run."""
    on_cpu = run.get("device") == "cpu"
    threads = f", {run['threads']} thread(s)" if on_cpu and run.get("threads") else ""
    known = [run.get(key) for key in ("cpu", "cpu_capability") if isinstance(run.get(key), str)] if on_cpu else []
    cpu = f" ({', '.join(known)})" if known else ""
    return f"{run['device']}{cpu}, torch {run.get('torch') or '?'}{threads}"


def outside_table(section: pd.DataFrame):
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


def table_values(section: pd.DataFrame, model: str, key: str) -> np.ndarray:
    """Finite final-epoch values of one metric over the table's finished seeds of one section."""
    runs = section[(section["model"] == model) & section["in_table"] & (section["status"] == "finished")]
    values = runs[key].to_numpy(dtype=float)
    return values[np.isfinite(values)]


def config_values(section: pd.DataFrame, config_key: str, key: str) -> np.ndarray:
    """Finite final-epoch values of one metric over the finished seeds of one configuration (an ablation's)."""
    runs = section[(section["config_key"] == config_key) & (section["status"] == "finished")]
    values = runs[key].to_numpy(dtype=float)
    return values[np.isfinite(values)]
