"""Expand the CLI's choices into the list of runs to do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.config import RunConfig, resolve
from bench.errors import BenchError
from bench.records import run_path


@dataclass(frozen=True)
class PlannedRun:
    config: RunConfig
    profile: str
    path: Path  # where its record is published


def parse_names(text: str, known, what: str, everything=None) -> list[str]:
    """``all`` (``everything``, default every known name) or a comma list of known names, in order, without repeats."""
    known = list(known)
    if text.strip() == "all":
        return list(everything or known)
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise BenchError(f"no {what} given; use all or a comma-separated list of {', '.join(known)}")
    for name in names:
        if name not in known:
            raise BenchError(f"unknown {what} {name!r}; choose from all, {', '.join(known)}")
    return list(dict.fromkeys(names))


# The most seeds one bench run plans, and the end of the seeds: a seed is an int64 column of the records.
MAX_SEEDS = 1000
SEED_END = 2**63


def parse_seeds(text: str) -> list[int]:
    """``N`` (seeds 0..N-1) or ``A-B`` (seeds A..B inclusive, to add seeds to a matrix); BenchError otherwise.

    The bounds are checked before the list is built: ``--seeds 99999999999`` is refused, not planned.
    """
    text = str(text).strip()
    first, dash, last = text.partition("-")
    try:
        start, end = (int(first), int(last) + 1) if dash else (0, int(text))
    except ValueError:
        raise BenchError(f"--seeds {text}: give a count N (seeds 0..N-1) or a range A-B, e.g. 5-9") from None
    if end <= start:
        raise BenchError(f"--seeds {text}: need at least 1 seed" + (" (a range A-B needs A <= B)" if dash else ""))
    if end - start > MAX_SEEDS:
        raise BenchError(f"--seeds {text}: at most {MAX_SEEDS} seeds in one bench run; give a range A-B to add more")
    if end > SEED_END:
        raise BenchError(f"--seeds {text}: seeds end below 2**63")
    return list(range(start, end))


def check_fits_data(config: RunConfig, n_train: int) -> None:
    """Fail unless ``config`` can train on the ``n_train`` training images its dataset and subset give.

    Parameters
    ----------
    config : RunConfig
        A run's resolved configuration.
    n_train : int
        The training images it meets (bench.data.datasets.subset_sizes).

    Raises
    ------
    BenchError
        When one batch needs more images than the split holds.
    """
    if config.batch_size > n_train:
        subset = f" (train subset {config.train_subset})" if config.train_subset else ""
        raise BenchError(f"batch_size {config.batch_size} is more than the {n_train:,} training images of "
                         f"{config.dataset}{subset}; use --set batch_size={n_train} or less")


def make_plan(models: list[str], datasets: list[str], seeds, profile: str, overrides: dict, out: Path,
              recipe: str = "described") -> list[PlannedRun]:
    """Every (dataset, model, seed) run, in a stable order; ``seeds`` is a count N (0..N-1) or a list of seeds."""
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seeds:
        raise BenchError("--seeds: need at least 1 seed")
    plan = []
    for dataset in datasets:
        for model in models:
            for seed in seeds:
                config = resolve(model, dataset, seed, profile, overrides, recipe)
                if config.train_subset:  # refused already here, without the data: a run meets at most that many
                    check_fits_data(config, config.train_subset)
                plan.append(PlannedRun(config, profile, run_path(out, dataset, model, seed, config.run_id)))
    return plan
