"""A `bench run` killed at any moment resumes from its last checkpoint and ends with the same bits.

One real SIGKILL of a real `bench run` process per kill point, sent by the process itself: in the
middle of an epoch, or with a checkpoint or a record half-written to its temporary file
(``support.KILLER``, test code: the harness has no hook for it). The rest is tested in-process
through the job's steps: a job left after some epochs is what a kill after them leaves.
"""

import signal

import pandas as pd
import pytest
import torch
from support import DATA_ROOT, needs_mnist, run_bench

from bench.plan import make_plan
from bench.records import checkpoint_dir, read_tree
from bench.run.job import StackJob, StackTask
from bench.run.stacks import make_stacks, placement

pytestmark = needs_mnist


# 128 training images: 2 updates a run an epoch. A stack's runs train their epochs one after the
# other on one thread, so in a stack of 2 the 6th update is the first run's second of epoch 2.
PLAN = ["run", "--models", "vae,factorvae", "--seeds", "2", "--profile", "smoke", "--epochs", "4", "--subset", "128,64",
        "--threads", "1"]


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
            result = run_bench(*PLAN, stack, "--out", out)
            assert result.returncode == 0, result.stderr
            made[stack] = records(out)
        return made[stack]

    return get


@pytest.mark.parametrize("where, count", [
    ("step", 6),  # the second epoch of the first task, under way
    ("checkpoint", 3),  # a checkpoint half-written, not yet renamed over the last one
    (".parquet", 6),  # a record half-written, its checkpoint already published
])
def test_a_killed_run_resumes_to_the_same_bits(tmp_path, whole_runs, where, count):
    out = tmp_path / "runs"
    killed = run_bench(*PLAN, "--stack", "--out", out, killer=(where, count))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert any(checkpoint_dir(out).glob("*.pt"))  # something to resume from
    resumed = run_bench(*PLAN, "--stack", "--out", out)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch" in resumed.stderr
    rows, status = records(out)
    expected_rows, expected_status = whole_runs("--stack")
    assert status == expected_status and set(status.values()) == {"finished"}
    assert rows.equals(expected_rows)
    assert not list(checkpoint_dir(out).glob("*.pt")) and not list(checkpoint_dir(out).glob("*.json"))


# In-process: the plan's tasks as `bench run --threads 1` makes them, trained by the job's steps.
@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def tasks(out, stacked=True, checkpoint_every=1, keep=False, resume=True):
    plan = make_plan(["vae", "factorvae"], ["mnist"], 2, "smoke", {"epochs": 4, "train_subset": 128, "test_subset": 64},
                     out)
    return [StackTask(tuple(runs), tuple(r.config.run_id for r in runs), str(out), str(DATA_ROOT),
                      placement("cpu", 1, len(runs), stacked, None), resume, keep, None, checkpoint_every)
            for runs in make_stacks(plan, jobs=1, device="cpu", stack=stacked)]


def left_after(task, epochs):
    """What a kill leaves once ``epochs`` epochs of the task are published: its records and checkpoint."""
    job = StackJob(task)
    assert job.claim() == []
    job.prepare()
    epoch = job.open()
    while epoch < epochs:
        epoch = job.advance(epoch)
    job.release()
    return job


def finish(out, **options):
    for task in tasks(out, **options):
        assert {status for _, status, _ in StackJob(task).run()} <= {"finished", "skipped"}
    return records(out)


@pytest.fixture(scope="module")
def whole_in_process(tmp_path_factory):
    made = {}

    def get(stacked=True):
        if stacked not in made:
            before = torch.get_num_threads()
            made[stacked] = finish(tmp_path_factory.mktemp("whole"), stacked=stacked)
            torch.set_num_threads(before)
        return made[stacked]

    return get


def assert_same_records(got, expected):
    (rows, status), (expected_rows, expected_status) = got, expected
    assert status == expected_status and set(status.values()) == {"finished"}
    pd.testing.assert_frame_equal(rows, expected_rows, check_exact=True)


def test_in_process_records_are_those_of_bench_run(whole_runs, whole_in_process, one_thread):
    assert_same_records(whole_in_process(True), whole_runs("--stack"))


@pytest.mark.parametrize("stacked", [True, False])
def test_a_job_left_after_an_epoch_resumes_to_the_same_bits(tmp_path, whole_in_process, one_thread, stacked):
    first = tasks(tmp_path, stacked=stacked)[0]
    left_after(first, 1)
    assert StackJob(first).checkpoint.exists()
    assert_same_records(finish(tmp_path, stacked=stacked), whole_in_process(stacked))
    assert not list(checkpoint_dir(tmp_path).iterdir())


def test_left_twice_and_kept(tmp_path, whole_in_process, one_thread):
    first = tasks(tmp_path, keep=True)[0]
    left_after(first, 1)
    left_after(first, 3)  # resumed after epoch 1, left after epoch 3
    assert_same_records(finish(tmp_path, keep=True), whole_in_process())
    assert len(list(checkpoint_dir(tmp_path).glob("*.pt"))) == 2  # one per stack, kept


def test_sparser_checkpoints_lose_more_epochs_but_not_the_bits(tmp_path, whole_in_process, one_thread):
    first = tasks(tmp_path, checkpoint_every=3)[0]
    left_after(first, 2)  # no checkpoint before epoch 3: the stack starts again from scratch
    assert not StackJob(first).checkpoint.exists()
    job = left_after(first, 3)
    assert job.checkpoint.exists()
    resumed = StackJob(first)
    resumed.claim()
    resumed.prepare()
    assert resumed.open() == 3
    resumed.release()
    assert_same_records(finish(tmp_path, checkpoint_every=3), whole_in_process())


def test_fresh_ignores_the_checkpoints(tmp_path, whole_in_process, one_thread):
    left_after(tasks(tmp_path)[0], 2)
    fresh = StackJob(tasks(tmp_path, resume=False)[0])
    fresh.claim()
    fresh.prepare()
    assert fresh.open() == 0
    fresh.release()
    assert_same_records(finish(tmp_path, resume=False), whole_in_process())
