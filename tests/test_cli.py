"""The `bench` command end to end, in real subprocesses on real MNIST.

Input errors are found before anything is trained, so they are tried in this process;
tests/test_bad_input.py tries them again against a records folder that a killed run left, with nothing lost.
"""

import os
from pathlib import Path

import pandas as pd
import pytest
from support import DATA_ROOT, needs_mnist, run_bench, run_python

from bench.cli import main
from bench.records import COLUMNS, read_tree

pytestmark = needs_mnist


def bench_here(monkeypatch, capsys, *args):
    """``bench ARGS`` in this process, expected to stop: its exit code and stderr."""
    monkeypatch.setenv("BENCH_DATA", str(DATA_ROOT))
    monkeypatch.setenv("BENCH_NO_DOWNLOAD", "1")
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    return exit_.value.code, capsys.readouterr().err


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    result = run_bench("run", "--models", "vae,cfactorvae", "--seeds", "2", "--profile", "smoke", "--out", out,
                       "--jobs", "2")
    assert result.returncode == 0, result.stderr
    return out, result


def test_run_writes_one_record_per_run(smoke_runs):
    out, result = smoke_runs
    rows, runs = read_tree(out)
    assert len(runs) == 4 and set(runs["status"]) == {"finished"}
    assert list(rows.columns) == list(COLUMNS)
    assert len(rows) == 4 * 2 * 2  # runs x epochs x splits
    assert sorted(p.relative_to(out).parts[:3] for p in out.rglob("*.parquet")) == [
        ("mnist", "cfactorvae", "seed-0"), ("mnist", "cfactorvae", "seed-1"),
        ("mnist", "vae", "seed-0"), ("mnist", "vae", "seed-1"),
    ]
    weights = sorted(out.rglob("*.pt"))
    assert len(weights) == 4 and all(p.parent.name == "_weights" for p in weights)
    assert "done 4, skipped 0" in result.stdout
    assert "epoch 2/2" in result.stderr and "ETA" in result.stderr  # progress is shown


def test_run_records_metadata(smoke_runs):
    out, _ = smoke_runs
    _, runs = read_tree(out)
    from bench.records import read_meta
    meta = read_meta(Path(runs["path"][0]))
    assert meta["profile"] == "smoke" and meta["device"] == "cpu" and meta["threads"] == 1
    assert set(meta["versions"]) == {"python", "torch", "torchvision"}
    assert meta["config"]["train_subset"] == 256 and meta["wall_seconds"] > 0
    # the CPU's model name, as the kernel gives it where it does
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    assert isinstance(meta["cpu"], str) and meta["cpu"] and runs["cpu"][0] == meta["cpu"]
    if names:
        assert meta["cpu"] == names[0]
    # torch's kernels: ATEN_CPU_CAPABILITY where it is set, else the best this CPU's flags allow
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        flags = set(next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), []))
    best = ("AVX512" if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "fma"} <= flags else
            "AVX2" if {"avx2", "fma"} <= flags else "DEFAULT")
    assert meta["cpu_capability"] == os.environ.get("ATEN_CPU_CAPABILITY", best).upper()
    assert runs["cpu_capability"][0] == meta["cpu_capability"]


def test_second_call_trains_nothing(smoke_runs):
    out, _ = smoke_runs
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")}
    result = run_bench("run", "--models", "vae,cfactorvae", "--seeds", "2", "--profile", "smoke", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "done 0, skipped 4" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.parquet")} == before


def test_same_seed_same_records_across_processes(smoke_runs, tmp_path):
    out, _ = smoke_runs
    # One job of two threads here versus two jobs of one thread in the fixture: pin the threads to compare.
    result = run_bench("run", "--models", "cfactorvae", "--seeds", "2", "--profile", "smoke", "--out", tmp_path,
                       "--jobs", "2")
    assert result.returncode == 0, result.stderr
    first = pd.read_parquet(out).query("model == 'cfactorvae'").drop(columns="seconds")
    second = pd.read_parquet(tmp_path).drop(columns="seconds")
    key = ["seed", "epoch", "split"]
    pd.testing.assert_frame_equal(first.sort_values(key).reset_index(drop=True),
                                  second.sort_values(key).reset_index(drop=True), check_exact=True)


def test_dry_run_lists_the_plan(smoke_runs):
    out, _ = smoke_runs
    result = run_bench("run", "--models", "all", "--seeds", "2", "--profile", "smoke", "--out", out, "--dry-run")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[-1] == "10 runs planned"
    assert sum(line.startswith("done") for line in lines) == 4
    assert sum(line.startswith("todo") for line in lines) == 6


def test_report_from_the_runs(smoke_runs, tmp_path):
    out, _ = smoke_runs
    result = run_bench("report", "--runs", out, "--out", tmp_path / "table1.md")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "table1.md").read_text()
    assert "| VAE |" in text and "CFactorVAE" in text
    assert (tmp_path / "figure3.png").stat().st_size > 0


@pytest.mark.fast
@pytest.mark.parametrize("args, message", [
    (["--models", "vea"], "unknown model 'vea'"),
    (["--datasets", "mnsit"], "unknown dataset 'mnsit'"),
    (["--profile", "fast"], "unknown profile 'fast'"),
    (["--seeds", "0"], "--seeds 0"),
    (["--seeds", "9-5"], "--seeds 9-5: need at least 1 seed (a range A-B needs A <= B)"),
    (["--seeds", "five"], "--seeds five: give a count N"),
    (["--set", "nope=1"], "--set nope: unknown key"),
    (["--set", "gamma=abc"], "--set gamma=abc: not a valid float"),
    (["--subset", "ten"], "bad subset 'ten'"),
    (["--datasets", "chairs"], "chairs"),
    (["--device", "tpu"], "--device tpu"),
    (["--bogus"], "No such option"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, message):
    out = tmp_path / "runs"
    code, err = bench_here(monkeypatch, capsys, "run", "--profile", "smoke", "--seeds", "1", "--out", str(out), *args)
    assert code == 2
    assert err.count("\n") == 1 and message in err, err
    assert "Traceback" not in err
    assert not out.exists()  # nothing partial left behind


@pytest.mark.fast
def test_corrupt_data_is_named(tmp_path, monkeypatch, capsys):
    broken = tmp_path / "data" / "mnist"
    broken.mkdir(parents=True)
    for f in (DATA_ROOT / "mnist").glob("*.gz"):
        (broken / f.name).write_bytes(f.read_bytes())
    blob = bytearray((broken / "t10k-labels-idx1-ubyte.gz").read_bytes())
    blob[100] ^= 0xFF
    (broken / "t10k-labels-idx1-ubyte.gz").write_bytes(bytes(blob))
    out = tmp_path / "runs"
    code, err = bench_here(monkeypatch, capsys, "run", "--profile", "smoke", "--seeds", "1", "--models", "vae",
                           "--out", str(out), "--data-root", str(tmp_path / "data"))
    assert code == 2
    assert "t10k-labels-idx1-ubyte.gz" in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.fast
def test_unwritable_out(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, err = bench_here(monkeypatch, capsys, "run", "--profile", "smoke", "--seeds", "1", "--models", "vae",
                           "--out", str(blocker / "runs"))
    assert code == 2 and f"{blocker / 'runs'} cannot be made: {blocker} is not a folder" in err


@pytest.mark.fast
def test_report_errors_are_one_line(tmp_path, monkeypatch, capsys):
    code, err = bench_here(monkeypatch, capsys, "report", "--runs", str(tmp_path / "none"), "--out", str(tmp_path / "t.md"))
    assert code == 2 and "no run files" in err and err.count("\n") == 1


class _Exited(Exception):
    pass


@pytest.mark.fast
@pytest.mark.parametrize("outcome, code", [(None, 0), (2, 2), ("bench: gone", 1)])
def test_the_command_runs_exit_handlers_then_leaves_with_mains_code(monkeypatch, outcome, code):
    import atexit

    import bench.cli

    seen = []

    def fake_main():
        if outcome is not None:
            raise SystemExit(outcome)

    def fake_exit(value):
        seen.append(value)
        raise _Exited

    monkeypatch.setattr(bench.cli, "main", fake_main)
    # The real handlers are this test process's own: they must not run here.
    monkeypatch.setattr(atexit, "_run_exitfuncs", lambda: seen.append("exit handlers"))
    monkeypatch.setattr(bench.cli.os, "_exit", fake_exit)
    with pytest.raises(_Exited):
        bench.cli.entry()
    assert seen == ["exit handlers", code]


@pytest.mark.fast
def test_the_command_waits_for_a_running_thread_with_an_ordinary_exit(monkeypatch):
    import threading

    import bench.cli

    release = threading.Event()
    worker = threading.Thread(target=release.wait)
    worker.start()
    monkeypatch.setattr(bench.cli, "main", lambda: None)
    monkeypatch.setattr(bench.cli.os, "_exit", lambda value: pytest.fail("left without waiting for the thread"))
    try:
        with pytest.raises(SystemExit) as exit_:
            bench.cli.entry()
        assert exit_.value.code == 0
    finally:
        release.set()
        worker.join()


def test_a_real_command_process_flushes_and_runs_its_exit_handlers():
    code = ("import atexit, sys; atexit.register(print, 'handler ran'); sys.argv = ['bench', 'run', '--jobs', '0']; "
            "from bench.cli import entry; entry()")
    result = run_python("-c", code, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "bench: error: --jobs 0: need at least 1"
    assert result.stdout == "handler ran\n"
