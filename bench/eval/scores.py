"""A trained run's disentanglement: its encoder's posterior means scored on the dataset's ground truth.

The link between a VAE and :mod:`bench.eval.metrics`, which sees a representation only as a function
from factor values to codes: here that function draws the images of the factors from the
dataset's generative process (:func:`bench.data.datasets.ground_truth`) and encodes them. The posterior
mean is the representation, as in disentanglement_lib; the metrics' generator has a fixed seed
(:data:`bench.config.METRIC_SEED`), so every run is scored on the same samples and votes.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np
import torch

from bench.config import METRIC_COUNTS, METRIC_SEED, RunConfig
from bench.data.datasets import GroundTruth
from bench.eval.metrics import MetricCounts, evaluate
from models.nets import VAE

REPRESENTATION = "posterior mean"
ENCODE_BATCH = 1000


def counts_for(profile: str) -> MetricCounts:
    """The metric sample counts of a profile (disentanglement_lib's for ``paper``)."""
    return MetricCounts(**METRIC_COUNTS.get(profile, {}))


@torch.no_grad()
def encode(vae: VAE, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and log-variances of uint8 images, encoded in batches of :data:`ENCODE_BATCH`.

    The images go to the device and float type of the VAE's weights, scaled to [0, 1] as in training;
    the VAE is put in eval mode for the call and back in the mode it was in.
    """
    weight = next(vae.parameters())
    was_training = vae.training
    vae.eval()
    try:
        parts = [vae.encoder(images[i : i + ENCODE_BATCH].to(weight.device, weight.dtype) / 255.0)
                 for i in range(0, len(images), ENCODE_BATCH)]
    finally:
        vae.train(was_training)
    if not parts:
        empty = weight.new_zeros(0, vae.encoder.z_dim)
        return empty, empty
    return torch.cat([mu for mu, _ in parts]), torch.cat([logvar for _, logvar in parts])


def posterior_means(vae: VAE, truth: GroundTruth):
    """``represent(factors) -> codes``: the images of the factors, drawn and encoded batch by batch."""

    def represent(factors: np.ndarray) -> np.ndarray:
        codes = [encode(vae, truth.images(factors[start : start + ENCODE_BATCH]))[0].double().cpu().numpy()
                 for start in range(0, len(factors), ENCODE_BATCH)]
        return np.concatenate(codes) if codes else np.zeros((0, vae.encoder.z_dim))

    return represent


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def metric_rows(config: RunConfig, vae: VAE, truth: GroundTruth, profile: str, log=_stderr,
                n_jobs: int | None = None) -> list[dict]:
    """The scores of one trained run, as rows of :data:`bench.records.METRICS_SCHEMA`.

    Scoring takes minutes (DCI's trees; BENCHMARKS.md), so ``log`` gets a line after each step. DCI's factors are
    fitted in ``n_jobs`` threads, by default torch's thread count, the share of the machine the run
    was given; the scores do not depend on it.
    """
    counts = counts_for(profile)
    start = time.perf_counter()
    scores = evaluate(posterior_means(vae, truth), truth.factor_sizes, seed=METRIC_SEED, counts=counts,
                      n_jobs=n_jobs or torch.get_num_threads(),
                      progress=lambda line: log(f"{config.run_id} ({config.model} seed {config.seed}) scoring: {line}"))
    seconds = time.perf_counter() - start
    return [{"run_id": config.run_id, "model": config.model, "dataset": config.dataset, "seed": config.seed,
             "metric": metric, "value": float(value), "metric_seed": METRIC_SEED, **dataclasses.asdict(counts),
             "representation": REPRESENTATION, "seconds": seconds}
            for metric, value in scores.items()]
