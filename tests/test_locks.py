"""One runner per run: per-run locks between real processes, and what a dead holder leaves behind."""

import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest
from support import needs_mnist, run_bench, run_python, start_python

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
    child = start_python("-c", HOLDER, out)
    assert child.stdout.readline().strip() == "held"
    return child


@pytest.mark.fast
def test_a_lock_held_by_a_live_process_is_refused_and_a_dead_ones_is_taken_over(tmp_path):
    child = hold_in_child(tmp_path)
    try:
        assert not RunLock(tmp_path, "r1").acquire()
        assert read_holder(lock_path(tmp_path, "r1"))["pid"] == child.pid
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    lock = RunLock(tmp_path, "r1")
    assert lock.acquire()  # the OS dropped the dead process's lock
    assert lock.taken_over["pid"] == child.pid
    assert read_holder(lock.path)["pid"] == os.getpid()
    lock.release()
    assert not lock.path.exists()


@pytest.mark.fast
def test_a_released_lock_can_be_taken_again(tmp_path):
    first = RunLock(tmp_path, "r2")
    assert first.acquire()
    first.release()
    second = RunLock(tmp_path, "r2")
    assert second.acquire() and second.taken_over is None
    second.release()


@pytest.mark.fast
def test_a_lock_file_with_garbage_is_named(tmp_path):
    path = lock_path(tmp_path, "r3")
    path.parent.mkdir(parents=True)
    path.write_text("not json at all")
    with pytest.raises(BenchError, match="is not a bench lock"):
        read_holder(path)
    path.write_text(json.dumps({"pid": "seven"}))
    with pytest.raises(BenchError, match="is not a bench lock"):
        read_holder(path)


# Run in each of two `bench run` processes: the first run lock a process takes is held, before the
# process goes on, until the other process holds a run lock of its own. So neither process can train
# (and finish) a run before the other holds one too: both train, and whichever came second to a run
# finds its lock held and says so, whatever the two processes' speeds and start times.
BARRIER = """
import os, time
from pathlib import Path
from bench.run.locks import RunLock

barrier, me = Path(os.environ["BARRIER"]), os.environ["RUNNER"]
acquire = RunLock.acquire

def acquire_then_wait(self):
    held = acquire(self)
    if held and not (barrier / me).exists():
        (barrier / me).touch()
        deadline = time.monotonic() + 300
        while len(list(barrier.iterdir())) < 2:
            if time.monotonic() > deadline:
                raise SystemExit(f"{me}: the other runner took no run lock within 300 s")
            time.sleep(0.01)
    return held

RunLock.acquire = acquire_then_wait
"""


def trained_by(stderr: str) -> set[str]:
    """The runs a process trained, from its per-epoch log lines ('[i/n model dataset seed=s] epoch ...')."""
    return {line.split("]")[0].split(" ", 1)[1] for line in stderr.splitlines()
            if line.startswith("[") and "] epoch" in line}


@needs_mnist
def test_two_runners_on_one_folder_never_train_the_same_run(tmp_path):
    out, barrier = tmp_path / "runs", tmp_path / "barrier"
    barrier.mkdir()
    # Two stacks of two runs (the VAEs, the FactorVAEs), trained one after another by each process.
    plan = ["run", "--models", "vae,factorvae", "--seeds", "2", "--profile", "smoke", "--epochs", "1", "--subset", "128,64",
            "--threads", "1", "--out", out]
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [pool.submit(run_bench, *plan, prelude=BARRIER, env={"BARRIER": str(barrier), "RUNNER": name})
                for name in ("first", "second")]
    (first, second) = (run.result() for run in runs)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert sorted(p.name for p in barrier.iterdir()) == ["first", "second"]  # each held a run while the other did
    one, two = trained_by(first.stderr), trained_by(second.stderr)
    assert one and two and not (one & two), (one, two)  # both worked, never on the same run
    assert len(one | two) == 4
    _, summary = read_tree(out)
    assert len(summary) == 4 and set(summary["status"]) == {"finished"}
    # The process that came second to the first stack found its locks held, and said so.
    assert "is being trained by pid" in first.stderr + second.stderr


@needs_mnist
def test_a_stale_lock_is_taken_over_and_said(tmp_path):
    out = tmp_path / "runs"
    plan = ["run", "--models", "vae", "--seeds", "1", "--profile", "smoke", "--threads", "1", "--out", str(out)]
    dry = run_bench(*plan, "--dry-run", check=True)
    run_id = dry.stdout.split()[1]
    dead = run_python("-c", "import os; print(os.getpid())", check=True)
    dead_pid = int(dead.stdout)
    path = lock_path(out, run_id)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"pid": dead_pid, "host": "elsewhere", "since": "2026-01-01T00:00:00"}))
    result = run_bench(*plan)
    assert result.returncode == 0, result.stderr
    assert f"took over the lock left by pid {dead_pid} on elsewhere" in result.stderr
    assert not path.exists()


@pytest.mark.fast
def test_one_process_cannot_take_a_run_twice(tmp_path):
    # A POSIX lock does not exclude its own process (two tasks in one Dask worker, say), so the
    # process keeps its own account; and the refused attempt must not drop the lock it holds.
    first, second = RunLock(tmp_path, "r4"), RunLock(tmp_path, "r4")
    assert first.acquire()
    assert not second.acquire() and "this process" in second.holder
    child = run_python("-c", "import sys\nfrom pathlib import Path\nfrom bench.run.locks import RunLock\n"
                       "print(RunLock(Path(sys.argv[1]), 'r4').acquire())", tmp_path)
    assert child.stdout.strip() == "False"  # still held against other processes
    first.release()
    assert second.acquire()
    second.release()
