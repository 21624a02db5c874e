"""Tests for bench.eval.metrics.

Every expected value is worked out by hand (shown in comments), read off the data by a second,
simpler route than the code under test, or computed by a plain transcription of
disentanglement_lib's metric functions written here; none is the code's own earlier output.
"""

import math

import numpy as np
import pytest
import scipy.stats
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import mutual_info_score
from sklearn.svm import LinearSVC

from bench.eval.metrics import (
    MetricCounts,
    completeness_from_importance,
    dci,
    disentanglement_from_importance,
    evaluate,
    factorvae_score,
    importance_gbt,
    mig,
    sap,
)

# shape, scale, orientation, pos_x, pos_y: bench.data.datasets.DSPRITES_FACTOR_SIZES, restated so this file
# needs no torch.
DSPRITES = (3, 6, 40, 32, 32)
K = len(DSPRITES)
# DCI fits 100 trees per factor value (sklearn's boosting), so its tests use fewer values per factor
# than dSprites' 113 in all: the same code paths in seconds rather than minutes.
FEW = (3, 6, 8, 5)

# Small FactorVAE counts: every test below holds exactly or with a margin far beyond their noise.
FVAE_SMALL = {"n_train": 600, "n_eval": 400, "n_variance": 1000}
# disentanglement_lib adds 1e-11 to every importance inside DCI's entropies, which moves a score of
# an exactly disentangled matrix by about 1e-10.
DL_EPS = 1e-9


@pytest.fixture(scope="module")
def grid():
    """Every dSprites factor combination once: 3 * 6 * 40 * 32 * 32 = 737,280 rows."""
    axes = np.meshgrid(*[np.arange(s) for s in DSPRITES], indexing="ij")
    return np.stack(axes, axis=-1).reshape(-1, K)


def uniform_factors(n, seed, sizes=DSPRITES):
    return np.random.default_rng(seed).integers(0, sizes, size=(n, len(sizes)))


def true_factors(factors):
    return factors.astype(float)


def entangled(factors, seed=3):
    """Each factor plus noise, then two pure-noise dimensions: no exact ties anywhere."""
    rng = np.random.default_rng(seed)
    noisy = factors + rng.normal(0.0, 0.4, size=factors.shape)
    return np.concatenate([noisy, rng.normal(size=(len(factors), 2))], axis=1)


def vae_like(factors, seed):
    """Posterior means as a trained VAE gives them: mixtures of the scaled factors with noise, unit spread,
    a dimension that carries one factor nearly alone, and two collapsed dimensions near 0."""
    rng = np.random.default_rng(seed)
    scaled = factors / (factors.max(axis=0) + 1.0) - 0.5
    mixed = scaled @ rng.normal(size=(factors.shape[1], 5)) + rng.normal(0.0, 0.3, size=(len(factors), 5))
    clean = 3.0 * scaled[:, :1] + rng.normal(0.0, 0.05, size=(len(factors), 1))
    collapsed = rng.normal(0.0, 0.02, size=(len(factors), 2))
    return np.concatenate([mixed, clean, collapsed], axis=1)


def split(n_train, n_test, seed, sizes=FEW, represent=true_factors):
    factors = uniform_factors(n_train + n_test, seed, sizes)
    codes = represent(factors)
    return codes[:n_train], factors[:n_train], codes[n_train:], factors[n_train:]


# ---------------------------------------------------------------- disentanglement_lib, transcribed
# The functions of disentanglement_lib/evaluation/metrics/ (mig.py, dci.py, sap_score.py, utils.py)
# as published, in their loops and their layout: codes and factors as (num_codes, N) and
# (num_factors, N) arrays. The trees' random_state is pinned, as bench.eval.metrics pins it; disentanglement_lib
# leaves it unset.


def dl_mig(mus_train, ys_train, num_bins=20):
    discretized = np.zeros_like(mus_train)
    for i in range(mus_train.shape[0]):
        discretized[i, :] = np.digitize(mus_train[i, :], np.histogram(mus_train[i, :], num_bins)[1][:-1])
    m = np.zeros([mus_train.shape[0], ys_train.shape[0]])
    for i in range(mus_train.shape[0]):
        for j in range(ys_train.shape[0]):
            m[i, j] = mutual_info_score(ys_train[j, :], discretized[i, :])
    entropy = np.zeros(ys_train.shape[0])
    for j in range(ys_train.shape[0]):
        entropy[j] = mutual_info_score(ys_train[j, :], ys_train[j, :])
    sorted_m = np.sort(m, axis=0)[::-1]
    return np.mean(np.divide(sorted_m[0, :] - sorted_m[1, :], entropy[:]))


def dl_compute_importance_gbt(x_train, y_train, x_test, y_test, random_state):
    num_factors = y_train.shape[0]
    num_codes = x_train.shape[0]
    importance_matrix = np.zeros(shape=[num_codes, num_factors], dtype=np.float64)
    train_loss = []
    test_loss = []
    for i in range(num_factors):
        model = GradientBoostingClassifier(random_state=random_state)
        model.fit(x_train.T, y_train[i, :])
        importance_matrix[:, i] = np.abs(model.feature_importances_)
        train_loss.append(np.mean(model.predict(x_train.T) == y_train[i, :]))
        test_loss.append(np.mean(model.predict(x_test.T) == y_test[i, :]))
    return importance_matrix, np.mean(train_loss), np.mean(test_loss)


def dl_disentanglement(importance_matrix):
    per_code = 1.0 - scipy.stats.entropy(importance_matrix.T + 1e-11, base=importance_matrix.shape[1])
    if importance_matrix.sum() == 0.0:
        importance_matrix = np.ones_like(importance_matrix)
    code_importance = importance_matrix.sum(axis=1) / importance_matrix.sum()
    return np.sum(per_code * code_importance)


def dl_completeness(importance_matrix):
    per_factor = 1.0 - scipy.stats.entropy(importance_matrix + 1e-11, base=importance_matrix.shape[0])
    if importance_matrix.sum() == 0.0:
        importance_matrix = np.ones_like(importance_matrix)
    factor_importance = importance_matrix.sum(axis=0) / importance_matrix.sum()
    return np.sum(per_factor * factor_importance)


def dl_sap(mus, ys, mus_test, ys_test):
    num_latents = mus.shape[0]
    num_factors = ys.shape[0]
    score_matrix = np.zeros([num_latents, num_factors])
    for i in range(num_latents):
        for j in range(num_factors):
            mu_i = mus[i, :]
            y_j = ys[j, :]
            mu_i_test = mus_test[i, :]
            y_j_test = ys_test[j, :]
            classifier = LinearSVC(C=0.01, class_weight="balanced")
            classifier.fit(mu_i[:, np.newaxis], y_j)
            pred = classifier.predict(mu_i_test[:, np.newaxis])
            score_matrix[i, j] = np.mean(pred == y_j_test)
    sorted_matrix = np.sort(score_matrix, axis=0)
    return np.mean(sorted_matrix[-1, :] - sorted_matrix[-2, :])


def test_scores_agree_with_the_transcription_of_disentanglement_lib():
    # A VAE-like representation at sizes where every estimator has work to do: 8 codes, 4 factors
    # of 3 to 8 values, 1500 training and 500 test samples. The module fits DCI's factors in two
    # threads, the transcription one after another.
    x_train, f_train, x_test, f_test = split(1500, 500, seed=21, represent=lambda f: vae_like(f, seed=22))
    importance, train, test = dl_compute_importance_gbt(x_train.T, f_train.T, x_test.T, f_test.T, random_state=0)
    found = dci(x_train, f_train, x_test, f_test, random_state=0, n_jobs=2)
    expected = {"disentanglement": dl_disentanglement(importance), "completeness": dl_completeness(importance),
                "informativeness_train": train, "informativeness_test": test}
    assert found.keys() == expected.keys()
    for name in expected:
        assert found[name] == pytest.approx(expected[name], abs=1e-9), name
    module_importance = importance_gbt(x_train, f_train, x_test, f_test, random_state=0)[0]
    np.testing.assert_allclose(module_importance, importance, rtol=0, atol=1e-12)
    assert sap(x_train, f_train, x_test, f_test) == pytest.approx(dl_sap(x_train.T, f_train.T, x_test.T, f_test.T),
                                                                  abs=1e-9)
    assert mig(x_train, f_train) == pytest.approx(dl_mig(x_train.T, f_train.T), abs=1e-9)
    # The representation is neither trivially good nor trivially bad on any of them.
    assert 0.05 < found["disentanglement"] < 0.95 and 0.05 < found["completeness"] < 0.95
    assert found["informativeness_test"] < found["informativeness_train"]


@pytest.mark.fast
def test_dci_from_importance_matches_the_transcription_on_random_matrices():
    rng = np.random.default_rng(23)
    for shape in [(2, 2), (10, 5), (20, 5), (3, 7)]:
        importance = rng.exponential(size=shape) * (rng.random(shape) < 0.6)
        importance[0] = 0.0  # a code of no importance at all
        assert disentanglement_from_importance(importance) == pytest.approx(dl_disentanglement(importance), abs=1e-12)
        assert completeness_from_importance(importance) == pytest.approx(dl_completeness(importance), abs=1e-12)


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


@pytest.mark.fast
def test_sap_true_binary_factors_on_grid_is_one_half():
    # Three binary factors, every combination 4 times, each factor its own code. On its own code
    # factor k is separable: the SVM's threshold -b/w lies between 0 and 1 (the penalised intercept
    # pulls it towards 0, never past it), so S[k, k] = 1. Any other code is independent of factor k on
    # the grid: half the rows of each of its values hold either class, so whatever it predicts, it is
    # right half the time. Every gap is 1 - 1/2, the most a second code that is right by chance allows.
    cube = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    factors = np.tile(cube, (4, 1))
    assert sap(true_factors(factors), factors, true_factors(factors), factors) == 0.5


@pytest.mark.fast
def test_sap_true_factors_beat_mixed_codes():
    # A single linear code separates only a factor's end values one against the rest, so the true
    # factors' SAP is far below 1 (about 0.23 on dSprites' factors at disentanglement_lib's counts),
    # yet well above that of codes that mix the factors.
    x_train, f_train, x_test, f_test = split(3000, 1000, seed=24, sizes=DSPRITES)
    truth = sap(x_train, f_train, x_test, f_test)
    noisy = entangled(np.concatenate([f_train, f_test]))
    rng = np.random.default_rng(25)
    assert truth > sap(noisy[:3000] @ rng.normal(size=(7, 7)), f_train, noisy[3000:] @ rng.normal(size=(7, 7)),
                       f_test) + 0.05
    assert 0.15 < truth < 0.5


def test_dci_true_factors():
    # Code k splits factor k's values apart exactly and no other code helps: every tree splits on
    # its own factor's code, importance is the identity, and every value is predicted right.
    found = dci(*split(1500, 500, seed=1), rounds=20)
    assert found["disentanglement"] == pytest.approx(1.0, abs=DL_EPS)
    assert found["completeness"] == pytest.approx(1.0, abs=DL_EPS)
    assert found["informativeness_train"] == 1.0 and found["informativeness_test"] == 1.0


@pytest.mark.fast
def test_factorvae_true_factors_scores_one():
    # Fixing factor k makes code k constant in the batch while every other code varies (a batch of
    # 64 uniform draws of a factor with n >= 3 values is constant with probability <= 3^-63), so
    # every vote goes to code k and the classifier is always right.
    score = factorvae_score(true_factors, DSPRITES, np.random.default_rng(0), **FVAE_SMALL)
    assert score == 1.0


# ---------------------------------------------------------------- constant and random representations


@pytest.mark.fast
def test_constant_representation_scores_zero():
    factors = uniform_factors(2000, seed=2)
    codes = np.full((2000, 6), 0.3)
    # One bin: no MI. Every code's SVM sees the same data and predicts the same: equal accuracies,
    # no gap. No dimension with spread: no active dimension.
    assert mig(codes, factors) == 0.0
    assert sap(codes, factors, codes[:1000], factors[:1000]) == 0.0
    constant = factorvae_score(lambda f: np.full((len(f), 6), 0.3), DSPRITES, np.random.default_rng(0), **FVAE_SMALL)
    assert constant == 0.0


def test_dci_of_a_constant_representation():
    # Nothing to split: the trees stay at their initial estimate, the training class priors, and
    # predict each factor's most frequent training value for every sample. All-zero importances
    # give D = C = 0; informativeness is that value's share of each split, averaged over factors.
    x_train, f_train, x_test, f_test = split(1000, 400, seed=26, represent=lambda f: np.full((len(f), 6), 0.3))
    found = dci(x_train, f_train, x_test, f_test)
    modes = [np.bincount(f_train[:, k]).argmax() for k in range(len(FEW))]
    assert found["disentanglement"] == 0.0 and found["completeness"] == 0.0
    for split_name, f in (("train", f_train), ("test", f_test)):
        share = np.mean([np.mean(f[:, k] == mode) for k, mode in enumerate(modes)])
        assert found[f"informativeness_{split_name}"] == pytest.approx(share, abs=1e-12)
    np.testing.assert_array_equal(importance_gbt(x_train, f_train, x_test, f_test)[0], np.zeros((6, len(FEW))))


def test_random_representation_scores_near_zero():
    rng = np.random.default_rng(4)
    factors = uniform_factors(5000, seed=5)
    codes = rng.normal(size=(5000, 6))
    assert mig(codes, factors) <= 0.1
    assert sap(codes[:3000], factors[:3000], codes[3000:], factors[3000:]) <= 0.1
    noise = np.random.default_rng(6)
    score = factorvae_score(lambda f: noise.normal(size=(len(f), 6)), DSPRITES, np.random.default_rng(0), **FVAE_SMALL)
    # Votes carry no information about the factor, so the classifier is right 1/K of the time.
    assert score <= 1 / K + 0.1
    # The trees overfit the noise (high training accuracy), but spread their importance over every
    # code and factor alike, and predict test values at chance.
    found = dci(*split(1500, 1000, seed=27, represent=lambda f: rng.normal(size=(len(f), 6))))
    assert found["disentanglement"] <= 0.1 and found["completeness"] <= 0.1
    chance = np.mean([1 / n for n in FEW])
    assert found["informativeness_test"] == pytest.approx(chance, abs=0.05)
    assert found["informativeness_train"] > found["informativeness_test"] + 0.2


# ---------------------------------------------------------------- invariances


PERM = np.array([3, 6, 0, 5, 2, 1, 4])


@pytest.mark.fast
def test_permuting_codes_changes_nothing():
    factors = uniform_factors(2000, seed=7)
    codes = entangled(factors)
    permuted = codes[:, PERM]
    assert mig(permuted, factors) == mig(codes, factors)
    assert sap(permuted[:1500], factors[:1500], permuted[1500:], factors[1500:]) == sap(
        codes[:1500], factors[:1500], codes[1500:], factors[1500:]
    )
    fvae = [
        factorvae_score(lambda f, p=p: entangled(f)[:, p], DSPRITES, np.random.default_rng(8), **FVAE_SMALL)
        for p in (np.arange(7), PERM)
    ]
    assert fvae[0] == fvae[1]


def test_permuting_codes_moves_the_dci_importances_with_them():
    # The trees try the codes in an order drawn from random_state, and the order settles exact ties
    # between splits, which small nodes deep in a tree do meet (two codes cutting off the same few
    # samples). So the importances move with their codes up to tie-breaking, no more than another
    # random_state moves them: disentanglement_lib, which leaves random_state unset, varies as much
    # from one call to the next.
    x_train, f_train, x_test, f_test = split(800, 400, seed=28, represent=entangled)
    perm = np.array([4, 1, 5, 0, 2, 3])
    before = importance_gbt(x_train, f_train, x_test, f_test, rounds=20)
    after = importance_gbt(x_train[:, perm], f_train, x_test[:, perm], f_test, rounds=20)
    np.testing.assert_allclose(after[0], before[0][perm], rtol=0, atol=0.01)
    np.testing.assert_allclose(after[1:], before[1:], rtol=0, atol=0.01)
    for score in (disentanglement_from_importance, completeness_from_importance):
        assert score(after[0]) == pytest.approx(score(before[0]), abs=0.01)


def test_fewer_dci_rounds_are_the_first_rounds_of_sklearns_boosting():
    # sklearn adds one round of trees at a time, drawing from one random_state, so a fit of 5 rounds
    # is the first 5 of a fit of 100: its accuracies are the 100-round model's staged predictions
    # after round 5, and lower than after round 100 on codes where the trees have more to learn.
    x_train, f_train, x_test, f_test = split(600, 300, seed=30, represent=entangled)
    _, train, test = importance_gbt(x_train, f_train, x_test, f_test, rounds=5)
    staged = {5: ([], []), 100: ([], [])}
    for k in range(f_train.shape[1]):
        model = GradientBoostingClassifier(random_state=0).fit(x_train, f_train[:, k])
        for x, f, kept in ((x_train, f_train, 0), (x_test, f_test, 1)):
            predictions = list(model.staged_predict(x))
            for rounds, accuracy in staged.items():
                accuracy[kept].append(np.mean(predictions[rounds - 1] == f[:, k]))
    assert train == pytest.approx(np.mean(staged[5][0]), abs=1e-12)
    assert test == pytest.approx(np.mean(staged[5][1]), abs=1e-12)
    assert train < np.mean(staged[100][0]) - 0.05


SCALES = np.array([0.6, 3.0, 17.0, 0.8, 250.0, 1.7, 9.5])
SHIFTS = np.array([-4.0, 0.5, 100.0, 0.0, -0.25, 7.0, 1e3])


@pytest.mark.fast
def test_mig_invariant_to_positive_affine_maps():
    # MIG bins each code over its own range.
    factors = uniform_factors(3000, seed=9)
    codes = entangled(factors)
    assert mig(codes * SCALES + SHIFTS, factors) == mig(codes, factors)


@pytest.mark.fast
def test_sap_depends_on_the_codes_scale_and_offset():
    # LinearSVC(C=0.01) penalises the weight and the intercept: shrink a code towards 0 and the
    # penalty wins, every classifier predicts one class whatever the code, every code scores the
    # same and SAP is 0; move it far from 0 and the intercept the fit needs costs more than it
    # gains, which cuts SAP too. Disentanglement_lib's scores carry the same dependence.
    x_train, f_train, x_test, f_test = split(2000, 1000, seed=29)
    unit = sap(x_train, f_train, x_test, f_test)
    assert unit > 0.2
    assert sap(x_train * 1e-3, f_train, x_test * 1e-3, f_test) == 0.0
    assert sap(x_train + 50.0, f_train, x_test + 50.0, f_test) < unit - 0.1


def test_dci_importances_invariant_to_increasing_maps():
    # Trees only compare values, so a strictly increasing map of each code leaves every training
    # split alike (the maps keep neighbouring values more than sklearn's 1e-7 apart, below which
    # it treats them as equal): the same importances and the same training accuracy.
    x_train, f_train, x_test, f_test = split(800, 400, seed=10, represent=entangled)

    def warp(c):
        return np.column_stack([np.exp(c[:, 0] / 4), c[:, 1] ** 3, np.arctan(c[:, 2] / 8), 5 * c[:, 3:] - 2])

    before = importance_gbt(x_train, f_train, x_test, f_test, rounds=20)
    after = importance_gbt(warp(x_train), f_train, warp(x_test), f_test, rounds=20)
    np.testing.assert_allclose(after[0], before[0], rtol=0, atol=1e-12)
    assert after[1] == before[1]


@pytest.mark.fast
def test_factorvae_invariant_to_rescaling():
    # Codes are divided by their global standard deviation; the scales keep every one above 0.05.
    scores = [
        factorvae_score(lambda f, s=s: entangled(f) * s, DSPRITES, np.random.default_rng(11), **FVAE_SMALL)
        for s in (np.ones(7), SCALES)
    ]
    assert scores[0] == scores[1]


# ---------------------------------------------------------------- hand-computed tiny cases


@pytest.mark.fast
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


@pytest.mark.fast
def test_disentanglement_and_completeness_from_importance_hand_cases():
    # K = 2. Code 0: P = (1, 0), H_2 = 0, D = 1. Code 1: P = (1/2, 1/2), H_2 = 1, D = 0. Code 2 has
    # no importance and weight 0. rho = (1/3, 2/3, 0): D = 1/3.
    # Completeness, over factors with base d = 3: factor 0 gets (1/2, 1/2, 0), H_3 = log 2 / log 3,
    # factor 1 gets (0, 1, 0), H_3 = 0; weights (2/3, 1/3): C = 2/3 (1 - log_3 2) + 1/3.
    assert disentanglement_from_importance([[1, 0], [1, 1], [0, 0]]) == pytest.approx(1 / 3, abs=DL_EPS)
    assert completeness_from_importance([[1, 0], [1, 1], [0, 0]]) == pytest.approx(
        2 / 3 * (1 - math.log(2) / math.log(3)) + 1 / 3, abs=DL_EPS)
    # K = 4. Code 0: P = (1/2, 1/2, 0, 0), H_4 = log 2 / log 4 = 1/2, D = 1/2. Code 1: D = 1.
    # rho = (4/5, 1/5): D = 4/5 * 1/2 + 1/5 = 3/5. Every factor lies on one code: C = 1.
    importance = np.array([[2, 2, 0, 0], [0, 0, 0, 1]], dtype=float)
    assert disentanglement_from_importance(importance) == pytest.approx(0.6, abs=DL_EPS)
    assert disentanglement_from_importance(7.5 * importance) == pytest.approx(0.6, abs=DL_EPS)
    assert completeness_from_importance(importance) == pytest.approx(1.0, abs=DL_EPS)
    assert disentanglement_from_importance(np.zeros((3, 2))) == 0.0
    assert completeness_from_importance(np.zeros((3, 2))) == 0.0


@pytest.mark.fast
def test_dci_tiny_cases():
    # A balanced 2 x 2 design repeated: code j is factor j. A split on code j separates factor j's
    # classes; a split on the other code leaves both sides' residuals alike, so it reduces no
    # impurity. Importances: the identity, D = C = 1, every training value predicted right.
    factors = np.tile([[0, 0], [0, 1], [1, 0], [1, 1]], (5, 1))
    codes = factors.astype(float)
    # Test rows: the four cells, then two with factor 1 flipped against its code: factor 0 is right 6
    # times of 6, factor 1 4 times of 6, informativeness (1 + 2/3) / 2 = 5/6.
    test_codes = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [0, 0], [1, 1]], dtype=float)
    test_factors = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [0, 1], [1, 0]])
    importance, train, test = importance_gbt(codes, factors, test_codes, test_factors)
    np.testing.assert_allclose(importance, np.eye(2), atol=1e-9)
    assert (train, test) == (1.0, pytest.approx(5 / 6, abs=1e-12))
    found = dci(codes, factors, test_codes, test_factors)
    assert found["disentanglement"] == pytest.approx(1.0, abs=DL_EPS)
    assert found["completeness"] == pytest.approx(1.0, abs=DL_EPS)
    # Codes that cannot be split give all-zero importances.
    np.testing.assert_array_equal(importance_gbt(np.ones((20, 2)), factors, np.ones((6, 2)), test_factors)[0],
                                  np.zeros((2, 2)))


@pytest.mark.fast
def test_sap_tiny_hand_case():
    # Train: code 0 = -1 -1 1 1 is factor a = 0 0 1 1 (symmetric about 0, so the penalised intercept
    # is 0 and the SVM's threshold is 0); code 1 = 0 1 0 1 is factor b = 0 1 0 1, with its threshold
    # between 0 and 1 (see test_sap_true_binary_factors_on_grid_is_one_half).
    codes_train = np.array([[-1, 0], [-1, 1], [1, 0], [1, 1]], dtype=float)
    factors_train = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    # Test rows (code 0, code 1; a, b): (-1, 0; 0, 0), (-1, 1; 1, 1), (1, 0; 1, 0), (1, 1; 0, 1).
    # Code 0 predicts a = 0 at -1 and a = 1 at 1: right on rows 1 and 3, S = 1/2. Code 1 predicts
    # b = 0 at 0 and b = 1 at 1: right on all four, S = 1. Code 0 for b and code 1 for a: each value
    # of the code holds one test row of either class, so whatever it predicts, S = 2/4.
    # S = [[1/2, 1/2], [1/2, 1]]: gaps 0 (factor a) and 1/2 (factor b); SAP = 1/4.
    codes_test = np.array([[-1, 0], [-1, 1], [1, 0], [1, 1]], dtype=float)
    factors_test = np.array([[0, 0], [1, 1], [1, 0], [0, 1]])
    assert sap(codes_train, factors_train, codes_test, factors_test) == 0.25


@pytest.mark.fast
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


@pytest.mark.fast
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


SMALL = MetricCounts(n_train=1500, n_test=500, factorvae_n_train=300, factorvae_n_eval=200, factorvae_n_variance=500,
                     dci_rounds=20)


@pytest.mark.fast
def test_metric_counts_defaults_are_disentanglement_libs():
    # unsupervised_study_v1 metric configs: mig/dci/sap num_train 10000, dci/sap num_test 5000,
    # 20 histogram bins, factor_vae_score batch 64, num_train 10000, num_eval 5000, variance 10000.
    # DCI's GradientBoostingClassifier() keeps sklearn's 100 rounds.
    assert MetricCounts() == MetricCounts(10_000, 5_000, 20, 64, 10_000, 5_000, 10_000, 100)


def test_evaluate_wires_the_documented_samples():
    lines = []
    out = evaluate(true_factors, FEW, seed=5, counts=SMALL, progress=lines.append)
    assert list(out) == ["factorvae_score", "mig", "dci_disentanglement", "dci_completeness",
                         "dci_informativeness_train", "dci_informativeness_test", "sap"]
    # One line before DCI, one per factor's trees.
    assert len(lines) == 1 + len(FEW) and all(line.startswith("DCI: factor") for line in lines[1:])
    assert all(" values, 20 rounds), " in line for line in lines[1:])
    assert out == evaluate(true_factors, FEW, seed=5, counts=SMALL, n_jobs=2)
    # The documented draws: a training set, then a test set, then FactorVAE, from one generator;
    # the estimators seeded with the seed.
    rng = np.random.default_rng(5)
    train = rng.integers(0, FEW, size=(1500, len(FEW)))
    test = rng.integers(0, FEW, size=(500, len(FEW)))
    assert out["mig"] == mig(true_factors(train), train)
    assert out["sap"] == sap(true_factors(train), train, true_factors(test), test, random_state=5)
    found = dci(true_factors(train), train, true_factors(test), test, random_state=5, rounds=20)
    assert out == {**out, **{f"dci_{name}": value for name, value in found.items()}}
    assert out["factorvae_score"] == 1.0


# ---------------------------------------------------------------- bad input


@pytest.mark.fast
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
        dci(np.where(codes > 1, np.nan, codes), factors, codes, factors)
    with pytest.raises(ValueError, match="2-D"):
        importance_gbt(codes[:, 0], factors, codes, factors)
    with pytest.raises(ValueError, match="factor 1 takes a single value in the training sample; DCI"):
        dci(codes, np.column_stack([factors[:, 0], np.zeros(10, dtype=int)]), codes, factors[:, :2])
    with pytest.raises(ValueError, match="2 code dimensions and 2 factors"):
        dci(codes, factors[:, :1], codes, factors[:, :1])
    with pytest.raises(ValueError, match="n_jobs"):
        importance_gbt(codes, factors, codes, factors, n_jobs=0)
    with pytest.raises(ValueError, match="rounds must be"):
        dci(codes, factors, codes, factors, rounds=0)
    with pytest.raises(ValueError, match="codes_test has 2"):
        sap(codes, factors, codes[:, :2], factors)
    with pytest.raises(ValueError, match="at least 2 code dimensions"):
        sap(codes[:, :1], factors, codes[:, :1], factors)
    with pytest.raises(ValueError, match="single value in the training sample; SAP"):
        sap(codes, np.zeros((10, 2), dtype=int), codes, factors[:, :2])
    with pytest.raises(ValueError, match="K >= 2"):
        disentanglement_from_importance(np.ones((3, 1)))
    with pytest.raises(ValueError, match="d >= 2"):
        completeness_from_importance(np.ones((1, 3)))
    with pytest.raises(ValueError, match="non-negative"):
        disentanglement_from_importance([[1.0, -0.5], [0.0, 1.0]])
    with pytest.raises(ValueError, match="factor_sizes"):
        factorvae_score(true_factors, (3, 0), np.random.default_rng(0))
    with pytest.raises(ValueError, match="batch_size"):
        factorvae_score(true_factors, DSPRITES, np.random.default_rng(0), batch_size=1)
    with pytest.raises(ValueError, match="returned 5 rows"):
        factorvae_score(lambda f: np.zeros((5, 2)), DSPRITES, np.random.default_rng(0))
