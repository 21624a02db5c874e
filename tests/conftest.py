"""One resized-dataset cache per test session, so tests neither read nor fill the user's ~/.cache/bench."""

import os
import shutil
import tempfile


def pytest_configure(config):
    config.bench_cache = tempfile.mkdtemp(prefix="bench-cache-")
    os.environ["BENCH_CACHE"] = config.bench_cache


def pytest_unconfigure(config):
    shutil.rmtree(getattr(config, "bench_cache", ""), ignore_errors=True)
