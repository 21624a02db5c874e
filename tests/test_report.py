"""The report: Table 1 numbers, verdicts, listings of left-out runs, figures and errors.

Every expected number is computed here from the planted values, not by the report's code.
"""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from support import record_meta

from bench.errors import BenchError
from bench.records import RecordError, read_tree, run_dir, run_path, write_run
from bench.report.finals import final_epoch_table, paper_on_our_scale, paper_ratios, summarise
from bench.report.significance import compare, lead_kept, verdict
from bench.report.table1 import write_report

MODELS = ("vae", "betavae", "cvae", "factorvae", "cfactorvae")
KEYS = ("train_loss", "train_recon", "test_loss", "test_recon")
LABELS = {"vae": "VAE", "betavae": "β-VAE", "cvae": "Controlled VAE (CVAE)", "factorvae": "FactorVAE (FVAE)",
          "cfactorvae": "CFactorVAE (CFVAE)"}
HEADERS = ("Train loss", "Train recon loss", "Test loss", "Test recon error")
EPOCHS = 3


def write(root, model, seed, finals, *, status="finished", dataset="mnist", epochs_done=EPOCHS, config=None,
          nan_last=(), tc=(0.0, 0.0), disc_acc=(0.5, 0.5)):
    """One run whose curves fall by 5 nats an epoch to ``finals`` at epoch EPOCHS.

    ``nan_last`` names metric keys (e.g. ``"test_loss"``) that are NaN at the last epoch written;
    ``tc`` and ``disc_acc`` are the (train, test) values of every epoch.
    """
    config = {"model": model, "dataset": dataset, "seed": seed, "epochs": EPOCHS,
              "train_subset": 256, "test_subset": 0, **(config or {})}
    run_id = f"{model}-{seed}-{config['epochs']}" + (f"-{config['recipe']}" if "recipe" in config else "")
    rows = []
    for epoch in range(1, epochs_done + 1):
        for i, split in enumerate(("train", "test")):
            rows.append(dict(
                run_id=run_id, model=model, dataset=dataset, seed=seed, epoch=epoch, split=split, step=10 * epoch,
                loss=finals[f"{split}_loss"] + 5.0 * (EPOCHS - epoch), recon=finals[f"{split}_recon"] + 5.0 * (EPOCHS - epoch),
                kl=1.0, tc=tc[i], capacity=0.0, capacity_gap=0.0, disc_acc=disc_acc[i], n_images=256, seconds=1.0,
            ))
    for key in nan_last:
        split, column = key.split("_")
        next(r for r in reversed(rows) if r["split"] == split)[column] = float("nan")
    write_run(run_path(root, dataset, model, seed, run_id), rows, record_meta(run_id, config, status))


def draw(rng, centre):
    """Final-epoch numbers around ``centre`` with SD 1."""
    recon = centre + rng.normal(0.0, 1.0, size=2)
    return {"train_recon": recon[0], "train_loss": recon[0] + 5 + rng.normal(0.0, 1.0),
            "test_recon": recon[1], "test_loss": recon[1] + 5 + rng.normal(0.0, 1.0)}


def planted_tree(root, centres, seeds=5, dataset="mnist", rng_seed=1, config=None):
    """Five seeds per model around each model's centre; returns {(model, seed): finals}."""
    rng = np.random.default_rng(rng_seed)
    planted = {}
    for model, centre in centres.items():
        for seed in range(seeds):
            planted[model, seed] = draw(rng, centre)
            write(root, model, seed, planted[model, seed], dataset=dataset, config=config)
    return planted


def comparisons_of(root, dataset="mnist"):
    rows, runs = read_tree(root)
    return compare(final_epoch_table(rows, runs), dataset)


# cfactorvae 10 SDs below every other model.
CENTRES = {"vae": 100.0, "betavae": 110.0, "cvae": 102.0, "factorvae": 101.0, "cfactorvae": 90.0}
# The author recipe's runs, far from the described ones: cfactorvae above cvae, below factorvae.
AUTHOR_CENTRES = {"vae": 200.0, "betavae": 210.0, "cvae": 150.0, "factorvae": 220.0, "cfactorvae": 205.0}
# The reason the paper's test columns are read times 6: the author's print line, named.
CONFIRMED = ("the paper's code prints test-set sums divided by the training-set size: `main.py` of "
             "githubgreat886/controllable-factorVAE, in `process_cvae` and in `process_fvae`, prints its test line as "
             "`print('===> Epoch: {}  Test loss: {:.4f}  Test Reconstruction loss: {:.4f}'.format(epoch+1, "
             "test_loss / len(train_loader.dataset), test_re_loss / len(train_loader.dataset)))`. That confirms")


@pytest.fixture(scope="module")
def planted_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    planted = planted_tree(root, CENTRES)
    out = tmp_path_factory.mktemp("results") / "table1.md"
    summary = write_report(root, out)
    return planted, summary, out.read_text(encoding="utf-8")


@pytest.mark.fast
def test_planted_difference_supports_every_claim(planted_report):
    _, _, markdown = planted_report
    for claim in ("lower test recon error than FactorVAE", "lower test recon error than Controlled-VAE",
                  "lower test loss than FactorVAE", "lower test loss than Controlled-VAE"):
        assert f"- CFactorVAE has a {claim}: supported at alpha = 0.05 (Holm), n = 5 vs 5" in markdown


@pytest.mark.fast
def test_markdown_has_every_model_and_the_headers(planted_report):
    _, _, markdown = planted_report
    header = next(line for line in markdown.splitlines() if line.startswith("| Model | Train loss"))
    for name in HEADERS:
        assert f"| {name} |" in header
    assert header.endswith("| Diverged (excluded) | Trained on |")
    for label in ("| VAE |", "| β-VAE |"):
        # Table 1, the per-seed table
        assert sum(line.startswith(label) for line in markdown.splitlines()) == 1 + 1
    for label in ("| Controlled VAE (CVAE) |", "| FactorVAE (FVAE) |", "| CFactorVAE (CFVAE) |"):
        # Table 1, the per-seed table, four metric rows against the paper, one consistency row
        assert sum(line.startswith(label) for line in markdown.splitlines()) == 1 + 1 + 4 + 1
    assert "nats per image" in markdown
    assert "- Seeds finished: 0, 1, 2, 3, 4" in markdown and "- Epochs: 3" in markdown
    assert "first 256 images" in markdown and "test subset: full split" in markdown


@pytest.mark.fast
def test_records_without_weights_say_why_no_picture_is_drawn(planted_report):
    # The planted records have no _weights folder, as committed records mostly have not.
    _, _, markdown = planted_report
    section = markdown[markdown.index("## Pictures (seed 0)"):]
    assert section.splitlines()[2].startswith("Not drawn: no finished seed-0 run here has its final weights")
    assert "![" not in section


@pytest.mark.fast
def test_the_papers_test_columns_are_read_at_six_times_with_their_ratios():
    # The paper's train / test pairs, divided by hand: 125.75 / 21.13, 124.89 / 21.0, ...
    assert paper_ratios() == pytest.approx({
        ("cvae", "loss"): 5.95125, ("cvae", "recon"): 5.94714, ("factorvae", "loss"): 5.94690,
        ("factorvae", "recon"): 5.91504, ("cfactorvae", "loss"): 5.93153, ("cfactorvae", "recon"): 5.92470,
    }, abs=1e-5)
    assert paper_on_our_scale("factorvae") == pytest.approx(
        {"train_loss": 141.12, "train_recon": 121.14, "test_loss": 142.38, "test_recon": 122.88})


@pytest.mark.fast
def test_ours_minus_the_paper_per_cell_and_the_consistency_lines(planted_report):
    planted, summary, markdown = planted_report
    table = pd.read_csv(summary.csv).set_index("model")
    assert "5.92 to 5.95 times its test number" in markdown
    assert CONFIRMED in markdown
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


@pytest.mark.fast
def test_the_per_seed_table_shows_a_seed_far_from_the_rest(tmp_path):
    recons = {"cvae": [124.0, 128.0, 127.0, 123.0, 271.0], "cfactorvae": [119.0, 121.0, 118.0]}
    for model, values in recons.items():
        for seed, recon in enumerate(values):
            write(tmp_path / "runs", model, seed, {"train_loss": 130.0, "train_recon": 129.0,
                                                   "test_loss": recon + 1.0, "test_recon": recon})
    write_report(tmp_path / "runs", tmp_path / "out" / "table1.md")
    lines = (tmp_path / "out" / "table1.md").read_text(encoding="utf-8").splitlines()
    header = lines.index("| Model | Seed 0 | Seed 1 | Seed 2 | Seed 3 | Seed 4 | Median |")
    # medians by hand: 127 of (123, 124, 127, 128, 271); 119 of (118, 119, 121); models without runs have no row
    assert lines[header + 2: header + 5] == [
        "| Controlled VAE (CVAE) | 124.00 | 128.00 | 127.00 | 123.00 | 271.00 | 127.00 |",
        "| CFactorVAE (CFVAE) | 119.00 | 121.00 | 118.00 | — | — | 119.00 |",
        "",
    ]


@pytest.mark.fast
def test_the_report_says_how_far_each_model_still_fell_over_the_last_tenth(tmp_path):
    # 20 epochs: the last tenth is epochs 18 to 20. Seed s of cvae falls by s + 1 nats an epoch, so its change
    # is -2, -4, -6: mean -4, SD 2 by hand. factorvae's one run is flat; vae's run of 1 epoch has nothing before.
    runs = {("cvae", 0): (1.0, 20), ("cvae", 1): (2.0, 20), ("cvae", 2): (3.0, 20), ("factorvae", 0): (0.0, 20),
            ("vae", 0): (1.0, 1)}
    for (model, seed), (slope, epochs) in runs.items():
        config = {"model": model, "dataset": "mnist", "seed": seed, "epochs": epochs, "train_subset": 256,
                  "test_subset": 0}
        rows = [dict(run_id=f"{model}-{seed}", model=model, dataset="mnist", seed=seed, epoch=epoch, split=split,
                     step=epoch, loss=130.0, recon=100.0 + slope * (epochs - epoch) + (split == "train"), kl=1.0,
                     tc=0.0, capacity=0.0, capacity_gap=0.0, disc_acc=0.5, n_images=256, seconds=1.0)
                for epoch in range(1, epochs + 1) for split in ("train", "test")]
        write_run(run_path(tmp_path / "runs", "mnist", model, seed, f"{model}-{seed}"), rows,
                  record_meta(f"{model}-{seed}", config))
    markdown = write_report(tmp_path / "runs", tmp_path / "out" / "table1.md").markdown.read_text(encoding="utf-8")
    assert ("Over the last epochs: test recon error at epoch 20 minus at epoch 18 (the last tenth of the epochs, at "
            "least one), mean ± SD over the finished seeds; a negative change means the model was still improving when "
            "training stopped, and more epochs may change the ranking: Controlled VAE (CVAE) -4.00 ± 2.00 (n = 3); "
            "FactorVAE (FVAE) +0.00 (n = 1, no SD).") in markdown


@pytest.mark.fast
def test_trained_on_names_the_cpu_and_its_kernels_where_the_record_has_them(tmp_path):
    finals = {"train_loss": 130.0, "train_recon": 129.0, "test_loss": 126.0, "test_recon": 125.0}
    for seed in range(2):
        write(tmp_path / "runs", "cvae", seed, finals)
    for model, machine in {"factorvae": {"cpu": "AMD EPYC 7B13"},
                           "cfactorvae": {"cpu": "AMD EPYC 7B13", "cpu_capability": "AVX2"}}.items():
        config = {"model": model, "dataset": "mnist", "seed": 0, "epochs": EPOCHS, "train_subset": 256,
                  "test_subset": 0}
        rows = [dict(run_id=f"{model}-0", model=model, dataset="mnist", seed=0, epoch=epoch, split=split, step=epoch,
                     loss=130.0, recon=129.0, kl=1.0, tc=0.0, capacity=0.0, capacity_gap=0.0, disc_acc=0.5,
                     n_images=256, seconds=1.0) for epoch in range(1, EPOCHS + 1) for split in ("train", "test")]
        write_run(run_path(tmp_path / "runs", "mnist", model, 0, f"{model}-0"), rows,
                  record_meta(f"{model}-0", config, threads=2, **machine))
    write_report(tmp_path / "runs", tmp_path / "out" / "table1.md")
    markdown = (tmp_path / "out" / "table1.md").read_text(encoding="utf-8")
    assert ("- Trained on: differs between models: cvae cpu, torch 2.14.1, 1 thread(s); "
            "factorvae cpu (AMD EPYC 7B13), torch 2.14.1, 2 thread(s); "
            "cfactorvae cpu (AMD EPYC 7B13, AVX2), torch 2.14.1, 2 thread(s)") in markdown


@pytest.mark.fast
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


@pytest.mark.fast
def test_figures_are_written_and_non_empty(planted_report):
    _, summary, markdown = planted_report
    folder = summary.markdown.parent
    names = {"figure3.png", "figure3.svg", "figure-loss.png", "figure-loss.svg"}
    assert {p.name for p in summary.figures} == names
    for name in names:
        assert (folder / name).stat().st_size > 1000
    assert (folder / "figure3.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](figure3.png)" in markdown and "±1 SD over seeds" in markdown


@pytest.mark.fast
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


@pytest.mark.fast
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


@pytest.mark.fast
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


@pytest.mark.fast
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


@pytest.mark.fast
def test_running_run_is_listed_not_averaged(edge_report):
    _, summary, markdown = edge_report
    assert "| betavae | 4 | running | 1/3 | yes |" in markdown.split("#### Unfinished runs")[1]
    table = pd.read_csv(summary.csv).set_index("model")
    assert table.loc["betavae", "n_finished"] == 0 and table.loc["betavae", "n_unfinished"] == 1
    assert table.loc["betavae", "test_recon_n"] == 0


@pytest.mark.fast
def test_single_seed_cannot_be_tested(edge_report):
    _, _, markdown = edge_report
    assert ("- CFactorVAE has a lower test recon error than Controlled-VAE: cannot be tested: not enough seeds: "
            "cfactorvae has 5 finished, cvae has 1") in markdown
    assert "- CFactorVAE has a lower test recon error than FactorVAE: supported" in markdown
    assert "| Controlled VAE (CVAE) | " in markdown and "(n = 1, no SD)" in markdown


@pytest.mark.fast
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


@pytest.mark.fast
def test_unknown_dataset_names_it_and_the_available_ones(small_tree, tmp_path):
    with pytest.raises(BenchError, match=r"unknown dataset 'cifar'.*chairs, mnist"):
        write_report(small_tree, tmp_path / "out" / "table1.md", dataset="cifar")


@pytest.mark.fast
def test_no_runs_is_a_record_error(tmp_path):
    with pytest.raises(RecordError, match="no run files"):
        write_report(tmp_path / "empty", tmp_path / "out" / "table1.md")


@pytest.mark.fast
def test_foreign_parquet_is_named(small_tree, tmp_path):
    pd.DataFrame({"x": [1]}).to_parquet(run_dir(small_tree, "mnist", "factorvae", 0) / "notes.parquet")
    with pytest.raises(RecordError, match="notes.parquet"):
        write_report(small_tree, tmp_path / "out" / "table1.md")


@pytest.mark.fast
def test_unwritable_output_folder_is_one_line_bench_error(small_tree, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the output folder should be")
    with pytest.raises(BenchError, match="blocker is not a folder; move that file away") as caught:
        write_report(small_tree, blocker / "table1.md")
    assert "\n" not in str(caught.value)


@pytest.mark.fast
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


@pytest.mark.fast
def test_described_records_read_as_before_recipes(planted_report):
    _, summary, markdown = planted_report
    headings = [line for line in markdown.splitlines() if line.startswith("#")]
    assert headings == ["# Reconstruction quality: Table 1 and Figure 3 of the CFactorVAE paper", "## Dataset: mnist",
                        "### Table 1: reconstruction quality at the final epoch", "### Against the paper's Table 1",
                        "### Significance", "#### Verdicts on the paper's claims", "### Figures",
                        "## Pictures (seed 0)"]
    assert "recipe" not in markdown
    assert summary.sections == (("mnist", "described"),)
    assert set(pd.read_csv(summary.csv)["recipe"]) == {"described"}


def cell(values):
    """A Table 1 cell of five seeds, by hand: mean ± SD (ddof 1)."""
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f} (n = 5)"


@pytest.fixture(scope="module")
def two_recipes(tmp_path_factory):
    """The planted described tree (records without a recipe key) beside author runs around AUTHOR_CENTRES.

    The author runs' D is dead (tc 0, accuracy 0.5 on both splits) in every cfactorvae run and in
    factorvae seeds 0 and 1; factorvae seeds 2 to 4 have tc 2 (train) and 1 (test), accuracy 0.8 and 0.7.
    """
    root = tmp_path_factory.mktemp("runs")
    described = planted_tree(root, CENTRES)
    rng = np.random.default_rng(2)
    author = {}
    for model, centre in AUTHOR_CENTRES.items():
        for seed in range(5):
            author[model, seed] = draw(rng, centre)
            alive = model == "factorvae" and seed >= 2
            write(root, model, seed, author[model, seed], config={"recipe": "author"},
                  tc=(2.0, 1.0) if alive else (0.0, 0.0), disc_acc=(0.8, 0.7) if alive else (0.5, 0.5))
    out = tmp_path_factory.mktemp("results") / "table1.md"
    summary = write_report(root, out)
    markdown = out.read_text(encoding="utf-8")
    parts = markdown.split("\n## Dataset: mnist, recipe: ")
    sections = {part.split("\n", 1)[0]: part for part in parts[1:]}
    return SimpleNamespace(planted={"described": described, "author": author}, root=root, summary=summary,
                           markdown=markdown, sections=sections)


def test_each_recipe_gets_its_own_section_and_its_own_means(two_recipes):
    planted, summary, sections = two_recipes.planted, two_recipes.summary, two_recipes.sections
    assert summary.sections == (("mnist", "described"), ("mnist", "author"))
    assert list(sections) == ["described", "author"]
    assert "never averaged or tested together" in two_recipes.markdown
    table = pd.read_csv(summary.csv).set_index(["recipe", "model"])
    assert len(table) == 10
    for recipe, section in sections.items():
        assert ("- Runs: 25 finished runs averaged; excluded from the means: 0 diverged, 0 unfinished, "
                "0 of other configurations") in section
        for model in MODELS:
            finals = [planted[recipe][model, seed] for seed in range(5)]
            for key in KEYS:
                values = [f[key] for f in finals]
                assert table.loc[(recipe, model), f"{key}_mean"] == pytest.approx(np.mean(values), rel=1e-12)
                assert table.loc[(recipe, model), f"{key}_n"] == 5
            row = " | ".join(cell([f[key] for f in finals]) for key in KEYS)
            assert f"| {LABELS[model]} | {row} | 0 | cpu, torch 2.14.1, 1 thread(s) |" in section


def test_each_recipe_is_tested_on_its_own_runs(two_recipes):
    planted, sections = two_recipes.planted, two_recipes.sections
    rows, runs = read_tree(two_recipes.root)
    for recipe in ("described", "author"):
        table = compare(final_epoch_table(rows, runs), "mnist", recipe)
        assert set(table["n_a"]) == {5} and set(table["n_b"]) == {5}
        for row in table.to_dict("records"):
            a = [planted[recipe]["cfactorvae", s][row["metric"]] for s in range(5)]
            b = [planted[recipe][row["b"], s][row["metric"]] for s in range(5)]
            assert row["diff"] == pytest.approx(np.mean(a) - np.mean(b), rel=1e-12)
            assert row["p"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-9)
    for claim in ("test recon error than FactorVAE", "test loss than FactorVAE"):
        for recipe in ("described", "author"):
            assert f"- CFactorVAE has a lower {claim}: supported" in sections[recipe]
    for claim in ("test recon error than Controlled-VAE", "test loss than Controlled-VAE"):
        assert f"- CFactorVAE has a lower {claim}: supported" in sections["described"]
        assert f"- CFactorVAE has a lower {claim}: contradicted (significantly higher)" in sections["author"]


def test_the_author_section_says_how_the_recipes_differ(two_recipes):
    sections = two_recipes.sections
    for section in sections.values():
        assert CONFIRMED in section
    assert two_recipes.markdown.count("### How the author recipe differs from the described one") == 1
    author = sections["author"]
    assert "### How the author recipe differs from the described one" in author
    for fact in ("469 updates an epoch", "lr 1e-3", "conv 1→32→64→64", "U(±1/√n)",
                 "β = 4 for CVAE, 1 for CFactorVAE", "0, 0.5, …, 24.5", "| TC weight γ | 3.5 (argparse's `type=int`",
                 "`nn.LeakyReLU(True)`", "γ · mean_i D(z_i)", "[D(z), D(perm z′)] against [1, 0]", "(reduction sum)",
                 "`bench run --models cfactorvae --recipe author --set gamma=0`"):
        assert fact in author, fact
    assert "4 · mean_i |KL_i − C| for CVAE" in author and "(|KL − C| for CVAE" in sections["described"]


def test_the_author_section_says_whether_its_discriminator_died(two_recipes):
    author = two_recipes.sections["author"]
    # By hand: factorvae tc train (0, 0, 2, 2, 2): mean 1.2, SD sqrt(4.8 / 4) = 1.095; test (0, 0, 1, 1, 1): 0.6,
    # sqrt(1.2 / 4) = 0.548; accuracy train (.5, .5, .8, .8, .8): 0.68, sqrt(0.108 / 4) = 0.164; test 0.62, 0.110.
    assert ("| FactorVAE (FVAE) | 1.200 ± 1.095 (n = 5) | 0.600 ± 0.548 (n = 5) | 0.680 ± 0.164 (n = 5) "
            "| 0.620 ± 0.110 (n = 5) | 2 of 5 |") in author
    assert ("| CFactorVAE (CFVAE) | 0.000 ± 0.000 (n = 5) | 0.000 ± 0.000 (n = 5) | 0.500 ± 0.000 (n = 5) "
            "| 0.500 ± 0.000 (n = 5) | 5 of 5 |") in author
    assert "at the final epoch in 7 of 10 runs: in those the TC term no longer acts." in author


def test_each_recipe_gets_figures_of_its_own(two_recipes):
    summary, sections = two_recipes.summary, two_recipes.sections
    assert {p.name for p in summary.figures} == {f"{name}-{recipe}.{ext}" for name in ("figure3", "figure-loss")
                                                 for recipe in ("described", "author") for ext in ("png", "svg")}
    for recipe, section in sections.items():
        assert f"](figure3-{recipe}.png)" in section and f"](figure-loss-{recipe}.png)" in section
    svg = (summary.markdown.parent / "figure3-author.svg").read_text()
    assert "mnist, author recipe" in svg


def test_an_author_only_tree_names_its_recipe_and_keeps_the_file_names(tmp_path):
    for model in ("vae", "cvae"):
        for seed in (0, 1):
            write(tmp_path / "runs", model, seed, draw(np.random.default_rng(seed), 100.0), config={"recipe": "author"})
    summary = write_report(tmp_path / "runs", tmp_path / "out" / "table1.md")
    markdown = summary.markdown.read_text(encoding="utf-8")
    assert [line for line in markdown.splitlines() if line.startswith("## ")] == ["## Dataset: mnist, recipe: author",
                                                                                  "## Pictures (seed 0)"]
    assert {p.name for p in summary.figures} == {"figure3.png", "figure3.svg", "figure-loss.png", "figure-loss.svg"}
    assert "No finished FactorVAE or CFactorVAE run of this recipe yet" in markdown
    assert "never averaged or tested together" not in markdown


def test_the_author_section_says_until_when_cfactorvae_trained_as_factorvae(tmp_path):
    # Test recon per epoch, by seed: seed 0 equal throughout; seed 1 equal for epochs 1 and 2, then 1.5 nats lower;
    # seeds 2 and 3 apart from epoch 1 (+0.25 at epoch 3), seed 2's pair on two CPUs, seed 3's CFactorVAE's unrecorded.
    recon = {("factorvae", 0): (150.0, 140.0, 130.0), ("cfactorvae", 0): (150.0, 140.0, 130.0),
             ("factorvae", 1): (151.0, 141.0, 131.0), ("cfactorvae", 1): (151.0, 141.0, 129.5),
             ("factorvae", 2): (152.0, 142.0, 132.0), ("cfactorvae", 2): (152.5, 142.5, 132.25),
             ("factorvae", 3): (152.0, 142.0, 132.0), ("cfactorvae", 3): (152.5, 142.5, 132.25)}
    cpus = {("cfactorvae", 2): "Other CPU", ("cfactorvae", 3): None}
    for (model, seed), values in recon.items():
        config = {"model": model, "dataset": "mnist", "seed": seed, "epochs": 3, "recipe": "author"}
        run_id = f"{model}-{seed}"
        rows = [dict(run_id=run_id, model=model, dataset="mnist", seed=seed, epoch=epoch, split=split, step=epoch,
                     loss=value + 1.0, recon=value, kl=1.0, tc=0.0, capacity=0.0, capacity_gap=0.0, disc_acc=0.5,
                     n_images=10, seconds=1.0)
                for epoch, value in enumerate(values, 1) for split in ("train", "test")]
        cpu = cpus.get((model, seed), "Test CPU")
        meta = record_meta(run_id, config, "finished", **({"cpu": cpu} if cpu else {}))
        write_run(run_path(tmp_path / "runs", "mnist", model, seed, run_id), rows, meta)
    markdown = write_report(tmp_path / "runs", tmp_path / "out" / "t.md").markdown.read_text(encoding="utf-8")
    assert ("seed 0: the same through epoch 3; seed 1: the same through epoch 2, then apart (-1.50 nats at epoch 3); "
            "seed 2: apart from epoch 1 (+0.25 nats at epoch 3), trained on different machines; "
            "seed 3: apart from epoch 1 (+0.25 nats at epoch 3), the CPUs not recorded." in markdown)
    assert "on two CPUs (or where the records do not say which) the pair parts from its first epoch" in markdown
    for model in ("factorvae", "cfactorvae"):
        for seed in (2, 3):
            shutil.rmtree(run_path(tmp_path / "runs", "mnist", model, seed, f"{model}-{seed}").parent)
    markdown = write_report(tmp_path / "runs", tmp_path / "out" / "t.md").markdown.read_text(encoding="utf-8")
    assert "then apart (-1.50 nats at epoch 3)." in markdown and "the pair parts from its first epoch" not in markdown


def _final_run(root, run_id, model, seed, test_recon, **config):
    """A one-epoch run of ``model`` whose test recon error is ``test_recon`` and test loss one nat more."""
    config = {"model": model, "dataset": "mnist", "seed": seed, "epochs": 1, **config}
    rows = [dict(run_id=run_id, model=model, dataset="mnist", seed=seed, epoch=1, split=split, step=1,
                 loss=test_recon + 1.0, recon=test_recon, kl=1.0, tc=0.0, capacity=0.0, capacity_gap=0.0,
                 disc_acc=0.5, n_images=10, seconds=1.0) for split in ("train", "test")]
    write_run(run_path(root, "mnist", model, seed, run_id), rows, record_meta(run_id, config, "finished"))


def test_a_second_folder_adds_ablations_compared_with_their_model_and_with_the_others(tmp_path):
    main, ablation = tmp_path / "main", tmp_path / "gamma0"
    table = {"factorvae": (120.0, 121.0, 122.0), "cfactorvae": (117.0, 118.0, 119.0)}
    for model, values in table.items():
        for seed, value in enumerate(values):
            _final_run(main, f"{model}-{seed}", model, seed, value, gamma=6.4)
    variant = (110.0, 111.0, 112.0)
    for seed, value in enumerate(variant):
        _final_run(ablation, f"gamma0-{seed}", "cfactorvae", seed, value, gamma=0.0)
    # Trained for another length: listed as another configuration, never compared as an ablation.
    _final_run(main, "long-0", "cfactorvae", 0, 100.0, epochs=2, gamma=6.4)
    _final_run(main, "long-1", "cfactorvae", 1, 101.0, epochs=2, gamma=6.4)
    markdown = write_report([main, ablation], tmp_path / "out" / "t.md").markdown.read_text(encoding="utf-8")

    assert f"`{main}` and `{ablation}` (each model's table configuration from the first folder" in markdown
    # The table keeps the first folder's CFactorVAE although the variant has as many seeds.
    assert "| CFactorVAE (CFVAE) | 119.00 ± 1.00 (n = 3) | 118.00 ± 1.00 (n = 3) | 119.00 ± 1.00 (n = 3) " in markdown
    ablations = markdown.split("### Ablations")[1].split("### Figures")[0]
    assert "| cfactorvae gamma=0.0 | 111.00 ± 1.00 (n = 3) | 112.00 ± 1.00 (n = 3) |" in ablations
    assert "epochs=2" not in ablations and "- cfactorvae: 2 runs (2 finished) with epochs=2 (table: 1)" in markdown
    # By hand: SD 1 in each group of 3, so SE = sqrt(1/3 + 1/3) = 0.8165 and Welch's df = 4; against CFactorVAE
    # t = -7 / 0.8165 = -8.573, against FactorVAE t = -10 / 0.8165 = -12.247; both metrics alike. The 95% CI of -7:
    # -7 ± t(0.975, 4) * 0.8165 = -7 ± 2.776 * 0.8165 = [-9.27, -4.73].
    p_cf, p_f = (2 * stats.t.sf(abs(t), 4) for t in (-7 / np.sqrt(2 / 3), -10 / np.sqrt(2 / 3)))
    for b, diff, t, p in (("cfactorvae", -7.0, -8.573, p_cf), ("factorvae", -10.0, -12.247, p_f)):
        assert f"| Test recon error | cfactorvae gamma=0.0 vs {b} | 3 vs 3 | {diff:+.2f} [" in ablations
        assert f"| {t:.2f} (4.0) | {p:.4f} |" in ablations
    # Holm over the four: p_f, p_f, p_cf, p_cf ranked; adjusted 4 p_f, max(4 p_f, 3 p_f), 2 p_cf, max(2 p_cf, p_cf).
    holm_cf = max(4 * p_f, 2 * p_cf)
    assert ("- cfactorvae gamma=0.0 against cfactorvae, test recon error: significantly lower at alpha = 0.05 (Holm), "
            "n = 3 vs 3 (difference -7.00 nats, 95% CI [") in ablations
    assert holm_cf > 1e-4 and f"[-9.27, -4.73], Holm p = {holm_cf:.4f})" in ablations
    assert "Holm correction over the 4 tests of this family that could run (of 4)" in ablations
    # CFactorVAE's own lead over FactorVAE: 118 - 121 = -3, t = -3 / 0.8165 = -3.674 (df 4) on both metrics, so
    # Holm over those two (CVAE is absent) doubles the one p. The variant's -10 is 10 / 3 = 333% of it.
    holm_lead = 2 * 2 * stats.t.sf(3 / np.sqrt(2 / 3), 4)
    assert holm_lead < 0.05
    assert (f"- cfactorvae gamma=0.0, test recon error against factorvae: -10.00 nats, 333% of CFactorVAE's -3.00 "
            f"(Holm p = {holm_lead:.4f})") in ablations
    assert "against cvae" not in ablations
    # Per seed, the variant under its model's table runs (the longer runs of seeds 0 and 1 are not among them).
    assert ("| Configuration | Seed 0 | Seed 1 | Seed 2 | Median |\n|---|---|---|---|---|\n"
            "| cfactorvae | 117.00 | 118.00 | 119.00 | 118.00 |\n"
            "| cfactorvae gamma=0.0 | 110.00 | 111.00 | 112.00 | 111.00 |") in ablations


def test_two_ablations_of_one_model_list_its_table_seeds_once(tmp_path):
    main, gamma0, leaky = tmp_path / "main", tmp_path / "gamma0", tmp_path / "leaky"
    for seed, value in enumerate((117.0, 118.0)):
        _final_run(main, f"cf-{seed}", "cfactorvae", seed, value, gamma=6.4)
        _final_run(gamma0, f"g0-{seed}", "cfactorvae", seed, value - 5, gamma=0.0)
        _final_run(leaky, f"lk-{seed}", "cfactorvae", seed, value + 5, gamma=6.4, disc="author-leaky")
    markdown = write_report([main, gamma0, leaky], tmp_path / "out" / "t.md").markdown.read_text(encoding="utf-8")
    seeds = markdown.split("| Configuration | Seed 0 | Seed 1 | Median |")[1].split("\n\n")[0]
    assert seeds.strip().splitlines()[1:] == [
        "| cfactorvae | 117.00 | 118.00 | 117.50 |",
        "| cfactorvae disc=author-leaky | 122.00 | 123.00 | 122.50 |",
        "| cfactorvae gamma=0.0 | 112.00 | 113.00 | 112.50 |",
    ]


def test_ablations_of_the_same_change_to_two_models_are_compared_with_each_other(tmp_path):
    main, leaky_cf, leaky_f = tmp_path / "main", tmp_path / "leaky-cf", tmp_path / "leaky-f"
    for seed in range(3):
        _final_run(main, f"f-{seed}", "factorvae", seed, 120.0 + seed, gamma=6.4)
        _final_run(main, f"cf-{seed}", "cfactorvae", seed, 117.0 + seed, gamma=6.4)
        _final_run(leaky_cf, f"lcf-{seed}", "cfactorvae", seed, 124.0 + seed, gamma=6.4, disc="author-leaky")
        _final_run(leaky_f, f"lf-{seed}", "factorvae", seed, 121.0 + seed, gamma=6.4, disc="author-leaky")
    # Another change of FactorVAE is no twin of the leaky CFactorVAE.
    for seed in range(3):
        _final_run(tmp_path / "other", f"g-{seed}", "factorvae", seed, 119.0 + seed, gamma=0.0)
    folders = [main, leaky_cf, leaky_f, tmp_path / "other"]
    ablations = write_report(folders, tmp_path / "out" / "t.md").markdown.read_text(encoding="utf-8")
    ablations = ablations.split("### Ablations")[1].split("### Figures")[0]
    # By hand: 125 against 122, SD 1 in each group of 3: t = 3 / sqrt(2 / 3) = 3.674, Welch's df 4.
    pair = "| Test recon error | cfactorvae disc=author-leaky vs factorvae disc=author-leaky | 3 vs 3 | +3.00 ["
    assert pair in ablations and "| 3.67 (4.0) |" in ablations.split(pair)[1].splitlines()[0]
    assert "vs factorvae gamma=0.0" not in ablations
    # The family: the leaky CFactorVAE against its model, FactorVAE and its twin; each FactorVAE variant against
    # FactorVAE: 3 + 1 + 1 comparisons x 2 metrics, each metric's alike, so Holm ranks pairs of equal p.
    assert "Holm correction over the 10 tests of this family that could run (of 10)" in ablations
    # Ranked: the diffs 7, 7, 4, 4, 3, 3, then four of 1; the pair's adjusted p is the largest of
    # 10 p7, 9 p7, 8 p4, 7 p4, 6 p3: significant alone, not after Holm over the family.
    p7, p4, p3 = (2 * stats.t.sf(diff / np.sqrt(2 / 3), 4) for diff in (7, 4, 3))
    holm_pair = max(10 * p7, 8 * p4, 6 * p3)
    assert p3 < 0.05 < holm_pair
    assert ("- cfactorvae disc=author-leaky against factorvae disc=author-leaky, test recon error: no significant "
            "difference at alpha = 0.05 (Holm") in ablations
    assert f"(difference +3.00 nats, 95% CI [+0.73, +5.27], Holm p = {holm_pair:.4f})" in ablations
    # What a variant keeps of CFactorVAE's lead (-3 against FactorVAE, Holm p = 2 x 0.0213 over the two metrics) is
    # asked of CFactorVAE's variants alone: a FactorVAE variant's difference from FactorVAE is no share of it.
    kept = ablations.split("What each variant of CFactorVAE keeps")[1]
    assert "- cfactorvae disc=author-leaky, test recon error against factorvae: +4.00 nats, -133% of CFactorVAE's -3.00" in kept
    assert "- factorvae" not in kept


def test_an_ablation_keeps_a_share_of_a_supported_lead_only():
    planned = dict(metric="test_recon", b="factorvae", diff=-2.0, p_holm=0.01, reason="")
    ablated = dict(a="cfactorvae gamma=0.0", metric="test_recon", b="factorvae", diff=-0.5, reason="")
    assert lead_kept(planned, ablated) == ("cfactorvae gamma=0.0, test recon error against factorvae: -0.50 nats, "
                                           "25% of CFactorVAE's -2.00 (Holm p = 0.0100)")
    for unsupported in (dict(p_holm=0.2), dict(diff=2.0), dict(reason="not enough seeds")):
        assert lead_kept(planned | unsupported, ablated).endswith("CFactorVAE has no supported lead over factorvae to keep")
    untested = ablated | dict(reason="not enough seeds: cfactorvae gamma=0.0 has 1 finished")
    assert lead_kept(planned, untested).endswith("cannot be compared: not enough seeds: cfactorvae gamma=0.0 has 1 finished")


def test_a_run_in_two_folders_is_refused(tmp_path):
    for root in ("a", "b"):
        _final_run(tmp_path / root, "same", "vae", 0, 100.0)
    with pytest.raises(RecordError, match=r"run same is in both .*a and .*b: land each run in one records folder"):
        write_report([tmp_path / "a", tmp_path / "b"], tmp_path / "out" / "t.md")
    with pytest.raises(RecordError, match="given twice"):
        write_report([tmp_path / "a", tmp_path / "a"], tmp_path / "out" / "t.md")
    assert not (tmp_path / "out" / "t.md").exists()


def test_seeds_finished_are_listed_per_model_where_models_differ(tmp_path):
    for model, seeds in (("vae", (0, 1, 2)), ("cvae", (0, 2, 10))):
        for seed in seeds:
            _final_run(tmp_path / "runs", f"{model}-{seed}", model, seed, 100.0 + seed)
    markdown = write_report(tmp_path / "runs", tmp_path / "out" / "t.md").markdown.read_text(encoding="utf-8")
    assert "- Seeds finished: differs between models: vae 0, 1, 2; cvae 0, 2, 10\n" in markdown
