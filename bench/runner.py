"""Run a plan: skip what is finished, train the rest with joblib, publish records every epoch."""

from __future__ import annotations

import functools
import importlib.metadata
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


def _meta(run: PlannedRun, device: str, threads: int, commit: str | None, stack_size: int, cuda_graphs: bool) -> dict:
    import torch

    return {
        "run_id": run.config.run_id,
        "profile": run.profile,
        "config": run.config.to_dict(),
        "status": "running",
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     # read from the package metadata: importing torchvision costs a second of startup
                     "torchvision": importlib.metadata.version("torchvision")},
        "platform": platform.platform(),
        "device": device,
        "threads": threads,
        "stack_size": stack_size,
        "cuda_graphs": cuda_graphs,
        "git_commit": commit,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_seconds": 0.0,
    }


def run_stack(runs: list[PlannedRun], data_root: str, device: str, threads: int, labels: list[str], commit: str | None,
              stacked: bool = True, cuda_graphs: bool | None = None) -> list[tuple[str, str, str]]:
    """Train runs in this process, as one stack or (one run, ``stacked=False``) alone; publish every epoch.

    ``cuda_graphs`` (stacks only): replay each update as a CUDA graph; None means on a GPU only.

    Returns ``(run_id, status, message)`` per run; never raises, so one failed stack does not stop the others.
    A run that diverges is recorded as such and left out of the rest; its stack goes on.
    """
    import torch

    from .engine import Trainer
    from .stacked import StackedTrainer

    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    graphs = stacked and (device == "cuda" if cuda_graphs is None else cuda_graphs)
    metas = [_meta(run, device, threads, commit, len(runs), graphs) for run in runs]
    rows: list[list[dict]] = [[] for _ in runs]
    live = list(range(len(runs)))
    start = time.perf_counter()
    first = runs[0].config
    try:
        data = _load(first.dataset, data_root, first.train_subset, first.test_subset)
        configs = [run.config for run in runs]
        if stacked:
            trainer = StackedTrainer(configs, data.train, data.test, device, graphs)
            members, next_epoch = trainer.runs, trainer.run_epoch
        else:
            if len(runs) != 1:
                raise ValueError("unstacked training takes one run at a time")
            solo = Trainer(configs[0], data.train, data.test, device)
            members, next_epoch = [solo], lambda: [solo.run_epoch()]
        for _ in range(first.epochs):
            results = next_epoch()
            for k in list(live):
                result, meta, run = results[k], metas[k], runs[k]
                rows[k].extend(result.rows)
                meta["wall_seconds"] = time.perf_counter() - start
                if result.diverged:
                    meta["status"] = "diverged"
                    live.remove(k)
                elif result.epoch == first.epochs:
                    meta["status"] = "finished"
                if meta["status"] != "running":
                    save_weights(weights_path(run.path), {"config": run.config.to_dict(), "vae": members[k].vae.state_dict()})
                write_run(run.path, rows[k], meta)
                train_row, test_row = result.rows
                log(f"{labels[k]} epoch {result.epoch}/{first.epochs}  loss {train_row['loss']:.2f}  "
                    f"test recon {test_row['recon']:.2f}  ({train_row['seconds'] + test_row['seconds']:.1f}s)")
            if not live:
                break
    except Exception as exc:  # failed runs are recorded and reported, the other stacks go on
        for k in (k for k in live if metas[k]["status"] == "running"):
            metas[k]["status"] = "failed"
            metas[k]["error"] = f"{type(exc).__name__}: {exc}"
            metas[k]["wall_seconds"] = time.perf_counter() - start
            write_run(runs[k].path, rows[k], metas[k])
    return [(run.config.run_id, meta["status"], meta.get("error", "")) for run, meta in zip(runs, metas)]


def make_stacks(todo: list[PlannedRun], jobs: int, device: str, stack: bool = True) -> list[list[PlannedRun]]:
    """The runs grouped into what each task trains at once.

    Without stacking every run is its own task. With it, runs that can share a stack
    (:func:`bench.stacked.stack_key`) are grouped; on a GPU a group is one stack, on the CPU
    it is split into ``jobs`` stacks of near-equal size so that every job has work.
    """
    from .stacked import stack_key

    if not stack:
        return [[run] for run in todo]
    groups: dict[tuple, list[PlannedRun]] = {}
    for run in todo:
        groups.setdefault(stack_key(run.config), []).append(run)
    stacks = []
    for runs in groups.values():
        parts = 1 if device == "cuda" else min(jobs, len(runs))
        size, extra = divmod(len(runs), parts)
        start = 0
        for part in range(parts):
            end = start + size + (part < extra)
            stacks.append(runs[start:end])
            start = end
    return stacks


def execute(plan: list[PlannedRun], out: Path, data_root: Path, jobs: int, device: str, stack: bool = True,
            cuda_graphs: bool | None = None) -> RunSummary:
    """Train every unfinished run of the plan, ``jobs`` tasks at a time, and report progress on stderr.

    A task is one stack of runs trained as one program (see :func:`make_stacks`), or one run
    with ``stack=False``. Everything that can be checked before training is checked first (data
    files, device, the records folder), so bad input fails with nothing written.
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
    if cuda_graphs and (device != "cuda" or not stack):
        raise BenchError("--cuda-graphs needs --device cuda and stacking")
    check_writable(out)
    stacks = make_stacks(todo, max(1, jobs), device, stack)
    jobs = max(1, min(jobs, len(stacks)))
    threads = max(1, (os.cpu_count() or 1) // jobs) if device == "cpu" else 1
    if device == "cuda":
        # cuBLAS needs this to be deterministic; it must be set before the first CUDA call.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    commit = git_commit()
    sizes = "/".join(str(len(s)) for s in stacks) if stack else "1 each"
    log(f"training {len(todo)} runs as {len(stacks)} {'stacks' if stack else 'tasks'} (runs per task: {sizes}) "
        f"with {jobs} job(s) x {threads} thread(s) on {device}")

    # Dearest tasks first: joblib then balances the jobs better, and the ETA weighs runs by cost.
    cost = {run.config.run_id: relative_cost(run.config) for run in todo}
    stacks.sort(key=lambda runs: sum(cost[r.config.run_id] for r in runs), reverse=True)
    total_cost, done_cost = sum(cost.values()), 0.0
    start = time.perf_counter()
    index = {run.config.run_id: i + 1 for i, run in enumerate(r for runs in stacks for r in runs)}
    tasks = (
        delayed(run_stack)(runs, str(data_root), device, threads,
                           [f"[{index[r.config.run_id]}/{len(todo)} {r.config.model} {r.config.dataset} seed={r.config.seed}]"
                            for r in runs], commit, stack, cuda_graphs)
        for runs in stacks
    )
    finished = 0
    for results in Parallel(n_jobs=jobs, return_as="generator_unordered")(tasks):
        for run_id, status, message in results:
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
