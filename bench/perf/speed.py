"""Training throughput of each objective: images per second of full update steps."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from bench.config import resolve
from bench.train.trainer import Trainer


@dataclass(frozen=True)
class Throughput:
    model: str
    device: str
    threads: int
    batch_size: int
    steps: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.steps * self.batch_size / self.seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: str, device: str = "cpu", batch_size: int = 64, steps: int = 50, warmup: int = 20,
            image_size: int = 32, channels: int = 1, recipe: str = "described") -> Throughput:
    """Time ``steps`` update steps (VAE update plus, where the objective has one, the discriminator's).

    Pixel content does not change the cost, so the images are random; the timing includes moving
    each batch to the device and scaling it, as in training.
    """
    cfg = resolve(model, "mnist", 0, "paper", {"batch_size": batch_size}, recipe)
    g = torch.Generator().manual_seed(0)
    n = batch_size * (steps + warmup)
    images = torch.randint(0, 256, (n, channels, image_size, image_size), generator=g, dtype=torch.uint8)
    trainer = Trainer(cfg, images, images[:batch_size], device)
    order = torch.arange(n, device=trainer.device)
    batches = [order[i * batch_size:(i + 1) * batch_size] for i in range(steps + warmup)]

    def step(index):
        x = trainer.batch_of(trainer.train_images, index)
        independent = trainer.disc is not None and cfg.perm_batch == "independent"
        other = trainer.batch_of(trainer.train_images, index.flip(0)) if independent else None
        return trainer.train_step(x, other)

    for index in batches[:warmup]:
        step(index)
    _sync(trainer.device)
    start = time.perf_counter()
    for index in batches[warmup:]:
        step(index)
    _sync(trainer.device)
    seconds = time.perf_counter() - start
    return Throughput(model, str(trainer.device), torch.get_num_threads(), batch_size, steps, seconds)


def stacked_throughput(model: str, runs: int, steps: int = 8, batch_size: int = 64, device: str = "cpu",
                       cuda_graphs: bool = False, recipe: str = "described") -> float:
    """Images per second of ``runs`` seeds of one objective trained as one stack (random images).

    The stack is the one ``bench run`` makes for a task of ``runs`` runs on this many threads
    (:func:`bench.run.stacks.placement`). It trains two epochs of ``steps`` updates; the second,
    after Adam's state is allocated (and on a GPU the graph captured), is timed, evaluation aside.
    """
    from bench.run.stacks import placement
    from bench.train.stacks import make_stack

    threads = torch.get_num_threads()
    where = placement(torch.device(device).type, threads, runs, True, cuda_graphs)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch_size * steps, 1, 32, 32), generator=g, dtype=torch.uint8)
    configs = [resolve(model, "mnist", seed, "paper", {"batch_size": batch_size, "epochs": 2}, recipe)
               for seed in range(runs)]
    stack = make_stack(configs, images, images[:batch_size], where)
    torch.set_num_threads(where.threads)
    try:
        stack.run_epoch()
        train_row = stack.run_epoch()[0].rows[0]
    finally:
        torch.set_num_threads(threads)
    return steps * batch_size / train_row["seconds"]


@dataclass(frozen=True)
class ProcessTiming:
    seconds: float
    max_rss_mb: float


# Runs a module as __main__ and, at exit, writes its own peak resident memory (VmHWM, which exec
# resets) to the file named by BENCH_PEAK_FILE. ru_maxrss from wait4 would not do: a forked child
# starts with its parent's high-water mark.
_PEAK_WRAPPER = """
import atexit, os, runpy, sys
def _peak():
    with open("/proc/self/status") as status, open(os.environ["BENCH_PEAK_FILE"], "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
atexit.register(_peak)
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def timed_process(module: str, args: list[str], env: dict) -> ProcessTiming:
    """Wall seconds and peak resident memory of ``python -m module args`` as a whole process.

    The memory is the process's own (its children, if it forks workers, are not counted).
    """
    import subprocess
    import sys
    import tempfile

    with tempfile.NamedTemporaryFile("r", suffix=".peak") as peak:
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, module, *args], env={**env, "BENCH_PEAK_FILE": peak.name},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            raise RuntimeError(f"python -m {module} {' '.join(args[:3])}... failed: {result.stderr.strip().splitlines()[-1:]}")
        return ProcessTiming(seconds, int(peak.read()) / 1024)


def against_the_usual_loop(model: str, seeds: int, images: int, data_root: str, out: str) -> dict:
    """Whole processes, one after the other: the usual loop, then ``bench run`` (stacked, one job).

    Both train ``seeds`` seeds for one epoch of the first ``images`` MNIST images; ``bench run``
    also evaluates on 64 test images per epoch and writes its records. Returns the two timings,
    their ratio and ``bench run``'s startup (wall minus the training and evaluation its records
    account for).
    """
    import os

    from bench.records import read_tree

    env = {**os.environ, "BENCH_DATA": data_root}
    usual = timed_process("bench.perf.usual_loop", ["--model", model, "--seeds", str(seeds), "--images", str(images)], env)
    ours = timed_process("bench.cli", ["run", "--models", model, "--seeds", str(seeds), "--profile", "quick",
                                       "--epochs", "1", "--subset", f"{images},64", "--out", out], env)
    rows, _ = read_tree(out)
    startup = ours.seconds - float(rows["seconds"].sum())
    return {"usual": usual, "bench_run": ours, "speedup": usual.seconds / ours.seconds, "startup": startup}


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what platform knows."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def compare_with_usual(models: list[str], images: int, data_root: str, echo, stack_sizes=(1, 5, 25)) -> list[str]:
    """Measure every objective both ways and as stacks; echo progress; return the dated markdown table."""
    import sys
    import tempfile

    seeds = 2
    header = ("| objective | usual loop (s) | bench run (s) | speedup | bench run startup (s) | peak MB usual / bench run "
              "| " + " | ".join(f"stack of {k} (img/s)" for k in stack_sizes) + " |")
    lines = [
        f"## bench bench --against-usual ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {cpu_name()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__} (CPU capability {torch.backends.cpu.get_cpu_capability()}). Command: `bench "
        + " ".join(sys.argv[1:]) + f"`. Each side trains {seeds} seeds x {images:,} MNIST images, one epoch, as a whole "
        "process (the usual loop: `python -m bench.perf.usual_loop`); the stack columns time update steps of that many "
        "seeds trained as one stack, sharing the threads as `bench run` does.",
        "",
        header,
        "|---" * (6 + len(stack_sizes)) + "|",
    ]
    for model in models:
        with tempfile.TemporaryDirectory() as out:
            timing = against_the_usual_loop(model, seeds, images, data_root, out)
        # About 8 timed run-updates per stack size, at least one update of the whole stack: the
        # images per second of a lockstep stack do not need more, and the command stays in budget.
        stacks = [stacked_throughput(model, k, steps=-(-8 // k)) for k in stack_sizes]
        usual, ours = timing["usual"], timing["bench_run"]
        row = (f"| {model} | {usual.seconds:.1f} | {ours.seconds:.1f} | {timing['speedup']:.2f}x | "
               f"{timing['startup']:.1f} | {usual.max_rss_mb:.0f} / {ours.max_rss_mb:.0f} | "
               + " | ".join(f"{v:,.0f}" for v in stacks) + " |")
        echo(row)
        lines.append(row)
    return lines
