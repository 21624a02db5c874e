"""One run's training: its networks, optimisers and random streams, advanced one epoch at a time.

It knows nothing of files or the CLI: it takes a resolved RunConfig and the dataset's tensors,
and gives one ``EpochResult`` per epoch (a train row, a test row).
Randomness comes from separate seeded ``torch.Generator`` streams, so a run is bitwise
repeatable and seed k draws the same data order for every objective.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

import torch

from bench.config import ACTIVE_KL, RunConfig
from bench.train.optim import Adam
from models.nets import VAE, Discriminator, torch04_init_
from models.objectives import (
    bernoulli_nll,
    bernoulli_nll_of_probs,
    capacity,
    capacity_gap,
    discriminator_loss,
    gaussian_kl,
    gaussian_kl_per_dim,
    permute_dims,
    staircase_capacity,
    total_correlation,
)
from models.presets import Objective

EVAL_BATCH = 1000
# Order of the terms accumulated on the device during an epoch (one host sync per epoch); each
# update's term vector is these, followed by the z_dim per-dimension KLs.
TERMS = ("loss", "recon", "kl", "tc", "capacity", "capacity_gap", "disc_acc")
DISC_ACC = TERMS.index("disc_acc")


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for one named random stream of a run, independent of the other streams."""
    digest = hashlib.sha256(f"{seed}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _generator(seed: int, stream: str, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(stream_seed(seed, stream))


def adam(params, lr: float, betas: tuple[float, float], device: torch.device) -> Adam:
    """Adam as every trainer here builds it: on a GPU ``capturable``, so that a CUDA graph can replay it.

    A capturable Adam works out its bias corrections on the device in float32 rather than in
    Python floats, which is enough to make a run part from a non-capturable one within a few
    updates. Using it for every GPU run, graphed or
    not, keeps all GPU runs on one arithmetic.
    """
    return Adam(params, lr=lr, betas=betas, capturable=device.type == "cuda")


def exact_float32() -> None:
    """Make float32 mean IEEE float32 on a GPU, as it does on a CPU.

    By default cuDNN runs float32 convolutions on TF32 tensor cores, which keep 10 mantissa bits
    instead of 23: a stacked run (grouped convolutions) and the same run alone (plain ones) then
    part by about 1e-4 relative within a dozen updates, and results would depend on whether the
    GPU has TF32 at all. Global, like the determinism switch; it does nothing on a CPU.
    """
    if hasattr(torch.backends.cudnn, "conv") and hasattr(torch.backends.cudnn.conv, "fp32_precision"):
        torch.backends.cudnn.conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
    else:  # torch before 2.9
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


def conv_layout(vae: VAE) -> VAE:
    """Put a VAE's convolution weights in the memory layout every trainer and loader here uses.

    On the CPU, float32 convolutions run through oneDNN, faster in the channels-last layout
    (BENCHMARKS.md); float64 ones do not, and keep the default layout. The layout changes the
    order of a convolution's sums, so weights evaluate to the same bits only in the same layout:
    hence one function for training and for loading saved weights.
    """
    weight = next(vae.parameters())
    if weight.device.type == "cpu" and weight.dtype == torch.float32:
        vae.to(memory_format=torch.channels_last)
    return vae


def make_nets(config: RunConfig, channels: int, image_size: int) -> tuple[VAE, Discriminator | None]:
    """A run's VAE and (where its objective has a TC term) discriminator, initialised as its config says.

    Draws from torch's global generator: callers seed it (Trainer) or build on the meta device.
    """
    dtype = getattr(torch, config.dtype)
    vae = VAE(config.z_dim, channels, image_size, dtype, config.nets)
    if config.init == "torch0.4":
        torch04_init_(vae)
    disc = None
    if config.gamma != 0:
        disc = Discriminator(config.z_dim, dtype=dtype, kind=config.disc)
        if config.init == "torch0.4":
            torch04_init_(disc)
    return vae, disc


def batch_bounds(n: int, batch_size: int, last_batch: str) -> list[tuple[int, int]]:
    """The (start, end) of each update's slice of an epoch's order of ``n`` images.

    ``drop``: full batches only. ``keep``: a last, smaller batch as well, as a DataLoader without
    ``drop_last`` gives it (60,000 MNIST images in batches of 128: 468 of 128 and one of 96).
    """
    full = n // batch_size
    bounds = [(i * batch_size, (i + 1) * batch_size) for i in range(full)]
    if last_batch == "keep" and n % batch_size:
        bounds.append((full * batch_size, n))
    return bounds


def split_terms(values: list[float]) -> dict:
    """An epoch's mean term vector as a row's terms: TERMS by name, then the per-dimension KLs as ``kl_dims``."""
    return {**dict(zip(TERMS, values[: len(TERMS)])), "kl_dims": values[len(TERMS) :]}


@dataclass
class EpochResult:
    epoch: int
    rows: list[dict]  # the train row and the test row, in the records' column vocabulary
    diverged: bool


class Trainer:
    """The models, optimizers and random streams of one run, advanced one epoch at a time."""

    def __init__(self, config: RunConfig, train_images: torch.Tensor, test_images: torch.Tensor, device="cpu"):
        self.config = config
        self.device = torch.device(device)
        if self.device.type == "cuda":
            exact_float32()
        self.objective = Objective(config.w_kl, config.w_cap, config.gamma)
        self.dtype = getattr(torch, config.dtype)
        self.train_images = train_images.to(self.device)
        self.test_images = test_images.to(self.device)
        channels, size = train_images.shape[1], train_images.shape[-1]
        self.bounds = batch_bounds(len(train_images), config.batch_size, config.last_batch)
        self.steps_per_epoch = len(self.bounds)
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(train_images)} training images is fewer than one batch of {config.batch_size}")
        # Images one epoch trains on, in batches of batch_size: the weights of an epoch's mean.
        self.epoch_images = self.bounds[-1][1]
        self.ramp = config.c_ramp or config.epochs * self.steps_per_epoch

        # Initialisation draws from its own stream, leaving the global generator untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed(config.seed, "init"))
            self.vae, self.disc = make_nets(config, channels, size)
        conv_layout(self.vae.to(self.device))
        self.vae_params = list(self.vae.parameters())
        self.opt = adam(self.vae_params, config.lr, (config.beta1, config.beta2), self.device)
        if self.disc is not None:
            self.disc.to(self.device)
            self.disc_params = list(self.disc.parameters())
            self.d_opt = adam(self.disc_params, config.d_lr, (config.d_beta1, config.d_beta2), self.device)

        # Data order depends on the seed only, so every objective sees the same minibatches.
        self.g_data = _generator(config.seed, "data", torch.device("cpu"))
        self.g_noise = _generator(config.seed, "noise", self.device)
        self.g_disc_order = _generator(config.seed, "disc-order", torch.device("cpu"))
        self.g_disc = _generator(config.seed, "disc", self.device)
        self.step = 0
        self.epoch = 0
        self._joint_logits = None  # perm_batch "same": D(z) of the update under way, for D's loss after the VAE's step

    def generators(self) -> dict[str, torch.Generator]:
        return {"data": self.g_data, "noise": self.g_noise, "disc-order": self.g_disc_order, "disc": self.g_disc}

    def progress_state(self) -> dict:
        """Where the run stands: its update and epoch counts and every random stream's state."""
        return {"step": self.step, "epoch": self.epoch,
                "generators": {name: g.get_state() for name, g in self.generators().items()}}

    def load_progress_state(self, state: dict) -> None:
        self.step, self.epoch = state["step"], state["epoch"]
        for name, g in self.generators().items():
            g.set_state(state["generators"][name])

    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue bit for bit: weights, optimisers, streams, counts."""
        state = {"progress": self.progress_state(), "vae": self.vae.state_dict(), "opt": self.opt.state_dict()}
        if self.disc is not None:
            state.update(disc=self.disc.state_dict(), d_opt=self.d_opt.state_dict())
        return state

    def load_state_dict(self, state: dict) -> None:
        self.load_progress_state(state["progress"])
        self.vae.load_state_dict(state["vae"])
        self.opt.load_state_dict(state["opt"])
        if self.disc is not None:
            self.disc.load_state_dict(state["disc"])
            self.d_opt.load_state_dict(state["d_opt"])

    def batch_of(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The images at ``index`` as floats of the run's dtype in [0, 1]."""
        return images[index].to(self.dtype).div_(255.0)

    def capacity_at(self, step: int) -> float:
        """C for update ``step``: the linear ramp over updates, or the author's per-epoch staircase."""
        cfg = self.config
        if cfg.c_schedule == "staircase":
            return staircase_capacity(step // self.steps_per_epoch, cfg.c_step, cfg.c_max)
        return capacity(step, cfg.c_max, self.ramp)

    def next_capacities(self, steps: int) -> list[float]:
        """C(t) of the run's next ``steps`` updates."""
        return [self.capacity_at(self.step + i) for i in range(steps)]

    def draw_noise(self, eps: torch.Tensor) -> None:
        """Fill ``eps`` with the next update's reparameterisation noise, as :meth:`gradients` draws it."""
        torch.randn(eps.shape, generator=self.g_noise, device=self.device, dtype=self.dtype, out=eps)

    def draw_permutation(self, eps: torch.Tensor, keys: torch.Tensor) -> None:
        """Fill ``eps`` and ``keys`` with the next update's noise of D's permuted codes, as
        :meth:`permuted_codes` draws them (``keys`` in torch.rand's default dtype)."""
        torch.randn(eps.shape, generator=self.g_disc, device=self.device, dtype=self.dtype, out=eps)
        torch.rand(keys.shape, generator=self.g_disc, device=self.device, out=keys)

    def count_update(self) -> None:
        """Count an update made outside :meth:`train_step` (by a vectorised stack) as the run's own."""
        self.step += 1

    def recon_per_image(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) per image: from logits, or as the author's sigmoid and torch 0.4 cross-entropy give it."""
        return bernoulli_nll_of_probs(logits, x) if self.config.nets == "author" else bernoulli_nll(logits, x)

    def permuted_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Codes of ``x`` from the encoder as it is now, each column shuffled across the batch: prod_j q(z_j)."""
        with torch.no_grad():
            mu2, logvar2 = self.vae.encoder(x)
            eps2 = torch.randn(mu2.shape, generator=self.g_disc, device=self.device, dtype=self.dtype)
            return permute_dims(mu2 + torch.exp(0.5 * logvar2) * eps2, self.g_disc)

    def train_step(self, x: torch.Tensor, x_other: torch.Tensor | None) -> torch.Tensor:
        """One VAE update (and one discriminator update); returns the detached terms and per-dimension KLs.

        With ``perm_batch="same"`` D's permuted codes are of the same images, encoded again after
        the VAE's update, and D's codes of q(z) are the ``z`` of before it (the author's
        ``process_fvae``: ``D_z = D(z)``, ``optimizer.step()``, then ``z_prim = model(images)``).
        """
        terms = self.gradients(x, x_other)
        self.opt.step()
        if self._joint_logits is not None:
            terms[DISC_ACC] = self._disc_gradients(self._joint_logits, self.permuted_codes(x))
            self._joint_logits = None
        if self.disc is not None:
            self.d_opt.step()
        self.step += 1
        return terms

    def _disc_gradients(self, logits_joint: torch.Tensor, z_perm: torch.Tensor) -> torch.Tensor:
        """Set D's ``.grad`` from its outputs on z ~ q(z) and on permuted codes; return its accuracy."""
        d_loss, acc = discriminator_loss(logits_joint, self.disc(z_perm))
        self.d_opt.zero_grad()
        d_loss.backward(inputs=self.disc_params)
        return acc.detach()

    def gradients(self, x: torch.Tensor, x_other: torch.Tensor | None) -> torch.Tensor:
        """Set the ``.grad`` of every parameter for one update, without stepping; return the terms.

        The VAE's parameters get the gradient of the objective, D held fixed inside it; D's
        parameters get the gradient of D's own loss, its inputs held fixed. One pass of D over
        ``[z, z_perm]`` serves both losses (Kim & Mnih 2018, Algorithm 1): each backward names
        the parameters it may reach, so TC's gradient never lands on D and D's loss never on the
        encoder. The permuted batch is encoded before the VAE's update, by the encoder that
        produced ``z``. With ``perm_batch="same"`` D's permuted codes come only after the VAE's
        update, so :meth:`train_step` sets D's gradient and the accuracy (NaN here).
        """
        cfg, obj = self.config, self.objective
        c = self.capacity_at(self.step)
        eps = torch.randn(len(x), cfg.z_dim, generator=self.g_noise, device=self.device, dtype=self.dtype)
        logits, mu, logvar, z = self.vae(x, eps)
        recon = self.recon_per_image(logits, x).mean()
        kl_per_image = gaussian_kl(mu, logvar)
        kl = kl_per_image.mean()
        gap = capacity_gap(kl_per_image, c, cfg.capacity_form)
        nan = torch.full((), math.nan, device=self.device, dtype=self.dtype)
        tc, acc, d_loss = nan, nan, None
        if self.disc is not None and cfg.perm_batch == "same":
            self._joint_logits = self.disc(z)
            tc = total_correlation(self._joint_logits)
        elif self.disc is not None:
            z_perm = self.permuted_codes(x_other)
            d_logits = self.disc(torch.cat([z, z_perm]))
            tc = total_correlation(d_logits[: len(z)])
            d_loss, acc = discriminator_loss(d_logits[: len(z)], d_logits[len(z) :])
        loss = obj.combine(recon, kl, gap, tc)
        self.opt.zero_grad()
        # reduction "sum": the author's losses are batch sums (size_average=False), a gradient len(x) times the mean's.
        scaled = loss * len(x) if cfg.reduction == "sum" else loss
        scaled.backward(inputs=self.vae_params, retain_graph=self.disc is not None)
        if d_loss is not None:
            self.d_opt.zero_grad()
            d_loss.backward(inputs=self.disc_params)
        terms = torch.stack([loss.detach(), recon.detach(), kl.detach(), tc.detach(), torch.full_like(nan, c),
                             gap.detach(), acc.detach()])
        return torch.cat([terms, gaussian_kl_per_dim(mu.detach(), logvar.detach()).mean(0)])

    def eval_capacity(self) -> float:
        """C of the test pass after an epoch: the next update's on the ramp, the epoch's own on the staircase
        (the author's test loss takes the ``epoch/2`` of the epoch just trained)."""
        if self.config.c_schedule == "staircase":
            return self.capacity_at(self.step - 1)
        return self.capacity_at(self.step)

    @torch.no_grad()
    def evaluate(self) -> dict:
        """The objective on the whole test split, model in eval mode, noise from a fixed per-run stream."""
        cfg, obj = self.config, self.objective
        self.vae.eval()
        g = _generator(cfg.seed, "eval", self.device)
        c = self.eval_capacity()
        recon_sum = kl_sum = kl_dims_sum = gap_sum = 0.0
        zs = []
        for start in range(0, len(self.test_images), EVAL_BATCH):
            x = self.test_images[start : start + EVAL_BATCH].to(self.dtype).div_(255.0)
            eps = torch.randn(len(x), cfg.z_dim, generator=g, device=self.device, dtype=self.dtype)
            logits, mu, logvar, z = self.vae(x, eps)
            recon_sum = recon_sum + self.recon_per_image(logits, x).sum()
            kl_per_image = gaussian_kl(mu, logvar)
            kl_sum = kl_sum + kl_per_image.sum()
            if cfg.capacity_form == "sample":
                gap_sum = gap_sum + (kl_per_image - c).abs().sum()
            kl_dims_sum = kl_dims_sum + gaussian_kl_per_dim(mu, logvar).sum(0)
            zs.append(z)
        self.vae.train()
        n = len(self.test_images)
        recon, kl = float(recon_sum) / n, float(kl_sum) / n
        gap = float(gap_sum) / n if cfg.capacity_form == "sample" else abs(kl - c)
        tc = acc = math.nan
        if self.disc is not None:
            z = torch.cat(zs)
            logits_joint = self.disc(z)
            tc = float(total_correlation(logits_joint))
            acc = float(discriminator_loss(logits_joint, self.disc(permute_dims(z, g)))[1])
        loss = obj.combine(recon, kl, gap, tc)
        return {"loss": loss, "recon": recon, "kl": kl, "tc": tc, "capacity": c, "capacity_gap": gap, "disc_acc": acc,
                "kl_dims": (kl_dims_sum / n).tolist()}

    def epoch_orders(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This epoch's order of the training images, and of D's independent batches where it has them.

        Drawn on the CPU (same bits on every device) and moved once per epoch: a per-step
        host-to-device copy would synchronise the GPU at every update.
        """
        n = len(self.train_images)
        order = torch.randperm(n, generator=self.g_data).to(self.device)
        independent = self.disc is not None and self.config.perm_batch == "independent"
        other = torch.randperm(n, generator=self.g_disc_order).to(self.device) if independent else None
        return order, other

    def add_terms(self, totals: torch.Tensor, terms: torch.Tensor, images: int) -> None:
        """Add one update's terms to an epoch's totals, weighted by its share of a full batch.

        A full batch weighs exactly 1; :meth:`epoch_means` divides by the epoch's images over the
        batch size, so a kept last batch of 96 of 128 counts 0.75, as a mean over images counts it.
        """
        bs = self.config.batch_size
        totals += terms if images == bs else terms * (images / bs)

    def epoch_means(self, totals: torch.Tensor) -> torch.Tensor:
        return totals / (self.epoch_images / self.config.batch_size)

    def train_epoch(self) -> list[float]:
        """One epoch of updates; returns the epoch's mean terms (TERMS, then the per-dimension KLs)."""
        order, other = self.epoch_orders()
        totals = torch.zeros(len(TERMS) + self.config.z_dim, device=self.device, dtype=torch.float64)
        for lo, hi in self.bounds:
            x = self.batch_of(self.train_images, order[lo:hi])
            x_other = self.batch_of(self.train_images, other[lo:hi]) if other is not None else None
            self.add_terms(totals, self.train_step(x, x_other), hi - lo)
        return self.epoch_means(totals).tolist()

    def end_epoch(self, train_means: list[float], train_seconds: float) -> EpochResult:
        """Close an epoch trained with ``train_means``: evaluate on the test split and make its two rows."""
        self.epoch += 1
        eval_start = time.perf_counter()
        test = self.evaluate()
        rows = [
            self._row("train", split_terms(train_means), self.epoch_images, train_seconds),
            self._row("test", test, len(self.test_images), time.perf_counter() - eval_start),
        ]
        return EpochResult(self.epoch, rows, not all(math.isfinite(r["loss"]) for r in rows))

    def run_epoch(self) -> EpochResult:
        start = time.perf_counter()
        means = self.train_epoch()
        return self.end_epoch(means, time.perf_counter() - start)

    def _row(self, split: str, terms: dict, n_images: int, seconds: float) -> dict:
        cfg, obj = self.config, self.objective
        row = {"run_id": cfg.run_id, "model": cfg.model, "dataset": cfg.dataset, "seed": cfg.seed,
               "epoch": self.epoch, "split": split, "step": self.step, **terms,
               "active_dims": sum(k > ACTIVE_KL for k in terms["kl_dims"]), "n_images": n_images, "seconds": seconds}
        # Terms the objective does not have are NaN, so nobody averages a meaningless zero.
        if not obj.uses_capacity:
            row["capacity"] = row["capacity_gap"] = math.nan
        if not obj.uses_discriminator:
            row["tc"] = row["disc_acc"] = math.nan
        return row


def train(config: RunConfig, train_images: torch.Tensor, test_images: torch.Tensor, device="cpu"):
    """Yield ``(EpochResult, trainer)`` for each epoch of the run; stop early if it diverges."""
    trainer = Trainer(config, train_images, test_images, device)
    for _ in range(config.epochs):
        result = trainer.run_epoch()
        yield result, trainer
        if result.diverged:
            return
