"""One task of a plan, in the worker process that trains it: a stack of runs from locks to records.

The steps (docs/operations.md): claim every run's lock, leaving out runs another process holds or
that finished meanwhile; build the stack and resume it from its checkpoint; after every epoch
publish the checkpoint, then the records, so a kill at any moment loses at most the epochs since
the last checkpoint; on finishing, score the runs that have known factors, save their weights and
delete the checkpoint; on failure record the runs as failed, so the other tasks go on.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import os
import platform
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from bench.data import datasets
from bench.errors import BenchError
from bench.plan import PlannedRun
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
    weights_path,
    write_metrics,
    write_run,
)
from bench.run.locks import RunLock, describe
from bench.run.stacks import stack_id
from bench.train.placement import Placement


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


@dataclass(frozen=True)
class StackTask:
    """One task as it travels to a worker process: what to train, how, and where to publish it."""

    runs: tuple[PlannedRun, ...]
    labels: tuple[str, ...]
    out: str
    data_root: str
    placement: Placement
    resume: bool
    keep: bool
    commit: str | None
    checkpoint_every: int = 1
    resuming: bool = False  # the stack has a checkpoint: its runs stay together, finished ones too


@functools.lru_cache(maxsize=4)
def _load(name: str, root: str, train_subset: int, test_subset: int):
    # Cached per worker process: loky reuses workers, so each loads a dataset once.
    return datasets.load(name, Path(root), (train_subset or None, test_subset or None))


@contextlib.contextmanager
def writing(out: str):
    """Publishing into the records folder: an OSError there (a full disk) stops the whole plan, checkpoints intact."""
    try:
        yield
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise StorageError(f"cannot write to {out}{where}: {exc.strerror or exc}; free space or choose another --out, "
                           "then run the same command again to resume") from None


def run_task(task: StackTask) -> list[tuple[str, str, str]]:
    """Train a task in this process (what each backend calls): ``(run_id, status, message)`` per run."""
    return StackJob(task).run()


class StackJob:
    """A task's runs trained as one stack, resumed from its checkpoint, published every epoch.

    :meth:`run` never raises for a failed stack, so the other tasks go on, but a records folder
    that cannot be written (:class:`StorageError`) stops the whole plan. A run that diverges is
    recorded as such and left out of the rest; its stack goes on.
    """

    def __init__(self, task: StackTask):
        self.task = task
        self.locks: list[RunLock] = []
        self.runs: list[PlannedRun] = []  # the runs this job trains, once claimed
        self._name_checkpoint(task.runs)

    def _name_checkpoint(self, runs) -> None:
        """The checkpoint and its membership index belong to the very runs that train together."""
        name = stack_id([run.config.run_id for run in runs], self.task.placement.stacked)
        folder = checkpoint_dir(Path(self.task.out))
        self.checkpoint, self.members = folder / f"{name}.pt", folder / f"{name}.json"

    def run(self) -> list[tuple[str, str, str]]:
        """Claim the runs, train them to their last epoch, release them: ``(run_id, status, message)`` per run."""
        results = self.claim()
        try:
            return results + (self.train() if self.runs else [])
        finally:
            self.release()

    def claim(self) -> list[tuple[str, str, str]]:
        """Take every run's lock; return the runs left out as ``busy`` or ``skipped``.

        A checkpoint belongs to its exact stack, so a resumed stack keeps a member that has since
        diverged (it rides along unpublished); it is skipped only when every member is done.
        """
        task, left_out = self.task, []
        all_done = task.resuming and all(is_finished(run.path) for run in task.runs)
        for run in task.runs:
            lock = RunLock(Path(task.out), run.config.run_id)
            if not lock.acquire():
                left_out.append((run.config.run_id, "busy", lock.holder))
            elif is_finished(run.path) and (all_done or not task.resuming):
                lock.release()
                left_out.append((run.config.run_id, "skipped", "finished by another process"))
            else:
                if lock.taken_over:
                    log(f"{run.config.run_id}: took over the lock left by {describe(lock.taken_over)}, no longer running")
                self.locks.append(lock)
                self.runs.append(run)
        if self.runs and len(self.runs) < len(task.runs):
            self._name_checkpoint(self.runs)
        return left_out

    def release(self) -> None:
        for lock in self.locks:
            lock.release()
        self.locks = []

    def train(self) -> list[tuple[str, str, str]]:
        """Train the claimed runs to their last epoch, or until every one has diverged."""
        self.prepare()
        try:
            epoch = self.open()
            while self.live and epoch < self.runs[0].config.epochs:
                epoch = self.advance(epoch)
            self.finish()
        except StorageError:
            raise
        except Exception as exc:  # failed runs are recorded and reported, the other stacks go on
            self.fail(exc)
        return [(run.config.run_id, meta["status"], meta.get("error", "")) for run, meta in zip(self.runs, self.metas)]

    def prepare(self) -> None:
        """Settle the placement on this machine and start the claimed runs' records."""
        from bench.train.placement import configure_process

        task, runs = self.task, self.runs
        # Settled here, on the hardware that trains: a cluster's worker resolves "auto" on its own GPU or CPU.
        self.placement = task.placement.here()
        configure_process(self.placement)
        self.labels = [task.labels[task.runs.index(run)] for run in runs]
        self.metas = [self._meta(run) for run in runs]
        self.rows: list[list[dict]] = [[] for _ in runs]
        self.live = list(range(len(runs)))
        self.base_seconds = [0.0] * len(runs)
        self.start = time.perf_counter()

    def open(self) -> int:
        """Build the claimed runs' stack, from its checkpoint where there is one; the epoch it starts after."""
        from bench.train.stacks import make_stack

        task, first = self.task, self.runs[0].config
        data = _load(first.dataset, task.data_root, first.train_subset, first.test_subset)
        self.stack = make_stack([run.config for run in self.runs], data.train, data.test, self.placement)
        self.truth = datasets.ground_truth(first.dataset, Path(task.data_root))
        return self.resume() if task.resume and self.checkpoint.exists() else self.begin()

    def begin(self) -> int:
        """A fresh start: publish the stack's membership beside the checkpoint it will write."""
        body = json.dumps({"runs": [run.config.run_id for run in self.runs], "stacked": self.task.placement.stacked})
        with writing(self.task.out):
            publish_atomic(self.members, lambda tmp: Path(tmp).write_text(body))
        return 0

    def resume(self) -> int:
        """Load the checkpoint; return the epoch it was taken after. Records one epoch behind are republished."""
        state = load_checkpoint(self.checkpoint)
        self.stack.load_state_dict(state["trainer"])
        epoch, self.rows, self.live = state["epoch"], state["rows"], state["live"]
        for k, saved in enumerate(state["metas"]):
            self.metas[k] = {**saved, "threads": self.placement.threads, "device": self.placement.device,
                             "host": socket.gethostname(), "pid": os.getpid(),
                             "resumed_at_epochs": saved.get("resumed_at_epochs", []) + [epoch]}
            self.base_seconds[k] = saved["wall_seconds"]
        log(f"{self.labels[0]}{' and its stack' if len(self.runs) > 1 else ''}: resuming after epoch {epoch} "
            f"from {self.checkpoint}")
        for k, run in enumerate(self.runs):  # a kill between checkpoint and record leaves the record one epoch behind
            if not run.path.exists() or pq.read_metadata(run.path).num_rows != len(self.rows[k]):
                self.publish(k)
        return epoch

    def advance(self, epoch: int) -> int:
        """Train one epoch of every live run, checkpoint (every ``checkpoint_every``-th), publish; the new epoch."""
        results = self.stack.run_epoch()
        epoch += 1
        epochs, changed = self.runs[0].config.epochs, list(self.live)
        for k in changed:
            result, meta = results[k], self.metas[k]
            self.rows[k].extend(result.rows)
            meta["wall_seconds"] = self.base_seconds[k] + time.perf_counter() - self.start
            if result.diverged:
                meta["status"], meta["diverged_epoch"] = "diverged", result.epoch
                self.live.remove(k)
            elif result.epoch == epochs:
                meta["status"] = "finished"
        if epoch % self.task.checkpoint_every == 0 or not self.live or epoch == epochs:
            self.save(epoch)
        for k in changed:
            self.publish(k)
            train_row, test_row = results[k].rows
            log(f"{self.labels[k]} epoch {results[k].epoch}/{epochs}  loss {train_row['loss']:.2f}  "
                f"test recon {test_row['recon']:.2f}  ({train_row['seconds'] + test_row['seconds']:.1f}s)")
        return epoch

    def save(self, epoch: int) -> None:
        with writing(self.task.out):
            save_checkpoint(self.checkpoint, {"run_ids": [run.config.run_id for run in self.runs], "epoch": epoch,
                                              "trainer": self.stack.state_dict(), "rows": self.rows,
                                              "metas": self.metas, "live": self.live})

    def publish(self, k: int) -> None:
        """Write run ``k``'s record; once it has ended, its weights first (and its scores, where it has factors)."""
        run, meta = self.runs[k], self.metas[k]
        scores = None
        if self.truth is not None and meta["status"] == "finished":
            # A finished run is scored before its record says so: "finished" implies its scores exist.
            from bench.eval.scores import metric_rows

            scores = metric_rows(run.config, self.stack.runs[k].vae, self.truth, run.profile)
        with writing(self.task.out):
            if scores is not None:
                write_metrics(metrics_path(run.path), scores)
            if meta["status"] != "running":
                save_weights(weights_path(run.path), {"config": run.config.to_dict(),
                                                      "vae": self.stack.runs[k].vae.state_dict()})
            write_run(run.path, self.rows[k], meta)

    def finish(self) -> None:
        """Every run has ended: the checkpoint goes, unless the task keeps it."""
        if not self.task.keep:
            with writing(self.task.out):
                self.checkpoint.unlink(missing_ok=True)
                self.members.unlink(missing_ok=True)

    def fail(self, exc: Exception) -> None:
        """Record every live, running run as failed with the error's one line."""
        for k in (k for k in self.live if self.metas[k]["status"] == "running"):
            meta = self.metas[k]
            meta["status"], meta["error"] = "failed", f"{type(exc).__name__}: {exc}"
            meta["wall_seconds"] = self.base_seconds[k] + time.perf_counter() - self.start
            with writing(self.task.out):
                write_run(self.runs[k].path, self.rows[k], meta)

    def _meta(self, run: PlannedRun) -> dict:
        import torch

        from bench.perf.speed import cpu_name

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
            "cpu": cpu_name(),  # the same commit and seed give other bits on another CPU model
            # ... or under other kernels: one model name covers AVX2 and AVX512 machines, ATEN_CPU_CAPABILITY moves it
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "host": socket.gethostname(),
            "pid": os.getpid(),  # with the host, which process trained the run (a cluster's worker, say)
            "device": self.placement.device,
            "threads": self.placement.threads,
            "stack_size": len(self.runs),
            "cuda_graphs": bool(self.placement.cuda_graphs),
            "git_commit": self.task.commit,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "wall_seconds": 0.0,
        }
