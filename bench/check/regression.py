"""Regression checks on the loss numbers: ``bench check``.

Tier 1, exact (every CI run): train the smoke matrix of every objective of
:data:`models.presets.PRESETS` in this process, in float64 on one thread with deterministic
algorithms, writing nothing, and compare every per-epoch number with the golden file
``results/baseline/smoke.parquet`` under one tolerance on every machine (:data:`TOLERANCE`).
Float64 because float32 kernels round differently between CPU ISAs by as much as a 1% coefficient
change moves the numbers; in float64 the ISAs agree far inside the tolerance and such a change
lands far outside it. A changed config fails, naming the field; a changed environment is only
noted. Only ``--update`` writes the golden file.

Tier 2, statistical: ``--runs DIR --reference FILE`` tests the final-epoch losses of multi-seed
runs against a stored reference (a one-sided Welch test per model and metric, Holm over the
family); setup problems are errors (exit 2), not verdicts. ``results/reference/`` holds references
built from the committed records.

docs/regression-checks.md describes both tiers; BENCHMARKS.md has the measurements behind the
tolerance.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench.config import ADDED_DEFAULTS, RunConfig, resolve
from bench.errors import BenchError
from bench.records import FINAL_METRICS, PER_DIM_COLUMNS, SCHEMA, final_values, publish_atomic, read_tree
from bench.report.stats import holm, welch
from models.presets import PRESETS

# ---------------------------------------------------------------------------
# Tier 1: the smoke matrix against the golden file
# ---------------------------------------------------------------------------

DATASET = "mnist"
PROFILE = "smoke"
SEEDS = (0, 1)
THREADS = 1
DTYPE = "float64"
GOLDEN_KEY = b"bench.golden"
GOLDEN_FORMAT = 2  # 2: float64 smoke matrix
# The golden file holds the scalar terms: timings vary, and the per-dimension KLs sum to ``kl``.
GOLDEN_SCHEMA = pa.schema([f for f in SCHEMA if f.name not in ("seconds", *PER_DIM_COLUMNS)])
KEY = ["dataset", "model", "seed", "epoch", "split"]
# Facts that decide which kernels run; recorded and named when they differ, never a failure in themselves.
ENVIRONMENT_KEYS = ("torch", "python", "machine", "cpu_capability", "threads")
UPDATE_HINT = "create it with `bench check --update` and commit it"


@dataclass(frozen=True)
class Tolerance:
    """A value passes when ``|got - expected| <= atol + rtol * |expected|``."""

    rtol: float
    atol: float


_EXACT = Tolerance(0.0, 0.0)
# 2e5 times the float64 differences measured between CPU ISAs (5e-15) and about 4e5 times below the
# smallest largest-effect of a 1% change of any coefficient, lr, c_max or d_lr (3.8e-4; BENCHMARKS.md).
_FLOAT = Tolerance(1e-9, 1e-12)
TOLERANCE: dict[str, Tolerance] = {
    "step": _EXACT,
    "loss": _FLOAT,
    "recon": _FLOAT,
    "kl": _FLOAT,
    "tc": _FLOAT,
    "capacity": _FLOAT,
    "capacity_gap": _FLOAT,
    "disc_acc": _FLOAT,
    "n_images": _EXACT,
}
TOLERANCE_SUMMARY = "rtol 1e-9 + atol 1e-12 on every float column, step and n_images exact"


def environment() -> dict:
    """What the golden numbers depend on besides the code and the data.

    Returns
    -------
    dict
        The :data:`ENVIRONMENT_KEYS` (torch and Python versions, ``platform.machine()``,
        torch's CPU capability, thread count) plus ``platform``, recorded for people only.
    """
    import torch

    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": THREADS,
        "platform": platform.platform(),
    }


@contextlib.contextmanager
def _pinned_torch():
    """One thread and deterministic algorithms, restored afterwards (tests share the process)."""
    import torch

    from bench.train.optim import deterministic_algorithms

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(THREADS)
    deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        deterministic_algorithms(deterministic, warn_only=warn_only)


def smoke_configs(models=None, seeds=SEEDS) -> list[RunConfig]:
    """The resolved float64 configs of the smoke matrix, in (model, seed) order.

    Parameters
    ----------
    models : iterable of str, optional
        Objectives to include; default every preset.
    seeds : iterable of int
        Seeds to include, of :data:`SEEDS`; default all of them.

    Returns
    -------
    list of RunConfig
    """
    return [resolve(model, DATASET, seed, PROFILE, {"dtype": DTYPE}) for model in (models or PRESETS) for seed in seeds]


def _frame(rows: list[dict]) -> pd.DataFrame:
    """Rows as the golden file types them, in key order."""
    table = pa.Table.from_pylist([{k: v for k, v in r.items() if k != "seconds"} for r in rows], schema=GOLDEN_SCHEMA)
    return table.to_pandas().sort_values(KEY, kind="stable").reset_index(drop=True)


def train_smoke(data_root: Path, models=None, seeds=SEEDS) -> tuple[pd.DataFrame, list[RunConfig]]:
    """Train the smoke matrix in this process and return its rows.

    Parameters
    ----------
    data_root : Path
        The datasets folder (see :func:`bench.data.datasets.resolve_root`).
    models : iterable of str, optional
        Objectives to train; default every preset.
    seeds : iterable of int
        Seeds to train, of :data:`SEEDS`; default all of them.

    Returns
    -------
    rows : pandas.DataFrame
        One row per (run, epoch, split) with the golden file's columns.
    configs : list of RunConfig
        The configs trained.
    """
    from bench.data import datasets as data
    from bench.train.trainer import train

    configs = smoke_configs(models, seeds)
    images = data.load(DATASET, Path(data_root), (configs[0].train_subset, configs[0].test_subset))
    rows: list[dict] = []
    with _pinned_torch():
        for config in configs:
            for result, _ in train(config, images.train, images.test):
                rows.extend(result.rows)
    return _frame(rows), configs


def write_golden(path: Path, rows: pd.DataFrame, configs: list[RunConfig]) -> dict:
    """Publish the golden file atomically, with its environment and runs as metadata.

    Only ``bench check --update`` calls this.

    Returns
    -------
    dict
        The metadata written.
    """
    meta = {
        "format": GOLDEN_FORMAT,
        "dataset": DATASET,
        "profile": PROFILE,
        "seeds": list(SEEDS),
        "models": list(dict.fromkeys(c.model for c in configs)),
        "environment": environment(),
        "deterministic_algorithms": True,
        "dtype": DTYPE,
        "runs": [{"run_id": c.run_id, "config": c.to_dict()} for c in configs],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    table = pa.Table.from_pandas(rows, schema=GOLDEN_SCHEMA, preserve_index=False)
    table = table.replace_schema_metadata({GOLDEN_KEY: json.dumps(meta, sort_keys=True).encode()})
    publish_atomic(Path(path), lambda tmp: pq.write_table(table, tmp))
    return meta


def read_golden(path: Path) -> tuple[pd.DataFrame, dict]:
    """The golden rows and metadata; BenchError (one line) when missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"no golden file at {path}; {UPDATE_HINT}")
    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise BenchError(f"{path} is not a readable golden file ({type(exc).__name__}); {UPDATE_HINT}") from None
    try:
        meta = json.loads((table.schema.metadata or {})[GOLDEN_KEY])
    except (KeyError, ValueError):
        raise BenchError(f"{path} has no valid golden metadata; {UPDATE_HINT}") from None
    missing = [c for c in GOLDEN_SCHEMA.names if c not in table.schema.names]
    if missing or meta.get("format") != GOLDEN_FORMAT or not isinstance(meta.get("environment"), dict):
        raise BenchError(f"{path} is not a golden file of this version ({', '.join(missing) or 'format'}); {UPDATE_HINT}")
    return table.select(GOLDEN_SCHEMA.names).to_pandas(), meta


def environment_changes(recorded: dict, current: dict) -> list[str]:
    """``"torch 2.4.0 -> 2.5.1"`` for each :data:`ENVIRONMENT_KEYS` entry that differs."""
    return [f"{key} {recorded.get(key)} -> {current.get(key)}" for key in ENVIRONMENT_KEYS
            if recorded.get(key) != current.get(key)]


def config_changes(runs: list[dict], configs: list[RunConfig]) -> list[str]:
    """Per model, the config fields that differ from the golden file's, e.g. ``"betavae w_kl 4.0 -> 4.04"``."""
    # Fields added since the golden file was written hold their defaults there.
    recorded = {(r["config"]["model"], r["config"]["seed"]): {**ADDED_DEFAULTS, **r["config"]} for r in runs}
    changes: dict[str, None] = {}  # ordered set: the seeds of a model share their changes
    for config in configs:
        old = recorded.get((config.model, config.seed))
        if old is None:
            continue
        new = config.to_dict()
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                changes[f"{config.model} {key} {old.get(key)} -> {new.get(key)}"] = None
    return list(changes)


def compare_rows(expected: pd.DataFrame, got: pd.DataFrame, tolerances: dict[str, Tolerance]) -> pd.DataFrame:
    """Every value outside its tolerance and every row found on one side only, worst first.

    Parameters
    ----------
    expected, got : pandas.DataFrame
        Rows with the golden file's columns.
    tolerances : dict
        Column name to :class:`Tolerance`; only these columns are compared.

    Returns
    -------
    pandas.DataFrame
        Columns ``KEY``, ``column`` (``"row"`` for a row on one side only), ``expected``
        and ``got`` (floats), ``change`` (relative, inf where not finite), ``severity``
        (the distance in units of the tolerance, inf for missing rows and NaN mismatches)
        and ``missing`` (the side that lacks the row, ``"expected"`` or ``"got"``, else
        ``""``).
    """
    merged = expected.merge(got, on=KEY, how="outer", suffixes=("_expected", "_got"), indicator=True)
    problems = []
    for side, merge_flag in (("got", "left_only"), ("expected", "right_only")):
        for rec in merged[merged["_merge"] == merge_flag][KEY].to_dict("records"):
            problems.append({**rec, "column": "row", "expected": math.nan, "got": math.nan,
                             "change": math.inf, "severity": math.inf, "missing": side})
    both = merged[merged["_merge"] == "both"]
    for column, tol in tolerances.items():
        e = both[f"{column}_expected"].to_numpy(dtype=float)
        g = both[f"{column}_got"].to_numpy(dtype=float)
        bad = ~np.isclose(g, e, rtol=tol.rtol, atol=tol.atol, equal_nan=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            severity = np.abs(g - e) / (tol.atol + tol.rtol * np.abs(e))
            change = (g - e) / np.abs(e)
        for i in np.flatnonzero(bad):
            problems.append({**both.iloc[i][KEY].to_dict(), "column": column, "expected": e[i], "got": g[i],
                             "change": change[i] if np.isfinite(change[i]) else math.inf,
                             "severity": severity[i] if np.isfinite(severity[i]) else math.inf, "missing": ""})
    columns = [*KEY, "column", "expected", "got", "change", "severity", "missing"]
    table = pd.DataFrame(problems, columns=columns)
    return table.sort_values(["severity", *KEY], ascending=[False] + [True] * len(KEY), kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class ExactResult:
    """The outcome of comparing fresh smoke rows with the golden file.

    Attributes
    ----------
    mismatches : pandas.DataFrame
        From :func:`compare_rows`.
    environment_changes : list of str
        What differs from the golden file's environment (information only).
    config_changes : list of str
        Config fields that differ from the golden file's runs: each one fails the check.
    n_values : int
        Values compared.
    largest_change : tuple of (float, str)
        The largest relative difference between matched finite values and its column:
        how far inside the tolerance a passing check is.
    """

    mismatches: pd.DataFrame
    environment_changes: list[str]
    config_changes: list[str]
    n_values: int
    largest_change: tuple[float, str]

    @property
    def ok(self) -> bool:
        return self.mismatches.empty and not self.config_changes


def compare_golden(expected: pd.DataFrame, meta: dict, got: pd.DataFrame, configs: list[RunConfig],
                   current: dict | None = None) -> ExactResult:
    """Compare fresh rows with the golden ones of the same models under :data:`TOLERANCE`.

    Parameters
    ----------
    expected, meta : pandas.DataFrame, dict
        From :func:`read_golden`.
    got, configs : pandas.DataFrame, list of RunConfig
        From :func:`train_smoke`; only the golden rows of these configs' models and seeds are compared.
    current : dict, optional
        This environment; default :func:`environment`.

    Returns
    -------
    ExactResult
    """
    runs = pd.MultiIndex.from_tuples([(c.model, c.seed) for c in configs])
    expected = expected[pd.MultiIndex.from_frame(expected[["model", "seed"]]).isin(runs)]
    return ExactResult(
        mismatches=compare_rows(expected, got, TOLERANCE),
        environment_changes=environment_changes(meta["environment"], current or environment()),
        config_changes=config_changes(meta.get("runs", []), configs),
        n_values=len(expected) * len(TOLERANCE),
        largest_change=largest_change(expected, got),
    )


def largest_change(expected: pd.DataFrame, got: pd.DataFrame) -> tuple[float, str]:
    """The largest ``|got - expected| / |expected|`` over matched rows and finite nonzero values, and its column."""
    merged = expected.merge(got, on=KEY, suffixes=("_expected", "_got"))
    worst = (0.0, "none")
    for column in TOLERANCE:
        e = merged[f"{column}_expected"].to_numpy(dtype=float)
        g = merged[f"{column}_got"].to_numpy(dtype=float)
        usable = np.isfinite(e) & np.isfinite(g) & (e != 0)
        if usable.any():
            change = float(np.max(np.abs(g[usable] - e[usable]) / np.abs(e[usable])))
            if change > worst[0]:
                worst = (change, column)
    return worst


def mismatch_table(mismatches: pd.DataFrame, limit: int = 20) -> list[str]:
    """The mismatches as aligned text lines, at most ``limit`` rows plus an "and N more" line."""
    header = ("run", "epoch", "split", "column", "expected", "got", "change")
    cells = []
    for m in mismatches.head(limit).to_dict("records"):
        change = f"{m['change']:+.3e}" if math.isfinite(m["change"]) else "—"
        if m["missing"] == "got":
            expected, got = "row", "missing"
        elif m["missing"] == "expected":
            expected, got = "missing", "row"
        else:
            expected, got = f"{m['expected']:.10g}", f"{m['got']:.10g}"
        cells.append((f"{m['dataset']}/{m['model']} seed {m['seed']}", str(m["epoch"]), m["split"], m["column"],
                      expected, got, change))
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    right = {1, 4, 5, 6}  # numbers align right
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
             for row in [header, *cells]]
    if len(mismatches) > limit:
        lines.append(f"and {len(mismatches) - limit} more")
    return lines


def check_exact(golden: Path, data_root: Path, update: bool = False, models=None) -> bool:
    """Tier 1: train the float64 smoke matrix and compare it with the golden file, or rewrite it.

    Parameters
    ----------
    golden : Path
        The golden file.
    data_root : Path
        The datasets folder.
    update : bool
        Rewrite the golden file from this run instead of checking (always every objective).
    models : iterable of str, optional
        Check only these objectives; default every preset.

    Returns
    -------
    bool
        True when the numbers and configs match (always after an update).

    Raises
    ------
    BenchError
        When the golden file is missing or corrupt (checked before any training) or the
        data is unusable.
    """
    start = time.perf_counter()
    if update:
        rows, configs = train_smoke(data_root)
        meta = write_golden(golden, rows, configs)
        env = meta["environment"]
        click.echo(f"wrote {golden}: {len(rows)} rows of {len(configs)} runs in {DTYPE} "
                   f"(torch {env['torch']}, python {env['python']}, {env['machine']} {env['cpu_capability']}, "
                   f"{env['threads']} thread) in {time.perf_counter() - start:.1f}s; commit it")
        return True
    expected, meta = read_golden(golden)
    got, configs = train_smoke(data_root, models)
    result = compare_golden(expected, meta, got, configs)
    if result.environment_changes:
        click.echo(f"note: environment differs from the golden file's ({', '.join(result.environment_changes)}); "
                   "float64 keeps the same tolerance")
    seconds = time.perf_counter() - start
    if result.ok:
        change, column = result.largest_change
        margin = f"largest relative difference {change:.1e}, {column}" if change else "bitwise equal"
        click.echo(f"bench check: {result.n_values} values of {len(configs)} runs match {golden} "
                   f"({DTYPE}, {TOLERANCE_SUMMARY}; {margin}) in {seconds:.1f}s")
        return True
    for change in result.config_changes:
        click.echo(f"config changed since the golden file: {change}")
    n = len(result.mismatches)
    if n:
        click.echo(f"bench check: {n} mismatch{'es' if n > 1 else ''} against {golden}, worst first:")
        for line in mismatch_table(result.mismatches):
            click.echo(line)
    else:
        click.echo(f"bench check: the numbers match {golden}, but the configs above differ from its runs")
    click.echo("if the change is intended, rewrite the golden file with `bench check --update` and commit it")
    return False


# ---------------------------------------------------------------------------
# Tier 2: a multi-seed run folder against a stored reference
# ---------------------------------------------------------------------------

REFERENCE_FORMAT = "bench.reference/1"
ALPHA = 0.01
# The final-epoch values stored per seed and tested.


def _final_values(runs_dir: Path) -> pd.DataFrame:
    """One row per run: its status, ``config`` (the config minus seed) and final metric values."""
    finals = final_values(*read_tree(runs_dir))
    return finals.assign(config=finals["config_key"])


def _groups(finals: pd.DataFrame, runs_dir: Path) -> dict[tuple[str, str], pd.DataFrame]:
    """Runs per (dataset, model), each with one config and at least two seeds, else BenchError."""
    groups = {}
    for (dataset, model), group in finals.groupby(["dataset", "model"], sort=True):
        if group["config"].nunique() > 1:
            raise BenchError(f"{runs_dir}: {model} on {dataset} has runs of {group['config'].nunique()} configurations; "
                             "keep one configuration per model in the folder")
        if len(group) < 2:
            raise BenchError(f"{runs_dir}: {model} on {dataset} has {len(group)} run; a Welch test needs at least 2 "
                             "seeds (bench run --seeds N)")
        groups[(dataset, model)] = group.sort_values("seed")
    return groups


def build_reference(runs_dir: Path) -> dict:
    """A reference from a folder of finished runs: per (dataset, model) its config and final values.

    Raises
    ------
    BenchError
        When a run is not finished, a model has several configs, or fewer than two seeds.
    """
    finals = _final_values(runs_dir)
    unfinished = finals[finals["status"] != "finished"]
    if len(unfinished):
        first = unfinished.iloc[0]
        raise BenchError(f"{runs_dir}: {len(unfinished)} run(s) not finished (e.g. {first['model']} seed {first['seed']}: "
                         f"{first['status']}); a reference is stored from finished runs only")
    entries = []
    for (dataset, model), group in _groups(finals, runs_dir).items():
        entries.append({
            "dataset": dataset,
            "model": model,
            "config": json.loads(group["config"].iloc[0]),
            "seeds": [int(s) for s in group["seed"]],
            "values": {key: [float(v) for v in group[key]] for key, _, _ in FINAL_METRICS},
        })
    return {"format": REFERENCE_FORMAT, "source": str(runs_dir),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "entries": entries}


def write_reference(path: Path, reference: dict) -> None:
    """Publish a reference as JSON atomically."""
    publish_atomic(Path(path), lambda tmp: Path(tmp).write_text(json.dumps(reference, indent=1, sort_keys=True) + "\n"))


def read_reference(path: Path) -> dict:
    """A stored reference, validated; BenchError (one line) when missing or malformed."""
    path = Path(path)
    hint = f"store one with `bench check --runs DIR --reference {path} --update`"
    if not path.is_file():
        raise BenchError(f"no reference at {path}; {hint}")
    try:
        reference = json.loads(path.read_text())
        entries = reference["entries"] if reference["format"] == REFERENCE_FORMAT else None
        valid = bool(entries) and all(
            isinstance(e["config"], dict) and all(len(e["values"][k]) >= 2 and all(math.isfinite(v) for v in e["values"][k])
                                                  for k, _, _ in FINAL_METRICS)
            for e in entries)
    except (OSError, ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise BenchError(f"{path} is not a valid bench reference; {hint}")
    return reference


def compare_reference(reference: dict, runs_dir: Path, alpha: float = ALPHA) -> pd.DataFrame:
    """Tier 2: one-sided Welch tests of the runs in ``runs_dir`` against ``reference``.

    Parameters
    ----------
    reference : dict
        From :func:`read_reference` or :func:`build_reference`.
    runs_dir : Path
        A records folder of finished (or diverged) runs, at least two seeds per model.
    alpha : float
        Family-wise error rate: a test fails when its Holm-adjusted p is below it.

    Returns
    -------
    pandas.DataFrame
        One row per (dataset, model, metric), plus a ``diverged`` row per model with diverged
        runs: ``ref`` and ``new`` (the values), ``p`` (Welch, new greater than reference),
        ``p_holm`` and ``worse`` (bool).

    Raises
    ------
    BenchError
        When the folder holds a model the reference does not cover, a config differs from
        the reference's, a run is unfinished, or a side has fewer than two seeds. Models of
        the reference absent from the folder are not tested.
    """
    finals = _final_values(runs_dir)
    unfinished = finals[~finals["status"].isin(["finished", "diverged"])]
    if len(unfinished):
        first = unfinished.iloc[0]
        raise BenchError(f"{runs_dir}: {len(unfinished)} run(s) unfinished (e.g. {first['model']} seed {first['seed']}: "
                         f"{first['status']}); finish them with bench run first")
    groups = _groups(finals, runs_dir)
    entries = {(e["dataset"], e["model"]): e for e in reference["entries"]}
    unknown = sorted(set(groups) - set(entries))
    if unknown:
        covered = ", ".join(f"{d}/{m}" for d, m in sorted(entries))
        raise BenchError(f"{runs_dir} holds {', '.join(f'{d}/{m}' for d, m in unknown)}, which the reference does not "
                         f"cover (it covers {covered})")
    tests = []
    for (dataset, model), group in groups.items():
        ref_config = {**ADDED_DEFAULTS, **entries[(dataset, model)]["config"]}
        new_config = json.loads(group["config"].iloc[0])
        differ = sorted(k for k in set(ref_config) | set(new_config) if ref_config.get(k) != new_config.get(k))
        if differ:
            what = ", ".join(f"{k} {ref_config.get(k)} vs {new_config.get(k)}" for k in differ)
            raise BenchError(f"{dataset}/{model}: the runs' config differs from the reference's ({what}); "
                             "compare runs of the reference's config, or store a new reference with --update")
        finished = group[group["status"] == "finished"]
        n_diverged = len(group) - len(finished)
        if n_diverged:
            tests.append({"dataset": dataset, "model": model, "metric": "diverged", "ref": np.array([]),
                          "new": np.array([]), "p": math.nan, "diverged": n_diverged})
        for key, _, _ in FINAL_METRICS:
            ref = np.asarray(entries[(dataset, model)]["values"][key], dtype=float)
            new = finished[key].to_numpy(dtype=float)
            p = math.nan  # untested: too few finished seeds left beside diverged ones
            if new.size >= 2:
                p = welch(new, ref, alternative="greater").p
                if math.isnan(p):
                    # Both sides constant: any increase is certain, none is no evidence.
                    p = 0.0 if new.mean() > ref.mean() else 1.0
            tests.append({"dataset": dataset, "model": model, "metric": key, "ref": ref, "new": new, "p": p,
                          "diverged": 0})
    table = pd.DataFrame(tests)
    table["p_holm"] = holm(table["p"].to_numpy(dtype=float))
    table["worse"] = (table["diverged"] > 0) | (table["p_holm"] < alpha)
    return table


def _spread(values: np.ndarray) -> str:
    if values.size == 0:
        return "—"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f} (n={values.size})"


def _pvalue(p: float) -> str:
    if math.isnan(p):
        return "—"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def statistical_table(table: pd.DataFrame) -> list[str]:
    """The tests as aligned text lines: model, metric, reference and new mean ± SD, p, verdict."""
    header = ("model", "metric", "reference", "new", "p", "p (Holm)", "verdict")
    cells = []
    for t in table.to_dict("records"):
        if t["diverged"]:
            verdict = f"WORSE ({t['diverged']} run(s) diverged)"
        elif math.isnan(t["p"]):
            verdict = "untested (fewer than 2 finished seeds)"
        else:
            verdict = "WORSE" if t["worse"] else "ok"
        cells.append((f"{t['dataset']}/{t['model']}", t["metric"], _spread(t["ref"]), _spread(t["new"]),
                      _pvalue(t["p"]), _pvalue(t["p_holm"]), verdict))
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *cells]]


def check_statistical(runs_dir: Path, reference_path: Path, alpha: float = ALPHA, update: bool = False) -> bool:
    """Tier 2: test the runs in ``runs_dir`` against the reference, or store the reference.

    Returns
    -------
    bool
        True when no test finds the runs worse (always after an update).
    """
    if not 0 < alpha < 1:
        raise BenchError(f"--alpha {alpha}: must be between 0 and 1")
    if update:
        reference = build_reference(runs_dir)
        write_reference(reference_path, reference)
        seeds = {len(e["seeds"]) for e in reference["entries"]}
        click.echo(f"wrote {reference_path}: {len(reference['entries'])} models, "
                   f"{'/'.join(map(str, sorted(seeds)))} seeds each, from {runs_dir}")
        return True
    table = compare_reference(read_reference(reference_path), runs_dir, alpha)
    for line in statistical_table(table):
        click.echo(line)
    n_worse = int(table["worse"].sum())
    verdict = f"{n_worse} of {len(table)} tests worse than" if n_worse else "no model worse than"
    click.echo(f"bench check: {verdict} {reference_path} (one-sided Welch, Holm, alpha {alpha})")
    return n_worse == 0
