"""The parquet contract: schema, atomic publish, reading the tree, rejecting foreign files."""

import json

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from support import record_meta

from bench.config import ADDED_DEFAULTS
from bench.records import (
    COLUMNS,
    CONFIG_FIELDS,
    RecordError,
    config_key,
    final_values,
    read_run,
    read_tree,
    run_files,
    run_path,
    write_run,
)

pytestmark = pytest.mark.fast

CONTRACT = ["run_id", "model", "dataset", "seed", "epoch", "split", "step", "loss", "recon", "kl", "tc",
            "capacity", "capacity_gap", "disc_acc", "kl_dims", "active_dims", "n_images", "seconds"]


def row(model="vae", seed=0, epoch=1, split="train", loss=1.0):
    return {"run_id": f"{model}{seed}", "model": model, "dataset": "mnist", "seed": seed, "epoch": epoch,
            "split": split, "step": 10 * epoch, "loss": loss, "recon": loss, "kl": 0.0, "tc": float("nan"),
            "capacity": float("nan"), "capacity_gap": float("nan"), "disc_acc": float("nan"),
            "kl_dims": [0.0, 0.0], "active_dims": 0, "n_images": 64, "seconds": 0.1}


def publish(root, model, seed, rows, status="finished"):
    path = run_path(root, "mnist", model, seed, f"{model}{seed}")
    write_run(path, rows, record_meta(f"{model}{seed}", {"model": model, "seed": seed, "dataset": "mnist", "epochs": 2}, status))
    return path


def test_columns_are_the_public_contract():
    assert list(COLUMNS) == CONTRACT


def test_round_trip_and_layout(tmp_path):
    path = publish(tmp_path, "cvae", 3, [row("cvae", 3, 1), row("cvae", 3, 1, "test")])
    assert path == tmp_path / "mnist" / "cvae" / "seed-3" / "cvae3.parquet"
    rows, meta = read_run(path)
    assert list(rows.columns) == CONTRACT
    assert rows["split"].tolist() == ["train", "test"]
    assert meta["status"] == "finished"
    assert [f.name for f in path.parent.iterdir()] == ["cvae3.parquet"]  # no temporary file left behind


def test_whole_tree_reads_with_pandas_and_pyarrow(tmp_path):
    for model in ("vae", "cvae"):
        for seed in (0, 1):
            publish(tmp_path, model, seed, [row(model, seed, 1), row(model, seed, 2)])
    frame = pd.read_parquet(tmp_path)
    assert len(frame) == 8 and set(frame.columns) == set(CONTRACT)
    assert frame.groupby("model")["seed"].nunique().to_dict() == {"cvae": 2, "vae": 2}
    assert pads.dataset(tmp_path, format="parquet").count_rows() == 8
    rows, runs = read_tree(tmp_path)
    assert len(rows) == 8
    assert sorted(runs["run_id"]) == ["cvae0", "cvae1", "vae0", "vae1"]
    assert set(runs["epochs_done"]) == {2}


def test_temporary_files_are_not_runs(tmp_path):
    path = publish(tmp_path, "vae", 0, [row()])
    (path.parent / ".vae0.parquet.tmp123").write_bytes(b"partial")
    assert run_files(tmp_path) == [path]


def test_failed_write_leaves_nothing(tmp_path):
    bad = [{**row(), "epoch": "not a number"}]
    with pytest.raises(pa.ArrowInvalid):
        publish(tmp_path, "vae", 0, bad)
    assert list(tmp_path.rglob("*")) == [p for p in tmp_path.rglob("*") if p.is_dir()]


def test_no_runs_is_an_error(tmp_path):
    with pytest.raises(RecordError, match="no run files"):
        read_tree(tmp_path)


def test_corrupt_file_is_named(tmp_path):
    publish(tmp_path, "vae", 0, [row()])
    bad = tmp_path / "mnist" / "vae" / "seed-0" / "broken.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(RecordError, match="broken.parquet"):
        read_tree(tmp_path)


def test_foreign_parquet_is_named(tmp_path):
    publish(tmp_path, "vae", 0, [row()])
    foreign = tmp_path / "other.parquet"
    pq.write_table(pa.table({"a": [1, 2]}), foreign)
    with pytest.raises(RecordError, match="other.parquet.*not a bench run file"):
        read_tree(tmp_path)


def test_metadata_is_json_in_the_file(tmp_path):
    path = publish(tmp_path, "vae", 0, [row()], status="running")
    raw = pq.read_schema(path).metadata[b"bench.run"]
    assert json.loads(raw)["status"] == "running"


def test_final_values_take_the_last_epoch_and_skip_nan_only_when_diverged(tmp_path):
    nan = float("nan")
    finished = [row("vae", 0, 1, "train", 5.0), row("vae", 0, 2, "train", 3.0),
                row("vae", 0, 1, "test", 4.0), row("vae", 0, 2, "test", 2.5)]
    diverged = [row("cvae", 0, 1, "train", 7.0), row("cvae", 0, 2, "train", nan),
                row("cvae", 0, 1, "test", 6.0), row("cvae", 0, 2, "test", nan)]
    publish(tmp_path, "vae", 0, finished)
    publish(tmp_path, "cvae", 0, diverged, status="diverged")
    finals = final_values(*read_tree(tmp_path)).set_index("model")
    assert (finals.loc["vae", "train_loss"], finals.loc["vae", "test_recon"]) == (3.0, 2.5)
    assert finals.loc["vae", "test_recon_epoch"] == 2
    assert (finals.loc["cvae", "train_loss"], finals.loc["cvae", "test_loss"]) == (7.0, 6.0)
    assert finals.loc["cvae", "train_loss_epoch"] == 1
    # The seed is not part of the configuration key: seeds of one setting share it.
    assert config_key({"model": "vae", "seed": 0, "lr": 1e-4}) == config_key({"seed": 3, "lr": 1e-4, "model": "vae"})


def test_a_config_read_from_an_older_record_gets_the_fields_added_since(tmp_path):
    path = run_path(tmp_path, "mnist", "vae", 0, "old")
    meta = record_meta("old", {"model": "vae", "dataset": "mnist", "seed": 0})
    full = meta["config"]
    # A record of format 1, as the first version wrote it: no fields of later formats or configs.
    for key in ("format", "host", "pid", "cuda_graphs", "stack_size"):
        del meta[key]
    meta["config"] = {key: value for key, value in full.items() if key not in ADDED_DEFAULTS}
    write_run(path, [], meta)
    _, runs = read_tree(tmp_path)
    assert runs.loc[0, "config"] == full


def test_the_schema_of_a_config_is_runconfigs():
    import dataclasses

    from bench.config import RunConfig

    assert {f.name: f.type for f in dataclasses.fields(RunConfig)} == {k: t.__name__ for k, t in CONFIG_FIELDS.items()}
    assert set(ADDED_DEFAULTS) <= set(CONFIG_FIELDS)


def test_a_finished_record_with_a_non_finite_loss_reads_as_diverged(tmp_path):
    publish(tmp_path, "vae", 0, [row("vae", 0, 1, "train", 5.0), row("vae", 0, 1, "test", float("inf"))])
    publish(tmp_path, "vae", 1, [row("vae", 1, 1, "train", 5.0), row("vae", 1, 1, "test", 4.0)])
    _, runs = read_tree(tmp_path)
    assert runs.set_index("seed")["status"].to_dict() == {0: "diverged", 1: "finished"}


def test_a_record_from_before_the_per_dimension_columns_reads_them_as_missing(tmp_path):
    old_schema = pa.schema([f for f in pq.read_schema(publish(tmp_path, "vae", 0, [row()])) if f.name not in ("kl_dims", "active_dims")])
    path = run_path(tmp_path, "mnist", "vae", 1, "vae1")
    path.parent.mkdir(parents=True)
    meta = record_meta("vae1", {"model": "vae", "seed": 1, "dataset": "mnist", "epochs": 2}, format=2)
    table = pa.Table.from_pylist([row("vae", 1)], schema=old_schema).replace_schema_metadata(
        {b"bench.run": json.dumps(meta).encode()})
    pq.write_table(table, path)
    rows, _ = read_run(path)
    assert list(rows.columns) == CONTRACT
    assert rows["kl_dims"].isna().all() and rows["active_dims"].isna().all()
    assert rows["loss"].tolist() == [1.0]
    both, runs = read_tree(tmp_path)
    assert len(both) == 2 and list(both["kl_dims"].iloc[0]) == [0.0, 0.0]
