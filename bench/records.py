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
import pyarrow.parquet as pq

from .errors import BenchError

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
# counts (bench.metrics.MetricCounts, whose fields they are), what represented an image, and the
# seconds the four metrics took together.
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
        ("representation", pa.string()),
        ("seconds", pa.float64()),
    ]
)
# Columns added in record format 3: each latent dimension's mean KL in nats, and how many of them
# exceed ACTIVE_KL. A record of an earlier format reads them as missing values.
PER_DIM_COLUMNS = ("kl_dims", "active_dims")
# A latent dimension is active when its mean KL exceeds this many nats (it then carries information).
ACTIVE_KL = 0.01
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
# RunConfig fields added after the first published records, with the value those records implicitly used:
# a config read from such a record gets them, so old and new runs of one setting compare equal.
ADDED_DEFAULTS = {"dtype": "float32", "recipe": "described", "nets": "table2", "init": "torch", "capacity_form": "batch",
                  "c_schedule": "linear", "c_step": 0.5, "disc": "kim-mnih", "perm_batch": "independent",
                  "last_batch": "drop", "reduction": "mean"}


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
            frames.append(pq.read_table(path, schema=METRICS_SCHEMA).to_pandas())
        except Exception as exc:
            raise RecordError(f"{path}: not a readable metrics file ({type(exc).__name__}); delete it, and "
                              f"bench metrics --runs {root} scores the run again") from None
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
    """The run metadata of one file; RecordError if it is unreadable or not a run file."""
    try:
        schema = pq.read_schema(path)
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
    if meta.get("format", 1) not in READABLE_FORMATS:
        raise RecordError(f"{path}: written by another version of bench (record format {meta.get('format')!r}; this one "
                          f"reads {', '.join(map(str, READABLE_FORMATS))}); move it out of the runs folder")
    return meta


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
    epochs (planned), epochs_done, wall_seconds, device, torch (version), threads, path and
    the full config as ``config``.
    Raises RecordError when root holds no run files or any file is not a valid run.
    """
    files = run_files(root)
    if not files:
        raise RecordError(f"no run files under {root}; run `bench run` first or pass --runs DIR")
    frames, summaries = [], []
    for path in files:
        rows, meta = read_run(path)
        config = {**ADDED_DEFAULTS, **meta.get("config", {})}
        frames.append(rows)
        summaries.append(
            {
                "run_id": meta.get("run_id"),
                "model": config.get("model"),
                "dataset": config.get("dataset"),
                "seed": config.get("seed"),
                "profile": meta.get("profile"),
                "status": meta.get("status"),
                "epochs": config.get("epochs"),
                "epochs_done": int(rows["epoch"].max()) if len(rows) else 0,
                "wall_seconds": meta.get("wall_seconds"),
                "device": meta.get("device"),
                "torch": (meta.get("versions") or {}).get("torch"),
                "threads": meta.get("threads"),
                "path": str(path),
                "config": config,
            }
        )
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))
    return rows, pd.DataFrame(summaries)


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
