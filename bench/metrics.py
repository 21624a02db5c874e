"""Disentanglement metrics on ground-truth factors: FactorVAE score, MIG, DCI disentanglement, SAP.

Pure numpy (and scipy.sparse): no torch, no files, no printing. A representation is seen only
through ``represent``, a callable mapping an int ``N x K`` array of factor value indices to a float
``N x d`` array of codes (an encoder's posterior means). The metrics that work on a fixed sample take
``codes`` (float ``N x d``) and ``factors`` (int ``N x K``) directly.

Sample counts and conventions follow disentanglement_lib (Locatello et al. 2019, "Challenging
Common Assumptions in the Unsupervised Learning of Disentangled Representations"), whose
``unsupervised_study_v1`` metric configs are the defaults of :class:`MetricCounts`. Every random
draw comes from one ``numpy.random.Generator``, so a seed fixes every value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import sparse

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
        Test samples for SAP's classifiers (``sap_score.num_test``: 5,000).
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
    """

    n_train: int = 10_000
    n_test: int = 5_000
    mig_bins: int = 20
    factorvae_batch_size: int = 64
    factorvae_n_train: int = 10_000
    factorvae_n_eval: int = 5_000
    factorvae_n_variance: int = 10_000


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


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-np.sum(p * np.log(p)))


def _mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in mutual information in nats of two label arrays with values 0..A-1 and 0..B-1."""
    n_a, n_b = int(a.max()) + 1, int(b.max()) + 1
    joint = np.bincount(a * n_b + b, minlength=n_a * n_b).reshape(n_a, n_b).astype(float)
    total = joint.sum()
    rows, cols = np.nonzero(joint)
    p = joint[rows, cols] / total
    pa = joint.sum(axis=1)[rows] / total
    pb = joint.sum(axis=0)[cols] / total
    # Rounding can leave a tiny negative sum for independent labels; MI itself is never negative.
    return max(0.0, float(np.sum(p * (np.log(p) - np.log(pa) - np.log(pb)))))


def mig(codes, factors, bins: int = 20) -> float:
    """Mutual Information Gap of a representation.

    Chen et al. 2018, "Isolating Sources of Disentanglement in Variational Autoencoders"
    (NeurIPS), with disentanglement_lib's discrete estimator: each code dimension is cut into
    ``bins`` equal-width bins over its own sample range (``np.histogram`` edges), the mutual
    information ``I(z_i; v_k)`` in nats is the plug-in estimate from the contingency counts, and
    each factor's entropy ``H(v_k)`` is that of its empirical distribution. Then

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
    binned = np.stack([np.digitize(col, np.histogram_bin_edges(col, bins)[:-1]) - 1 for col in x.T], axis=1)
    gaps = []
    for k in range(f.shape[1]):
        _, labels = np.unique(f[:, k], return_inverse=True)
        entropy = _entropy(np.bincount(labels).astype(float))
        if entropy == 0.0:
            raise ValueError(f"factor {k} takes a single value in the sample; MIG divides by its entropy")
        info = np.sort([_mutual_information(binned[:, i], labels) for i in range(x.shape[1])])
        gaps.append((info[-1] - info[-2]) / entropy)
    return float(np.mean(gaps))


# ---------------------------------------------------------------- DCI disentanglement


def _split_bins(x: np.ndarray, max_bins: int) -> np.ndarray:
    """Bin index of every value in each column, from the column's ranks alone.

    A column with at most ``max_bins`` distinct values gets one bin per value, so every threshold
    between distinct values is a candidate split; a longer one is cut at ``max_bins - 1`` sample
    quantiles, as in LightGBM and sklearn's HistGradientBoosting. Either way the bins depend only on
    the order of the values, which keeps the importances invariant to strictly increasing maps.
    """
    n, d = x.shape
    sorted_x = np.sort(x, axis=0)
    quantile_rows = (np.arange(1, max_bins) * n) // max_bins
    out = np.empty((n, d), dtype=np.min_scalar_type(max_bins - 1))
    for i in range(d):
        distinct = np.unique(sorted_x[:, i])
        edges = distinct[:-1] if distinct.size <= max_bins else np.unique(sorted_x[quantile_rows, i])
        # side="left": a value equal to an edge joins the bin that edge closes, so bin b holds
        # exactly the values in (edges[b-1], edges[b]].
        out[:, i] = np.searchsorted(edges, x[:, i], side="left")
    return out


# Largest change of a logit in one round, as XGBoost's max_delta_step caps leaf values. Only the
# Newton step's blow-up on confidently wrong points reaches it, and such a step saturates the
# softmax either way; the cap keeps exp(step) finite.
_MAX_STEP = 50.0


def _stump_boosting_importance(
    bins: np.ndarray, max_bins: int, labels: np.ndarray, n_rounds: int, learning_rate: float
) -> np.ndarray:
    """Squared-error reduction credited to each code by multi-class gradient-boosted stumps."""
    n, d = bins.shape
    _, y = np.unique(labels, return_inverse=True)
    n_classes = int(y.max()) + 1
    importance = np.zeros(d)
    # Row (code i, bin b) of this 0/1 matrix marks the samples in that bin: one product sums the
    # residuals into the histogram of every code at once, which the split search scans. The product
    # is the bulk of the run and takes half the time in float32; the residuals lose nothing that
    # matters to a split at 1e-7 relative precision, and everything after the product is float64.
    rows = (np.arange(d) * max_bins + bins.astype(np.intp)).ravel()
    to_bins = sparse.csr_matrix(
        (np.ones(n * d, np.float32), (rows, np.repeat(np.arange(n), d))), shape=(d * max_bins, n)
    )
    n_left = np.cumsum(np.bincount(rows, minlength=d * max_bins).reshape(d, max_bins), axis=1).astype(float)
    splittable = (n_left > 0) & (n_left < n)
    if n_classes < 2 or not splittable.any():
        return importance
    inv_left = np.divide(1.0, n_left, out=np.zeros_like(n_left), where=splittable)
    inv_right = np.divide(1.0, n - n_left, out=np.zeros_like(n_left), where=splittable)
    bins_by_code = np.ascontiguousarray(bins.T)
    # Classes along rows and samples along columns keep every per-class sum a contiguous reduction;
    # only the residual, the histogram product's input, is laid out samples first.
    onehot = np.zeros((n, n_classes), np.float32)
    onehot[np.arange(n), y] = 1.0
    # Starting from the log class priors (sklearn's default initial estimator) gives the priors.
    prob = np.repeat(np.bincount(y)[:, None] / n, n, axis=1)
    all_classes = np.arange(n_classes)
    newton_scale = learning_rate * (n_classes - 1) / n_classes
    # Every per-sample array lives in a buffer reused across rounds: fresh multi-MB arrays would
    # cost as much in page faults as the arithmetic on them.
    left, work = np.empty((n_classes, n)), np.empty((n_classes, n))
    residual = np.empty((n, n_classes), np.float32)
    bins_of_split = np.empty((n_classes, n), bins.dtype)
    for _ in range(n_rounds):
        # The negative gradient of the softmax cross-entropy.
        np.subtract(onehot, prob.T, out=residual, casting="same_kind")
        hist = (to_bins @ residual).T.astype(float).reshape(n_classes, d, max_bins)
        left_sum = np.cumsum(hist, axis=2)
        # Each code's last cumulative sum is the total, so both sides of a split add the same rounded bins.
        total = left_sum[:, :, -1:]
        right_sum = total - left_sum
        # A stump fitted by least squares reduces the squared error by S_L^2/n_L + S_R^2/n_R - S^2/n.
        gain = left_sum**2 * inv_left + right_sum**2 * inv_right - total**2 / n
        gain[:, ~splittable] = -np.inf
        best = gain.reshape(n_classes, d * max_bins).argmax(axis=1)
        dim, cut = np.divmod(best, max_bins)
        importance += np.bincount(dim, weights=np.maximum(gain[all_classes, dim, cut], 0.0), minlength=d)
        np.take(bins_by_code, dim, axis=0, out=bins_of_split)
        np.less_equal(bins_of_split, cut[:, None], out=left, casting="unsafe")
        # Leaf values take one Newton step on the softmax loss, sum(residual) / sum(p (1 - p)) scaled
        # by (C - 1) / C (Friedman 2001, Algorithm 6, as sklearn). A leaf whose hessian sum is below
        # sklearn HistGradientBoosting's min_hessian_to_split (1e-3) holds only points fitted to
        # within rounding and takes no step.
        np.subtract(1.0, prob, out=work)
        work *= prob
        hess_left = np.einsum("cn,cn->c", work, left)
        hess = np.stack([hess_left, work.sum(axis=1) - hess_left])
        num = np.stack([left_sum[all_classes, dim, cut], right_sum[all_classes, dim, cut]])
        step = newton_scale * np.divide(num, hess, out=np.zeros_like(num), where=hess >= 1e-3)
        # Adding the step to the logits multiplies their exponentials by exp(step), so the softmax
        # is updated in place, with neither logits nor an exponential per sample.
        factor = np.exp(np.clip(step, -_MAX_STEP, _MAX_STEP))
        np.multiply(left, (factor[0] - factor[1])[:, None], out=work)
        work += factor[1][:, None]
        prob *= work
        prob /= prob.sum(axis=0)
    return importance


def importance_matrix(
    codes, factors, n_rounds: int = 100, learning_rate: float = 0.1, max_bins: int = 256
) -> np.ndarray:
    """Importance of each code dimension for predicting each factor, by gradient-boosted stumps.

    Eastwood & Williams 2018, "A Framework for the Quantitative Evaluation of Disentangled
    Representations" (ICLR), take the importances from a regressor per factor; disentanglement_lib
    uses sklearn's ``GradientBoostingClassifier`` (100 rounds, learning rate 0.1, depth-3 trees) and
    its ``feature_importances_``. This is that idea in numpy, with depth-1 trees: per factor,
    multi-class gradient boosting on the softmax cross-entropy, ``n_rounds`` rounds of one stump per
    class fitted by least squares to the negative gradient (the split with the largest squared-error
    reduction over every code dimension and candidate threshold; exact ties go to the lowest code
    index), leaf values by one Newton step (a logit moves at most 50 per round). A code's importance
    for the factor is the total squared-error reduction of the splits on it, normalised so the
    factor's column sums to 1, as sklearn's impurity-based importances are.

    Values are comparable in spirit with disentanglement_lib's but not digit for digit: stumps see
    no interactions between codes, and a code with more than ``max_bins`` distinct values is split
    only at ``max_bins - 1`` sample quantiles, as in sklearn's HistGradientBoosting (sklearn's exact
    trees try every threshold; a numpy scan of all N - 1 of them for every class in every round took
    about ten times as long at N = 10,000).

    Parameters
    ----------
    codes : array_like of float, shape (N, d)
        Representation of N samples.
    factors : array_like of int, shape (N, K)
        Ground-truth factor values of the same samples.
    n_rounds : int
        Boosting rounds (sklearn's default: 100).
    learning_rate : float
        Shrinkage of every stump (sklearn's default: 0.1).
    max_bins : int
        Most candidate bins per code dimension, at least 2.

    Returns
    -------
    numpy.ndarray, shape (d, K)
        Non-negative importances; each column sums to 1, or is all zeros where no code can be
        split (every code constant) or the factor takes a single value.

    Raises
    ------
    ValueError
        If the arrays are malformed or of different lengths, or a parameter is out of range.
    """
    x, f = _paired(codes, factors)
    n_rounds = _positive_int(n_rounds, "n_rounds")
    max_bins = _positive_int(max_bins, "max_bins", minimum=2)
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
    bins = _split_bins(x, max_bins)
    out = np.zeros((x.shape[1], f.shape[1]))
    for k in range(f.shape[1]):
        reduction = _stump_boosting_importance(bins, max_bins, f[:, k], n_rounds, learning_rate)
        if reduction.sum() > 0:
            out[:, k] = reduction / reduction.sum()
    return out


def disentanglement_from_importance(importance) -> float:
    """DCI disentanglement of an importance matrix.

    Eastwood & Williams 2018, "A Framework for the Quantitative Evaluation of Disentangled
    Representations" (ICLR), Section 3: with ``P_ij = R_ij / sum_k R_ik`` the share of code i's
    importance that goes to factor j, ``D_i = 1 - H_K(P_i.)`` (entropy with log base K, 0 log 0 = 0)
    and ``D = sum_i rho_i D_i`` with weights ``rho_i = sum_j R_ij / sum_ij R_ij``. A code of zero
    importance has weight 0; an all-zero matrix gives 0, as in disentanglement_lib (which differs
    only in adding 1e-11 inside the entropy).

    Parameters
    ----------
    importance : array_like of float, shape (d, K)
        Non-negative importance of code i for factor j, K >= 2.

    Returns
    -------
    float
        D in [0, 1]; 1 when every important code matters for a single factor.

    Raises
    ------
    ValueError
        If the matrix is not 2-D, has fewer than 2 columns, or holds negative or non-finite values.
    """
    r = np.asarray(importance, dtype=float)
    if r.ndim != 2 or r.shape[1] < 2:
        raise ValueError(f"importance must be a d x K matrix with K >= 2 factors, got shape {r.shape}")
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ValueError("importance must hold finite non-negative values")
    per_code = r.sum(axis=1)
    if per_code.sum() == 0:
        return 0.0
    used = per_code > 0
    p = r[used] / per_code[used, None]
    plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    d_code = 1.0 + plogp.sum(axis=1) / np.log(r.shape[1])
    return float(np.sum(per_code[used] / per_code.sum() * d_code))


def dci_disentanglement(codes, factors, n_rounds: int = 100, learning_rate: float = 0.1, max_bins: int = 256) -> float:
    """DCI disentanglement (Eastwood & Williams 2018) from boosted-stump importances.

    :func:`disentanglement_from_importance` of :func:`importance_matrix`; see both for the
    definition, the parameters and how the values relate to disentanglement_lib's.

    Returns
    -------
    float
        D in [0, 1]; higher is more disentangled.

    Raises
    ------
    ValueError
        If the arrays are malformed or of different lengths, there are fewer than 2 factors, or a
        parameter is out of range.
    """
    return disentanglement_from_importance(importance_matrix(codes, factors, n_rounds, learning_rate, max_bins))


# ---------------------------------------------------------------- SAP


def _sap_scores(x_train: np.ndarray, f_train: np.ndarray, x_test: np.ndarray, f_test: np.ndarray) -> np.ndarray:
    """Test accuracy of a one-vs-rest least-squares linear classifier per (code, factor)."""
    labelled = [np.unique(f_train[:, j], return_inverse=True) for j in range(f_train.shape[1])]
    scores = np.zeros((x_train.shape[1], f_train.shape[1]))
    for i in range(x_train.shape[1]):
        mean = x_train[:, i].mean()
        centred = x_train[:, i] - mean
        constant = x_train[:, i].max() == x_train[:, i].min()
        # Scoring each distinct test value once bounds the memory on large, repetitive test sets.
        values, where = np.unique(x_test[:, i], return_inverse=True)
        for j, (classes, labels) in enumerate(labelled):
            prior = np.bincount(labels) / labels.size
            if constant:
                # Zero slope leaves the priors: a constant code predicts the most frequent class.
                slope = np.zeros(classes.size)
            else:
                slope = np.bincount(labels, weights=centred, minlength=classes.size) / np.dot(centred, centred)
            # The fit of class k's indicator is prior_k + slope_k (x - mean), which is a_k + w_k x.
            # Written around the training mean, a test value equal to it scores exactly the priors,
            # so classes of equal frequency tie exactly there and the tie goes to the lowest class.
            predicted = classes[np.argmax(prior + np.outer(values - mean, slope), axis=1)]
            scores[i, j] = np.mean(predicted[where] == f_test[:, j])
    return scores


def sap(codes_train, factors_train, codes_test, factors_test) -> float:
    """Separated Attribute Predictability (SAP) score.

    Kumar et al. 2018, "Variational Inference of Disentangled Latent Concepts from Unlabeled
    Observations" (ICLR), for discrete factors as in disentanglement_lib: for every code dimension i
    and factor j a classifier predicts factor j from code i alone, trained on the training split;
    its accuracy on the test split is ``S[i, j]``, and

    ``SAP = 1/K sum_j (S_(1)j - S_(2)j)``,

    the mean over factors of the gap between the best and second best code. disentanglement_lib's
    classifier is sklearn's ``LinearSVC(C=0.01, class_weight="balanced")``; here it is the closed
    form one-vs-rest least-squares classifier: for class k, ``s_k(x) = a_k + w_k x`` fitted by least
    squares to the indicator of class k, the prediction is ``argmax_k s_k(x)`` with ties to the
    lowest class, and a constant code predicts the most frequent training class. The score is
    invariant to any affine map ``a x + b`` (a != 0) of each code.

    Parameters
    ----------
    codes_train, codes_test : array_like of float, shapes (N, d) and (M, d)
        Representation of the training and test samples, d >= 2.
    factors_train, factors_test : array_like of int, shapes (N, K) and (M, K)
        Their ground-truth factor values. A test value never seen in training is never predicted.

    Returns
    -------
    float
        SAP in [0, 1]; higher is more disentangled.

    Raises
    ------
    ValueError
        If an array is malformed, a codes/factors pair differs in length, the splits differ in d or
        K, or d < 2 (no second best code).
    """
    x_train, f_train = _paired(codes_train, factors_train, "codes_train", "factors_train")
    x_test, f_test = _paired(codes_test, factors_test, "codes_test", "factors_test")
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"codes_train has {x_train.shape[1]} dimensions but codes_test has {x_test.shape[1]}")
    if f_train.shape[1] != f_test.shape[1]:
        raise ValueError(f"factors_train has {f_train.shape[1]} factors but factors_test has {f_test.shape[1]}")
    if x_train.shape[1] < 2:
        raise ValueError(f"SAP needs at least 2 code dimensions to take a gap, got {x_train.shape[1]}")
    score = _sap_scores(x_train, f_train, x_test, f_test)
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

    Kim & Mnih 2018, "Disentangling by Factorising" (ICML), with disentanglement_lib's conventions.
    Each code dimension's global standard deviation comes from ``n_variance`` uniformly drawn factor
    vectors; dimensions with a standard deviation below ``prune`` are inactive (disentanglement_lib's
    ``prune_dims.threshold = 0.05``, compared with ``sqrt(variance)``; a dimension of zero spread is
    never active). A vote draws a factor k uniformly and ``batch_size`` factor vectors, uniform
    except that factor k takes one random value throughout; the codes are divided by the global
    standard deviation and the active dimension with the smallest variance within the batch
    (ddof=1; exact ties to the lowest index) votes for k. A majority-vote classifier (each dimension
    predicts the factor it received most training votes for, ties to the lowest factor) is trained
    on ``n_train`` votes, and the score is its accuracy on ``n_eval`` fresh votes. With no active
    dimension the score is 0.

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


# ---------------------------------------------------------------- all four


def evaluate(
    represent: Represent, factor_sizes, seed: int = 0, counts: MetricCounts = MetricCounts()
) -> dict[str, float]:
    """FactorVAE score, MIG, DCI disentanglement and SAP of one representation.

    One ``numpy.random.default_rng(seed)`` draws a training set of ``counts.n_train`` and a test set
    of ``counts.n_test`` uniform factor vectors, shared by MIG (training set), DCI (training set)
    and SAP (both), and then everything :func:`factorvae_score` draws, so the seed fixes all four
    values.

    Parameters
    ----------
    represent : callable
        Maps an int (n, K) array of factor value indices to a float (n, d) array of codes, d >= 2.
    factor_sizes : sequence of int
        Number of values of each factor, at least 2 factors of at least 2 values each.
    seed : int
        Seed of the generator.
    counts : MetricCounts
        Sample counts; the defaults are disentanglement_lib's.

    Returns
    -------
    dict of str to float
        ``factorvae_score``, ``mig``, ``dci_disentanglement`` and ``sap``.

    Raises
    ------
    ValueError
        If an input is malformed, or a metric's own requirement fails (see each metric).
    """
    sizes = _factor_sizes(factor_sizes)
    rng = np.random.default_rng(seed)
    factors_train = _sample_factors(sizes, _positive_int(counts.n_train, "counts.n_train"), rng)
    factors_test = _sample_factors(sizes, _positive_int(counts.n_test, "counts.n_test"), rng)
    codes_train = _represent(represent, factors_train)
    codes_test = _represent(represent, factors_test, codes_train.shape[1])
    return {
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
        "dci_disentanglement": dci_disentanglement(codes_train, factors_train),
        "sap": sap(codes_train, factors_train, codes_test, factors_test),
    }
