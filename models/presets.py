"""The objectives' coefficients and the names of the networks' kinds: what a run's configuration
chooses among, without torch.

:mod:`models.objectives` (whose docstring tells where each coefficient comes from) and
:mod:`models.nets` take these from here; the configuration, ``bench report`` and ``bench check``
import this module rather than those, so that they start without loading torch.
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
