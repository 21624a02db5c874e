"""Paths every test module shares: the repository and the real datasets folder.

``BENCH_DATA`` may be relative (the README's command passes ``../shared/data``); it is
resolved once, against the directory pytest was started from, so symlinks and
subprocesses started elsewhere see the same folder.
"""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("BENCH_DATA") or REPO.parent / "shared" / "data").resolve()
needs_mnist = pytest.mark.skipif(
    not (DATA_ROOT / "mnist").is_dir(), reason=f"real MNIST not found under {DATA_ROOT} (set BENCH_DATA)"
)


def record_meta(run_id: str, config: dict, status: str = "finished", **fields) -> dict:
    """A record's metadata as bench run writes it (the current format), for a run of ``config``.

    ``config`` is completed with RunConfig's defaults; ``fields`` replace or add top-level fields.
    """
    from bench.config import RunConfig
    from bench.records import RECORD_FORMAT

    return {"format": RECORD_FORMAT, "run_id": run_id, "profile": "smoke", "config": RunConfig(**config).to_dict(),
            "status": status, "versions": {"python": "3.11.0", "torch": "2.14.1", "torchvision": "0.29.1"},
            "platform": "Linux", "host": "test-host", "pid": 1, "device": "cpu", "threads": 1, "stack_size": 1,
            "cuda_graphs": False, "git_commit": None, "started": "2026-12-01T00:00:00+0000", "wall_seconds": 1.0,
            **fields}


# `python -c KILLER WHERE COUNT ARGS...` runs `bench ARGS...` and SIGKILLs itself at the COUNT-th
# update (WHERE=step) or with the COUNT-th checkpoint (checkpoint) or record (.parquet) half-written
# to its temporary file, not yet renamed over the published one. With KILL_SIGNAL=SIGTERM (or another
# name) in the environment, that signal is sent at the update instead.
KILLER = r"""
import os, signal, sys
from pathlib import Path
import bench.train.trainer, bench.records, bench.train.stacks

where, count = sys.argv[1], int(sys.argv[2])
at_step = getattr(signal, os.environ.get("KILL_SIGNAL", "SIGKILL"))
seen = [0]

def hit():
    seen[0] += 1
    return seen[0] == count

if where == "step":
    # A lockstep stack's updates are its runs' own; a vectorised stack's one update is all its runs'.
    for cls in (bench.train.stacks.VectorisedStack, bench.train.trainer.Trainer):
        def step(self, *args, _original=cls.train_step):
            if hit():
                os.kill(os.getpid(), at_step)
            return _original(self, *args)
        cls.train_step = step
else:
    original = bench.records.publish_atomic
    def publish(path, write):
        kind = "checkpoint" if path.parent.name == "_checkpoints" and path.suffix == ".pt" else path.suffix
        if kind == where and hit():
            tmp = path.parent / f".{path.name}.killed"
            write(tmp)
            os.truncate(tmp, tmp.stat().st_size // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        return original(path, write)
    bench.records.publish_atomic = publish

from bench.cli import main
main(sys.argv[3:])
"""
