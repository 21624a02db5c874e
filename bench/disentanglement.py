"""A trained run's disentanglement: its encoder's posterior means scored on the dataset's ground truth.

The link between a VAE and :mod:`bench.metrics`, which sees a representation only as a function
from factor values to codes: here that function draws the images of the factors from the
dataset's generative process (:func:`bench.data.ground_truth`) and encodes them. The posterior
mean is the representation, as in disentanglement_lib; the metrics' generator has a fixed seed
(:data:`bench.config.METRIC_SEED`), so every run is scored on the same samples and votes.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from models.nets import VAE

from .config import METRIC_COUNTS, METRIC_SEED, RunConfig
from .data import GroundTruth
from .metrics import MetricCounts, evaluate

REPRESENTATION = "posterior mean"
ENCODE_BATCH = 1000


def counts_for(profile: str) -> MetricCounts:
    """The metric sample counts of a profile (disentanglement_lib's for ``paper``)."""
    return MetricCounts(**METRIC_COUNTS.get(profile, {}))


def posterior_means(vae: VAE, truth: GroundTruth, device: torch.device | str, dtype: torch.dtype):
    """``represent(factors) -> codes``: the images of the factors, drawn and encoded in batches."""

    @torch.no_grad()
    def represent(factors: np.ndarray) -> np.ndarray:
        was_training = vae.training
        vae.eval()
        codes = []
        for start in range(0, len(factors), ENCODE_BATCH):
            images = truth.images(factors[start : start + ENCODE_BATCH]).to(device)
            mu, _ = vae.encoder(images.to(dtype).div_(255.0))
            codes.append(mu.double().cpu().numpy())
        vae.train(was_training)
        return np.concatenate(codes) if codes else np.zeros((0, vae.encoder.z_dim))

    return represent


def metric_rows(config: RunConfig, vae: VAE, truth: GroundTruth, profile: str, device="cpu") -> list[dict]:
    """The four scores of one trained run, as rows of :data:`bench.records.METRICS_SCHEMA`."""
    counts = counts_for(profile)
    start = time.perf_counter()
    scores = evaluate(posterior_means(vae, truth, device, getattr(torch, config.dtype)), truth.factor_sizes,
                      seed=METRIC_SEED, counts=counts)
    seconds = time.perf_counter() - start
    return [{"run_id": config.run_id, "model": config.model, "dataset": config.dataset, "seed": config.seed,
             "metric": metric, "value": float(value), "metric_seed": METRIC_SEED, **dataclasses.asdict(counts),
             "representation": REPRESENTATION, "seconds": seconds}
            for metric, value in scores.items()]
