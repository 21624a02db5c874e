"""Checks, made before any work, that a command can write every path it will write.

Each check tries the operation it stands for and undoes it: a folder gets a temporary file made
and removed in it, an existing file is opened for appending and closed unwritten. So nothing in
the folder changes, and the answer is the operating system's own, right for root, ACLs, read-only
mounts and immutable files alike, which permission bits are not.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from bench.errors import BenchError


def _existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (a dangling link counts as existing: it blocks a mkdir)."""
    while not (path.exists() or path.is_symlink()) and path.parent != path:
        path = path.parent
    return path


def check_folders(folders, fix: str) -> None:
    """Fail unless every one of ``folders`` is a writable folder, or can be made one by ``mkdir -p``.

    Parameters
    ----------
    folders : iterable of Path
        Folders the command will write files into; they need not exist. They are checked in
        sorted order, so a records folder is named before the folders inside it.
    fix : str
        What the user can do instead, ending the message, e.g. ``"choose another --out"``.

    Raises
    ------
    BenchError
        Naming the path that is not a folder, or the folder that cannot be written, and why.
    """
    probed: set[Path] = set()  # folders that do not exist yet share the ancestor that is probed for them
    for folder in sorted({Path(f) for f in folders}):
        existing = _existing(folder)
        if not existing.is_dir():
            where = "is not a folder" if existing == folder else f"cannot be made: {existing} is not a folder"
            raise BenchError(f"{folder} {where}; move that file away or {fix}")
        if existing in probed:
            continue
        try:
            with tempfile.NamedTemporaryFile(prefix=".probe-", dir=existing):
                pass
        except OSError as exc:
            what = f"cannot write {existing}" if existing == folder else f"cannot make {folder}: cannot write {existing}"
            raise BenchError(f"{what} ({exc.strerror or exc}); make it writable for this user or {fix}") from None
        probed.add(existing)


def check_files(paths, fix: str) -> None:
    """Fail if any of ``paths`` exists and cannot be written.

    A read-only file is refused even where a rename could replace it: its mode says it is not to be
    changed.

    Parameters
    ----------
    paths : iterable of Path
        Files the command will write or replace; missing ones pass (their folders are checked with
        :func:`check_folders`).
    fix : str
        What the user can do instead, ending the message.

    Raises
    ------
    BenchError
        Naming the path that is a folder or another kind of file, or the file that cannot be written.
    """
    for path in sorted({Path(p) for p in paths}):
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise BenchError(f"cannot reach {path} ({exc.strerror or exc}); make its folder readable or {fix}") from None
        if stat.S_ISDIR(mode):
            raise BenchError(f"{path} is a folder where a file must go; move it away or {fix}")
        if not stat.S_ISREG(mode):
            raise BenchError(f"{path} is not a regular file; move it away or {fix}")
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        except OSError as exc:
            raise BenchError(f"cannot write {path} ({exc.strerror or exc}); make it writable (chmod u+w, chattr -i) "
                             f"or {fix}") from None
