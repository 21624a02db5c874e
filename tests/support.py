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
