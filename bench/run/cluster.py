"""Run tasks on a Dask distributed cluster.

Each task (one stack, or one run) becomes one Dask task on some worker; the workers must see
the same ``--out`` and data folders (a shared file system), and they take the same per-run locks
as local jobs. ``resources`` ("GPU=1") sends tasks only to workers started with that resource,
e.g. ``dask worker tcp://HOST:8786 --resources GPU=1``.

Tasks go to the client directly rather than through joblib's Dask backend: that backend counts
every worker thread, whatever the resources asked for, and when the count is 1 it runs the
whole plan in the calling process instead of on the cluster.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from bench.errors import BenchError

CONNECT_TIMEOUT = "10s"


def parse_resources(text: str | None) -> dict[str, float] | None:
    """``"GPU=1,MEM=2"`` as ``{"GPU": 1.0, "MEM": 2.0}``; BenchError on anything else."""
    if not text:
        return None
    resources = {}
    for item in text.split(","):
        name, eq, amount = item.partition("=")
        try:
            value = float(amount)
        except ValueError:
            value = -1.0
        if not eq or not name.strip() or value <= 0:
            raise BenchError(f"--resources {text}: give NAME=AMOUNT pairs, e.g. GPU=1")
        resources[name.strip()] = value
    return resources


def _refused(scheduler: str) -> bool:
    """Whether a ``tcp://HOST:PORT`` address refuses connections: nothing listens there. Dask's client
    would retry it for all of CONNECT_TIMEOUT; any other answer (or address) is left to the client."""
    try:
        parts = urlsplit(scheduler)
        if parts.scheme != "tcp" or not parts.hostname or parts.port is None:
            return False
        socket.create_connection((parts.hostname, parts.port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    except (OSError, ValueError):
        return False
    return False


def connect(scheduler: str):
    """A client of the scheduler at ``scheduler``; BenchError in one line if it cannot be reached."""
    try:
        from distributed import Client
    except ImportError:
        raise BenchError("--backend dask needs the distributed package: pip install 'cfactorvae-bench[dask]'") from None
    if _refused(scheduler):
        raise BenchError(f"--scheduler {scheduler}: cannot reach a Dask scheduler there (connection refused: "
                         "nothing listens at that port; start the scheduler first)")
    try:
        return Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BenchError(f"--scheduler {scheduler}: cannot reach a Dask scheduler there ({reason[:160]})") from None


def on_dask(client, fn, tasks, resources: str | None):
    """``fn(task)`` for every task on the cluster of ``client`` (closed at the end); yields each result as it finishes.

    A task that raises on a worker raises here, with its own exception.
    """
    from distributed import as_completed

    try:
        futures = [client.submit(fn, task, pure=False, resources=parse_resources(resources)) for task in tasks]
        for future in as_completed(futures):
            yield future.result()
    finally:
        client.close()
