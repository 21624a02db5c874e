"""Tests for bench.metrics.

Every expected value is worked out by hand (shown in comments) or read off the data by a second,
simpler route than the code under test; none is the code's own earlier output.
"""

import math

import numpy as np
import pytest

from bench.metrics import (
    MetricCounts,
    dci_disentanglement,
    disentanglement_from_importance,
    evaluate,
    factorvae_score,
    importance_matrix,
    mig,
    sap,
)

# shape, scale, orientation, pos_x, pos_y: bench.data.DSPRITES_FACTOR_SIZES, restated so this file
# needs no torch.
DSPRITES = (3, 6, 40, 32, 32)
K = len(DSPRITES)

# Small FactorVAE counts: every test below holds exactly or with a margin far beyond their noise.
FVAE_SMALL = {"n_train": 600, "n_eval": 400, "n_variance": 1000}


@pytest.fixture(scope="module")
def grid():
    """Every dSprites factor combination once: 3 * 6 * 40 * 32 * 32 = 737,280 rows."""
    axes = np.meshgrid(*[np.arange(s) for s in DSPRITES], indexing="ij")
    return np.stack(axes, axis=-1).reshape(-1, K)


def uniform_factors(n, seed):
    return np.random.default_rng(seed).integers(0, DSPRITES, size=(n, K))


def true_factors(factors):
    return factors.astype(float)


def entangled(factors, seed=3):
    """Each factor plus noise, then two pure-noise dimensions: no exact ties anywhere."""
    rng = np.random.default_rng(seed)
    noisy = factors + rng.normal(0.0, 0.4, size=factors.shape)
    return np.concatenate([noisy, rng.normal(size=(len(factors), 2))], axis=1)


# ---------------------------------------------------------------- the true factors as the representation


def test_mig_true_factors_on_grid_is_hand_value(grid):
    # On the full grid every other code is independent of factor k, so its plug-in MI is 0 and the
    # gap is I(bin(v_k); v_k) / H(v_k) = H(bin(v_k)) / H(v_k), with 20 equal-width bins on [0, n-1]:
    # - shape (3 values), scale (6 values, width 0.25): one value per bin, ratio 1.
    # - orientation (40 values, width 39/20 = 1.95): the left edges 1.95 b round up to 0, 2, 4, ..., 38,
    #   so every bin holds exactly two values: H = log 20, ratio log 20 / log 40.
    # - positions (32 values, width 31/20 = 1.55): the left edges 1.55 b round up to
    #   0 2 4 5 7 8 10 11 13 14 16 18 19 21 22 24 25 27 28 30, so the bins hold
    #   2 2 1 2 1 2 1 2 1 2 2 1 2 1 2 1 2 1 2 2 values: twelve bins of 2/32, eight of 1/32,
    #   H = 12 (2/32) log 16 + 8 (1/32) log 32 = (3 + 1.25) log 2, ratio 4.25 / 5 = 0.85.
    expected = (1 + 1 + math.log(20) / math.log(40) + 0.85 + 0.85) / 5  # 0.90242
    assert mig(true_factors(grid), grid) == pytest.approx(expected, rel=1e-9)
    assert expected >= 0.9


def test_sap_true_factors_on_grid_is_hand_value(grid):
    # A factor with n equally frequent values 0..n-1 used as its own code: the least-squares fit of
    # the indicator of class k is 1/n + (k - m)(x - m) / (n var), m = (n-1)/2. Above m the largest
    # score is class n-1's, below m class 0's, at m (n odd) all scores tie and class 0 wins. So only
    # x = 0 and x = n-1 are right: accuracy 2/n. Any other code is independent of the factor on the
    # grid: whatever class it predicts for a value, 1/n of the rows with that value hold that
    # class, so accuracy exactly 1/n. The gap is 1/n per factor.
    expected = (1 / 3 + 1 / 6 + 1 / 40 + 1 / 32 + 1 / 32) / 5  # 0.1175
    assert sap(true_factors(grid), grid, true_factors(grid), grid) == pytest.approx(expected, rel=1e-12)


def test_dci_true_factors():
    factors = uniform_factors(2000, seed=1)
    assert dci_disentanglement(true_factors(factors), factors) >= 0.9


def test_factorvae_true_factors_scores_one():
    # Fixing factor k makes code k constant in the batch while every other code varies (a batch of
    # 64 uniform draws of a factor with n >= 3 values is constant with probability <= 3^-63), so
    # every vote goes to code k and the classifier is always right.
    score = factorvae_score(true_factors, DSPRITES, np.random.default_rng(0), **FVAE_SMALL)
    assert score == 1.0


# ---------------------------------------------------------------- constant and random representations


def test_constant_representation_scores_zero():
    factors = uniform_factors(2000, seed=2)
    codes = np.full((2000, 6), 0.3)
    # One bin: no MI. Nothing to split: all-zero importances. Every code predicts the most frequent
    # class: equal accuracies, no gap. No dimension with spread: no active dimension.
    assert mig(codes, factors) == 0.0
    assert dci_disentanglement(codes, factors) == 0.0
    assert sap(codes, factors, codes[:1000], factors[:1000]) == 0.0
    constant = factorvae_score(lambda f: np.full((len(f), 6), 0.3), DSPRITES, np.random.default_rng(0), **FVAE_SMALL)
    assert constant == 0.0


def test_random_representation_scores_near_zero():
    rng = np.random.default_rng(4)
    factors = uniform_factors(5000, seed=5)
    codes = rng.normal(size=(5000, 6))
    assert mig(codes, factors) <= 0.1
    assert dci_disentanglement(codes[:2000], factors[:2000]) <= 0.1
    assert sap(codes[:3000], factors[:3000], codes[3000:], factors[3000:]) <= 0.1
    noise = np.random.default_rng(6)
    score = factorvae_score(lambda f: noise.normal(size=(len(f), 6)), DSPRITES, np.random.default_rng(0), **FVAE_SMALL)
    # Votes carry no information about the factor, so the classifier is right 1/K of the time.
    assert score <= 1 / K + 0.1


# ---------------------------------------------------------------- invariances


PERM = np.array([3, 6, 0, 5, 2, 1, 4])


def test_permuting_codes_changes_nothing():
    factors = uniform_factors(2000, seed=7)
    codes = entangled(factors)
    permuted = codes[:, PERM]
    assert mig(permuted, factors) == mig(codes, factors)
    assert sap(permuted[:1500], factors[:1500], permuted[1500:], factors[1500:]) == sap(
        codes[:1500], factors[:1500], codes[1500:], factors[1500:]
    )
    # The importances move with their codes, bit for bit; D sums them in another order.
    importance = importance_matrix(codes, factors)
    np.testing.assert_array_equal(importance_matrix(permuted, factors), importance[PERM])
    assert dci_disentanglement(permuted, factors) == pytest.approx(
        disentanglement_from_importance(importance), abs=1e-12
    )
    fvae = [
        factorvae_score(lambda f, p=p: entangled(f)[:, p], DSPRITES, np.random.default_rng(8), **FVAE_SMALL)
        for p in (np.arange(7), PERM)
    ]
    assert fvae[0] == fvae[1]


SCALES = np.array([0.6, 3.0, 17.0, 0.8, 250.0, 1.7, 9.5])
SHIFTS = np.array([-4.0, 0.5, 100.0, 0.0, -0.25, 7.0, 1e3])


def test_mig_and_sap_invariant_to_positive_affine_maps():
    # MIG bins each code over its own range; SAP's least-squares fit absorbs a and b in a x + b.
    factors = uniform_factors(3000, seed=9)
    codes = entangled(factors)
    moved = codes * SCALES + SHIFTS
    assert mig(moved, factors) == mig(codes, factors)
    split = 2000
    assert sap(moved[:split], factors[:split], moved[split:], factors[split:]) == sap(
        codes[:split], factors[:split], codes[split:], factors[split:]
    )


def test_dci_invariant_to_increasing_maps():
    # Trees only compare values, so any strictly increasing map per code leaves every split alike.
    factors = uniform_factors(2000, seed=10)
    codes = entangled(factors)
    warped = np.column_stack([np.exp(codes[:, 0]), codes[:, 1] ** 3, np.arctan(codes[:, 2]), 5 * codes[:, 3:] - 2])
    np.testing.assert_array_equal(importance_matrix(warped, factors), importance_matrix(codes, factors))


def test_factorvae_invariant_to_rescaling():
    # Codes are divided by their global standard deviation; the scales keep every one above 0.05.
    scores = [
        factorvae_score(lambda f, s=s: entangled(f) * s, DSPRITES, np.random.default_rng(11), **FVAE_SMALL)
        for s in (np.ones(7), SCALES)
    ]
    assert scores[0] == scores[1]


# ---------------------------------------------------------------- hand-computed tiny cases


def test_mig_tiny_hand_case():
    # One binary factor v = 0 0 1 1 on 4 points, 2 bins per code.
    # z0 = 0 .2 .9 1: edges 0, .5 -> bins 0 0 1 1 = v, so I(z0; v) = H(v) = log 2.
    # z1 = 0 0 0 1: bins 0 0 0 1; joint p(0,0) = 1/2, p(0,1) = 1/4, p(1,1) = 1/4, p(z=0) = 3/4:
    # I = 1/2 log(4/3) + 1/4 log(2/3) + 1/4 log 2 = 3/2 log 2 - 3/4 log 3.
    # MIG = (log 2 - I) / log 2 = 3/4 log2(3) - 1/2 = 0.68872.
    codes = np.array([[0.0, 0.0], [0.2, 0.0], [0.9, 0.0], [1.0, 1.0]])
    factors = np.array([[0], [0], [1], [1]])
    expected = 0.75 * math.log2(3) - 0.5
    assert mig(codes, factors, bins=2) == pytest.approx(expected, rel=1e-12)
    # 20 bins put z0's four values in four bins (still a function of them, MI log 2) and z1's
    # 0 and 1 in the first and last: the same partitions, the same value.
    assert mig(codes, factors) == pytest.approx(expected, rel=1e-12)


def test_disentanglement_from_importance_hand_cases():
    # K = 2. Code 0: P = (1, 0), H_2 = 0, D = 1. Code 1: P = (1/2, 1/2), H_2 = 1, D = 0. Code 2 has
    # no importance and weight 0. rho = (1/3, 2/3, 0): D = 1/3.
    assert disentanglement_from_importance([[1, 0], [1, 1], [0, 0]]) == pytest.approx(1 / 3, rel=1e-12)
    # K = 4. Code 0: P = (1/2, 1/2, 0, 0), H_4 = log 2 / log 4 = 1/2, D = 1/2. Code 1: D = 1.
    # rho = (4/5, 1/5): D = 4/5 * 1/2 + 1/5 = 3/5.
    importance = np.array([[2, 2, 0, 0], [0, 0, 0, 1]], dtype=float)
    assert disentanglement_from_importance(importance) == pytest.approx(0.6, rel=1e-12)
    assert disentanglement_from_importance(7.5 * importance) == pytest.approx(0.6, rel=1e-12)
    assert disentanglement_from_importance(np.zeros((3, 2))) == 0.0


def test_importance_matrix_tiny_cases():
    # A balanced 2 x 2 design repeated: code j is factor j. A split on code j separates factor j's
    # classes; a split on the other code leaves both class proportions at 1/2 on each side, so its
    # squared-error reduction is 0 in every round. Columns: (1, 0) and (0, 1), D = 1.
    factors = np.tile([[0, 0], [0, 1], [1, 0], [1, 1]], (5, 1))
    importance = importance_matrix(factors.astype(float), factors)
    np.testing.assert_allclose(importance, np.eye(2), atol=1e-9)
    assert dci_disentanglement(factors.astype(float), factors) == pytest.approx(1.0, abs=1e-9)
    # A factor with one value has nothing to predict, and constant codes cannot be split: zeros.
    with_constant_factor = np.column_stack([factors[:, 0], np.zeros(20, dtype=int)])
    np.testing.assert_array_equal(importance_matrix(factors.astype(float), with_constant_factor)[:, 1], [0, 0])
    np.testing.assert_array_equal(importance_matrix(np.ones((20, 2)), factors), np.zeros((2, 2)))


def test_sap_tiny_hand_case():
    # Train: code 0 = 0 1 2 3, code 1 = 0 1 1 0; factor a = 0 0 1 1, factor b = 0 1 1 0.
    # Factor a on code 0: mean 1.5, centred -1.5 -.5 .5 1.5, sum of squares 5; class 1's slope
    #   (.5 + 1.5) / 5 = .4, class 0's -.4, priors 1/2: class 1 above 1.5, class 0 below, a tie
    #   at 1.5 that goes to class 0.
    # Factor a on code 1: centred -.5 .5 .5 -.5; each class's centred values sum to 0, zero
    #   slopes, equal priors: always class 0.
    # Factor b on code 1: class 1's slope (.5 + .5) / 1 = 1, class 0's -1: class 1 above .5.
    # Factor b on code 0: each class's centred values sum to 0: always class 0.
    codes_train = np.array([[0, 0], [1, 1], [2, 1], [3, 0]], dtype=float)
    factors_train = np.array([[0, 0], [0, 1], [1, 1], [1, 0]])
    # Test rows:           predicted a by code 0, 1    predicted b by code 0, 1
    #   (1.5, 1)  a=1 b=1   0 (tie) wrong, 0 wrong      0 wrong, 1 right
    #   (0,   0)  a=0 b=0   0 right,       0 right      0 right, 0 right
    #   (3,   0)  a=1 b=0   1 right,       0 wrong      0 right, 0 right
    #   (2,   1)  a=1 b=0   1 right,       0 wrong      0 right, 1 wrong
    # S = [[3/4, 3/4], [1/4, 3/4]]: gaps 1/2 (factor a) and 0 (factor b); SAP = 1/4.
    codes_test = np.array([[1.5, 1], [0, 0], [3, 0], [2, 1]], dtype=float)
    factors_test = np.array([[1, 1], [0, 0], [1, 0], [1, 0]])
    assert sap(codes_train, factors_train, codes_test, factors_test) == pytest.approx(0.25, rel=1e-12)


def test_factorvae_tiny_recorded_case():
    # Factors of sizes 2, 3, 4; the codes are the first two factors, the third is not represented.
    # A vote fixing factor 0 or 1 finds its code still and is right once the classifier maps code j to
    # factor j (factor 0 and 1 each send code j about a third of the training votes, factor 2 splits
    # its third between the two codes). A vote fixing factor 2 lands on code 0 or 1 and is wrong. So
    # the score is the share of evaluation votes that fixed factor 0 or 1, read off the batches
    # represent was given: each vote is 64 consecutive rows and the evaluation votes come last.
    seen = []

    def represent(factors):
        seen.append(factors.copy())
        return factors[:, :2].astype(float)

    n_eval, batch = 400, 64
    score = factorvae_score(represent, (2, 3, 4), np.random.default_rng(12), n_train=600, n_eval=n_eval, n_variance=500)
    votes = np.concatenate(seen)[-n_eval * batch :].reshape(n_eval, batch, 3)
    still = np.all(votes == votes[:, :1], axis=1)
    # Exactly one factor is held in each batch (another one is still by chance with chance < 2^-62).
    assert np.all(still.sum(axis=1) == 1)
    fixed = np.argmax(still, axis=1)
    assert score == np.mean(fixed != 2)
    assert 0.5 < score < 0.85  # about 2/3


def test_factorvae_calls_represent_on_large_batches():
    calls = []

    def represent(factors):
        calls.append(len(factors))
        return factors.astype(float)

    factorvae_score(represent, DSPRITES, np.random.default_rng(0), n_train=1000, n_eval=1000, n_variance=1000)
    # 1000 + 64,000 + 64,000 rows; one call per vote would be 2001 calls.
    assert sum(calls) == 1000 + 2 * 64 * 1000
    assert len(calls) <= 5


# ---------------------------------------------------------------- evaluate


SMALL = MetricCounts(n_train=1500, n_test=500, factorvae_n_train=300, factorvae_n_eval=200, factorvae_n_variance=500)


def test_metric_counts_defaults_are_disentanglement_libs():
    # unsupervised_study_v1 metric configs: mig/dci/sap num_train 10000, dci/sap num_test 5000,
    # 20 histogram bins, factor_vae_score batch 64, num_train 10000, num_eval 5000, variance 10000.
    assert MetricCounts() == MetricCounts(10_000, 5_000, 20, 64, 10_000, 5_000, 10_000)


def test_evaluate_wires_the_documented_samples():
    out = evaluate(true_factors, DSPRITES, seed=5, counts=SMALL)
    assert set(out) == {"factorvae_score", "mig", "dci_disentanglement", "sap"}
    assert out == evaluate(true_factors, DSPRITES, seed=5, counts=SMALL)
    # The documented draws: a training set, then a test set, then FactorVAE, from one generator.
    rng = np.random.default_rng(5)
    train = rng.integers(0, DSPRITES, size=(1500, K))
    test = rng.integers(0, DSPRITES, size=(500, K))
    assert out["mig"] == mig(true_factors(train), train)
    assert out["sap"] == sap(true_factors(train), train, true_factors(test), test)
    assert out["factorvae_score"] == 1.0
    assert out["dci_disentanglement"] >= 0.9


# ---------------------------------------------------------------- bad input


def test_bad_input_raises_clear_errors():
    factors = uniform_factors(10, seed=0)
    codes = np.random.default_rng(0).normal(size=(10, 3))
    with pytest.raises(ValueError, match="10 rows but factors has 9"):
        mig(codes, factors[:9])
    with pytest.raises(ValueError, match="at least 2 code dimensions"):
        mig(codes[:, :1], factors)
    with pytest.raises(ValueError, match="single value"):
        mig(codes, np.zeros((10, 1), dtype=int))
    with pytest.raises(ValueError, match="integer"):
        mig(codes, factors.astype(float))
    with pytest.raises(ValueError, match="non-finite"):
        dci_disentanglement(np.where(codes > 1, np.nan, codes), factors)
    with pytest.raises(ValueError, match="2-D"):
        importance_matrix(codes[:, 0], factors)
    with pytest.raises(ValueError, match="codes_test has 2"):
        sap(codes, factors, codes[:, :2], factors)
    with pytest.raises(ValueError, match="at least 2 code dimensions"):
        sap(codes[:, :1], factors, codes[:, :1], factors)
    with pytest.raises(ValueError, match="K >= 2"):
        disentanglement_from_importance(np.ones((3, 1)))
    with pytest.raises(ValueError, match="non-negative"):
        disentanglement_from_importance([[1.0, -0.5]])
    with pytest.raises(ValueError, match="factor_sizes"):
        factorvae_score(true_factors, (3, 0), np.random.default_rng(0))
    with pytest.raises(ValueError, match="batch_size"):
        factorvae_score(true_factors, DSPRITES, np.random.default_rng(0), batch_size=1)
    with pytest.raises(ValueError, match="returned 5 rows"):
        factorvae_score(lambda f: np.zeros((5, 2)), DSPRITES, np.random.default_rng(0))
