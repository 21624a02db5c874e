"""Pictures of what a finished run learned: latent traversals, reconstructions and prior samples.

The traversal is drawn in the style of disentanglement_lib and of the CFactorVAE paper's Figures 1
and 2: take a test image's posterior mean, sweep one latent coordinate over evenly spaced values
from -3 to 3 with the others fixed, and decode. One row per latent dimension, ordered by the
dimension's KL to the prior averaged over the test images, largest first, so the dimensions that
carry information come first and the inactive ones (KL at most 0.01 nats) sink to the bottom,
labelled in grey. The prior samples are the paper's Figure 4.

Everything runs on the CPU in the run's own dtype, without sampling except for the prior
samples, which come from a fixed-seed generator: the same weights and images give the same
pixels. The maths (:func:`traversal_values`, :func:`traversal_latents`, :func:`mean_kl_per_dim`,
:func:`kl_order`, :func:`is_active`) needs no files; :func:`render` and
:func:`figures_for_report` read records and weights and write PNG files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.config import ACTIVE_KL, RunConfig
from bench.data import datasets as data
from bench.errors import BenchError
from bench.eval import mosaic
from bench.eval.saved import load_vae
from bench.eval.scores import encode
from bench.paper import picture_label
from bench.records import config_key, config_rank, publish_atomic, read_tree, weights_path
from bench.writable import check_folders
from models.nets import VAE
from models.objectives import gaussian_kl_per_dim

STEPS = 11  # -3, -2.4, ..., 3: the paper's range in steps of 0.6
MOST_STEPS = 101  # 0.06 apart; a row holds one image per step
LIMIT = 3.0  # the paper, section 5.1: traversal "over each individual latent variable dimension from range (-3,3)"
KL_IMAGES = 1000  # test images the per-dimension KL is averaged over
RECONSTRUCTIONS = 10
SAMPLE_GRID = 8  # prior samples drawn: SAMPLE_GRID x SAMPLE_GRID
SAMPLE_SEED = 0  # one seed for every run, so runs with the same latent size decode the same z
COMPARED = ("factorvae", "cfactorvae")  # the pair the paper sets side by side (Figure 2)


def traversal_values(steps: int, limit: float = LIMIT) -> torch.Tensor:
    """``steps`` values evenly spaced from ``-limit`` to ``limit``, both ends included (float64)."""
    return torch.linspace(-limit, limit, steps, dtype=torch.float64)


def traversal_latents(mu: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The latent codes of a traversal around one posterior mean.

    Parameters
    ----------
    mu : torch.Tensor
        Shape ``(d,)``: the posterior mean of one image.
    values : torch.Tensor
        Shape ``(K,)``: the values each coordinate takes in turn.

    Returns
    -------
    torch.Tensor
        Shape ``(d, K, d)`` in mu's dtype: entry ``[j, k]`` is ``mu`` with coordinate ``j``
        replaced by ``values[k]``.
    """
    d, steps = mu.shape[0], values.shape[0]
    codes = mu.expand(d, steps, d).clone()
    dims = torch.arange(d)
    codes[dims, :, dims] = values.to(mu.dtype)
    return codes


def mean_kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Each latent dimension's KL to the standard normal prior, averaged over images, in float64.

    Parameters
    ----------
    mu, logvar : torch.Tensor
        Shape ``(N, d)``: posterior means and log-variances.

    Returns
    -------
    torch.Tensor
        Shape ``(d,)``, nats.
    """
    return gaussian_kl_per_dim(mu.double(), logvar.double()).mean(0)


def kl_order(kl: torch.Tensor) -> list[int]:
    """Dimension indices by KL, largest first; equal KLs keep index order, so the order is always the same."""
    values = kl.tolist()
    return sorted(range(len(values)), key=lambda j: (-values[j], j))


def is_active(kl: torch.Tensor, threshold: float = ACTIVE_KL) -> list[bool]:
    """Per dimension, whether its mean KL exceeds ``threshold`` nats (at or below it the dimension is inactive)."""
    return [value > threshold for value in kl.tolist()]


def row_label(dim: int, kl: float, active: bool) -> str:
    """The label of a traversal row: the dimension and its KL, and "inactive" where it is."""
    return f"z{dim}  {kl:.3f} nats" + ("" if active else ", inactive")


@dataclass(frozen=True)
class Traversal:
    """One image's traversal and the per-dimension KL that orders it.

    Attributes
    ----------
    values : torch.Tensor
        ``(K,)`` float64, the values each coordinate sweeps.
    mu : torch.Tensor
        ``(d,)`` the traversed image's posterior mean.
    kl : torch.Tensor
        ``(d,)`` float64, mean KL per dimension over the first test images (nats).
    order : list of int
        Dimension of each row, top to bottom.
    active : list of bool
        Per dimension (by index, not by row).
    means : torch.Tensor
        ``(d, K, C, H, W)`` Bernoulli means; ``means[j, k]`` decodes coordinate ``j`` at ``values[k]``.
    """

    values: torch.Tensor
    mu: torch.Tensor
    kl: torch.Tensor
    order: list[int]
    active: list[bool]
    means: torch.Tensor


@torch.no_grad()
def decode(vae: VAE, z: torch.Tensor) -> torch.Tensor:
    """Bernoulli means (sigmoid of the decoder's logits) of latent codes ``(..., d)``, shape ``(..., C, H, W)``."""
    flat = z.reshape(-1, z.shape[-1])
    means = torch.sigmoid(vae.decoder(flat))
    return means.reshape(*z.shape[:-1], *means.shape[1:])


def traverse_image(vae: VAE, test: torch.Tensor, image_index: int, steps: int = STEPS) -> Traversal:
    """The traversal of test image ``image_index``, rows ordered by the KL over the first :data:`KL_IMAGES` images.

    Parameters
    ----------
    vae : VAE
        In eval mode, on the CPU.
    test : torch.Tensor
        uint8 test images ``N x C x H x W``; ``0 <= image_index < N``.
    image_index : int
    steps : int
        Values per coordinate, at least 2.
    """
    mu, logvar = encode(vae, test[:KL_IMAGES])
    kl = mean_kl_per_dim(mu, logvar)
    centre = mu[image_index] if image_index < len(mu) else encode(vae, test[image_index : image_index + 1])[0][0]
    values = traversal_values(steps)
    return Traversal(values, centre, kl, kl_order(kl), is_active(kl), decode(vae, traversal_latents(centre, values)))


def reconstruct(vae: VAE, images: torch.Tensor) -> torch.Tensor:
    """Bernoulli means decoded from the posterior means of uint8 images, ``N x C x H x W``."""
    return decode(vae, encode(vae, images)[0])


def prior_samples(vae: VAE, count: int, seed: int = SAMPLE_SEED) -> torch.Tensor:
    """Bernoulli means of ``count`` codes z ~ N(0, I) drawn from a generator seeded with ``seed``."""
    dtype = next(vae.parameters()).dtype
    z_dim = vae.encoder.z_dim
    z = torch.randn(count, z_dim, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return decode(vae, z)


def traversal_panel(traversal: Traversal):
    """The traversal as a labelled grid (rows by KL, columns by value): a :func:`bench.eval.mosaic.grid_panel`."""
    order = traversal.order
    tiles = mosaic.to_tiles(traversal.means[order].numpy())
    labels = [row_label(j, float(traversal.kl[j]), traversal.active[j]) for j in order]
    # Rounded to 2 places, and + 0.0 turns -0.0 into 0, so the middle column of an odd sweep reads 0.
    columns = [f"{round(v, 2) + 0.0:g}" for v in traversal.values.tolist()]
    return mosaic.grid_panel(tiles, labels, columns, [not traversal.active[j] for j in order])


@dataclass(frozen=True)
class LoadedRun:
    """A finished run ready to draw: its configuration, network and test images."""

    config: RunConfig
    vae: VAE
    test: torch.Tensor
    run_id: str

    @property
    def stem(self) -> str:
        return f"{self.config.dataset}-{self.config.model}-seed{self.config.seed}"

    @property
    def caption(self) -> str:
        return f"{picture_label(self.config.model)}, {self.config.dataset}, seed {self.config.seed}"


def _chosen_configs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs of one configuration per (dataset, model), chosen as Table 1 chooses it.

    As in :func:`bench.report.finals.final_epoch_table` for one records folder, the configuration
    with the most finished runs wins, then the most runs, then the most epochs,
    then the larger config key, so the figures show the runs the report's table averages.
    """
    keys = runs["config"].map(config_key)
    keep = pd.Series(False, index=runs.index)
    for _, group in runs.groupby(["dataset", "model"], sort=False):
        mine = keys[group.index]
        ranks = {key: config_rank(group[mine == key], key) for key in mine.unique()}
        keep[group.index[mine == max(ranks, key=ranks.get)]] = True
    return runs[keep]


def select_runs(runs_root: Path, models=None, seeds=None, datasets=None) -> list[dict]:
    """The finished runs with final weights under ``runs_root`` that match the filters.

    Parameters
    ----------
    runs_root : Path
        A records folder.
    models, seeds, datasets : collections of names or seeds, optional
        Keep only these; None keeps all.

    Returns
    -------
    list of dict
        Rows of :func:`bench.records.read_tree`'s ``runs``, sorted by dataset, model and seed;
        one run per (dataset, model, seed), of the configuration :func:`_chosen_configs` picks.
        Empty when none matches.
    """
    return _select(_runs_of(runs_root), models, seeds, datasets)


def _runs_of(runs_root: Path) -> pd.DataFrame:
    """The ``runs`` of :func:`bench.records.read_tree` for a records folder, BenchError if it is none."""
    runs_root = Path(runs_root)
    if not runs_root.is_dir():
        raise BenchError(f"--runs {runs_root}: not a folder; pass the records folder bench run --out wrote")
    return read_tree(runs_root)[1]


def _select(runs: pd.DataFrame, models=None, seeds=None, datasets=None) -> list[dict]:
    """:func:`select_runs` of the runs of a records folder already read."""
    runs = _chosen_configs(runs)
    runs = runs[(runs["status"] == "finished") & runs["path"].map(lambda p: weights_path(Path(p)).is_file())]
    if models is not None:
        runs = runs[runs["model"].isin(list(models))]
    if seeds is not None:
        runs = runs[runs["seed"].isin(list(seeds))]
    if datasets is not None:
        runs = runs[runs["dataset"].isin(list(datasets))]
    return runs.sort_values(["dataset", "model", "seed"]).to_dict("records")


def _load(runs: list[dict], data_root: Path, image_index: int) -> list[LoadedRun]:
    """Every run's network and test images, checking ``image_index`` against each test split."""
    splits: dict[str, torch.Tensor] = {}
    loaded = []
    for run in runs:
        config, vae = load_vae(weights_path(Path(run["path"])))
        subset = (config.train_subset or None, config.test_subset or None)
        key = json.dumps([config.dataset, *subset])
        if key not in splits:
            splits[key] = data.load(config.dataset, data_root, subset).test
        test = splits[key]
        if not 0 <= image_index < len(test):
            raise BenchError(f"--image-index {image_index}: the test split of {config.dataset} {config.model} seed "
                             f"{config.seed} has {len(test)} images; choose 0 to {len(test) - 1}")
        loaded.append(LoadedRun(config, vae, test, run["run_id"]))
    return loaded


def _save(image, path: Path) -> Path:
    publish_atomic(path, lambda tmp: image.save(tmp, format="PNG"))
    return path


def _render_run(run: LoadedRun, out: Path, image_index: int, steps: int):
    """Write one run's traversal, reconstructions and samples; return the paths and the traversal panel."""
    panel = traversal_panel(traverse_image(run.vae, run.test, image_index, steps))
    traversal = mosaic.titled([panel], [f"{run.caption}, test image {image_index}, run {run.run_id}"])
    originals = run.test[:RECONSTRUCTIONS]
    pair = mosaic.to_tiles(np.stack([originals.double().div(255.0).numpy(),
                                     reconstruct(run.vae, originals).double().numpy()]))
    count = len(originals)
    reconstructions = mosaic.titled([mosaic.grid_panel(pair, ["test image", "reconstruction"])],
                                    [f"{run.caption}: test images 0-{count - 1}, decoded from their posterior means"])
    grid = prior_samples(run.vae, SAMPLE_GRID * SAMPLE_GRID).reshape(SAMPLE_GRID, SAMPLE_GRID, *run.test.shape[1:])
    samples = mosaic.titled([mosaic.grid_panel(mosaic.to_tiles(grid.double().numpy()))],
                            [f"{run.caption}: {SAMPLE_GRID * SAMPLE_GRID} samples from the prior (seed {SAMPLE_SEED})"])
    paths = [_save(traversal, out / f"{run.stem}-traversal.png"),
             _save(reconstructions, out / f"{run.stem}-reconstructions.png"),
             _save(samples, out / f"{run.stem}-samples.png")]
    return paths, panel


def render(runs_root: Path, out: Path, data_root: Path, models=None, seeds=None, datasets=None,
           image_index: int = 0, steps: int = STEPS, log=None) -> list[Path]:
    """Write the figures of every matching finished run, and the FactorVAE / CFactorVAE comparisons.

    Per run ``<out>/<dataset>-<model>-seed<s>-traversal.png``, ``-reconstructions.png`` and
    ``-samples.png``; for each dataset and seed with both of :data:`COMPARED`,
    ``<out>/<dataset>-seed<s>-factorvae-vs-cfactorvae.png``. Every run is loaded and checked
    before the first file is written.

    Parameters
    ----------
    runs_root : Path
        A records folder.
    out : Path
        Where the PNG files go; created if missing.
    data_root : Path
        The datasets folder (see :func:`bench.data.datasets.resolve_root`).
    models, seeds, datasets : collections, optional
        Filters; None keeps all.
    image_index : int
        The test image whose latents are traversed.
    steps : int
        Values per coordinate, from -3 to 3; at least 2.
    log : callable, optional
        Called with each path as soon as it is written.

    Returns
    -------
    list of Path
        The files written, in order.

    Raises
    ------
    BenchError
        No such folder, no finished run with weights matching the filters, ``steps`` outside 2 to
        :data:`MOST_STEPS`, ``image_index`` outside a test split, unreadable weights or data, an ``out`` that is not a folder.
    """
    if not 2 <= steps <= MOST_STEPS:
        raise BenchError(f"--steps {steps}: need at least 2 (the ends -3 and 3)" if steps < 2
                         else f"--steps {steps}: at most {MOST_STEPS}")
    if image_index < 0:
        raise BenchError(f"--image-index {image_index}: must be 0 or more")
    runs = select_runs(runs_root, models, seeds, datasets)
    if not runs:
        wanted = [f"{name} {', '.join(map(str, values))}" for name, values in
                  (("model", models), ("seed", seeds), ("dataset", datasets)) if values is not None]
        raise BenchError(f"no finished run with weights under {runs_root}"
                         + (f" matches {'; '.join(wanted)}" if wanted else "") + "; train one with bench run")
    check_folders([out], "pass another --out")  # before the networks and test images are loaded
    loaded = _load(runs, Path(data_root), image_index)
    return _write(loaded, Path(out), image_index, steps, log or (lambda path: None))


def _write(loaded: list[LoadedRun], out: Path, image_index: int, steps: int, log) -> list[Path]:
    """Render every loaded run, then the comparisons, into ``out``; ``log`` each path as it is written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"--out {out}: cannot make this folder ({exc.strerror}); pass another") from None
    written, panels = [], {}
    try:
        for run in loaded:
            paths, panels[run.config.dataset, run.config.seed, run.config.model] = _render_run(run, out, image_index, steps)
            for path in paths:
                log(path)
            written += paths
        for dataset, seed in sorted({(dataset, seed) for dataset, seed, _ in panels}):
            pair = [panels.get((dataset, seed, model)) for model in COMPARED]
            if any(panel is None for panel in pair):
                continue
            titles = [f"{picture_label(model)}, {dataset}, seed {seed}, test image {image_index}" for model in COMPARED]
            path = _save(mosaic.titled(pair, titles), out / f"{dataset}-seed{seed}-{'-vs-'.join(COMPARED)}.png")
            log(path)
            written.append(path)
    except OSError as exc:  # a full disk, or a file there that cannot be replaced
        raise BenchError(f"cannot write {exc.filename or out} ({exc.strerror or exc}); free space or pass another "
                         "--out") from None
    return written


def figures_for_report(records_roots, out_dir: Path, data_root: Path, datasets=None) -> list[Path]:
    """The figures of seed 0 of every model with a finished run and weights, for the report.

    Renders with the defaults (test image 0, :data:`STEPS` steps), plus the FactorVAE /
    CFactorVAE comparison of each dataset where both are there; file names as :func:`render`.

    Parameters
    ----------
    records_roots : Path, or a sequence of them
        Records folders. A model is drawn from the first folder that holds it, weights or not, as
        the report's table takes its row from there.
    out_dir : Path
        Where the PNG files go; created if missing.
    data_root : Path
        The datasets folder.
    datasets : collection of names, optional
        Draw only these; None draws all.

    Returns
    -------
    list of Path
        The files written; empty when no seed-0 run has its weights (committed records often carry none).
    """
    roots = [Path(records_roots)] if isinstance(records_roots, (str, os.PathLike)) else [Path(r) for r in records_roots]
    runs, held = [], set()
    for root in roots:
        recorded = _runs_of(root)
        here = set(zip(recorded["dataset"], recorded["model"])) - held
        chosen = _select(recorded, seeds=[0], datasets=datasets)
        runs += [run for run in chosen if (run["dataset"], run["model"]) in here]
        held |= here
    if not runs:
        return []
    runs.sort(key=lambda run: (run["dataset"], run["model"], run["seed"]))
    return _write(_load(runs, Path(data_root), 0), Path(out_dir), 0, STEPS, lambda path: None)
