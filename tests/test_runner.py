"""The runner: what counts as done, what happens to killed and failing runs, run order."""

import pytest
from support import DATA_ROOT, needs_mnist, record_meta

from bench.config import resolve
from bench.plan import PlannedRun, make_plan
from bench.records import read_meta, read_run, run_path, write_run
from bench.run.execute import RunOptions, execute
from bench.run.job import is_finished
from bench.run.stacks import CPU_STACK_BYTES, make_stacks, order_stacks, relative_cost, training_bytes


def plan(out, models=("vae",), seeds=1):
    return make_plan(list(models), ["mnist"], seeds, "smoke", {"epochs": 1}, out)


@needs_mnist
def test_a_killed_run_is_trained_again(tmp_path):
    (run,) = plan(tmp_path)
    # What a kill after the first epoch leaves: a record whose status is still "running".
    write_run(run.path, [], record_meta(run.config.run_id, run.config.to_dict(), "running"))
    assert not is_finished(run.path)
    summary = execute([run], tmp_path, DATA_ROOT, RunOptions(device="cpu"))
    assert summary.done == [run.config.run_id] and summary.skipped == []
    rows, meta = read_run(run.path)
    assert meta["status"] == "finished" and len(rows) == 2


@needs_mnist
def test_a_failing_run_is_recorded_and_the_others_go_on(tmp_path, monkeypatch):
    import bench.train.trainer

    runs = plan(tmp_path, models=("vae", "betavae"))
    real_init = bench.train.trainer.Trainer.__init__

    def init(self, config, *args, **kwargs):
        if config.model == "betavae":
            raise RuntimeError("planted failure")
        real_init(self, config, *args, **kwargs)

    monkeypatch.setattr(bench.train.trainer.Trainer, "__init__", init)
    summary = execute(runs, tmp_path, DATA_ROOT, RunOptions(device="cpu", stack=False))
    assert summary.done == [runs[0].config.run_id]
    assert summary.failed == [f"{runs[1].config.run_id}: RuntimeError: planted failure"]
    meta = read_meta(runs[1].path)
    assert meta["status"] == "failed" and meta["error"] == "RuntimeError: planted failure"
    assert not is_finished(runs[1].path)  # a later `bench run` tries it again


@needs_mnist
def test_a_failing_stack_is_recorded_and_the_other_stacks_go_on(tmp_path, monkeypatch):
    import bench.train.stacks

    runs = plan(tmp_path, models=("vae", "factorvae"), seeds=2)
    real_make_stack = bench.train.stacks.make_stack

    def make_stack(configs, *args, **kwargs):
        if configs[0].model == "factorvae":
            raise RuntimeError("planted failure")
        return real_make_stack(configs, *args, **kwargs)

    monkeypatch.setattr(bench.train.stacks, "make_stack", make_stack)
    summary = execute(runs, tmp_path, DATA_ROOT, RunOptions(device="cpu"))
    assert sorted(summary.done) == sorted(r.config.run_id for r in runs[:2])
    assert sorted(summary.failed) == sorted(f"{r.config.run_id}: RuntimeError: planted failure" for r in runs[2:])


@needs_mnist
def test_a_run_that_diverges_in_a_stack_stops_alone(tmp_path):
    healthy = resolve("vae", "mnist", 0, "smoke", {"epochs": 2})
    doomed = resolve("vae", "mnist", 1, "smoke", {"epochs": 2, "w_kl": 1e39})  # float32 overflow: inf loss
    runs = [PlannedRun(c, "smoke", run_path(tmp_path, "mnist", "vae", c.seed, c.run_id)) for c in (healthy, doomed)]
    assert len(make_stacks(runs, jobs=1, device="cpu")) == 1
    summary = execute(runs, tmp_path, DATA_ROOT, RunOptions(device="cpu"))
    assert summary.done == [healthy.run_id] and summary.diverged == [doomed.run_id]
    rows, meta = read_run(runs[1].path)
    assert meta["status"] == "diverged" and meta["diverged_epoch"] == 1 and rows["epoch"].max() == 1
    rows, meta = read_run(runs[0].path)
    assert meta["status"] == "finished" and meta["stack_size"] == 2 and rows["epoch"].max() == 2


@needs_mnist
def test_a_stack_on_two_threads_trains_its_runs_side_by_side_with_their_one_thread_numbers(tmp_path):
    import pandas as pd

    side_by_side = plan(tmp_path / "stacked", seeds=2)
    execute(side_by_side, tmp_path / "stacked", DATA_ROOT, RunOptions(device="cpu", threads=2))
    alone = plan(tmp_path / "alone", seeds=2)
    execute(alone, tmp_path / "alone", DATA_ROOT, RunOptions(device="cpu", threads=1, stack=False))
    for stacked_run, solo_run in zip(side_by_side, alone, strict=True):
        rows, meta = read_run(stacked_run.path)
        solo_rows, solo_meta = read_run(solo_run.path)
        assert (meta["stack_size"], meta["threads"]) == (2, 1) and (solo_meta["stack_size"], solo_meta["threads"]) == (1, 1)
        pd.testing.assert_frame_equal(rows.drop(columns="seconds"), solo_rows.drop(columns="seconds"), check_exact=True)


@pytest.mark.fast
def test_stacks_group_runs_by_shape_and_spread_them_over_the_jobs(tmp_path):
    runs = make_plan(["vae", "betavae", "cvae", "factorvae", "cfactorvae"], ["mnist"], 5, "quick", {}, tmp_path)
    cpu = make_stacks(runs, jobs=2, device="cpu")  # halves of 8 and 7, 5 and 5; at most 4 FactorVAE runs a stack
    assert sorted(len(s) for s in cpu) == [1, 1, 4, 4, 7, 8]
    assert all(len({r.config.gamma != 0 for r in s}) == 1 for s in cpu)
    assert sorted(r.config.run_id for s in cpu for r in s) == sorted(r.config.run_id for r in runs)
    assert sorted(len(s) for s in make_stacks(runs, jobs=2, device="cuda")) == [10, 15]
    assert [len(s) for s in make_stacks(runs, jobs=2, device="cpu", stack=False)] == [1] * 25


@pytest.mark.fast
def test_a_cpu_stack_holds_at_most_its_share_of_memory_in_full_rounds_of_its_threads(tmp_path):
    # Paper networks at z = 20, counted by hand: the VAE has 640,745 parameters, the discriminator
    # 5,028,002. Weight, gradient and Adam's three buffers in float32: 20 bytes a parameter, so a
    # FactorVAE run holds 108.1 MiB, and 512 MiB holds 4 (a VAE run 12.2 MiB: 41).
    assert training_bytes(resolve("vae", "mnist", 0, "paper"), 1, 32) == 20 * 640_745
    assert training_bytes(resolve("factorvae", "mnist", 0, "paper"), 1, 32) == 20 * (640_745 + 5_028_002)
    assert CPU_STACK_BYTES == 512 * 2**20
    runs = make_plan(["vae", "betavae", "cvae", "factorvae", "cfactorvae"], ["mnist"], 5, "paper", {}, tmp_path)
    assert sorted(len(s) for s in make_stacks(runs, jobs=1, device="cpu", threads=2)) == [2, 4, 4, 15]
    assert sorted(len(s) for s in make_stacks(runs, jobs=1, device="cpu", threads=3)) == [1, 3, 3, 3, 15]


@pytest.mark.fast
def test_cpu_stack_caps_the_runs_of_a_cpu_stack_and_not_of_a_gpu_one(tmp_path):
    runs = make_plan(["vae", "betavae", "cvae", "factorvae", "cfactorvae"], ["mnist"], 5, "paper", {}, tmp_path)
    # 15 VAE-family runs in stacks of 2 (one a core) and a last one; 10 FactorVAE-family runs in 5 pairs.
    capped = make_stacks(runs, jobs=1, device="cpu", threads=2, cpu_stack=2)
    assert sorted(len(s) for s in capped) == [1] + [2] * 12
    assert [r.config.run_id for s in capped for r in s] == [r.config.run_id for r in runs
                                                             if r.config.gamma == 0] + [r.config.run_id for r in runs
                                                                                        if r.config.gamma != 0]
    # A cap above the memory's 4 FactorVAE runs leaves that limit; a GPU stack is never capped.
    assert sorted(len(s) for s in make_stacks(runs, jobs=1, device="cpu", threads=2, cpu_stack=8)) == [2, 4, 4, 7, 8]
    assert sorted(len(s) for s in make_stacks(runs, jobs=1, device="cuda", cpu_stack=2)) == [10, 15]


@pytest.mark.fast
def test_stacks_train_dearest_first_or_cheapest_first_ties_in_plan_order(tmp_path):
    vaes = make_plan(["vae"], ["mnist"], 3, "paper", {}, tmp_path)
    factors = make_plan(["factorvae"], ["mnist"], 2, "paper", {}, tmp_path)
    cost = {r.config.run_id: relative_cost(r.config) for r in vaes + factors}
    stacks = [vaes[:2], factors[:1], [vaes[2]], factors[1:]]
    # Costs in VAE-run units: 2, 4, 1, 4.
    assert order_stacks(stacks, cost, "dearest") == [factors[:1], factors[1:], vaes[:2], [vaes[2]]]
    assert order_stacks(stacks, cost, "cheapest") == [[vaes[2]], vaes[:2], factors[:1], factors[1:]]
    # A member riding along in its resumed stack, finished already, costs nothing.
    assert order_stacks([factors[:1], vaes[:2]], {vaes[0].config.run_id: 1.0}, "cheapest") == [factors[:1], vaes[:2]]


@needs_mnist
def test_order_cheapest_trains_the_cheapest_stack_first(tmp_path, capfd):
    runs = make_plan(["factorvae", "vae"], ["mnist"], 1, "smoke", {"epochs": 1}, tmp_path)
    execute(runs, tmp_path, DATA_ROOT, RunOptions(device="cpu", threads=1, order="cheapest"))
    started = [line.split()[1] for line in capfd.readouterr().err.splitlines() if "epoch 1/1" in line]
    assert started == ["vae", "factorvae"]


@pytest.mark.fast
def test_a_foreign_file_at_a_run_path_is_not_done(tmp_path):
    (run,) = plan(tmp_path)
    run.path.parent.mkdir(parents=True)
    run.path.write_bytes(b"not parquet")
    assert not is_finished(run.path)


@pytest.mark.fast
def test_runs_with_a_discriminator_cost_more():
    vae = resolve("vae", "mnist", 0, "quick")
    factor = resolve("factorvae", "mnist", 0, "quick")
    assert relative_cost(factor) == 4 * relative_cost(vae)
    # the author recipe's per-update times, 112.60 ms against CVAE's 64.29 ms (BENCHMARKS.md): 1.75x
    author_cvae, author_factor = (resolve(m, "mnist", 0, "quick", recipe="author") for m in ("cvae", "factorvae"))
    assert relative_cost(author_factor) == 1.75 * relative_cost(author_cvae)
    # A full split counts as 60,000 images: the paper profile is 50 epochs of it.
    assert relative_cost(resolve("vae", "mnist", 0, "paper")) == 50 * 60_000
