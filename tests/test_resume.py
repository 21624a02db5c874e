"""A `bench run` killed at any moment resumes from its last checkpoint and ends with the same bits.

Each kill is a real SIGKILL of a real `bench run` process, sent by the process itself at a
chosen point: in the middle of an epoch, or with a checkpoint or a record half-written to its
temporary file (``support.KILLER``, test code: the harness has no hook for it).
"""

import os
import signal
import subprocess
import sys

import pytest
from support import DATA_ROOT, KILLER, REPO, needs_mnist

from bench.records import checkpoint_dir, read_tree

pytestmark = needs_mnist


# 128 training images: 2 updates an epoch, so a kill before update 4 lands in the middle of epoch 2.
PLAN = ["run", "--models", "vae,factorvae", "--seeds", "2", "--profile", "smoke", "--epochs", "4", "--subset", "128,64",
        "--threads", "1"]


def bench(*args, killer=None):
    env = {**os.environ, "BENCH_DATA": str(DATA_ROOT), "BENCH_NO_DOWNLOAD": "1"}
    command = [sys.executable, "-c", KILLER, *killer] if killer else [sys.executable, "-m", "bench.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)


def records(out):
    rows, runs = read_tree(out)
    rows = rows.drop(columns=["seconds"]).sort_values(["run_id", "epoch", "split"]).reset_index(drop=True)
    return rows, dict(zip(runs["run_id"], runs["status"]))


@pytest.fixture(scope="module")
def whole_runs(tmp_path_factory):
    """The records of the plan trained without interruption, stacked or not (each made once, when first asked for)."""
    made = {}

    def get(stack="--stack"):
        if stack not in made:
            out = tmp_path_factory.mktemp("whole")
            result = bench(*PLAN, stack, "--out", str(out))
            assert result.returncode == 0, result.stderr
            made[stack] = records(out)
        return made[stack]

    return get


@pytest.mark.parametrize("stack, where, count", [
    ("--stack", "step", 4),  # the second epoch of the first task, under way
    ("--stack", "checkpoint", 3),  # a checkpoint half-written, not yet renamed over the last one
    ("--stack", ".parquet", 6),  # a record half-written, its checkpoint already published
    ("--no-stack", "checkpoint", 6),  # the second task's second checkpoint (the first task's were deleted when it finished)
])
def test_a_killed_run_resumes_to_the_same_bits(tmp_path, whole_runs, stack, where, count):
    out = tmp_path / "runs"
    killed = bench(*PLAN, stack, "--out", str(out), killer=[where, str(count)])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert any(checkpoint_dir(out).glob("*.pt"))  # something to resume from
    resumed = bench(*PLAN, stack, "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch" in resumed.stderr
    rows, status = records(out)
    expected_rows, expected_status = whole_runs(stack)
    assert status == expected_status and set(status.values()) == {"finished"}
    assert rows.equals(expected_rows)
    assert not list(checkpoint_dir(out).glob("*.pt")) and not list(checkpoint_dir(out).glob("*.json"))


def test_killed_twice_and_kept(tmp_path, whole_runs):
    out = tmp_path / "runs"
    assert bench(*PLAN, "--out", str(out), killer=["step", "4"]).returncode == -signal.SIGKILL
    assert bench(*PLAN, "--out", str(out), killer=["step", "6"]).returncode == -signal.SIGKILL
    resumed = bench(*PLAN, "--out", str(out), "--keep")
    assert resumed.returncode == 0, resumed.stderr
    rows, status = records(out)
    expected_rows, expected_status = whole_runs()
    assert rows.equals(expected_rows) and status == expected_status
    assert len(list(checkpoint_dir(out).glob("*.pt"))) == 2  # one per stack, kept


def test_sparser_checkpoints_lose_more_epochs_but_not_the_bits(tmp_path, whole_runs):
    out = tmp_path / "runs"
    # Checkpoints after epochs 3 and 4 only; killed in epoch 3 of the first stack, it restarts that stack from scratch.
    killed = bench(*PLAN, "--checkpoint-every", "3", "--out", str(out), killer=["step", "6"])
    assert killed.returncode == -signal.SIGKILL
    assert not any(checkpoint_dir(out).glob("*.pt"))
    assert bench(*PLAN, "--checkpoint-every", "3", "--out", str(out), killer=["step", "8"]).returncode == -signal.SIGKILL
    resumed = bench(*PLAN, "--checkpoint-every", "3", "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 3" in resumed.stderr
    rows, status = records(out)
    expected_rows, expected_status = whole_runs()
    assert rows.equals(expected_rows) and status == expected_status


def test_fresh_ignores_the_checkpoints(tmp_path, whole_runs):
    out = tmp_path / "runs"
    assert bench(*PLAN, "--out", str(out), killer=["step", "4"]).returncode == -signal.SIGKILL
    fresh = bench(*PLAN, "--out", str(out), "--fresh")
    assert fresh.returncode == 0, fresh.stderr
    assert "resuming" not in fresh.stderr
    rows, status = records(out)
    expected_rows, expected_status = whole_runs()
    assert rows.equals(expected_rows) and status == expected_status
