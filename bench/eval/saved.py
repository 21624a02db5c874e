"""Finished runs loaded back from their final weights: for pictures (:mod:`bench.eval.traverse`) and
for scoring after training (``bench metrics``).

A run scored after training gets the same rows as one scored when it finished
(:func:`bench.eval.scores.metric_rows`, fixed metric seed): its weights are the same, and on
the same machine, scored with the torch threads its record names, so are the scores. Give the
data root the runs trained on: without dSprites' file the ground truth is the generated
dSprites, with it the real one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from bench.config import ADDED_DEFAULTS, RunConfig
from bench.data import datasets as data
from bench.errors import BenchError
from bench.records import metrics_path, read_tree, weights_path, write_metrics
from bench.train.trainer import conv_layout
from models.nets import VAE

RETRAIN = "delete them and the run's .parquet record, and bench run trains the run again"


def load_vae(weights: Path) -> tuple[RunConfig, VAE]:
    """The configuration and network stored in a run's final-weights file, on the CPU, in eval mode."""
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        config = RunConfig.from_dict({**ADDED_DEFAULTS, **state["config"]})
    # A damaged file reaches torch.load's caller as any of several types (zip, pickle, EOF, OS errors),
    # and a config of another version as a TypeError from the dataclass.
    except Exception as exc:  # noqa: BLE001
        raise BenchError(f"weights {weights} are unreadable ({type(exc).__name__}); {RETRAIN}") from None
    channels, size = data.DATASETS[config.dataset].channels, data.DATASETS[config.dataset].image_size
    vae = VAE(config.z_dim, channels, size, getattr(torch, config.dtype), config.nets)
    try:
        vae.load_state_dict(state["vae"])
    except (KeyError, RuntimeError) as exc:
        raise BenchError(f"weights {weights} do not fit the network of their config ({type(exc).__name__}); "
                         f"{RETRAIN}") from None
    return config, conv_layout(vae).eval()


@dataclass
class Scoring:
    """What ``bench metrics`` did with each run it looked at, as lists of record paths."""

    scored: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)  # had scores, and --again was not given
    no_weights: list[str] = field(default_factory=list)  # finished, but its final weights are gone
    unfinished: list[str] = field(default_factory=list)  # running or diverged: never scored


def scoring_threads(run: dict) -> int | None:
    """The torch threads a CPU run was trained, and so scored, with; None where its record does not say."""
    threads = run.get("threads")
    if run.get("device") != "cpu" or threads is None or pd.isna(threads) or threads < 1:
        return None
    return int(threads)


def score_runs(runs_root: Path, data_root: Path, again: bool = False, log=lambda line: None) -> Scoring:
    """Score the finished runs under ``runs_root`` on datasets with known factors.

    Each run's rows go to its ``_metrics`` file (published atomically); runs that have one are left
    alone unless ``again``. Raises BenchError when no run there is on such a dataset.
    """
    from bench.eval.scores import metric_rows

    _, runs = read_tree(runs_root)
    truths = {name: data.ground_truth(name, data_root) for name in sorted(set(runs["dataset"]))}
    runs = runs[runs["dataset"].map(lambda name: truths[name] is not None)]
    if runs.empty:
        with_factors = ", ".join(name for name, spec in data.DATASETS.items() if spec.ground_truth is not None)
        raise BenchError(f"no run under {runs_root} is on a dataset with known factors ({with_factors}); "
                         "there is nothing to score")
    outcome = Scoring()
    todo = []
    for run in runs.sort_values(["dataset", "model", "seed", "run_id"]).to_dict("records"):
        record = Path(run["path"])
        if run["status"] != "finished":
            outcome.unfinished.append(str(record))
        elif not weights_path(record).is_file():
            outcome.no_weights.append(str(record))
        elif metrics_path(record).is_file() and not again:
            outcome.already.append(str(record))
        else:
            todo.append((run, record))
    threads = torch.get_num_threads()
    for done, (run, record) in enumerate(todo, start=1):
        config, vae = load_vae(weights_path(record))
        torch.set_num_threads(scoring_threads(run) or threads)
        try:
            # The run's threads keep its encodings bit for bit; DCI's trees, which give the same
            # scores on any number of threads, take the whole machine's.
            rows = metric_rows(config, vae, truths[config.dataset], run["profile"], log=log, n_jobs=threads)
        finally:
            torch.set_num_threads(threads)
        write_metrics(metrics_path(record), rows)
        outcome.scored.append(str(record))
        values = "  ".join(f"{row['metric']} {row['value']:.3f}" for row in rows)
        log(f"[{done}/{len(todo)} {config.model} {config.dataset} seed={config.seed}] {values}")
    return outcome
