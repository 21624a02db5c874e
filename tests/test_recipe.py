"""The author recipe: each way the paper's code differs from its text, pinned on tiny tensors.

Expectations are worked out by hand or by a plain transcription of the author's training loop
(githubgreat886/controllable-factorVAE, main.py), never from the harness's own output.
"""

import copy
import math

import pytest
import torch
from torch import nn

from bench.config import RECIPES, parse_overrides, resolve
from bench.train.trainer import Trainer, batch_bounds, train
from models.nets import VAE, Discriminator, torch04_init_
from models.objectives import capacity_gap, permute_dims, staircase_capacity

pytestmark = pytest.mark.fast


def images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 32, 32), generator=g, dtype=torch.uint8)


def author(model, **overrides):
    return resolve(model, "mnist", 0, "smoke", {"z_dim": 4, **overrides}, recipe="author")


def test_the_author_recipe_is_the_authors_argparse_defaults():
    cvae, cfvae, fvae = author("cvae"), author("cfactorvae"), author("factorvae")
    assert (cvae.batch_size, cvae.lr, cvae.d_lr, cvae.d_beta1, cvae.d_beta2) == (128, 1e-3, 1e-3, 0.9, 0.999)
    assert (cvae.w_kl, cvae.w_cap, cvae.gamma) == (0.0, 4.0, 0.0)  # beta 4 on sum_i |KL_i - C|
    assert (cfvae.w_kl, cfvae.w_cap, cfvae.gamma) == (0.0, 1.0, 3.5)  # weight 1, gamma 3.5
    assert (fvae.w_kl, fvae.w_cap, fvae.gamma) == (1.0, 0.0, 3.5)
    assert (author("vae").w_kl, author("betavae").w_kl) == (1.0, 4.0)
    # The described recipe is the dataclass defaults: no key of its own.
    assert RECIPES["described"] == {} and resolve("cvae", "mnist", 0, "paper").recipe == "described"


def test_a_knob_of_the_recipe_is_an_ordinary_setting():
    ablation = resolve("cfactorvae", "mnist", 0, "paper", parse_overrides(["disc=author-leaky", "gamma=0"]), "author")
    assert (ablation.disc, ablation.gamma, ablation.recipe, ablation.nets) == ("author-leaky", 0.0, "author", "author")


def test_the_per_sample_capacity_term_by_hand():
    kl = torch.tensor([1.0, 3.0, 6.0])
    # sample: (|1-2| + |3-2| + |6-2|) / 3 = 2; batch: |10/3 - 2| = 4/3.
    assert capacity_gap(kl, 2.0, "sample").item() == pytest.approx(2.0)
    assert capacity_gap(kl, 2.0, "batch").item() == pytest.approx(4 / 3)


@pytest.mark.parametrize("epoch, expected", [(0, 0.0), (1, 0.5), (49, 24.5), (60, 25.0)])
def test_the_staircase_is_half_a_nat_per_epoch(epoch, expected):
    assert staircase_capacity(epoch, 0.5, 25.0) == expected


def test_the_staircase_holds_within_an_epoch_and_at_its_test_pass():
    trainer = Trainer(author("cvae", batch_size=16, epochs=50), images(40), images(8))  # 3 updates an epoch: 16, 16, 8
    spe = trainer.steps_per_epoch
    assert spe == 3
    for epoch, c in [(0, 0.0), (1, 0.5), (49, 24.5)]:
        assert [trainer.capacity_at(epoch * spe + i) for i in range(spe)] == [c] * spe
        trainer.step, trainer.epoch = (epoch + 1) * spe, epoch + 1  # just after that epoch's updates
        assert trainer.eval_capacity() == c  # the author's test pass takes the epoch's own epoch/2
    rows = [row for result, _ in train(author("cvae", batch_size=16, epochs=2), images(40), images(8))
            for row in result.rows]
    assert [(r["epoch"], r["split"], r["capacity"]) for r in rows] == [
        (1, "train", 0.0), (1, "test", 0.0), (2, "train", 0.5), (2, "test", 0.5)]


def test_an_epoch_of_mnist_is_469_updates_with_a_last_batch_of_96():
    bounds = batch_bounds(60_000, 128, "keep")
    assert len(bounds) == 469 and bounds[-1] == (59_904, 60_000) and bounds[0] == (0, 128)
    assert len(batch_bounds(60_000, 128, "drop")) == 468
    assert batch_bounds(256, 128, "keep") == [(0, 128), (128, 256)]  # nothing left over, nothing added


def test_the_epoch_mean_weighs_the_last_batch_by_its_size(monkeypatch):
    trainer = Trainer(author("vae", batch_size=16), images(40), images(8))  # batches of 16, 16 and 8
    calls = []

    def fake_step(x, x_other):
        calls.append(len(x))
        terms = torch.zeros(7 + 4, dtype=torch.float32)
        terms[0] = {1: 10.0, 2: 20.0, 3: 40.0}[len(calls)]  # the loss of update 1, 2, 3
        return terms

    monkeypatch.setattr(trainer, "train_step", fake_step)
    train_row = trainer.run_epoch().rows[0]
    assert calls == [16, 16, 8]
    # Over images: (16 * 10 + 16 * 20 + 8 * 40) / 40 = 20; over updates it would be 23.33.
    assert train_row["loss"] == pytest.approx(20.0) and train_row["n_images"] == 40 and train_row["step"] == 0


def test_the_authors_discriminator_is_affine_before_its_relu():
    torch.manual_seed(0)
    d = Discriminator(5, dtype=torch.float64, kind="author")
    linears = [m for m in d.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(5, 1000), (1000, 1000), (1000, 1000), (1000, 1)]
    assert isinstance(d.net[-1], nn.ReLU)
    # The composed affine map W z + b of the four layers, multiplied out by hand.
    w, b = torch.eye(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    for m in linears:
        w, b = m.weight @ w, m.weight @ b + m.bias
    z = torch.randn(64, 5, dtype=torch.float64)
    assert torch.allclose(d(z)[:, 0], torch.relu(z @ w[0] + b[0]), rtol=1e-10, atol=1e-12)
    # A working variant of it is not affine: LeakyReLU(0.2) bends it.
    leaky = Discriminator(5, dtype=torch.float64, kind="author-leaky")
    assert not isinstance(leaky.net[-1], nn.ReLU) and leaky(z).shape == (64, 1)
    mid = leaky((z[:32] + z[32:]) / 2)
    assert not torch.allclose(mid, (leaky(z[:32]) + leaky(z[32:])) / 2, rtol=1e-6)


def test_torch_04_initialisation_bounds_of_a_transposed_convolution():
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1)
    now = layer.weight.abs().max().item()
    torch04_init_(layer)
    # torch 0.4: n = in_channels * 4 * 4 = 512, bound 1 / sqrt(512) = 0.0442; current torch: n = 1 * 16, bound 0.25.
    bound = 1 / math.sqrt(512)
    assert layer.weight.abs().max().item() <= bound and layer.bias.abs().max().item() <= bound
    assert layer.weight.abs().max().item() > 0.95 * bound  # 512 draws fill the interval
    assert now > 0.2
    conv = torch04_init_(nn.Conv2d(32, 64, 4))
    assert conv.weight.abs().max().item() <= 1 / math.sqrt(512)
    linear = torch04_init_(nn.Linear(256, 20))
    assert 0.9 / 16 < linear.weight.abs().max().item() <= 1 / 16


def test_the_authors_networks_by_hand():
    vae = VAE(20, 1, 32, nets="author")
    convs = [m for m in vae.encoder.modules() if isinstance(m, nn.Conv2d)]
    deconvs = [m for m in vae.decoder.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 32), (32, 64), (64, 64)]
    assert [(d.in_channels, d.out_channels) for d in deconvs] == [(64, 64), (64, 32), (32, 1)]
    # convs 544 + 32832 + 65600, encoder linears 262400 + 10280, decoder linears 5376 + 263168,
    # deconvs 65600 + 32800 + 513.
    assert sum(p.numel() for p in vae.parameters()) == (544 + 32832 + 65600 + 262400 + 10280 + 5376 + 263168
                                                         + 65600 + 32800 + 513)
    big = VAE(20, 1, 64, nets="author")
    assert isinstance(big.encoder.convs[-1], nn.LeakyReLU) and big.encoder.convs[-1].negative_slope == 0.01


def author_loop_update(vae, disc, opt, opt_d, x, eps, g_disc, w_kl, w_cap, gamma, c, real_codes="before"):
    """One update of main.py's process_fvae, written out: sums over the batch, D(z) taken before the VAE's
    step, then the same images encoded again after it and permuted for D's BCE-with-logits loss.
    ``real_codes="after"`` is the variant that is not the author's: D's real codes from after the step."""
    mu, logvar = vae.encoder(x)
    z = mu + torch.exp(0.5 * logvar) * eps
    p = torch.sigmoid(vae.decoder(z))
    bce = -(x * torch.log(p + 1e-12) + (1 - x) * torch.log(1 - p + 1e-12)).sum()  # torch 0.4's BCECriterion
    kld = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())
    d_z = disc(z)[:, 0]
    loss = bce + w_kl * kld.sum() + w_cap * (kld.sum(1) - c).abs().sum() + gamma * d_z.sum()
    opt.zero_grad()
    loss.backward(inputs=list(vae.parameters()), retain_graph=True)
    opt.step()
    with torch.no_grad():
        mu2, logvar2 = vae.encoder(x)
        eps2 = torch.randn(mu2.shape, generator=g_disc, dtype=mu2.dtype)
        z_perm = permute_dims(mu2 + torch.exp(0.5 * logvar2) * eps2, g_disc)
    if real_codes == "after":
        d_z = disc((mu2 + torch.exp(0.5 * logvar2) * eps).detach())[:, 0]
    d_loss = nn.functional.binary_cross_entropy_with_logits(
        torch.cat([d_z, disc(z_perm)[:, 0]]), torch.cat([torch.ones(len(x)), torch.zeros(len(x))]).double())
    # The author's D_loss.backward() also reaches the encoder through D_z; zero_grad discards that at the next update.
    opt_d.zero_grad()
    d_loss.backward(inputs=list(disc.parameters()))
    opt_d.step()


def run_both(model, real_codes, updates=2):
    """The harness's Trainer and the written-out loop from the same weights and streams; their parameters after."""
    trainer = Trainer(author(model, batch_size=8, dtype="float64", epochs=50), images(24), images(8))
    trainer.step = 3 * trainer.steps_per_epoch  # epoch 3: C = 1.5
    vae, disc = copy.deepcopy(trainer.vae).to(memory_format=torch.contiguous_format), copy.deepcopy(trainer.disc)
    opt, opt_d = torch.optim.Adam(vae.parameters(), 1e-3), torch.optim.Adam(disc.parameters(), 1e-3)
    g_noise, g_disc = torch.Generator(), torch.Generator()
    g_noise.set_state(trainer.g_noise.get_state())
    g_disc.set_state(trainer.g_disc.get_state())
    cfg = trainer.config
    for b in range(updates):
        x = trainer.batch_of(trainer.train_images, torch.arange(8 * b, 8 * b + 8))
        eps = torch.randn(8, 4, generator=g_noise, dtype=torch.float64)
        author_loop_update(vae, disc, opt, opt_d, x, eps, g_disc, cfg.w_kl, cfg.w_cap, cfg.gamma, 1.5, real_codes)
        terms = trainer.train_step(x, None)
    assert terms[4].item() == 1.5  # the recorded C
    return [*trainer.vae.parameters(), *trainer.disc.parameters()], [*vae.parameters(), *disc.parameters()]


@pytest.mark.parametrize("model", ["factorvae", "cfactorvae"])
def test_an_update_is_the_authors_loop_written_out(model):
    harness, loop = run_both(model, "before")
    for got, expected in zip(harness, loop):
        assert torch.allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_ds_update_sees_the_codes_of_before_the_vae_step():
    harness, loop = run_both("factorvae", "after", updates=1)
    n_vae = len(list(VAE(4, 1, 32, nets="author").parameters()))
    assert all(torch.allclose(a, b, rtol=1e-9, atol=1e-12) for a, b in zip(harness[:n_vae], loop[:n_vae]))
    assert not all(torch.allclose(a, b, rtol=1e-6) for a, b in zip(harness[n_vae:], loop[n_vae:]))


def test_a_cvae_record_row_is_recon_plus_4_times_the_per_sample_gap():
    # float64: loss and recon are about 700 nats, whose float32 difference is good to 1e-4 only
    config = author("cvae", batch_size=16, epochs=2, dtype="float64")
    trainer = Trainer(config, images(40), images(24, seed=1))
    rows = [row for _ in range(2) for row in trainer.run_epoch().rows]
    for row in rows:
        assert row["loss"] - row["recon"] == pytest.approx(4 * row["capacity_gap"], rel=1e-9)
    # The test row's gap worked out directly from the encoder: mean_i |KL_i - C| over the 24 test images, C = 0.5.
    with torch.no_grad():
        mu, logvar = trainer.vae.encoder(trainer.test_images.double() / 255)
        kl_i = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    test = rows[-1]
    assert test["split"] == "test" and test["capacity"] == 0.5
    assert test["capacity_gap"] == pytest.approx((kl_i - 0.5).abs().mean().item(), rel=1e-9)
    # Jensen: never below the batch form; equal where every KL_i is on one side of C, up to rounding
    assert test["capacity_gap"] >= abs(test["kl"] - 0.5) * (1 - 1e-12)


def test_while_every_kl_i_exceeds_c_cfactorvae_trains_as_factorvae():
    # Per sample, |KL_i - C| = KL_i - C where KL_i > C: the same gradient as FactorVAE's KL term, so the same weights.
    # The first staircase step has C = 0 and KL_i >= 0, so the first epoch is equal bit for bit, the loss included.
    rows = {}
    for model in ("factorvae", "cfactorvae"):
        trainer = Trainer(author(model, batch_size=16), images(40), images(16, seed=1))
        rows[model] = trainer.run_epoch().rows
        rows[model + "-weights"] = [p.detach().clone() for p in trainer.vae.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(rows["factorvae-weights"], rows["cfactorvae-weights"]))
    for fvae, cfvae in zip(rows["factorvae"], rows["cfactorvae"]):
        assert (fvae["loss"], fvae["recon"], fvae["tc"]) == (cfvae["loss"], cfvae["recon"], cfvae["tc"])
        assert cfvae["capacity_gap"] == pytest.approx(cfvae["kl"], rel=1e-6)
