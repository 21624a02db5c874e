"""Shapes and sizes of the paper's networks (Table 2) and of the FactorVAE discriminator."""

import pytest
import torch
from torch import nn

from models.nets import VAE, Decoder, Discriminator, Encoder

pytestmark = pytest.mark.fast


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_encoder_32_is_table_2():
    enc = Encoder(z_dim=20, channels=1, image_size=32)
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) and c.padding == (1, 1) for c in convs)
    linears = [m for m in enc.modules() if isinstance(m, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(64 * 4 * 4, 256), (256, 40)]
    # By hand: convs 544 + 16416 + 32832, linears 262400 + 10280.
    assert n_params(enc) == 544 + 16416 + 32832 + 262400 + 10280


def test_decoder_32_is_table_2():
    dec = Decoder(z_dim=20, channels=1, image_size=32)
    linears = [m for m in dec.modules() if isinstance(m, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(20, 256), (256, 64 * 4 * 4)]
    deconvs = [m for m in dec.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(d.in_channels, d.out_channels) for d in deconvs] == [(64, 32), (32, 32), (32, 1)]
    assert n_params(dec) == 5376 + 263168 + 32800 + 16416 + 513
    # Logits out: nothing squashes the last layer.
    assert isinstance(list(dec.modules())[-1], nn.ConvTranspose2d)


@pytest.mark.parametrize("size, channels, n_convs", [(32, 1, 3), (64, 1, 4), (64, 3, 4)])
def test_vae_shapes(size, channels, n_convs):
    vae = VAE(z_dim=10, channels=channels, image_size=size)
    x = torch.rand(5, channels, size, size)
    logits, mu, logvar, z = vae(x, torch.randn(5, 10))
    assert logits.shape == x.shape
    assert mu.shape == logvar.shape == z.shape == (5, 10)
    assert len([m for m in vae.encoder.modules() if isinstance(m, nn.Conv2d)]) == n_convs


def test_reparameterisation_uses_the_given_noise():
    vae = VAE(z_dim=4)
    x = torch.rand(3, 1, 32, 32)
    eps = torch.randn(3, 4)
    _, mu, logvar, z = vae(x, eps)
    assert torch.allclose(z, mu + torch.exp(0.5 * logvar) * eps)
    _, _, _, z0 = vae(x, torch.zeros(3, 4))
    assert torch.allclose(z0, mu)


def test_unsupported_image_size():
    with pytest.raises(ValueError, match="32 or 64"):
        Encoder(10, 1, 28)


def test_discriminator_kim_mnih():
    disc = Discriminator(z_dim=20)
    linears = [m for m in disc.modules() if isinstance(m, nn.Linear)]
    assert [lin.out_features for lin in linears] == [1000] * 6 + [2]
    assert all(a.negative_slope == 0.2 for a in disc.modules() if isinstance(a, nn.LeakyReLU))
    assert n_params(disc) == 21000 + 5 * 1001000 + 2002
    assert disc(torch.randn(7, 20)).shape == (7, 2)
