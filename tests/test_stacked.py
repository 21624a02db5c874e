"""Runs trained as one stack give the numbers they give alone (a vectorised stack up to rounding, a
lockstep one bit for bit) and stay independent; either kind of stack resumes from the other's state."""

import math

import pytest
import torch

from bench.config import resolve, stack_key
from bench.run.stacks import cpu_workers
from bench.train.placement import Placement
from bench.train.stacks import LockstepStack, VectorisedStack, make_stack, run_states
from bench.train.trainer import Trainer, train
from models.presets import Objective

COLUMNS = ("loss", "recon", "kl", "tc", "capacity", "capacity_gap", "disc_acc")


def images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 32, 32), generator=g, dtype=torch.uint8)


def small(model, seed, recipe="described", **overrides):
    return resolve(model, "mnist", seed, "smoke", {"epochs": 2, "batch_size": 16, "z_dim": 6, **overrides}, recipe)


def solo(config, train_images, test_images):
    return [row for result, _ in train(config, train_images, test_images) for row in result.rows]


def build(configs, train_images, test_images, device="cpu", vectorised=True, cuda_graphs=False, workers=1):
    """A stack of either kind on any device (bench run picks vectorised on a GPU only: make_stack)."""
    runs = [Trainer(c, train_images, test_images, device) for c in configs]
    return VectorisedStack(runs, cuda_graphs) if vectorised else LockstepStack(runs, workers)


def stacked(configs, train_images, test_images, device="cpu", cuda_graphs=False, vectorised=True, workers=1):
    stack = build(configs, train_images, test_images, device, vectorised, cuda_graphs, workers)
    rows = {c.run_id: [] for c in configs}
    for _ in range(configs[0].epochs):
        for config, result in zip(configs, stack.run_epoch()):
            rows[config.run_id] += result.rows
    return rows


# Absolute floors in float32, for terms near zero whose rounding is absolute, not relative: KL (1e-2
# nats here) sums differences of O(1) terms, TC (-4e-3 nats) is a difference of two logits that the
# discriminator's chaos amplifies, and an accuracy moves in steps of one decision. Measured between a
# stacked and a solo run, native and generic kernels: loss and recon within 2.1e-7 relative, KL within
# 3.1e-6 nats, TC within 2.6e-5 nats. Float64 holds every column to 1e-9 relative (floor 1e-11).
FLOAT32_FLOORS = {"tc": 1e-4, "disc_acc": 0.05, "kl_dims": 1e-5}


def assert_close(got, expected, rtol, floors=FLOAT32_FLOORS):
    assert [(r["epoch"], r["split"], r["step"], r["n_images"]) for r in got] == [
        (r["epoch"], r["split"], r["step"], r["n_images"]) for r in expected]
    for g, e in zip(got, expected):
        for column in COLUMNS:
            if math.isnan(e[column]):
                assert math.isnan(g[column]), column
            else:
                floor = floors.get(column, 1e-5) if rtol >= 1e-4 else rtol / 100
                assert g[column] == pytest.approx(e[column], rel=rtol, abs=floor), (g["split"], column)
        floor = floors["kl_dims"] if rtol >= 1e-4 else rtol / 100
        assert g["kl_dims"] == pytest.approx(e["kl_dims"], rel=rtol, abs=floor), g["split"]


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-4), ("float64", 1e-9)])
@pytest.mark.parametrize("models", [("vae", "betavae", "cvae", "cvae-burgess"), ("factorvae", "cfactorvae")])
def test_a_stacked_run_gives_its_solo_numbers(dtype, rtol, models):
    train_images, test_images = images(64), images(40, seed=1)
    configs = [small(model, seed, dtype=dtype) for model in models for seed in (0, 1)]
    together = stacked(configs, train_images, test_images)
    for config in configs:
        assert_close(together[config.run_id], solo(config, train_images, test_images), rtol)


AUTHOR_FAMILIES = [("vae", "betavae", "cvae"), ("factorvae", "cfactorvae")]
# The author recipe's lr of 1e-3 amplifies float32 rounding in the terms near zero: the same solo run
# on 1 and on 2 torch threads parted by 2.4e-4 nats of KL (factorvae seed 1) and 1.1e-2 (cvae seed 1)
# within these 10 updates, against 3.5e-9 and 6.0e-9 in the described recipe. A stack parts from its
# solo runs as much: by 1.1e-2 nats of KL and |KL - C| (cvae seed 1) on one thread of an AVX512 Xeon,
# 1.5e-4 on two. Float64 holds every column to 1e-9 relative, as in the described recipe.
AUTHOR_FLOAT32_FLOORS = {**FLOAT32_FLOORS, "kl": 2e-2, "capacity_gap": 2e-2, "kl_dims": 2e-2}


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-4), ("float64", 1e-9)])
@pytest.mark.parametrize("models", AUTHOR_FAMILIES)
def test_a_vectorised_author_recipe_run_gives_its_solo_numbers(dtype, rtol, models):
    # 70 images in batches of 16: a kept last batch of 6, which a vectorised stack updates with buffers of its own
    train_images, test_images = images(70), images(40, seed=1)
    configs = [small(model, seed, "author", dtype=dtype) for model in models for seed in (0, 1)]
    together = stacked(configs, train_images, test_images)
    for config in configs:
        expected = solo(config, train_images, test_images)
        assert [r["n_images"] for r in expected if r["split"] == "train"] == [70, 70]
        assert_close(together[config.run_id], expected, rtol, AUTHOR_FLOAT32_FLOORS)


def without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.fixture
def one_torch_thread():
    """One torch thread for one test: the suite runs two test processes on two cores, and more
    threads than cores made a test ten times slower. The process's count comes back afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


VAE_FAMILY, FACTOR_FAMILY = ("vae", "betavae", "cvae", "cvae-burgess"), ("factorvae", "cfactorvae")


@pytest.mark.parametrize("models, workers, recipe", [(VAE_FAMILY, 1, "described"), (VAE_FAMILY, 3, "described"),
                                                     (FACTOR_FAMILY, 1, "described"), (FACTOR_FAMILY, 2, "described"),
                                                     (AUTHOR_FAMILIES[1], 2, "author")])
def test_a_lockstep_run_gives_its_solo_numbers_bit_for_bit(models, workers, recipe, one_torch_thread):
    # workers > 1: the runs' epochs are trained side by side on that many threads
    train_images, test_images = images(70 if recipe == "author" else 64), images(40, seed=1)
    configs = [small(model, seed, recipe, dtype="float32") for model in models for seed in (0, 1)]  # channels-last
    together = stacked(configs, train_images, test_images, vectorised=False, workers=workers)
    for config in configs:
        assert without_seconds(together[config.run_id]) == without_seconds(solo(config, train_images, test_images))


@pytest.mark.parametrize("runs, threads, expected", [(1, 2, (1, 2)), (2, 2, (2, 1)), (5, 2, (2, 1)), (2, 8, (2, 4)),
                                                     (3, 8, (3, 2)), (1, 1, (1, 1)), (4, 1, (1, 1))])
@pytest.mark.fast
def test_a_lockstep_stack_never_keeps_more_threads_busy_than_it_has(runs, threads, expected):
    workers, each = cpu_workers(runs, threads)
    assert (workers, each) == expected and workers * each <= threads


@pytest.mark.fast
def test_a_lockstep_stack_trains_at_least_one_run_at_a_time():
    with pytest.raises(ValueError, match="workers=0"):
        build([small("vae", 0)], images(32), images(16), vectorised=False, workers=0)


@pytest.mark.fast
def test_a_cpu_placement_makes_a_lockstep_stack():  # which placements are vectorised: tests/test_placement.py
    assert isinstance(make_stack([small("vae", 0)], images(32), images(16), Placement("cpu")), LockstepStack)


@pytest.mark.fast
def test_a_vectorised_stack_weighs_each_runs_terms_by_its_own_coefficients():
    # (recon, kl, gap, tc) of two runs; by hand: 10 + 1*2 + 0*3 + 6.4*0.5 = 15.2 and 20 + 0*4 + 1*5 + 2*(-1) = 23
    terms = [torch.tensor([10.0, 20.0]), torch.tensor([2.0, 4.0]), torch.tensor([3.0, 5.0]), torch.tensor([0.5, -1.0])]
    per_run = Objective(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([6.4, 2.0]))
    assert per_run.combine(*terms).tolist() == pytest.approx([15.2, 23.0])
    # without a discriminator its TC is NaN and its weight the number 0: the term is left out
    no_tc = Objective(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), 0.0)
    assert no_tc.combine(*terms[:3], torch.tensor([math.nan, math.nan])).tolist() == pytest.approx([12.0, 25.0])


def test_a_run_does_not_depend_on_what_it_is_stacked_with():
    train_images, test_images = images(64), images(40, seed=1)
    alone = stacked([small("cfactorvae", 3, dtype="float64")], train_images, test_images)
    crowd = [small("factorvae", 0, dtype="float64"), small("cfactorvae", 3, dtype="float64"),
             small("cfactorvae", 5, dtype="float64", gamma=20.0)]
    together = stacked(crowd, train_images, test_images)
    run_id = crowd[1].run_id
    assert_close(together[run_id], alone[run_id], 1e-9)


@pytest.mark.fast
def test_runs_that_differ_in_shape_or_optimiser_cannot_share_a_stack():
    assert stack_key(small("vae", 0)) == stack_key(small("cvae", 4, c_max=10.0))
    assert stack_key(small("vae", 0)) != stack_key(small("factorvae", 0))  # one has a discriminator
    assert stack_key(small("vae", 0)) != stack_key(small("vae", 0, lr=2e-4))
    assert stack_key(small("vae", 0)) != stack_key(small("vae", 0, dtype="float64"))
    with pytest.raises(ValueError, match="must share"):
        make_stack([small("vae", 0), small("vae", 1, z_dim=8)], images(32), images(16), Placement("cpu"))


def test_a_vectorised_stack_repeats_its_bits():  # a lockstep one is its runs' solo updates, tested above
    train_images, test_images = images(64), images(40, seed=1)
    configs = [small("factorvae", 0), small("cfactorvae", 1)]
    first = stacked(configs, train_images, test_images)
    second = stacked(configs, train_images, test_images)
    assert all(without_seconds(first[c.run_id]) == without_seconds(second[c.run_id]) for c in configs)


def test_cuda_graphs_need_a_cuda_device():
    with pytest.raises(ValueError, match="CUDA device"):
        build([small("vae", 0)], images(32), images(16), "cpu", cuda_graphs=True)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
@pytest.mark.parametrize("models", [("vae", "betavae", "cvae"), ("factorvae", "cfactorvae")])
def test_a_graphed_stack_repeats_the_eager_stack_bit_for_bit(models):
    # 3 epochs of 4 updates: 3 eager warm-up updates, the capture, then 8 replays across epoch ends.
    train_images, test_images = images(64), images(40, seed=1)
    configs = [small(model, seed, epochs=3) for model in models for seed in (0, 1)]
    eager = stacked(configs, train_images, test_images, "cuda")
    graphed = stacked(configs, train_images, test_images, "cuda", cuda_graphs=True)
    def drop(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert all(drop(graphed[c.run_id]) == drop(eager[c.run_id]) for c in configs)


@needs_cuda
@pytest.mark.parametrize("models", [("vae", "betavae", "cvae"), ("factorvae", "cfactorvae")])
def test_a_graphed_stack_gives_its_solo_numbers(models):
    train_images, test_images = images(64), images(40, seed=1)
    configs = [small(model, seed, epochs=3) for model in models for seed in (0, 1)]
    together = stacked(configs, train_images, test_images, "cuda", cuda_graphs=True)
    for config in configs:
        alone = [row for result, _ in train(config, train_images, test_images, "cuda") for row in result.rows]
        assert_close(together[config.run_id], alone, 1e-4)


@pytest.mark.parametrize("device, vectorised", [("cpu", True), ("cpu", False), pytest.param("cuda", True, marks=needs_cuda)])
def test_a_stack_restored_from_its_state_continues_with_the_same_bits(device, vectorised, tmp_path):
    from bench.records import load_checkpoint, save_checkpoint

    train_images, test_images = images(64), images(40, seed=1)
    configs = [small("factorvae", 0, epochs=3), small("cfactorvae", 1, epochs=3)]
    whole = build(configs, train_images, test_images, device, vectorised)
    first = build(configs, train_images, test_images, device, vectorised)
    for _ in range(2):
        whole.run_epoch(), first.run_epoch()
    save_checkpoint(tmp_path / "c.pt", {"trainer": first.state_dict()})
    restored = build(configs, train_images, test_images, device, vectorised)
    restored.load_state_dict(load_checkpoint(tmp_path / "c.pt")["trainer"])
    expected, got = whole.run_epoch(), restored.run_epoch()
    assert [without_seconds(r.rows) for r in got] == [without_seconds(r.rows) for r in expected]


def assert_same_state(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_state(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_state(x, y)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("source", [True, False])
def test_either_kind_of_stack_loads_the_others_state(source):
    train_images, test_images = images(64), images(40, seed=1)
    configs = [small("factorvae", 0), small("cfactorvae", 1)]
    trained = build(configs, train_images, test_images, vectorised=source)
    trained.run_epoch()
    other = build(configs, train_images, test_images, vectorised=not source)
    other.load_state_dict(trained.state_dict())
    assert_same_state(run_states(other.state_dict(), 2), run_states(trained.state_dict(), 2))
    for mine, theirs in zip(other.runs, trained.runs):  # the networks that evaluate and get saved
        for net in ("vae", "disc"):
            assert_same_state(getattr(mine, net).state_dict(), getattr(theirs, net).state_dict())


def test_a_lockstep_stacks_state_holds_its_runs_tensors_not_copies():
    trained = build([small("factorvae", 0), small("cfactorvae", 1)], images(64), images(40, seed=1), vectorised=False)
    trained.run_epoch()
    state = trained.state_dict()
    for run, saved in zip(trained.runs, state["runs"], strict=True):
        assert saved["vae"]["encoder.head.1.weight"].data_ptr() == run.vae.encoder.head[1].weight.data_ptr()
        first = run.disc_params[0]
        assert saved["d_opt"]["state"][0]["exp_avg"].data_ptr() == run.d_opt.state[0]["exp_avg"].data_ptr() != first.data_ptr()
    with pytest.raises(ValueError, match="state is of 2 runs, this stack has 1"):
        build([small("factorvae", 0)], images(64), images(40, seed=1), vectorised=False).load_state_dict(state)


def test_a_stack_of_one_loads_the_state_of_its_run_alone(tmp_path):
    # the checkpoint of a run trained without stacking holds its trainer's own state
    config = small("factorvae", 0, epochs=3)
    train_images, test_images = images(64), images(40, seed=1)
    alone = Trainer(config, train_images, test_images)
    alone.run_epoch()
    stack = build([config], train_images, test_images, vectorised=False)
    stack.load_state_dict(alone.state_dict())
    assert without_seconds(stack.run_epoch()[0].rows) == without_seconds(alone.run_epoch().rows)
