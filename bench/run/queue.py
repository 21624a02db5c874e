"""A queue of long matrices, trained one after another from a fixed commit, that survives being stopped.

The paper's 50-epoch matrices take many CPU-hours, more than a work session lasts. ``bench queue
start`` trains a list of matrices (each a name and the ``bench run`` arguments that train it) in a
background process, one ``bench run`` after another, niced, and reports each matrix as it
finishes. It can be killed at any moment, SIGKILL included: started again, it skips the finished
matrices and calls the same ``bench run`` again, which resumes every stack from its last epoch
checkpoint bit for bit. The code that trains is a git worktree of one commit (HEAD at the first
start), so edits to the repository's working tree never reach a run in flight, and every record
names that commit.

On the CPU its ``bench run`` trains the cheapest stacks first, each of at most as many runs as
there are cores, so that runs finish, and can be landed, within hours rather than all at the
end. A run whose finished record was landed in the repository (``results/records/<matrix>``,
where ``bench queue land`` puts it) is taken back and not trained again, so a queue started
anew on another machine goes on from the runs that were landed.

A queue folder (default ``$BENCH_CACHE/queue``, else ``~/.cache/bench/queue``: outside the work
tree, so a checkout laid anew keeps it) holds ``queue.json`` (the state: the commit and, per
matrix, its arguments, its plan as ``bench run --dry-run`` lists it, the runs taken back, the
wall time the queue spent on it and when it finished), ``_worktree-<sha>/`` (the code),
``_locks/queue.lock`` (held by the live queue process), ``queue.pid``, ``queue.log`` (with
``bench run``'s progress lines), ``status.md``, ``timings.md``, and per matrix ``<name>/runs/``
(its ``bench run --out``: records and checkpoints) and ``<name>/report/`` (its ``bench report``).
"""

from __future__ import annotations

import ctypes
import fcntl
import functools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.errors import BenchError
from bench.records import metrics_path, publish_atomic, read_meta, read_run, run_files, weights_path
from bench.run.locks import RunLock, describe, lock_path, read_holder


@dataclass(frozen=True)
class Matrix:
    """One matrix of a queue: its name (its folder in the queue's) and the ``bench run`` arguments that train it."""

    name: str
    args: tuple[str, ...]


# The paper's 50-epoch MNIST matrices, in the order their answers are wanted; each name is also the
# folder of results/records that its runs land in.
DEFAULT_QUEUE = (
    # Table 1's three compared objectives, trained as the author's code trains them.
    Matrix("mnist-author-e50",
           ("--models", "cvae,factorvae,cfactorvae", "--recipe", "author", "--seeds", "5", "--profile", "paper")),
    # The author's CFactorVAE without its TC term: the author's CVAE loss, with weight 1 on |KL - C|.
    Matrix("mnist-author-gamma0-e50",
           ("--models", "cfactorvae", "--recipe", "author", "--seeds", "5", "--profile", "paper", "--set", "gamma=0")),
    # The author's CFactorVAE with a discriminator that works, to see what its TC term does when it is estimated.
    Matrix("mnist-author-leakyd-e50",
           ("--models", "cfactorvae", "--recipe", "author", "--seeds", "5", "--profile", "paper",
            "--set", "disc=author-leaky")),
    # The plain VAE under the author's recipe: the baseline the three above add their terms to.
    Matrix("mnist-author-vae-e50", ("--models", "vae", "--recipe", "author", "--seeds", "5", "--profile", "paper")),
    # The five objectives as the paper describes them, for Table 1 beside the author's recipe.
    Matrix("mnist-paper-e50", ("--models", "all", "--seeds", "5", "--profile", "paper")),
    # The author's FactorVAE with the working discriminator of mnist-author-leakyd-e50: the pair that says how
    # CFactorVAE and FactorVAE compare when both TC terms are estimated.
    Matrix("mnist-author-fvae-leakyd-e50",
           ("--models", "factorvae", "--recipe", "author", "--seeds", "5", "--profile", "paper",
            "--set", "disc=author-leaky")),
)

STATE_FORMAT = 1
RUN_KEYS = {"run_id", "dataset", "model", "seed", "epochs"}  # a planned run in the state
FINISHED_KEYS = {"at", "wall_seconds", "machine"}  # a finished matrix in the state
QUEUE_LOCK = "queue"  # the queue process's lock: <folder>/_locks/queue.lock
STATUS_EVERY = 60.0  # seconds between the running queue's rewrites of its state and status.md
# bench run options a matrix may not give, and why.
NOT_IN_A_MATRIX = {"--out": "the queue gives each matrix its folder", "--dry-run": "the queue plans with it",
                   "--fresh": "every start would train the matrix from its beginning again"}
DONE = ("finished", "diverged")  # a run whose record says so is not trained again
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")  # a folder name that cannot clash with _worktree-*, _locks
# One line of `bench run --dry-run`: "todo  <run_id>  <dataset> <model> seed=<s>  epochs=<e>", perhaps more after.
PLAN_LINE = re.compile(r"(?:done|todo)\s+(\S+)\s+(\S+)\s+(\S+)\s+seed=(\d+)\s+epochs=(\d+)(?:\s|\Z)")
CODE_ROOT = Path(__file__).resolve().parents[1]  # where the bench package that runs the queue lives
PR_SET_PDEATHSIG = 1
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
NICE = 10
# Linux's autogroup scheduling shares the CPU between sessions before it looks at a process's nice: the
# queue's session of its own would take an equal share beside a terminal's tests. Its autogroup's nice,
# set through this file (sched(7)) in the queue's own session only, makes that session yield as a whole.
AUTOGROUP = Path("/proc/self/autogroup")

# Run in the worktree: the plan of each matrix given as a JSON list of `bench run` argument lists,
# one process for all of them (importing torch takes seconds); a marker line precedes each plan.
PLAN_SCRIPT = """
import json, sys
from bench.cli import main
for args in json.loads(sys.argv[1]):
    print("#matrix", flush=True)
    main([*args, "--dry-run"])
"""
# Run in the worktree once a matrix is trained: `bench report ARGS`, then the machine it trained on
# as the last line (a CPU's model name; a GPU's name first when the queue trained on one here).
FINISH_SCRIPT = """
import sys
from bench.cli import main
main(sys.argv[2:])
from bench.perf.speed import cpu_name
name = cpu_name()
if sys.argv[1] == "cuda":
    import torch
    if torch.cuda.is_available():
        name = f"{torch.cuda.get_device_name(0)} with {name}"
print(name, flush=True)
"""


def say(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} queue: {message}", file=sys.stderr, flush=True)


@dataclass
class MatrixState:
    """What the queue keeps of one matrix between its processes."""

    name: str
    args: list[str]
    commit: str | None = None  # the commit its plan was made with
    runs: list[dict] = field(default_factory=list)  # run_id, dataset, model, seed, epochs: from bench run --dry-run
    wall_seconds: float = 0.0  # time the queue spent training and reporting it, over all its sessions
    taken: list[str] = field(default_factory=list)  # run ids whose landed records were taken back, not trained here
    finished: dict | None = None  # at, wall_seconds, machine: written once its report is


@dataclass
class State:
    commit: str
    matrices: list[MatrixState]

    def matrix(self, name: str) -> MatrixState:
        for matrix in self.matrices:
            if matrix.name == name:
                return matrix
        raise BenchError(f"unknown matrix {name!r}; this queue has {', '.join(m.name for m in self.matrices)}")


def state_path(folder: Path) -> Path:
    return Path(folder) / "queue.json"


def runs_dir(folder: Path, name: str) -> Path:
    return Path(folder) / name / "runs"


def report_path(folder: Path, name: str) -> Path:
    return Path(folder) / name / "report" / "table1.md"


def worktree_dir(folder: Path, commit: str) -> Path:
    return Path(folder) / f"_worktree-{commit[:12]}"


def default_folder() -> Path:
    """The queue folder when none is given: outside the work tree, beside the datasets' cache."""
    return Path(os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "bench") / "queue"


def landed_dir(repo: Path, name: str) -> Path:
    """Where a matrix's finished runs are landed by default, and where a queue looks for them before training."""
    return Path(repo) / "results" / "records" / name


def read_queue_file(path: Path) -> list[Matrix]:
    """The matrices of a queue file: one a line, its name then its ``bench run`` arguments; ``#`` starts a comment."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"--queue {path}: cannot read it ({type(exc).__name__})") from None
    matrices = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            words = shlex.split(line, comments=True)
        except ValueError as exc:
            raise BenchError(f"--queue {path}, line {number}: {exc}") from None
        if words:
            matrices.append(Matrix(words[0], tuple(words[1:])))
    if not matrices:
        raise BenchError(f"--queue {path}: no matrices in it; write one a line: NAME then its bench run arguments")
    return matrices


def _check_matrices(matrices) -> None:
    seen = set()
    for matrix in matrices:
        if not NAME.match(matrix.name):
            raise BenchError(f"matrix name {matrix.name!r}: use letters, digits, '.', '_' and '-', "
                             "starting with a letter or digit")
        if matrix.name in seen:
            raise BenchError(f"matrix {matrix.name!r} is listed twice")
        seen.add(matrix.name)
        for arg in matrix.args:
            if arg.split("=")[0] in NOT_IN_A_MATRIX:
                raise BenchError(f"matrix {matrix.name}: leave out {arg} ({NOT_IN_A_MATRIX[arg.split('=')[0]]})")


def read_state(folder: Path) -> State | None:
    """The queue's state, or None where the folder has none; BenchError, touching nothing, if it is damaged."""
    path = state_path(folder)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != STATE_FORMAT or not isinstance(data.get("commit"), str):
            raise ValueError("no format or commit")
        state = State(data["commit"], [MatrixState(**m) for m in data["matrices"]])
        for m in state.matrices:
            if not (isinstance(m.name, str) and isinstance(m.args, list) and all(isinstance(a, str) for a in m.args)
                    and isinstance(m.runs, list) and all(isinstance(r, dict) and RUN_KEYS <= r.keys() for r in m.runs)
                    and isinstance(m.wall_seconds, (int, float))
                    and isinstance(m.taken, list) and all(isinstance(r, str) for r in m.taken)
                    and (m.finished is None or isinstance(m.finished, dict) and FINISHED_KEYS <= m.finished.keys())):
                raise ValueError(f"matrix {m.name!r} is malformed")
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BenchError(f"{path} is not a queue state ({type(exc).__name__}: {exc}); move it away to start a new "
                         "queue in that folder") from None
    return state


def write_state(folder: Path, state: State) -> None:
    data = {"format": STATE_FORMAT, "commit": state.commit, "matrices": [asdict(m) for m in state.matrices]}
    publish_atomic(state_path(folder), lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1), encoding="utf-8"))


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BenchError(f"git could not run ({type(exc).__name__}); the queue needs git to check out its commit") from None


def resolve_commit(repo: Path, ref: str) -> tuple[Path, str]:
    """The repository's top folder and the full sha of ``ref`` in it; BenchError if either is unknown."""
    top = _git(repo, "rev-parse", "--show-toplevel")
    if top.returncode:
        raise BenchError(f"--repo {repo}: not a git repository")
    sha = _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    if sha.returncode:
        raise BenchError(f"--commit {ref}: not a commit of {top.stdout.strip()}")
    return Path(top.stdout.strip()), sha.stdout.strip()


def checkout(repo: Path, folder: Path, commit: str) -> Path:
    """The queue's worktree of ``commit``: made on first use, then reused as long as it holds exactly that commit."""
    path = worktree_dir(folder, commit)
    if path.exists() and _git(path, "rev-parse", "--git-dir").returncode:
        # Its repository was laid anew (a new checkout in the same place), which drops the worktree's link: make it again.
        say(f"{path} is no longer a worktree of {repo}; checking out {commit[:12]} there again")
        shutil.rmtree(path)
    if not path.exists():
        _git(repo, "worktree", "prune")  # forget a worktree folder deleted by hand, so its path can be reused
        made = _git(repo, "worktree", "add", "--detach", str(path), commit)
        if made.returncode:
            lines = made.stderr.strip().splitlines() or ["no message"]
            raise BenchError(f"cannot make a git worktree of {commit[:12]} at {path}: {lines[-1]}")
    head = _git(path, "rev-parse", "HEAD").stdout.strip()
    changed = _git(path, "status", "--porcelain", "--untracked-files=no").stdout.strip()
    if head != commit or changed:
        raise BenchError(f"{path} no longer holds commit {commit[:12]} as it was; delete it (git worktree remove --force "
                         f"{path}) and start again to check it out anew")
    return path


def _env(worktree: Path | None = None) -> dict:
    """The environment of the queue's child processes: paths made absolute, since they start elsewhere."""
    env = dict(os.environ)
    for key in ("BENCH_DATA", "BENCH_CACHE"):
        if env.get(key):
            env[key] = str(Path(env[key]).resolve())
    if worktree is not None:  # its code first, whatever else is on the path
        env["PYTHONPATH"] = os.pathsep.join([str(worktree), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _as_child() -> None:
    """In each process the queue starts, before it runs: niced, and on Linux killed when the queue dies, so
    no ``bench run`` goes on training (and holding its runs' locks) after its queue was killed alone."""
    os.nice(NICE)
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


def _nice_session() -> None:
    """In the detached queue, in its new session before it runs: that session's autogroup niced, where
    Linux has one. Never in a session the queue did not make: the nice would outlive the queue there."""
    try:
        AUTOGROUP.write_text(f"{NICE}\n")
    except OSError:  # no autogroup scheduling (another OS, a kernel without it): each process's nice is enough
        pass


def _in_worktree(worktree: Path, arguments: list[str], **options):
    """``python ARGUMENTS`` with the worktree's code, niced, its output passed through unless ``options`` say otherwise."""
    child = subprocess.Popen([sys.executable, *arguments], cwd=worktree, env=_env(worktree), preexec_fn=_as_child,
                             stdin=subprocess.DEVNULL, **options)
    if _stop_signal is not None:  # stopped while forking, its SystemExit dropped (see _stopped): the child goes too
        child.terminate()
        child.wait()
        raise SystemExit(128 + _stop_signal)
    return child


def queue_options() -> tuple[tuple[str, str], ...]:
    """What the queue gives every ``bench run`` unless the matrix says otherwise (a later option wins): a
    checkpoint every epoch, so a kill loses one epoch at most; the cheapest CPU stacks first, of one run a
    core, so that runs finish (and can land) early."""
    return ("--checkpoint-every", "1"), ("--order", "cheapest"), ("--cpu-stack", str(os.cpu_count() or 1))


@functools.lru_cache
def known_options(worktree: Path) -> frozenset[str]:
    """The options of the worktree's ``bench run``, read from its ``--help``: an older commit lacks some."""
    child = _in_worktree(worktree, ["-m", "bench.cli", "run", "--help"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    return frozenset(re.findall(r"--[a-z][a-z-]*", child.communicate()[0]))


def run_args(folder: Path, worktree: Path, matrix: MatrixState) -> list[str]:
    given = [word for option in queue_options() if option[0] in known_options(worktree) for word in option]
    return ["run", *given, *matrix.args, "--out", str(runs_dir(folder, matrix.name))]


def plan(folder: Path, worktree: Path, commit: str, matrices: list[MatrixState]) -> None:
    """Fill in each matrix's runs as ``bench run --dry-run`` of the worktree lists them; BenchError naming the
    matrix if its arguments are bad at that commit."""
    child = _in_worktree(worktree, ["-c", PLAN_SCRIPT, json.dumps([run_args(folder, worktree, m) for m in matrices])],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = child.communicate()
    chunks = out.split("#matrix\n")[1:]
    if child.returncode:
        failed = matrices[max(0, len(chunks) - 1)].name
        lines = [line for line in err.splitlines() if line.strip()] or [f"exit code {child.returncode}"]
        reason = next((line for line in reversed(lines) if line.startswith("bench: error:")), lines[-1])
        raise BenchError(f"matrix {failed} at commit {commit[:12]}: {reason.removeprefix('bench: error: ')}")
    for matrix, chunk in zip(matrices, chunks):
        lines = chunk.strip().splitlines()
        found = [PLAN_LINE.match(line) for line in lines[:-1]]
        if len(chunks) != len(matrices) or not found or not all(found) or lines[-1] != f"{len(found)} runs planned":
            raise BenchError(f"matrix {matrix.name}: cannot read the plan that bench run --dry-run printed at commit "
                             f"{commit[:12]}")
        matrix.runs = [{"run_id": m[1], "dataset": m[2], "model": m[3], "seed": int(m[4]), "epochs": int(m[5])}
                       for m in found]
        matrix.commit = commit


def _merge(state: State | None, given: list[Matrix] | None) -> list[MatrixState]:
    """The queue's matrices: ``given`` in its order, each keeping what the state knows of it; the state's list
    when nothing is given, else DEFAULT_QUEUE. A list may only grow: a changed or dropped matrix is refused."""
    known = {m.name: m for m in state.matrices} if state else {}
    if given is None:
        return state.matrices if state else [MatrixState(m.name, list(m.args)) for m in DEFAULT_QUEUE]
    names = {m.name for m in given}
    for name in known:
        if name not in names:
            raise BenchError(f"matrix {name} of this queue is not in the list given; keep it there, or use another --folder")
    merged = []
    for matrix in given:
        old = known.get(matrix.name)
        if old is not None and old.args != list(matrix.args):
            raise BenchError(f"matrix {matrix.name} was started as `bench run {shlex.join(old.args)}`; "
                             "give other arguments another name")
        merged.append(old or MatrixState(matrix.name, list(matrix.args)))
    return merged


def open_folder(folder: Path) -> Path:
    """The queue folder, absolute, made if needed; BenchError if it cannot be written."""
    folder = Path(folder).absolute()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=".probe-", dir=folder):
            pass
    except OSError as exc:
        raise BenchError(f"--folder {folder}: cannot write there ({exc.strerror or exc}); choose a writable folder") from None
    return folder


def _lock(folder: Path) -> RunLock:
    lock = RunLock(folder, QUEUE_LOCK)
    if not lock.acquire():
        raise BenchError(f"a queue is already running in {folder} ({lock.holder}); bench queue stop --folder {folder} "
                         "stops it")
    return lock


def holder(folder: Path) -> dict | None:
    """Who holds the queue's lock (pid, host, since), or None when no queue process is alive.

    Never call it from the process that holds the lock: closing the descriptor it opens would
    drop that process's own lock (POSIX record locks belong to the process, not the descriptor).
    """
    path = lock_path(folder, QUEUE_LOCK)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a shared lock, released at once: a probe that writes nothing
        except OSError:
            return read_holder(path, fd) or {}
        return None
    finally:
        os.close(fd)


def _prepare(folder: Path, repo: Path, commit: str | None, given: list[Matrix] | None) -> tuple[State, Path]:
    """The state and worktree to train with, checked, planned and saved; called with the queue's lock held."""
    repo, wanted = resolve_commit(repo, commit or "HEAD")
    state = read_state(folder)
    if state is not None and state.commit != wanted and commit is None:
        raise BenchError(f"the queue in {folder} trains commit {state.commit[:12]}, and HEAD is {wanted[:12]}: pass "
                         f"--commit {state.commit[:12]} to go on as it was, or --commit HEAD to train the rest with HEAD")
    matrices = _merge(state, given)
    worktree = checkout(repo, folder, wanted)
    state = State(wanted, matrices)
    unplanned = [m for m in matrices if m.finished is None and m.commit != wanted]
    if unplanned:
        plan(folder, worktree, wanted, unplanned)
    for matrix in matrices:
        if matrix.finished is None:
            taken = take_landed(folder, matrix, landed_dir(repo, matrix.name))
            if taken:
                say(f"{matrix.name}: {len(taken)} finished runs taken from {landed_dir(repo, matrix.name)}, "
                    "not trained again")
    write_state(folder, state)
    return state, worktree


def _record_files(record: Path, seed: int) -> list[Path]:
    """What lands of a finished run: its record, its metrics if scored, and seed 0's final weights."""
    files = [record]
    if metrics_path(record).exists():
        files.append(metrics_path(record))
    if seed == 0 and weights_path(record).exists():
        files.append(weights_path(record))
    return files


def _copy_all(pairs: list[tuple[Path, Path]], dest: Path) -> None:
    """Copy each (source, target) pair, each target written whole or not at all."""
    try:
        for path, target in pairs:
            publish_atomic(target, lambda tmp, path=path: shutil.copyfile(path, tmp))
    except OSError as exc:
        raise BenchError(f"cannot write to {dest}: {exc.strerror or exc}") from None


def take_landed(folder: Path, matrix: MatrixState, landed: Path) -> list[str]:
    """Copy into the matrix's runs folder the landed files of each planned run that has no record there and a
    finished one in ``landed`` (by ``bench queue land``, perhaps from a queue on another machine); return their
    run ids. The inverse of :func:`land`: the same files at the same places below the two folders."""
    have = records(folder, matrix)
    seeds = {run["run_id"]: run["seed"] for run in matrix.runs}
    found = {path.stem: path for path in run_files(landed) if path.stem in seeds} if landed.is_dir() else {}
    taken, pairs = [], []
    for run_id, record in sorted(found.items()):
        if run_id in have or read_meta(record).get("status") not in DONE:
            continue
        taken.append(run_id)
        pairs += [(path, runs_dir(folder, matrix.name) / path.relative_to(landed))
                  for path in _record_files(record, seeds[run_id])]
    _copy_all(pairs, runs_dir(folder, matrix.name))
    matrix.taken = sorted({*matrix.taken, *taken})
    return taken


@dataclass
class Progress:
    """One matrix's progress, read from its records."""

    runs: int = 0  # planned
    finished: int = 0  # finished or diverged
    failed: int = 0
    epochs: int = 0  # planned, over all runs
    epochs_done: int = 0  # a finished or diverged run counts in full
    left: dict = field(default_factory=dict)  # (dataset, model) -> epochs still to train
    # ((dataset, model), device) -> the seconds of each epoch recorded (a run's share of its stack's): a GPU's
    # epochs take a fraction of a CPU's, so runs taken back from a GPU machine must not time a CPU queue.
    spent: dict = field(default_factory=dict)
    started: bool = False
    newest: tuple[str, str] | None = None  # (start time, device) of the newest run the queue trained itself

    @property
    def complete(self) -> bool:
        return self.finished == self.runs

    @property
    def devices(self) -> set:
        """The devices its recorded runs trained on."""
        return {where for _, where in self.spent}

    def on(self, device: str) -> dict:
        """``spent`` of the epochs trained on ``device``, by (dataset, model)."""
        return {kind: spent for (kind, where), spent in self.spent.items() if where == device}

    def rates(self, device: str) -> str:
        """Epochs per hour at the median epoch (one run's epoch counts one) on each device, ``device``'s first and
        unnamed: "92.5", "92.5, 10891.7 (cuda)", "-" before the first epoch is recorded."""
        rates = {where: rate_of(self.on(where).values()) for where in self.devices}
        shown = [f"{rate:.1f}" + ("" if where == device else f" ({where})")
                 for where, rate in sorted(rates.items(), key=lambda item: (item[0] != device, item[0])) if rate]
        return ", ".join(shown) or "-"


def rate_of(spent) -> float | None:
    """Epochs per hour at the median epoch of the lists of epoch seconds in ``spent`` pooled; None without one.

    The median, not the mean: an epoch during which the queue was stopped (SIGSTOP) or shared the
    cores with other work records that time too, and a few such epochs would time every epoch left.
    """
    seconds = [s for epochs in spent for s in epochs]
    median = statistics.median(seconds) if seconds else 0.0
    return 3600 / median if median > 0 else None


TIMED_EPOCHS = 3  # epochs of a model in a matrix before its own median times the rest of that matrix
# bench run options that leave an epoch's work as it is: matrices that differ only in these time each other's runs
# as their own. The dataset and model are part of the key a rate is kept by.
SAME_WORK = {"--models", "--seeds", "--datasets", "--epochs"}
# Options that set most of an epoch's work besides the model and data, and their defaults: a matrix's runs are
# timed next by the runs of matrices that agree on these (the same recipe, say, with another --set).
WORK = {"--recipe": "described", "--profile": "paper", "--subset": None}


def likeness(args) -> tuple[tuple, tuple]:
    """Two keys of a matrix's ``bench run`` arguments, from the most alike to the less: its options but those of
    :data:`SAME_WORK`, in order of name; and the options of :data:`WORK`, defaults filled in."""
    pairs, tokens = [], [part for arg in args for part in (arg.split("=", 1) if arg.startswith("--") else [arg])]
    for i, token in enumerate(tokens):
        if token.startswith("--"):
            has_value = i + 1 < len(tokens) and not tokens[i + 1].startswith("--")
            pairs.append((token, tokens[i + 1] if has_value else None))
    given = dict(pairs)
    return (tuple(sorted(pair for pair in pairs if pair[0] not in SAME_WORK)),
            tuple((option, given.get(option, default)) for option, default in WORK.items()))


def seconds_left(left: dict, own: dict, elsewhere: list[dict]) -> tuple[float | None, bool]:
    """The wall time a matrix's ``left`` epochs (model -> epochs) take, and whether a model was timed by another's rate.

    A model is any key: the status keys by (dataset, model).

    Each model is timed at its rate in this matrix (``own``, model -> epoch seconds) once it has
    :data:`TIMED_EPOCHS` there, else at its rate in the first of the queue's other matrices' epochs
    (``elsewhere``, each model -> epoch seconds, the most alike matrices first, all of them last)
    that has it, else at the few epochs it has here, else at this matrix's rate pooled over its models,
    else at the queue's: a FactorVAE epoch costs twice a VAE's, so pooling them would time the rest of a
    matrix by the models done first. None when nothing of the queue has been timed yet.
    """
    total, assumed = 0.0, False
    for model, epochs in left.items():
        if not epochs:
            continue
        here = own.get(model) or []
        # A model's first epochs here are too few for a median to see past one slow epoch (a CFactorVAE run's
        # first took 4 times its second on 2026-12-04): until it has TIMED_EPOCHS, the queue's epochs of it time it.
        timed = here if len(here) >= TIMED_EPOCHS else next((spent[model] for spent in elsewhere if spent.get(model)),
                                                             here)
        rate = rate_of([timed])
        if rate is None:
            assumed, rate = True, rate_of(own.values()) or (rate_of(elsewhere[-1].values()) if elsewhere else None)
        if rate is None:
            return None, assumed
        total += epochs / rate * 3600
    return total, assumed


def records(folder: Path, matrix: MatrixState) -> dict[str, Path]:
    """The record file of each planned run that has one, by run id: found by its name, ``<run_id>.parquet``,
    wherever the worktree's commit puts it in the records folder."""
    planned = {run["run_id"] for run in matrix.runs}
    return {path.stem: path for path in run_files(runs_dir(folder, matrix.name)) if path.stem in planned}


def progress(folder: Path, matrix: MatrixState) -> Progress:
    """Runs finished, epochs done and the measured rate of a matrix's planned runs (a run not started has no record)."""
    p = Progress(runs=len(matrix.runs), epochs=sum(run["epochs"] for run in matrix.runs))
    found = records(folder, matrix)
    for run in matrix.runs:
        path, kind = found.get(run["run_id"]), (run["dataset"], run["model"])
        if path is None:
            p.left[kind] = p.left.get(kind, 0) + run["epochs"]
            continue
        rows, meta = read_run(path)
        p.started = True
        device = meta.get("device") or "cpu"
        if run["run_id"] not in matrix.taken:
            p.newest = max(p.newest or ("", device), (meta.get("started") or "", device))
        # An epoch's time is its train and test rows' (a stacked run's share of its stack's, docs/records.md).
        p.spent.setdefault((kind, device), []).extend(rows.groupby("epoch")["seconds"].sum().tolist())
        if meta.get("status") in DONE:
            p.finished += 1
            done = run["epochs"]
        else:
            p.failed += meta.get("status") == "failed"
            done = int(rows["epoch"].max()) if len(rows) else 0
        p.epochs_done += done
        p.left[kind] = p.left.get(kind, 0) + run["epochs"] - done
    return p


def _span(seconds: float) -> str:
    """A duration as its two largest units: 2d03h, 5h07m, 12m30s."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h" if days else f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def unlanded(folder: Path, matrix: MatrixState, landed: Path) -> int:
    """How many of a matrix's finished (or diverged) runs have no record of their name under ``landed`` yet."""
    there = {path.stem for path in run_files(landed)} if landed.is_dir() else set()
    return sum(1 for run_id, path in records(folder, matrix).items()
               if run_id not in there and read_meta(path).get("status") in DONE)


def status_text(folder: Path, state: State, alive: dict | None, repo: Path | None = None) -> str:
    """The queue's status in markdown: per matrix runs and epochs done, rate and time left; the queue's ETA.

    With ``repo`` (a checkout with a ``results/records`` folder), also the finished runs not landed
    there yet, and the command that lands them.
    """
    worktree = worktree_dir(folder, state.commit)
    lines = [f"# Queue {folder}", "",
             (f"Running: {describe(alive)}" if alive is not None else "Not running")
             + f"; commit {state.commit[:12]} (code in {worktree}).", "",
             "| matrix | runs finished | epochs done | epochs/h | time left | state |",
             "|---|---|---|---|---|---|"]
    to_land = []
    progresses = [progress(folder, m) for m in state.matrices]
    # The queue is timed on the device of the newest run it trained itself (a queue that has trained
    # nothing yet, as a CPU's): runs taken back were trained elsewhere, perhaps on a GPU.
    device = max((p.newest for p in progresses if p.newest), default=("", "cpu"))[1]
    # Each model's epochs on that device in the other matrices, pooled over those as alike as each of likeness's
    # keys says, then over all: an unstarted matrix of the author's FactorVAE is timed by the author's FactorVAE
    # (batch 128) before the described one (batch 64). A matrix's own epochs are left out: until it has
    # TIMED_EPOCHS of a model, its few may be slow ones.
    keys = [(*likeness(m.args), ()) for m in state.matrices]

    def elsewhere(mine: int) -> list[dict]:
        tiers: list[dict] = [{}, {}, {}]
        for other, (p, alike) in enumerate(zip(progresses, keys)):
            for kind, seconds in (p.on(device).items() if other != mine else ()):
                for spent, key, wanted in zip(tiers, alike, keys[mine]):
                    if key == wanted:
                        spent.setdefault(kind, []).extend(seconds)
        return tiers
    left, unknown, assumed, current = 0.0, False, False, alive is not None
    for index, (matrix, p) in enumerate(zip(state.matrices, progresses)):
        if matrix.finished is not None:
            what = "done"
        elif current:
            what, current = "training", False
        elif p.complete:
            what = "trained, report due"
        else:
            what = "partly trained" if p.started else "waiting"
        if p.failed:
            what += f", {p.failed} failed"
        matrix_left, guessed = seconds_left(p.left, p.on(device), elsewhere(index))
        unknown |= matrix_left is None
        assumed |= guessed
        matrix_left = matrix_left or 0.0
        left += matrix_left
        lines.append(f"| {matrix.name} | {p.finished}/{p.runs} | {p.epochs_done}/{p.epochs} | "
                     f"{p.rates(device)} | {_span(matrix_left) if matrix_left else '-'} | {what} |")
        missing = unlanded(folder, matrix, landed_dir(repo, matrix.name)) if repo is not None else 0
        if missing:
            to_land.append(f"- {matrix.name}: {missing} of {p.finished} finished runs not in "
                           f"{landed_dir(repo, matrix.name)}: `bench queue land {matrix.name}"
                           f"{'' if p.complete else ' --partial'}`, then commit them")
    done, total = sum(p.epochs_done for p in progresses), sum(p.epochs for p in progresses)
    lines.append("")
    if done == total:
        lines.append(f"All {total} epochs of the queue are trained.")
    elif unknown:
        lines.append(f"{done}/{total} epochs trained; the ETA comes with the first epoch recorded on {device}.")
    else:
        lines.append(f"{done}/{total} epochs trained; ETA {_span(left)} of training on {device} from now, about "
                     f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(time.time() + left))} if it runs without a break"
                     + (" (a model without an epoch yet is timed at its matrix's rate, else the queue's)."
                        if assumed else "."))
    if to_land:
        lines += ["", "Not landed yet:", *to_land]
    return "\n".join(lines) + "\n"


def status(folder: Path, repo: Path | None = None) -> str:
    """The status of the queue in ``folder``, read from its state and records; starts and writes nothing.

    ``repo``: a checkout whose ``results/records`` the runs land in (:func:`status_text`); one
    without that folder is not asked.
    """
    folder = Path(folder).absolute()
    state = read_state(folder)
    if state is None:
        raise BenchError(f"no queue in {folder} (no {state_path(folder).name}); bench queue start makes one")
    asked = repo is not None and (Path(repo) / "results" / "records").is_dir()
    return status_text(folder, state, holder(folder), Path(repo) if asked else None)


def _save(folder: Path, state: State, me: dict | None) -> None:
    """The queue's state and status.md as they are now (``me``: the running queue's lock record, None as it ends)."""
    write_state(folder, state)
    text = status_text(folder, state, me)
    publish_atomic(Path(folder) / "status.md", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _train(folder: Path, worktree: Path, state: State, matrix: MatrixState, me: dict) -> int:
    """One ``bench run`` of the matrix, its output passed through; its wall time added to the state as it goes."""
    args = run_args(folder, worktree, matrix)
    say(f"{matrix.name}: bench {shlex.join(args)}")
    child = _in_worktree(worktree, ["-m", "bench.cli", *args])
    last = time.monotonic()
    try:
        while True:
            try:
                code = child.wait(timeout=STATUS_EVERY)
                break
            except subprocess.TimeoutExpired:
                pass
            finally:
                now = time.monotonic()
                matrix.wall_seconds += now - last
                last = now
            try:
                _save(folder, state, me)
            except BenchError as exc:  # a status that cannot be read does not stop the training
                say(f"status not written: {exc}")
    except BaseException:  # stopped: the run goes with the queue; its last checkpoint is whole
        child.terminate()
        child.wait()
        raise
    return code


def _finish(folder: Path, worktree: Path, state: State, matrix: MatrixState, p: Progress) -> int:
    """The matrix's report and timing line, once all its runs are finished."""
    report = ["report", "--runs", str(runs_dir(folder, matrix.name)), "--out", str(report_path(folder, matrix.name))]
    say(f"{matrix.name}: bench {shlex.join(report)}")
    start = time.monotonic()
    # The machine is the one the queue trained on: runs taken back from a GPU machine leave this one's CPU.
    device = p.newest[1] if p.newest else "cpu"
    child = _in_worktree(worktree, ["-c", FINISH_SCRIPT, device, *report],
                         stdout=subprocess.PIPE, text=True)
    try:
        out, _ = child.communicate()
    except BaseException:  # stopped: the report goes with the queue, the next start makes it again
        child.terminate()
        child.wait()
        raise
    matrix.wall_seconds += time.monotonic() - start
    lines = out.splitlines()
    if child.returncode or not lines:
        print(out, end="", flush=True)
        say(f"{matrix.name}: bench report exited with {child.returncode}; the next start makes the report again")
        return child.returncode or 1
    print("".join(f"{line}\n" for line in lines[:-1]), end="", flush=True)
    matrix.finished = {"at": time.strftime("%Y-%m-%d %H:%M"), "wall_seconds": round(matrix.wall_seconds, 1),
                       "machine": lines[-1]}
    write_state(folder, state)
    _log_timing(folder, matrix)
    return 0


def _log_timing(folder: Path, matrix: MatrixState) -> None:
    """Append the matrix's line to timings.md unless it is there (a kill may come between state and line)."""
    path = Path(folder) / "timings.md"
    done = matrix.finished
    taken = f" ({len(matrix.taken)} of them taken from landed records, trained elsewhere)" if matrix.taken else ""
    line = (f"- {done['at']} `{matrix.name}`: {len(matrix.runs)} runs{taken}, {sum(r['epochs'] for r in matrix.runs)} "
            f"epochs in {_span(done['wall_seconds'])} wall (start-ups, resumes and report included) on {done['machine']}, "
            f"commit {matrix.commit[:12]}: `bench run {shlex.join(matrix.args)}`")
    text = path.read_text(encoding="utf-8") if path.exists() else (
        "# Queue timings\n\nOne line per matrix the queue finished: when, its size, the wall time the queue spent on "
        "it, the machine, the commit that trained it and its arguments.\n\n")
    if line not in text.splitlines():
        publish_atomic(path, lambda tmp: Path(tmp).write_text(text + line + "\n", encoding="utf-8"))


def _check_input(repo: Path, commit: str | None, matrices: list[Matrix] | None) -> None:
    """What can be refused before anything is written: the repository, the commit, the matrices given."""
    resolve_commit(repo, commit or "HEAD")
    if matrices is not None:
        _check_matrices(matrices)


# The signal that stopped the queue, once one has. A SIGTERM that lands while Popen forks runs its handler
# in logging's at-fork hook, where Python prints the SystemExit and drops it; _in_worktree raises it
# again once the fork is done, so that such a stop is not lost.
_stop_signal: int | None = None


def _stopped(signum, frame):
    global _stop_signal
    _stop_signal = signum
    say(f"stopped by signal {signum}; bench queue start resumes it")
    raise SystemExit(128 + signum)


def run(folder: Path, repo: Path = Path("."), commit: str | None = None, matrices: list[Matrix] | None = None) -> int:
    """Train the queue in this process: every unfinished matrix in order, each reported once its runs finish.

    Parameters
    ----------
    folder : Path
        The queue's folder.
    repo : Path
        The git repository whose commit trains.
    commit : str, optional
        The commit to train; by default HEAD, which must then be the commit the queue's state names.
    matrices : list of Matrix, optional
        The queue; by default the state's list, or :data:`DEFAULT_QUEUE` for a new queue.

    Returns
    -------
    int
        0 when every matrix is done; 1 when one of them could not be trained or reported (the
        others were), to be retried by the next start. SIGTERM ends it with 143, its ``bench run``
        with it.
    """
    global _stop_signal
    _check_input(repo, commit, matrices)
    folder = open_folder(folder)
    lock = _lock(folder)
    _stop_signal = None
    previous = signal.signal(signal.SIGTERM, _stopped)
    pid_file = folder / "queue.pid"
    state = None
    try:
        if lock.taken_over:
            say(f"took over the lock left by {describe(lock.taken_over)}, no longer running")
        me = read_holder(lock.path, lock.fd) or {}
        pid_file.write_text(f"{os.getpid()}\n", encoding="utf-8")
        state, worktree = _prepare(folder, repo, commit, matrices)
        say(f"pid {os.getpid()}, commit {state.commit[:12]}, code in {worktree}")
        code = 0
        for matrix in state.matrices:
            if matrix.finished is not None:
                _log_timing(folder, matrix)
                continue
            _save(folder, state, me)
            p = progress(folder, matrix)
            if not p.complete:
                trained = _train(folder, worktree, state, matrix, me)
                p = progress(folder, matrix)
                if trained or not p.complete:
                    say(f"{matrix.name}: bench run exited with {trained}, {p.finished}/{p.runs} runs finished; "
                        "going on with the next matrix, the next start trains the rest")
                    code = 1
                    continue
                _save(folder, state, me)
            code = _finish(folder, worktree, state, matrix, p) or code
        say("every matrix is done" if code == 0 else "ended with matrices left; bench queue start tries them again")
        return code
    finally:
        if state is not None:
            try:  # the wall time spent so far, also when stopped
                _save(folder, state, None)
            except BenchError as exc:
                say(f"status not written: {exc}")
        signal.signal(signal.SIGTERM, previous)
        _stop_signal = None
        pid_file.unlink(missing_ok=True)
        lock.release()


def start(folder: Path, repo: Path = Path("."), commit: str | None = None, matrices: list[Matrix] | None = None) -> int:
    """Check and plan the queue here, then train it in a detached process (:func:`run`) logging to
    ``folder/queue.log``; return that process's pid once it holds the queue's lock."""
    _check_input(repo, commit, matrices)
    folder = open_folder(folder)
    lock = _lock(folder)
    try:
        state, _ = _prepare(folder, repo, commit, matrices)
    finally:
        lock.release()
    log = folder / "queue.log"
    seen = log.stat().st_size if log.exists() else 0
    command = [sys.executable, "-m", "bench.cli", "queue", "run", "--folder", str(folder),
               "--repo", str(Path(repo).absolute()), "--commit", state.commit]
    with open(log, "a", encoding="utf-8") as handle:
        # A session of its own: the end of this shell does not end it, and stop signals its whole group.
        # (Popen calls setsid before preexec_fn, so the autogroup niced is the new session's.)
        child = subprocess.Popen(command, cwd=CODE_ROOT, env=_env(), stdin=subprocess.DEVNULL, stdout=handle,
                                 stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_nice_session)
    while child.poll() is None:
        held = holder(folder)
        if held is not None and held.get("pid") == child.pid:
            return child.pid
        time.sleep(0.1)
    with open(log, encoding="utf-8", errors="replace") as handle:
        handle.seek(seen)
        lines = [line.strip() for line in handle if line.strip()] or [f"exit code {child.returncode}"]
    reason = next((line for line in reversed(lines) if line.startswith("bench: error:")), lines[-1])
    raise BenchError(f"the queue process ended at once: {reason.removeprefix('bench: error: ')} (log: {log})")


def stop(folder: Path, wait: float = 120.0) -> str:
    """SIGTERM the queue process (its whole process group when it leads one, as a started queue does) and wait
    for it to end; SIGKILL after ``wait`` seconds, which the checkpoints make as safe. Returns what was done."""
    folder = Path(folder).absolute()
    held = holder(folder)
    if held is None:
        return f"no queue is running in {folder}"
    if held.get("host", socket.gethostname()) != socket.gethostname() or "pid" not in held:
        raise BenchError(f"the queue in {folder} is held by {describe(held)}; stop it on that machine")
    pid = held["pid"]
    for sig, patience in ((signal.SIGTERM, wait), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(pid, sig) if os.getpgid(pid) == pid else os.kill(pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + patience
        while holder(folder) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        if holder(folder) is None:
            return f"stopped the queue in {folder} (pid {pid}); bench queue start resumes it"
    raise BenchError(f"the queue process {pid} still holds {lock_path(folder, QUEUE_LOCK)} after SIGKILL")


def land(folder: Path, name: str, dest: Path, partial: bool = False) -> list[Path]:
    """Copy a finished matrix's records into ``dest`` (:func:`landed_dir` by default): each run's parquet files,
    and seed 0's final weights.

    Never checkpoints or locks. Refuses an unfinished matrix unless ``partial`` (then only its
    finished runs are copied), and a destination file that exists with other content (nothing
    is copied then). Returns the files written.
    """
    folder = Path(folder).absolute()
    state = read_state(folder)
    if state is None:
        raise BenchError(f"no queue in {folder} (no {state_path(folder).name})")
    matrix = state.matrix(name)
    p = progress(folder, matrix)
    if not p.complete and not partial:
        raise BenchError(f"matrix {name} is unfinished ({p.finished}/{p.runs} runs finished); wait for it, or pass "
                         "--partial to land its finished runs only")
    source = runs_dir(folder, name)
    found = records(folder, matrix)
    files = []
    for run in matrix.runs:
        record = found.get(run["run_id"])
        if record is not None and read_meta(record).get("status") in DONE:
            files += _record_files(record, run["seed"])
    targets = [Path(dest) / path.relative_to(source) for path in files]
    for path, target in zip(files, targets):
        if target.exists() and target.read_bytes() != path.read_bytes():
            raise BenchError(f"{target} exists with other content; nothing was copied (move it away first)")
    _copy_all(list(zip(files, targets)), Path(dest))
    return targets
