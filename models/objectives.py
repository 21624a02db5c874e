"""The terms of the one loss the objectives share, and the discriminator's.

``loss = recon + w_kl * KL + w_cap * |KL - C(t)| + gamma * TC``: the Bernoulli negative
log-likelihood, the Gaussian KL in closed form, the capacity schedule C(t) and the
discriminator's estimate of the total correlation. The five objectives are presets of its
coefficients (:mod:`models.presets`, which says where each comes from).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# torch 0.4's binary cross-entropy added this inside both logs (THNN BCECriterion); later torch clamps logs at -100.
TORCH04_BCE_EPS = 1e-12


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per image: binary cross-entropy with logits summed over pixels. Shape (N,)."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def bernoulli_nll_of_probs(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x|z) per image as the author's code computed it under torch 0.4. Shape (N,).

    Its decoder ends in ``nn.Sigmoid`` and its loss is ``F.binary_cross_entropy`` on those
    probabilities, which torch 0.4 evaluated as -[x log(p + eps) + (1 - x) log(1 - p + eps)]
    with eps = 1e-12: where float32's sigmoid rounds to exactly 0 or 1 against another target,
    a pixel costs at most -log(1e-12) = 27.6 nats, not the infinity of the exact formula.
    """
    p = torch.sigmoid(logits)
    eps = TORCH04_BCE_EPS
    return -(x * torch.log(p + eps) + (1 - x) * torch.log(1 - p + eps)).flatten(1).sum(1)


def gaussian_kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_j, exp(logvar_j)) || N(0, 1)) of each latent dimension j of each image. Shape (N, d).

    The KL of a diagonal Gaussian is the sum of these; a dimension whose mean KL over the data is
    near zero carries no information about the image (an inactive dimension).
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per image (Kingma & Welling 2013, appendix B). Shape (N,)."""
    return gaussian_kl_per_dim(mu, logvar).sum(1)


def capacity(step: int, c_max: float, ramp_steps: int) -> float:
    """C(t) of Burgess et al. (2018): linear from 0 at update 0 to ``c_max`` at ``ramp_steps``, then flat."""
    if ramp_steps <= 0:
        return float(c_max)
    return float(c_max) * min(1.0, step / ramp_steps)


def staircase_capacity(epoch: int, c_step: float, c_max: float) -> float:
    """C of the author's code: ``epoch/2`` passed for every update of 0-based ``epoch`` and for its test pass.

    ``c_step`` nats per epoch (0.5 there), fixed within an epoch, at most ``c_max``.
    """
    return min(float(c_max), float(c_step) * epoch)


def capacity_gap(kl_per_image: torch.Tensor, c, form: str) -> torch.Tensor:
    """The capacity term |KL - C| of a batch, in one of two forms; both are nats per image.

    ``batch``: |mean_i KL_i - C|, the batch's mean KL held at C (Burgess et al. 2018, Eq. 8 on a
    minibatch). ``sample``: mean_i |KL_i - C|, each image's KL held at C, as the author's
    ``controlled_vae_loss`` sums ``torch.abs(kld.sum(1) - C)`` over the batch.
    """
    if form == "sample":
        return (kl_per_image - c).abs().mean()
    return (kl_per_image.mean() - c).abs()


def permute_dims(z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shuffle each latent column independently across the batch: a sample of prod_j q(z_j).

    Kim & Mnih (2018), Algorithm 1. Each column keeps its values; rows are mixed.
    """
    n, d = z.shape
    keys = torch.rand(n, d, generator=generator, device=z.device)
    return torch.gather(z, 0, keys.argsort(dim=0))


def total_correlation(d_logits: torch.Tensor) -> torch.Tensor:
    """TC ~ E_q(z)[log D(z) / (1 - D(z))] (paper Eq. 11), from D's outputs on z ~ q(z).

    Two logits (Kim & Mnih's D): mean(logit_0 - logit_1). One output (the author's D):
    mean_i D(z_i), the author's ``_tc_loss`` ``D(z).sum()`` per image.
    """
    if d_logits.shape[-1] == 1:
        return d_logits[:, 0].mean()
    return (d_logits[:, 0] - d_logits[:, 1]).mean()


def discriminator_loss(logits_joint: torch.Tensor, logits_perm: torch.Tensor):
    """D's loss on z ~ q(z) and on permuted z, and its accuracy. Returns ``(loss, accuracy)``.

    Two logits: cross-entropy with class 0 for z and class 1 for permuted z, the mean of the two
    classes' means. One output (the author's D): ``F.binary_cross_entropy_with_logits`` of
    ``[D(z), D(z_perm)]`` against ``[1, 0]``, the mean over both halves, as in the author's
    ``process_fvae``; an output above 0 counts as 'drawn from q(z)', so a D that outputs 0 on
    everything scores 0.5.
    """
    if logits_joint.shape[-1] == 1:
        joint, perm = logits_joint[:, 0], logits_perm[:, 0]
        logits = torch.cat([joint, perm])
        targets = torch.cat([torch.ones_like(joint), torch.zeros_like(perm)])
        loss = F.binary_cross_entropy_with_logits(logits, targets)
        accuracy = ((joint > 0).sum() + (perm <= 0).sum()) / len(logits)
        return loss, accuracy
    zeros = torch.zeros(len(logits_joint), dtype=torch.long, device=logits_joint.device)
    ones = torch.ones(len(logits_perm), dtype=torch.long, device=logits_perm.device)
    loss = 0.5 * (F.cross_entropy(logits_joint, zeros) + F.cross_entropy(logits_perm, ones))
    correct = (logits_joint.argmax(1) == 0).sum() + (logits_perm.argmax(1) == 1).sum()
    accuracy = correct / (len(logits_joint) + len(logits_perm))
    return loss, accuracy
