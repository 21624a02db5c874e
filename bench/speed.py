"""Training throughput of each objective: images per second of full update steps."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .config import resolve
from .engine import Trainer


@dataclass(frozen=True)
class Throughput:
    model: str
    device: str
    threads: int
    batch_size: int
    steps: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.steps * self.batch_size / self.seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: str, device: str = "cpu", batch_size: int = 64, steps: int = 50, warmup: int = 20,
            image_size: int = 32, channels: int = 1) -> Throughput:
    """Time ``steps`` update steps (VAE update plus, where the objective has one, the discriminator's).

    Pixel content does not change the cost, so the images are random; the timing includes moving
    each batch to the device and scaling it, as in training.
    """
    cfg = resolve(model, "mnist", 0, "paper", {"batch_size": batch_size})
    g = torch.Generator().manual_seed(0)
    n = batch_size * (steps + warmup)
    images = torch.randint(0, 256, (n, channels, image_size, image_size), generator=g, dtype=torch.uint8)
    trainer = Trainer(cfg, images, images[:batch_size], device)
    order = torch.arange(n, device=trainer.device)
    batches = [order[i * batch_size:(i + 1) * batch_size] for i in range(steps + warmup)]

    def step(index):
        x = trainer.batch_of(trainer.train_images, index)
        other = trainer.batch_of(trainer.train_images, index.flip(0)) if trainer.disc is not None else None
        return trainer.train_step(x, other)

    for index in batches[:warmup]:
        step(index)
    _sync(trainer.device)
    start = time.perf_counter()
    for index in batches[warmup:]:
        step(index)
    _sync(trainer.device)
    seconds = time.perf_counter() - start
    return Throughput(model, str(trainer.device), torch.get_num_threads(), batch_size, steps, seconds)
