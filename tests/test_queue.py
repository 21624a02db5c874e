"""bench queue: matrices trained one after another from a fixed commit, killed and started again.

The queue trains a temporary clone of this repository, so nothing here touches the checkout's
git state; its processes are real ones, started detached as ``bench queue start`` starts them.
"""

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from support import REPO, TEST_ENV, needs_mnist, run_bench

from bench.cli import main
from bench.records import META_KEY, read_meta, read_tree, run_files
from bench.run import queue

pytestmark = needs_mnist

# Two small matrices: the first takes about a second an epoch, so a kill after its first record lands mid-matrix.
TWO = "two-vae --models vae --seeds 2 --profile smoke --subset 512,128 --epochs 3 --threads 1"
ONE = "one-vae --models vae --seeds 1 --profile smoke --subset 256,128 --epochs 1 --threads 1"


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=queue test", "-c", "user.email=queue@test", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def bench_here(*args):
    """``bench ARGS`` in this process: its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def wait_for(condition, timeout=300.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def matrices(tmp_path, *lines):
    path = tmp_path / "queue.txt"
    path.write_text("# name  bench run arguments\n" + "\n".join(lines) + "\n")
    return queue.read_queue_file(path)


def rows_of(runs):
    rows, _ = read_tree(runs)
    return rows.drop(columns=["seconds"]).sort_values(["run_id", "epoch", "split"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A two-matrix queue started in the background on a clone, whose working tree is broken once it runs."""
    root = tmp_path_factory.mktemp("queue")
    clone = root / "repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    git(clone, "commit", "-q", "--allow-empty", "-m", "the commit the queue trains")
    commit = git(clone, "rev-parse", "HEAD")
    folder = root / "q"
    with pytest.MonkeyPatch.context() as env:
        for key, value in TEST_ENV.items():
            env.setenv(key, value)
        pid = queue.start(folder, clone, None, matrices(root, TWO, ONE))
        # A half-made change in the repository's working tree, while the queue runs: the runs never see it.
        (clone / "bench" / "config.py").write_text("raise SystemExit('a half-made change')\n")
        second = bench_here("queue", "start", "--folder", folder, "--repo", clone)
        running = queue.status(folder)
        wait_for(lambda: queue.holder(folder) is None)
    return SimpleNamespace(root=root, clone=clone, commit=commit, folder=folder, pid=pid, second=second, running=running)


def test_a_started_queue_trains_every_matrix_from_its_commit_and_reports_it(finished):
    folder, commit = finished.folder, finished.commit
    assert commit != git(REPO, "rev-parse", "HEAD")
    code, _, err = finished.second
    assert code == 2 and err.count("\n") == 1 and f"already running in {folder} (pid {finished.pid}" in err
    assert f"Running: pid {finished.pid}" in finished.running and f"commit {commit[:12]}" in finished.running
    for name, runs in (("two-vae", 2), ("one-vae", 1)):
        _, summary = read_tree(folder / name / "runs")
        assert len(summary) == runs and set(summary["status"]) == {"finished"}
        # Every record names the start commit, which only the worktree's code reports.
        assert {read_meta(path)["git_commit"] for path in run_files(folder / name / "runs")} == {commit}
        assert "VAE" in (folder / name / "report" / "table1.md").read_text()
    timings = [line for line in (folder / "timings.md").read_text().splitlines() if line.startswith("- ")]
    assert len(timings) == 2 and "`two-vae`: 2 runs, 6 epochs" in timings[0] and "`one-vae`" in timings[1]
    machines = [m["finished"]["machine"] for m in json.loads((folder / "queue.json").read_text())["matrices"]]
    assert all(machine and machine in line and commit[:12] in line for machine, line in zip(machines, timings))
    log = (folder / "queue.log").read_text()
    assert "[2/2 vae mnist seed=1] epoch 3/3" in log and "every matrix is done" in log
    assert f"two-vae: bench run --checkpoint-every 1 --order cheapest --cpu-stack {os.cpu_count()} --models vae" in log
    text = queue.status(folder)
    assert text == (folder / "status.md").read_text() and "Not running" in text
    assert "| two-vae | 2/2 | 6/6 |" in text and "| one-vae | 1/1 | 1/1 |" in text and "All 7 epochs" in text
    assert not (folder / "queue.pid").exists()


def test_a_moved_head_is_refused_unless_the_commit_is_named(finished):
    git(finished.clone, "commit", "-q", "--allow-empty", "-m", "a later commit")
    state = (finished.folder / "queue.json").read_bytes()
    code, _, err = bench_here("queue", "run", "--folder", finished.folder, "--repo", finished.clone)
    assert code == 2 and err.count("\n") == 1 and f"trains commit {finished.commit[:12]}" in err
    assert (finished.folder / "queue.json").read_bytes() == state
    code, _, err = bench_here("queue", "run", "--folder", finished.folder, "--repo", finished.clone,
                              "--commit", finished.commit)
    assert code == 0 and "every matrix is done" in err and "bench run" not in err


def test_a_killed_queue_started_again_ends_with_the_same_bits(tmp_path, finished, monkeypatch):
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)
    folder, runs = tmp_path / "q", tmp_path / "q" / "two-vae" / "runs"
    given = matrices(tmp_path, TWO)
    pid = queue.start(folder, finished.clone, finished.commit, given)
    wait_for(lambda: run_files(runs))
    os.killpg(pid, signal.SIGKILL)  # the queue and its bench run, after the first epoch's records
    wait_for(lambda: queue.holder(folder) is None)
    assert not queue.progress(folder, queue.read_state(folder).matrix("two-vae")).complete
    assert list((runs / "_checkpoints").glob("*.pt"))
    # Started again and stopped at once: a SIGTERM to its group, which the queue ends cleanly on.
    queue.start(folder, finished.clone, finished.commit, given)
    assert "stopped the queue" in queue.stop(folder, wait=60)
    assert queue.holder(folder) is None and not (folder / "queue.pid").exists()
    again = run_bench("queue", "run", "--folder", folder, "--repo", finished.clone, "--commit", finished.commit)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming after epoch" in again.stderr
    assert rows_of(runs).equals(rows_of(finished.folder / "two-vae" / "runs"))
    assert (folder / "two-vae" / "report" / "table1.md").exists()


def test_a_stop_whose_handler_ran_inside_a_fork_still_stops_the_queue(tmp_path, finished, monkeypatch, capfd):
    # A SIGTERM while Popen forks runs the queue's handler in logging's at-fork hook, which prints the
    # handler's SystemExit and drops it ("Exception ignored in: <function _releaseLock>"): a queue
    # that did not raise it again would go on and train its matrix to the end.
    for key, value in TEST_ENV.items():
        monkeypatch.setenv(key, value)
    started, popen = [], subprocess.Popen

    def forked_during_a_sigterm(command, *args, **options):
        started.append(popen(command, *args, **options))
        if "--checkpoint-every" in command:  # the matrix's bench run
            with contextlib.suppress(SystemExit):  # what the at-fork hook does with it
                queue._stopped(signal.SIGTERM, None)
        return started[-1]

    monkeypatch.setattr(subprocess, "Popen", forked_during_a_sigterm)
    folder = tmp_path / "q"
    with pytest.raises(SystemExit) as stopped:
        queue.run(folder, finished.clone, finished.commit, matrices(tmp_path, ONE))
    assert stopped.value.code == 128 + signal.SIGTERM
    assert "--checkpoint-every" in started[-1].args and started[-1].returncode == -signal.SIGTERM  # ended with it
    assert not queue.progress(folder, queue.read_state(folder).matrix("one-vae")).complete
    assert queue.holder(folder) is None and "stopped by signal 15" in capfd.readouterr().err


def test_a_queue_started_anew_takes_back_the_landed_runs_and_checks_its_code_out_again(tmp_path, finished):
    repo = tmp_path / "repo"  # a new checkout, holding what was landed
    subprocess.run(["git", "clone", "-q", str(finished.clone), str(repo)], check=True)
    code, out, _ = bench_here("queue", "land", "two-vae", "--folder", finished.folder, "--repo", repo)
    landed = queue.landed_dir(repo, "two-vae")
    assert code == 0 and f"landed 3 files of two-vae in {landed}" in out
    folder, args = tmp_path / "q", ["--repo", repo, "--commit", finished.commit, "--queue", tmp_path / "queue.txt"]
    matrices(tmp_path, TWO, ONE)
    first = run_bench("queue", "run", "--folder", folder, *args, check=True)
    assert f"two-vae: 2 finished runs taken from {landed}, not trained again" in first.stderr
    assert "two-vae: bench run" not in first.stderr and "[1/1 vae mnist seed=0] epoch 1/1" in first.stderr
    for record in run_files(landed):  # the landed files themselves, seed 0's weights with them
        taken = folder / "two-vae" / "runs" / record.relative_to(landed)
        assert taken.read_bytes() == record.read_bytes()
    assert sum(1 for p in (folder / "two-vae" / "runs").rglob("*") if p.is_file() and "_weights" in p.parts) == 1
    state = queue.read_state(folder)
    assert state.matrix("two-vae").taken == sorted(p.stem for p in run_files(landed)) and not state.matrix("one-vae").taken
    timings = (folder / "timings.md").read_text()
    assert "`two-vae`: 2 runs (2 of them taken from landed records, trained elsewhere)" in timings
    # The checkout laid anew once more: the queue's worktree has lost its link, and is made again.
    shutil.rmtree(repo / ".git" / "worktrees")
    again = run_bench("queue", "run", "--folder", folder, *args, check=True)
    assert "is no longer a worktree" in again.stderr and "every matrix is done" in again.stderr
    assert git(queue.worktree_dir(folder, finished.commit), "rev-parse", "HEAD") == finished.commit


def test_the_default_folder_is_outside_the_work_tree(tmp_path):
    cache = tmp_path / "cache"
    result = run_bench("queue", "status", env={"BENCH_CACHE": str(cache)})
    assert result.returncode == 2 and f"no queue in {cache / 'queue'}" in result.stderr
    assert queue.default_folder().name == "queue"


@pytest.fixture
def half_done(tmp_path, finished):
    """The finished queue's folder, undone: two-vae's seed 1 cut back to its first epoch, one-vae not started."""
    folder = tmp_path / "q"
    shutil.copytree(finished.folder, folder, ignore=shutil.ignore_patterns("_worktree-*"))
    state = json.loads((folder / "queue.json").read_text())
    for matrix in state["matrices"]:
        matrix["finished"] = None
    (folder / "queue.json").write_text(json.dumps(state))
    shutil.rmtree(folder / "one-vae")
    record = next(path for path in run_files(folder / "two-vae" / "runs") if "seed-1" in str(path))
    table = pq.read_table(record)
    meta = {**read_meta(record), "status": "running"}
    table = table.filter(pc.equal(table["epoch"], 1)).replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    pq.write_table(table, record)
    return folder


def test_status_counts_a_half_done_queue(half_done):
    code, out, _ = bench_here("queue", "status", "--folder", half_done)
    assert code == 0
    assert "Not running" in out
    assert "| two-vae | 1/2 | 4/6 |" in out and "partly trained" in out
    assert "| one-vae | 0/1 | 0/1 | - |" in out and "waiting" in out
    assert "4/7 epochs trained; ETA" in out


def test_status_lists_the_finished_runs_not_landed_yet(half_done, tmp_path):
    repo = tmp_path / "checkout"
    repo.mkdir()
    code, out, _ = bench_here("queue", "status", "--folder", half_done, "--repo", repo)
    assert code == 0 and "Not landed yet" not in out  # not a checkout with results/records: not asked
    (repo / "results" / "records").mkdir(parents=True)
    code, out, _ = bench_here("queue", "status", "--folder", half_done, "--repo", repo)
    records = repo / "results" / "records" / "two-vae"
    # two-vae: seed 0 finished, seed 1 at epoch 1 of 3; one-vae not started: one run to land, with --partial.
    assert code == 0 and out.endswith(f"Not landed yet:\n- two-vae: 1 of 1 finished runs not in {records}: "
                                      "`bench queue land two-vae --partial`, then commit them\n")
    code, _, _ = bench_here("queue", "land", "two-vae", records, "--folder", half_done, "--partial")
    assert code == 0
    code, out, _ = bench_here("queue", "status", "--folder", half_done, "--repo", repo)
    assert code == 0 and "| two-vae | 1/2 | 4/6 |" in out and "Not landed yet" not in out


def test_runs_taken_back_from_a_gpu_do_not_time_the_cpu_queue(half_done):
    # two-vae's finished seed 0 as if trained on a GPU, 100 times as fast, and taken back from landed records;
    # its seed 1, one epoch trained here on the CPU, is then the only epoch that times the CPU's three left.
    runs = half_done / "two-vae" / "runs"
    gpu = next(path for path in run_files(runs) if "seed-0" in str(path))
    table = pq.read_table(gpu)
    table = table.set_column(table.schema.get_field_index("seconds"), "seconds", pc.divide(table["seconds"], 100.0))
    meta = {**read_meta(gpu), "device": "cuda"}
    pq.write_table(table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()}), gpu)
    state = queue.read_state(half_done)
    state.matrices[0].taken = [gpu.stem]
    queue.write_state(half_done, state)
    cpu = next(path for path in run_files(runs) if "seed-1" in str(path))
    # An epoch's seconds are its train and test rows': seed 1's one epoch here, seed 0's three there.
    cpu_seconds = float(pc.sum(pq.read_table(cpu)["seconds"]).as_py())
    gpu_epochs = pq.read_table(gpu).to_pandas().groupby("epoch")["seconds"].sum().sort_values().tolist()
    assert len(gpu_epochs) == 3
    code, out, _ = bench_here("queue", "status", "--folder", half_done)
    assert code == 0
    # epochs per hour at each device's median epoch, each device's apart
    assert f"| two-vae | 1/2 | 4/6 | {3600 / cpu_seconds:.1f}, {3600 / gpu_epochs[1]:.1f} (cuda) |" in out
    assert f"4/7 epochs trained; ETA {queue._span(3 * cpu_seconds)} of training on cpu from now" in out


# A process's autogroup nice, or '-' where it has none: no such file, or an empty one (a process in the boot
# session's default group, as under a CI runner that never called setsid, has the file but nothing in it).
AUTOGROUP_SCRIPT = ("import os, pathlib; p = pathlib.Path('/proc/self/autogroup'); "
                    "print(os.nice(0), ((p.read_text().split() if p.exists() else []) or ['-'])[-1])")


def _nice_and_autogroup(**options):
    child = subprocess.Popen([sys.executable, "-c", AUTOGROUP_SCRIPT], stdout=subprocess.PIPE, text=True, **options)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0
    return out.split()


@pytest.mark.fast
def test_the_detached_queue_yields_the_cpu_in_its_session_as_a_whole():
    # As queue start starts it: a session of its own, whose autogroup is niced (where Linux has autogroups).
    nice, autogroup = _nice_and_autogroup(start_new_session=True, preexec_fn=queue._nice_session)
    assert autogroup == (str(queue.NICE) if queue.AUTOGROUP.exists() else "-")
    # The processes it starts are niced one by one, and leave the autogroup of the session they are in as it
    # was: queue start plans in the caller's session, whose other processes must not be slowed for good.
    before = _nice_and_autogroup()[1]
    child = queue._in_worktree(REPO, ["-c", AUTOGROUP_SCRIPT], stdout=subprocess.PIPE, text=True)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0 and out.split() == [str(min(os.nice(0) + queue.NICE, 19)), before]
    assert _nice_and_autogroup()[1] == before


@pytest.mark.fast
def test_the_time_left_times_each_model_at_its_own_rate():
    # factorvae: 10 epochs of 20 s (180/h); vae: 10 epochs of 10 s (360/h), measured in another matrix
    own, elsewhere = {"factorvae": [20.0] * 10}, {"factorvae": [20.0] * 10, "vae": [10.0] * 10}
    # 20 factorvae epochs at 180/h = 400 s, 30 vae epochs at 360/h = 300 s
    assert queue.seconds_left({"factorvae": 20, "vae": 30}, own, [elsewhere]) == (pytest.approx(700.0), False)
    # cfactorvae untimed anywhere: at this matrix's pooled rate, 180/h, 5 epochs = 100 s, and said so
    assert queue.seconds_left({"cfactorvae": 5}, own, [elsewhere]) == (pytest.approx(100.0), True)
    # a matrix not started: the queue's pooled rate, median of ten 20 s and ten 10 s epochs 15 s, 240/h: 4 epochs = 60 s
    assert queue.seconds_left({"cvae": 4}, {}, [elsewhere]) == (pytest.approx(60.0), True)
    assert queue.seconds_left({"cvae": 4}, {}, [{}]) == (None, True)
    assert queue.seconds_left({"cvae": 0}, {}, [{}]) == (0.0, False)


@pytest.mark.fast
def test_an_epoch_paused_for_hours_does_not_time_the_epochs_left():
    # Five 50 s epochs and one stopped for an hour: the median epoch is 50 s, 72 epochs an hour (the mean, 643 s,
    # would give 5.6); 10 epochs left take 500 s.
    seconds = [50.0, 50.0, 3650.0, 50.0, 50.0, 50.0]
    assert queue.rate_of([seconds]) == pytest.approx(72.0)
    assert queue.seconds_left({"factorvae": 10}, {"factorvae": seconds}, [{}]) == (pytest.approx(500.0), False)
    # pooled over lists, an even count: the median of 10, 20, 30, 40 s is 25 s, 144/h
    assert queue.rate_of([[10.0, 40.0], [30.0, 20.0]]) == pytest.approx(144.0)
    assert queue.rate_of([]) is None and queue.rate_of([[]]) is None


@pytest.mark.fast
def test_a_model_with_few_epochs_here_is_timed_by_the_queues_epochs_of_it():
    # Two epochs here, one of them slow: their median, 120 s, would time 48 epochs left at 96 min; the queue's
    # ten 30 s epochs of the model time them instead: 48 x 30 s = 1440 s.
    elsewhere = {"cfactorvae": [30.0] * 10}
    assert queue.seconds_left({"cfactorvae": 48}, {"cfactorvae": [195.0, 45.0]}, [elsewhere]) == (
        pytest.approx(1440.0), False)
    # from the third epoch here on, this matrix's median (46 s) does: 48 x 46 s = 2208 s
    assert queue.seconds_left({"cfactorvae": 48}, {"cfactorvae": [195.0, 46.0, 46.0]}, [elsewhere]) == (
        pytest.approx(2208.0), False)
    # the model timed nowhere else: its two epochs here, median 120 s, still beat another model's rate
    assert queue.seconds_left({"cfactorvae": 48}, {"cfactorvae": [195.0, 45.0], "vae": [10.0] * 10}, [{}]) == (
        pytest.approx(5760.0), False)



@pytest.mark.fast
def test_a_model_is_timed_by_the_most_alike_matrices_that_trained_it():
    # factorvae: 10 epochs of 30 s in matrices as alike as can be, 10 of 60 s in ones of the same recipe, 10 of
    # 90 s in the queue's others (the whole queue's list holds all 30, median 60 s).
    alike, recipe = {"factorvae": [30.0] * 10}, {"factorvae": [60.0] * 10}
    queue_wide = {"factorvae": [30.0] * 10 + [60.0] * 10 + [90.0] * 10, "vae": [10.0] * 10}
    # 20 epochs at 30 s = 600 s; without the most alike, at 60 s = 1200 s; with the queue's only, also its median 60 s
    assert queue.seconds_left({"factorvae": 20}, {}, [alike, recipe, queue_wide]) == (pytest.approx(600.0), False)
    assert queue.seconds_left({"factorvae": 20}, {}, [{}, recipe, queue_wide]) == (pytest.approx(1200.0), False)
    assert queue.seconds_left({"factorvae": 20}, {}, [{}, {}, {"factorvae": [90.0] * 3}]) == (
        pytest.approx(1800.0), False)
    # three epochs of its own (40 s) outvote every other matrix: 20 x 40 s = 800 s
    assert queue.seconds_left({"factorvae": 20}, {"factorvae": [40.0] * 3}, [alike, recipe, queue_wide]) == (
        pytest.approx(800.0), False)
    # a model nowhere in the queue: the queue's epochs pooled time it, ten each of 10, 30, 60 and 90 s: the median is
    # halfway between the 20th and 21st, (30 + 60) / 2 = 45 s, so 20 epochs take 900 s, and it says so
    assert queue.seconds_left({"cvae": 20}, {}, [alike, recipe, queue_wide]) == (pytest.approx(900.0), True)


@pytest.mark.fast
def test_likeness_keeps_what_sets_an_epochs_work():
    author = ["--models", "cvae,factorvae", "--recipe", "author", "--seeds", "5", "--profile", "paper"]
    leaky = ["--models", "factorvae", "--recipe=author", "--seeds", "5", "--set", "disc=author-leaky", "--epochs", "50"]
    assert queue.likeness(author) == ((("--profile", "paper"), ("--recipe", "author")),
                                      (("--recipe", "author"), ("--profile", "paper"), ("--subset", None)))
    assert queue.likeness(leaky) == ((("--recipe", "author"), ("--set", "disc=author-leaky")),
                                     (("--recipe", "author"), ("--profile", "paper"), ("--subset", None)))
    described = queue.likeness(["--models", "all", "--seeds", "5", "--no-stack"])
    assert described == ((("--no-stack", None),), (("--recipe", "described"), ("--profile", "paper"), ("--subset", None)))


def _timed_copy(record, runs, run_id, train_seconds, test_seconds):
    """``record`` copied into ``runs`` as the record of ``run_id``, each epoch's train and test rows given these times."""
    table = pq.read_table(record)
    seconds = [train_seconds if split == "train" else test_seconds for split in table["split"].to_pylist()]
    table = table.set_column(table.schema.get_field_index("seconds"), "seconds", pa.array(seconds, pa.float64()))
    path = runs / "mnist" / f"{run_id}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def test_status_times_a_matrix_not_started_by_the_same_recipes_runs(finished, tmp_path):
    # The author's FactorVAE at 30 s an epoch (20 s train, 10 s test), the described one at 60 s (50 + 10), 3 epochs
    # of each of 2 runs; a leaky-D matrix of the author's FactorVAE not started: its 2 x 10 epochs take 20 x 30 s =
    # 10 min at the author recipe's rate, not 15 min at the queue's median epoch (45 s).
    record = next(path for path in run_files(finished.folder / "two-vae" / "runs") if "seed-0" in str(path))
    folder = tmp_path / "q"

    def planned(prefix, seeds, epochs):
        return [{"run_id": f"{prefix}{seed}", "dataset": "mnist", "model": "factorvae", "seed": seed, "epochs": epochs}
                for seed in seeds]

    state = queue.State(finished.commit, [
        queue.MatrixState("author", ["--models", "factorvae", "--recipe", "author", "--seeds", "2"],
                          runs=planned("a", (0, 1), 3)),
        queue.MatrixState("described", ["--models", "factorvae", "--seeds", "2"], runs=planned("d", (0, 1), 3)),
        queue.MatrixState("leaky", ["--models", "factorvae", "--recipe", "author", "--set", "disc=author-leaky",
                                    "--seeds", "2"], runs=planned("l", (0, 1), 10)),
        # Started, two slow first epochs (300 s): too few to time its other 8, which the author recipe's 30 s do.
        queue.MatrixState("slow", ["--models", "factorvae", "--recipe", "author", "--set", "gamma=0", "--seeds", "1"],
                          runs=planned("s", (0,), 10)),
    ])
    for matrix, train in (("author", 20.0), ("described", 50.0), ("slow", 290.0)):
        for run in state.matrix(matrix).runs:
            _timed_copy(record, queue.runs_dir(folder, matrix), run["run_id"], train, 10.0)
    started = queue.runs_dir(folder, "slow") / "mnist" / "s0.parquet"
    table = pq.read_table(started)
    meta = {**read_meta(started), "status": "running"}
    pq.write_table(table.filter(pc.less_equal(table["epoch"], 2)).replace_schema_metadata(
        {META_KEY: json.dumps(meta).encode()}), started)
    queue.write_state(folder, state)
    text = queue.status(folder)
    assert "| author | 2/2 | 6/6 | 120.0 | - |" in text and "| described | 2/2 | 6/6 | 60.0 | - |" in text
    assert "| leaky | 0/2 | 0/20 | - | 10m00s | waiting |" in text
    # 8 epochs x 30 s = 4 min; timed by its own two it would read 40 min
    assert "| slow | 0/1 | 2/10 | 12.0 | 4m00s |" in text and "ETA 14m00s" in text

def test_land_copies_finished_runs_only(half_done, finished, tmp_path):
    dest = tmp_path / "records"
    code, _, err = bench_here("queue", "land", "two-vae", dest, "--folder", half_done)
    assert code == 2 and err.count("\n") == 1 and "unfinished (1/2 runs finished)" in err and not dest.exists()
    code, _, err = bench_here("queue", "land", "no-such", dest, "--folder", half_done)
    assert code == 2 and "unknown matrix 'no-such'" in err
    code, out, _ = bench_here("queue", "land", "two-vae", dest, "--folder", half_done, "--partial")
    assert code == 0 and "landed 2 files" in out
    assert [p.name for p in run_files(dest)] == [p.name for p in run_files(half_done / "two-vae" / "runs")][:1]
    whole = tmp_path / "whole"
    code, out, _ = bench_here("queue", "land", "two-vae", whole, "--folder", finished.folder)
    copied = sorted(str(p.relative_to(whole)) for p in whole.rglob("*") if p.is_file())
    assert code == 0 and len(copied) == 3 and sum("_weights" in p for p in copied) == 1
    assert all("seed-0" in p for p in copied if "_weights" in p)
    assert rows_of(whole).equals(rows_of(finished.folder / "two-vae" / "runs"))


def test_bad_input_is_one_line_and_exit_2(tmp_path, finished):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    bad_state = tmp_path / "damaged"
    bad_state.mkdir()
    (bad_state / "queue.json").write_text("{not json")
    bad_file = tmp_path / "bad.txt"
    bad_file.write_text("_hidden --models vae\n")
    out_file = tmp_path / "out.txt"
    out_file.write_text("mine --models vae --out elsewhere\n")
    other_file = tmp_path / "other.txt"
    other_file.write_text("other --models vae\n")
    cases = [
        (["queue", "run", "--folder", tmp_path / "new", "--repo", finished.clone, "--commit", "no-such-ref"],
         "--commit no-such-ref: not a commit"),
        (["queue", "run", "--folder", tmp_path / "new", "--repo", tmp_path], "not a git repository"),
        (["queue", "start", "--folder", blocker / "q", "--repo", finished.clone, "--commit", finished.commit],
         "cannot write there"),
        (["queue", "status", "--folder", bad_state], "is not a queue state"),
        (["queue", "run", "--folder", bad_state, "--repo", finished.clone, "--commit", finished.commit],
         "is not a queue state"),
        (["queue", "status", "--folder", tmp_path / "new"], "no queue in"),
        (["queue", "run", "--folder", tmp_path / "new", "--repo", finished.clone, "--queue", bad_file],
         "matrix name '_hidden'"),
        (["queue", "run", "--folder", tmp_path / "new", "--repo", finished.clone, "--queue", out_file],
         "leave out --out (the queue gives each matrix its folder)"),
        (["queue", "run", "--folder", finished.folder, "--repo", finished.clone, "--commit", finished.commit,
          "--queue", other_file], "matrix two-vae of this queue is not in the list"),
    ]
    for args, message in cases:
        code, _, err = bench_here(*args)
        assert code == 2 and err.count("\n") == 1 and message in err, (args, err)
    assert not (tmp_path / "new").exists()
    assert (bad_state / "queue.json").read_text() == "{not json"


def test_a_matrix_with_runs_from_a_gpu_machine_is_reported_on_this_machine(finished, tmp_path):
    # A matrix whose runs came partly from a GPU machine (taken back) and finished on a CPU-only one: the report's
    # machine line names this CPU instead of failing to ask a driver that is not there.
    import torch

    from bench.perf.speed import cpu_name
    report = ["report", "--runs", str(finished.folder / "two-vae" / "runs"), "--out", str(tmp_path / "table1.md")]
    child = queue._in_worktree(REPO, ["-c", queue.FINISH_SCRIPT, "cuda", *report], stdout=subprocess.PIPE, text=True)
    out, _ = child.communicate(timeout=300)
    assert child.returncode == 0 and (tmp_path / "table1.md").exists()
    name = out.splitlines()[-1]
    assert name == cpu_name() if not torch.cuda.is_available() else name.endswith(f" with {cpu_name()}")
