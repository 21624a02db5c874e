"""The paper's matrix in one command: train it, report it, and log how long it took.

``python -m bench.run.paper_matrix`` runs ``bench run --models all --seeds 5 --profile paper``, then
``bench report`` once every run has finished, and appends a dated section with the machine, torch
version, wall time and commands to BENCHMARKS.md. Called again after a cut-off, it resumes from the
last checkpoints. Meant for a GPU with limited time: docs/gpu.md has the commands for a lent machine.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

import click

from bench.perf.speed import cpu_name
from bench.records import read_tree


def _device_name(device: str) -> str:
    import torch

    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{cpu_name()} ({torch.get_num_threads()} threads), torch {torch.__version__}"


def _bench(args: list[str]) -> tuple[int, float]:
    """Run ``bench ARGS`` in a child process, its output passed through; return its exit code and seconds."""
    start = time.perf_counter()
    code = subprocess.run([sys.executable, "-m", "bench.cli", *args]).returncode
    return code, time.perf_counter() - start


@click.command()
@click.option("--profile", default="paper", show_default=True)
@click.option("--seeds", default="5", show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--jobs", default=2, show_default=True, type=int, help="stacks trained at once")
@click.option("--cuda-graphs/--no-cuda-graphs", default=None, help="passed to bench run  [default: on with a GPU]")
@click.option("--checkpoint-every", default=1, show_default=True, type=int,
              help="passed to bench run: epochs between checkpoints (on a GPU a 10-run stack's checkpoint is 680 MB)")
@click.option("--out", default="results/records/mnist-paper", show_default=True, type=click.Path(path_type=Path))
@click.option("--report", default="results/table1.md", show_default=True, type=click.Path(path_type=Path))
@click.option("--benchmarks", default="BENCHMARKS.md", show_default=True, type=click.Path(path_type=Path))
def main(profile, seeds, device, jobs, cuda_graphs, checkpoint_every, out, report, benchmarks):
    """Train the paper's matrix, report it once complete, and log the timing to BENCHMARKS.md."""
    run_args = ["run", "--models", "all", "--seeds", seeds, "--profile", profile, "--device", device,
                "--jobs", str(jobs), "--checkpoint-every", str(checkpoint_every), "--out", str(out)]
    if cuda_graphs is not None:
        run_args.append("--cuda-graphs" if cuda_graphs else "--no-cuda-graphs")
    code, seconds = _bench(run_args)
    if code != 0:
        sys.exit(code)
    _, runs = read_tree(out)
    unfinished = int((~runs["status"].isin(["finished", "diverged"])).sum())
    report_args = ["report", "--runs", str(out), "--out", str(report)]
    if unfinished == 0:
        code, _ = _bench(report_args)
        if code != 0:
            sys.exit(code)
    section = [
        "",
        f"## The paper matrix ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {_device_name(device)}. Command: `python -m bench.run.paper_matrix "
        + " ".join(shlex.quote(a) for a in sys.argv[1:]) + "`, which ran",
        "",
        "```bash",
        "bench " + " ".join(shlex.quote(a) for a in run_args),
        *(["bench " + " ".join(shlex.quote(a) for a in report_args)] if unfinished == 0 else []),
        "```",
        "",
        f"`bench run` took {seconds:.1f} s wall for this call; {len(runs)} runs are recorded in `{out}`, "
        f"{unfinished} of them unfinished"
        + (" (call the command again to train them)." if unfinished else f", and the report is `{report}`."),
    ]
    with open(benchmarks, "a", encoding="utf-8") as handle:
        handle.write("\n".join(section) + "\n")
    click.echo(f"appended the timing to {benchmarks}")


if __name__ == "__main__":
    main()
