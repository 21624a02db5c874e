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


def make_plan(models: list[str], datasets: list[str], seeds: int, profile: str, overrides: dict, out: Path) -> list[PlannedRun]:
    """Every (dataset, model, seed) run, seeds numbered 0..seeds-1, in a stable order."""
    if seeds < 1:
        raise BenchError(f"--seeds {seeds}: need at least 1 seed")
    plan = []
    for dataset in datasets:
        for model in models:
            for seed in range(seeds):
                config = resolve(model, dataset, seed, profile, overrides)
                if config.train_subset and config.train_subset < config.batch_size:
                    raise BenchError(
                        f"train subset {config.train_subset} is smaller than one batch of {config.batch_size}; "
                        "use a larger --subset or a smaller --set batch_size"
                    )
                plan.append(PlannedRun(config, profile, run_path(out, dataset, model, seed, config.run_id)))
    return plan
