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

# `python -c KILLER WHERE COUNT ARGS...` runs `bench ARGS...` and SIGKILLs itself at the COUNT-th
# update (WHERE=step) or with the COUNT-th checkpoint (checkpoint) or record (.parquet) half-written
# to its temporary file, not yet renamed over the published one.
KILLER = r"""
import os, signal, sys
from pathlib import Path
import bench.engine, bench.records, bench.stacked

where, count = sys.argv[1], int(sys.argv[2])
seen = [0]

def hit():
    seen[0] += 1
    return seen[0] == count

if where == "step":
    depth = [0]  # a stack's update calls its runs' own updates on a CPU: count the outer call only
    for cls in (bench.stacked.StackedTrainer, bench.engine.Trainer):
        def step(self, *args, _original=cls.train_step):
            if depth[0] == 0 and hit():
                os.kill(os.getpid(), signal.SIGKILL)
            depth[0] += 1
            try:
                return _original(self, *args)
            finally:
                depth[0] -= 1
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
