"""Bad input, tried as a user would: one line on stderr, exit code 2, no traceback, nothing lost.

Every case runs `bench` against its own copy of a records folder that holds a killed run (a
record after its first epoch, a checkpoint, the checkpoint's index, the dead runner's lock file)
and checks, byte for byte and by modification time, that every file there is unchanged afterwards.
A case calls the CLI's ``main`` in this process, one test id per case, and takes a real process
only where it needs one (a limit or a thread that binds its whole process, a signal, a user
without root's powers), through ``support.run_bench``.
"""

import gzip
import hashlib
import json
import math
import os
import resource
import shutil
import signal
import subprocess
from dataclasses import dataclass

import pytest
from support import DATA_ROOT, REPO, TEST_ENV, needs_mnist, record_meta, run_bench

from bench.cli import main
from bench.config import ADDED_DEFAULTS
from bench.records import CONFIG_FIELDS, META_FIELDS, META_KEY, checkpoint_dir, read_meta, run_files, write_run
from bench.run.locks import lock_path

pytestmark = needs_mnist

PLAN = ["--models", "vae", "--seeds", "1", "--profile", "smoke", "--epochs", "3", "--threads", "1"]


@pytest.fixture(scope="module")
def killed_folder(tmp_path_factory):
    """A records folder as a kill in the second epoch leaves it."""
    out = tmp_path_factory.mktemp("killed") / "runs"
    result = run_bench("run", *PLAN, "--out", out, killer=("step", 6))
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert len(run_files(out)) == 1 and len(list(checkpoint_dir(out).glob("*.pt"))) == 1
    return out


def damage_checkpoint(out, tmp):
    path = next(checkpoint_dir(out).glob("*.pt"))
    os.truncate(path, path.stat().st_size // 3)


def garble_checkpoint(out, tmp):
    path = next(checkpoint_dir(out).glob("*.pt"))
    path.write_bytes(os.urandom(path.stat().st_size))


def garble_index(out, tmp):
    next(checkpoint_dir(out).glob("*.json")).write_text("{not json")


def garble_lock(out, tmp):
    lock = lock_path(out, read_meta(run_files(out)[0])["run_id"])  # the plan's one run is the killed one
    lock.parent.mkdir(exist_ok=True)
    lock.write_text("\x00\x13 garbage")


def other_version(out, tmp):
    import pyarrow.parquet as pq

    path = run_files(out)[0]
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[META_KEY])
    pq.write_table(table.replace_schema_metadata({META_KEY: json.dumps({**meta, "format": 99}).encode()}), path)


def corrupt_record(out, tmp):
    path = run_files(out)[0]
    path.write_bytes(path.read_bytes()[:100])


def file_for_out(out, tmp):
    (tmp / "a-file").write_text("not a folder")


def idx_copy(change):
    """A data folder whose training images are the real ones changed by ``change(bytes) -> bytes``."""
    def setup(out, tmp):
        folder = tmp / "data" / "mnist"
        folder.mkdir(parents=True)
        for f in (DATA_ROOT / "mnist").glob("*.gz"):
            shutil.copy(f, folder / f.name)
        images = folder / "train-images-idx3-ubyte.gz"
        images.write_bytes(gzip.compress(change(gzip.decompress(images.read_bytes())), compresslevel=1))
    return setup


def fill_disk_at(limit):
    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limit_file_size


@dataclass(frozen=True)
class OwnProcess:
    """Why a case runs as a real process, and what the child does before bench starts."""

    why: str
    preexec_fn: object = None
    midway: bool = False  # found once training is under way: the progress lines come before the one error line


# (id, command after `bench`, setup(out, tmp), text the one line must hold, OwnProcess or None for this process).
CASES = [
    ("unknown model", ["run", "--models", "vea"], None, "unknown model 'vea'", None),
    ("unknown dataset", ["run", "--datasets", "mnsit"], None, "unknown dataset 'mnsit'", None),
    ("negative seeds", ["run", "--seeds", "-1"], None, "--seeds -1", None),
    ("negative lr", ["run", "--set", "lr=-1"], None, "lr", None),
    ("unknown key", ["run", "--set", "nope=1"], None, "--set nope: unknown key", None),
    ("no jobs", ["run", "--jobs", "0"], None, "--jobs 0: need at least 1", None),
    ("no threads", ["run", "--threads", "0"], None, "--threads 0: need at least 1", None),
    ("no runs a CPU stack", ["run", "--cpu-stack", "0"], None, "--cpu-stack 0: need at least 1", None),
    ("an unknown order", ["run", "--order", "random"], None, "--order random: choose dearest or cheapest", None),
    ("unknown device", ["run", "--device", "tpu"], None, "--device tpu", None),
    ("out is a file", ["run", "--out", "{tmp}/a-file/runs"], file_for_out, "a-file is not a folder", None),
    ("truncated checkpoint", ["run"], damage_checkpoint, "is damaged", None),
    ("garbage checkpoint", ["run"], garble_checkpoint, "is damaged", None),
    ("garbage checkpoint index", ["run"], garble_index, "is not a bench checkpoint index", None),
    ("garbage lock file", ["run"], garble_lock, "is not a bench lock", None),
    ("record of another version", ["run"], other_version, "written by another version of bench", None),
    ("report on another version", ["report", "--runs", "{out}", "--out", "{tmp}/t.md"], other_version,
     "written by another version of bench", None),
    ("corrupt record", ["run"], corrupt_record, "not a readable parquet file", None),
    ("report on a corrupt record", ["report", "--runs", "{out}", "--out", "{tmp}/t.md"], corrupt_record,
     "not a readable parquet file", None),
    ("report on an empty folder", ["report", "--runs", "{tmp}/empty", "--out", "{tmp}/t.md"], None, "no run files", None),
    ("IDX with a wrong magic number", ["run", "--data-root", "{tmp}/data"], idx_copy(lambda b: b"\x00\x00\x09" + b[3:]),
     "train-images-idx3-ubyte.gz is corrupt", None),
    ("IDX of a wrong length", ["run", "--data-root", "{tmp}/data"], idx_copy(lambda b: b[:-784]),
     "train-images-idx3-ubyte.gz is corrupt", None),
    ("disk full during a publish", ["run"], None, "cannot write to",
     OwnProcess("a file-size limit binds the whole process it is set in", fill_disk_at(1_000_000), midway=True)),
    ("unreachable scheduler", ["run", "--backend", "dask", "--scheduler", "tcp://127.0.0.1:9"], None,
     "cannot reach a Dask scheduler there (connection refused", None),
    ("dask without a scheduler", ["run", "--backend", "dask"], None, "--backend dask and --scheduler ADDRESS go together", None),
    ("unknown backend", ["run", "--backend", "spark"], None, "--backend spark", None),
    ("bad resources", ["run", "--backend", "dask", "--scheduler", "tcp://127.0.0.1:9", "--resources", "GPU"], None,
     "--resources GPU", None),
    ("check without a reference", ["check", "--runs", "{out}"], None, "--runs and --reference go together", None),
]


def case_args(command, out, tmp):
    """A case's command in full: a run gets the plan and ``--out``, and the case's own options come last and win."""
    args = [a.format(out=out, tmp=tmp) for a in command]
    return ["run", *PLAN, "--out", str(out), *args[1:]] if args[0] == "run" else args


# In the fast tier (-m fast) but for the cases that write a changed copy of MNIST's training images first.
@pytest.mark.parametrize("command, setup, message", [
    pytest.param(*c[1:4], id=c[0], marks=() if c[0].startswith("IDX ") else pytest.mark.fast)
    for c in CASES if c[4] is None])
def test_bad_input_is_one_line_exit_2_and_loses_nothing(case, capsys, command, setup, message):
    out = case / "runs"
    if setup:
        setup(out, case)
    check_refused(case, case_args(command, out, case), capsys, message)


@pytest.mark.parametrize("command, setup, message, process", [pytest.param(*c[1:], id=c[0]) for c in CASES if c[4]])
def test_bad_input_in_a_process_of_its_own_is_one_line_exit_2_and_loses_nothing(killed_folder, tmp_path, command,
                                                                                 setup, message, process):
    out = tmp_path / "runs"
    shutil.copytree(killed_folder, out)
    if setup:
        setup(out, tmp_path)
    # Training under way takes over the dead runner's lock and drops it when it stops.
    def kept(files):
        return {k: v for k, v in files.items() if not (process.midway and k.startswith("runs/_locks/"))}

    before = kept(stamped(tmp_path))
    result = run_bench(*case_args(command, out, tmp_path), timeout=300, preexec_fn=process.preexec_fn)
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr[-600:]
    assert lines and "Traceback" not in result.stderr and (process.midway or len(lines) == 1), result.stderr[-600:]
    assert lines[-1].startswith("bench: error: ") and message in lines[-1], lines[-1]
    assert kept(stamped(tmp_path)) == before


# --------------------------------------------------------------------------- in-process cases
# A case's snapshot also holds each file's mtime: a file rewritten with the same bytes counts as changed.


def stamped(folder):
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def bench_here(args, capsys):
    """``bench ARGS`` in this process: its exit code and its stderr lines."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err.splitlines()


@pytest.fixture
def case(killed_folder, tmp_path, monkeypatch):
    """A copy of the killed folder at ``tmp/runs``, and the environment of the real process cases."""
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)
    shutil.copytree(killed_folder, tmp_path / "runs")
    return tmp_path


@pytest.fixture
def immutable():
    """``immutable(path)``: chattr +i, which binds root too; undone after the test, skipped where it cannot be set."""
    made = []

    def make(path):
        result = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if result.returncode:
            pytest.skip(f"chattr +i is not available here ({result.stderr.strip() or result.returncode})")
        made.append(path)

    try:
        yield make
    finally:
        for path in made:
            subprocess.run(["chattr", "-i", str(path)], check=True)


def rewrite_meta(change):
    """A setup that replaces the killed run's metadata with ``change(meta)``, rows untouched."""
    def setup(tmp):
        import pyarrow.parquet as pq

        path = run_files(tmp / "runs")[0]
        table = pq.read_table(path)
        meta = change(json.loads(table.schema.metadata[META_KEY]))
        pq.write_table(table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()}), path)
    return setup


def folder_at(relative):
    """A setup that puts a plain file where the folder ``relative`` must go (the folder, if any, removed first)."""
    def setup(tmp):
        target = tmp / relative
        if target.is_dir():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("a file where a folder must go")
    return setup


REPORT = ["report", "--runs", "{tmp}/runs", "--out", "{tmp}/rep/t.md"]
# A previous report in rep/: its files must come through a refused report untouched.
PREVIOUS = ("t.md", "t.csv", "figure3.png", "figure3.svg", "figure-loss.png", "figure-loss.svg",
            "figure-kl-dims.png", "figure-kl-dims.svg")


def previous_report(tmp):
    (tmp / "rep").mkdir()
    for name in PREVIOUS:
        (tmp / "rep" / name).write_text(f"the previous report's {name}\n")


def check_refused(tmp, args, capsys, *messages):
    """Run ``bench ARGS`` here and hold it to the promise: exit 2, one line holding ``messages``, nothing changed."""
    before = stamped(tmp)
    code, lines = bench_here([a.format(tmp=tmp) for a in args], capsys)
    assert (code, len(lines)) == (2, 1), lines
    assert lines[0].startswith("bench: error: "), lines[0]
    for message in messages:
        assert message.format(tmp=tmp) in lines[0], lines[0]
    assert stamped(tmp) == before


def run_args(*extra):
    return ["run", *PLAN, "--out", "{tmp}/runs", *extra]


# (id, command, setup(tmp), what the one line must hold). The first rows are the hostile user's of round 2.
REFUSED = [
    ("seeds past the bound", run_args("--seeds", "99999999999"), None, "--seeds 99999999999: at most 1000 seeds"),
    ("a seed range past the bound", run_args("--seeds", "5-99999999999"), None, "at most 1000 seeds"),
    ("seeds past int64", run_args("--seeds", f"{2**63}-{2**63}"), None, "below 2**63"),
    ("_locks is a file", run_args(), folder_at("runs/_locks"), "{tmp}/runs/_locks is not a folder"),
    ("a batch larger than the training split", run_args("--profile", "paper", "--set", "batch_size=100000"), None,
     "batch_size 100000 is more than the 60,000 training images of mnist"),
    ("a batch larger than the subset", run_args("--subset", "100", "--set", "batch_size=128"), None,
     "batch_size 128 is more than the 100 training images"),
    ("report --out an existing folder", ["report", "--runs", "{tmp}/runs", "--out", "{tmp}/runs"], None,
     "--out {tmp}/runs is a folder"),
    ("run on metadata that is a list", run_args(), rewrite_meta(lambda meta: [meta]), "run metadata is a list, not an object"),
    ("report on metadata that is a list", REPORT, rewrite_meta(lambda meta: [meta]), "run metadata is a list"),
    ("run on a null config", run_args(), rewrite_meta(lambda meta: {**meta, "config": None}),
     "field 'config' is null, not an object"),
    ("report on a null config", REPORT, rewrite_meta(lambda meta: {**meta, "config": None}), "field 'config' is null"),
    ("run --out empty", ["run", *PLAN, "--out", ""], None, "an empty path would mean the working folder"),
    ("report --out empty", ["report", "--runs", "{tmp}/runs", "--out", ""], None, "an empty path"),
    ("epochs past the bound", run_args("--epochs", "1000000"), None, "epochs=1000000: at most 100,000"),
    ("z_dim past the bound", run_args("--set", "z_dim=100000"), None, "z_dim=100000: at most 4,096"),
    ("threads past the bound", run_args("--threads", "100000"), None, "--threads 100000: at most 1024"),
    ("jobs past the bound", run_args("--jobs", "100000"), None, "--jobs 100000: at most 1024"),
    ("report on one folder given twice", ["report", "--runs", "{tmp}/runs", "--runs", "{tmp}/runs/", "--out",
                                          "{tmp}/rep/t.md"], None, "records folder {tmp}/runs given twice: pass each once"),
    ("report --out a figure's name", ["report", "--runs", "{tmp}/runs", "--out", "{tmp}/rep/figure3.png"], None,
     "writes a figure of that name"),
    ("traverse steps past the bound", ["traverse", "--runs", "{tmp}/runs", "--steps", "100000"], None, "at most 101"),
    ("bench bench stack sizes past the bound", ["bench", "--stack-sizes", "1,100000"], None, "counts from 1 to 128"),
    ("bench bench batch past the bound", ["bench", "--batch-size", "100000"], None, "--batch-size 100000: at most 8192"),
]


@pytest.mark.fast
@pytest.mark.parametrize("command, setup, message", [pytest.param(*c[1:], id=c[0]) for c in REFUSED])
def test_a_refused_command_is_one_line_exit_2_and_changes_nothing(case, capsys, command, setup, message):
    if setup:
        setup(case)
    check_refused(case, command, capsys, message)


# Every folder and file bench run writes, made unwritable in turn: (id, path under tmp, how).
# "file": a plain file where the folder must go; "immutable": chattr +i, which binds root as well.
RUN_PATHS = [
    ("records folder", "runs", "immutable"),
    ("records folder under a file", "runs", "file"),
    ("_locks", "runs/_locks", "immutable"),
    ("_checkpoints", "runs/_checkpoints", "immutable"),
    ("_checkpoints is a file", "runs/_checkpoints", "file"),
    ("run folder", "{record}", "immutable"),
    ("run folder is a file", "runs/mnist/vae/seed-0", "file"),
    ("_weights is a file", "{record}/_weights", "file"),
    ("record", "{record}/{record_name}", "immutable"),
    ("lock file", "runs/_locks/{lock}", "immutable"),
    ("checkpoint", "runs/_checkpoints/{checkpoint}.pt", "immutable"),
    ("checkpoint index", "runs/_checkpoints/{checkpoint}.json", "immutable"),
]
REPORT_PATHS = [("report folder", "rep", "immutable"), ("report folder is a file", "rep", "file")] + [
    (name, f"rep/{name}", "immutable") for name in PREVIOUS]


def make_unwritable(tmp, relative, how, immutable):
    record = run_files(tmp / "runs")[0]
    names = {"record": record.parent.relative_to(tmp), "record_name": record.name,
             "lock": next((tmp / "runs" / "_locks").glob("*.lock")).name,
             "checkpoint": next(checkpoint_dir(tmp / "runs").glob("*.pt")).stem}
    target = tmp / relative.format(**names)
    if how == "file":
        folder_at(target.relative_to(tmp))(tmp)
    else:
        immutable(target)
    return target


@pytest.mark.fast
@pytest.mark.parametrize("command, relative, how", [pytest.param(run_args(), path, how, id=f"run: {name}")
                                                     for name, path, how in RUN_PATHS]
                         + [pytest.param(REPORT, path, how, id=f"report: {name}") for name, path, how in REPORT_PATHS])
def test_every_path_a_command_writes_made_unwritable_is_refused_before_any_work(case, capsys, immutable, command,
                                                                                relative, how):
    previous_report(case)
    if command is REPORT:  # a finished run, so that the report draws every figure, the per-dimension KL's too
        rewrite_meta(lambda meta: {**meta, "status": "finished"})(case)
    target = make_unwritable(case, relative, how, immutable)
    check_refused(case, command, capsys, str(target))


def meta_cases():
    """Every top-level metadata field and config field removed, set to null and set to another type.

    The record is the killed run's, of the current format: removing a field every record of that
    format has is refused, removing an optional one is not; null is refused except where the field
    may be null; a value of another type is always refused (true and false are not integers here).
    """
    other = {str: 7, int: True, float: "1.5", bool: 1, dict: [], list: {}}
    cases = []
    for key, (types, since) in META_FIELDS.items():
        cases.append((f"meta {key} removed", "meta", key, None, since is not None))
        cases.append((f"meta {key} null", "meta", key, "null", type(None) not in types))
        cases.append((f"meta {key} of another type", "meta", key, other[types[0]], True))
    for key, kind in CONFIG_FIELDS.items():
        cases.append((f"config {key} removed", "config", key, None, key not in ADDED_DEFAULTS))
        cases.append((f"config {key} null", "config", key, "null", True))
        cases.append((f"config {key} of another type", "config", key, other[kind], True))
    return [pytest.param(*c[1:], id=c[0]) for c in cases]


@pytest.mark.fast
@pytest.mark.parametrize("where, key, value, refused", meta_cases())
def test_metadata_is_validated_as_a_whole(case, capsys, where, key, value, refused):
    from bench.records import read_meta

    def change(meta):
        part = meta if where == "meta" else meta["config"]
        if value is None:
            part.pop(key, None)
        else:
            part[key] = None if value == "null" else value
        return meta

    rewrite_meta(change)(case)
    if refused:
        check_refused(case, REPORT, capsys, f"{run_files(case / 'runs')[0]}: run metadata ", repr(key))
    else:
        read_meta(run_files(case / "runs")[0])


@pytest.mark.fast
@pytest.mark.parametrize("change, message", [
    pytest.param(lambda meta: {**meta, "threads": "1"}, "field 'threads' is a string, not an integer", id="a string count"),
    pytest.param(lambda meta: {**meta, "note": 1}, "has an unknown field 'note'", id="an unknown field"),
    pytest.param(lambda meta: {**meta, "status": "done"}, "field 'status' is 'done', not one of running, finished",
                 id="an unknown status"),
    pytest.param(lambda meta: {**meta, "versions": {"python": "3.11"}}, "'versions' lacks the torch version",
                 id="versions without torch"),
    pytest.param(lambda meta: {**meta, "resumed_at_epochs": ["1"]}, "'resumed_at_epochs' holds something other",
                 id="a resumed epoch that is a string"),
    pytest.param(lambda meta: {**meta, "config": {**meta["config"], "width": 3}}, "config has an unknown field 'width'",
                 id="an unknown config field"),
    pytest.param(lambda meta: {**meta, "format": 2, "host": None}, "field 'host' is null, not a string",
                 id="a null host in format 2"),
    pytest.param(lambda meta: {k: v for k, v in meta.items() if k != "pid"}, "lacks 'pid', which every record of format 3",
                 id="format 3 without a pid"),
])
def test_the_refusal_names_what_is_wrong(case, capsys, change, message):
    rewrite_meta(change)(case)
    check_refused(case, REPORT, capsys, message)


@pytest.mark.fast
def test_every_committed_record_reads():
    from bench.records import read_meta

    records = run_files(REPO / "results" / "records")
    assert len(records) >= 80
    for path in records:
        read_meta(path)


# --------------------------------------------------------------------------- where a real process is needed


def without_root():
    """The words that run a command as a user whom file modes bind: root without the capabilities that override them.

    File modes do not bind root, and this process cannot drop its own capabilities and go on, so the
    command needs a process of its own.
    """
    if os.geteuid() != 0:
        return []
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--inh-caps=-all"]
    if shutil.which("setpriv") is None or subprocess.run([*drop, "true"]).returncode:
        pytest.skip("setpriv cannot drop root's capabilities here")
    return drop


@pytest.mark.parametrize("command, mode_of, message", [
    pytest.param(run_args(), "runs/_locks", "cannot write {tmp}/runs/_locks (Permission denied)", id="_locks read-only"),
    pytest.param(REPORT, "rep/t.md", "cannot write {tmp}/rep/t.md (Permission denied)", id="report onto a read-only t.md"),
])
def test_a_path_that_file_modes_forbid_is_refused(killed_folder, tmp_path, command, mode_of, message):
    shutil.copytree(killed_folder, tmp_path / "runs")
    previous_report(tmp_path)
    target = tmp_path / mode_of
    target.chmod(0o555 if target.is_dir() else 0o444)
    before = stamped(tmp_path)
    args = [a.format(tmp=tmp_path) for a in command]
    result = run_bench(*args, prefix=without_root(), timeout=300)
    lines = result.stderr.splitlines()
    assert (result.returncode, len(lines)) == (2, 1), result.stderr[-600:]
    assert message.format(tmp=tmp_path) in lines[0]
    assert stamped(tmp_path) == before


def test_sigterm_mid_epoch_ends_like_ctrl_c_and_loses_nothing(killed_folder, tmp_path):
    import pyarrow.parquet as pq

    from bench.records import verify_checkpoint

    out = tmp_path / "runs"
    result = run_bench("run", *PLAN, "--out", out, killer=("step", 6), env={"KILL_SIGNAL": "SIGTERM"})
    assert result.returncode == 143, result.stderr[-600:]
    assert result.stderr.splitlines()[-1] == "bench: terminated (SIGTERM)" and "Traceback" not in result.stderr
    assert list((out / "_locks").iterdir()) == []  # released, as after Ctrl-C
    verify_checkpoint(next(checkpoint_dir(out).glob("*.pt")))
    # The state a SIGKILL at the same update leaves: the first epoch's record and checkpoint.
    mine, killed = (json.dumps(pq.read_table(run_files(folder)[0]).drop(["seconds"]).to_pylist())  # NaN == NaN here
                    for folder in (out, killed_folder))
    assert mine == killed


# --------------------------------------------------------------------------- the doubtful cases, decided


def nan_tree(root, nan_seed=1):
    """Two finished VAE runs of one setting, seed ``nan_seed``'s final test loss NaN."""
    for seed in (0, 1):
        run_id = f"vae-{seed}"
        rows = [dict(run_id=run_id, model="vae", dataset="mnist", seed=seed, epoch=1, split=split, step=4, kl=1.0,
                     tc=math.nan, capacity=math.nan, capacity_gap=math.nan, disc_acc=math.nan, n_images=256,
                     seconds=1.0, loss=math.nan if (seed, split) == (nan_seed, "test") else 100.0 + seed,
                     recon=90.0 + seed) for split in ("train", "test")]
        write_run(root / "mnist" / "vae" / f"seed-{seed}" / f"{run_id}.parquet", rows,
                  record_meta(run_id, {"model": "vae", "dataset": "mnist", "seed": seed, "epochs": 1}))
    return root


def test_a_finished_record_with_a_nan_loss_counts_as_diverged_in_the_report(tmp_path):
    from bench.report.table1 import write_report

    summary = write_report(nan_tree(tmp_path / "runs"), tmp_path / "t.md")
    text = summary.markdown.read_text()
    assert "- Runs: 1 finished runs averaged; excluded from the means: 1 diverged, 0 unfinished" in text
    assert "#### Diverged runs" in text
    import pandas as pd

    vae = pd.read_csv(summary.csv).set_index("model").loc["vae"]
    assert (vae["n_finished"], vae["n_diverged"], vae["train_loss_n"], vae["train_loss_mean"]) == (1, 1, 1, 100.0)


@pytest.mark.fast
def test_a_finished_record_with_a_nan_loss_fails_its_model_in_bench_check(tmp_path):
    from bench.check import regression as check

    reference = check.build_reference(nan_tree(tmp_path / "ref", nan_seed=None))
    table = check.compare_reference(reference, nan_tree(tmp_path / "new"))
    assert table.loc[table["metric"] == "diverged", "diverged"].tolist() == [1]
    assert table["worse"].any()


def test_more_busy_threads_than_cores_gets_a_warning(tmp_path, capsys, monkeypatch):
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    code, lines = bench_here(["run", *PLAN, "--epochs", "1", "--threads", "2", "--out", tmp_path / "runs"], capsys)
    assert code == 0
    assert ("warning: 1 job(s) x 2 thread(s) keep 2 threads busy on 1 cores, which can make training many times "
            "slower; choose --jobs and --threads whose product is at most 1") in lines
