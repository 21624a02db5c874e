"""Bad input, tried as a user would: one line on stderr, exit code 2, no traceback, nothing lost.

Every case runs a real `bench` process against its own copy of a records folder that holds a
killed run (a record after its first epoch, a checkpoint, the checkpoint's index) and checks,
byte for byte, that every file there is unchanged afterwards.
"""

import gzip
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from support import DATA_ROOT, KILLER, REPO, needs_mnist

from bench.records import META_KEY, checkpoint_dir, run_files

pytestmark = needs_mnist

PLAN = ["--models", "vae", "--seeds", "1", "--profile", "smoke", "--epochs", "3", "--threads", "1"]


def env():
    return {**os.environ, "BENCH_DATA": str(DATA_ROOT), "BENCH_NO_DOWNLOAD": "1"}


@pytest.fixture(scope="module")
def killed_folder(tmp_path_factory):
    """A records folder as a kill in the second epoch leaves it."""
    out = tmp_path_factory.mktemp("killed") / "runs"
    result = subprocess.run([sys.executable, "-c", KILLER, "step", "6", "run", *PLAN, "--out", str(out)],
                            capture_output=True, text=True, env=env(), cwd=REPO, timeout=600)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert len(run_files(out)) == 1 and len(list(checkpoint_dir(out).glob("*.pt"))) == 1
    return out


def snapshot(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def damage_checkpoint(out, tmp):
    path = next(checkpoint_dir(out).glob("*.pt"))
    os.truncate(path, path.stat().st_size // 3)


def garble_checkpoint(out, tmp):
    path = next(checkpoint_dir(out).glob("*.pt"))
    path.write_bytes(os.urandom(path.stat().st_size))


def garble_index(out, tmp):
    next(checkpoint_dir(out).glob("*.json")).write_text("{not json")


def garble_lock(out, tmp):
    dry = subprocess.run([sys.executable, "-m", "bench.cli", "run", *PLAN, "--out", str(out), "--dry-run"],
                         capture_output=True, text=True, env=env(), cwd=REPO)
    lock = out / "_locks" / f"{dry.stdout.split()[1]}.lock"
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
        images.write_bytes(gzip.compress(change(gzip.decompress(images.read_bytes()))))
    return setup


def fill_disk_at(limit):
    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limit_file_size


# (id, command after `bench`, setup(out, tmp), text the one line must hold, preexec for the process).
# A failure found only once training is under way ends the progress lines with the one error line.
CASES = [
    ("unknown model", ["run", "--models", "vea"], None, "unknown model 'vea'", None),
    ("unknown dataset", ["run", "--datasets", "mnsit"], None, "unknown dataset 'mnsit'", None),
    ("negative seeds", ["run", "--seeds", "-1"], None, "--seeds -1", None),
    ("negative lr", ["run", "--set", "lr=-1"], None, "lr", None),
    ("unknown key", ["run", "--set", "nope=1"], None, "--set nope: unknown key", None),
    ("no jobs", ["run", "--jobs", "0"], None, "--jobs 0: need at least 1", None),
    ("no threads", ["run", "--threads", "0"], None, "--threads 0: need at least 1", None),
    ("unknown device", ["run", "--device", "tpu"], None, "--device tpu", None),
    ("out is a file", ["run", "--out", "{tmp}/a-file/runs"], file_for_out, "cannot write there", None),
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
    ("disk full during a publish", ["run"], None, "cannot write to", fill_disk_at(1_000_000)),
    ("unreachable scheduler", ["run", "--backend", "dask", "--scheduler", "tcp://127.0.0.1:9"], None,
     "cannot reach a Dask scheduler", None),
    ("dask without a scheduler", ["run", "--backend", "dask"], None, "--backend dask and --scheduler ADDRESS go together", None),
    ("unknown backend", ["run", "--backend", "spark"], None, "--backend spark", None),
    ("bad resources", ["run", "--backend", "dask", "--scheduler", "tcp://127.0.0.1:9", "--resources", "GPU"], None,
     "--resources GPU", None),
    ("check without a reference", ["check", "--runs", "{out}"], None, "--runs and --reference go together", None),
]


def run_case(case, folder, tmp):
    name, command, setup, message, preexec = case
    tmp.mkdir()
    out = tmp / "runs"
    shutil.copytree(folder, out)
    if setup:
        setup(out, tmp)
    before = snapshot(tmp)
    args = [a.format(out=out, tmp=tmp) for a in command]
    if args[0] == "run":  # the case's own options come last and win
        args = ["run", *PLAN, "--out", str(out), *args[1:]]
    result = subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, env=env(),
                            cwd=REPO, timeout=300, preexec_fn=preexec)
    problems = []
    if result.returncode != 2:
        problems.append(f"exit {result.returncode}")
    lines = result.stderr.splitlines()
    midway = preexec is not None
    if (len(lines) != 1 and not midway) or not lines or not lines[-1].startswith("bench: error: ") \
            or message not in lines[-1] or "Traceback" in result.stderr:
        problems.append(f"stderr {result.stderr[-600:]!r}")
    after = {k: v for k, v in snapshot(tmp).items() if not k.startswith(("runs/_locks/", "t.md"))}
    if {k: v for k, v in before.items() if not k.startswith("runs/_locks/")} != after:
        problems.append("files changed")
    return name, problems


def test_every_bad_input_is_one_line_exit_2_and_loses_nothing(killed_folder, tmp_path):
    assert len(CASES) >= 20
    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(lambda i: run_case(CASES[i], killed_folder, tmp_path / f"case-{i}"), range(len(CASES))))
    failures = {name: problems for name, problems in outcomes if problems}
    assert not failures, json.dumps(failures, indent=1)
