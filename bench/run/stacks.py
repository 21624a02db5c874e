"""Forming stacks: which runs train together, how many a CPU stack holds, how its threads are shared.

Pure functions of the plan and the machine's counts (docs/stacking-and-speed.md says why these
choices); the per-task job (:mod:`bench.run.job`) trains what they decide.
"""

from __future__ import annotations

import hashlib

from bench.config import RunConfig, stack_key
from bench.data import datasets
from bench.train.placement import Placement

# The most training state (weights, gradients, Adam's buffers) one CPU stack holds. A CPU stack
# gains nothing from more runs than its threads update side by side, and smaller stacks keep the
# paper profile's largest process under 2 GB: 4 FactorVAE runs in float32 hold 432 MB.
CPU_STACK_BYTES = 512 * 2**20


def stack_id(run_ids, stacked: bool) -> str:
    """The name of a stack's checkpoint: its runs in order, and whether they train as a stack."""
    text = ("stack:" if stacked else "solo:") + ",".join(run_ids)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def training_bytes(config: RunConfig, channels: int, image_size: int) -> int:
    """Bytes of one run's training state: per parameter its weight, gradient and Adam's three buffers
    (two moments and the denominator, :class:`bench.train.optim.Adam`)."""
    import torch

    from bench.train.trainer import make_nets

    with torch.device("meta"):  # shapes only, nothing allocated
        nets = [net for net in make_nets(config, channels, image_size) if net is not None]
    return 5 * sum(p.numel() for net in nets for p in net.parameters()) * getattr(torch, config.dtype).itemsize


def cpu_workers(runs: int, threads: int) -> tuple[int, int]:
    """How a lockstep stack of ``runs`` shares ``threads`` cores: runs trained at once, torch threads for each.

    One thread per run while there are more runs than threads: these small networks keep two
    cores busier as two runs on one thread each than as one run on two. Never more busy threads
    than ``threads``.
    """
    workers = max(1, min(runs, threads))
    return workers, max(1, threads // workers)


def placement(device: str, threads: int, runs: int, stacked: bool, cuda_graphs: bool | None) -> Placement:
    """How a task of ``runs`` runs trains on ``threads`` threads of ``device`` (``auto`` is settled on arrival)."""
    workers, each = cpu_workers(runs, threads) if device == "cpu" else (1, threads)
    return Placement(device, each, workers, stacked, cuda_graphs)


def _split(runs: list, parts: int) -> list[list]:
    """``runs`` cut in order into ``parts`` pieces whose sizes differ by at most one."""
    size, extra = divmod(len(runs), parts)
    pieces, start = [], 0
    for part in range(parts):
        end = start + size + (part < extra)
        pieces.append(runs[start:end])
        start = end
    return pieces


def make_stacks(todo: list, jobs: int, device: str, stack: bool = True, resumed: list[list] | None = None,
                threads: int = 1, cpu_stack: int | None = None) -> list[list]:
    """The planned runs grouped into what each task trains at once.

    Stacks that have a checkpoint (``resumed``) come back as they were. Without stacking every
    other run is its own task. With it, runs that can share a stack (:func:`bench.config.stack_key`)
    are grouped; on a GPU a group is one stack, on the CPU it is split into ``jobs`` stacks of
    near-equal size so that every job has work, and each of those into stacks that hold at most
    :data:`CPU_STACK_BYTES` of training state and at most ``cpu_stack`` runs, their sizes a
    multiple of the job's ``threads`` where they can be (so that every round of runs trained
    side by side is full). Small CPU stacks finish their runs sooner: a stack's runs all finish
    together, after its last epoch.
    """
    stacks = [list(s) for s in resumed or []]
    taken = {run.config.run_id for s in stacks for run in s}
    todo = [run for run in todo if run.config.run_id not in taken]
    if not stack:
        return stacks + [[run] for run in todo]
    groups: dict[tuple, list] = {}
    for run in todo:
        groups.setdefault(stack_key(run.config), []).append(run)
    for runs in groups.values():
        if device == "cuda":
            stacks.append(runs)
            continue
        spec = datasets.DATASETS[runs[0].config.dataset]
        most = max(1, CPU_STACK_BYTES // training_bytes(runs[0].config, spec.channels, spec.image_size))
        most = min(most, cpu_stack or most)
        if most >= threads:
            most -= most % threads
        for part in _split(runs, min(jobs, len(runs))):
            stacks.extend(part[start:start + most] for start in range(0, len(part), most))
    return stacks


ORDERS = ("dearest", "cheapest")


def order_stacks(stacks: list[list], cost: dict[str, float], order: str) -> list[list]:
    """The stacks in training order: the dearest first, so that parallel jobs balance, or the cheapest first, so
    that the first runs finish soonest; ties keep their order. ``cost``: :func:`relative_cost` by run id (a
    finished member riding along in its resumed stack has none)."""
    return sorted(stacks, key=lambda runs: sum(cost.get(r.config.run_id, 0.0) for r in runs), reverse=order == "dearest")


def relative_cost(config: RunConfig) -> float:
    """Training images times a per-image cost: a discriminator makes an update about 4x dearer on
    CPU and 2.5x on GPU in the described recipe, 1.75x on CPU in the author recipe (its D is three
    layers, not six: BENCHMARKS.md). A full split is counted as 60,000 images."""
    per_image = 1.0 if config.gamma == 0 else 1.75 if config.recipe == "author" else 4.0
    return config.epochs * (config.train_subset or 60_000) * per_image
