"""The CUDA-graph step: one vectorised update captured once and replayed (docs/stacking-and-speed.md)."""

from __future__ import annotations

import torch


class CapturedStep:
    """Run a function of fixed-address tensors as a CUDA graph: launched as one, replayed each call.

    An update of these small networks is hundreds of kernels of microseconds each, so on a GPU it
    is bound by launch overhead, not arithmetic. The first ``warmup`` calls run eagerly on a side
    stream (they allocate the optimiser's state and let autograd settle, as graph capture requires);
    the next call captures the function and replays it, and every later call only replays. The
    returned tensor is the graph's own output, overwritten by the next replay.
    """

    def __init__(self, fn, warmup: int = 3):
        self.fn, self.warmup = fn, warmup
        self.calls = 0
        self.graph = None
        self.output = None
        self.side = torch.cuda.Stream()

    def __call__(self) -> torch.Tensor:
        if self.graph is None and self.calls < self.warmup:
            self.calls += 1
            self.side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side):
                output = self.fn()
            torch.cuda.current_stream().wait_stream(self.side)
            return output
        if self.graph is None:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.output = self.fn()
            self.graph = graph
        self.graph.replay()
        return self.output
