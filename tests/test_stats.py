"""Tests for bench.report.stats.

Every expected value is worked out by hand (shown in comments) or computed
with plain numpy / a different route than the code under test.
"""

import math

import numpy as np
import pytest
from scipy import stats as sps

from bench.report.stats import (
    WelchResult,
    hedges_g,
    holm,
    mean_diff_ci,
    min_detectable_effect,
    prob_superiority,
    welch,
)

pytestmark = pytest.mark.fast

# Shared fixed sample with exact-fraction Welch quantities (worked below).
A = [2.0, 4.0, 6.0, 8.0]
B = [1.0, 2.0, 3.0]
# mean(A) = 5, s_A^2 = (9 + 1 + 1 + 9) / 3 = 20/3, s_A^2/n_A = 5/3
# mean(B) = 2, s_B^2 = (1 + 0 + 1) / 2 = 1,      s_B^2/n_B = 1/3
# se^2 = 5/3 + 1/3 = 2                  -> t = 3 / sqrt(2)
# df = 2^2 / ((5/3)^2/3 + (1/3)^2/2) = 4 / (25/27 + 1/18) = 4 / (53/54) = 216/53
HAND_T = 3 / math.sqrt(2)
HAND_DF = 216 / 53


# ---------------------------------------------------------------- holm


def test_holm_hand_worked():
    # m = 4; sorted: 0.005 (idx 3), 0.01 (idx 0), 0.03 (idx 2), 0.04 (idx 1)
    # scaled:  4*0.005 = 0.02, 3*0.01 = 0.03, 2*0.03 = 0.06, 1*0.04 = 0.04
    # running max:       0.02,          0.03,          0.06,          0.06
    # back to input order: [0.03, 0.06, 0.06, 0.02]
    got = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(got, [0.03, 0.06, 0.06, 0.02], rtol=1e-12)


def test_holm_monotonicity_enforced():
    # m = 3; scaled: 3*0.01 = 0.03, 2*0.02 = 0.04, 1*0.025 = 0.025
    # Without the running max the largest p would get the smallest adjusted
    # value (0.025 < 0.04); Holm's step-down forces it up to 0.04.
    got = holm([0.01, 0.02, 0.025])
    np.testing.assert_allclose(got, [0.03, 0.04, 0.04], rtol=1e-12)


def test_holm_capped_at_one():
    # m = 3; scaled: 3*0.02 = 0.06, min(1, 2*0.6 = 1.2) = 1, 1*0.7 = 0.7
    # running max: 0.06, 1, 1
    got = holm([0.7, 0.02, 0.6])
    np.testing.assert_allclose(got, [1.0, 0.06, 1.0], rtol=1e-12)
    assert np.all(got <= 1.0)


def test_holm_nan_left_alone_and_not_counted():
    # NaN excluded, so m = 2: scaled 2*0.01 = 0.02, 1*0.04 = 0.04
    got = holm([0.01, np.nan, 0.04])
    assert np.isnan(got[1])
    np.testing.assert_allclose(got[[0, 2]], [0.02, 0.04], rtol=1e-12)
    assert np.all(np.isnan(holm([np.nan, np.nan])))


def test_holm_edge_shapes():
    assert holm([]).shape == (0,)
    np.testing.assert_allclose(holm([0.3]), [0.3])
    # Ties: scaled 2*0.1 = 0.2, 1*0.1 = 0.1 -> running max 0.2, 0.2
    np.testing.assert_allclose(holm([0.1, 0.1]), [0.2, 0.2])


@pytest.mark.parametrize("bad", [[0.1, 1.5], [-0.1, 0.2], [0.1, np.inf]])
def test_holm_rejects_out_of_range(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm(bad)


def test_holm_rejects_2d():
    with pytest.raises(ValueError, match="1-D"):
        holm([[0.1, 0.2]])


# ---------------------------------------------------------------- welch


def test_welch_t_df_against_plain_numpy():
    a, b = np.array(A), np.array(B)
    ma, mb = a.sum() / a.size, b.sum() / b.size
    va = ((a - ma) ** 2).sum() / (a.size - 1) / a.size
    vb = ((b - mb) ** 2).sum() / (b.size - 1) / b.size
    t = (ma - mb) / np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    assert t == pytest.approx(HAND_T, rel=1e-12)
    assert df == pytest.approx(HAND_DF, rel=1e-12)

    res = welch(A, B)
    assert isinstance(res, WelchResult)
    assert res.t == pytest.approx(t, rel=1e-12)
    assert res.df == pytest.approx(df, rel=1e-12)
    assert res.p == pytest.approx(2 * sps.t.sf(HAND_T, HAND_DF), rel=1e-9)


def test_welch_one_sided_alternatives():
    greater = welch(A, B, alternative="greater")
    less = welch(A, B, alternative="less")
    assert greater.p == pytest.approx(sps.t.sf(HAND_T, HAND_DF), rel=1e-9)
    assert less.p == pytest.approx(sps.t.cdf(HAND_T, HAND_DF), rel=1e-9)
    assert greater.t == less.t == pytest.approx(HAND_T)


def test_welch_is_frozen_and_antisymmetric():
    res = welch(A, B)
    with pytest.raises(AttributeError):
        res.t = 0.0
    swapped = welch(B, A)
    assert swapped.t == pytest.approx(-res.t)
    assert swapped.df == pytest.approx(res.df)
    assert swapped.p == pytest.approx(res.p)


def test_welch_rejects_unknown_alternative():
    with pytest.raises(ValueError, match="alternative"):
        welch(A, B, alternative="bigger")


# ---------------------------------------------------------------- mean_diff_ci


def test_mean_diff_ci_hand():
    # diff = 5 - 2 = 3, se = sqrt(2), df = 216/53 (see top of file)
    crit = sps.t.ppf(0.975, HAND_DF)
    diff, lo, hi = mean_diff_ci(A, B)
    assert diff == pytest.approx(3.0, rel=1e-12)
    assert lo == pytest.approx(3.0 - crit * math.sqrt(2), rel=1e-10)
    assert hi == pytest.approx(3.0 + crit * math.sqrt(2), rel=1e-10)

    crit90 = sps.t.ppf(0.95, HAND_DF)
    _, lo90, hi90 = mean_diff_ci(A, B, level=0.90)
    assert hi90 - lo90 == pytest.approx(2 * crit90 * math.sqrt(2), rel=1e-10)
    assert lo < lo90 < hi90 < hi


def test_mean_diff_ci_contains_zero_for_identical_samples():
    diff, lo, hi = mean_diff_ci([1.0, 2.0, 4.0], [1.0, 2.0, 4.0])
    assert diff == 0.0
    assert lo < 0.0 < hi


def test_mean_diff_ci_excludes_zero_when_well_separated():
    diff, lo, hi = mean_diff_ci([10.0, 11.0, 12.0], [0.0, 1.0, 2.0])
    assert diff == pytest.approx(10.0)
    assert 0.0 < lo < diff < hi


@pytest.mark.parametrize("level", [0.0, 1.0, 1.5, -0.2])
def test_mean_diff_ci_rejects_bad_level(level):
    with pytest.raises(ValueError, match="level"):
        mean_diff_ci(A, B, level=level)


# ---------------------------------------------------------------- hedges_g


def test_hedges_g_textbook_example():
    # a = [3, 5, 7]: mean 5, s^2 = (4 + 0 + 4)/2 = 4
    # b = [1, 3, 5]: mean 3, s^2 = 4
    # pooled SD = sqrt((2*4 + 2*4) / 4) = 2, so d = (5 - 3)/2 = 1
    # df = 4: J = Γ(2) / (sqrt(2) Γ(3/2)) = 1 / (sqrt(2) * sqrt(pi)/2)
    #           = sqrt(2/pi) ≈ 0.797885, so g = sqrt(2/pi)
    assert hedges_g([3, 5, 7], [1, 3, 5]) == pytest.approx(
        math.sqrt(2 / math.pi), rel=1e-12
    )
    assert hedges_g([1, 3, 5], [3, 5, 7]) == pytest.approx(
        -math.sqrt(2 / math.pi), rel=1e-12
    )
    # At df = 4 the approximation 1 - 3/15 = 0.8 is 0.27% off: outside 0.1%.
    assert abs(0.8 / math.sqrt(2 / math.pi) - 1) > 1e-3


def test_hedges_g_df8_exact_correction():
    # a = [1..5]: mean 3, s^2 = 10/4 = 2.5; b = a + 2: mean 5, s^2 = 2.5
    # pooled SD = sqrt(2.5), d = -2/sqrt(2.5)
    # df = 8: J = Γ(4) / (2 Γ(7/2)) = 6 / (2 * 1.875 sqrt(pi)) = 1.6/sqrt(pi)
    a = [1, 2, 3, 4, 5]
    b = [3, 4, 5, 6, 7]
    j = 1.6 / math.sqrt(math.pi)
    assert hedges_g(a, b) == pytest.approx(j * -2 / math.sqrt(2.5), rel=1e-12)


def test_hedges_g_approximation_claim_df_ge_8():
    # Docstring claim: 1 - 3/(4 df - 1) is within 0.1% of the exact J for
    # df >= 8. Exact J here uses math.lgamma, not scipy.
    for df in range(8, 3001):
        exact = math.exp(math.lgamma(df / 2) - math.lgamma((df - 1) / 2))
        exact /= math.sqrt(df / 2)
        approx = 1 - 3 / (4 * df - 1)
        assert abs(approx / exact - 1) < 1e-3, df


def test_hedges_g_large_samples_do_not_overflow():
    # Γ(df/2) overflows a float for df ~ 350; the log-gamma route must not.
    rng = np.random.default_rng(0)
    a = rng.standard_normal(2000) + 0.5
    b = rng.standard_normal(2000)
    df = 3998
    pooled = math.sqrt((1999 * a.var(ddof=1) + 1999 * b.var(ddof=1)) / df)
    d = (a.mean() - b.mean()) / pooled
    assert hedges_g(a, b) == pytest.approx(d * (1 - 3 / (4 * df - 1)), rel=1e-8)


def test_hedges_g_constant_samples_is_nan():
    assert math.isnan(hedges_g([1.0, 1.0], [1.0, 1.0]))


# ---------------------------------------------------------------- prob_superiority


def test_prob_superiority_complete_separation():
    assert prob_superiority([5, 6, 7], [1, 2]) == 1.0
    assert prob_superiority([1, 2], [5, 6, 7]) == 0.0


def test_prob_superiority_identical_samples():
    # 9 pairs: 3 wins, 3 losses, 3 ties -> (3 + 0.5*3) / 9 = 0.5
    assert prob_superiority([1, 2, 3], [1, 2, 3]) == pytest.approx(0.5)
    assert prob_superiority([4.0, 4.0], [4.0, 4.0, 4.0]) == pytest.approx(0.5)


def test_prob_superiority_with_ties_by_counting():
    # a = [1, 2, 3], b = [2, 2, 4]; pairs (win=1, tie=0.5, loss=0):
    #   a=1: vs 2, 2, 4 -> 0 + 0 + 0 = 0
    #   a=2: vs 2, 2, 4 -> 0.5 + 0.5 + 0 = 1
    #   a=3: vs 2, 2, 4 -> 1 + 1 + 0 = 2
    # total 3 over 9 pairs -> 1/3
    assert prob_superiority([1, 2, 3], [2, 2, 4]) == pytest.approx(1 / 3)
    assert prob_superiority([2, 2, 4], [1, 2, 3]) == pytest.approx(2 / 3)


def test_prob_superiority_matches_pair_counting_on_random_ties():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 5, size=13).astype(float)
    b = rng.integers(0, 5, size=8).astype(float)
    diff = a[:, None] - b[None, :]
    expected = ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size
    assert prob_superiority(a, b) == pytest.approx(expected, rel=1e-12)


def test_prob_superiority_single_values():
    assert prob_superiority([2.0], [1.0]) == 1.0
    assert prob_superiority([1.0], [1.0]) == 0.5


# ---------------------------------------------------------------- min_detectable_effect


def test_mde_n5_about_2_02_and_monte_carlo_power():
    d = min_detectable_effect(5, 5)
    assert d == pytest.approx(2.02, abs=0.01)

    # Independent check: simulate 20,000 pooled two-sample t-tests at d.
    n, reps = 5, 20_000
    rng = np.random.default_rng(20240607)
    a = rng.standard_normal((reps, n)) + d
    b = rng.standard_normal((reps, n))
    pooled_var = (a.var(axis=1, ddof=1) + b.var(axis=1, ddof=1)) / 2
    t = (a.mean(axis=1) - b.mean(axis=1)) / np.sqrt(pooled_var * (2 / n))
    crit = 2.306004135  # t_{0.975, 8} from standard tables
    power = np.mean(np.abs(t) > crit)
    assert abs(power - 0.8) < 0.02


def test_mde_n64_about_half():
    d = min_detectable_effect(64, 64)
    assert d == pytest.approx(0.50, abs=0.005)
    # Normal approximation (z_{.975} + z_{.80}) sqrt(2/64) ignores the t
    # tails, so it sits slightly below the exact answer.
    normal = (1.959963985 + 0.841621234) * math.sqrt(2 / 64)
    assert normal < d < normal * 1.01


def test_mde_decreases_with_n_and_is_symmetric():
    values = [min_detectable_effect(n, n) for n in (2, 3, 5, 10, 20, 64, 200)]
    assert all(x > y for x, y in zip(values, values[1:]))
    assert min_detectable_effect(5, 12) == pytest.approx(
        min_detectable_effect(12, 5), rel=1e-9
    )


def test_mde_high_power_small_n_stays_finite():
    # Large effects push the noncentral t far into its tails.
    d = min_detectable_effect(2, 2, power=0.99)
    assert math.isfinite(d) and d > min_detectable_effect(2, 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n1=1, n2=5), "n1"),
        (dict(n1=5, n2=1), "n2"),
        (dict(n1=5.5, n2=5), "n1"),
        (dict(n1=5, n2=5, alpha=0.0), "alpha"),
        (dict(n1=5, n2=5, alpha=1.0), "alpha"),
        (dict(n1=5, n2=5, power=0.04), "power"),
        (dict(n1=5, n2=5, power=1.0), "power"),
    ],
)
def test_mde_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        min_detectable_effect(**kwargs)


# ---------------------------------------------------------------- input validation

TWO_SAMPLE_MIN2 = [welch, mean_diff_ci, hedges_g]


@pytest.mark.parametrize("fn", TWO_SAMPLE_MIN2)
@pytest.mark.parametrize("a, b", [([1.0], [1.0, 2.0]), ([1.0, 2.0], []), ([], [])])
def test_too_small_samples_raise(fn, a, b):
    with pytest.raises(ValueError, match="at least 2"):
        fn(a, b)


@pytest.mark.parametrize("a, b", [([], [1.0]), ([1.0], [])])
def test_prob_superiority_empty_raises(a, b):
    with pytest.raises(ValueError, match="at least 1"):
        prob_superiority(a, b)


@pytest.mark.parametrize("fn", TWO_SAMPLE_MIN2 + [prob_superiority])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_raise(fn, bad):
    with pytest.raises(ValueError, match="non-finite"):
        fn([1.0, bad, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="non-finite"):
        fn([1.0, 2.0], [1.0, bad])


@pytest.mark.parametrize("fn", TWO_SAMPLE_MIN2 + [prob_superiority])
def test_two_dimensional_input_raises(fn):
    with pytest.raises(ValueError, match="1-D"):
        fn([[1.0, 2.0], [3.0, 4.0]], [1.0, 2.0])
