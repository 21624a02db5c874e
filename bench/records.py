"""The parquet contract: one file per run, one row per (epoch, split), metadata in the file.

Layout: ``<root>/<dataset>/<model>/seed-<s>/<run_id>.parquet``, with the run's final weights in
``seed-<s>/_weights/<run_id>.pt`` and, on a dataset with known factors, its disentanglement scores
in ``seed-<s>/_metrics/<run_id>.parquet`` (:data:`METRICS_SCHEMA`; parquet readers skip ``_``-prefixed paths). ``pandas.read_parquet(root)`` and ``pyarrow.dataset.dataset(root)``
read the whole tree. The folders are deliberately not hive-style ``key=value``: pandas would
then infer model, dataset and seed as partition columns whose types clash with the same
columns inside each file, and each file must stay self-describing on its own. Files are published atomically: written to a
dot-prefixed temporary name in the same folder, then moved over the final name.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.config import ADDED_DEFAULTS
from bench.errors import BenchError

# The public column contract: names users, the report and CI query.
SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("model", pa.string()),
        ("dataset", pa.string()),
        ("seed", pa.int64()),
        ("epoch", pa.int64()),
        ("split", pa.string()),
        ("step", pa.int64()),
        ("loss", pa.float64()),
        ("recon", pa.float64()),
        ("kl", pa.float64()),
        ("tc", pa.float64()),
        ("capacity", pa.float64()),
        ("capacity_gap", pa.float64()),
        ("disc_acc", pa.float64()),
        ("kl_dims", pa.list_(pa.float64())),
        ("active_dims", pa.int64()),
        ("n_images", pa.int64()),
        ("seconds", pa.float64()),
    ]
)
COLUMNS = tuple(SCHEMA.names)
# One row per (run, metric), written when a run on a dataset with known factors finishes. ``value``
# is the score; the other columns say how it was measured: the metric generator's seed, the sample
# counts (bench.eval.metrics.MetricCounts, whose fields they are), what represented an image, and the
# seconds all of a run's metrics took together.
METRICS_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("model", pa.string()),
        ("dataset", pa.string()),
        ("seed", pa.int64()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("metric_seed", pa.int64()),
        ("n_train", pa.int64()),
        ("n_test", pa.int64()),
        ("mig_bins", pa.int64()),
        ("factorvae_batch_size", pa.int64()),
        ("factorvae_n_train", pa.int64()),
        ("factorvae_n_eval", pa.int64()),
        ("factorvae_n_variance", pa.int64()),
        ("dci_rounds", pa.int64()),
        ("representation", pa.string()),
        ("seconds", pa.float64()),
    ]
)
# Columns added in record format 3: each latent dimension's mean KL in nats, and how many of them
# exceed bench.config.ACTIVE_KL. A record of an earlier format reads them as missing values.
PER_DIM_COLUMNS = ("kl_dims", "active_dims")
# The final-epoch numbers of Table 1 and of the regression references: (key, split, column).
FINAL_METRICS = (
    ("train_loss", "train", "loss"),
    ("train_recon", "train", "recon"),
    ("test_loss", "test", "loss"),
    ("test_recon", "test", "recon"),
)
META_KEY = b"bench.run"
# The version of the metadata layout a record is written in; records without the key are format 1.
# Format 2 added ``format``, ``cuda_graphs`` and, for a diverged run, ``diverged_epoch``;
# format 3 the PER_DIM_COLUMNS.
RECORD_FORMAT = 3
READABLE_FORMATS = (1, 2, 3)
CHECKPOINT_FORMAT = 2  # 2: a lockstep stack saves each run's own state (1: stacked like a vectorised one)
CHECKPOINT_FORMATS_READ = (1, 2)
# The metadata of a record: each field's JSON types and the first record format whose every record has
# it (None: optional in every format, checked where present). Read from the writers' history and the
# committed records: records of format 1 lack format, host, pid and cuda_graphs, and the oldest of them
# stack_size; diverged_epoch, error, resumed_at_epochs and renamed_from appear only where they apply.
META_FIELDS: dict[str, tuple[tuple[type, ...], int | None]] = {
    "format": ((int,), None),  # absent: format 1
    "run_id": ((str,), 1),
    "profile": ((str,), 1),
    "config": ((dict,), 1),
    "status": ((str,), 1),
    "versions": ((dict,), 1),
    "platform": ((str,), 1),
    "device": ((str,), 1),
    "threads": ((int,), 1),
    "git_commit": ((str, type(None)), 1),  # null where git could not name the commit
    "started": ((str,), 1),
    "wall_seconds": ((int, float), 1),
    "stack_size": ((int,), 2),
    "cuda_graphs": ((bool,), 2),
    "host": ((str,), 2),
    "pid": ((int,), 2),
    "diverged_epoch": ((int,), None),
    "error": ((str,), None),
    "resumed_at_epochs": ((list,), None),
    "renamed_from": ((dict,), None),  # the model and run id of a run relabelled when its objective was renamed
    "cpu": ((str,), None),  # the CPU's model name; records written before it was kept lack it
    "cpu_capability": ((str,), None),  # the kernels torch dispatched to (AVX512, AVX2, DEFAULT); likewise
}
STATUSES = ("running", "finished", "diverged", "failed")
VERSION_KEYS = ("python", "torch", "torchvision")
# RunConfig's fields and their JSON types, written out because bench.config imports torch and reading
# records must not (tests/test_records.py holds them to RunConfig). A config lacks only ADDED_DEFAULTS'.
CONFIG_FIELDS: dict[str, type] = {
    "model": str, "dataset": str, "seed": int, "epochs": int, "batch_size": int, "lr": float, "beta1": float,
    "beta2": float, "z_dim": int, "w_kl": float, "w_cap": float, "gamma": float, "c_max": float, "c_ramp": int,
    "d_lr": float, "d_beta1": float, "d_beta2": float, "train_subset": int, "test_subset": int, "dtype": str,
    "recipe": str, "nets": str, "init": str, "capacity_form": str, "c_schedule": str, "c_step": float, "disc": str,
    "perm_batch": str, "last_batch": str, "reduction": str,
}


class RecordError(BenchError):
    """A run file that is missing, corrupt or not one of ours."""


def run_dir(root: Path, dataset: str, model: str, seed: int) -> Path:
    return Path(root) / dataset / model / f"seed-{seed}"


def run_path(root: Path, dataset: str, model: str, seed: int, run_id: str) -> Path:
    return run_dir(root, dataset, model, seed) / f"{run_id}.parquet"


def weights_path(record: Path) -> Path:
    """Where the final weights of the run recorded at ``record`` live."""
    return record.parent / "_weights" / f"{record.stem}.pt"


def metrics_path(record: Path) -> Path:
    """Where the disentanglement scores of the run recorded at ``record`` live."""
    return record.parent / "_metrics" / f"{record.stem}.parquet"


def write_metrics(path: Path, rows: list[dict]) -> None:
    """Publish a run's metric rows (dicts with the METRICS_SCHEMA columns) atomically."""
    table = pa.Table.from_pylist(rows, schema=METRICS_SCHEMA)
    publish_atomic(Path(path), lambda tmp: pq.write_table(table, tmp))


def read_metrics(root: Path) -> pd.DataFrame:
    """Every metric row under root (empty, with the schema's columns, when there are none)."""
    frames = []
    for path in sorted(Path(root).rglob("_metrics/*.parquet")):
        if path.name.startswith("."):
            continue
        try:
            table = pq.read_table(path, schema=METRICS_SCHEMA)
        except Exception as exc:
            raise RecordError(f"{path}: not a readable metrics file ({type(exc).__name__}); delete it, and "
                              f"bench metrics --runs {root} scores the run again") from None
        # Files from before the column were all scored with sklearn's default of 100 rounds.
        rounds = METRICS_SCHEMA.get_field_index("dci_rounds")
        frames.append(table.set_column(rounds, "dci_rounds", pc.fill_null(table["dci_rounds"], 100)).to_pandas())
    return pd.concat(frames, ignore_index=True) if frames else METRICS_SCHEMA.empty_table().to_pandas()


def checkpoint_dir(root: Path) -> Path:
    """Where the checkpoints of the unfinished stacks of a records folder are kept."""
    return Path(root) / "_checkpoints"


def publish_atomic(path: Path, write) -> None:
    """Write through ``write(tmp_path)`` to a hidden temporary file, then atomically rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    # mkstemp makes the file private; a published record gets the usual umask-derived mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_run(path: Path, rows: list[dict], meta: dict) -> None:
    """Publish a run's rows (dicts with the SCHEMA columns) and its metadata atomically."""
    table = pa.Table.from_pylist(rows, schema=SCHEMA) if rows else SCHEMA.empty_table()
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})
    publish_atomic(Path(path), lambda tmp: pq.write_table(table, tmp))


def _torch_save(state: dict, path: str) -> None:
    """torch.save, with a failed write raised as the OSError it is (torch reports it as a RuntimeError)."""
    import torch

    try:
        torch.save(state, path)
    except RuntimeError:
        raise OSError(errno.EIO, f"{Path(path).name} could not be written in full (is the disk full?)") from None


def save_weights(path: Path, state: dict) -> None:
    """Publish a torch state dict atomically (torch is imported lazily: reading records needs none)."""
    publish_atomic(Path(path), lambda tmp: _torch_save(state, tmp))


def save_checkpoint(path: Path, state: dict) -> None:
    """Publish a checkpoint atomically: a kill at any moment leaves the previous one whole."""
    publish_atomic(Path(path), lambda tmp: _torch_save({"format": CHECKPOINT_FORMAT, **state}, tmp))


def verify_checkpoint(path: Path) -> None:
    """Read every byte of a checkpoint and check its checksums; BenchError naming the file if it is damaged."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except PermissionError as exc:
        raise BenchError(f"cannot read checkpoint {path} ({exc.strerror}); make it readable, or pass --fresh") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        bad = type(exc).__name__
    if bad is not None:
        raise BenchError(f"checkpoint {path} is damaged ({bad}); delete it, or pass --fresh to train its runs from the start")


def load_checkpoint(path: Path) -> dict:
    """A checkpoint's content, on the CPU: the trainers copy it to their devices, and a generator's
    state must stay a CPU tensor whatever the generator's device."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BenchError(f"checkpoint {path} is unreadable ({type(exc).__name__}); delete it, or pass --fresh") from None
    if not isinstance(state, dict) or state.get("format") not in CHECKPOINT_FORMATS_READ:
        raise BenchError(f"checkpoint {path} is not a checkpoint of this version of bench; delete it, or pass --fresh")
    return state


def read_meta(path: Path) -> dict:
    """The run metadata of one file; RecordError naming the file if it is unreadable, not a run file, of another
    record format, or not of the shape :data:`META_FIELDS` and :data:`CONFIG_FIELDS` give (:func:`meta_problem`)."""
    try:
        schema = pq.read_schema(path)
    except PermissionError as exc:
        raise RecordError(f"{path}: cannot read it ({exc.strerror or 'permission denied'}); make it readable "
                          "(chmod u+r) or move it out of the runs folder") from None
    except Exception as exc:
        raise RecordError(f"{path}: not a readable parquet file ({type(exc).__name__}); delete it or move it out of the runs folder") from None
    raw = (schema.metadata or {}).get(META_KEY)
    missing = [c for c in COLUMNS if c not in schema.names and c not in PER_DIM_COLUMNS]
    if raw is None or missing:
        raise RecordError(f"{path}: not a bench run file (missing {'metadata' if raw is None else ', '.join(missing)}); move it out of the runs folder")
    try:
        meta = json.loads(raw)
    except ValueError:
        raise RecordError(f"{path}: run metadata is not valid JSON; delete the file and rerun") from None
    form = meta.get("format", 1) if isinstance(meta, dict) else 1
    if isinstance(form, int) and not isinstance(form, bool) and form not in READABLE_FORMATS:
        raise RecordError(f"{path}: written by another version of bench (record format {form!r}; this one "
                          f"reads {', '.join(map(str, READABLE_FORMATS))}); move it out of the runs folder")
    problem = meta_problem(meta)
    if problem:
        raise RecordError(f"{path}: run metadata {problem}; it is not a record bench wrote: move it out of the runs "
                          "folder, or delete it and rerun")
    return meta


# How a message names the type of a decoded JSON value.
_JSON_KINDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
               dict: "an object", type(None): "null"}


def _kind(value) -> str:
    return _JSON_KINDS.get(type(value), type(value).__name__)


def _has_type(value, types: tuple[type, ...]) -> bool:
    # JSON's true and false decode to bool, a subclass of int: they are never a count or a number here.
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types:
        return True  # a hand-written 1 for 1.0
    return isinstance(value, types)


def meta_problem(meta) -> str | None:
    """What is wrong with decoded record metadata, against :data:`META_FIELDS` and :data:`CONFIG_FIELDS`.

    Parameters
    ----------
    meta : object
        The decoded JSON of a record's metadata.

    Returns
    -------
    str or None
        The first problem found, worded to follow "run metadata", e.g. ``"lacks 'status'"``; None
        when ``meta`` has the shape of a record's metadata in its format.
    """
    if not isinstance(meta, dict):
        return f"is {_kind(meta)}, not an object"
    form = meta.get("format", 1)
    for key, value in meta.items():
        if key not in META_FIELDS:
            return f"has an unknown field {key!r}"
        types = META_FIELDS[key][0]
        if not _has_type(value, types):
            return f"field {key!r} is {_kind(value)}, not {' or '.join(_JSON_KINDS[t] for t in types)}"
    for key, (_, since) in META_FIELDS.items():
        if since is not None and form >= since and key not in meta:
            return f"lacks {key!r}, which every record of format {form} has"
    if meta["status"] not in STATUSES:
        return f"field 'status' is {meta['status']!r}, not one of {', '.join(STATUSES)}"
    versions = meta["versions"]
    for key in VERSION_KEYS:
        if not isinstance(versions.get(key), str):
            return f"field 'versions' lacks the {key} version as a string"
    if not all(_has_type(epoch, (int,)) for epoch in meta.get("resumed_at_epochs", [])):
        return "field 'resumed_at_epochs' holds something other than epochs (integers)"
    if not all(isinstance(meta.get("renamed_from", {}).get(key, ""), str) for key in ("model", "run_id")):
        return "field 'renamed_from' holds a model or run id that is not a string"
    config = meta["config"]
    for key, value in config.items():
        if key not in CONFIG_FIELDS:
            return f"config has an unknown field {key!r}"
        if not _has_type(value, (CONFIG_FIELDS[key],)):
            return f"config field {key!r} is {_kind(value)}, not {_JSON_KINDS[CONFIG_FIELDS[key]]}"
    absent = [key for key in CONFIG_FIELDS if key not in config and key not in ADDED_DEFAULTS]
    if absent:
        return f"config lacks {', '.join(map(repr, absent))}"
    return None


def read_run(path: Path) -> tuple[pd.DataFrame, dict]:
    """One run's rows and metadata."""
    meta = read_meta(path)
    try:
        table = pq.read_table(path)
        for name in PER_DIM_COLUMNS:
            if name not in table.schema.names:
                table = table.append_column(SCHEMA.field(name), pa.nulls(len(table), SCHEMA.field(name).type))
        rows = table.select(list(COLUMNS)).to_pandas()
    except Exception as exc:
        raise RecordError(f"{path}: corrupt parquet data ({type(exc).__name__}); delete it and rerun") from None
    return rows, meta


def run_files(root: Path) -> list[Path]:
    """Every published run file under root, in a stable order (temporary files are dot-prefixed)."""
    root = Path(root)
    if not root.is_dir():
        return []
    # Like pyarrow's readers, skip every path with a part starting with "." or "_" (_metrics/, temporaries).
    return sorted(p for p in root.rglob("*.parquet")
                  if not any(part.startswith((".", "_")) for part in p.relative_to(root).parts))


def read_tree(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All rows under root and one summary row per run.

    Returns ``(rows, runs)``. ``runs`` has run_id, model, dataset, seed, profile, status,
    epochs (planned), epochs_done, wall_seconds, device, torch (version), threads, cpu (None where
    the record predates it), path and
    the full config as ``config``. A record that says ``finished`` but holds a non-finite loss
    has status ``diverged`` here: bench run stops a run at its first non-finite loss, so such a
    record was damaged or edited, and its numbers cannot enter a mean.
    Raises RecordError when root holds no run files or any file is not a valid run.
    """
    files = run_files(root)
    if not files:
        raise RecordError(f"no run files under {root}; run `bench run` first or pass --runs DIR")
    frames, summaries = [], []
    for path in files:
        rows, meta = read_run(path)
        config = {**ADDED_DEFAULTS, **meta["config"]}
        status = meta["status"]
        if status == "finished" and not np.isfinite(rows["loss"].to_numpy(dtype=float)).all():
            status = "diverged"
        frames.append(rows)
        summaries.append(
            {
                "run_id": meta["run_id"],
                "model": config["model"],
                "dataset": config["dataset"],
                "seed": config["seed"],
                "profile": meta["profile"],
                "status": status,
                "epochs": config["epochs"],
                "epochs_done": int(rows["epoch"].max()) if len(rows) else 0,
                "wall_seconds": meta["wall_seconds"],
                "device": meta["device"],
                "torch": meta["versions"]["torch"],
                "threads": meta["threads"],
                "cpu": meta.get("cpu"),
                "cpu_capability": meta.get("cpu_capability"),
                "path": str(path),
                "config": config,
            }
        )
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))
    return rows, pd.DataFrame(summaries)


def read_trees(roots) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`read_tree` of several records folders, in order: their rows, and their runs with ``source``.

    ``source`` is the folder's place in ``roots`` (0 for the first). A run id in two folders is
    refused: the same run counted twice would weigh double in every mean.
    """
    roots = [Path(root) for root in roots]
    seen = [root.resolve() for root in roots]
    for index, root in enumerate(seen):
        if root in seen[:index]:
            raise RecordError(f"records folder {roots[index]} given twice: pass each once")
    trees = [read_tree(root) for root in roots]
    for index, (_, runs) in enumerate(trees):
        runs["source"] = index
    rows = pd.concat([rows for rows, _ in trees], ignore_index=True)
    runs = pd.concat([runs for _, runs in trees], ignore_index=True)
    sources = runs.groupby("run_id")["source"].unique()
    twice = sources[sources.map(len) > 1]
    if len(twice):
        where = " and ".join(str(roots[i]) for i in sorted(twice.iloc[0]))
        raise RecordError(f"run {twice.index[0]} is in both {where}: land each run in one records folder")
    return rows, runs


def config_key(config: dict | None) -> str:
    """A run's configuration without its seed, as a comparable string: runs that share it are seeds of one setting."""
    config = dict(config or {})
    config.pop("seed", None)
    return json.dumps(config, sort_keys=True, default=str)


def config_rank(members: pd.DataFrame, key: str) -> tuple:
    """Sort key of one configuration's runs (``runs`` rows of :func:`read_tree`) when several compete.

    Finished runs first, then runs, then epochs; the key itself breaks the remaining ties, so the
    choice never depends on file order. Table 1 and the pictures choose the same runs by it.
    """
    epochs = pd.to_numeric(members["epochs"], errors="coerce").max()
    return int((members["status"] == "finished").sum()), len(members), np.nan_to_num(epochs), key


def final_values(rows: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Each run's numbers at its last recorded epoch, one row per run.

    Parameters
    ----------
    rows, runs : pandas.DataFrame
        As returned by :func:`read_tree`.

    Returns
    -------
    pandas.DataFrame
        The ``runs`` columns plus ``config_key`` and, for each key of :data:`FINAL_METRICS`,
        the value and ``<key>_epoch``. A diverged run gives, per metric, its last finite value.
    """
    by_run = dict(iter(rows.groupby("run_id", sort=False)))
    records = []
    for run in runs.to_dict("records"):
        mine = by_run.get(run["run_id"], rows.iloc[0:0])
        record = dict(run, config_key=config_key(run.get("config")))
        for key, split, column in FINAL_METRICS:
            part = mine[mine["split"] == split].sort_values(["epoch", "step"])
            if run.get("status") == "diverged":
                part = part[part[column].map(math.isfinite)]
            last = part.iloc[-1] if len(part) else None
            record[key] = float(last[column]) if last is not None else math.nan
            record[f"{key}_epoch"] = int(last["epoch"]) if last is not None else pd.NA
        records.append(record)
    return pd.DataFrame(records)
