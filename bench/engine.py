"""Train one run and yield its records epoch by epoch.

The engine knows nothing of files or the CLI: it takes a resolved RunConfig and the
dataset's tensors, and yields one ``EpochResult`` per epoch (a train row, a test row).
Randomness comes from separate seeded ``torch.Generator`` streams, so a run is bitwise
repeatable and seed k draws the same data order for every objective.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

import torch

from models.nets import VAE, Discriminator
from models.objectives import (
    Objective,
    bernoulli_nll,
    capacity,
    discriminator_loss,
    gaussian_kl,
    gaussian_kl_per_dim,
    permute_dims,
    total_correlation,
)

from .config import RunConfig
from .optim import Adam
from .records import ACTIVE_KL

EVAL_BATCH = 1000
# Order of the terms accumulated on the device during an epoch (one host sync per epoch); each
# update's term vector is these, followed by the z_dim per-dimension KLs.
TERMS = ("loss", "recon", "kl", "tc", "capacity", "capacity_gap", "disc_acc")


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for one named random stream of a run, independent of the other streams."""
    digest = hashlib.sha256(f"{seed}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _generator(seed: int, stream: str, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(stream_seed(seed, stream))


def adam(params, lr: float, betas: tuple[float, float], device: torch.device) -> Adam:
    """Adam as every trainer here builds it: on a GPU ``capturable``, so that a CUDA graph can replay it.

    A capturable Adam works out its bias corrections on the device in float32 rather than in
    Python floats, which moves the first updates by about 1e-5 relative: enough to make a run
    part from a non-capturable one within a few updates. Using it for every GPU run, graphed or
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
        self.steps_per_epoch = len(train_images) // config.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(train_images)} training images is fewer than one batch of {config.batch_size}")
        self.ramp = config.c_ramp or config.epochs * self.steps_per_epoch

        # Initialisation draws from its own stream, leaving the global generator untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed(config.seed, "init"))
            self.vae = VAE(config.z_dim, channels, size, self.dtype)
            self.disc = Discriminator(config.z_dim, dtype=self.dtype) if self.objective.uses_discriminator else None
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

    def train_step(self, x: torch.Tensor, x_other: torch.Tensor | None) -> torch.Tensor:
        """One VAE update (and one discriminator update); returns the detached terms and per-dimension KLs."""
        terms = self.gradients(x, x_other)
        self.opt.step()
        if self.disc is not None:
            self.d_opt.step()
        self.step += 1
        return terms

    def gradients(self, x: torch.Tensor, x_other: torch.Tensor | None) -> torch.Tensor:
        """Set the ``.grad`` of every parameter for one update, without stepping; return the terms.

        The VAE's parameters get the gradient of the objective, D held fixed inside it; D's
        parameters get the gradient of D's own loss, its inputs held fixed. One pass of D over
        ``[z, z_perm]`` serves both losses (Kim & Mnih 2018, Algorithm 1): each backward names
        the parameters it may reach, so TC's gradient never lands on D and D's loss never on the
        encoder. The permuted batch is encoded before the VAE's update, by the encoder that
        produced ``z``.
        """
        cfg, obj = self.config, self.objective
        c = capacity(self.step, cfg.c_max, self.ramp)
        eps = torch.randn(len(x), cfg.z_dim, generator=self.g_noise, device=self.device, dtype=self.dtype)
        logits, mu, logvar, z = self.vae(x, eps)
        recon = bernoulli_nll(logits, x).mean()
        kl = gaussian_kl(mu, logvar).mean()
        gap = (kl - c).abs()
        nan = torch.full((), math.nan, device=self.device, dtype=self.dtype)
        tc, acc, d_loss = nan, nan, None
        if self.disc is not None:
            with torch.no_grad():
                mu2, logvar2 = self.vae.encoder(x_other)
                eps2 = torch.randn(mu2.shape, generator=self.g_disc, device=self.device, dtype=self.dtype)
                z_perm = permute_dims(mu2 + torch.exp(0.5 * logvar2) * eps2, self.g_disc)
            d_logits = self.disc(torch.cat([z, z_perm]))
            tc = total_correlation(d_logits[: len(z)])
            d_loss, acc = discriminator_loss(d_logits[: len(z)], d_logits[len(z) :])
        loss = obj.combine(recon, kl, gap, tc)
        self.opt.zero_grad()
        loss.backward(inputs=self.vae_params, retain_graph=d_loss is not None)
        if d_loss is not None:
            self.d_opt.zero_grad()
            d_loss.backward(inputs=self.disc_params)
        terms = torch.stack([loss.detach(), recon.detach(), kl.detach(), tc.detach(), torch.full_like(nan, c),
                             gap.detach(), acc.detach()])
        return torch.cat([terms, gaussian_kl_per_dim(mu.detach(), logvar.detach()).mean(0)])

    @torch.no_grad()
    def evaluate(self) -> dict:
        """The objective on the whole test split, model in eval mode, noise from a fixed per-run stream."""
        cfg, obj = self.config, self.objective
        self.vae.eval()
        g = _generator(cfg.seed, "eval", self.device)
        recon_sum = kl_sum = kl_dims_sum = 0.0
        zs = []
        for start in range(0, len(self.test_images), EVAL_BATCH):
            x = self.test_images[start : start + EVAL_BATCH].to(self.dtype).div_(255.0)
            eps = torch.randn(len(x), cfg.z_dim, generator=g, device=self.device, dtype=self.dtype)
            logits, mu, logvar, z = self.vae(x, eps)
            recon_sum = recon_sum + bernoulli_nll(logits, x).sum()
            kl_sum = kl_sum + gaussian_kl(mu, logvar).sum()
            kl_dims_sum = kl_dims_sum + gaussian_kl_per_dim(mu, logvar).sum(0)
            zs.append(z)
        self.vae.train()
        n = len(self.test_images)
        recon, kl = float(recon_sum) / n, float(kl_sum) / n
        c = capacity(self.step, cfg.c_max, self.ramp)
        gap = abs(kl - c)
        tc = acc = math.nan
        if self.disc is not None:
            z = torch.cat(zs)
            logits_joint = self.disc(z)
            tc = float(total_correlation(logits_joint))
            acc = float(discriminator_loss(logits_joint, self.disc(permute_dims(z, g)))[1])
        loss = obj.combine(recon, kl, gap, tc)
        return {"loss": loss, "recon": recon, "kl": kl, "tc": tc, "capacity": c, "capacity_gap": gap, "disc_acc": acc,
                "kl_dims": (kl_dims_sum / n).tolist()}

    def run_epoch(self) -> EpochResult:
        cfg = self.config
        start = time.perf_counter()
        n, bs = len(self.train_images), cfg.batch_size
        # Orders are drawn on the CPU (same bits on every device) and moved once per epoch:
        # a per-step host-to-device copy would synchronise the GPU at every update.
        order = torch.randperm(n, generator=self.g_data).to(self.device)
        other = torch.randperm(n, generator=self.g_disc_order).to(self.device) if self.disc is not None else None
        totals = torch.zeros(len(TERMS) + cfg.z_dim, device=self.device, dtype=torch.float64)
        for b in range(self.steps_per_epoch):
            x = self.batch_of(self.train_images, order[b * bs : (b + 1) * bs])
            x_other = self.batch_of(self.train_images, other[b * bs : (b + 1) * bs]) if other is not None else None
            totals += self.train_step(x, x_other)
        train = split_terms((totals / self.steps_per_epoch).tolist())
        train_seconds = time.perf_counter() - start
        self.epoch += 1
        eval_start = time.perf_counter()
        test = self.evaluate()
        eval_seconds = time.perf_counter() - eval_start
        rows = [
            self._row("train", train, self.steps_per_epoch * bs, train_seconds),
            self._row("test", test, len(self.test_images), eval_seconds),
        ]
        diverged = not all(math.isfinite(r["loss"]) for r in rows)
        return EpochResult(self.epoch, rows, diverged)

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
