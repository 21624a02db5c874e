"""Where a task trains and on how many threads, decided once, and the process switches that follow.

See docs/stacking-and-speed.md for why a CPU stack trains its runs side by side and a GPU stack
vectorises them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from bench.errors import BenchError


def resolve_device(device: str) -> str:
    """``auto``: CUDA where there is a GPU, else the CPU; ``cuda`` without a GPU is an error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    return device


@dataclass(frozen=True)
class Placement:
    """How one task trains: made by :func:`bench.run.stacks.placement`, it travels with the task.

    ``threads`` are the torch threads of each run's own arithmetic (what its bits depend on, and
    what its record names); ``workers`` runs of a lockstep stack train side by side, one
    ``threads``-wide share each. ``device`` may be ``auto`` on its way to a cluster's worker, which
    settles it there (:meth:`here`).
    """

    device: str
    threads: int = 1
    workers: int = 1
    stacked: bool = True
    cuda_graphs: bool | None = None  # None: on wherever the stack is vectorised

    @property
    def vectorised(self) -> bool:
        """A stack on a GPU runs one vectorised update for all its runs; elsewhere each run its own."""
        return self.stacked and self.device == "cuda"

    def here(self) -> Placement:
        """This placement on this machine's hardware: the device resolved, CUDA graphs settled."""
        settled = replace(self, device=resolve_device(self.device))
        graphs = settled.vectorised if self.cuda_graphs is None else self.cuda_graphs and settled.vectorised
        return replace(settled, cuda_graphs=graphs)


def configure_process(placement: Placement) -> None:
    """The process-wide torch settings a task trains under: threads, determinism, memory reuse."""
    import torch

    from bench.train.malloc import keep_freed_memory
    from bench.train.optim import deterministic_algorithms

    if placement.device == "cuda":
        # cuBLAS needs this to be deterministic; it must be set before the first CUDA call.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(placement.threads)
    deterministic_algorithms(True, warn_only=True)
    keep_freed_memory()
