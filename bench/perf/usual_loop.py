"""The usual training loop, written plainly: the yardstick ``bench bench --against-usual`` measures ``bench run`` by.

This is how a FactorVAE-style objective is commonly trained: a torchvision-style dataset that
resizes each image as it is fetched, a ``DataLoader``, a second shuffled loader for the
discriminator's batch, three discriminator passes per update (TC, then z and the permuted
batch for D's own loss) and a log line per step. It uses the project's networks and loss
terms, so the two sides differ only in how the loop is run. Seeds are trained one after another.

``python -m bench.perf.usual_loop --model factorvae --seeds 2 --images 12800`` trains one epoch of the
first 12,800 MNIST training images per seed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from bench.config import resolve
from bench.data import datasets as data
from models.nets import VAE, Discriminator
from models.objectives import bernoulli_nll, capacity, gaussian_kl, permute_dims, total_correlation
from models.presets import PRESETS


class ResizedMNIST(Dataset):
    """28x28 digits as PIL images, resized to 32x32 and turned into tensors one at a time."""

    def __init__(self, images):
        self.images = images
        self.transform = transforms.Compose([transforms.Resize(32), transforms.ToTensor()])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i]))


def train_one(model: str, seed: int, images, epochs: int = 1) -> None:
    cfg = resolve(model, "mnist", seed, "paper", {"epochs": epochs})
    objective = PRESETS[model]
    torch.manual_seed(seed)
    dataset = ResizedMNIST(images)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=True)
    disc_loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=True)
    vae, disc = VAE(cfg.z_dim), Discriminator(cfg.z_dim)
    opt = torch.optim.Adam(vae.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    d_opt = torch.optim.Adam(disc.parameters(), lr=cfg.d_lr, betas=(cfg.d_beta1, cfg.d_beta2))
    ramp = epochs * len(loader)
    step = 0
    for epoch in range(epochs):
        for x, x_other in zip(loader, disc_loader):
            logits, mu, logvar, z = vae(x, torch.randn(len(x), cfg.z_dim))
            recon = bernoulli_nll(logits, x).mean()
            kl = gaussian_kl(mu, logvar).mean()
            tc = total_correlation(disc(z)) if objective.uses_discriminator else torch.zeros(())
            loss = objective.combine(recon, kl, (kl - capacity(step, cfg.c_max, ramp)).abs(), tc)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if objective.uses_discriminator:
                with torch.no_grad():
                    mu2, logvar2 = vae.encoder(x_other)
                    z_perm = permute_dims(mu2 + torch.exp(0.5 * logvar2) * torch.randn_like(mu2), torch.default_generator)
                joint, perm = disc(z.detach()), disc(z_perm)
                d_loss = 0.5 * (F.cross_entropy(joint, torch.zeros(len(x), dtype=torch.long))
                                + F.cross_entropy(perm, torch.ones(len(x), dtype=torch.long)))
                d_opt.zero_grad()
                d_loss.backward()
                d_opt.step()
            print(f"seed {seed} epoch {epoch} step {step} loss {loss.item():.3f}", file=sys.stderr)
            step += 1


@click.command()
@click.option("--model", default="factorvae", show_default=True)
@click.option("--seeds", default=2, show_default=True, type=int)
@click.option("--images", default=12_800, show_default=True, type=int, help="first N MNIST training images")
@click.option("--data-root", default=None, help="datasets folder (else $BENCH_DATA)")
def main(model, seeds, images, data_root):
    """Train seeds 0..N-1 of one objective for one epoch with the usual loop."""
    root = data.resolve_root(data_root)
    raw = data.read_idx(Path(root) / "mnist" / "train-images-idx3-ubyte.gz")[:images]
    for seed in range(seeds):
        train_one(model, seed, raw)


if __name__ == "__main__":
    main()
