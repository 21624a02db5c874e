"""Profiles, presets, overrides and run ids."""

import hashlib
import json

import pytest
from support import REPO

from bench.config import PROFILES, RunConfig, parse_overrides, resolve
from bench.errors import BenchError
from bench.records import read_tree, run_files

pytestmark = pytest.mark.fast


def test_paper_profile_defaults():
    cfg = resolve("cfactorvae", "mnist", 0, "paper")
    assert (cfg.z_dim, cfg.batch_size, cfg.lr, cfg.beta1, cfg.beta2, cfg.epochs) == (20, 64, 1e-4, 0.9, 0.999, 50)
    assert (cfg.w_kl, cfg.w_cap, cfg.gamma, cfg.c_max) == (0.0, 1.0, 6.4, 25.0)
    assert (cfg.d_lr, cfg.d_beta1, cfg.d_beta2) == (1e-4, 0.5, 0.9)
    assert (cfg.train_subset, cfg.test_subset) == (0, 0)


@pytest.mark.parametrize("model, weights", [
    ("vae", (1, 0, 0)), ("betavae", (4, 0, 0)), ("cvae", (0, 1, 0)),
    ("factorvae", (1, 0, 6.4)), ("cfactorvae", (0, 1, 6.4)), ("cvae-burgess", (0, 1000, 0)),
])
def test_presets(model, weights):
    cfg = resolve(model, "mnist", 0, "paper")
    assert (cfg.w_kl, cfg.w_cap, cfg.gamma) == weights


def test_overrides_win_over_profile_and_preset():
    cfg = resolve("factorvae", "mnist", 1, "smoke", parse_overrides(["gamma=10", "epochs=3"]))
    assert cfg.gamma == 10.0 and cfg.epochs == 3 and cfg.train_subset == PROFILES["smoke"]["train_subset"]


def test_run_id_is_a_hash_of_the_resolved_config():
    a = resolve("vae", "mnist", 0, "smoke")
    assert a.run_id == resolve("vae", "mnist", 0, "smoke").run_id
    assert a.run_id != resolve("vae", "mnist", 1, "smoke").run_id
    assert a.run_id != resolve("vae", "mnist", 0, "smoke", {"lr": 2e-4}).run_id
    assert RunConfig.from_dict(a.to_dict()) == a


@pytest.mark.parametrize("pair, message", [
    ("gamma", "expected key=value"),
    ("nope=1", "unknown key"),
    ("gamma=abc", "not a valid float"),
    ("epochs=1.5", "not a valid int"),
    ("epochs=0", "at least 1"),
    ("lr=-1", "must be positive"),
    ("gamma=nan", "finite"),
    ("beta2=1", r"\[0, 1\)"),
    ("model=vae", "unknown key"),
    ("dtype=float16", "choose from float32, float64"),
])
def test_bad_overrides(pair, message):
    with pytest.raises(BenchError, match=message):
        parse_overrides([pair])


def test_unknown_model_and_profile():
    with pytest.raises(BenchError, match="unknown model 'vea'"):
        resolve("vea", "mnist", 0, "paper")
    with pytest.raises(BenchError, match="unknown profile"):
        resolve("vae", "mnist", 0, "fast")


def test_dtype_is_a_setting_and_part_of_the_run_id():
    assert parse_overrides(["dtype=float64"]) == {"dtype": "float64"}
    single = resolve("vae", "mnist", 0, "smoke")
    double = resolve("vae", "mnist", 0, "smoke", {"dtype": "float64"})
    assert single.dtype == "float32" and double.dtype == "float64" and single.run_id != double.run_id


# The fields of the first published records: runs of the described recipe in float32 hash only these.
FIRST_FIELDS = ("model", "dataset", "seed", "epochs", "batch_size", "lr", "beta1", "beta2", "z_dim", "w_kl", "w_cap",
                "gamma", "c_max", "c_ramp", "d_lr", "d_beta1", "d_beta2", "train_subset", "test_subset")


def test_a_described_float32_run_id_is_the_hash_of_the_first_fields_only():
    # Records written before dtype and the recipe fields existed carry ids hashed without them; the defaults keep matching.
    config = resolve("cfactorvae", "mnist", 3, "quick")
    fields = {k: getattr(config, k) for k in FIRST_FIELDS}
    assert config.run_id == hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def test_the_recipe_and_each_of_its_knobs_enter_the_run_id():
    described, author = resolve("cvae", "mnist", 0, "paper"), resolve("cvae", "mnist", 0, "paper", recipe="author")
    assert author.recipe == "author" and author.run_id != described.run_id
    ids = {described.run_id}
    for key, value in [("nets", "author"), ("init", "torch0.4"), ("capacity_form", "sample"), ("c_schedule", "staircase"),
                       ("disc", "author"), ("perm_batch", "same"), ("last_batch", "keep"), ("reduction", "sum")]:
        ids.add(resolve("cvae", "mnist", 0, "paper", parse_overrides([f"{key}={value}"])).run_id)
    assert len(ids) == 9


def test_the_committed_records_keep_their_run_ids():
    files = run_files(REPO / "results" / "records")
    _, runs = read_tree(REPO / "results" / "records")
    assert len(files) == len(runs) >= 60
    for run in runs.to_dict("records"):
        assert RunConfig.from_dict(run["config"]).run_id == run["run_id"], run["path"]
