"""The runner: what counts as done, what happens to killed and failing runs, run order."""

from support import DATA_ROOT, needs_mnist

from bench.config import resolve
from bench.plan import make_plan
from bench.records import read_meta, read_run, write_run
from bench.runner import execute, is_finished, relative_cost


def plan(out, models=("vae",), seeds=1):
    return make_plan(list(models), ["mnist"], seeds, "smoke", {"epochs": 1}, out)


@needs_mnist
def test_a_killed_run_is_trained_again(tmp_path):
    (run,) = plan(tmp_path)
    # What a kill after the first epoch leaves: a record whose status is still "running".
    write_run(run.path, [], {"run_id": run.config.run_id, "status": "running", "config": run.config.to_dict()})
    assert not is_finished(run.path)
    summary = execute([run], tmp_path, DATA_ROOT, jobs=1, device="cpu")
    assert summary.done == [run.config.run_id] and summary.skipped == []
    rows, meta = read_run(run.path)
    assert meta["status"] == "finished" and len(rows) == 2


@needs_mnist
def test_a_failing_run_is_recorded_and_the_others_go_on(tmp_path, monkeypatch):
    import bench.engine

    runs = plan(tmp_path, models=("vae", "betavae"))
    real_train = bench.engine.train

    def train(config, *args, **kwargs):
        if config.model == "betavae":
            raise RuntimeError("planted failure")
        return real_train(config, *args, **kwargs)

    monkeypatch.setattr(bench.engine, "train", train)
    summary = execute(runs, tmp_path, DATA_ROOT, jobs=1, device="cpu")
    assert summary.done == [runs[0].config.run_id]
    assert summary.failed == [f"{runs[1].config.run_id}: RuntimeError: planted failure"]
    meta = read_meta(runs[1].path)
    assert meta["status"] == "failed" and meta["error"] == "RuntimeError: planted failure"
    assert not is_finished(runs[1].path)  # a later `bench run` tries it again


def test_a_foreign_file_at_a_run_path_is_not_done(tmp_path):
    (run,) = plan(tmp_path)
    run.path.parent.mkdir(parents=True)
    run.path.write_bytes(b"not parquet")
    assert not is_finished(run.path)


def test_runs_with_a_discriminator_cost_more():
    vae = resolve("vae", "mnist", 0, "quick")
    factor = resolve("factorvae", "mnist", 0, "quick")
    assert relative_cost(factor) == 4 * relative_cost(vae)
    # A full split counts as 60,000 images: the paper profile is 50 epochs of it.
    assert relative_cost(resolve("vae", "mnist", 0, "paper")) == 50 * 60_000
