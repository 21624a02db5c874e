"""The CFactorVAE paper's numbers and claims, and the names of its models, in one place.

The report sets our runs beside these and tests them against these; nothing here is measured.
"""

from __future__ import annotations

# The dataset of the paper's Table 1.
PAPER_DATASET = "mnist"
# The paper's Table 1 as printed: train loss, train recon loss, test loss, test recon error
# (bench.records.FINAL_METRICS order). It reports no VAE or beta-VAE row.
PAPER_TABLE1 = {
    "cvae": (125.75, 124.89, 21.13, 21.0),
    "factorvae": (141.12, 121.14, 23.73, 20.48),
    "cfactorvae": (118.69, 118.02, 20.01, 19.92),
}
# The paper's public training code, by its author.
AUTHOR_CODE = "githubgreat886/controllable-factorVAE"
# How that code prints its test numbers: main.py, in process_cvae and in process_fvae. Both sums run
# over the test set, and both are divided by the size of the training set.
AUTHOR_TEST_PRINT = (
    "print('===> Epoch: {}  Test loss: {:.4f}  Test Reconstruction loss: {:.4f}'.format(epoch+1, "
    "test_loss / len(train_loader.dataset), test_re_loss / len(train_loader.dataset)))"
)
# The paper's test columns are test-set sums over MNIST's 10,000 test images divided by its 60,000
# training images, so six times this puts them per image. Confirmed by AUTHOR_TEST_PRINT; the paper
# itself states no normalisation, but in all six of its (train, test) pairs the train number is 5.92
# to 5.95 times the test number.
PAPER_TEST_SCALE = 60_000 / 10_000
# The model whose claims the paper makes, against each baseline.
CHALLENGER = "cfactorvae"
# The planned family: the paper's test-set claims, CFactorVAE lower than each baseline.
PLANNED_METRICS = ("test_recon", "test_loss")
# (metric, baseline, the baseline as the paper names it): "CFactorVAE has a lower <metric> than <name>".
CLAIMS = (
    ("test_recon", "factorvae", "FactorVAE"),
    ("test_recon", "cvae", "Controlled-VAE"),
    ("test_loss", "factorvae", "FactorVAE"),
    ("test_loss", "cvae", "Controlled-VAE"),
)
CLAIM_NAMES = {"test_recon": "test recon error", "test_loss": "test loss"}
# The paper's five objectives, in Table 1 order.
MODELS = ("vae", "betavae", "cvae", "factorvae", "cfactorvae")
# Named variants get a Table 1 row of their own when their records exist, after their paper model.
VARIANTS = {"cvae-burgess": "cvae"}
# Display names of the models (the paper's abbreviations in brackets), and of our named variants.
LABELS = {
    "vae": "VAE",
    "betavae": "β-VAE",
    "cvae": "Controlled VAE (CVAE)",
    "cvae-burgess": "CVAE, Burgess weight 1000",
    "factorvae": "FactorVAE (FVAE)",
    "cfactorvae": "CFactorVAE (CFVAE)",
}


def model_order(models) -> list[str]:
    """The five models in Table 1 order, each followed by its variants found in the records, then any other name."""
    present = set(models)
    order = []
    for model in MODELS:
        order.append(model)
        order += sorted(v for v, base in VARIANTS.items() if base == model and v in present)
    return order + sorted(present - set(order))


def picture_label(model: str) -> str:
    """A model's label as the pictures title it: without the abbreviation, and in ASCII (their font has no β)."""
    return LABELS.get(model, model).split(" (")[0].replace("β", "beta")
