"""The plan on a real Dask cluster: a LocalCluster of 2 worker processes on loopback."""

import os
from pathlib import Path

import pytest
from support import needs_mnist, run_bench

from bench.records import read_meta, read_tree

distributed = pytest.importorskip("distributed")
pytestmark = needs_mnist

# One seed of each: two tasks (a plain stack and a stack with a discriminator) for the two workers.
PLAN = ["run", "--models", "vae,factorvae", "--seeds", "1", "--profile", "smoke", "--threads", "1"]


def rows_of(out):
    rows, runs = read_tree(out)
    return rows.drop(columns=["seconds"]).sort_values(["run_id", "epoch", "split"]).reset_index(drop=True), runs


def test_a_dask_cluster_gives_the_local_records(tmp_path):
    # The workers carry a resource tag, as GPU workers would ("dask worker ... --resources GPU=1"),
    # and the tasks ask for it.
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, resources={"GPU": 1}) as cluster:
        on_cluster = run_bench(*PLAN, "--backend", "dask", "--scheduler", cluster.scheduler_address, "--resources",
                               "GPU=1", "--out", tmp_path / "dask")
        assert on_cluster.returncode == 0, on_cluster.stderr
        with distributed.Client(cluster) as client:
            worker_pids = set(client.run(os.getpid).values())
    local = run_bench(*PLAN, "--out", tmp_path / "local")
    assert local.returncode == 0, local.stderr
    assert "on the Dask cluster at tcp://127.0.0.1:" in on_cluster.stderr
    dask_rows, dask_runs = rows_of(tmp_path / "dask")
    local_rows, _ = rows_of(tmp_path / "local")
    assert set(dask_runs["status"]) == {"finished"} and len(dask_runs) == 2
    assert dask_rows.equals(local_rows)
    trained_in = {read_meta(Path(path))["pid"] for path in dask_runs["path"]}
    assert trained_in and trained_in <= worker_pids  # trained by the cluster's workers, not by bench's own processes
