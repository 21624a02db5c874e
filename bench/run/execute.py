"""Run a plan: check everything first, skip what is finished, hand the rest as tasks to joblib or Dask."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.data import datasets
from bench.errors import BenchError
from bench.plan import PlannedRun, check_fits_data
from bench.records import checkpoint_dir, metrics_path, read_meta, verify_checkpoint, weights_path
from bench.run.job import StackTask, is_finished, log, run_task
from bench.run.locks import lock_dir, lock_path, read_holder
from bench.run.stacks import make_stacks, order_stacks, placement, relative_cost, stack_id
from bench.train.placement import resolve_device
from bench.writable import check_files, check_folders


@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "run_id: reason"
    diverged: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # held by another bench run, left to it


def check_writable(out: Path, todo: list[PlannedRun]) -> None:
    """Fail before any training where the plan would write a path it cannot.

    The paths are the records folder with its ``_locks/`` and ``_checkpoints/``, each run's folder with
    its ``_weights/`` (and ``_metrics/`` where its dataset has known factors), and every file there that
    a run would replace: its record, weights, scores and lock file. The checkpoints are checked once the
    stacks are known (:func:`execute`).
    """
    folders, files = {Path(out), lock_dir(out), checkpoint_dir(out)}, set()
    for run in todo:
        outputs = [run.path, weights_path(run.path)]
        if datasets.DATASETS[run.config.dataset].ground_truth is not None:
            outputs.append(metrics_path(run.path))
        folders.update(path.parent for path in outputs)
        files.update([*outputs, lock_path(out, run.config.run_id)])
    check_folders(folders, "choose another --out")
    check_files(files, "choose another --out")


def git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


@dataclass(frozen=True)
class RunOptions:
    """How a plan is trained; everything here leaves the numbers alone except ``threads`` and the device."""

    jobs: int = 1  # tasks at once (a task is a stack, or one run with stack=False)
    device: str = "auto"
    stack: bool = True
    cuda_graphs: bool | None = None  # None: on with a GPU
    threads: int | None = None  # torch threads per task; None: the cores shared out over the jobs (1 on a GPU)
    fresh: bool = False  # ignore checkpoints and train from the start
    keep: bool = False  # keep the checkpoints of finished stacks
    checkpoint_every: int = 1  # epochs between checkpoints; a kill loses at most this many
    cpu_stack: int | None = None  # the most runs in one CPU stack; None: as many as CPU_STACK_BYTES holds
    order: str = "dearest"  # bench.run.stacks.ORDERS: which tasks train first
    backend: str = "local"  # "local" (joblib's processes) or "dask"
    scheduler: str | None = None  # the Dask scheduler's address, with backend="dask"
    resources: str | None = None  # a Dask resource each task needs, e.g. "GPU=1"


def _membership(path: Path) -> dict:
    try:
        members = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(members.get("runs"), list) or not isinstance(members.get("stacked"), bool):
            raise ValueError
    except (OSError, ValueError, AttributeError):
        raise BenchError(f"{path} is not a bench checkpoint index; delete it and its .pt, or pass --fresh") from None
    return members


def resumable_stacks(out: Path, plan: list[PlannedRun], todo: list[PlannedRun], stacked: bool) -> list[list[PlannedRun]]:
    """The stacks with a checkpoint that hold runs of ``todo``, each with the runs it was started with, in order.

    A checkpoint is used only by the very stack that wrote it (the same runs, stacked or not):
    that is what makes a resumed run's records equal an uninterrupted run's bit for bit. So a
    stack comes back whole, with any member that has diverged since; its members must all be
    in the plan.
    """
    folder = checkpoint_dir(out)
    if not folder.is_dir():
        return []
    by_id = {run.config.run_id: run for run in plan}
    unfinished = {run.config.run_id for run in todo}
    stacks = []
    for index in sorted(folder.glob("*.json")):
        members = _membership(index)
        ids = members["runs"]
        if (members["stacked"] != stacked or not ids or any(i not in by_id for i in ids)
                or not unfinished.intersection(ids)):
            continue
        if stack_id(ids, stacked) != index.stem:
            raise BenchError(f"{index} does not match its runs; delete it and its .pt, or pass --fresh")
        checkpoint = index.with_suffix(".pt")
        if checkpoint.exists():
            verify_checkpoint(checkpoint)
        stacks.append([by_id.pop(i) for i in ids])
    return stacks


def execute(plan: list[PlannedRun], out: Path, data_root: Path, options: RunOptions = RunOptions()) -> RunSummary:
    """Train every unfinished run of the plan, ``options.jobs`` tasks at a time, and report progress on stderr.

    A task is one stack of runs trained as one program (see :func:`make_stacks`), or one run
    with ``stack=False``. Everything that can be checked before training is checked first (data
    files, each run's batch against the training images it meets, device, every folder and file
    the plan writes (:func:`check_writable`), checkpoints and lock files, the cluster), so bad
    input fails with nothing written. More busy threads than cores get a warning line.
    """
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
    full = {name: datasets.verify(name, data_root) for name in sorted({run.config.dataset for run in todo})}
    for run in todo:
        config = run.config
        n_train, _ = datasets.subset_sizes(config.dataset, full[config.dataset],
                                           (config.train_subset or None, config.test_subset or None))
        check_fits_data(config, n_train)
    local = options.backend == "local"
    # On a cluster the workers' devices count, not this process's: each worker resolves its own.
    device = resolve_device(options.device) if local else options.device
    if options.cuda_graphs and (device != "cuda" or not options.stack):
        raise BenchError("--cuda-graphs needs --device cuda and stacking")
    client = None
    if not local:
        from bench.run.cluster import connect, parse_resources

        parse_resources(options.resources)
        client = connect(options.scheduler)
    check_writable(out, todo)
    for run in todo:
        if run.path.exists():
            read_meta(run.path)  # a record we cannot read, or of another version, is never overwritten
        read_holder(lock_path(out, run.config.run_id))  # a lock file that is not ours stops here
    if options.fresh:
        resumed = []
    else:
        resumed = resumable_stacks(out, plan, todo, options.stack)

    def threads_per_job(jobs: int) -> int:
        if options.threads is not None:
            return options.threads
        # A cluster's worker runs one task per thread slot, so one torch thread each.
        return max(1, (os.cpu_count() or 1) // jobs) if device == "cpu" and local else 1

    stacks = make_stacks(todo, max(1, options.jobs), device, options.stack, resumed, threads_per_job(max(1, options.jobs)),
                         options.cpu_stack)
    # Each stack writes its checkpoint and index under a name of its own, and deletes them once it finishes.
    check_files([checkpoint_dir(out) / f"{stack_id([r.config.run_id for r in runs], options.stack)}{suffix}"
                 for runs in stacks for suffix in (".pt", ".json")], "choose another --out")
    jobs = max(1, min(options.jobs, len(stacks)))
    threads = threads_per_job(jobs)
    cores = os.cpu_count() or 1
    if local and device == "cpu" and jobs * threads > cores:
        # Busy torch threads beyond the cores wait on one another: --jobs 2 --threads 2 ran 30x slower on 2 cores.
        log(f"warning: {jobs} job(s) x {threads} thread(s) keep {jobs * threads} threads busy on {cores} cores, which "
            f"can make training many times slower; choose --jobs and --threads whose product is at most {cores}")
    commit = git_commit()
    sizes = "/".join(str(len(s)) for s in stacks) if options.stack else "1 each"
    where = "here" if local else f"on the Dask cluster at {options.scheduler}"
    log(f"training {len(todo)} runs as {len(stacks)} {'stacks' if options.stack else 'tasks'} (runs per task: {sizes}) "
        f"with {jobs} job(s) x {threads} thread(s) on {device}, {where}"
        + (f"; {len(resumed)} resume from a checkpoint" if resumed else ""))

    cost = {run.config.run_id: relative_cost(run.config) for run in todo}  # the ETA weighs runs by it too
    stacks = order_stacks(stacks, cost, options.order)
    total_cost, done_cost = sum(cost.values()), 0.0
    index = {run.config.run_id: i + 1 for i, run in enumerate(r for runs in stacks for r in runs)}
    resumed_ids = {tuple(r.config.run_id for r in runs) for runs in resumed}
    # Absolute paths: a cluster's workers need not share this process's working directory.
    tasks = [
        StackTask(tuple(dataclasses.replace(r, path=r.path.resolve()) for r in runs),
                  tuple(f"[{index[r.config.run_id]}/{len(todo)} {r.config.model} {r.config.dataset} seed={r.config.seed}]"
                        for r in runs),
                  str(Path(out).resolve()), str(Path(data_root).resolve()),
                  placement(device, threads, len(runs), options.stack, options.cuda_graphs),
                  not options.fresh, options.keep, commit, options.checkpoint_every,
                  resuming=tuple(r.config.run_id for r in runs) in resumed_ids)
        for runs in stacks
    ]
    start = time.perf_counter()
    finished = 0
    for results in _parallel(tasks, jobs, options, client):
        for run_id, status, message in results:
            if run_id not in cost:  # a finished member riding along in its resumed stack
                continue
            finished += 1
            done_cost += cost.get(run_id, 0.0)
            if status == "failed":
                summary.failed.append(f"{run_id}: {message}")
                log(f"run {run_id} failed: {message}")
            elif status == "busy":
                summary.busy.append(run_id)
                log(f"run {run_id} is being trained by {message}; left to it")
            elif status == "skipped":
                summary.skipped.append(run_id)
            else:
                (summary.diverged if status == "diverged" else summary.done).append(run_id)
        elapsed = time.perf_counter() - start
        eta = elapsed / done_cost * (total_cost - done_cost) if done_cost else math.nan
        log(f"{finished}/{len(todo)} runs trained, {_clock(elapsed)} elapsed, ETA {_clock(eta)}")
    return summary


def _parallel(tasks: list[StackTask], jobs: int, options: RunOptions, client):
    """Each task's results as it finishes: joblib's processes here, or the Dask cluster's workers."""
    from joblib import Parallel, delayed

    if client is None:
        return Parallel(n_jobs=jobs, return_as="generator_unordered")(delayed(run_task)(t) for t in tasks)
    from bench.run.cluster import on_dask

    return on_dask(client, run_task, tasks, options.resources)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
