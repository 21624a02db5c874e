"""The significance of the paper's claims and of the ablations, from the final-epoch table.

The planned family (:func:`compare`) tests CFactorVAE against each other model, Holm-corrected;
the ablations (:func:`ablations`) are a family of their own. Each comes with the markdown that
says what its tests find (docs/records.md, "The committed records").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.paper import CHALLENGER, CLAIM_NAMES, CLAIMS, PLANNED_METRICS, model_order
from bench.report.cells import cell, num, p_value
from bench.report.finals import DEFAULT_RECIPE, HEADERS, config_values, outside_table, section_rows, table_values
from bench.report.stats import hedges_g, holm, mean_diff_ci, min_detectable_effect, prob_superiority, welch

ALPHA = 0.05

POWER = 0.8


def welch_row(metric: str, a_name: str, a: np.ndarray, b_name: str, b: np.ndarray) -> dict:
    """One two-sided Welch comparison of A's finished seeds with B's, as :func:`compare` returns it (Holm aside)."""
    nan = float("nan")
    row = dict(metric=metric, a=a_name, b=b_name, n_a=a.size, n_b=b.size,
               mean_a=a.mean() if a.size else nan, mean_b=b.mean() if b.size else nan,
               diff=nan, lo=nan, hi=nan, t=nan, df=nan, p=nan, g=nan, p_sup=nan, mde_d=nan, mde_nats=nan, reason="")
    if a.size < 2 or b.size < 2:
        row["reason"] = f"not enough seeds: {a_name} has {a.size} finished, {b_name} has {b.size} (need at least 2 each)"
        return row
    test = welch(a, b)
    row["diff"], row["lo"], row["hi"] = mean_diff_ci(a, b, level=0.95)
    row.update(t=test.t, df=test.df, p=test.p, g=hedges_g(a, b), p_sup=prob_superiority(a, b))
    pooled_sd = np.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2))
    row["mde_d"] = min_detectable_effect(a.size, b.size, alpha=ALPHA, power=POWER)
    row["mde_nats"] = row["mde_d"] * pooled_sd
    if np.isnan(test.p):
        row["reason"] = "every seed of both has the same value (zero variance)"
    return row


def compare(finals: pd.DataFrame, dataset: str, recipe: str = DEFAULT_RECIPE) -> pd.DataFrame:
    """CFactorVAE against every other model of one dataset and recipe on the planned metrics.

    Each comparison is a two-sided Welch t-test of A = cfactorvae against B on the
    final-epoch scores of the finished seeds; Holm's correction runs over the whole
    family (every B times both metrics of :data:`bench.paper.PLANNED_METRICS`) of this dataset and
    recipe. Runs of another recipe never enter: they trained another objective.

    Parameters
    ----------
    finals : pandas.DataFrame
        From :func:`bench.report.finals.final_epoch_table`.
    dataset : str
        The dataset whose runs are compared.
    recipe : str
        The recipe whose runs are compared.

    Returns
    -------
    pandas.DataFrame
        One row per (metric, B) with ``n_a, n_b, mean_a, mean_b, diff, lo, hi`` (A - B and
        its 95% CI), ``t, df, p, p_holm, g`` (Hedges), ``p_sup`` (P(A > B)), ``mde_d`` and
        ``mde_nats`` (smallest |d| detectable at alpha 0.05 with power 0.8, and that times
        the pooled SD) and ``reason``: empty when the test ran, else why it could not.
    """
    section = section_rows(finals, dataset, recipe)
    present = set(section["model"].dropna())
    # The paper's two baselines are always compared, so a missing one shows as untestable.
    others = [m for m in model_order(present) if m != CHALLENGER and (m in present or m in ("factorvae", "cvae"))]
    comparisons = [welch_row(key, CHALLENGER, table_values(section, CHALLENGER, key), model, table_values(section, model, key))
                   for key in PLANNED_METRICS for model in others]
    table = pd.DataFrame(comparisons)
    table["p_holm"] = holm(table["p"].to_numpy(dtype=float))
    return table


# What a configuration must share with its model's table configuration to be compared with it as an
# ablation: the same training length and data, so that only the objective or the training differs.
ABLATION_SAME = ("epochs", "train_subset", "test_subset")


def _changes(section: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """:func:`variants` with each one's change from its model's table configuration, ``"gamma=0.0"``."""
    found = []
    for model, key, _, _, other, changed in outside_table(section):
        if changed and not set(changed) & set(ABLATION_SAME):
            change = " ".join(f"{k}={other.get(k)}" for k in changed)
            found.append((model, key, f"{model} {change}", change))
    return found


def variants(section: pd.DataFrame) -> list[tuple[str, str, str]]:
    """The ablations of one section: (model, config_key, label) of each configuration outside the table.

    Only configurations that share :data:`ABLATION_SAME` with their model's table runs count; the
    label names what differs, e.g. ``cfactorvae gamma=0.0``.
    """
    return [(model, key, label) for model, key, label, _ in _changes(section)]


def ablations(finals: pd.DataFrame, dataset: str, recipe: str = DEFAULT_RECIPE) -> pd.DataFrame:
    """Each ablation of one dataset and recipe (:func:`variants`) against its model's table runs.

    A variant of model M is compared with M's table configuration and, when M is CFactorVAE, with
    each other model of the section as well, as :func:`compare` compares CFactorVAE itself: what
    the variant keeps of CFactorVAE's differences; and with each other model's variant of the same
    change (``disc=author-leaky`` of both FactorVAE and CFactorVAE): how the two compare under it.
    Two-sided Welch t-tests on the planned metrics; Holm's correction runs over this family alone,
    apart from the planned one.

    Returns
    -------
    pandas.DataFrame
        The columns of :func:`compare`, ``a`` being the variant's label; no rows without variants.
    """
    section = section_rows(finals, dataset, recipe)
    present = [m for m in model_order(section["model"].unique()) if section.loc[section["model"] == m, "in_table"].any()]
    rows = []
    changes = _changes(section)
    for model, key, label, change in changes:
        against = [model] + ([m for m in present if m != model] if model == CHALLENGER else [])
        rows += [welch_row(metric, label, config_values(section, key, metric), other, table_values(section, other, metric))
                 for metric in PLANNED_METRICS for other in against]
        if model == CHALLENGER:
            twins = [(twin, twin_label) for other, twin, twin_label, same in changes if other != model and same == change]
            rows += [welch_row(metric, label, config_values(section, key, metric), twin_label,
                               config_values(section, twin, metric))
                     for metric in PLANNED_METRICS for twin, twin_label in twins]
    table = pd.DataFrame(rows)
    if len(table):
        table["p_holm"] = holm(table["p"].to_numpy(dtype=float))
    return table


def difference(row: dict) -> str:
    """One line on a two-sided comparison of :func:`ablations`: whether A and B differ, and by how much."""
    head = f"{row['a']} against {row['b']}, {CLAIM_NAMES[row['metric']]}"
    if row["reason"]:
        return f"{head}: cannot be tested: {row['reason']}"
    if row["p_holm"] < ALPHA:
        outcome = "lower" if row["diff"] < 0 else "higher"
        outcome = f"significantly {outcome} at alpha = {ALPHA} (Holm)"
    else:
        outcome = (f"no significant difference at alpha = {ALPHA} (Holm; 80% power only for |d| ≥ "
                   f"{row['mde_d']:.2f}, {row['mde_nats']:.2f} nats)")
    return (f"{head}: {outcome}, n = {row['n_a']} vs {row['n_b']} (difference {row['diff']:+.2f} nats, "
            f"95% CI [{row['lo']:+.2f}, {row['hi']:+.2f}], Holm p = {p_value(row['p_holm'])})")


def lead_kept(planned: dict, ablated: dict) -> str:
    """One line on how much of CFactorVAE's lead over B an ablation of CFactorVAE keeps.

    ``planned`` is the :func:`compare` row of CFactorVAE against B, ``ablated`` the :func:`ablations`
    row of the variant against the same B and metric. The share is the ratio of the two mean
    differences, a point estimate: the CIs of its two terms are in the tables. Only a lead the
    planned comparisons support (lower, Holm p below :data:`ALPHA`) has a share to report.
    """
    head = f"{ablated['a']}, {CLAIM_NAMES[planned['metric']]} against {planned['b']}"
    if planned["reason"] or not (planned["p_holm"] < ALPHA and planned["diff"] < 0):
        return f"{head}: CFactorVAE has no supported lead over {planned['b']} to keep"
    if ablated["reason"]:
        return f"{head}: cannot be compared: {ablated['reason']}"
    share = ablated["diff"] / planned["diff"]
    return (f"{head}: {ablated['diff']:+.2f} nats, {share:.0%} of CFactorVAE's {planned['diff']:+.2f} "
            f"(Holm p = {p_value(planned['p_holm'])})")


def verdict(comparisons: pd.DataFrame, metric: str, baseline: str, name: str) -> str:
    """One line on the claim "CFactorVAE has a lower <metric> than <name>".

    The claim is supported when A - B < 0 and the Holm-adjusted p is below
    :data:`ALPHA`, contradicted when A - B > 0 and significant, not supported otherwise;
    when the test could not run the line says why.

    Parameters
    ----------
    comparisons : pandas.DataFrame
        From :func:`compare`.
    metric : str
        A key of :data:`bench.paper.PLANNED_METRICS`.
    baseline : str
        The model compared with; :func:`compare` always includes ``"factorvae"`` and ``"cvae"``.
    name : str
        The baseline as the paper names it.

    Returns
    -------
    str
        The verdict line.
    """
    claim = f"CFactorVAE has a lower {CLAIM_NAMES[metric]} than {name}"
    row = comparisons[(comparisons["metric"] == metric) & (comparisons["b"] == baseline)].iloc[0]
    if row["reason"]:
        return f"{claim}: cannot be tested: {row['reason']}"
    significant = row["p_holm"] < ALPHA
    if significant and row["diff"] < 0:
        outcome = "supported"
    elif significant and row["diff"] > 0:
        outcome = "contradicted (significantly higher)"
    else:
        outcome = "not supported"
    return (
        f"{claim}: {outcome} at alpha = {ALPHA} (Holm), n = {row['n_a']} vs {row['n_b']}"
        f" (difference {row['diff']:+.2f} nats, 95% CI [{row['lo']:+.2f}, {row['hi']:+.2f}],"
        f" Holm p = {p_value(row['p_holm'])})"
    )


def comparisons_table(comparisons: pd.DataFrame) -> list[str]:
    """The markdown table of Welch comparisons (rows of :func:`compare` or :func:`ablations`)."""
    lines = ["| Metric | A vs B | n (A vs B) | Mean A − B [95% CI] | Welch t (df) | p | Holm p | Hedges' g | P(A > B) "
             "| MDE d (nats) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in comparisons.to_dict("records"):
        head = f"| {HEADERS[r['metric']]} | {r['a']} vs {r['b']} | {r['n_a']} vs {r['n_b']} |"
        if r["reason"] and np.isnan(r["diff"]):
            lines.append(f"{head} {r['reason']} | | | | | | |")
            continue
        lines.append(
            f"{head} {r['diff']:+.2f} [{num(r['lo'])}, {num(r['hi'])}] | {num(r['t'])} ({num(r['df'], 1)}) | "
            f"{p_value(r['p'])} | {p_value(r['p_holm'])} | {num(r['g'])} | {num(r['p_sup'])} | "
            f"{num(r['mde_d'])} ({num(r['mde_nats'])}) |"
        )
    return lines


def ablations_markdown(section: pd.DataFrame, comparisons: pd.DataFrame, planned: pd.DataFrame) -> list[str]:
    """The ablations of one section: each variant's final numbers, its comparisons, a line per comparison
    and, for a variant of CFactorVAE, what it keeps of CFactorVAE's leads (``planned``: from :func:`compare`)."""
    tested = comparisons[comparisons["reason"] == ""]
    lines = [
        "Each configuration of a model outside the table that trains as long on the same data is an ablation: it "
        "is compared with the table's runs of its model and, for a variant of CFactorVAE, with each other model, "
        "as the planned comparisons compare CFactorVAE, and with another model's ablation of the same change. "
        "Two-sided Welch t-tests, Holm correction over the "
        f"{len(tested)} tests of this family that could run (of {len(comparisons)}), apart from the planned family.",
        "",
        "| Variant | " + " | ".join(HEADERS[key] for key in PLANNED_METRICS) + " |",
        "|---|" + "---|" * len(PLANNED_METRICS),
    ]
    for _, key, label in variants(section):
        cells = []
        for metric in PLANNED_METRICS:
            x = config_values(section, key, metric)
            cells.append(cell(x.mean() if x.size else np.nan, x.std(ddof=1) if x.size > 1 else np.nan, x.size))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", *comparisons_table(comparisons), ""]
    lines += [f"- {difference(row)}" for row in comparisons.to_dict("records")]
    leads = {(row["metric"], row["b"]): row for row in planned.to_dict("records")}
    # Only CFactorVAE's variants have a share of its leads: another model's variant against that model is no such share.
    ours = {label for model, _, label in variants(section) if model == CHALLENGER}
    kept = [lead_kept(leads[(row["metric"], row["b"])], row) for row in comparisons.to_dict("records")
            if row["a"] in ours and (row["metric"], row["b"]) in leads]
    if kept:
        lines += ["", "What each variant of CFactorVAE keeps of CFactorVAE's leads in the planned comparisons: the "
                      "variant's mean difference from the other model, and that as a share of CFactorVAE's own "
                      "(a ratio of means: 100% keeps the whole lead, 0% none of it).", ""]
        lines += [f"- {line}" for line in kept]
    return lines


def significance_markdown(comparisons: pd.DataFrame) -> list[str]:
    tested = comparisons[comparisons["reason"] == ""]
    lines = [
        f"Planned comparisons: CFactorVAE (A) against each other model (B) on the final test recon error and "
        f"test loss, two-sided Welch t-tests, Holm correction over the {len(tested)} tests that could run "
        f"(of {len(comparisons)} planned). Lower is better for both metrics, so the paper's claims predict "
        "A − B < 0 and P(A > B) near 0. MDE: the smallest |Cohen's d| a two-sided test at alpha = 0.05 detects "
        "with 80% power at this n (before Holm, so the corrected family needs more), and that in nats via the "
        "pooled SD.",
        "",
        *comparisons_table(comparisons),
    ]
    if len(tested):
        n_pairs = sorted({(r["n_a"], r["n_b"]) for r in tested.to_dict("records")})
        for n_a, n_b in n_pairs:
            d = min_detectable_effect(n_a, n_b, alpha=ALPHA, power=POWER)
            at = tested[(tested["n_a"] == n_a) & (tested["n_b"] == n_b)]
            nats = ", ".join(f"{HEADERS[r['metric']].lower()} vs {r['b']} {r['mde_nats']:.2f}" for r in at.to_dict("records"))
            lines += ["", f"At n = {n_a} vs {n_b}, only effects of |d| ≥ {d:.2f} are detected with 80% power "
                          f"(in nats: {nats}); smaller true differences are likely to read as not supported."]
    lines += ["", "#### Verdicts on the paper's claims", ""]
    lines += [f"- {verdict(comparisons, metric, model, name)}" for metric, model, name in CLAIMS]
    lines += ["", "The paper's Table 1 also reports lower train loss and train recon loss for CFactorVAE; "
                  "those columns are descriptive here, outside the planned family."]
    return lines
