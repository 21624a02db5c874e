"""Adam for the trainers, and the determinism switch, without loading torch's compiler stack.

``torch.optim.Adam`` wraps its methods in ``torch._disable_dynamo``, which imports
``torch._dynamo`` at the first call, and ``torch.use_deterministic_algorithms`` imports
``torch._inductor``: seconds of every training process's startup (BENCHMARKS.md) for a compiler
the harness never uses. :class:`Adam` keeps the same state
and reads and writes ``torch.optim.Adam``'s ``state_dict`` layout. On a GPU it calls the same
functional kernel (``torch.optim.adam.adam``) with the same settings; on the CPU it makes the
same tensor operations in the same order, but writes the denominator into a buffer kept
between updates. Its updates and checkpoints are bit for bit those of ``torch.optim.Adam``
(tested).
"""

from __future__ import annotations

import torch
from torch.optim.adam import adam as adam_update

EPS = 1e-8


def _scalar_dtype() -> torch.dtype:
    # torch.optim keeps an unfused optimiser's step count in the default float dtype's width.
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class Adam:
    """Adam (Kingma & Ba, 2015) over one group of parameters, no weight decay, no amsgrad.

    Parameters
    ----------
    params : iterable of torch.Tensor
        The leaves to update, in the order of the ``state_dict``'s parameter indices.
    lr : float
        Step size.
    betas : tuple of float
        Decay rates of the first and second moment estimates.
    capturable : bool
        Keep the step counts on the parameters' device, so that a CUDA graph can replay the update.
    """

    def __init__(self, params, lr: float, betas: tuple[float, float], capturable: bool = False):
        self.params = list(params)
        self.lr, self.betas, self.capturable = lr, tuple(betas), capturable
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in self.params]
        self._denominators: list[torch.Tensor] | None = None  # scratch for the CPU update, made at its first call

    def _new_state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.capturable:
            step = torch.zeros((), dtype=_scalar_dtype(), device=p.device)
        else:  # a CPU scalar, so the bias corrections are Python floats, as torch.optim does
            step = torch.tensor(0.0, dtype=_scalar_dtype())
        return {"step": step, "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        if not self.capturable and all(p.device.type == "cpu" for p in self.params):
            self._cpu_step()
            return
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        for p, state in zip(self.params, self.state):
            if p.grad is None:
                continue
            if not state:
                state.update(self._new_state(p))
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        # The other options keep their defaults, which are torch.optim.Adam's: foreach or not is
        # chosen from the devices (foreach on a GPU), and nothing is fused, complex or differentiable.
        adam_update(params, grads, exp_avgs, exp_avg_sqs, [], steps, capturable=self.capturable,
                    amsgrad=False, beta1=self.betas[0], beta2=self.betas[1], lr=self.lr,
                    weight_decay=0.0, eps=EPS, maximize=False)

    def _cpu_step(self) -> None:
        """``torch.optim.adam._single_tensor_adam``'s operations, the denominator written in place.

        torch.optim allocates ``sqrt(v)`` and its quotient afresh at every update: for the
        discriminator's 1000 x 1000 weights that is 8 MB a layer, new pages from the kernel
        each time: those two operations took a seventh of a FactorVAE update on 2 CPU cores (BENCHMARKS.md).
        The buffer is scratch space, not state: it is not saved.
        """
        beta1, beta2 = self.betas
        if self._denominators is None:
            self._denominators = [torch.empty_like(p, memory_format=torch.preserve_format) for p in self.params]
        for p, state, scratch in zip(self.params, self.state, self._denominators):
            if p.grad is None:
                continue
            if not state:
                state.update(self._new_state(p))
            grad, exp_avg, exp_avg_sq = p.grad, state["exp_avg"], state["exp_avg_sq"]
            state["step"] += 1
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step = state["step"].item()
            step_size = self.lr / (1 - beta1**step)
            bias_correction2_sqrt = (1 - beta2**step) ** 0.5
            denom = torch.sqrt(exp_avg_sq, out=scratch).div_(bias_correction2_sqrt).add_(EPS)
            p.addcdiv_(exp_avg, denom, value=-step_size)

    def zero_grad(self) -> None:
        """Drop the gradients (set them to None, as ``torch.optim`` does by default)."""
        for p in self.params:
            p.grad = None

    def state_dict(self) -> dict:
        """The state in ``torch.optim.Adam``'s layout: either optimiser loads the other's."""
        group = {"lr": self.lr, "betas": self.betas, "eps": EPS, "weight_decay": 0.0, "amsgrad": False,
                 "maximize": False, "foreach": None, "capturable": self.capturable, "differentiable": False,
                 "fused": None, "decoupled_weight_decay": False, "params": list(range(len(self.params)))}
        return {"state": {i: dict(state) for i, state in enumerate(self.state) if state},
                "param_groups": [group]}

    def load_state_dict(self, state_dict: dict) -> None:
        (group,) = state_dict["param_groups"]
        if len(group["params"]) != len(self.params):
            raise ValueError(f"the saved optimiser state is for {len(group['params'])} parameters, "
                             f"this optimiser has {len(self.params)}")
        self.lr, self.betas = group["lr"], tuple(group["betas"])
        self.state = [{} for _ in self.params]
        for index, saved in state_dict["state"].items():
            position = group["params"].index(index)
            p, state = self.params[position], self.state[position]
            for key, value in saved.items():
                if key != "step":  # in the parameter's memory layout, whatever the saved one
                    state[key] = torch.empty_like(p, memory_format=torch.preserve_format).copy_(value)
                elif self.capturable:  # the step count lives where a CUDA graph can update it
                    state[key] = value.to(dtype=torch.float32, device=p.device, copy=True)
                else:
                    state[key] = value.to(device="cpu", copy=True)


def deterministic_algorithms(mode: bool, warn_only: bool = False) -> None:
    """``torch.use_deterministic_algorithms`` without importing ``torch._inductor``.

    The public function also sets inductor's ``deterministic`` option, which matters only to
    ``torch.compile``; nothing here compiles.
    """
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    else:
        setter(mode, warn_only=warn_only)
