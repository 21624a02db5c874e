"""The objectives as presets of one loss, and the names of the networks' kinds, without torch.

Every objective of the paper is a special case of

    loss = recon + w_kl * KL + w_cap * |KL - C(t)| + gamma * TC

where each term is a per-image sum averaged over the batch, ``recon`` is the
Bernoulli negative log-likelihood, ``KL`` is KL(q(z|x) || N(0, I)) in closed
form, ``C(t)`` is the controlled capacity at update ``t`` and ``TC`` is the
discriminator's density-ratio estimate of the total correlation.

=============  =====  =====  =====  ==========================================
objective      w_kl   w_cap  gamma  source
=============  =====  =====  =====  ==========================================
vae            1      0      0      paper Eq. 4 (Kingma & Welling 2013)
betavae        4      0      0      paper Eq. 5 (Higgins et al. 2016, beta=4)
cvae           0      1      0      paper Eq. 9, the paper's own weight (below)
factorvae      1      0      6.4    paper Eq. 10-11 (Kim & Mnih 2018, gamma=6.4)
cfactorvae     0      1      6.4    paper Eq. 12 (weight 1 on |KL - C| as written)
cvae-burgess   0      1000   0      Burgess et al. (2018), gamma=1000; not in the paper
=============  =====  =====  =====  ==========================================

Why ``cvae`` has weight 1, not Burgess et al.'s 1000: the paper's Table 1 gives train
loss minus train recon loss of 0.86 nats for its CVAE (125.75 - 124.89) and 0.67 for
CFactorVAE, whose Eq. 12 is Eq. 9 with weight 1 plus gamma TC. With weight 1000 that
difference is 1000 * |KL - C|, and |KL - C| on a minibatch never stays below about
0.1 nats, so it is hundreds of nats (483 in our 5-epoch MNIST runs). With weight 1 it is
|KL - C| itself, about 1 nat: the paper's CVAE used a weight near 1.

The configuration, ``bench report`` and ``bench check`` import this module rather than
:mod:`models.objectives` and :mod:`models.nets`, so that they start without loading torch.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

# models.nets: the networks' widths, the discriminators and the initialisations it builds.
NETS = ("table2", "author")
DISCRIMINATORS = ("kim-mnih", "author", "author-leaky")
INITS = ("torch", "torch0.4")


@dataclass(frozen=True)
class Objective:
    """Coefficients of ``recon + w_kl*KL + w_cap*|KL - C| + gamma*TC``."""

    w_kl: float
    w_cap: float
    gamma: float

    @property
    def uses_capacity(self) -> bool:
        return self.w_cap != 0

    @property
    def uses_discriminator(self) -> bool:
        return self.gamma != 0

    def combine(self, recon, kl, capacity_gap, tc):
        """The loss from its terms; a term whose weight is the number zero is not evaluated (it may be NaN).

        The weights may also be tensors of one weight per run (a vectorised stack's): every term is
        then evaluated, elementwise.
        """
        loss = recon
        for weight, term in ((self.w_kl, kl), (self.w_cap, capacity_gap), (self.gamma, tc)):
            if not isinstance(weight, numbers.Number) or weight != 0:  # a tensor is not a numbers.Number
                loss = loss + weight * term
        return loss


PRESETS: dict[str, Objective] = {
    "vae": Objective(w_kl=1.0, w_cap=0.0, gamma=0.0),
    "betavae": Objective(w_kl=4.0, w_cap=0.0, gamma=0.0),
    "cvae": Objective(w_kl=0.0, w_cap=1.0, gamma=0.0),
    "factorvae": Objective(w_kl=1.0, w_cap=0.0, gamma=6.4),
    "cfactorvae": Objective(w_kl=0.0, w_cap=1.0, gamma=6.4),
    "cvae-burgess": Objective(w_kl=0.0, w_cap=1000.0, gamma=0.0),
}
# The paper's objectives as its code trains them (githubgreat886/controllable-factorVAE, main.py): the loss
# functions and argparse defaults the model names reach. Its capacity and TC terms take other forms
# (per-sample |KL_i - C|, the author's discriminator), set by the author recipe (bench.config.RECIPES).
AUTHOR_PRESETS: dict[str, Objective] = {
    # `--model bvae`: beta_vae_loss, bce + beta * KL; beta 1 is the VAE, beta 4 the argparse default.
    "vae": Objective(w_kl=1.0, w_cap=0.0, gamma=0.0),
    "betavae": Objective(w_kl=4.0, w_cap=0.0, gamma=0.0),
    # `--model cvae`: controlled_vae_loss, bce + beta * sum_i |KL_i - C|, beta = 4 (argparse default).
    "cvae": Objective(w_kl=0.0, w_cap=4.0, gamma=0.0),
    # `--model factorvae`: factor_vae_loss, bce + KL + gamma * sum_i D(z_i); `--gamma` is declared
    # type=int with default 3.5, and argparse converts only string defaults, so gamma is 3.5.
    "factorvae": Objective(w_kl=1.0, w_cap=0.0, gamma=3.5),
    # `--model cfactorvae`: controlled_factor_vae_loss, bce + sum_i |KL_i - C| + gamma * sum_i D(z_i).
    "cfactorvae": Objective(w_kl=0.0, w_cap=1.0, gamma=3.5),
}
# The five objectives the paper compares: what ``--models all`` trains.
PAPER_MODELS: tuple[str, ...] = ("vae", "betavae", "cvae", "factorvae", "cfactorvae")
