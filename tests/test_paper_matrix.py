"""The paper-matrix script, on the smoke profile on the CPU: trains, reports once complete, logs its timing."""

from support import needs_mnist, run_python

from bench.records import read_tree


@needs_mnist
def test_the_paper_matrix_script_trains_reports_and_logs(tmp_path):
    log = tmp_path / "BENCHMARKS.md"
    log.write_text("# Benchmarks\n")
    command = ["-m", "bench.run.paper_matrix", "--profile", "smoke", "--seeds", "1", "--device", "cpu",
               "--out", tmp_path / "runs", "--report", tmp_path / "report" / "table1.md", "--benchmarks", log]
    result = run_python(*command)
    assert result.returncode == 0, result.stderr[-2000:]
    _, runs = read_tree(tmp_path / "runs")
    assert len(runs) == 5 and set(runs["status"]) == {"finished"}
    assert "CFactorVAE" in (tmp_path / "report" / "table1.md").read_text(encoding="utf-8")
    section = log.read_text().split("\n## The paper matrix (")[1]
    assert "bench run --models all --seeds 1 --profile smoke --device cpu --jobs 2 --checkpoint-every 1 --out" in section
    assert "5 runs are recorded" in section and "0 of them unfinished" in section
    # Called again, everything is done: nothing is retrained and a second section is logged.
    again = run_python(*command)
    assert again.returncode == 0 and "skipped 5 (already done)" in again.stdout
    assert log.read_text().count("## The paper matrix (") == 2
