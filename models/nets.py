"""Encoder, decoder and total-correlation discriminator.

The 32x32 networks follow Table 2 of the CFactorVAE paper exactly; the 64x64
variant adds one convolution (paper, section 5.1) so the feature map is again
64 x 4 x 4. The discriminator is the one of Kim & Mnih (2018), appendix: an MLP
with 6 hidden layers of 1000 units and LeakyReLU(0.2).
"""

from __future__ import annotations

import torch
from torch import nn

_FEATURES = 64 * 4 * 4
_HIDDEN = 256


def _conv_channels(image_size: int) -> list[int]:
    """Output channels of the encoder's stride-2 convolutions for a square image."""
    if image_size == 32:
        return [32, 32, 64]
    if image_size == 64:
        return [32, 32, 64, 64]
    raise ValueError(f"image size must be 32 or 64, got {image_size}")


class Encoder(nn.Module):
    """q(z|x): convolutions to a 64x4x4 map, then Linear -> 256 -> 2*z (mean, log-variance)."""

    def __init__(self, z_dim: int, channels: int = 1, image_size: int = 32, dtype: torch.dtype | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = channels
        for out_ch in _conv_channels(image_size):
            layers += [nn.Conv2d(in_ch, out_ch, 4, stride=2, padding=1, dtype=dtype), nn.ReLU()]
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

    def __init__(self, z_dim: int, channels: int = 1, image_size: int = 32, dtype: torch.dtype | None = None):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(z_dim, _HIDDEN, dtype=dtype), nn.ReLU(), nn.Linear(_HIDDEN, _FEATURES, dtype=dtype), nn.ReLU()
        )
        # The mirror of the encoder: its channel list reversed, ending at the image channels.
        widths = _conv_channels(image_size)[::-1] + [channels]
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

    def __init__(self, z_dim: int, channels: int = 1, image_size: int = 32, dtype: torch.dtype | None = None):
        super().__init__()
        self.encoder = Encoder(z_dim, channels, image_size, dtype)
        self.decoder = Decoder(z_dim, channels, image_size, dtype)

    def forward(self, x: torch.Tensor, eps: torch.Tensor):
        """Return (logits, mu, logvar, z) for images x and standard-normal noise eps."""
        mu, logvar = self.encoder(x)
        z = mu + torch.exp(0.5 * logvar) * eps
        return self.decoder(z), mu, logvar, z


class Discriminator(nn.Module):
    """D(z): 2 logits, index 0 for 'drawn from q(z)', index 1 for 'drawn from prod_j q(z_j)'."""

    def __init__(self, z_dim: int, hidden: int = 1000, depth: int = 6, dtype: torch.dtype | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        width = z_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden, dtype=dtype), nn.LeakyReLU(0.2)]
            width = hidden
        layers.append(nn.Linear(width, 2, dtype=dtype))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
