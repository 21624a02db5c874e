"""Run a plan: skip what is finished, train the rest with joblib, publish records every epoch."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from bench.data import datasets
from bench.errors import BenchError
from bench.plan import PlannedRun, check_fits_data
from bench.records import (
    RECORD_FORMAT,
    RecordError,
    checkpoint_dir,
    load_checkpoint,
    metrics_path,
    publish_atomic,
    read_meta,
    save_checkpoint,
    save_weights,
    verify_checkpoint,
    weights_path,
    write_metrics,
    write_run,
)
from bench.run.locks import RunLock, describe, lock_dir, lock_path, read_holder
from bench.writable import check_files, check_folders


@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "run_id: reason"
    diverged: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # held by another bench run, left to it


class StorageError(BenchError):
    """The records folder could not be written (a full disk, say): the plan stops, checkpoints intact."""


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
    backend: str = "local"  # "local" (joblib's processes) or "dask"
    scheduler: str | None = None  # the Dask scheduler's address, with backend="dask"
    resources: str | None = None  # a Dask resource each task needs, e.g. "GPU=1"


@dataclass(frozen=True)
class StackTask:
    """One task as it travels to a worker process: what to train and where to publish it."""

    runs: tuple[PlannedRun, ...]
    labels: tuple[str, ...]
    out: str
    data_root: str
    device: str
    threads: int
    stacked: bool
    cuda_graphs: bool
    resume: bool
    keep: bool
    commit: str | None
    checkpoint_every: int = 1
    resuming: bool = False  # the stack has a checkpoint: its runs stay together, finished ones too


def stack_id(run_ids, stacked: bool) -> str:
    """The name of a stack's checkpoint: its runs in order, and whether they train as a stack."""
    text = ("stack:" if stacked else "solo:") + ",".join(run_ids)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _meta(run: PlannedRun, device: str, threads: int, commit: str | None, stack_size: int, cuda_graphs: bool) -> dict:
    import torch

    return {
        "format": RECORD_FORMAT,
        "run_id": run.config.run_id,
        "profile": run.profile,
        "config": run.config.to_dict(),
        "status": "running",
        "versions": {"python": platform.python_version(), "torch": str(torch.__version__),
                     # read from the package metadata: importing torchvision costs a second of startup
                     "torchvision": importlib.metadata.version("torchvision")},
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "pid": os.getpid(),  # with the host, which process trained the run (a cluster's worker, say)
        "device": device,
        "threads": threads,
        "stack_size": stack_size,
        "cuda_graphs": cuda_graphs,
        "git_commit": commit,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_seconds": 0.0,
    }


def run_stack(task: StackTask) -> list[tuple[str, str, str]]:
    """Train a task's runs in this process, as one stack or (one run) alone, resuming from its checkpoint.

    Takes every run's lock first; runs that another process holds, or that finished meanwhile,
    are left out (status "busy" or "skipped"). At every epoch end (every ``checkpoint_every``-th)
    the stack's checkpoint is published, then the records, so a kill at any moment loses at most
    the epochs since the last checkpoint.
    Returns ``(run_id, status, message)`` per run; never raises for a failed stack, so the others
    go on, but a records folder that cannot be written (a full disk) stops the whole plan.
    A run that diverges is recorded as such and left out of the rest; its stack goes on.
    """
    locks, mine = [], []
    results = []
    # A checkpoint belongs to its exact stack, so a resumed stack keeps a member that has since
    # diverged (it rides along unpublished); it is skipped only when every member is done.
    all_done = task.resuming and all(is_finished(run.path) for run in task.runs)
    try:
        for run in task.runs:
            lock = RunLock(Path(task.out), run.config.run_id)
            if not lock.acquire():
                results.append((run.config.run_id, "busy", lock.holder))
            elif is_finished(run.path) and (all_done or not task.resuming):
                lock.release()
                results.append((run.config.run_id, "skipped", "finished by another process"))
            else:
                if lock.taken_over:
                    log(f"{run.config.run_id}: took over the lock left by {describe(lock.taken_over)}, no longer running")
                locks.append(lock)
                mine.append(run)
        if not mine:
            return results
        labels = [task.labels[task.runs.index(run)] for run in mine]
        return results + _train(task, mine, labels)
    finally:
        for lock in locks:
            lock.release()


def _train(task: StackTask, runs: list[PlannedRun], labels: list[str]) -> list[tuple[str, str, str]]:
    import torch

    from bench.train.malloc import keep_freed_memory
    from bench.train.optim import deterministic_algorithms
    from bench.train.stacks import StackedTrainer, cpu_workers
    from bench.train.trainer import Trainer

    # Resolved already for local jobs; a cluster's worker resolves "auto", or checks "cuda", on its own hardware.
    device = resolve_device(task.device)
    task = dataclasses.replace(task, device=device, cuda_graphs=task.cuda_graphs and device == "cuda")
    # A lockstep stack trains runs side by side, each on its share of the task's threads; a run's
    # record names the threads its own arithmetic used, which is what its bits depend on.
    workers, threads = cpu_workers(len(runs), task.threads) if task.stacked and device == "cpu" else (1, task.threads)
    torch.set_num_threads(threads)
    deterministic_algorithms(True, warn_only=True)
    keep_freed_memory()
    run_ids = [run.config.run_id for run in runs]
    name = stack_id(run_ids, task.stacked)
    folder = checkpoint_dir(Path(task.out))
    checkpoint, members = folder / f"{name}.pt", folder / f"{name}.json"
    metas = [_meta(run, task.device, threads, task.commit, len(runs), task.cuda_graphs) for run in runs]
    rows: list[list[dict]] = [[] for _ in runs]
    live = list(range(len(runs)))
    start = time.perf_counter()
    base_seconds = [0.0] * len(runs)
    first = runs[0].config
    try:
        data = _load(first.dataset, task.data_root, first.train_subset, first.test_subset)
        configs = [run.config for run in runs]
        if task.stacked:
            trainer = StackedTrainer(configs, data.train, data.test, task.device, task.cuda_graphs, workers=workers)
            members_of, next_epoch = trainer.runs, trainer.run_epoch
        else:
            if len(runs) != 1:
                raise ValueError("unstacked training takes one run at a time")
            trainer = Trainer(configs[0], data.train, data.test, task.device)
            members_of, next_epoch = [trainer], lambda: [trainer.run_epoch()]

        truth = datasets.ground_truth(first.dataset, Path(task.data_root))
        if truth is not None:  # the metrics are loaded only where there is something to score
            from bench.eval.scores import metric_rows

        def publish(k: int) -> None:
            # A finished run is scored before its record says so: "finished" implies its scores exist.
            scores = (metric_rows(runs[k].config, members_of[k].vae, truth, runs[k].profile)
                      if truth is not None and metas[k]["status"] == "finished" else None)
            with _writing(task.out):
                if scores is not None:
                    write_metrics(metrics_path(runs[k].path), scores)
                if metas[k]["status"] != "running":
                    save_weights(weights_path(runs[k].path),
                                 {"config": runs[k].config.to_dict(), "vae": members_of[k].vae.state_dict()})
                write_run(runs[k].path, rows[k], metas[k])

        epoch = 0
        if task.resume and checkpoint.exists():
            state = load_checkpoint(checkpoint)
            trainer.load_state_dict(state["trainer"])
            epoch, rows, live = state["epoch"], state["rows"], state["live"]
            for k, saved in enumerate(state["metas"]):
                metas[k] = {**saved, "threads": threads, "device": task.device, "host": socket.gethostname(),
                            "pid": os.getpid(), "resumed_at_epochs": saved.get("resumed_at_epochs", []) + [epoch]}
                base_seconds[k] = saved["wall_seconds"]
            log(f"{labels[0]}{' and its stack' if len(runs) > 1 else ''}: resuming after epoch {epoch} from {checkpoint}")
            for k in range(len(runs)):  # a kill between checkpoint and record leaves the record one epoch behind
                if not runs[k].path.exists() or pq.read_metadata(runs[k].path).num_rows != len(rows[k]):
                    publish(k)
        else:
            with _writing(task.out):
                publish_atomic(members, lambda tmp: Path(tmp).write_text(json.dumps({"runs": run_ids, "stacked": task.stacked})))
        while live and epoch < first.epochs:
            results = next_epoch()
            epoch += 1
            changed = list(live)
            for k in changed:
                result, meta = results[k], metas[k]
                rows[k].extend(result.rows)
                meta["wall_seconds"] = base_seconds[k] + time.perf_counter() - start
                if result.diverged:
                    meta["status"], meta["diverged_epoch"] = "diverged", result.epoch
                    live.remove(k)
                elif result.epoch == first.epochs:
                    meta["status"] = "finished"
            if epoch % task.checkpoint_every == 0 or not live or epoch == first.epochs:
                with _writing(task.out):
                        save_checkpoint(checkpoint, {"run_ids": run_ids, "epoch": epoch, "trainer": trainer.state_dict(),
                                                 "rows": rows, "metas": metas, "live": live})
            for k in changed:
                publish(k)
                train_row, test_row = results[k].rows
                log(f"{labels[k]} epoch {results[k].epoch}/{first.epochs}  loss {train_row['loss']:.2f}  "
                    f"test recon {test_row['recon']:.2f}  ({train_row['seconds'] + test_row['seconds']:.1f}s)")
        if not task.keep:
            with _writing(task.out):
                checkpoint.unlink(missing_ok=True)
                members.unlink(missing_ok=True)
    except StorageError:
        raise
    except Exception as exc:  # failed runs are recorded and reported, the other stacks go on
        for k in (k for k in live if metas[k]["status"] == "running"):
            metas[k]["status"] = "failed"
            metas[k]["error"] = f"{type(exc).__name__}: {exc}"
            metas[k]["wall_seconds"] = base_seconds[k] + time.perf_counter() - start
            with _writing(task.out):
                write_run(runs[k].path, rows[k], metas[k])
    return [(run.config.run_id, meta["status"], meta.get("error", "")) for run, meta in zip(runs, metas)]


@contextlib.contextmanager
def _writing(out: str):
    """Publishing into the records folder: an OSError there (a full disk) stops the whole plan, checkpoints intact."""
    try:
        yield
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise StorageError(f"cannot write to {out}{where}: {exc.strerror or exc}; free space or choose another --out, "
                           "then run the same command again to resume") from None


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


# The most training state (weights, gradients, Adam's buffers) one CPU stack holds. A CPU stack
# gains nothing from more runs than its threads update side by side, and smaller stacks keep the
# paper profile's largest process under 2 GB: 4 FactorVAE runs in float32 hold 432 MB.
CPU_STACK_BYTES = 512 * 2**20


def _split(runs: list, parts: int) -> list[list]:
    """``runs`` cut in order into ``parts`` pieces whose sizes differ by at most one."""
    size, extra = divmod(len(runs), parts)
    pieces, start = [], 0
    for part in range(parts):
        end = start + size + (part < extra)
        pieces.append(runs[start:end])
        start = end
    return pieces


def make_stacks(todo: list[PlannedRun], jobs: int, device: str, stack: bool = True,
                resumed: list[list[PlannedRun]] | None = None, threads: int = 1) -> list[list[PlannedRun]]:
    """The runs grouped into what each task trains at once.

    Stacks that have a checkpoint (``resumed``) come back as they were. Without stacking every
    other run is its own task. With it, runs that can share a stack
    (:func:`bench.train.stacks.stack_key`) are grouped; on a GPU a group is one stack, on the CPU
    it is split into ``jobs`` stacks of near-equal size so that every job has work, and each of
    those into stacks that hold at most :data:`CPU_STACK_BYTES` of training state, their sizes a
    multiple of the job's ``threads`` where they can be (so that every round of runs updated side
    by side is full).
    """
    from bench.train.stacks import stack_key, training_bytes

    stacks = [list(s) for s in resumed or []]
    taken = {run.config.run_id for s in stacks for run in s}
    todo = [run for run in todo if run.config.run_id not in taken]
    if not stack:
        return stacks + [[run] for run in todo]
    groups: dict[tuple, list[PlannedRun]] = {}
    for run in todo:
        groups.setdefault(stack_key(run.config), []).append(run)
    for runs in groups.values():
        if device == "cuda":
            stacks.append(runs)
            continue
        spec = datasets.DATASETS[runs[0].config.dataset]
        most = max(1, CPU_STACK_BYTES // training_bytes(runs[0].config, spec.channels, spec.image_size))
        if most >= threads:
            most -= most % threads
        for part in _split(runs, min(jobs, len(runs))):
            stacks.extend(part[start:start + most] for start in range(0, len(part), most))
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

    stacks = make_stacks(todo, max(1, options.jobs), device, options.stack, resumed, threads_per_job(max(1, options.jobs)))
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
    if device == "cuda":
        # cuBLAS needs this to be deterministic; it must be set before the first CUDA call.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    commit = git_commit()
    sizes = "/".join(str(len(s)) for s in stacks) if options.stack else "1 each"
    where = "here" if local else f"on the Dask cluster at {options.scheduler}"
    log(f"training {len(todo)} runs as {len(stacks)} {'stacks' if options.stack else 'tasks'} (runs per task: {sizes}) "
        f"with {jobs} job(s) x {threads} thread(s) on {device}, {where}"
        + (f"; {len(resumed)} resume from a checkpoint" if resumed else ""))

    # Dearest tasks first: the jobs then balance better, and the ETA weighs runs by cost.
    cost = {run.config.run_id: relative_cost(run.config) for run in todo}
    stacks.sort(key=lambda runs: sum(cost.get(r.config.run_id, 0.0) for r in runs), reverse=True)
    total_cost, done_cost = sum(cost.values()), 0.0
    index = {run.config.run_id: i + 1 for i, run in enumerate(r for runs in stacks for r in runs)}
    graphs = options.stack and (device in ("cuda", "auto") if options.cuda_graphs is None else options.cuda_graphs)
    resumed_ids = {tuple(r.config.run_id for r in runs) for runs in resumed}
    # Absolute paths: a cluster's workers need not share this process's working directory.
    tasks = [
        StackTask(tuple(dataclasses.replace(r, path=r.path.resolve()) for r in runs),
                  tuple(f"[{index[r.config.run_id]}/{len(todo)} {r.config.model} {r.config.dataset} seed={r.config.seed}]"
                        for r in runs),
                  str(Path(out).resolve()), str(Path(data_root).resolve()), device, threads, options.stack, graphs,
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
        return Parallel(n_jobs=jobs, return_as="generator_unordered")(delayed(run_stack)(t) for t in tasks)
    from bench.run.cluster import on_dask

    return on_dask(client, run_stack, tasks, options.resources)


def relative_cost(config) -> float:
    """Training images times a per-image cost: a discriminator makes an update about 4x dearer on
    CPU and 2.5x on GPU (BENCHMARKS.md). A full split is counted as 60,000 images."""
    per_image = 4.0 if config.gamma != 0 else 1.0
    return config.epochs * (config.train_subset or 60_000) * per_image


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
