"""Each objective's terms on hand-computed tensors."""

import math

import pytest
import torch

from models.objectives import (
    bernoulli_nll,
    capacity,
    discriminator_loss,
    gaussian_kl,
    permute_dims,
    total_correlation,
)
from models.presets import PAPER_MODELS, PRESETS, Objective

pytestmark = pytest.mark.fast


def test_bernoulli_nll_sums_pixels_per_image():
    # Logit 0 gives sigma = 1/2, so every pixel costs log 2 whatever its target: 4 pixels -> 4 log 2.
    logits = torch.zeros(2, 1, 2, 2)
    x = torch.tensor([0.0, 0.3, 1.0, 0.5]).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
    assert torch.allclose(bernoulli_nll(logits, x), torch.full((2,), 4 * math.log(2)))
    # Logit log 3 gives sigma = 3/4: target 1 costs -log(3/4), target 0 costs -log(1/4).
    logits = torch.full((1, 1, 1, 2), math.log(3))
    x = torch.tensor([[[[1.0, 0.0]]]])
    assert bernoulli_nll(logits, x).item() == pytest.approx(-math.log(0.75) - math.log(0.25), rel=1e-6)


def test_gaussian_kl_closed_form():
    # mu = (1, 0), var = (1, 2): 0.5 * [(1 + 1 - 1 - 0) + (0 + 2 - 1 - log 2)] = 1 - 0.5 log 2.
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])
    assert gaussian_kl(mu, logvar).item() == pytest.approx(1 - 0.5 * math.log(2), rel=1e-6)
    # The prior itself has zero divergence.
    assert gaussian_kl(torch.zeros(3, 5), torch.zeros(3, 5)).abs().max().item() == 0.0


def test_gaussian_kl_matches_torch_distributions():
    # A second, independent formula: torch.distributions' KL between diagonal Gaussians.
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    expected = torch.distributions.kl_divergence(q, p).sum(1)
    assert torch.allclose(gaussian_kl(mu, logvar), expected, atol=1e-5)


@pytest.mark.parametrize(
    "step, expected", [(0, 0.0), (25, 6.25), (50, 12.5), (100, 25.0), (250, 25.0)]
)
def test_capacity_ramp(step, expected):
    assert capacity(step, c_max=25.0, ramp_steps=100) == pytest.approx(expected)


def test_capacity_without_ramp_is_the_maximum():
    assert capacity(0, c_max=25.0, ramp_steps=0) == 25.0


def test_permute_dims_keeps_each_column_and_mixes_rows():
    z = torch.arange(64 * 20, dtype=torch.float32).view(64, 20)
    out = permute_dims(z, torch.Generator().manual_seed(0))
    assert out.shape == z.shape
    # Each column holds exactly its own values.
    assert torch.equal(out.sort(dim=0).values, z.sort(dim=0).values)
    # Rows are mixed: almost no original row survives, and columns are shuffled differently.
    survivors = sum(any(torch.equal(r, s) for s in z) for r in out)
    assert survivors <= 1
    assert not torch.equal(out[:, 0] - z[:, 0].min(), out[:, 1] - z[:, 1].min())


def test_total_correlation_is_mean_logit_difference():
    logits = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0]])
    # (2 + 0 - 3) / 3
    assert total_correlation(logits).item() == pytest.approx(-1 / 3)


def test_discriminator_loss_and_accuracy():
    joint = torch.tensor([[0.0, 0.0]])  # p = (1/2, 1/2): CE for class 0 is log 2, argmax 0 is correct
    perm = torch.tensor([[0.0, math.log(3.0)]])  # p = (1/4, 3/4): CE for class 1 is -log 3/4
    loss, acc = discriminator_loss(joint, perm)
    assert loss.item() == pytest.approx(0.5 * (math.log(2) - math.log(0.75)), rel=1e-6)
    assert acc.item() == 1.0
    loss, acc = discriminator_loss(perm, joint)  # both now wrong: perm row says class 1, joint row ties -> 0
    assert acc.item() == 0.0


@pytest.mark.parametrize(
    "model, expected",
    [
        # recon 100, KL 10, |KL - C| 6, TC 0.5
        ("vae", 100 + 10),
        ("betavae", 100 + 4 * 10),
        ("cvae", 100 + 6),
        ("factorvae", 100 + 10 + 6.4 * 0.5),
        ("cfactorvae", 100 + 6 + 6.4 * 0.5),
        ("cvae-burgess", 100 + 1000 * 6),
    ],
)
def test_presets_combine_terms(model, expected):
    assert PRESETS[model].combine(100.0, 10.0, 6.0, 0.5) == pytest.approx(expected)


def test_unused_terms_may_be_nan():
    assert Objective(1.0, 0.0, 0.0).combine(1.0, 2.0, math.nan, math.nan) == 3.0


def test_the_paper_models_are_five_presets_and_cfactorvae_is_cvae_plus_tc():
    assert PAPER_MODELS == ("vae", "betavae", "cvae", "factorvae", "cfactorvae")
    assert set(PAPER_MODELS) < set(PRESETS)
    # Eq. 12 is Eq. 9 (weight 1 on |KL - C|) plus gamma TC: the two presets differ in gamma only.
    assert PRESETS["cfactorvae"] == Objective(PRESETS["cvae"].w_kl, PRESETS["cvae"].w_cap, 6.4)
