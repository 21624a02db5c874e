"""bench.train.malloc: training updates stop faulting in fresh pages once freed memory is kept."""

import json
import platform

import pytest
from support import run_python

GLIBC = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

# Page faults per VAE update at batch 64, after a few updates to settle, in a fresh process.
_FAULTS = """
import json, resource, sys, torch
if sys.argv[1] == "keep":
    from bench.train.malloc import keep_freed_memory
    assert keep_freed_memory()
from bench.config import resolve
from bench.train.trainer import Trainer
torch.set_num_threads(1)
images = torch.randint(0, 256, (128, 1, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
t = Trainer(resolve("vae", "mnist", 0, "smoke", {"batch_size": 64}), images, images[:64])
x = t.batch_of(images, torch.arange(64))
for _ in range(3):
    t.train_step(x, None)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    t.train_step(x, None)
print(json.dumps((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5))
"""


def _faults_per_update(mode: str) -> float:
    out = run_python("-c", _FAULTS, mode, check=True)
    return json.loads(out.stdout)


@GLIBC
def test_kept_memory_ends_the_page_faults_of_an_update():
    default, kept = _faults_per_update("default"), _faults_per_update("keep")
    # An update's activations and gradients are about 20 MB, 5,000 pages: glibc's defaults fault
    # most of them in again at every update (5,600 measured); kept, about 50 remain.
    assert kept < 300
    assert default > 10 * kept

