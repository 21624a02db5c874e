"""The training loop: updates, the discriminator's isolation, determinism and the loss identity."""

import math

import pytest
import torch

from bench.config import resolve
from bench.train.trainer import Trainer, conv_layout, exact_float32, stream_seed, train
from models.objectives import (
    bernoulli_nll,
    capacity,
    discriminator_loss,
    gaussian_kl,
    permute_dims,
    total_correlation,
)
from models.presets import PRESETS

MODELS = list(PRESETS)


def images(n, seed=0, size=32, channels=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)


def small(model, seed=0, **overrides):
    values = {"epochs": 2, "batch_size": 16, "z_dim": 6}
    values.update(overrides)
    return resolve(model, "mnist", seed, "smoke", values)


def records(config, n_train=64, n_test=40):
    rows = []
    for result, _ in train(config, images(n_train), images(n_test, seed=1)):
        rows.extend(result.rows)
    return rows


def drop_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.parametrize("model", MODELS)
def test_one_epoch_changes_every_weight_tensor(model):
    trainer = Trainer(small(model), images(32), images(16))
    before = {k: v.clone() for k, v in trainer.vae.state_dict().items()}
    d_before = {k: v.clone() for k, v in trainer.disc.state_dict().items()} if trainer.disc else {}
    trainer.run_epoch()
    for name, value in trainer.vae.state_dict().items():
        assert not torch.equal(value, before[name]), name
    if trainer.disc is not None:
        for name, value in trainer.disc.state_dict().items():
            assert not torch.equal(value, d_before[name]), name


@pytest.mark.parametrize("model", ["factorvae", "cfactorvae"])
def test_discriminator_loss_never_reaches_the_encoder(model):
    """Per update the encoder gets exactly one gradient (the VAE loss) and D exactly one (its own loss)."""
    trainer = Trainer(small(model), images(48), images(16))
    calls = {"encoder": 0, "disc": 0}
    for p in trainer.vae.encoder.parameters():
        p.register_hook(lambda g: calls.__setitem__("encoder", calls["encoder"] + 1))
    for p in trainer.disc.parameters():
        p.register_hook(lambda g: calls.__setitem__("disc", calls["disc"] + 1))
    trainer.run_epoch()  # 3 updates
    assert calls["encoder"] == 3 * len(list(trainer.vae.encoder.parameters()))
    assert calls["disc"] == 3 * len(list(trainer.disc.parameters()))


@pytest.mark.parametrize("model", ["factorvae", "cfactorvae"])
def test_one_discriminator_pass_gives_each_loss_its_own_gradient(model):
    """Worked out the long way: separate passes of D, and autograd.grad of each loss on its own parameters."""
    trainer = Trainer(small(model, dtype="float64"), images(48), images(16))
    x = trainer.batch_of(trainer.train_images, torch.arange(16))
    x_other = trainer.batch_of(trainer.train_images, torch.arange(16, 32))
    noise_state, disc_state = trainer.g_noise.get_state(), trainer.g_disc.get_state()
    cfg, vae, disc = trainer.config, trainer.vae, trainer.disc
    eps = torch.randn(16, cfg.z_dim, generator=trainer.g_noise, dtype=torch.float64)
    logits, mu, logvar, z = vae(x, eps)
    with torch.no_grad():
        mu2, logvar2 = vae.encoder(x_other)
        eps2 = torch.randn(mu2.shape, generator=trainer.g_disc, dtype=torch.float64)
        z_perm = permute_dims(mu2 + torch.exp(0.5 * logvar2) * eps2, trainer.g_disc)
    kl = gaussian_kl(mu, logvar).mean()
    gap = (kl - capacity(0, cfg.c_max, trainer.ramp)).abs()
    # The objective with D as a fixed critic: its gradient on the VAE's parameters only.
    loss = trainer.objective.combine(bernoulli_nll(logits, x).mean(), kl, gap, total_correlation(disc(z)))
    vae_expected = torch.autograd.grad(loss, list(vae.parameters()))
    # D's loss on detached inputs: its gradient on D's parameters only.
    d_loss = discriminator_loss(disc(z.detach()), disc(z_perm))[0]
    disc_expected = torch.autograd.grad(d_loss, list(disc.parameters()))

    trainer.g_noise.set_state(noise_state)
    trainer.g_disc.set_state(disc_state)
    trainer.gradients(x, x_other)
    for param, expected in zip([*vae.parameters(), *disc.parameters()], [*vae_expected, *disc_expected]):
        assert torch.allclose(param.grad, expected, rtol=1e-9, atol=1e-12)


def test_optimizers_step_only_their_own_parameters():
    trainer = Trainer(small("factorvae"), images(32), images(16))
    vae_ids = {id(p) for p in trainer.vae.parameters()}
    d_ids = {id(p) for p in trainer.disc.parameters()}
    opt_ids = {id(p) for p in trainer.opt.params}
    d_opt_ids = {id(p) for p in trainer.d_opt.params}
    assert opt_ids == vae_ids and d_opt_ids == d_ids


@pytest.mark.parametrize("model", MODELS)
def test_same_seed_same_bits(model):
    a = records(small(model, seed=3))
    b = records(small(model, seed=3))
    assert drop_seconds(a) == drop_seconds(b)
    c = records(small(model, seed=4))
    assert drop_seconds(a) != drop_seconds(c)


def test_seed_fixes_the_data_order_for_every_model(monkeypatch):
    seen = {}

    def recording(model):
        order = []
        original = Trainer.batch_of

        def spy(self, images, index):
            order.append(index.tolist())
            return original(self, images, index)

        monkeypatch.setattr(Trainer, "batch_of", spy)
        Trainer(small(model), images(64), images(16)).run_epoch()
        monkeypatch.setattr(Trainer, "batch_of", original)
        return order

    seen["vae"] = recording("vae")
    seen["factorvae"] = recording("factorvae")[0::2]  # every other batch is the discriminator's second one
    assert seen["vae"] == seen["factorvae"]
    assert len(seen["vae"]) == 4


@pytest.mark.parametrize("model", MODELS)
def test_loss_is_the_objective_applied_to_its_terms(model):
    obj = PRESETS[model]
    for row in records(small(model)):
        expected = row["recon"]
        expected += obj.w_kl * row["kl"]
        if obj.w_cap:
            expected += obj.w_cap * row["capacity_gap"]
        if obj.gamma:
            expected += obj.gamma * row["tc"]
        assert row["loss"] == pytest.approx(expected, rel=1e-6), row


@pytest.mark.parametrize("model", MODELS)
def test_rows_mark_absent_terms_nan(model):
    obj = PRESETS[model]
    for row in records(small(model, epochs=1)):
        assert math.isnan(row["tc"]) == (obj.gamma == 0)
        assert math.isnan(row["disc_acc"]) == (obj.gamma == 0)
        assert math.isnan(row["capacity"]) == (obj.w_cap == 0)
        assert math.isfinite(row["recon"]) and math.isfinite(row["kl"])


def test_rows_count_epochs_steps_and_images():
    rows = records(small("cvae", epochs=3), n_train=70, n_test=33)  # 70 // 16 = 4 updates per epoch
    assert [(r["epoch"], r["split"], r["step"]) for r in rows] == [
        (1, "train", 4), (1, "test", 4), (2, "train", 8), (2, "test", 8), (3, "train", 12), (3, "test", 12)
    ]
    assert [r["n_images"] for r in rows] == [64, 33] * 3


def test_capacity_rises_linearly_over_the_run():
    rows = records(small("cvae", epochs=2, c_max=20.0), n_train=64, n_test=16)  # 8 updates, ramp over 8
    train_rows = [r for r in rows if r["split"] == "train"]
    # Mean of C over updates 0..3 and 4..7 of a ramp 20 * t / 8: 20/8 * 1.5 and 20/8 * 5.5.
    assert train_rows[0]["capacity"] == pytest.approx(20 / 8 * 1.5)
    assert train_rows[1]["capacity"] == pytest.approx(20 / 8 * 5.5)
    test_rows = [r for r in rows if r["split"] == "test"]
    assert test_rows[-1]["capacity"] == pytest.approx(20.0)
    assert test_rows[-1]["capacity_gap"] == pytest.approx(abs(test_rows[-1]["kl"] - 20.0))


def test_test_split_matches_a_direct_evaluation():
    """The test row equals the objective recomputed by hand over the whole test set with the same noise."""
    from bench.train.trainer import _generator
    from models.objectives import bernoulli_nll, gaussian_kl

    cfg = small("vae", epochs=1)
    trainer = Trainer(cfg, images(32), images(20, seed=5))
    test_row = trainer.run_epoch().rows[1]
    x = images(20, seed=5).float() / 255
    eps = torch.randn(20, cfg.z_dim, generator=_generator(cfg.seed, "eval", torch.device("cpu")))
    with torch.no_grad():
        logits, mu, logvar, _ = trainer.vae(x, eps)
    assert test_row["recon"] == pytest.approx(bernoulli_nll(logits, x).mean().item(), rel=1e-5)
    assert test_row["kl"] == pytest.approx(gaussian_kl(mu, logvar).mean().item(), rel=1e-5)
    # Per dimension, from the closed form written out again: 0.5 (mu^2 + sigma^2 - 1 - log sigma^2).
    by_hand = (0.5 * (mu**2 + logvar.exp() - 1 - logvar)).mean(0)
    assert test_row["kl_dims"] == pytest.approx(by_hand.tolist(), rel=1e-5, abs=1e-7)
    assert test_row["active_dims"] == int((by_hand > 0.01).sum())


@pytest.mark.parametrize("model", ["cvae", "factorvae"])
def test_the_per_dimension_kls_of_every_row_sum_to_its_kl(model):
    rows = records(small(model, dtype="float64"))
    for row in rows:
        assert len(row["kl_dims"]) == 6
        assert sum(row["kl_dims"]) == pytest.approx(row["kl"], rel=1e-12)
        assert row["active_dims"] == sum(k > 0.01 for k in row["kl_dims"])


def test_stream_seeds_differ_by_stream_and_seed():
    seeds = {stream_seed(s, name) for s in range(3) for name in ("init", "data", "noise")}
    assert len(seeds) == 9
    assert all(0 <= s < 2**63 for s in seeds)


def test_a_diverging_run_stops_and_says_so():
    cfg = small("vae", epochs=5, lr=1e6)
    results = [r for r, _ in train(cfg, images(64), images(16))]
    assert results[-1].diverged
    assert len(results) < 5


def test_too_few_images_for_a_batch():
    with pytest.raises(ValueError, match="fewer than one batch"):
        Trainer(small("vae"), images(8), images(8))


def test_64px_rgb_runs():
    trainer = Trainer(small("cfactorvae", epochs=1), images(32, size=64, channels=3), images(8, size=64, channels=3))
    rows = trainer.run_epoch().rows
    assert all(math.isfinite(r["loss"]) for r in rows)


def test_saved_weights_load_into_a_fresh_model(tmp_path):
    from bench.records import save_weights
    from models.nets import VAE

    trainer = Trainer(small("vae", epochs=1), images(32), images(16))
    trainer.run_epoch()
    path = tmp_path / "_weights" / "run.pt"
    save_weights(path, {"vae": trainer.vae.state_dict()})
    fresh = conv_layout(VAE(6))  # the layout the trainer and bench.eval.saved.load_vae use
    fresh.load_state_dict(torch.load(path)["vae"])
    x, eps = images(4).float() / 255, torch.randn(4, 6)
    with torch.no_grad():
        assert torch.equal(fresh(x, eps)[0], trainer.vae(x, eps)[0])


def test_a_float64_run_is_float64_throughout_and_draws_its_weights_in_float64():
    trainer = Trainer(small("cfactorvae", dtype="float64"), images(32), images(16))
    params = [*trainer.vae.parameters(), *trainer.disc.parameters()]
    assert {p.dtype for p in params} == {torch.float64}
    # Weights drawn in float32 and cast would all survive a round trip through float32.
    assert any(not torch.equal(p.float().double(), p) for p in params)
    rows = trainer.run_epoch().rows
    assert all(math.isfinite(r["loss"]) for r in rows)


def test_float32_and_float64_runs_agree_to_float32_precision_after_one_update():
    single = Trainer(small("vae", epochs=1), images(16), images(16))
    double = Trainer(small("vae", epochs=1, dtype="float64"), images(16), images(16))
    # Same draws where the stream allows it: copy the float32 weights into the float64 model.
    double.vae.load_state_dict({k: v.double() for k, v in single.vae.state_dict().items()})
    x = single.batch_of(single.train_images, torch.arange(16))
    eps = torch.randn(16, 6, generator=torch.Generator().manual_seed(0))
    a = single.vae(x, eps)[0]
    b = double.vae(x.double(), eps.double())[0]
    assert torch.allclose(a.double(), b, rtol=1e-4, atol=1e-4) and b.dtype == torch.float64


def test_float32_on_a_gpu_is_ieee_float32_not_tf32():
    # cuDNN's default for float32 convolutions is TF32; a GPU trainer switches it off for the process.
    conv = torch.backends.cudnn.conv
    before = conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    conv.fp32_precision = "tf32"
    try:
        exact_float32()
        assert (conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision) == ("ieee", "ieee")
    finally:
        conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = before


def test_float32_convolutions_train_channels_last_on_the_cpu_and_float64_ones_do_not():
    def layouts(dtype):
        trainer = Trainer(small("vae", epochs=1, dtype=dtype), images(32), images(16))
        convs = [p for p in trainer.vae.parameters() if p.dim() == 4]
        return ([p.is_contiguous(memory_format=torch.channels_last) for p in convs],
                [p.is_contiguous() for p in convs])

    channels_last, default = layouts("float32")
    assert all(channels_last) and default.count(False) >= 4  # one input channel is both layouts at once
    assert all(layouts("float64")[1])
