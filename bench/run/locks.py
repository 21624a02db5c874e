"""One runner per run: a lock file per run, held with a POSIX record lock.

The operating system drops a record lock when its process dies, however it dies, so a lock is
never held by a dead process; the file left behind only says who held it last, and the next
runner that takes the lock says that it took it over. POSIX locks also work across machines on
NFS, where the workers of a cluster share a records folder. A POSIX lock does not exclude
its own process, so the locks this process holds are also kept in a set: two tasks in one
process (a Dask worker's threads, say) cannot both take a run.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path

from bench.errors import BenchError

_HELD: set[str] = set()  # the lock files this process holds
_HELD_GUARD = threading.Lock()


def lock_dir(out: Path) -> Path:
    """The folder of a records folder's lock files."""
    return Path(out) / "_locks"


def lock_path(out: Path, run_id: str) -> Path:
    return lock_dir(out) / f"{run_id}.lock"


def read_holder(path: Path, fd: int | None = None) -> dict | None:
    """Who holds or last held the lock: ``{"pid", "host", "since"}``; None for an empty file.

    ``fd``: read through this descriptor, which holds the lock. Opening and closing the file
    anew would drop the lock: POSIX releases a process's record locks on a file when it closes
    any descriptor of that file. BenchError if the file holds anything else: it is not ours,
    and deleting it is the user's call.
    """
    try:
        if fd is not None:
            text = os.pread(fd, 4096, 0).decode("utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"lock file {path} is unreadable ({type(exc).__name__}); delete it if no bench run uses this folder") from None
    if not text.strip():
        return None
    try:
        holder = json.loads(text)
        if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int):
            raise ValueError
    except ValueError:
        raise BenchError(f"lock file {path} is not a bench lock; delete it if no bench run uses this folder") from None
    return holder


def describe(holder: dict | None) -> str:
    if not holder:
        return "another process"
    return f"pid {holder['pid']} on {holder.get('host', '?')} since {holder.get('since', '?')}"


class RunLock:
    """The lock of one run, taken without waiting: :meth:`acquire` says whether this process now holds it."""

    def __init__(self, out: Path, run_id: str):
        self.path = lock_path(out, run_id)
        self.key = str(self.path.parent.resolve() / self.path.name)
        self.fd: int | None = None
        self.taken_over: dict | None = None  # the dead holder whose lock this process took over
        self.holder = "another process"  # who holds it, when acquire() says no

    def acquire(self) -> bool:
        """Take the lock if no process holds it; BenchError naming the file if it cannot be made or opened.

        The runner checks ``_locks/`` and every lock file before training, so this error is left
        to a folder changed meanwhile.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BenchError(f"cannot make the lock folder {self.path.parent} ({exc.strerror or exc}); make "
                             f"{self.path.parent.parent} writable for this user or choose another --out") from None
        with _HELD_GUARD:
            if self.key in _HELD:
                # Never open the file here: closing any descriptor of it would drop this process's lock.
                self.holder = f"another task of this process (pid {os.getpid()})"
                return False
            _HELD.add(self.key)
        taken = False
        try:
            taken = self._lock_file()
            return taken
        finally:
            if not taken:
                with _HELD_GUARD:
                    _HELD.discard(self.key)

    def _lock_file(self) -> bool:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise BenchError(f"cannot open the lock file {self.path} ({exc.strerror or exc}); make it and its folder "
                                 "writable for this user or choose another --out") from None
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    self.holder = describe(read_holder(self.path, fd))
                except BenchError:
                    pass  # a file that is not ours: the runner checked every lock file before training
                os.close(fd)
                return False
            # A holder that released the lock unlinks the file; if that happened between our open and
            # our lock, we locked a file nobody else will look at, so try again on the new one.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            self.taken_over = read_holder(self.path, fd)
        except BenchError:
            os.close(fd)
            raise
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)  # before unlocking, so nobody locks the old file afterwards
        os.close(self.fd)  # closing drops the record lock
        self.fd = None
        with _HELD_GUARD:
            _HELD.discard(self.key)
