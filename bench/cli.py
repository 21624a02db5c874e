"""The `bench` command: parses options, then calls one function per subcommand."""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from pathlib import Path

import click

from bench.config import PROFILES, RECIPE_PRESETS, RECIPES, parse_overrides
from bench.errors import BenchError
from models.presets import PAPER_MODELS, PRESETS

MODELS_HELP = f"all (the paper's {', '.join(PAPER_MODELS)}), or a comma list of {', '.join(PRESETS)}"
# The most --jobs or --threads taken: beyond any machine bench runs on, where a typo's 10**9 would start that many.
MOST_WORKERS = 1024
# bench bench's largest stack and batch: 5x and 128x the largest it times by default (25 runs, 64 images).
MOST_STACK = 128
MOST_BATCH = 8192
MNIST_TRAIN = 60_000  # the images --against-usual can take per seed


class OutPath(click.Path):
    """A path a command writes to; an empty one is refused, as it would silently mean the working folder."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path would mean the working folder; give a folder or file name", param, ctx)
        return super().convert(value, param, ctx)


OUT_PATH = OutPath(path_type=Path)


@click.group()
def cli():
    """Benchmark disentangling VAE objectives: train, report, check."""


@cli.command()
@click.option("--models", default="all", show_default=True, help=MODELS_HELP)
@click.option("--datasets", default="mnist", show_default=True, help="all, or a comma list of dataset names")
@click.option("--seeds", default="5", show_default=True, help="N (seeds 0..N-1) or a range A-B, e.g. 5-9 to add seeds")
@click.option("--profile", default="paper", show_default=True, help=f"one of {', '.join(PROFILES)}")
@click.option("--recipe", default="described", show_default=True,
              help="described (the paper's text) or author (the paper's code as it ran); docs/recipes.md")
@click.option("--epochs", type=int, default=None, help="override the profile's epochs")
@click.option("--subset", default=None, help="first N train [and M test] images: N or N,M")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="override a hyperparameter, e.g. gamma=10")
@click.option("--jobs", default=1, show_default=True, type=int, help="runs trained in parallel")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
@click.option("--out", default="results/runs", show_default=True, type=OUT_PATH, help="records folder")
@click.option("--data-root", default=None, help="datasets folder (else $BENCH_DATA, else ~/.cache/bench/data)")
@click.option("--stack/--no-stack", default=True, show_default=True,
              help="train runs that share shapes and optimiser settings as one vectorised program")
@click.option("--cuda-graphs/--no-cuda-graphs", default=None,
              help="replay each stacked update as a CUDA graph  [default: on with a GPU]")
@click.option("--threads", type=int, default=None, help="torch threads per job  [default: the cores shared out, 1 on a GPU]")
@click.option("--fresh", is_flag=True, help="ignore checkpoints: train unfinished runs from the start")
@click.option("--keep", is_flag=True, help="keep the checkpoints of finished runs")
@click.option("--checkpoint-every", default=1, show_default=True, type=int,
              help="epochs between checkpoints (a kill loses at most that many)")
@click.option("--cpu-stack", type=int, default=None,
              help="the most runs in one CPU stack, whose runs all finish together  [default: as many as 512 MB holds]")
@click.option("--order", default="dearest", show_default=True,
              help="train the dearest stacks first (parallel jobs balance) or the cheapest (first runs finish soonest)")
@click.option("--backend", default="local", show_default=True, help="local (processes here) or dask (a cluster)")
@click.option("--scheduler", default=None, help="--backend dask: the scheduler's address, e.g. tcp://host:8786")
@click.option("--resources", default=None, help="--backend dask: what each task needs of a worker, e.g. GPU=1")
@click.option("--dry-run", is_flag=True, help="print the plan and train nothing")
def run(models, datasets, seeds, profile, recipe, epochs, subset, sets, jobs, device, out, data_root, stack, cuda_graphs, threads,
        fresh, keep, checkpoint_every, cpu_stack, order, backend, scheduler, resources, dry_run):
    """Train every (model, dataset, seed) run not already finished; records go to --out as parquet."""
    from bench.data import datasets as data
    from bench.plan import make_plan, parse_names, parse_seeds
    from bench.run.execute import RunOptions, execute
    from bench.run.job import is_finished
    from bench.run.stacks import ORDERS

    if not 1 <= jobs <= MOST_WORKERS:
        raise BenchError(f"--jobs {jobs}: need at least 1" if jobs < 1 else f"--jobs {jobs}: at most {MOST_WORKERS}")
    if threads is not None and not 1 <= threads <= MOST_WORKERS:
        raise BenchError(f"--threads {threads}: need at least 1" if threads < 1
                         else f"--threads {threads}: at most {MOST_WORKERS}")
    if checkpoint_every < 1:
        raise BenchError(f"--checkpoint-every {checkpoint_every}: need at least 1")
    if cpu_stack is not None and cpu_stack < 1:
        raise BenchError(f"--cpu-stack {cpu_stack}: need at least 1")
    if order not in ORDERS:
        raise BenchError(f"--order {order}: choose {' or '.join(ORDERS)}")
    if device not in ("auto", "cpu", "cuda"):
        raise BenchError(f"--device {device}: choose auto, cpu or cuda")
    if backend not in ("local", "dask"):
        raise BenchError(f"--backend {backend}: choose local or dask")
    if (backend == "dask") != (scheduler is not None):
        raise BenchError("--backend dask and --scheduler ADDRESS go together")
    if resources is not None:
        if backend != "dask":
            raise BenchError("--resources is for --backend dask")
        from bench.run.cluster import parse_resources

        parse_resources(resources)
    if recipe not in RECIPES:
        raise BenchError(f"--recipe {recipe}: choose from {', '.join(RECIPES)}")
    overrides = parse_overrides(sets)
    if epochs is not None:
        overrides.update(parse_overrides([f"epochs={epochs}"]))
    if subset is not None:
        n_train, n_test = data.parse_subset(subset)
        overrides.update({"train_subset": n_train or 0, "test_subset": n_test or 0})
    plan = make_plan(parse_names(models, RECIPE_PRESETS[recipe], "model", PAPER_MODELS),
                     parse_names(datasets, data.DATASETS, "dataset"), parse_seeds(seeds), profile, overrides, out, recipe)
    if dry_run:
        for item in plan:
            cfg = item.config
            state = "done" if is_finished(item.path) else "todo"
            click.echo(f"{state}  {cfg.run_id}  {cfg.dataset:<14} {cfg.model:<11} seed={cfg.seed}  epochs={cfg.epochs}"
                       f"  recipe={cfg.recipe}")
        click.echo(f"{len(plan)} runs planned")
        return
    options = RunOptions(jobs=jobs, device=device, stack=stack, cuda_graphs=cuda_graphs, threads=threads, fresh=fresh,
                         keep=keep, checkpoint_every=checkpoint_every, cpu_stack=cpu_stack, order=order, backend=backend,
                         scheduler=scheduler, resources=resources)
    summary = execute(plan, out, data.resolve_root(data_root), options)
    busy = f", left to another bench run {len(summary.busy)}" if summary.busy else ""
    click.echo(f"done {len(summary.done)}, skipped {len(summary.skipped)} (already done), "
               f"diverged {len(summary.diverged)}, failed {len(summary.failed)}{busy}; records in {out}")
    for line in summary.failed:
        click.echo(f"failed: {line}")
    if summary.failed:
        sys.exit(1)


@cli.command()
@click.option("--runs", default=("results/runs",), show_default=True, multiple=True, type=click.Path(path_type=Path),
              help="records folder; several --runs: the first gives the table, the others add models and ablations")
@click.option("--dataset", default=None, help="report only this dataset")
@click.option("--out", default="results/table1.md", show_default=True, type=OUT_PATH, help="markdown table")
@click.option("--data-root", default=None, help="datasets folder for the pictures of runs with weights (else $BENCH_DATA)")
def report(runs, dataset, out, data_root):
    """Table 1, Figure 3, the significance tests and the disentanglement scores, from the records; pictures
    of seed 0 where the final weights are there."""
    from bench.report.table1 import write_report

    summary = write_report(runs, out, dataset, data_root)
    for path in summary.paths:
        click.echo(f"wrote {path}")


@cli.command(name="bench")
@click.option("--models", default="all", show_default=True, help=MODELS_HELP)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda")
@click.option("--recipe", default="described", show_default=True, help="described or author: whose updates are timed")
@click.option("--batch-size", default=None, type=int, help="images per update  [default: the recipe's, 64 or 128]")
@click.option("--steps", default=50, show_default=True, type=int, help="timed update steps per objective")
@click.option("--threads", default=None, type=int, help="torch threads (default: torch's choice)")
@click.option("--against-usual", is_flag=True,
              help="CPU: whole processes of the usual loop against bench run, and stacks of 1, 5 and 25 runs")
@click.option("--images", default=5120, show_default=True, type=int, help="--against-usual: MNIST images per seed")
@click.option("--data-root", default=None, help="--against-usual: datasets folder (else $BENCH_DATA)")
@click.option("--stack-sizes", default="1,5,25", show_default=True,
              help="runs per timed stack (--against-usual, and --device cuda: eager against CUDA graphs)")
@click.option("--append", "append_to", default=None, type=OUT_PATH,
              help="--against-usual: append the dated table to this file, e.g. BENCHMARKS.md")
def bench_speed(models, device, recipe, batch_size, steps, threads, against_usual, images, data_root, stack_sizes,
                append_to):
    """Images per second of one training step of each objective, or (--against-usual) bench run against the usual loop."""
    import torch

    from bench.perf.speed import measure
    from bench.plan import parse_names
    from bench.train.malloc import keep_freed_memory
    from bench.train.placement import resolve_device

    keep_freed_memory()  # as bench run's trainers do, so the update steps timed here are theirs
    try:
        sizes = tuple(int(k) for k in stack_sizes.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1 or max(sizes) > MOST_STACK:
        raise BenchError(f"--stack-sizes {stack_sizes}: give a comma list of counts from 1 to {MOST_STACK}, e.g. 1,5,25")
    if recipe not in RECIPES:
        raise BenchError(f"--recipe {recipe}: choose from {', '.join(RECIPES)}")
    if against_usual:
        from bench.data import datasets as data

        if recipe != "described":
            raise BenchError("--against-usual times the described recipe against its usual loop; leave --recipe out")
        from bench.perf.speed import compare_with_usual

        if not 64 <= images <= MNIST_TRAIN:
            raise BenchError(f"--images {images}: need at least one batch of 64 and at most MNIST's {MNIST_TRAIN:,}")
        names = parse_names(models, PRESETS, "model", PAPER_MODELS)
        if append_to is not None:  # checked before the minutes of timing it would end
            from bench.writable import check_files, check_folders

            check_folders([append_to.parent], "choose another --append file")
            check_files([append_to], "choose another --append file")
        lines = compare_with_usual(names, images, str(data.resolve_root(data_root)), click.echo, sizes)
        if append_to is not None:
            try:
                with open(append_to, "a", encoding="utf-8") as handle:
                    handle.write("\n" + "\n".join(lines) + "\n")
            except OSError as exc:
                raise BenchError(f"cannot append to {append_to} ({exc.strerror or exc}); the table is above: "
                                 "paste it by hand") from None
            click.echo(f"appended to {append_to}")
        return
    if batch_size is None:
        batch_size = RECIPES[recipe].get("batch_size", 64)
    if batch_size < 1 or steps < 1:
        raise BenchError("--batch-size and --steps must be at least 1")
    if batch_size > MOST_BATCH:
        raise BenchError(f"--batch-size {batch_size}: at most {MOST_BATCH}")
    if threads is not None:
        if threads < 1:
            raise BenchError(f"--threads {threads}: need at least 1")
        torch.set_num_threads(threads)
    device = resolve_device(device)
    click.echo(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} thread(s), {recipe} recipe, "
               f"batch {batch_size}, {steps} steps")
    click.echo(f"{'model':<11} {'images/s':>10} {'ms/step':>9}")
    names = parse_names(models, RECIPE_PRESETS[recipe], "model", PAPER_MODELS)
    # The first timing in a fresh process reads ~25% slow even after 20 warm-up steps (measured),
    # so one untimed pass of the same length settles the process first.
    measure(names[0], device, batch_size, steps, recipe=recipe)
    for model in names:
        result = measure(model, device, batch_size, steps, recipe=recipe)
        click.echo(f"{model:<11} {result.images_per_second:>10.0f} {1000 * result.seconds / steps:>9.2f}")
    if device == "cuda":
        from bench.perf.speed import stacked_throughput

        click.echo(f"stacked runs, images/s of all runs together, eager / CUDA graphs ({steps} steps):")
        click.echo(f"{'model':<11} " + " ".join(f"{f'stack of {k}':>22}" for k in sizes))
        for model in names:
            cells = [f"{stacked_throughput(model, k, steps, batch_size, device, recipe=recipe):,.0f} / "
                     f"{stacked_throughput(model, k, steps, batch_size, device, cuda_graphs=True, recipe=recipe):,.0f}"
                     for k in sizes]
            click.echo(f"{model:<11} " + " ".join(f"{cell:>22}" for cell in cells))


@cli.command()
@click.option("--golden", default="results/baseline/smoke.parquet", show_default=True,
              type=click.Path(path_type=Path), help="tier 1: the golden file of the smoke matrix")
@click.option("--data-root", default=None, help="datasets folder (else $BENCH_DATA, else ~/.cache/bench/data)")
@click.option("--runs", default=None, type=click.Path(path_type=Path), help="tier 2: a records folder of multi-seed runs")
@click.option("--reference", default=None, type=click.Path(path_type=Path), help="tier 2: the stored reference (JSON)")
@click.option("--alpha", default=0.01, show_default=True, type=float, help="tier 2: family-wise error rate (Holm)")
@click.option("--models", default="all", show_default=True, help=f"tier 1: all, or a comma list of {', '.join(PRESETS)}")
@click.option("--update", is_flag=True, help="rewrite the golden file (tier 1) or store the reference from --runs (tier 2)")
def check(golden, data_root, runs, reference, alpha, models, update):
    """Regression checks: the smoke matrix against the golden file, or --runs against --reference.

    Exits 1 on a regression, 2 on bad input (a missing or corrupt golden file included).
    """
    from bench.check.regression import check_exact, check_statistical
    from bench.plan import parse_names

    names = parse_names(models, PRESETS, "model")
    if update and runs is None and models != "all":
        raise BenchError("--update rewrites the whole golden file; leave --models out")
    if (runs is None) != (reference is None):
        raise BenchError("--runs and --reference go together: bench check --runs DIR --reference FILE [--update]")
    if runs is not None:
        ok = check_statistical(runs, reference, alpha, update)
    else:
        from bench.data import datasets as data  # here: it loads torch, which only the exact tier needs

        ok = check_exact(golden, data.resolve_root(data_root), update, names)
    if not ok:
        sys.exit(1)


@cli.command()
@click.option("--runs", required=True, type=click.Path(path_type=Path), help="records folder")
@click.option("--model", "models", multiple=True, help="only these models: repeat, or a comma list")
@click.option("--seed", type=int, default=None, help="only this seed")
@click.option("--dataset", default=None, help="only this dataset")
@click.option("--image-index", default=0, show_default=True, type=int, help="the test image traversed")
@click.option("--steps", default=11, show_default=True, type=int, help="values per latent, evenly spaced from -3 to 3")
@click.option("--out", default="results/figures", show_default=True, type=OUT_PATH, help="PNG folder")
@click.option("--data-root", default=None, help="datasets folder (else $BENCH_DATA, else ~/.cache/bench/data)")
def traverse(runs, models, seed, dataset, image_index, steps, out, data_root):
    """Latent traversals, reconstructions and prior samples of finished runs, as PNG files."""
    from bench.data import datasets as data
    from bench.eval.traverse import render
    from bench.plan import parse_names

    names = [name for text in models for name in parse_names(text, PRESETS, "model")] or None
    datasets = parse_names(dataset, data.DATASETS, "dataset") if dataset is not None else None
    seeds = None if seed is None else [seed]
    render(runs, out, data.resolve_root(data_root), names, seeds, datasets, image_index, steps,
           log=lambda path: click.echo(f"wrote {path}"))


@cli.command()
@click.option("--runs", default="results/runs", show_default=True, type=click.Path(path_type=Path), help="records folder")
@click.option("--data-root", default=None, help="the datasets folder the runs trained on (else $BENCH_DATA, else ~/.cache/bench/data)")
@click.option("--again", is_flag=True, help="score runs that have scores too, replacing them")
def metrics(runs, data_root, again):
    """Disentanglement scores of finished runs on datasets with known factors, from their final weights.

    Runs are scored when they finish; this scores runs whose scores are missing (deleted, or never written).
    """
    from bench.data import datasets as data
    from bench.eval.saved import score_runs

    outcome = score_runs(runs, data.resolve_root(data_root), again, log=click.echo)
    click.echo(f"scored {len(outcome.scored)}, already scored {len(outcome.already)}, "
               f"without final weights {len(outcome.no_weights)}, not finished {len(outcome.unfinished)}; "
               f"scores in {runs}/<dataset>/<model>/seed-<s>/_metrics/")
    for path in outcome.no_weights:
        click.echo(f"no final weights (cannot be scored): {path}")


# bench queue: a queue of long matrices trained one after another, in the background, from a fixed commit.
QUEUE_FOLDER_HELP = "the queue's folder: state, log, worktree, records and reports  [default: $BENCH_CACHE/queue, " \
                    "else ~/.cache/bench/queue]"


def _queue_folder(folder: Path | None) -> Path:
    from bench.run.queue import default_folder

    return default_folder() if folder is None else folder


def _queue_options(command):
    """The options of queue start and queue run: the folder, the code that trains, the matrices."""
    for option in reversed((
        click.option("--folder", default=None, type=click.Path(path_type=Path), help=QUEUE_FOLDER_HELP),
        click.option("--repo", default=".", show_default=True, type=click.Path(path_type=Path),
                     help="the git repository whose commit trains"),
        click.option("--commit", default=None,
                     help="the commit that trains  [default: HEAD, refused where the queue trains another commit]"),
        click.option("--queue", "queue_file", default=None, type=click.Path(path_type=Path),
                     help="a queue file: one matrix a line, its name then its bench run arguments  "
                          "[default: the queue's list; a new queue's is bench.run.queue.DEFAULT_QUEUE]"),
    )):
        command = option(command)
    return command


@cli.group(name="queue")
def queue_group():
    """A queue of long matrices trained one after another, niced, from a fixed commit: start, status, stop, land."""


@queue_group.command(name="start")
@_queue_options
def queue_start(folder, repo, commit, queue_file):
    """Check and plan the queue, then train it in the background (log: FOLDER/queue.log); exit 2 if one runs."""
    from bench.run.queue import read_queue_file, start

    folder = _queue_folder(folder)
    pid = start(folder, repo, commit, read_queue_file(queue_file) if queue_file else None)
    click.echo(f"queue started in {folder}: pid {pid}, log {folder / 'queue.log'}; "
               f"bench queue status --folder {folder} to watch it")


@queue_group.command(name="run")
@_queue_options
def queue_run(folder, repo, commit, queue_file):
    """Train the queue in this process (what queue start runs in the background); Ctrl-C or SIGTERM stops it."""
    from bench.run.queue import read_queue_file
    from bench.run.queue import run as run_queue

    sys.exit(run_queue(_queue_folder(folder), repo, commit, read_queue_file(queue_file) if queue_file else None))


@queue_group.command(name="status")
@click.option("--folder", default=None, type=click.Path(path_type=Path), help=QUEUE_FOLDER_HELP)
@click.option("--repo", default=Path("."), show_default=True, type=click.Path(path_type=Path),
              help="the checkout whose results/records the runs land in: its finished runs not landed yet are listed")
def queue_status(folder, repo):
    """Per matrix runs and epochs done, the rate and time left, the queue's ETA, whether it runs, and what to land."""
    from bench.run.queue import status

    click.echo(status(_queue_folder(folder), repo), nl=False)


@queue_group.command(name="stop")
@click.option("--folder", default=None, type=click.Path(path_type=Path), help=QUEUE_FOLDER_HELP)
@click.option("--wait", default=120.0, show_default=True, type=float, help="seconds to wait before a SIGKILL")
def queue_stop(folder, wait):
    """SIGTERM the running queue and its bench run, and wait for them to end; start resumes it."""
    from bench.run.queue import stop

    click.echo(stop(_queue_folder(folder), wait))


@queue_group.command(name="land")
@click.argument("matrix")
@click.argument("dest", type=click.Path(path_type=Path), required=False)
@click.option("--folder", default=None, type=click.Path(path_type=Path), help=QUEUE_FOLDER_HELP)
@click.option("--repo", default=".", show_default=True, type=click.Path(path_type=Path),
              help="the repository whose results/records/MATRIX is the default DEST")
@click.option("--partial", is_flag=True, help="land the finished runs of an unfinished matrix")
def queue_land(matrix, dest, folder, repo, partial):
    """Copy a finished matrix's records (and seed 0's final weights) into DEST  [default: results/records/MATRIX,
    where a queue started anew finds them and does not train them again]."""
    from bench.run.queue import land, landed_dir

    dest = landed_dir(repo, matrix) if dest is None else dest
    copied = land(_queue_folder(folder), matrix, dest, partial)
    click.echo(f"landed {len(copied)} files of {matrix} in {dest}")


class Terminated(BaseException):
    """SIGTERM, raised in the main thread as Ctrl-C raises KeyboardInterrupt, so that the same cleanups run
    (locks released, temporary files removed, joblib's workers ended). Not an Exception: the runner records
    an Exception as a failed run, and a stopped run has not failed."""


def _terminated(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise Terminated


def main(argv=None) -> None:
    """Entry point: user errors become one line on stderr and exit code 2; SIGINT exits 130, SIGTERM 143."""
    # Signal handlers belong to the main thread; main called from another thread keeps the default.
    here = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if here else None
    try:
        cli.main(args=argv, prog_name="bench", standalone_mode=False)
    except BenchError as exc:
        click.echo(f"bench: error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("bench: aborted", err=True)
        sys.exit(130)
    except Terminated:
        click.echo("bench: terminated (SIGTERM)", err=True)
        sys.exit(128 + signal.SIGTERM)
    except click.ClickException as exc:
        click.echo(f"bench: error: {exc.format_message()} (see bench --help)", err=True)
        sys.exit(2)
    finally:
        if here:
            signal.signal(signal.SIGTERM, previous or signal.SIG_DFL)  # None: a handler set outside Python


def entry() -> None:
    """The ``bench`` command: :func:`main`, then an exit that skips tearing the interpreter down.

    Finalising an interpreter that has loaded torch, pandas and pyarrow took 1.3 to 2 s on 2 CPU
    cores (BENCHMARKS.md), longer than many a command's own work, and does nothing a finished
    command needs: by then every record and checkpoint is closed and renamed into place. So the
    exit handlers run, the streams are flushed, and the process ends. Where a thread is still
    running (a cluster client, a pool's manager), the ordinary exit waits for it instead.
    """
    code: int | str | None = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    if isinstance(code, str):  # as sys.exit reports a message
        click.echo(code, err=True)
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    entry()
