"""The report: Table 1 numbers, verdicts, listings of left-out runs, figures and errors.

Every expected number is computed here from the planted values, not by the report's code.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench.errors import BenchError
from bench.records import RecordError, read_tree, run_dir, run_path, write_run
from bench.report import (compare, final_epoch_table, paper_on_our_scale, paper_ratios, summarise, verdict,
                          write_report)

MODELS = ("vae", "betavae", "cvae", "factorvae", "cfactorvae")
KEYS = ("train_loss", "train_recon", "test_loss", "test_recon")
HEADERS = ("Train loss", "Train recon loss", "Test loss", "Test recon error")
EPOCHS = 3


def write(root, model, seed, finals, *, status="finished", dataset="mnist", epochs_done=EPOCHS, config=None, nan_last=()):
    """One run whose curves fall by 5 nats an epoch to ``finals`` at epoch EPOCHS.

    ``nan_last`` names metric keys (e.g. ``"test_loss"``) that are NaN at the last epoch written.
    """
    config = {"model": model, "dataset": dataset, "seed": seed, "epochs": EPOCHS,
              "train_subset": 256, "test_subset": 0, **(config or {})}
    run_id = f"{model}-{seed}-{config['epochs']}"
    rows = []
    for epoch in range(1, epochs_done + 1):
        for split in ("train", "test"):
            rows.append(dict(
                run_id=run_id, model=model, dataset=dataset, seed=seed, epoch=epoch, split=split, step=10 * epoch,
                loss=finals[f"{split}_loss"] + 5.0 * (EPOCHS - epoch), recon=finals[f"{split}_recon"] + 5.0 * (EPOCHS - epoch),
                kl=1.0, tc=0.0, capacity=0.0, capacity_gap=0.0, disc_acc=0.5, n_images=256, seconds=1.0,
            ))
    for key in nan_last:
        split, column = key.split("_")
        next(r for r in reversed(rows) if r["split"] == split)[column] = float("nan")
    meta = {"run_id": run_id, "profile": "smoke", "status": status, "config": config, "wall_seconds": 1.0}
    write_run(run_path(root, dataset, model, seed, run_id), rows, meta)


def draw(rng, centre):
    """Final-epoch numbers around ``centre`` with SD 1."""
    recon = centre + rng.normal(0.0, 1.0, size=2)
    return {"train_recon": recon[0], "train_loss": recon[0] + 5 + rng.normal(0.0, 1.0),
            "test_recon": recon[1], "test_loss": recon[1] + 5 + rng.normal(0.0, 1.0)}


def planted_tree(root, centres, seeds=5, dataset="mnist", rng_seed=1):
    """Five seeds per model around each model's centre; returns {(model, seed): finals}."""
    rng = np.random.default_rng(rng_seed)
    planted = {}
    for model, centre in centres.items():
        for seed in range(seeds):
            planted[model, seed] = draw(rng, centre)
            write(root, model, seed, planted[model, seed], dataset=dataset)
    return planted


def comparisons_of(root, dataset="mnist"):
    rows, runs = read_tree(root)
    return compare(final_epoch_table(rows, runs), dataset)


# cfactorvae 10 SDs below every other model.
CENTRES = {"vae": 100.0, "betavae": 110.0, "cvae": 102.0, "factorvae": 101.0, "cfactorvae": 90.0}


@pytest.fixture(scope="module")
def planted_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    planted = planted_tree(root, CENTRES)
    out = tmp_path_factory.mktemp("results") / "table1.md"
    summary = write_report(root, out)
    return planted, summary, out.read_text(encoding="utf-8")


def test_planted_difference_supports_every_claim(planted_report):
    _, _, markdown = planted_report
    for claim in ("lower test recon error than FactorVAE", "lower test recon error than Controlled-VAE",
                  "lower test loss than FactorVAE", "lower test loss than Controlled-VAE"):
        assert f"- CFactorVAE has a {claim}: supported at alpha = 0.05 (Holm), n = 5 vs 5" in markdown


def test_markdown_has_every_model_and_the_headers(planted_report):
    _, _, markdown = planted_report
    header = next(line for line in markdown.splitlines() if line.startswith("| Model | Train loss"))
    for name in HEADERS:
        assert f"| {name} |" in header
    assert header.endswith("| Diverged (excluded) | Trained on |")
    for label in ("| VAE |", "| β-VAE |"):
        assert sum(line.startswith(label) for line in markdown.splitlines()) == 1
    for label in ("| Controlled VAE (CVAE) |", "| FactorVAE (FVAE) |", "| CFactorVAE (CFVAE) |"):
        # Table 1, four metric rows against the paper, one consistency row
        assert sum(line.startswith(label) for line in markdown.splitlines()) == 1 + 4 + 1
    assert "nats per image" in markdown
    assert "- Seeds: 0, 1, 2, 3, 4" in markdown and "- Epochs: 3" in markdown
    assert "first 256 images" in markdown and "test subset: full split" in markdown


def test_the_papers_test_columns_are_read_at_six_times_with_their_ratios():
    # The paper's train / test pairs, divided by hand: 125.75 / 21.13, 124.89 / 21.0, ...
    assert paper_ratios() == pytest.approx({
        ("cvae", "loss"): 5.95125, ("cvae", "recon"): 5.94714, ("factorvae", "loss"): 5.94690,
        ("factorvae", "recon"): 5.91504, ("cfactorvae", "loss"): 5.93153, ("cfactorvae", "recon"): 5.92470,
    }, abs=1e-5)
    assert paper_on_our_scale("factorvae") == pytest.approx(
        {"train_loss": 141.12, "train_recon": 121.14, "test_loss": 142.38, "test_recon": 122.88})


def test_ours_minus_the_paper_per_cell_and_the_consistency_lines(planted_report):
    planted, summary, markdown = planted_report
    table = pd.read_csv(summary.csv).set_index("model")
    assert "5.92 to 5.95 times its test number" in markdown and "inference" in markdown
    paper_on_six = {"cvae": (125.75, 124.89, 126.78, 126.00), "factorvae": (141.12, 121.14, 142.38, 122.88),
                    "cfactorvae": (118.69, 118.02, 120.06, 119.52)}
    labels = {"cvae": "Controlled VAE (CVAE)", "factorvae": "FactorVAE (FVAE)", "cfactorvae": "CFactorVAE (CFVAE)"}
    for model, paper in paper_on_six.items():
        for key, header, value in zip(KEYS, HEADERS, paper):
            ours = np.mean([planted[model, seed][key] for seed in range(5)])
            assert table.loc[model, f"diff_{key}"] == pytest.approx(ours - value, rel=1e-9)
            row = next(line for line in markdown.splitlines() if line.startswith(f"| {labels[model]} | {header} |"))
            assert row.endswith(f"| {value:.2f}{' (× 6)' if key.startswith('test') else ''} | {ours - value:+.2f} |")
    # loss - recon: the paper's by hand (test pairs times 6), and ours, each run's own difference
    for model, train_gap, test_gap in (("cvae", 0.86, 0.78), ("factorvae", 19.98, 19.50), ("cfactorvae", 0.67, 0.54)):
        assert table.loc[model, "paper_train_gap"] == pytest.approx(train_gap, abs=1e-9)
        assert table.loc[model, "paper_test_gap"] == pytest.approx(test_gap, abs=1e-9)
        gaps = [planted[model, seed]["test_loss"] - planted[model, seed]["test_recon"] for seed in range(5)]
        assert table.loc[model, "test_gap_mean"] == pytest.approx(np.mean(gaps), rel=1e-9)
        assert table.loc[model, "test_gap_sd"] == pytest.approx(np.std(gaps, ddof=1), rel=1e-9)
    assert np.isnan(table.loc["vae", "paper_train_gap"]) and np.isnan(table.loc["vae", "diff_test_recon"])


def test_csv_means_and_sds_are_those_of_the_planted_finals(planted_report):
    planted, summary, _ = planted_report
    table = pd.read_csv(summary.csv).set_index("model")
    assert list(table.index) == list(MODELS)
    for model in MODELS:
        for key in KEYS:
            values = np.array([planted[model, seed][key] for seed in range(5)])
            assert table.loc[model, f"{key}_mean"] == pytest.approx(values.mean(), rel=1e-12)
            assert table.loc[model, f"{key}_sd"] == pytest.approx(values.std(ddof=1), rel=1e-12)
            assert table.loc[model, f"{key}_n"] == 5
    assert table.loc["factorvae", "paper_train_loss"] == 141.12 and table.loc["factorvae", "paper_test_loss"] == 23.73
    assert np.isnan(table.loc["vae", "paper_test_recon"])


def test_a_variant_gets_its_own_row_after_its_model_and_stays_out_of_the_figures(tmp_path):
    planted_tree(tmp_path / "runs", {**CENTRES, "cvae-burgess": 250.0})
    summary = write_report(tmp_path / "runs", tmp_path / "out" / "table1.md")
    table = pd.read_csv(summary.csv)
    assert list(table["model"]) == ["vae", "betavae", "cvae", "cvae-burgess", "factorvae", "cfactorvae"]
    assert table.loc[table["model"] == "cvae-burgess", "test_recon_mean"].iloc[0] == pytest.approx(250.0, abs=2.0)
    assert "| CVAE, Burgess weight 1000 |" in summary.markdown.read_text(encoding="utf-8")
    svg = (tmp_path / "out" / "figure-loss.svg").read_text()
    assert "Burgess" not in svg and "CFactorVAE (CFVAE)" in svg


def test_figures_are_written_and_non_empty(planted_report):
    _, summary, markdown = planted_report
    folder = summary.markdown.parent
    names = {"figure3.png", "figure3.svg", "figure-loss.png", "figure-loss.svg"}
    assert {p.name for p in summary.figures} == names
    for name in names:
        assert (folder / name).stat().st_size > 1000
    assert (folder / "figure3.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](figure3.png)" in markdown and "±1 SD over seeds" in markdown


def test_pvalues_are_welch_with_holm_over_the_whole_family(tmp_path):
    planted = planted_tree(tmp_path, CENTRES)
    table = comparisons_of(tmp_path)
    assert len(table) == 2 * 4
    raw = []
    for row in table.to_dict("records"):
        a = [planted["cfactorvae", s][row["metric"]] for s in range(5)]
        b = [planted[row["b"], s][row["metric"]] for s in range(5)]
        raw.append(stats.ttest_ind(a, b, equal_var=False).pvalue)
        assert row["diff"] == pytest.approx(np.mean(a) - np.mean(b))
    assert table["p"].to_numpy() == pytest.approx(raw)
    # Holm by its definition: the i-th smallest times (m - i), made monotone.
    order = np.argsort(raw)
    expected, running = np.empty(len(raw)), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(raw) - rank) * raw[index]))
        expected[index] = running
    assert table["p_holm"].to_numpy() == pytest.approx(expected)


def test_identical_distributions_do_not_support_the_claim(tmp_path):
    rng = np.random.default_rng(7)
    shared = [draw(rng, 100.0) for _ in range(5)]
    for model in ("cfactorvae", "factorvae"):
        for seed, finals in enumerate(shared):
            write(tmp_path, model, seed, finals)
    table = comparisons_of(tmp_path)
    for metric, name in (("test_recon", "test recon error"), ("test_loss", "test loss")):
        line = verdict(table, metric, "factorvae", "FactorVAE")
        assert line.startswith(f"CFactorVAE has a lower {name} than FactorVAE: not supported at alpha = 0.05 (Holm), n = 5 vs 5")
        # No cvae runs at all: the claim against it cannot be tested.
        assert "cannot be tested: not enough seeds: cfactorvae has 5 finished, cvae has 0" in verdict(
            table, metric, "cvae", "Controlled-VAE")


def test_significantly_higher_is_contradicted(tmp_path):
    planted_tree(tmp_path, {"factorvae": 90.0, "cfactorvae": 100.0})
    line = verdict(comparisons_of(tmp_path), "test_recon", "factorvae", "FactorVAE")
    assert ": contradicted" in line


@pytest.fixture(scope="module")
def edge_report(tmp_path_factory):
    """Diverged, running, single-seed and other-configuration runs beside finished ones."""
    root = tmp_path_factory.mktemp("runs")
    planted = planted_tree(root, {"vae": 100.0, "factorvae": 101.0, "cfactorvae": 90.0})
    write(root, "cvae", 0, draw(np.random.default_rng(3), 102.0))
    # Diverged: huge numbers, and the test loss is NaN at the last epoch.
    wild = {"train_loss": 1e6, "train_recon": 9e5, "test_loss": 7e5, "test_recon": 8e5}
    write(root, "factorvae", 5, wild, status="diverged", nan_last=("test_loss",))
    write(root, "betavae", 4, draw(np.random.default_rng(4), 110.0), status="running", epochs_done=1)
    for seed in (0, 1):
        write(root, "factorvae", seed, draw(np.random.default_rng(seed), 50.0), config={"epochs": 6})
    out = tmp_path_factory.mktemp("results") / "table1.md"
    summary = write_report(root, out)
    return planted, summary, out.read_text(encoding="utf-8")


def test_diverged_run_is_listed_and_not_averaged(edge_report):
    planted, summary, markdown = edge_report
    table = pd.read_csv(summary.csv).set_index("model")
    for key in KEYS:
        expected = np.mean([planted["factorvae", s][key] for s in range(5)])
        assert table.loc["factorvae", f"{key}_mean"] == pytest.approx(expected)
    assert table.loc["factorvae", "n_finished"] == 5 and table.loc["factorvae", "n_diverged"] == 1
    section = markdown.split("#### Diverged runs")[1].split("####")[0]
    # The test loss is NaN at epoch 3, so its last finite value is epoch 2's: 7e5 + 5.
    assert "| factorvae | 5 | 3/3 | 1000000.00 (epoch 3) | 900000.00 (epoch 3) | 700005.00 (epoch 2) | 800000.00 (epoch 3) |" in section
    assert "excluded from the means: 1 diverged, 1 unfinished, 2 of other configurations" in markdown


def test_running_run_is_listed_not_averaged(edge_report):
    _, summary, markdown = edge_report
    assert "| betavae | 4 | running | 1/3 | yes |" in markdown.split("#### Unfinished runs")[1]
    table = pd.read_csv(summary.csv).set_index("model")
    assert table.loc["betavae", "n_finished"] == 0 and table.loc["betavae", "n_unfinished"] == 1
    assert table.loc["betavae", "test_recon_n"] == 0


def test_single_seed_cannot_be_tested(edge_report):
    _, _, markdown = edge_report
    assert ("- CFactorVAE has a lower test recon error than Controlled-VAE: cannot be tested: not enough seeds: "
            "cfactorvae has 5 finished, cvae has 1") in markdown
    assert "- CFactorVAE has a lower test recon error than FactorVAE: supported" in markdown
    assert "| Controlled VAE (CVAE) | " in markdown and "(n = 1, no SD)" in markdown


def test_other_configuration_is_noted_not_mixed_in(edge_report):
    _, _, markdown = edge_report
    others = markdown.split("#### Other configurations")[1]
    assert "- factorvae: 2 runs (2 finished) with epochs=6 (table: 3)" in others


@pytest.fixture
def small_tree(tmp_path):
    root = tmp_path / "runs"
    for dataset in ("mnist", "chairs"):
        for model in ("factorvae", "cfactorvae"):
            for seed in (0, 1):
                write(root, model, seed, draw(np.random.default_rng(seed), 100.0), dataset=dataset)
    return root


def test_each_dataset_gets_a_section_and_suffixed_figures(small_tree, tmp_path):
    summary = write_report(small_tree, tmp_path / "out" / "table1.md")
    markdown = summary.markdown.read_text(encoding="utf-8")
    assert summary.datasets == ("chairs", "mnist")
    assert "## Dataset: chairs" in markdown and "## Dataset: mnist" in markdown
    assert {p.name for p in summary.figures} >= {"figure3-chairs.svg", "figure3-mnist.png", "figure-loss-mnist.svg"}
    assert all(p.stat().st_size > 0 for p in summary.paths)
    assert set(pd.read_csv(summary.csv)["dataset"]) == {"chairs", "mnist"}


def test_unknown_dataset_names_it_and_the_available_ones(small_tree, tmp_path):
    with pytest.raises(BenchError, match=r"unknown dataset 'cifar'.*chairs, mnist"):
        write_report(small_tree, tmp_path / "out" / "table1.md", dataset="cifar")


def test_no_runs_is_a_record_error(tmp_path):
    with pytest.raises(RecordError, match="no run files"):
        write_report(tmp_path / "empty", tmp_path / "out" / "table1.md")


def test_foreign_parquet_is_named(small_tree, tmp_path):
    pd.DataFrame({"x": [1]}).to_parquet(run_dir(small_tree, "mnist", "factorvae", 0) / "notes.parquet")
    with pytest.raises(RecordError, match="notes.parquet"):
        write_report(small_tree, tmp_path / "out" / "table1.md")


def test_unwritable_output_folder_is_one_line_bench_error(small_tree, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output folder should be")
    with pytest.raises(BenchError, match="cannot write the report") as caught:
        write_report(small_tree, blocker / "table1.md")
    assert "\n" not in str(caught.value)


def test_summarise_keeps_all_five_models_in_order(small_tree):
    rows, runs = read_tree(small_tree)
    table = summarise(final_epoch_table(rows, runs))
    assert list(table.loc[table["dataset"] == "mnist", "model"]) == list(MODELS)
    assert table.loc[(table["dataset"] == "mnist") & (table["model"] == "vae"), "n_finished"].item() == 0


def test_same_records_give_byte_identical_files(small_tree, tmp_path):
    first = write_report(small_tree, tmp_path / "a" / "table1.md", dataset="mnist")
    second = write_report(small_tree, tmp_path / "b" / "table1.md", dataset="mnist")
    assert [p.name for p in first.paths] == [p.name for p in second.paths]
    for a, b in zip(first.paths, second.paths):
        assert a.read_bytes() == b.read_bytes(), a.name
