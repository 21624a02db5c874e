"""Encoder, decoder and total-correlation discriminators, in the paper's and in its code's widths.

``nets="table2"``: the 32x32 networks of Table 2 of the CFactorVAE paper; the 64x64 variant
adds one convolution (paper, section 5.1) so the feature map is again 64 x 4 x 4.
``nets="author"``: the widths of the paper's code (githubgreat886/controllable-factorVAE,
``models.py`` class ``VAE``), which are not Table 2's. Either decoder returns logits; the
author's ``nn.Sigmoid`` output is applied in its loss (``models.objectives``).

Discriminators (``DISCRIMINATORS``): Kim & Mnih (2018)'s MLP, and the author's
``Discriminator`` as it runs, with a working variant of it. docs/recipes.md compares them.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.presets import DISCRIMINATORS

_FEATURES = 64 * 4 * 4
_HIDDEN = 256


def _conv_channels(image_size: int, nets: str = "table2") -> list[int]:
    """Output channels of the encoder's stride-2 convolutions for a square image."""
    if image_size not in (32, 64):
        raise ValueError(f"image size must be 32 or 64, got {image_size}")
    # author: models.py, VAE.encoder_layers, Conv2d(c, 32), Conv2d(32, 64), Conv2d(64, 64) [+ Conv2d(64, 64) at 64x64]
    widths = [32, 32, 64] if nets == "table2" else [32, 64, 64]
    return widths + [64] * (image_size == 64)


class Encoder(nn.Module):
    """q(z|x): convolutions to a 64x4x4 map, then Linear -> 256 -> 2*z (mean, log-variance)."""

    def __init__(self, z_dim: int, channels: int = 1, image_size: int = 32, dtype: torch.dtype | None = None,
                 nets: str = "table2"):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = channels
        for i, out_ch in enumerate(_conv_channels(image_size, nets)):
            # author: models.py, the 64x64 encoder's fourth convolution is followed by nn.LeakyReLU() (slope 0.01)
            act = nn.LeakyReLU() if nets == "author" and i == 3 else nn.ReLU()
            layers += [nn.Conv2d(in_ch, out_ch, 4, stride=2, padding=1, dtype=dtype), act]
            in_ch = out_ch
        self.convs = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(_FEATURES, _HIDDEN, dtype=dtype), nn.ReLU(), nn.Linear(_HIDDEN, 2 * z_dim, dtype=dtype)
        )
        self.z_dim = z_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.convs(x)).chunk(2, dim=1)
        return mu, logvar


class Decoder(nn.Module):
    """p(x|z): Linear z -> 256 -> 64x4x4, transposed convolutions up to the image; Bernoulli logits out."""

    def __init__(self, z_dim: int, channels: int = 1, image_size: int = 32, dtype: torch.dtype | None = None,
                 nets: str = "table2"):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(z_dim, _HIDDEN, dtype=dtype), nn.ReLU(), nn.Linear(_HIDDEN, _FEATURES, dtype=dtype), nn.ReLU()
        )
        # The mirror of the encoder: its channel list reversed, ending at the image channels.
        widths = _conv_channels(image_size, nets)[::-1] + [channels]
        layers: list[nn.Module] = []
        for i, (in_ch, out_ch) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1, dtype=dtype))
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconvs(self.fc(z).view(-1, 64, 4, 4))


class VAE(nn.Module):
    """Encoder and decoder with the reparameterisation z = mu + sigma * eps (paper, section 2).

    ``dtype`` creates the weights in that type, so their initial values are drawn in it
    (not drawn in float32 and cast).
    """

    def __init__(self, z_dim: int, channels: int = 1, image_size: int = 32, dtype: torch.dtype | None = None,
                 nets: str = "table2"):
        super().__init__()
        self.encoder = Encoder(z_dim, channels, image_size, dtype, nets)
        self.decoder = Decoder(z_dim, channels, image_size, dtype, nets)

    def forward(self, x: torch.Tensor, eps: torch.Tensor):
        """Return (logits, mu, logvar, z) for images x and standard-normal noise eps."""
        mu, logvar = self.encoder(x)
        z = mu + torch.exp(0.5 * logvar) * eps
        return self.decoder(z), mu, logvar, z


class Discriminator(nn.Module):
    """D(z), in one of :data:`DISCRIMINATORS`.

    ``kim-mnih``: 6 hidden layers of 1000 with LeakyReLU(0.2) and 2 logits, index 0 for
    'drawn from q(z)', index 1 for 'drawn from prod_j q(z_j)' (Kim & Mnih 2018, appendix).

    ``author``: models.py, ``Discriminator``: Linear(z, 1000) and two Linear(1000, 1000), each
    followed by ``nn.LeakyReLU(True)``, then Linear(1000, 1) and ``nn.ReLU()``. ``True`` lands
    in ``negative_slope``: a slope of 1, the identity, so D is an affine map clipped at 0, one
    non-negative logit of 'drawn from q(z)'.

    ``author-leaky``: the same widths with LeakyReLU(0.2) and no ReLU on the output: one logit,
    the density-ratio estimate log D / (1 - D) that the author's TC term sums.
    """

    def __init__(self, z_dim: int, hidden: int = 1000, depth: int = 6, dtype: torch.dtype | None = None,
                 kind: str = "kim-mnih"):
        super().__init__()
        if kind not in DISCRIMINATORS:
            raise ValueError(f"discriminator must be one of {DISCRIMINATORS}, got {kind!r}")
        if kind != "kim-mnih":
            depth = 3
        slope = {"kim-mnih": 0.2, "author": 1.0, "author-leaky": 0.2}[kind]
        layers: list[nn.Module] = []
        width = z_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden, dtype=dtype), nn.LeakyReLU(slope)]
            width = hidden
        layers.append(nn.Linear(width, 2 if kind == "kim-mnih" else 1, dtype=dtype))
        if kind == "author":
            layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


@torch.no_grad()
def torch04_init_(module: nn.Module) -> nn.Module:
    """Draw every weight and bias again as torch 0.4's ``reset_parameters`` did, module by module.

    U(-1/sqrt(n), 1/sqrt(n)) for weight and bias alike, with n = in_channels * kernel area for a
    convolution *and* a transposed one (``_ConvNd.reset_parameters``), n = in_features for
    ``Linear``. Current torch takes a transposed convolution's fan from its out_channels, so
    the author's last decoder layer (32 -> 1) starts within 0.044 under torch 0.4 against 0.25 now.
    Draws from torch's global generator, in module order, weight before bias.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            n = m.in_channels * math.prod(m.kernel_size)
        elif isinstance(m, nn.Linear):
            n = m.in_features
        else:
            continue
        bound = 1.0 / math.sqrt(n)
        m.weight.uniform_(-bound, bound)
        if m.bias is not None:
            m.bias.uniform_(-bound, bound)
    return module
