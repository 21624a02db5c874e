"""Disentanglement metrics on ground-truth factors, as disentanglement_lib computes them: FactorVAE, MIG, DCI, SAP.

Each metric follows one function of disentanglement_lib (Locatello et al. 2019, "Challenging Common
Assumptions in the Unsupervised Learning of Disentangled Representations";
google-research/disentanglement_lib, ``disentanglement_lib/evaluation/metrics/``), so that the scores
compare with published ones: :func:`factorvae_score` ``factor_vae.compute_factor_vae``, :func:`mig`
``mig.compute_mig``, :func:`dci` ``dci.compute_dci`` and :func:`sap` ``sap_score.compute_sap``.
Numpy, with scikit-learn where disentanglement_lib uses it: the mutual information of MIG, DCI's
gradient-boosted trees and SAP's linear SVMs. No torch, no files, no printing: long scoring reports
progress through a callback.

A representation is seen only through ``represent``, a callable mapping an int ``N x K`` array of
factor value indices to a float ``N x d`` array of codes (an encoder's posterior means). The
metrics that work on a fixed sample take ``codes`` (float ``N x d``) and ``factors`` (int ``N x K``)
directly. disentanglement_lib's ``unsupervised_study_v1`` sample counts are the defaults of
:class:`MetricCounts`. Every random draw comes from one ``numpy.random.Generator`` and every
estimator's ``random_state`` is the seed, so a seed fixes every value.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from joblib import Parallel, delayed
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import mutual_info_score
from sklearn.svm import LinearSVC

Represent = Callable[[np.ndarray], np.ndarray]

# Rows handed to ``represent`` per call while collecting FactorVAE votes: large enough that a neural
# net sees big batches, small enough that the factor and code arrays stay a few tens of MB.
_VOTE_ROWS = 65_536


@dataclass(frozen=True)
class MetricCounts:
    """Sample counts of :func:`evaluate`; defaults are disentanglement_lib's ``unsupervised_study_v1``.

    Attributes
    ----------
    n_train : int
        Training samples for MIG, DCI and SAP (``mig.num_train``, ``dci.num_train``,
        ``sap_score.num_train``: 10,000).
    n_test : int
        Test samples for DCI's informativeness and SAP's classifiers (``dci.num_test``,
        ``sap_score.num_test``: 5,000).
    mig_bins : int
        Equal-width bins per code dimension for MIG (``discretizer.num_bins``: 20).
    factorvae_batch_size : int
        Samples per FactorVAE vote (``factor_vae_score.batch_size``: 64).
    factorvae_n_train : int
        Votes that train the FactorVAE majority-vote classifier (10,000).
    factorvae_n_eval : int
        Votes that score it (5,000).
    factorvae_n_variance : int
        Samples for the global code variances (``num_variance_estimate``: 10,000).
    dci_rounds : int
        Boosting rounds of each factor's trees in DCI (sklearn's ``n_estimators``, whose default of
        100 disentanglement_lib keeps).
    """

    n_train: int = 10_000
    n_test: int = 5_000
    mig_bins: int = 20
    factorvae_batch_size: int = 64
    factorvae_n_train: int = 10_000
    factorvae_n_eval: int = 5_000
    factorvae_n_variance: int = 10_000
    dci_rounds: int = 100


# ---------------------------------------------------------------- input checks


def _as_codes(codes, name: str) -> np.ndarray:
    x = np.asarray(codes, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D N x d array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return x


def _as_factors(factors, name: str) -> np.ndarray:
    f = np.asarray(factors)
    if f.ndim != 2:
        raise ValueError(f"{name} must be a 2-D N x K array, got shape {f.shape}")
    if not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"{name} must hold integer factor value indices, got dtype {f.dtype}")
    return f


def _paired(codes, factors, codes_name: str = "codes", factors_name: str = "factors"):
    x = _as_codes(codes, codes_name)
    f = _as_factors(factors, factors_name)
    if len(x) != len(f):
        raise ValueError(f"{codes_name} has {len(x)} rows but {factors_name} has {len(f)}; they must match")
    if len(x) == 0:
        raise ValueError(f"{codes_name} and {factors_name} are empty")
    return x, f


def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _factor_sizes(factor_sizes) -> np.ndarray:
    sizes = np.asarray(factor_sizes)
    if sizes.ndim != 1 or sizes.size == 0 or not np.issubdtype(sizes.dtype, np.integer) or np.any(sizes < 1):
        raise ValueError(f"factor_sizes must be a non-empty sequence of integers >= 1, got {factor_sizes!r}")
    return sizes.astype(np.int64)


def _sample_factors(sizes: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, sizes, size=(n, sizes.size))


def _represent(represent: Represent, factors: np.ndarray, width: int | None = None) -> np.ndarray:
    codes = _as_codes(represent(factors), "represent(factors)")
    if len(codes) != len(factors):
        raise ValueError(f"represent returned {len(codes)} rows for {len(factors)} factor vectors")
    if width is not None and codes.shape[1] != width:
        raise ValueError(f"represent returned {codes.shape[1]} code dimensions, earlier calls returned {width}")
    return codes


# ---------------------------------------------------------------- MIG


def mig(codes, factors, bins: int = 20) -> float:
    """Mutual Information Gap of a representation.

    Chen et al. 2018, "Isolating Sources of Disentanglement in Variational Autoencoders"
    (NeurIPS), as disentanglement_lib's ``mig.compute_mig``: each code dimension is cut into
    ``bins`` equal-width bins over its own sample range (``np.histogram`` edges), the mutual
    information ``I(z_i; v_k)`` in nats is the plug-in estimate from the contingency counts
    (``sklearn.metrics.mutual_info_score``), and each factor's entropy ``H(v_k)`` is that of its
    empirical distribution. Then

    ``MIG = 1/K sum_k (I(z_(1); v_k) - I(z_(2); v_k)) / H(v_k)``

    where ``z_(1)``, ``z_(2)`` are the code dimensions with the largest and second largest mutual
    information with ``v_k``. A constant code dimension falls in one bin and has zero mutual
    information.

    Parameters
    ----------
    codes : array_like of float, shape (N, d)
        Representation of N samples, d >= 2.
    factors : array_like of int, shape (N, K)
        Ground-truth factor values of the same samples; each factor must take at least two values.
    bins : int
        Equal-width bins per code dimension (disentanglement_lib: 20).

    Returns
    -------
    float
        MIG in [0, 1]; higher is more disentangled.

    Raises
    ------
    ValueError
        If the arrays are malformed or of different lengths, d < 2 (no gap to take), ``bins`` < 1,
        or a factor is constant in the sample (its entropy, the normaliser, is zero).
    """
    x, f = _paired(codes, factors)
    bins = _positive_int(bins, "bins")
    if x.shape[1] < 2:
        raise ValueError(f"MIG needs at least 2 code dimensions to take a gap, got {x.shape[1]}")
    # np.digitize against the left edges numbers the bins 1..bins, the largest value landing in the last.
    binned = [np.digitize(col, np.histogram_bin_edges(col, bins)[:-1]) for col in x.T]
    gaps = []
    for k in range(f.shape[1]):
        entropy = mutual_info_score(f[:, k], f[:, k])
        if entropy == 0.0:
            raise ValueError(f"factor {k} takes a single value in the sample; MIG divides by its entropy")
        info = np.sort([mutual_info_score(f[:, k], code) for code in binned])
        gaps.append((info[-1] - info[-2]) / entropy)
    return float(np.mean(gaps))


# ---------------------------------------------------------------- DCI


def _split(codes_train, factors_train, codes_test, factors_test, metric: str):
    """The checked train and test arrays of a metric that fits a classifier per factor."""
    x_train, f_train = _paired(codes_train, factors_train, "codes_train", "factors_train")
    x_test, f_test = _paired(codes_test, factors_test, "codes_test", "factors_test")
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"codes_train has {x_train.shape[1]} dimensions but codes_test has {x_test.shape[1]}")
    if f_train.shape[1] != f_test.shape[1]:
        raise ValueError(f"factors_train has {f_train.shape[1]} factors but factors_test has {f_test.shape[1]}")
    for k in range(f_train.shape[1]):
        if np.all(f_train[:, k] == f_train[0, k]):
            raise ValueError(f"factor {k} takes a single value in the training sample; {metric} has no classes "
                             "to tell apart")
    return x_train, f_train, x_test, f_test


def _fit_gbt(k: int, x_train, y_train, x_test, y_test, random_state: int,
             rounds: int) -> tuple[int, np.ndarray, float, float]:
    """Factor k's boosted trees: k, the codes' importances, then the train and test accuracy."""
    model = GradientBoostingClassifier(n_estimators=rounds, random_state=random_state).fit(x_train, y_train)
    return (k, np.abs(model.feature_importances_), float(np.mean(model.predict(x_train) == y_train)),
            float(np.mean(model.predict(x_test) == y_test)))


def importance_gbt(
    codes_train, factors_train, codes_test, factors_test, random_state: int = 0, n_jobs: int = 1,
    progress: Callable[[str], None] = lambda line: None, rounds: int = 100,
) -> tuple[np.ndarray, float, float]:
    """Importance of each code for each factor, and the informativeness, from gradient-boosted trees.

    disentanglement_lib's ``dci.compute_importance_gbt``: per factor, sklearn's
    ``GradientBoostingClassifier()`` with its defaults (100 rounds of depth-3 regression trees on the
    multinomial deviance, learning rate 0.1, every threshold tried) is fitted on the training codes,
    its ``feature_importances_`` (impurity reduction per code, summing to 1, all zeros when no tree
    splits) are the factor's column, and its accuracy on the training and on the test codes is the
    factor's informativeness. ``random_state`` is pinned, where disentanglement_lib leaves it unset,
    so that the order in which the trees try the codes, which settles exact ties, is fixed too.

    The factors are fitted in ``n_jobs`` threads (sklearn builds its trees without the GIL). A factor
    of n > 2 values costs ``rounds`` n trees (a binary one ``rounds``), nearly all of the scoring's
    time at dSprites' sizes.

    Parameters
    ----------
    codes_train, codes_test : array_like of float, shapes (N, d) and (M, d)
        Representation of the training and test samples.
    factors_train, factors_test : array_like of int, shapes (N, K) and (M, K)
        Their ground-truth factor values; each factor takes at least two values in training.
    random_state : int
        Seed of every factor's trees.
    n_jobs : int
        Threads fitting factors at once.
    progress : callable
        Called with a line of text as each factor's fit ends.
    rounds : int
        Boosting rounds per factor (``n_estimators``); disentanglement_lib's are sklearn's default, 100.

    Returns
    -------
    importance : numpy.ndarray, shape (d, K)
        Importance of code i for factor j; each column sums to 1 or is all zeros.
    informativeness_train, informativeness_test : float
        Accuracy of the factors' classifiers on the training and the test split, averaged over factors.

    Raises
    ------
    ValueError
        If an array is malformed, a codes/factors pair differs in length, the splits differ in d or
        K, a factor is constant in training, or ``n_jobs`` or ``rounds`` < 1.
    """
    x_train, f_train, x_test, f_test = _split(codes_train, factors_train, codes_test, factors_test, "DCI")
    n_jobs = _positive_int(n_jobs, "n_jobs")
    rounds = _positive_int(rounds, "rounds")
    n_factors = f_train.shape[1]
    start = time.perf_counter()
    # Unordered, so that each factor's line comes as its fit ends.
    fits = Parallel(n_jobs=n_jobs, prefer="threads", return_as="generator_unordered")(
        delayed(_fit_gbt)(k, x_train, f_train[:, k], x_test, f_test[:, k], random_state, rounds)
        for k in range(n_factors))
    importance = np.zeros((x_train.shape[1], n_factors))
    train, test = np.zeros(n_factors), np.zeros(n_factors)
    for done, (k, column, train[k], test[k]) in enumerate(fits, start=1):
        importance[:, k] = column
        progress(f"DCI: factor {k} fitted ({np.unique(f_train[:, k]).size} values, {rounds} rounds), {done} of "
                 f"{n_factors} factors in {time.perf_counter() - start:.0f} s")
    return importance, float(train.mean()), float(test.mean())


def _weighted_one_minus_entropy(r: np.ndarray) -> float:
    """``sum_i rho_i (1 - H_n(P_i.))`` over the rows of r: disentanglement_lib's ``dci.disentanglement``.

    ``P_i. = r_i. / sum_j r_ij`` after adding 1e-11 to every entry, as disentanglement_lib does, with
    the entropy in base n (the row length); ``rho_i`` is row i's share of the total. A row of zeros
    is uniform, of entropy 1, and has weight 0. An all-zero matrix scores 0, where
    disentanglement_lib's uniform weights on rows of entropy 1 give 0 up to rounding.
    """
    if r.sum() == 0:
        return 0.0
    p = r + 1e-11
    p /= p.sum(axis=1, keepdims=True)
    entropy = -np.sum(p * np.log(p), axis=1) / np.log(r.shape[1])
    return float(np.sum((1.0 - entropy) * r.sum(axis=1) / r.sum()))


def _as_importance(importance) -> np.ndarray:
    r = np.asarray(importance, dtype=float)
    if r.ndim != 2 or min(r.shape) < 2:
        raise ValueError(f"importance must be a d x K matrix with d >= 2 codes and K >= 2 factors, got shape {r.shape}")
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ValueError("importance must hold finite non-negative values")
    return r


def disentanglement_from_importance(importance) -> float:
    """DCI disentanglement of an importance matrix, as disentanglement_lib's ``dci.disentanglement``.

    Eastwood & Williams 2018, "A Framework for the Quantitative Evaluation of Disentangled
    Representations" (ICLR), Section 3: with ``P_ij = R_ij / sum_k R_ik`` the share of code i's
    importance that goes to factor j, ``D_i = 1 - H_K(P_i.)`` (entropy with log base K) and
    ``D = sum_i rho_i D_i`` with weights ``rho_i = sum_j R_ij / sum_ij R_ij``. Like
    disentanglement_lib, 1e-11 is added to every ``R_ij`` inside the entropy, which moves D by
    about 1e-10; a code of zero importance has weight 0, and an all-zero matrix gives 0.

    Parameters
    ----------
    importance : array_like of float, shape (d, K)
        Non-negative importance of code i for factor j, d >= 2, K >= 2.

    Returns
    -------
    float
        D in [0, 1]; 1 when every important code matters for a single factor.

    Raises
    ------
    ValueError
        If the matrix is not 2-D, has fewer than 2 rows or columns, or holds negative or non-finite values.
    """
    return _weighted_one_minus_entropy(_as_importance(importance))


def completeness_from_importance(importance) -> float:
    """DCI completeness of an importance matrix, as disentanglement_lib's ``dci.completeness``.

    Eastwood & Williams 2018, Section 3: the same as :func:`disentanglement_from_importance` over
    factors instead of codes, ``C = sum_j rho_j (1 - H_d(P_.j))`` with ``P_ij = R_ij / sum_k R_kj``,
    the entropy in base d and ``rho_j`` factor j's share of the total importance.

    Parameters
    ----------
    importance : array_like of float, shape (d, K)
        Non-negative importance of code i for factor j, d >= 2, K >= 2.

    Returns
    -------
    float
        C in [0, 1]; 1 when every factor is captured by a single code.

    Raises
    ------
    ValueError
        If the matrix is not 2-D, has fewer than 2 rows or columns, or holds negative or non-finite values.
    """
    return _weighted_one_minus_entropy(_as_importance(importance).T)


def dci(
    codes_train, factors_train, codes_test, factors_test, random_state: int = 0, n_jobs: int = 1,
    progress: Callable[[str], None] = lambda line: None, rounds: int = 100,
) -> dict[str, float]:
    """DCI disentanglement, completeness and informativeness, as disentanglement_lib's ``dci.compute_dci``.

    Eastwood & Williams 2018, with disentanglement_lib's estimator: the importances and accuracies of
    :func:`importance_gbt`, then :func:`disentanglement_from_importance` and
    :func:`completeness_from_importance`. The parameters are :func:`importance_gbt`'s.

    Returns
    -------
    dict of str to float
        ``disentanglement``, ``completeness``, ``informativeness_train`` and
        ``informativeness_test``, disentanglement_lib's keys, all in [0, 1] and higher is better.

    Raises
    ------
    ValueError
        As :func:`importance_gbt`, or when d < 2 or K < 2 (an entropy of base 1).
    """
    d, k = np.shape(codes_train)[-1], np.shape(factors_train)[-1]
    if d < 2 or k < 2:
        raise ValueError(f"DCI needs at least 2 code dimensions and 2 factors (entropies of base d and K), "
                         f"got d = {d}, K = {k}")
    importance, train, test = importance_gbt(codes_train, factors_train, codes_test, factors_test,
                                             random_state, n_jobs, progress, rounds)
    return {"disentanglement": disentanglement_from_importance(importance),
            "completeness": completeness_from_importance(importance),
            "informativeness_train": train, "informativeness_test": test}


# ---------------------------------------------------------------- SAP


def sap(codes_train, factors_train, codes_test, factors_test, random_state: int = 0) -> float:
    """Separated Attribute Predictability (SAP) score, as disentanglement_lib's ``sap_score.compute_sap``.

    Kumar et al. 2018, "Variational Inference of Disentangled Latent Concepts from Unlabeled
    Observations" (ICLR), for discrete factors (``continuous_factors=False``): for every code
    dimension i and factor j, sklearn's ``LinearSVC(C=0.01, class_weight="balanced")`` (one-vs-rest,
    squared hinge loss, the intercept penalised with the weight) predicts factor j from code i
    alone, trained on the training split; its accuracy on the test split is ``S[i, j]``, and

    ``SAP = 1/K sum_j (S_(1)j - S_(2)j)``,

    the mean over factors of the gap between the best and second best code. The small C and the
    penalised intercept make the score depend on each code's scale and offset, as
    disentanglement_lib's does. ``dual="auto"`` (sklearn's default from 1.5) solves each fit in the
    primal, where the sklearn disentanglement_lib used solved the dual: the same problem to the
    same tolerance, over ten times quicker at 5,000 samples, whose predictions differ on a few test
    points in ten thousand.

    Parameters
    ----------
    codes_train, codes_test : array_like of float, shapes (N, d) and (M, d)
        Representation of the training and test samples, d >= 2.
    factors_train, factors_test : array_like of int, shapes (N, K) and (M, K)
        Their ground-truth factor values; each factor takes at least two values in training. A test
        value never seen in training is never predicted.
    random_state : int
        Seed of every classifier (used only by a dual solver).

    Returns
    -------
    float
        SAP in [0, 1]; higher is more disentangled.

    Raises
    ------
    ValueError
        If an array is malformed, a codes/factors pair differs in length, the splits differ in d or
        K, a factor is constant in training, or d < 2 (no second best code).
    """
    x_train, f_train, x_test, f_test = _split(codes_train, factors_train, codes_test, factors_test, "SAP")
    if x_train.shape[1] < 2:
        raise ValueError(f"SAP needs at least 2 code dimensions to take a gap, got {x_train.shape[1]}")
    score = np.zeros((x_train.shape[1], f_train.shape[1]))
    for i in range(x_train.shape[1]):
        for j in range(f_train.shape[1]):
            classifier = LinearSVC(C=0.01, class_weight="balanced", dual="auto", random_state=random_state)
            classifier.fit(x_train[:, i : i + 1], f_train[:, j])
            score[i, j] = np.mean(classifier.predict(x_test[:, i : i + 1]) == f_test[:, j])
    top_two = np.sort(score, axis=0)[-2:]
    return float(np.mean(top_two[1] - top_two[0]))


# ---------------------------------------------------------------- FactorVAE score


def _factorvae_votes(
    represent: Represent,
    sizes: np.ndarray,
    rng: np.random.Generator,
    n_votes: int,
    batch_size: int,
    scale: np.ndarray,
    active: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Fixed factor and voted code dimension of ``n_votes`` batches."""
    k_all, dim_all = [], []
    votes_per_call = max(1, _VOTE_ROWS // batch_size)
    for start in range(0, n_votes, votes_per_call):
        v = min(votes_per_call, n_votes - start)
        k = rng.integers(sizes.size, size=v)
        factors = _sample_factors(sizes, v * batch_size, rng).reshape(v, batch_size, sizes.size)
        # As disentanglement_lib: the fixed factor takes the value drawn for the batch's first row.
        factors[np.arange(v), :, k] = factors[np.arange(v), :1, k]
        codes = _represent(represent, factors.reshape(v * batch_size, sizes.size), scale.size)
        local = (codes[:, active] / scale[active]).reshape(v, batch_size, active.size).var(axis=1, ddof=1)
        k_all.append(k)
        dim_all.append(active[np.argmin(local, axis=1)])
    return np.concatenate(k_all), np.concatenate(dim_all)


def factorvae_score(
    represent: Represent,
    factor_sizes,
    rng: np.random.Generator,
    batch_size: int = 64,
    n_train: int = 10_000,
    n_eval: int = 5_000,
    n_variance: int = 10_000,
    prune: float = 0.05,
) -> float:
    """FactorVAE disentanglement score.

    Kim & Mnih 2018, "Disentangling by Factorising" (ICML), as disentanglement_lib's
    ``factor_vae.compute_factor_vae``. Each code dimension's global standard deviation comes from
    ``n_variance`` uniformly drawn factor vectors; dimensions with a standard deviation below
    ``prune`` are inactive (disentanglement_lib's ``prune_dims.threshold = 0.05``, compared with
    ``sqrt(variance)``; a dimension of zero spread is never active). A vote draws a factor k
    uniformly and ``batch_size`` factor vectors, uniform except that factor k takes one random value
    throughout; the codes are divided by the global standard deviation and the active dimension
    with the smallest variance within the batch (ddof=1; exact ties to the lowest index) votes for
    k. A majority-vote classifier (each dimension predicts the factor it received most training
    votes for, ties to the lowest factor) is trained on ``n_train`` votes, and the score is its
    accuracy on ``n_eval`` fresh votes. With no active dimension the score is 0.

    ``represent`` sees many votes per call, each vote ``batch_size`` consecutive rows, so that a
    neural network gets large batches.

    Parameters
    ----------
    represent : callable
        Maps an int (n, K) array of factor value indices to a float (n, d) array of codes.
    factor_sizes : sequence of int
        Number of values of each factor; factor values are drawn uniformly from 0..size-1.
    rng : numpy.random.Generator
        Source of every random draw.
    batch_size : int
        Samples per vote, at least 2.
    n_train, n_eval : int
        Votes that train and that score the classifier.
    n_variance : int
        Samples for the global variances, at least 2.
    prune : float
        Smallest global standard deviation of an active dimension.

    Returns
    -------
    float
        Accuracy in [0, 1]; 1 when fixing any factor always leaves one dimension, its own, still.

    Raises
    ------
    ValueError
        If a count or ``prune`` is out of range, ``factor_sizes`` is malformed, or ``represent``
        returns an array of the wrong shape or with non-finite values.
    """
    sizes = _factor_sizes(factor_sizes)
    batch_size = _positive_int(batch_size, "batch_size", minimum=2)
    n_train = _positive_int(n_train, "n_train")
    n_eval = _positive_int(n_eval, "n_eval")
    n_variance = _positive_int(n_variance, "n_variance", minimum=2)
    if not (np.isfinite(prune) and prune >= 0):
        raise ValueError(f"prune must be a finite number >= 0, got {prune!r}")
    scale = _represent(represent, _sample_factors(sizes, n_variance, rng)).std(axis=0, ddof=1)
    active = np.flatnonzero((scale >= prune) & (scale > 0))
    if active.size == 0:
        return 0.0
    k, dim = _factorvae_votes(represent, sizes, rng, n_train, batch_size, scale, active)
    votes = np.bincount(k * scale.size + dim, minlength=sizes.size * scale.size).reshape(sizes.size, scale.size)
    classifier = np.argmax(votes, axis=0)
    k, dim = _factorvae_votes(represent, sizes, rng, n_eval, batch_size, scale, active)
    return float(np.mean(classifier[dim] == k))


# ---------------------------------------------------------------- all of them


def evaluate(
    represent: Represent, factor_sizes, seed: int = 0, counts: MetricCounts = MetricCounts(), n_jobs: int = 1,
    progress: Callable[[str], None] = lambda line: None,
) -> dict[str, float]:
    """FactorVAE score, MIG, DCI (disentanglement, completeness, informativeness) and SAP of one representation.

    One ``numpy.random.default_rng(seed)`` draws a training set of ``counts.n_train`` and a test set
    of ``counts.n_test`` uniform factor vectors, shared by MIG (training set), DCI and SAP (both),
    and then everything :func:`factorvae_score` draws; DCI's trees and SAP's classifiers take
    ``seed`` as their ``random_state``. So the seed fixes every value. disentanglement_lib draws
    separate samples for each metric; sharing them changes no metric's distribution.

    Parameters
    ----------
    represent : callable
        Maps an int (n, K) array of factor value indices to a float (n, d) array of codes, d >= 2.
    factor_sizes : sequence of int
        Number of values of each factor, at least 2 factors of at least 2 values each.
    seed : int
        Seed of the generator and of the estimators.
    counts : MetricCounts
        Sample counts; the defaults are disentanglement_lib's.
    n_jobs : int
        Threads fitting DCI's factors at once (see :func:`importance_gbt`).
    progress : callable
        Called with a line of text after each step, DCI's factors one by one.

    Returns
    -------
    dict of str to float
        ``factorvae_score``, ``mig``, ``dci_disentanglement``, ``dci_completeness``,
        ``dci_informativeness_train``, ``dci_informativeness_test`` and ``sap``.

    Raises
    ------
    ValueError
        If an input is malformed, or a metric's own requirement fails (see each metric).
    """
    sizes = _factor_sizes(factor_sizes)
    rng = np.random.default_rng(seed)
    factors_train = _sample_factors(sizes, _positive_int(counts.n_train, "counts.n_train"), rng)
    factors_test = _sample_factors(sizes, _positive_int(counts.n_test, "counts.n_test"), rng)
    rounds = _positive_int(counts.dci_rounds, "counts.dci_rounds")
    start = time.perf_counter()
    codes_train = _represent(represent, factors_train)
    codes_test = _represent(represent, factors_test, codes_train.shape[1])
    scores = {
        "factorvae_score": factorvae_score(
            represent,
            sizes,
            rng,
            batch_size=counts.factorvae_batch_size,
            n_train=counts.factorvae_n_train,
            n_eval=counts.factorvae_n_eval,
            n_variance=counts.factorvae_n_variance,
        ),
        "mig": mig(codes_train, factors_train, bins=counts.mig_bins),
    }
    progress(f"FactorVAE score and MIG in {time.perf_counter() - start:.0f} s; DCI's trees next, on "
             f"{len(codes_train):,} training codes")
    found = dci(codes_train, factors_train, codes_test, factors_test, random_state=seed, n_jobs=n_jobs,
                progress=progress, rounds=rounds)
    scores.update({f"dci_{name}": value for name, value in found.items()})
    scores["sap"] = sap(codes_train, factors_train, codes_test, factors_test, random_state=seed)
    return scores
