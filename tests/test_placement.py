"""How a task trains, decided once: the device settled on the machine that trains, threads shared out."""

import pytest
import torch

from bench.errors import BenchError
from bench.run.stacks import placement
from bench.train.placement import Placement

pytestmark = pytest.mark.fast


def test_a_cpu_task_shares_its_threads_out_over_its_runs():
    # 4 runs on 2 threads: 2 at once, 1 thread each; 1 run on 2 threads: both for it
    assert placement("cpu", 2, 4, True, None) == Placement("cpu", threads=1, workers=2, stacked=True)
    assert placement("cpu", 2, 1, True, None) == Placement("cpu", threads=2, workers=1, stacked=True)
    # a GPU task, or one on its way to a cluster's worker, keeps its threads for one run at a time
    assert placement("cuda", 1, 25, True, None) == Placement("cuda", threads=1, workers=1, stacked=True)
    assert placement("auto", 1, 25, True, None).workers == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU")
def test_the_device_is_settled_where_the_task_trains():
    here = Placement("auto", cuda_graphs=None).here()
    assert here.device == "cpu" and here.cuda_graphs is False and not here.vectorised
    assert Placement("cpu", cuda_graphs=True).here().cuda_graphs is False  # graphs replay a vectorised update only
    with pytest.raises(BenchError, match="no CUDA device"):
        Placement("cuda").here()


def test_only_a_stack_on_a_gpu_is_vectorised():
    assert Placement("cuda").vectorised
    assert not Placement("cuda", stacked=False).vectorised
    assert not Placement("cpu").vectorised
