"""A report's disentanglement section: the metric records' scores per model and CFactorVAE's tests against each."""

from __future__ import annotations

from dataclasses import astuple, fields

import numpy as np
import pandas as pd

from bench.paper import CHALLENGER, LABELS, model_order
from bench.report.cells import num, p_value
from bench.report.finals import RUN_KEYS
from bench.report.significance import welch_row
from bench.report.stats import holm

# The disentanglement metrics of bench.eval.metrics, as stored in the metric records; higher is better for all.
# Records scored before DCI came from disentanglement_lib's estimator hold the first, third and last alone.
SCORES = {
    "factorvae_score": "FactorVAE score",
    "mig": "MIG",
    "dci_disentanglement": "DCI disentanglement",
    "dci_completeness": "DCI completeness",
    "dci_informativeness_train": "DCI informativeness (train)",
    "dci_informativeness_test": "DCI informativeness (test)",
    "sap": "SAP",
}


def finished_scores(scores: pd.DataFrame, section: pd.DataFrame) -> pd.DataFrame:
    """The metric rows of the finished runs in the table's configuration of one section."""
    keep = section[section["in_table"] & (section["status"] == "finished")]
    return scores.merge(keep[RUN_KEYS], on=RUN_KEYS)


def _scored(scores: pd.DataFrame) -> list[str]:
    """The metrics of SCORES that the records hold, in SCORES order."""
    return [metric for metric in SCORES if (scores["metric"] == metric).any()]


def summarise_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Per model and metric the records hold: mean, SD (ddof = 1) and n over seeds, models in Table 1 order."""
    table = []
    for model in model_order(scores["model"].unique()):
        for metric in _scored(scores):
            values = scores.loc[(scores["model"] == model) & (scores["metric"] == metric), "value"].to_numpy(float)
            values = values[np.isfinite(values)]
            table.append({"model": model, "metric": metric, "n": values.size,
                          "mean": values.mean() if values.size else np.nan,
                          "sd": values.std(ddof=1) if values.size > 1 else np.nan})
    return pd.DataFrame(table, columns=["model", "metric", "n", "mean", "sd"])


def compare_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """CFactorVAE against every other model on each disentanglement metric, as :func:`bench.report.significance.compare` does for Table 1.

    Two-sided Welch t-tests of A = cfactorvae against B per metric the records hold, 95% CI of A - B,
    Hedges' g, P(A > B), and Holm's correction over the whole family (every B times every metric).
    """
    rows = []
    others = [m for m in model_order(scores["model"].unique()) if m != CHALLENGER]
    for metric in _scored(scores):
        values = scores.loc[scores["metric"] == metric]
        a = values.loc[values["model"] == CHALLENGER, "value"].to_numpy(float)
        for model in others:
            rows.append(welch_row(metric, CHALLENGER, a, model, values.loc[values["model"] == model, "value"].to_numpy(float)))
    table = pd.DataFrame(rows, columns=["metric", "a", "b", "n_a", "n_b", "diff", "lo", "hi", "t", "df", "p", "g",
                                        "p_sup", "reason"])
    table["p_holm"] = holm(table["p"].to_numpy(dtype=float)) if len(table) else []
    return table


def _counts_profile(r) -> str:
    """Which profile's metric sample counts a record's are, and how they stand to disentanglement_lib's."""
    # Imported here: sklearn, which bench.eval.metrics loads, is paid for only by reports with scores.
    from bench.config import METRIC_COUNTS
    from bench.eval.metrics import MetricCounts

    found = tuple(int(r[field.name]) for field in fields(MetricCounts))
    profile = next((name for name, changed in METRIC_COUNTS.items() if astuple(MetricCounts(**changed)) == found),
                   None)
    dl = MetricCounts()
    if found == astuple(dl):
        return "disentanglement_lib's sample counts (the paper profile's)"
    which = (f"the {profile} profile's sample counts, fewer than" if profile
             else "sample counts of no profile, other than")
    return (f"{which} disentanglement_lib's ({dl.n_train:,} training and {dl.n_test:,} test samples, "
            f"{dl.factorvae_n_train:,} and {dl.factorvae_n_eval:,} FactorVAE votes, {dl.dci_rounds} boosting "
            "rounds for DCI); the scores move with the counts, so these do not compare with published ones")


def _counts_line(scores: pd.DataFrame) -> str:
    """How the scores were measured, from the metric records themselves."""
    columns = ["metric_seed", "n_train", "n_test", "mig_bins", "factorvae_batch_size", "factorvae_n_train",
               "factorvae_n_eval", "factorvae_n_variance", "dci_rounds", "representation"]
    settings = scores[columns].drop_duplicates()
    runs = scores["run_id"].nunique()
    # Records written before DCI and SAP came from disentanglement_lib's estimators have no completeness.
    earlier = runs - scores.loc[scores["metric"] == "dci_completeness", "run_id"].nunique()
    note = (f" {earlier} of the {runs} runs were scored before, their DCI disentanglement from gradient-boosted "
            "stumps and their SAP from least-squares classifiers: those two scores of theirs are left out of the "
            "table and the tests below; `bench metrics --again` scores them anew." if 0 < earlier < runs else "")
    if len(settings) != 1:
        return f"The runs were scored with {len(settings)} different sample settings (see the metric records).{note}"
    r = settings.iloc[0]
    if earlier == runs:
        estimators = (f"DCI disentanglement (gradient-boosted stumps) on the same samples and SAP (least-squares "
                      f"classifiers) trained on them and tested on {r['n_test']:,} more, this harness's estimators "
                      "before disentanglement_lib's (`bench metrics --again` rescores runs that have their weights)")
    else:
        estimators = (f"DCI (sklearn's GradientBoostingClassifier per factor, {r['dci_rounds']} boosting rounds) and SAP "
                      f"(LinearSVC(C=0.01) per code and factor), as disentanglement_lib, trained on those "
                      f"{r['n_train']:,} and tested on {r['n_test']:,} more")
    return (f"Representation: the encoder's {r['representation']}; metric seed {r['metric_seed']}; "
            f"{_counts_profile(r)}. MIG ({r['mig_bins']} equal-width bins) on {r['n_train']:,} uniform factor "
            f"samples; {estimators}; FactorVAE score from {r['factorvae_n_train']:,} training and "
            f"{r['factorvae_n_eval']:,} evaluation votes of {r['factorvae_batch_size']} samples, global variances "
            f"from {r['factorvae_n_variance']:,}.{note}")


def _comparable(scores: pd.DataFrame) -> pd.DataFrame:
    """The scores to tabulate: where some runs have disentanglement_lib's DCI and SAP, not the earlier runs' own."""
    current = scores.loc[scores["metric"] == "dci_completeness", "run_id"].unique()
    if not len(current):
        return scores
    return scores[scores["run_id"].isin(current) | ~scores["metric"].isin(["dci_disentanglement", "sap"])]


def scores_markdown(scores: pd.DataFrame) -> list[str]:
    """The section's lines: how the scores were measured, their table, and the Welch tests of CFactorVAE."""
    line = _counts_line(scores)
    scores = _comparable(scores)
    summary = summarise_scores(scores)
    metrics = _scored(scores)
    lines = [line, "", "| Model | " + " | ".join(SCORES[m] for m in metrics) + " |",
             "|---|" + "---|" * len(metrics)]
    for model in model_order(scores["model"].unique()):
        cells = []
        for metric in metrics:
            r = summary[(summary["model"] == model) & (summary["metric"] == metric)].iloc[0]
            cells.append("—" if r["n"] == 0 else f"{r['mean']:.3f} (n = 1)" if r["n"] == 1
                         else f"{r['mean']:.3f} ± {r['sd']:.3f} (n = {r['n']})")
        lines.append(f"| {LABELS.get(model, model)} | " + " | ".join(cells) + " |")
    comparisons = compare_scores(scores)
    tested = comparisons[comparisons["reason"] == ""]
    lines += ["", f"CFactorVAE (A) against each other model (B), two-sided Welch t-tests, Holm correction over the "
                  f"{len(tested)} tests that could run (of {len(comparisons)}). Higher is better on every metric; the "
                  "paper's claim that CFactorVAE stays as disentangled as FactorVAE predicts no significant "
                  "difference from FactorVAE, which a small n cannot confirm on its own.", "",
              "| Metric | A vs B | n (A vs B) | Mean A − B [95% CI] | Welch t (df) | p | Holm p | Hedges' g | P(A > B) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in comparisons.to_dict("records"):
        head = f"| {SCORES[r['metric']]} | {r['a']} vs {r['b']} | {r['n_a']} vs {r['n_b']} |"
        if r["reason"] and np.isnan(r["diff"]):
            lines.append(f"{head} {r['reason']} | | | | | |")
            continue
        lines.append(f"{head} {r['diff']:+.3f} [{num(r['lo'], 3)}, {num(r['hi'], 3)}] | {num(r['t'])} "
                     f"({num(r['df'], 1)}) | {p_value(r['p'])} | {p_value(r['p_holm'])} | {num(r['g'])} | {num(r['p_sup'])} |")
    return lines
