"""Session set-up for every test module.

One resized-dataset cache per test session, so tests neither read nor fill the user's ~/.cache/bench;
the cores shared out over pytest-xdist's workers; and the longest test files collected first (see LONG_FIRST).
"""

import os
import shutil
import tempfile


def pytest_configure(config):
    config.bench_cache = tempfile.mkdtemp(prefix="bench-cache-")
    os.environ["BENCH_CACHE"] = config.bench_cache
    # Each worker's torch would start one thread per core: two workers training in their own processes
    # would then keep twice as many threads busy as there are cores, and take longer than with one each.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def pytest_unconfigure(config):
    shutil.rmtree(getattr(config, "bench_cache", ""), ignore_errors=True)


# Files that take minutes in all: processes trained one after another on one worker. pytest-xdist
# (--dist loadfile --no-loadscope-reorder) hands files to workers in collection order, so these go
# first; one of them started last would leave the other worker idle at the end.
# The fast tier (-m fast) keeps this order: there test_bad_input.py and test_report.py are the longest.
# Ordered by their time in `python -m pytest --durations=0` of 2026-12-04 (BENCHMARKS.md, CI).
LONG_FIRST = ("test_stacked.py", "test_check.py", "test_queue.py", "test_resume.py", "test_metrics.py",
              "test_bad_input.py", "test_paper_matrix.py", "test_cli.py", "test_disentanglement.py", "test_speed.py",
              "test_report.py", "test_cluster.py", "test_traverse.py", "test_locks.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FIRST)))  # stable: file order kept within
