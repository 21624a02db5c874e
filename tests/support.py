"""What every test module shares: the repository, the real datasets folder, and how to start a process.

``BENCH_DATA`` may be relative (the README's command passes ``../shared/data``); it is
resolved once, against the directory pytest was started from, so symlinks and
subprocesses started elsewhere see the same folder.

Every process a test starts goes through :func:`run_python` (or :func:`start_python`, which
does not wait); :func:`run_bench` is ``bench ARGS`` as a user types it.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("BENCH_DATA") or REPO.parent / "shared" / "data").resolve()
needs_mnist = pytest.mark.skipif(
    not (DATA_ROOT / "mnist").is_dir(), reason=f"real MNIST not found under {DATA_ROOT} (set BENCH_DATA)"
)

# What every process a test starts sees besides this one's environment: the real data, no downloads.
TEST_ENV = {"BENCH_DATA": str(DATA_ROOT), "BENCH_NO_DOWNLOAD": "1"}


def process_env(env: dict | None = None) -> dict:
    """This process's environment with :data:`TEST_ENV`, then ``env`` (a value of None removes that key)."""
    full = {**os.environ, **TEST_ENV, **(env or {})}
    return {key: value for key, value in full.items() if value is not None}


def bench_argv(*args, killer=None, prelude: str | None = None) -> list[str]:
    """The interpreter's arguments for ``bench ARGS``: ``-m bench.cli ARGS`` as the ``bench`` command runs.

    ``killer=(where, count)``: run it under :data:`KILLER`, which kills the process at that point.
    ``prelude``: run this code first in the same interpreter (to patch a function, say), then
    ``bench.cli.main`` on ARGS.
    """
    args = [str(a) for a in args]
    if killer is not None and prelude is not None:
        raise ValueError("give killer or prelude, not both")
    if killer is not None:
        where, count = killer
        return ["-c", KILLER, str(where), str(count), *args]
    if prelude is not None:
        return ["-c", f"{prelude}\nimport sys\nfrom bench.cli import main\nmain(sys.argv[1:])", *args]
    return ["-m", "bench.cli", *args]


def run_python(*argv, env: dict | None = None, cwd: Path | str = REPO, timeout: float = 600, check: bool = False,
               prefix: tuple | list = (), preexec_fn=None) -> subprocess.CompletedProcess:
    """``python ARGV`` (e.g. ``"-c", CODE, ARG`` or ``"-m", MODULE, ARG``) in a fresh interpreter, waited for.

    The interpreter is this one (``sys.executable``); the environment is :func:`process_env(env) <process_env>`;
    stdout and stderr are captured as text. ``prefix``: words before the interpreter (``setpriv ...``).
    ``preexec_fn``: run in the child before the interpreter starts (``resource.setrlimit``, say).
    ``check``: fail the test unless the exit code is 0, with the command and the end of stderr.
    A process still running after ``timeout`` seconds is killed and ``subprocess.TimeoutExpired`` raised.
    """
    command = [*map(str, prefix), sys.executable, *map(str, argv)]
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=process_env(env), cwd=cwd,
                            timeout=timeout, preexec_fn=preexec_fn)
    if check and result.returncode != 0:
        shown = " ".join(word if len(word) <= 80 else word[:77] + "..." for word in command)
        pytest.fail(f"exit {result.returncode} from {shown}\n{result.stderr[-3000:]}")
    return result


def run_bench(*args, killer=None, prelude: str | None = None, env: dict | None = None, cwd: Path | str = REPO,
              timeout: float = 600, check: bool = False, prefix: tuple | list = (),
              preexec_fn=None) -> subprocess.CompletedProcess:
    """``bench ARGS`` in a fresh interpreter, waited for: :func:`run_python` of :func:`bench_argv`.

    E.g. ``run_bench("run", "--models", "vae", "--profile", "smoke", "--out", tmp_path, check=True)``;
    ``killer=("step", 6)`` kills it at its 6th update. Returns the CompletedProcess (returncode, stdout, stderr).
    """
    return run_python(*bench_argv(*args, killer=killer, prelude=prelude), env=env, cwd=cwd, timeout=timeout,
                      check=check, prefix=prefix, preexec_fn=preexec_fn)


def start_python(*argv, env: dict | None = None, cwd: Path | str = REPO) -> subprocess.Popen:
    """``python ARGV`` started and not waited for, as :func:`run_python` starts it (stdout, stderr piped, text).

    For ``bench ARGS``: ``start_python(*bench_argv(*args))``. The caller waits for it (``communicate``).
    """
    return subprocess.Popen([sys.executable, *map(str, argv)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=process_env(env), cwd=cwd)


def record_meta(run_id: str, config: dict, status: str = "finished", **fields) -> dict:
    """A record's metadata as bench run writes it (the current format), for a run of ``config``.

    ``config`` is completed with RunConfig's defaults; ``fields`` replace or add top-level fields.
    """
    from bench.config import RunConfig
    from bench.records import RECORD_FORMAT

    return {"format": RECORD_FORMAT, "run_id": run_id, "profile": "smoke", "config": RunConfig(**config).to_dict(),
            "status": status, "versions": {"python": "3.11.0", "torch": "2.14.1", "torchvision": "0.29.1"},
            "platform": "Linux", "host": "test-host", "pid": 1, "device": "cpu", "threads": 1, "stack_size": 1,
            "cuda_graphs": False, "git_commit": None, "started": "2026-12-01T00:00:00+0000", "wall_seconds": 1.0,
            **fields}


# `python -c KILLER WHERE COUNT ARGS...` runs `bench ARGS...` and SIGKILLs itself at the COUNT-th
# update (WHERE=step) or with the COUNT-th checkpoint (checkpoint) or record (.parquet) half-written
# to its temporary file, not yet renamed over the published one. With KILL_SIGNAL=SIGTERM (or another
# name) in the environment, that signal is sent at the update instead.
KILLER = r"""
import os, signal, sys
from pathlib import Path
import bench.train.trainer, bench.records, bench.train.stacks

where, count = sys.argv[1], int(sys.argv[2])
at_step = getattr(signal, os.environ.get("KILL_SIGNAL", "SIGKILL"))
seen = [0]

def hit():
    seen[0] += 1
    return seen[0] == count

if where == "step":
    # A lockstep stack's updates are its runs' own; a vectorised stack's one update is all its runs'.
    for cls in (bench.train.stacks.VectorisedStack, bench.train.trainer.Trainer):
        def step(self, *args, _original=cls.train_step):
            if hit():
                os.kill(os.getpid(), at_step)
            return _original(self, *args)
        cls.train_step = step
else:
    original = bench.records.publish_atomic
    def publish(path, write):
        kind = "checkpoint" if path.parent.name == "_checkpoints" and path.suffix == ".pt" else path.suffix
        if kind == where and hit():
            tmp = path.parent / f".{path.name}.killed"
            write(tmp)
            os.truncate(tmp, tmp.stat().st_size // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        return original(path, write)
    bench.records.publish_atomic = publish

from bench.cli import main
main(sys.argv[3:])
"""
