"""Run a plan: skip what is finished, train the rest with joblib, publish records every epoch."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import data as datasets
from .errors import BenchError
from .plan import PlannedRun
from .records import RecordError, read_meta, save_weights, weights_path, write_run


@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "run_id: reason"
    diverged: list[str] = field(default_factory=list)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def is_finished(path: Path) -> bool:
    """True when a record exists and says its run finished (or diverged: rerunning gives the same bits)."""
    if not path.exists():
        return False
    try:
        return read_meta(path).get("status") in ("finished", "diverged")
    except RecordError:
        return False


def check_writable(out: Path) -> None:
    """Fail before any training if the records folder cannot be created or written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=".probe-", dir=out):
            pass
    except OSError as exc:
        raise BenchError(f"--out {out}: cannot write there ({exc.strerror}); choose a writable folder") from None


def git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    return device


@functools.lru_cache(maxsize=4)
def _load(name: str, root: str, train_subset: int, test_subset: int):
    # Cached per worker process: loky reuses workers, so each loads a dataset once.
    return datasets.load(name, Path(root), (train_subset or None, test_subset or None))


def run_one(run: PlannedRun, data_root: str, device: str, threads: int, label: str, commit: str | None) -> tuple[str, str, str]:
    """Train one run in this process and publish its record after every epoch.

    Returns ``(run_id, status, message)``; never raises, so one failed run does not stop the others.
    """
    import torch
    import torchvision

    from .engine import train

    cfg = run.config
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    meta = {
        "run_id": cfg.run_id,
        "profile": run.profile,
        "config": cfg.to_dict(),
        "status": "running",
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__},
        "platform": platform.platform(),
        "device": device,
        "threads": threads,
        "git_commit": commit,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_seconds": 0.0,
    }
    rows: list[dict] = []
    start = time.perf_counter()
    trainer = None
    try:
        data = _load(cfg.dataset, data_root, cfg.train_subset, cfg.test_subset)
        for result, trainer in train(cfg, data.train, data.test, device):
            rows.extend(result.rows)
            meta["wall_seconds"] = time.perf_counter() - start
            if result.diverged:
                meta["status"] = "diverged"
            elif result.epoch == cfg.epochs:
                meta["status"] = "finished"
            if meta["status"] != "running":
                save_weights(weights_path(run.path), {"config": cfg.to_dict(), "vae": trainer.vae.state_dict()})
            write_run(run.path, rows, meta)
            train_row, test_row = result.rows
            log(f"{label} epoch {result.epoch}/{cfg.epochs}  loss {train_row['loss']:.2f}  "
                f"test recon {test_row['recon']:.2f}  ({train_row['seconds'] + test_row['seconds']:.1f}s)")
    except Exception as exc:  # a failed run is recorded and reported, the others go on
        meta["status"] = "failed"
        meta["error"] = f"{type(exc).__name__}: {exc}"
        meta["wall_seconds"] = time.perf_counter() - start
        write_run(run.path, rows, meta)
        return cfg.run_id, "failed", meta["error"]
    return cfg.run_id, meta["status"], ""


def execute(plan: list[PlannedRun], out: Path, data_root: Path, jobs: int, device: str) -> RunSummary:
    """Train every unfinished run of the plan, ``jobs`` at a time, and report progress on stderr.

    Everything that can be checked before training is checked first (data files, device, the
    records folder), so bad input fails with nothing written.
    """
    from joblib import Parallel, delayed

    summary = RunSummary()
    todo = []
    for run in plan:
        if is_finished(run.path):
            summary.skipped.append(run.config.run_id)
        else:
            todo.append(run)
    if summary.skipped:
        log(f"{len(summary.skipped)} of {len(plan)} runs already done, skipping them")
    if not todo:
        return summary
    for name in sorted({run.config.dataset for run in todo}):
        datasets.verify(name, data_root)
    device = resolve_device(device)
    check_writable(out)
    jobs = max(1, min(jobs, len(todo)))
    threads = max(1, (os.cpu_count() or 1) // jobs) if device == "cpu" else 1
    if device == "cuda":
        # cuBLAS needs this to be deterministic; it must be set before the first CUDA call.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    commit = git_commit()
    log(f"training {len(todo)} runs with {jobs} job(s) x {threads} thread(s) on {device}")

    # Longest runs first: joblib then balances the jobs better, and the ETA weighs runs by cost.
    todo.sort(key=lambda run: relative_cost(run.config), reverse=True)
    cost = {run.config.run_id: relative_cost(run.config) for run in todo}
    total_cost, done_cost = sum(cost.values()), 0.0
    start = time.perf_counter()
    tasks = (
        delayed(run_one)(run, str(data_root), device, threads,
                         f"[{i + 1}/{len(todo)} {run.config.model} {run.config.dataset} seed={run.config.seed}]", commit)
        for i, run in enumerate(todo)
    )
    finished = 0
    for run_id, status, message in Parallel(n_jobs=jobs, return_as="generator_unordered")(tasks):
        finished += 1
        done_cost += cost[run_id]
        if status == "failed":
            summary.failed.append(f"{run_id}: {message}")
            log(f"run {run_id} failed: {message}")
        else:
            (summary.diverged if status == "diverged" else summary.done).append(run_id)
        elapsed = time.perf_counter() - start
        eta = elapsed / done_cost * (total_cost - done_cost)
        log(f"{finished}/{len(todo)} runs trained, {_clock(elapsed)} elapsed, ETA {_clock(eta)}")
    return summary


def relative_cost(config) -> float:
    """Training images times a per-image cost: a discriminator makes an update about 4x dearer on
    CPU and 2.5x on GPU (BENCHMARKS.md). A full split is counted as 60,000 images."""
    per_image = 4.0 if config.gamma != 0 else 1.0
    return config.epochs * (config.train_subset or 60_000) * per_image


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
