"""Latent traversals, reconstructions and prior samples: the maths by hand, the figures end to end.

The KL values, orderings and traversal codes expected here are worked out by hand or by
loops written in this file; the figures' sizes follow from the grid geometry of bench.eval.mosaic.
"""

from __future__ import annotations

import math
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image
from support import DATA_ROOT, needs_mnist, run_bench

from bench.cli import main
from bench.eval.mosaic import GAP, LABEL_WIDTH, LINE, MARGIN, SPACING, cell_origin, to_tiles
from bench.eval.traverse import (
    figures_for_report,
    is_active,
    kl_order,
    mean_kl_per_dim,
    render,
    row_label,
    traversal_latents,
    traversal_panel,
    traversal_values,
    traverse_image,
)
from models.nets import VAE

Z_DIM = 20  # RunConfig's default, which the smoke runs keep
TILE = 64  # MNIST's 32 px, drawn twice as large
STEPS = 7
INDEX = 3
TEST_IMAGES = 32


@pytest.mark.fast
def test_traversal_values_run_from_minus_three_to_three():
    assert traversal_values(11).tolist() == pytest.approx([-3 + 0.6 * k for k in range(11)], abs=1e-12)
    assert traversal_values(2).tolist() == [-3.0, 3.0]


@pytest.mark.fast
def test_traversal_latents_replace_one_coordinate_each():
    mu = torch.tensor([0.5, -1.0, 2.0, 0.25], dtype=torch.float64)
    values = traversal_values(5)
    codes = traversal_latents(mu, values)
    assert codes.shape == (4, 5, 4)
    for j in range(4):
        for k in range(5):
            expected = [values[k].item() if i == j else mu[i].item() for i in range(4)]
            assert codes[j, k].tolist() == expected
        assert codes[j, 0, j] == -3.0 and codes[j, -1, j] == 3.0
    assert mu.tolist() == [0.5, -1.0, 2.0, 0.25]  # the mean itself is left alone


# Two images, five dimensions. KL_j = (mu^2 + sigma^2 - 1 - log sigma^2) / 2, averaged over the images:
#   z0: mu = +-1, sigma^2 = 1       -> 1/2
#   z1: mu = 0,   sigma^2 = 4       -> (4 - 1 - ln 4) / 2 = 3/2 - ln 2 = 0.8069
#   z2: mu = 0,   sigma^2 = 1       -> 0                                        (inactive)
#   z3: mu = 0.1, sigma^2 = 1       -> 0.01 / 2 = 0.005                         (inactive)
#   z4: mu = 0.2 and 0, sigma^2 = 1 -> (0.04 / 2 + 0) / 2 = 0.01                (inactive: at most 0.01)
HAND_MU = [[1.0, 0.0, 0.0, 0.1, 0.2], [-1.0, 0.0, 0.0, 0.1, 0.0]]
HAND_LOGVAR = [[0.0, math.log(4.0), 0.0, 0.0, 0.0]] * 2
HAND_KL = [0.5, 1.5 - math.log(2.0), 0.0, 0.005, 0.01]
HAND_ORDER = [1, 0, 4, 3, 2]
HAND_ACTIVE = [True, True, False, False, False]


@pytest.mark.fast
def test_kl_order_and_inactive_dimensions_by_hand():
    kl = mean_kl_per_dim(torch.tensor(HAND_MU), torch.tensor(HAND_LOGVAR))
    assert kl.dtype == torch.float64
    assert kl.tolist() == pytest.approx(HAND_KL, abs=1e-7)
    assert kl_order(kl) == HAND_ORDER
    assert is_active(torch.tensor([0.5, 0.8069, 0.0, 0.005, 0.01], dtype=torch.float64)) == HAND_ACTIVE
    assert is_active(torch.tensor([0.0100001])) == [True]
    assert kl_order(torch.tensor([1.0, 2.0, 1.0, 2.0])) == [1, 3, 0, 2]  # ties keep index order
    assert row_label(4, 0.01, False) == "z4  0.010 nats, inactive" and row_label(1, 0.8069, True) == "z1  0.807 nats"


def hand_vae(mu, logvar) -> VAE:
    """A VAE whose encoder gives every image the posterior (mu, logvar), with a random decoder."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = VAE(len(mu), 1, 32, torch.float64).eval()
    last = vae.encoder.head[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([*mu, *logvar], dtype=torch.float64))
    return vae


def expected_tile(vae: VAE, z: list[float]) -> np.ndarray:
    """The 64 x 64 RGB tile of one code: sigmoid of the logits, to 0..255, each pixel drawn as 2 x 2."""
    with torch.no_grad():
        means = torch.sigmoid(vae.decoder(torch.tensor([z], dtype=torch.float64)))[0, 0].numpy()
    grey = np.rint(means * 255).astype(np.uint8)
    return np.repeat(np.kron(grey, np.ones((2, 2), dtype=np.uint8))[:, :, None], 3, axis=2)


@pytest.mark.fast
def test_tiles_are_8_bit_rgb_at_least_64_pixels_high():
    grey = np.array([[[[0.0, 1.0], [0.5, 0.2]]]])  # one 2 x 2 grey image
    tiles = to_tiles(grey)
    assert tiles.shape == (1, 64, 64, 3) and tiles.dtype == np.uint8
    assert tiles[0, 0, 0].tolist() == [0, 0, 0] and tiles[0, 0, 63].tolist() == [255, 255, 255]
    assert tiles[0, 63, 0].tolist() == [128, 128, 128] and tiles[0, 63, 63].tolist() == [51, 51, 51]  # 127.5, 51
    colour = np.random.default_rng(0).random((2, 3, 64, 64))
    np.testing.assert_array_equal(to_tiles(colour), np.rint(colour * 255).astype(np.uint8).transpose(0, 2, 3, 1))


@pytest.mark.fast
def test_traversal_of_a_hand_built_vae(monkeypatch):
    # KL per dimension: mu^2 / 2 for the means, (e^lv - 1 - lv) / 2 for the log-variances.
    mu, logvar = [0.3, -2.0, 0.0, 1.0], [0.0, 0.0, 0.0, math.log(0.25)]
    kl = [0.045, 2.0, 0.0, (1.0 + 0.25 - 1.0 - math.log(0.25)) / 2]
    vae = hand_vae(mu, logvar)
    images = torch.randint(0, 256, (6, 1, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    traversal = traverse_image(vae, images, 2, 5)
    assert traversal.kl.tolist() == pytest.approx(kl, abs=1e-12)
    assert traversal.order == [1, 3, 0, 2] and traversal.active == [True, True, False, True]
    assert traversal.mu.tolist() == mu
    assert traversal.means.shape == (4, 5, 1, 32, 32)
    monkeypatch.setattr("bench.eval.traverse.KL_IMAGES", 4)  # an image past those the KL is averaged over
    beyond = traverse_image(vae, images, 5, 5)
    assert beyond.mu.tolist() == mu and beyond.kl.tolist() == pytest.approx(kl, abs=1e-12)

    panel = np.asarray(traversal_panel(traversal))
    assert panel.shape == (LINE + 4 * TILE + 3 * GAP, LABEL_WIDTH + 5 * TILE + 4 * GAP, 3)
    labels = [panel[LINE + row * (TILE + GAP) : LINE + row * (TILE + GAP) + TILE, :LABEL_WIDTH] for row in range(4)]
    assert [label.min() for label in labels[:3]] == [0, 0, 0]  # black text
    assert 150 <= labels[3].min() < 255  # the inactive dimension's label: grey text
    values = [-3.0, -1.5, 0.0, 1.5, 3.0]
    for row, dim in enumerate([1, 3, 0, 2]):
        for column, value in enumerate(values):
            x, y = cell_origin(row, column, TILE, TILE, True, True)
            z = [value if i == dim else mu[i] for i in range(4)]
            np.testing.assert_array_equal(panel[y : y + TILE, x : x + TILE], expected_tile(vae, z))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Finished FactorVAE and CFactorVAE runs of one update (64 train and 32 test images), seed 0, with weights."""
    out = tmp_path_factory.mktemp("runs")
    run_bench("run", "--models", "factorvae,cfactorvae", "--seeds", "1", "--profile", "smoke", "--epochs", "1",
              "--subset", f"64,{TEST_IMAGES}", "--datasets", "mnist", "--out", out, timeout=300, check=True)
    return out


@pytest.fixture(scope="module")
def cli(runs, tmp_path_factory):
    """``bench traverse`` on good input and on two bad ones: {case: (exit code, stdout, stderr)}, and the folders.

    The three processes run at once: each spends most of its time importing torch.
    """
    out, bad = tmp_path_factory.mktemp("figures"), tmp_path_factory.mktemp("bad") / "figures"
    commands = {
        "ok": ["--runs", str(runs), "--model", "factorvae", "--model", "cfactorvae,factorvae", "--seed", "0",
               "--dataset", "mnist", "--steps", str(STEPS), "--image-index", str(INDEX), "--out", str(out)],
        "not a folder": ["--runs", str(runs / "missing"), "--out", str(bad)],
        f"--image-index {TEST_IMAGES}: the test split": ["--runs", str(runs), "--image-index", str(TEST_IMAGES),
                                                         "--out", str(bad)],
    }
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        done = {case: pool.submit(run_bench, "traverse", *args, timeout=300) for case, args in commands.items()}
    results = {case: (d.result().returncode, d.result().stdout, d.result().stderr) for case, d in done.items()}
    return out, bad, results


def size(path):
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        return image.size


@needs_mnist
def test_cli_writes_every_figure_at_the_size_of_its_grid(cli):
    out, _, results = cli
    code, stdout, stderr = results["ok"]
    assert code == 0, stderr
    names = [f"mnist-{model}-seed0-{kind}.png" for model in ("cfactorvae", "factorvae")
             for kind in ("traversal", "reconstructions", "samples")] + ["mnist-seed0-factorvae-vs-cfactorvae.png"]
    assert stdout.splitlines() == [f"wrote {out / name}" for name in names]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)

    # A panel with row labels: the label column, then the tiles; a figure adds its margins and a title line.
    traversal = (LABEL_WIDTH + STEPS * TILE + (STEPS - 1) * GAP, LINE + Z_DIM * TILE + (Z_DIM - 1) * GAP)
    for model in ("factorvae", "cfactorvae"):
        assert size(out / f"mnist-{model}-seed0-traversal.png") == (traversal[0] + 2 * MARGIN,
                                                                    traversal[1] + 2 * MARGIN + LINE)
        assert size(out / f"mnist-{model}-seed0-reconstructions.png") == (
            LABEL_WIDTH + 10 * TILE + 9 * GAP + 2 * MARGIN, 2 * TILE + GAP + 2 * MARGIN + LINE)
        assert size(out / f"mnist-{model}-seed0-samples.png") == (8 * TILE + 7 * GAP + 2 * MARGIN,
                                                                  8 * TILE + 7 * GAP + 2 * MARGIN + LINE)
    assert size(out / "mnist-seed0-factorvae-vs-cfactorvae.png") == (2 * traversal[0] + SPACING + 2 * MARGIN,
                                                                       traversal[1] + 2 * MARGIN + LINE)


@needs_mnist
def test_same_weights_give_the_same_pixels(runs, cli, tmp_path):
    out, _, _ = cli
    again = render(runs, tmp_path, DATA_ROOT, models=["factorvae"], seeds=[0], image_index=INDEX, steps=STEPS)
    assert [p.name for p in again] == [f"mnist-factorvae-seed0-{kind}.png"
                                       for kind in ("traversal", "reconstructions", "samples")]
    for path in again:
        with Image.open(path) as mine, Image.open(out / path.name) as theirs:
            np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))


@needs_mnist
def test_figures_for_report_draw_seed_0_and_the_comparison(runs, tmp_path):
    paths = figures_for_report(runs, tmp_path / "figures", DATA_ROOT)
    assert [p.name for p in paths][-1] == "mnist-seed0-factorvae-vs-cfactorvae.png"
    assert len(paths) == 7 and all(p.is_file() for p in paths)
    # Records without their weights (as committed records are) draw nothing and are no error.
    bare = shutil.copytree(runs, tmp_path / "bare", ignore=shutil.ignore_patterns("_weights"))
    assert figures_for_report(bare, tmp_path / "none", DATA_ROOT) == []


@needs_mnist
def test_figures_for_report_draw_each_model_from_the_first_folder_that_holds_it(runs, tmp_path):
    # FactorVAE in one folder, CFactorVAE in another: both drawn, and compared across the folders.
    factor = shutil.copytree(runs, tmp_path / "factor", ignore=shutil.ignore_patterns("cfactorvae"))
    cfactor = shutil.copytree(runs, tmp_path / "cfactor", ignore=shutil.ignore_patterns("factorvae"))
    paths = figures_for_report([factor, cfactor], tmp_path / "both", DATA_ROOT)
    assert [p.name for p in paths] == [f"mnist-{model}-seed0-{kind}.png" for model in ("cfactorvae", "factorvae")
                                       for kind in ("traversal", "reconstructions", "samples")] + [
        "mnist-seed0-factorvae-vs-cfactorvae.png"]
    # A model the first folder holds without weights is not drawn from a later folder that has them:
    # the table's row is the first folder's run.
    bare = shutil.copytree(factor, tmp_path / "bare", ignore=shutil.ignore_patterns("_weights"))
    paths = figures_for_report([bare, runs], tmp_path / "one", DATA_ROOT)
    assert [p.name for p in paths] == [f"mnist-cfactorvae-seed0-{kind}.png"
                                       for kind in ("traversal", "reconstructions", "samples")]
    assert figures_for_report([bare, runs], tmp_path / "none", DATA_ROOT, datasets=["dsprites"]) == []


def one_line_error(code, stdout, stderr, expected):
    assert code == 2, stderr
    assert stdout == "" and len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("bench: error: ") and expected in stderr, stderr


@needs_mnist
def test_bad_input_in_a_process_of_its_own(cli):
    _, bad, results = cli
    for expected in ("not a folder", f"--image-index {TEST_IMAGES}: the test split"):
        one_line_error(*results[expected], expected)
    assert not bad.exists()


@needs_mnist
def test_bad_input_through_the_entry_point(runs, tmp_path, capsys):
    # The same entry point as the processes above, called here: a process each would cost seconds of imports.
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    cases = {
        "no finished run with weights": ["--model", "vae"],
        "--steps 1: need at least 2": ["--steps", "1"],
        "unknown model 'fvae'": ["--model", "fvae"],
        "--image-index -1: must be 0 or more": ["--image-index", "-1"],
        "unknown dataset 'mnst'": ["--dataset", "mnst"],
        f"{a_file / 'figures'} cannot be made: {a_file} is not a folder": ["--out", str(a_file / "figures")],
        "Missing option '--runs'": None,
    }
    for expected, args in cases.items():
        argv = ["traverse"] if args is None else ["traverse", "--runs", str(runs), "--data-root", str(DATA_ROOT), *args]
        if "--out" not in argv and args is not None:
            argv += ["--out", str(tmp_path / "figures")]
        with pytest.raises(SystemExit) as exit:
            main(argv)
        captured = capsys.readouterr()
        one_line_error(exit.value.code, captured.out, captured.err, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.fast
def test_pictures_title_models_from_the_one_label_map_in_the_ascii_their_font_draws():
    from bench.paper import LABELS, picture_label

    assert picture_label("betavae") == "beta-VAE" and picture_label("cfactorvae") == "CFactorVAE"
    assert all(picture_label(m).isascii() and picture_label(m) in LABELS[m].replace("β", "beta") for m in LABELS)
