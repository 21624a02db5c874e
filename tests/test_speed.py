"""bench bench: the measurements run and report what they measured (no timing is asserted here)."""

import os

from support import needs_mnist, run_bench

from bench.perf.speed import timed_process


def test_a_timed_process_reports_its_own_peak_memory_not_its_parents():
    held = bytearray(300 * 2**20)  # this process's high-water mark, which a forked child would inherit
    held[::4096] = b"x" * len(held[::4096])
    small = timed_process("json.tool", ["--help"], dict(os.environ))
    big = timed_process("bench.perf.usual_loop", ["--help"], dict(os.environ))  # imports torch
    assert 0 < small.max_rss_mb < 100 < big.max_rss_mb and small.seconds > 0
    del held


@needs_mnist
def test_bench_bench_against_the_usual_loop_appends_a_dated_table(tmp_path):
    log = tmp_path / "BENCHMARKS.md"
    result = run_bench("bench", "--against-usual", "--models", "cvae", "--images", "128", "--stack-sizes", "1,2",
                       "--append", log)
    assert result.returncode == 0, result.stderr[-2000:]
    table = log.read_text()
    assert table.startswith("\n## bench bench --against-usual (") and "Command: `bench bench --against-usual" in table
    row = next(line for line in table.splitlines() if line.startswith("| cvae |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 8 and cells[3].endswith("x") and all(float(c.replace(",", "")) > 0 for c in cells[6:])


def test_bench_bench_times_the_author_recipe_at_its_own_batch():
    result = run_bench("bench", "--recipe", "author", "--models", "cvae,cfactorvae", "--steps", "2", "--threads", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "author recipe, batch 128, 2 steps" in result.stdout
    rows = {line.split()[0]: float(line.split()[1]) for line in result.stdout.splitlines()[2:]}
    assert set(rows) == {"cvae", "cfactorvae"} and all(v > 0 for v in rows.values())


def test_bench_bench_against_the_usual_loop_is_of_the_described_recipe():
    result = run_bench("bench", "--recipe", "author", "--against-usual")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--against-usual" in result.stderr
