"""A stack: several runs advanced one epoch at a time as one program, behind one small protocol.

Each run keeps its own :class:`~bench.train.trainer.Trainer`, which owns its initialisation, its
random streams and its evaluation, so a run draws exactly the numbers it draws when trained alone.
Two implementations (docs/stacking-and-speed.md):

- :class:`LockstepStack`, on a CPU: every run trains its own epoch with its own updates, ``workers``
  runs side by side, each on its share of torch's threads; a run's records are its solo records bit
  for bit. A solo run is a lockstep stack of one.
- :class:`VectorisedStack`, on a GPU: one update for all runs, their weights stacked and the update
  vectorised over runs with ``torch.func.vmap``; on CUDA captured once as a graph and replayed
  (:class:`~bench.train.graphs.CapturedStep`). Its records equal the runs' solo records up to
  floating-point rounding (vectorised sums run in another order; tolerances in tests/test_stacked.py).

Either kind loads the other's checkpoint.
"""

from __future__ import annotations

import copy
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import torch
from torch.func import functional_call, stack_module_state, vmap

from bench.config import STACK_FIELDS, RunConfig, stack_key
from bench.train.graphs import CapturedStep
from bench.train.placement import Placement
from bench.train.trainer import DISC_ACC, TERMS, EpochResult, Trainer, adam
from models.objectives import discriminator_loss, gaussian_kl, gaussian_kl_per_dim, total_correlation
from models.presets import Objective


class Stack(Protocol):
    """What the per-task job needs of a stack."""

    runs: list[Trainer]

    def run_epoch(self) -> list[EpochResult]:
        """One epoch of every run; one EpochResult per run, in the order of ``runs``."""

    def state_dict(self) -> dict:
        """Everything the stack needs to continue bit for bit."""

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` of either kind of stack."""


def make_stack(configs: list[RunConfig], train_images: torch.Tensor, test_images: torch.Tensor,
               placement: Placement) -> Stack:
    """The stack a placement asks for: vectorised where it says so, else lockstep."""
    if len({stack_key(c) for c in configs}) != 1:
        raise ValueError("the runs of a stack must share " + ", ".join(STACK_FIELDS) + " and the discriminator")
    runs = [Trainer(c, train_images, test_images, placement.device) for c in configs]
    if placement.vectorised:
        return VectorisedStack(runs, cuda_graphs=bool(placement.cuda_graphs))
    return LockstepStack(runs, workers=placement.workers)


class LockstepStack:
    """Runs advanced together epoch by epoch, each by its own updates: ``workers`` of them at once."""

    def __init__(self, runs: list[Trainer], workers: int = 1):
        if workers < 1:
            raise ValueError(f"workers={workers}: a lockstep stack trains one run or more at once")
        self.runs, self.workers = runs, workers

    def _train_epochs(self) -> list[list[float]]:
        if self.workers == 1:
            return [t.train_epoch() for t in self.runs]
        threads = torch.get_num_threads()  # a new thread's OpenMP count starts at the machine's cores
        with ThreadPoolExecutor(self.workers, initializer=torch.set_num_threads, initargs=(threads,)) as pool:
            return list(pool.map(Trainer.train_epoch, self.runs))

    def run_epoch(self) -> list[EpochResult]:
        start = time.perf_counter()
        means = self._train_epochs()
        seconds = (time.perf_counter() - start) / len(self.runs)
        # One evaluation at a time, even side by side: two at once hold more memory at the peak
        # for a twentieth of an epoch's work.
        return [t.end_epoch(m, seconds) for t, m in zip(self.runs, means)]

    def state_dict(self) -> dict:
        """The runs' own states: references, not copies, so writing a checkpoint holds no second set."""
        return {"runs": [t.state_dict() for t in self.runs]}

    def load_state_dict(self, state: dict) -> None:
        for t, run_state in zip(self.runs, run_states(state, len(self.runs)), strict=True):
            t.load_state_dict(run_state)


def run_states(state: dict, runs: int) -> list[dict]:
    """The runs' own states from a checkpoint of either kind of stack, or of one run alone."""
    if "runs" in state:
        found = state["runs"]
    elif isinstance(state["progress"], list):  # a vectorised stack's
        found = _cut(state)
    else:  # one Trainer's state
        found = [state]
    if len(found) != runs:
        raise ValueError(f"the state is of {len(found)} runs, this stack has {runs}")
    return found


def stack_adam_states(states: list[dict]) -> dict:
    """One Adam state for stacked parameters from the runs' own (same parameters, same step counts)."""
    first = states[0]
    stacked = {}
    for index, entry in first["state"].items():
        stacked[index] = {"step": entry["step"].clone(),
                          **{key: torch.stack([s["state"][index][key] for s in states])
                             for key in entry if key != "step"}}
    return {"state": stacked, "param_groups": copy.deepcopy(first["param_groups"])}


def adam_state_of_run(state: dict, k: int) -> dict:
    """Run ``k``'s own Adam state, cut from the state of stacked parameters."""
    return {"state": {index: {key: value if key == "step" else value[k] for key, value in entry.items()}
                      for index, entry in state["state"].items()},
            "param_groups": copy.deepcopy(state["param_groups"])}


def _cut(state: dict) -> list[dict]:
    """A vectorised stack's state cut into its runs' own states (views of its tensors); :func:`_stacked` undoes it."""
    nets = [(net, opt) for net, opt in (("vae", "opt"), ("disc", "d_opt")) if net in state]
    return [{"progress": progress,
             **{net: {name: p[k] for name, p in state[net].items()} for net, _ in nets},
             **{opt: adam_state_of_run(state[opt], k) for _, opt in nets}}
            for k, progress in enumerate(state["progress"])]


def _stacked(run_states: list[dict]) -> dict:
    """The runs' own states (:func:`run_states`) as a vectorised stack's state."""
    stacked = {"progress": [state["progress"] for state in run_states]}
    for net, opt in (("vae", "opt"), ("disc", "d_opt")):
        if net in run_states[0]:
            stacked[net] = {name: torch.stack([state[net][name] for state in run_states]) for name in run_states[0][net]}
            stacked[opt] = stack_adam_states([state[opt] for state in run_states])
    return stacked


def _permute_stacked(z: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Each run's columns shuffled across its batch by its own keys (see models.objectives.permute_dims)."""
    return torch.gather(z, 1, keys.argsort(dim=1))


class VectorisedStack:
    """One update for every run: stacked weights and Adam states, the update vmapped over runs.

    Adam is elementwise, so one Adam over the stacked tensors is each run's own Adam. The runs'
    trainers keep their random streams and evaluation; the stack draws every run's noise from
    them in the order a solo update draws it.
    """

    def __init__(self, runs: list[Trainer], cuda_graphs: bool = False):
        first = runs[0]
        if cuda_graphs and first.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.runs, self.cuda_graphs = runs, cuda_graphs
        self.config, self.device, self.dtype = first.config, first.device, first.dtype
        self.has_disc = first.disc is not None
        # Per-run coefficients: the runs' objectives as one elementwise objective.
        weights = torch.tensor([[t.objective.w_kl, t.objective.w_cap, t.objective.gamma] for t in runs],
                               device=self.device, dtype=self.dtype).unbind(1)
        self.objective = Objective(weights[0], weights[1], weights[2] if self.has_disc else 0.0)

        # Stateless copies of the networks: the stacked tensors are passed in at each call.
        self.vae_params, _ = stack_module_state([t.vae for t in runs])
        self.vae_leaves = list(self.vae_params.values())
        self.vae_shape = copy.deepcopy(first.vae).to("meta")
        self.opt = adam(self.vae_leaves, self.config.lr, (self.config.beta1, self.config.beta2), self.device)
        if self.has_disc:
            # Detached views share storage with the stacked weights, so they follow every Adam step.
            self.encoder_params = {name.removeprefix("encoder."): p.detach()
                                   for name, p in self.vae_params.items() if name.startswith("encoder.")}
            self.disc_params, _ = stack_module_state([t.disc for t in runs])
            self.disc_leaves = list(self.disc_params.values())
            self.disc_shape = copy.deepcopy(first.disc).to("meta")
            self.d_opt = adam(self.disc_leaves, self.config.d_lr, (self.config.d_beta1, self.config.d_beta2), self.device)

        # The inputs of one update, refilled in place before each: a captured graph reads them where they are.
        self.same_batch = self.config.perm_batch == "same"
        self._joint_logits = None  # as Trainer's: every run's D(z) of the update under way
        self.image_shape = first.train_images.shape[1:]
        self._inputs = {self.config.batch_size: self._allocate(self.config.batch_size)}
        full = self._inputs[self.config.batch_size]
        self._update_full = CapturedStep(lambda: self._update(full)) if cuda_graphs else lambda: self._update(full)

    def _allocate(self, batch: int) -> dict:
        """Input buffers of one vectorised update of ``batch`` images per run."""
        k, z_dim = len(self.runs), self.config.z_dim
        on = {"device": self.device, "dtype": self.dtype}
        inputs = {"x": torch.empty((k, batch, *self.image_shape), **on), "c": torch.empty(k, **on),
                  "eps": torch.empty(k, batch, z_dim, **on)}
        if self.has_disc:
            inputs["eps2"] = torch.empty(k, batch, z_dim, **on)
            inputs["keys"] = torch.empty(k, batch, z_dim, device=self.device)  # torch.rand's default dtype
            if not self.same_batch:
                inputs["x_other"] = torch.empty_like(inputs["x"])
        return inputs

    def _vae(self, params, x, eps):
        return functional_call(self.vae_shape, params, (x, eps))

    def _encoder(self, params, x):
        return functional_call(self.vae_shape.encoder, params, (x,))

    def _disc(self, params, z):
        return functional_call(self.disc_shape, params, (z,))

    def _fill(self, inputs: dict, x: torch.Tensor, x_other: torch.Tensor | None, c: torch.Tensor) -> None:
        """Copy one update's batch and C(t) into its input buffers and draw every run's noise there."""
        inputs["x"].copy_(x)
        inputs["c"].copy_(c)
        for k, t in enumerate(self.runs):
            t.draw_noise(inputs["eps"][k])
        if self.has_disc:
            if x_other is not None:
                inputs["x_other"].copy_(x_other)
            for k, t in enumerate(self.runs):
                t.draw_permutation(inputs["eps2"][k], inputs["keys"][k])

    def _permuted_codes(self, x: torch.Tensor, inputs: dict) -> torch.Tensor:
        """Each run's codes of ``x`` from its encoder as it is now, shuffled by its keys (Trainer.permuted_codes)."""
        with torch.no_grad():
            mu2, logvar2 = vmap(self._encoder)(self.encoder_params, x)
            return _permute_stacked(mu2 + torch.exp(0.5 * logvar2) * inputs["eps2"], inputs["keys"])

    def _gradients(self, inputs: dict) -> torch.Tensor:
        """Set the stacked ``.grad``s for one update of every run (as Trainer.gradients does for one); return the terms.

        Reads the input buffers only, so that it can be captured as a CUDA graph. Returns
        ``(runs, len(TERMS) + z_dim)``: the terms, then the per-dimension KLs (one output, one graph buffer).
        """
        x, c, k = inputs["x"], inputs["c"], len(self.runs)
        first, cfg = self.runs[0], self.config
        logits, mu, logvar, z = vmap(self._vae)(self.vae_params, x, inputs["eps"])
        recon = vmap(lambda lg, im: first.recon_per_image(lg, im).mean())(logits, x)
        kl_per_image = vmap(gaussian_kl)(mu, logvar)
        kl = kl_per_image.mean(1)
        gap = (kl_per_image - c[:, None]).abs().mean(1) if cfg.capacity_form == "sample" else (kl - c).abs()
        nan = torch.full((k,), math.nan, device=self.device, dtype=self.dtype)
        tc, acc, d_loss = nan, nan, None
        if self.has_disc and self.same_batch:
            self._joint_logits = vmap(self._disc)(self.disc_params, z)
            tc = vmap(total_correlation)(self._joint_logits)
        elif self.has_disc:
            z_perm = self._permuted_codes(inputs["x_other"], inputs)
            d_logits = vmap(self._disc)(self.disc_params, torch.cat([z, z_perm], dim=1))
            n = z.shape[1]
            tc = vmap(total_correlation)(d_logits[:, :n])
            d_loss, acc = vmap(discriminator_loss)(d_logits[:, :n], d_logits[:, n:])
        loss = self.objective.combine(recon, kl, gap, tc)
        # Summed over runs, each run's parameters get the gradient of its own loss only.
        self.opt.zero_grad()
        scaled = loss * x.shape[1] if cfg.reduction == "sum" else loss
        scaled.sum().backward(inputs=self.vae_leaves, retain_graph=self.has_disc)
        if d_loss is not None:
            self.d_opt.zero_grad()
            d_loss.sum().backward(inputs=self.disc_leaves)
        terms = torch.stack([loss.detach(), recon.detach(), kl.detach(), tc.detach(), c, gap.detach(),
                             acc.detach().to(self.dtype)], dim=1)
        kl_dims = vmap(lambda m, lv: gaussian_kl_per_dim(m, lv).mean(0))(mu.detach(), logvar.detach())
        return torch.cat([terms, kl_dims], dim=1)

    def _update(self, inputs: dict) -> torch.Tensor:
        terms = self._gradients(inputs)
        self.opt.step()
        if self.has_disc and self.same_batch:  # D's loss on the same images encoded after the VAE's update
            z_perm = self._permuted_codes(inputs["x"], inputs)
            d_loss, acc = vmap(discriminator_loss)(self._joint_logits, vmap(self._disc)(self.disc_params, z_perm))
            self.d_opt.zero_grad()
            d_loss.sum().backward(inputs=self.disc_leaves)
            terms[:, DISC_ACC] = acc.detach().to(self.dtype)
            self._joint_logits = None
        if self.has_disc:
            self.d_opt.step()
        return terms

    def train_step(self, x: torch.Tensor, x_other: torch.Tensor | None, c: torch.Tensor) -> torch.Tensor:
        """One update of every run: ``x`` and ``x_other`` are ``(runs, batch, C, H, W)``, ``c`` the runs' C(t).
        Returns the terms and per-dimension KLs, ``(runs, len(TERMS) + z_dim)``, valid until the next step."""
        batch = x.shape[1]
        if batch == self.config.batch_size:
            self._fill(self._inputs[batch], x, x_other, c)
            terms = self._update_full()
        else:  # a kept last batch, smaller than the graphed one: eager, with buffers of its own size
            if batch not in self._inputs:
                self._inputs[batch] = self._allocate(batch)
            self._fill(self._inputs[batch], x, x_other, c)
            terms = self._update(self._inputs[batch])
        for t in self.runs:
            t.count_update()
        return terms

    def run_epoch(self) -> list[EpochResult]:
        start = time.perf_counter()
        first = self.runs[0]
        orders, others = zip(*(t.epoch_orders() for t in self.runs))
        orders = torch.stack(orders)
        others = torch.stack(others) if others[0] is not None else None
        totals = torch.zeros(len(self.runs), len(TERMS) + self.config.z_dim, device=self.device, dtype=torch.float64)
        # Every run's C(t) of the epoch in one host-to-device copy: (updates, runs).
        caps = torch.tensor(list(zip(*(t.next_capacities(first.steps_per_epoch) for t in self.runs))),
                            device=self.device, dtype=self.dtype)
        for b, (lo, hi) in enumerate(first.bounds):
            x = first.batch_of(first.train_images, orders[:, lo:hi])
            x_other = first.batch_of(first.train_images, others[:, lo:hi]) if others is not None else None
            first.add_terms(totals, self.train_step(x, x_other, caps[b]), hi - lo)
        means = first.epoch_means(totals).tolist()
        seconds = (time.perf_counter() - start) / len(self.runs)
        self._publish_weights()
        return [t.end_epoch(m, seconds) for t, m in zip(self.runs, means)]

    @torch.no_grad()
    def _publish_weights(self) -> None:
        """Copy each run's slice of the stacked weights into its own networks, which evaluate and get saved."""
        for k, t in enumerate(self.runs):
            for name, p in t.vae.named_parameters():
                p.copy_(self.vae_params[name][k])
            if self.has_disc:
                for name, p in t.disc.named_parameters():
                    p.copy_(self.disc_params[name][k])

    def state_dict(self) -> dict:
        """The stacked tensors and Adam states, and each run's progress (counts and random streams)."""
        state = {"progress": [t.progress_state() for t in self.runs]}
        state.update(vae={name: p.detach() for name, p in self.vae_params.items()}, opt=self.opt.state_dict())
        if self.has_disc:
            state.update(disc={name: p.detach() for name, p in self.disc_params.items()}, d_opt=self.d_opt.state_dict())
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Restore in place (the weights keep their storage, which a graph reads)."""
        if "progress" not in state or not isinstance(state["progress"], list):
            state = _stacked(run_states(state, len(self.runs)))
        elif len(state["progress"]) != len(self.runs):
            raise ValueError(f"the state is of {len(state['progress'])} runs, this stack has {len(self.runs)}")
        for t, progress in zip(self.runs, state["progress"]):
            t.load_progress_state(progress)
        for name, p in self.vae_params.items():
            p.copy_(state["vae"][name])
        self.opt.load_state_dict(state["opt"])
        if self.has_disc:
            for name, p in self.disc_params.items():
                p.copy_(state["disc"][name])
            self.d_opt.load_state_dict(state["d_opt"])
        self._publish_weights()
