"""The report's figures from the per-epoch rows of finished runs: Figure 3, the losses, the latent dimensions.

Each takes the curves of one section (:func:`bench.report.table1.write_report` makes them: the
records' rows with a display ``label``), a ``scope`` for its title and the stem of its files, and
returns the PNG and SVG paths it wrote.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bench.config import ACTIVE_KL
from bench.paper import LABELS, MODELS, model_order

FIGURE_TYPES = (".png", ".svg")  # every figure is written in both


def _save(figure: Figure, stem: Path) -> list[Path]:
    for ax in figure.axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    paths = [stem.with_suffix(ext) for ext in FIGURE_TYPES]
    # No timestamps and fixed SVG ids: the same records give the same files, so diffs show real changes.
    with matplotlib.rc_context({"svg.hashsalt": "bench"}):
        figure.savefig(paths[0], dpi=120, bbox_inches="tight", metadata={"Software": None})
        figure.savefig(paths[1], bbox_inches="tight", metadata={"Date": None})
    return paths


def figure3(curves: pd.DataFrame, scope: str, stem: Path) -> list[Path]:
    """Test recon error per epoch: one panel per model and one overlay, mean ± 1 SD; ``scope`` as in the title."""
    test = curves[curves["split"] == "test"]
    order = [LABELS.get(m, m) for m in model_order(test["model"].unique()) if m in set(test["model"])]
    palette = dict(zip(order, sns.color_palette("colorblind", len(order))))
    # A bare Figure renders through Agg/SVG without pyplot, so no display or global state is needed.
    figure = Figure(figsize=(15, 8.5), layout="constrained")
    axes = figure.subplots(2, 3, sharex=True).ravel()
    for ax, model in zip(axes, MODELS):
        label = LABELS[model]
        data = test[test["model"] == model]
        if data.empty:
            ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=ax.transAxes)
        else:
            sns.lineplot(data=data, x="epoch", y="recon", errorbar="sd", marker="o", color=palette[label], ax=ax)
        ax.set_title(f"{label} (n = {data['seed'].nunique()} seeds)")
        ax.set_ylabel("test recon error (nats / image)")
    overlay = axes[len(MODELS)]
    if order:
        sns.lineplot(data=test, x="epoch", y="recon", hue="label", hue_order=order, palette=palette,
                     errorbar="sd", ax=overlay)
        overlay.legend(title=None, fontsize="small")
    overlay.set_title("All models")
    overlay.set_ylabel("test recon error (nats / image)")
    figure.suptitle(f"Figure 3 ({scope}): test reconstruction error per epoch, mean line with a band of ±1 SD over seeds")
    return _save(figure, stem)


def figure_loss(curves: pd.DataFrame, scope: str, stem: Path) -> list[Path]:
    """Train and test loss per epoch, all models overlaid, mean ± 1 SD; ``scope`` as in the title."""
    order = [LABELS.get(m, m) for m in model_order(curves["model"].unique()) if m in set(curves["model"])]
    palette = dict(zip(order, sns.color_palette("colorblind", len(order))))
    figure = Figure(figsize=(12, 4.5), layout="constrained")
    for ax, split in zip(figure.subplots(1, 2), ("train", "test")):
        data = curves[curves["split"] == split]
        if data.empty:
            ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=ax.transAxes)
        else:
            sns.lineplot(data=data, x="epoch", y="loss", hue="label", hue_order=order, palette=palette,
                         errorbar="sd", ax=ax)
            ax.legend(title=None, fontsize="small")
        ax.set_title(f"{split} loss")
        ax.set_ylabel("loss (nats / image)")
    figure.suptitle(f"Loss per epoch ({scope}): mean line with a band of ±1 SD over seeds")
    return _save(figure, stem)


def figure_kl_dims(curves: pd.DataFrame, scope: str, stem: Path) -> list[Path]:
    """Per-dimension KL at the final epoch (dimensions sorted per run) and active dimensions per epoch.

    ``scope`` names what the curves are of in the title: the dataset, with the recipe when several are reported.
    """
    test = curves[(curves["split"] == "test") & curves["kl_dims"].notna()]
    order = [LABELS.get(m, m) for m in model_order(test["model"].unique()) if m in set(test["model"])]
    palette = dict(zip(order, sns.color_palette("colorblind", len(order))))
    last = test[test["epoch"] == test.groupby("run_id")["epoch"].transform("max")]
    ranked = pd.DataFrame(
        [{"label": r["label"], "rank": i + 1, "kl": kl}
         for r in last.to_dict("records") for i, kl in enumerate(sorted(r["kl_dims"], reverse=True))],
        columns=["label", "rank", "kl"])
    figure = Figure(figsize=(12, 4.5), layout="constrained")
    left, right = figure.subplots(1, 2)
    if ranked.empty:
        for ax in (left, right):
            ax.text(0.5, 0.5, "no per-dimension KL in these records", ha="center", va="center", transform=ax.transAxes)
    else:
        sns.lineplot(data=ranked, x="rank", y="kl", hue="label", hue_order=order, palette=palette, marker="o",
                     errorbar="sd", ax=left)
        left.axhline(ACTIVE_KL, color="grey", linestyle=":", linewidth=1)
        left.set_yscale("symlog", linthresh=ACTIVE_KL)
        left.set_xlabel("latent dimension, by KL (largest first)")
        left.set_ylabel("test KL of the dimension (nats)")
        left.set_title(f"Per-dimension KL at the final epoch (dotted: {ACTIVE_KL} nats, active above)")
        left.legend(title=None, fontsize="small")
        sns.lineplot(data=test, x="epoch", y="active_dims", hue="label", hue_order=order, palette=palette,
                     errorbar="sd", ax=right, legend=False)
        right.set_ylabel(f"active dimensions (KL > {ACTIVE_KL} nats)")
        right.set_title("Active dimensions per epoch (test split)")
    figure.suptitle(f"What the objectives do to the latent dimensions ({scope}): mean ± 1 SD over seeds")
    return _save(figure, stem)
