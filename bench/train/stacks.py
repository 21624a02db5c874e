"""Train several runs as one program: their weights stacked, every update vectorised over runs.

The runs of a stack share what fixes the shapes and the optimiser (dataset, subsets, batch
size, epochs, latent size, dtype, learning rates and betas, whether there is a
discriminator); they may differ in seed, objective coefficients and C schedule. Each run
keeps its own :class:`~bench.train.trainer.Trainer`, which owns its initialisation, its random
streams and its evaluation, so a run draws exactly the numbers it draws when trained alone;
only the update runs stacked, through ``torch.func.vmap`` over ``functional_call``. Adam is
elementwise, so one Adam over the stacked tensors is each run's own Adam.

That vectorised update is for GPUs, where one update of these small networks is bound by kernel
launches, not arithmetic. On a CPU a stack is trained in lockstep instead: each update is every
run's own solo update, so a stacked run's records are its solo records bit for bit: vmap's grouped
convolutions run slower there than one plain convolution per run (BENCHMARKS.md). With more than
one core, ``workers`` threads make the runs' updates side by side, each on its own share of
torch's threads (:func:`cpu_workers`): these small networks keep two cores busy better as two
runs on one thread each than as one run on two. A run's arithmetic depends only on the torch
threads it gets, never on its neighbours. Either kind of stack loads the other's checkpoint.

On a GPU the update (forward, both backward passes, both Adam steps) is captured once as a
CUDA graph and replayed (:class:`CapturedStep`); what varies between updates (the batch, C(t)
and the runs' noise) is written into fixed input buffers first, eagerly, from each run's own
generators. Adam on a GPU is capturable for every run (:func:`bench.train.trainer.adam`), so a graphed
stack repeats the bits of the same stack trained eagerly.

A vectorised stack's records equal its runs' solo records up to floating-point rounding:
vectorised convolutions and matrix products sum in another order. In the smoke profile they agree to
1e-9 relative in float64, and in float32 to 1e-4 relative or, for the terms near zero, 1e-5
nats (KL) and 1e-4 nats (TC) absolute (tested, native and generic kernels).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from torch.func import functional_call, stack_module_state, vmap

from bench.config import RunConfig
from bench.train.trainer import _DISC_ACC, TERMS, EpochResult, Trainer, adam, make_nets, split_terms
from models.objectives import discriminator_loss, gaussian_kl, gaussian_kl_per_dim, total_correlation

# Fields a stack's runs must share; the others (seed, coefficients, C schedule, initialisation) may differ.
SHARED_FIELDS = ("dataset", "epochs", "batch_size", "lr", "beta1", "beta2", "z_dim", "d_lr", "d_beta1", "d_beta2",
                 "train_subset", "test_subset", "dtype", "nets", "disc", "perm_batch", "last_batch", "capacity_form",
                 "reduction")


def stack_key(config: RunConfig) -> tuple:
    """Runs with equal keys can be trained as one stack."""
    return tuple(getattr(config, name) for name in SHARED_FIELDS) + (config.gamma != 0,)


def training_bytes(config: RunConfig, channels: int, image_size: int) -> int:
    """Bytes of one run's training state: per parameter its weight, gradient and Adam's three buffers
    (two moments and the denominator, :class:`bench.train.optim.Adam`)."""
    with torch.device("meta"):  # shapes only, nothing allocated
        nets = [net for net in make_nets(config, channels, image_size) if net is not None]
    return 5 * sum(p.numel() for net in nets for p in net.parameters()) * getattr(torch, config.dtype).itemsize


def cpu_workers(runs: int, threads: int) -> tuple[int, int]:
    """How a lockstep stack of ``runs`` shares ``threads`` cores: runs updated at once, torch threads for each.

    One thread per run while there are more runs than threads: at batch 64 a VAE update on one
    core takes less than twice its time on two (BENCHMARKS.md), so side by side the runs train
    faster. Never more busy threads than ``threads``.
    """
    workers = max(1, min(runs, threads))
    return workers, max(1, threads // workers)


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
    """The runs' own states (:meth:`StackedTrainer.run_states`) as a vectorised stack's state."""
    stacked = {"progress": [state["progress"] for state in run_states]}
    for net, opt in (("vae", "opt"), ("disc", "d_opt")):
        if net in run_states[0]:
            stacked[net] = {name: torch.stack([state[net][name] for state in run_states]) for name in run_states[0][net]}
            stacked[opt] = stack_adam_states([state[opt] for state in run_states])
    return stacked


def _permute_stacked(z: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Each run's columns shuffled across its batch by its own keys (see models.objectives.permute_dims)."""
    return torch.gather(z, 1, keys.argsort(dim=1))


class StackedTrainer:
    """Several runs' models and optimisers, advanced one epoch at a time as one program."""

    def __init__(self, configs: list[RunConfig], train_images: torch.Tensor, test_images: torch.Tensor, device="cpu",
                 cuda_graphs: bool | None = None, vectorised: bool | None = None, workers: int = 1):
        if len({stack_key(c) for c in configs}) != 1:
            raise ValueError("the runs of a stack must share " + ", ".join(SHARED_FIELDS) + " and the discriminator")
        kind = torch.device(device).type
        self.vectorised = kind != "cpu" if vectorised is None else vectorised
        self.cuda_graphs = kind == "cuda" and self.vectorised if cuda_graphs is None else cuda_graphs
        if self.cuda_graphs and kind != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        if self.cuda_graphs and not self.vectorised:
            raise ValueError("CUDA graphs replay a vectorised update")
        if workers < 1 or (workers > 1 and self.vectorised):
            raise ValueError(f"workers={workers}: a lockstep stack takes one or more, a vectorised one exactly one")
        self.workers = workers
        self._map = map  # over the runs: the built-in map, or a pool's while side by side (see in_parallel)
        self.runs = [Trainer(c, train_images, test_images, device) for c in configs]
        first = self.runs[0]
        self.config, self.device, self.dtype = first.config, first.device, first.dtype
        self.train_images, self.steps_per_epoch = first.train_images, first.steps_per_epoch
        self.has_disc = first.disc is not None
        if self.vectorised:
            self._stack_networks(train_images.shape[1:])

    def _stack_networks(self, image_shape) -> None:
        """The runs' weights and optimiser states as stacked tensors, and the buffers of one vectorised update."""
        first = self.runs[0]
        self.w_kl, self.w_cap, self.gamma = torch.tensor(
            [[t.objective.w_kl, t.objective.w_cap, t.objective.gamma] for t in self.runs], device=self.device, dtype=self.dtype
        ).unbind(1)

        # Stateless copies of the networks: the stacked tensors are passed in at each call.
        self.vae_params, _ = stack_module_state([t.vae for t in self.runs])
        self.vae_leaves = list(self.vae_params.values())
        self.vae_shape = copy.deepcopy(first.vae).to("meta")
        self.opt = adam(self.vae_leaves, self.config.lr, (self.config.beta1, self.config.beta2), self.device)
        if self.has_disc:
            # Detached views share storage with the stacked weights, so they follow every Adam step.
            self.encoder_params = {name.removeprefix("encoder."): p.detach()
                                   for name, p in self.vae_params.items() if name.startswith("encoder.")}
            self.disc_params, _ = stack_module_state([t.disc for t in self.runs])
            self.disc_leaves = list(self.disc_params.values())
            self.disc_shape = copy.deepcopy(first.disc).to("meta")
            self.d_opt = adam(self.disc_leaves, self.config.d_lr, (self.config.d_beta1, self.config.d_beta2), self.device)

        # The inputs of one update, refilled in place before each: a captured graph reads them where they are.
        self.same_batch = self.config.perm_batch == "same"
        self._joint_logits = None  # as Trainer's: every run's D(z) of the update under way
        self._inputs = {self.config.batch_size: self._allocate(self.config.batch_size, image_shape)}
        self.image_shape = image_shape
        full = self._inputs[self.config.batch_size]
        self._update_full = CapturedStep(lambda: self._update(full)) if self.cuda_graphs else lambda: self._update(full)

    def _allocate(self, batch: int, image_shape) -> dict:
        """Input buffers of one vectorised update of ``batch`` images per run."""
        k, z_dim = len(self.runs), self.config.z_dim
        on = {"device": self.device, "dtype": self.dtype}
        inputs = {"x": torch.empty((k, batch, *image_shape), **on), "c": torch.empty(k, **on),
                  "eps": torch.empty(k, batch, z_dim, **on)}
        if self.has_disc:
            inputs["eps2"] = torch.empty(k, batch, z_dim, **on)
            inputs["keys"] = torch.empty(k, batch, z_dim, device=self.device)  # torch.rand's default dtype, as in permute_dims
            if not self.same_batch:
                inputs["x_other"] = torch.empty_like(inputs["x"])
        return inputs

    def _vae(self, params, x, eps):
        return functional_call(self.vae_shape, params, (x, eps))

    def _encoder(self, params, x):
        return functional_call(self.vae_shape.encoder, params, (x,))

    def _disc(self, params, z):
        return functional_call(self.disc_shape, params, (z,))

    def capacities(self, steps: int) -> torch.Tensor:
        """Every run's C(t) for its next ``steps`` updates, ``(steps, runs)``, made in one host-to-device copy."""
        return torch.tensor([[t.capacity_at(t.step + i) for t in self.runs] for i in range(steps)],
                            device=self.device, dtype=self.dtype)

    def _fill(self, inputs: dict, x: torch.Tensor, x_other: torch.Tensor | None, c: torch.Tensor) -> None:
        """Copy one update's batch and C(t) into its input buffers and draw its noise there.

        Random numbers are drawn per run from its own streams, in the order a solo update draws them.
        """
        inputs["x"].copy_(x)
        inputs["c"].copy_(c)
        shape = inputs["eps"].shape[1:]
        for k, t in enumerate(self.runs):
            torch.randn(shape, generator=t.g_noise, device=self.device, dtype=self.dtype, out=inputs["eps"][k])
        if self.has_disc:
            if x_other is not None:
                inputs["x_other"].copy_(x_other)
            for k, t in enumerate(self.runs):
                torch.randn(shape, generator=t.g_disc, device=self.device, dtype=self.dtype, out=inputs["eps2"][k])
                torch.rand(shape, generator=t.g_disc, device=self.device, out=inputs["keys"][k])

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
        loss = recon + self.w_kl * kl + self.w_cap * gap
        nan = torch.full((k,), math.nan, device=self.device, dtype=self.dtype)
        tc, acc, d_loss = nan, nan, None
        if self.has_disc and self.same_batch:
            self._joint_logits = vmap(self._disc)(self.disc_params, z)
            tc = vmap(total_correlation)(self._joint_logits)
            loss = loss + self.gamma * tc
        elif self.has_disc:
            z_perm = self._permuted_codes(inputs["x_other"], inputs)
            d_logits = vmap(self._disc)(self.disc_params, torch.cat([z, z_perm], dim=1))
            n = z.shape[1]
            tc = vmap(total_correlation)(d_logits[:, :n])
            d_loss, acc = vmap(discriminator_loss)(d_logits[:, :n], d_logits[:, n:])
            loss = loss + self.gamma * tc
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
            terms[:, _DISC_ACC] = acc.detach().to(self.dtype)
            self._joint_logits = None
        if self.has_disc:
            self.d_opt.step()
        return terms

    @contextlib.contextmanager
    def in_parallel(self):
        """Within this block a lockstep stack updates ``workers`` runs at once, on threads that each
        take torch's current thread count."""
        if self.workers == 1:
            yield
            return
        threads = torch.get_num_threads()  # a new thread's OpenMP count starts at the machine's cores
        with ThreadPoolExecutor(self.workers, initializer=torch.set_num_threads, initargs=(threads,)) as pool:
            self._map = pool.map
            try:
                yield
            finally:
                self._map = map

    def train_step(self, x: torch.Tensor, x_other: torch.Tensor | None, c: torch.Tensor) -> torch.Tensor:
        """One update of every run: ``x`` and ``x_other`` are ``(runs, batch, C, H, W)``, ``c`` the runs' C(t)
        (a row of :meth:`capacities`). Returns the terms and per-dimension KLs, ``(runs, len(TERMS) + z_dim)``,
        valid until the next step."""
        if not self.vectorised:  # each run's solo update, which works out its own C(t)
            def update(k):
                return self.runs[k].train_step(x[k], None if x_other is None else x_other[k])

            return torch.stack(list(self._map(update, range(len(self.runs)))))
        batch = x.shape[1]
        if batch == self.config.batch_size:
            self._fill(self._inputs[batch], x, x_other, c)
            terms = self._update_full()
        else:  # a kept last batch, smaller than the graphed one: eager, with buffers of its own size
            if batch not in self._inputs:
                self._inputs[batch] = self._allocate(batch, self.image_shape)
            inputs = self._inputs[batch]
            self._fill(inputs, x, x_other, c)
            terms = self._update(inputs)
        for t in self.runs:
            t.step += 1
        return terms

    @torch.no_grad()
    def _publish_weights(self) -> None:
        """Copy each run's slice of the stacked weights into its own networks, which evaluate and get saved."""
        if not self.vectorised:  # the runs' own networks are the ones trained
            return
        for k, t in enumerate(self.runs):
            for name, p in t.vae.named_parameters():
                p.copy_(self.vae_params[name][k])
            if self.has_disc:
                for name, p in t.disc.named_parameters():
                    p.copy_(self.disc_params[name][k])

    def run_states(self) -> list[dict]:
        """Each run's state as :meth:`bench.train.trainer.Trainer.state_dict` gives it (a vectorised stack's
        are slices of its stacked tensors)."""
        return [t.state_dict() for t in self.runs] if not self.vectorised else _cut(self.state_dict())

    def state_dict(self) -> dict:
        """Everything the stack needs to continue bit for bit: weights, optimisers, each run's streams.

        A lockstep stack gives its runs' own states (references, no copies: a checkpoint of 4
        FactorVAE runs would otherwise hold 260 MB more while it is written); a vectorised one
        its stacked tensors. Either kind of stack loads either.
        """
        if not self.vectorised:
            return {"runs": self.run_states()}
        state = {"progress": [t.progress_state() for t in self.runs]}
        state.update(vae={name: p.detach() for name, p in self.vae_params.items()}, opt=self.opt.state_dict())
        if self.has_disc:
            state.update(disc={name: p.detach() for name, p in self.disc_params.items()}, d_opt=self.d_opt.state_dict())
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` of either kind in place (the weights keep their storage, which a
        graph would read)."""
        runs = len(state["runs"]) if "runs" in state else len(state["progress"])  # a lockstep stack's, or a vectorised one's
        if runs != len(self.runs):
            raise ValueError(f"the state is of {runs} runs, this stack has {len(self.runs)}")
        if not self.vectorised:
            for t, run_state in zip(self.runs, state["runs"] if "runs" in state else _cut(state)):
                t.load_state_dict(run_state)
            return
        if "runs" in state:
            state = _stacked(state["runs"])
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

    def run_epoch(self) -> list[EpochResult]:
        """One epoch of every run; one EpochResult per run, in the order of the configs."""
        with self.in_parallel():
            return self._run_epoch()

    def _run_epoch(self) -> list[EpochResult]:
        start = time.perf_counter()
        first = self.runs[0]
        orders, others = zip(*(t.epoch_orders() for t in self.runs))
        orders = torch.stack(orders)
        others = torch.stack(others) if others[0] is not None else None
        totals = torch.zeros(len(self.runs), len(TERMS) + self.config.z_dim, device=self.device, dtype=torch.float64)
        caps = self.capacities(self.steps_per_epoch)
        for b, (lo, hi) in enumerate(first.bounds):
            x = first.batch_of(self.train_images, orders[:, lo:hi])
            x_other = first.batch_of(self.train_images, others[:, lo:hi]) if others is not None else None
            first.add_terms(totals, self.train_step(x, x_other, caps[b]), hi - lo)
        means = first.epoch_means(totals).tolist()
        train_seconds = (time.perf_counter() - start) / len(self.runs)
        self._publish_weights()

        # One evaluation at a time, even side by side: two at once held about 300 MB more at the peak
        # (4 FactorVAE runs, paper profile), for a twentieth of an epoch's work.
        results = []
        for t, terms in zip(self.runs, means):
            t.epoch += 1
            eval_start = time.perf_counter()
            test = t.evaluate()
            rows = [
                t._row("train", split_terms(terms), t.epoch_images, train_seconds),
                t._row("test", test, len(t.test_images), time.perf_counter() - eval_start),
            ]
            results.append(EpochResult(t.epoch, rows, not all(math.isfinite(r["loss"]) for r in rows)))
        return results
