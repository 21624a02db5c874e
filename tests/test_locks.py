"""One runner per run: per-run locks between real processes, and what a dead holder leaves behind."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from support import DATA_ROOT, REPO, needs_mnist

from bench.errors import BenchError
from bench.records import read_tree
from bench.run.locks import RunLock, lock_path, read_holder

HOLDER = """
import sys, time
from pathlib import Path
from bench.run.locks import RunLock
lock = RunLock(Path(sys.argv[1]), "r1")
print("held" if lock.acquire() else "refused", flush=True)
time.sleep(60)
"""


def hold_in_child(out):
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_lock_held_by_a_live_process_is_refused_and_a_dead_ones_is_taken_over(tmp_path):
    child = hold_in_child(tmp_path)
    try:
        assert not RunLock(tmp_path, "r1").acquire()
        assert read_holder(lock_path(tmp_path, "r1"))["pid"] == child.pid
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    lock = RunLock(tmp_path, "r1")
    assert lock.acquire()  # the OS dropped the dead process's lock
    assert lock.taken_over["pid"] == child.pid
    assert read_holder(lock.path)["pid"] == os.getpid()
    lock.release()
    assert not lock.path.exists()


def test_a_released_lock_can_be_taken_again(tmp_path):
    first = RunLock(tmp_path, "r2")
    assert first.acquire()
    first.release()
    second = RunLock(tmp_path, "r2")
    assert second.acquire() and second.taken_over is None
    second.release()


def test_a_lock_file_with_garbage_is_named(tmp_path):
    path = lock_path(tmp_path, "r3")
    path.parent.mkdir(parents=True)
    path.write_text("not json at all")
    with pytest.raises(BenchError, match="is not a bench lock"):
        read_holder(path)
    path.write_text(json.dumps({"pid": "seven"}))
    with pytest.raises(BenchError, match="is not a bench lock"):
        read_holder(path)


def bench_process(*args):
    env = {**os.environ, "BENCH_DATA": str(DATA_ROOT), "BENCH_NO_DOWNLOAD": "1"}
    return subprocess.Popen([sys.executable, "-m", "bench.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=REPO)


def trained_by(stderr: str) -> set[str]:
    """The runs a process trained, from its per-epoch log lines ('[i/n model dataset seed=s] epoch ...')."""
    return {line.split("]")[0].split(" ", 1)[1] for line in stderr.splitlines() if line.startswith("[") and "] epoch" in line}


@needs_mnist
def test_two_runners_on_one_folder_never_train_the_same_run(tmp_path):
    out = tmp_path / "runs"
    # Enough work per stack (seconds) that the second process, started once the first holds its
    # first locks, finds that stack taken and the other one free.
    plan = ["run", "--models", "vae,factorvae", "--seeds", "2", "--profile", "smoke", "--epochs", "3", "--subset", "1024,128",
            "--threads", "1", "--out", str(out)]
    first = bench_process(*plan)
    deadline = time.monotonic() + 120
    while not any((out / "_locks").glob("*.lock")) and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    second = bench_process(*plan)
    (_, err1), (_, err2) = first.communicate(timeout=600), second.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, err1 + err2
    one, two = trained_by(err1), trained_by(err2)
    assert one and two and not (one & two), (one, two)  # both worked, never on the same run
    assert len(one | two) == 4
    _, runs = read_tree(out)
    assert len(runs) == 4 and set(runs["status"]) == {"finished"}
    assert "is being trained by pid" in err1 + err2


@needs_mnist
def test_a_stale_lock_is_taken_over_and_said(tmp_path):
    out = tmp_path / "runs"
    plan = ["run", "--models", "vae", "--seeds", "1", "--profile", "smoke", "--threads", "1", "--out", str(out)]
    dry = subprocess.run([sys.executable, "-m", "bench.cli", *plan, "--dry-run"], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "BENCH_DATA": str(DATA_ROOT)})
    run_id = dry.stdout.split()[1]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = lock_path(out, run_id)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"pid": dead.pid, "host": "elsewhere", "since": "2026-01-01T00:00:00"}))
    process = bench_process(*plan)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    assert f"took over the lock left by pid {dead.pid} on elsewhere" in err
    assert not path.exists()


def test_one_process_cannot_take_a_run_twice(tmp_path):
    # A POSIX lock does not exclude its own process (two tasks in one Dask worker, say), so the
    # process keeps its own account; and the refused attempt must not drop the lock it holds.
    first, second = RunLock(tmp_path, "r4"), RunLock(tmp_path, "r4")
    assert first.acquire()
    assert not second.acquire() and "this process" in second.holder
    child = subprocess.run([sys.executable, "-c", "import sys\nfrom pathlib import Path\nfrom bench.run.locks import RunLock\n"
                            "print(RunLock(Path(sys.argv[1]), 'r4').acquire())", str(tmp_path)],
                           capture_output=True, text=True, cwd=REPO)
    assert child.stdout.strip() == "False"  # still held against other processes
    first.release()
    assert second.acquire()
    second.release()
