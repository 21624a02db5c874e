"""Expand the CLI's choices into the list of runs to do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import RunConfig, resolve
from .errors import BenchError
from .records import run_path


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


def parse_seeds(text: str) -> list[int]:
    """``N`` (seeds 0..N-1) or ``A-B`` (seeds A..B inclusive, to add seeds to a matrix); BenchError otherwise."""
    text = str(text).strip()
    first, dash, last = text.partition("-")
    try:
        if dash:
            seeds = list(range(int(first), int(last) + 1))
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise BenchError(f"--seeds {text}: give a count N (seeds 0..N-1) or a range A-B, e.g. 5-9") from None
    if not seeds:
        raise BenchError(f"--seeds {text}: need at least 1 seed" + (" (a range A-B needs A <= B)" if dash else ""))
    return seeds


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
                if config.train_subset and config.train_subset < config.batch_size:
                    raise BenchError(
                        f"train subset {config.train_subset} is smaller than one batch of {config.batch_size}; "
                        "use a larger --subset or a smaller --set batch_size"
                    )
                plan.append(PlannedRun(config, profile, run_path(out, dataset, model, seed, config.run_id)))
    return plan
