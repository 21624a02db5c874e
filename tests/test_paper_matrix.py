"""The paper-matrix script, on the smoke profile on the CPU: trains, reports once complete, logs its timing."""

import os
import subprocess
import sys

from support import DATA_ROOT, REPO, needs_mnist

from bench.records import read_tree


@needs_mnist
def test_the_paper_matrix_script_trains_reports_and_logs(tmp_path):
    log = tmp_path / "BENCHMARKS.md"
    log.write_text("# Benchmarks\n")
    command = [sys.executable, "-m", "bench.run.paper_matrix", "--profile", "smoke", "--seeds", "1", "--device", "cpu",
               "--out", str(tmp_path / "runs"), "--report", str(tmp_path / "report" / "table1.md"),
               "--benchmarks", str(log)]
    env = {**os.environ, "BENCH_DATA": str(DATA_ROOT), "BENCH_NO_DOWNLOAD": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    _, runs = read_tree(tmp_path / "runs")
    assert len(runs) == 5 and set(runs["status"]) == {"finished"}
    assert "CFactorVAE" in (tmp_path / "report" / "table1.md").read_text(encoding="utf-8")
    section = log.read_text().split("\n## The paper matrix (")[1]
    assert "bench run --models all --seeds 1 --profile smoke --device cpu --jobs 2 --checkpoint-every 1 --out" in section
    assert "5 runs are recorded" in section and "0 of them unfinished" in section
    # Called again, everything is done: nothing is retrained and a second section is logged.
    again = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert again.returncode == 0 and "skipped 5 (already done)" in again.stdout
    assert log.read_text().count("## The paper matrix (") == 2
