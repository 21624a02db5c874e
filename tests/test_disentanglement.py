"""A run on a dataset with known factors is scored when it finishes, and the report tests the scores."""

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from support import REPO, run_bench

from bench.config import METRIC_COUNTS
from bench.data.datasets import ground_truth, render_dsprites
from bench.errors import BenchError
from bench.eval.saved import score_runs, scoring_threads
from bench.eval.scores import counts_for, posterior_means
from bench.records import METRICS_SCHEMA, metrics_path, read_metrics, read_tree, weights_path, write_metrics
from bench.report.scores import compare_scores, scores_markdown, summarise_scores
from models.nets import VAE

SCORES = {"factorvae_score", "mig", "dci_disentanglement", "dci_completeness", "dci_informativeness_train",
          "dci_informativeness_test", "sap"}


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """Two seeds of FactorVAE and CFactorVAE on the generated dSprites, one short epoch each.

    Four latent dimensions rather than 20: DCI's trees, most of the scoring's time, are then about
    twice as quick, and every path the tests follow is the same.
    """
    out = tmp_path_factory.mktemp("dsprites")
    done = run_bench("run", "--models", "factorvae,cfactorvae", "--datasets", "dsprites", "--seeds", "2", "--profile",
                     "smoke", "--epochs", "1", "--subset", "64,32", "--jobs", "1", "--set", "z_dim=4",
                     "--out", out / "runs", "--data-root", out / "no-data", cwd=out)
    assert done.returncode == 0, done.stderr
    return out


def test_a_finished_dsprites_run_records_its_scores_beside_its_epochs(scored):
    rows, runs = read_tree(scored / "runs")
    assert set(runs["status"]) == {"finished"} and len(runs) == 4
    smoke = counts_for("smoke")
    for run in runs.to_dict("records"):
        table = pq.read_table(metrics_path(Path(run["path"])))
        assert table.schema.equals(METRICS_SCHEMA, check_metadata=False)
        frame = table.to_pandas()
        assert set(frame["metric"]) == SCORES and (frame["run_id"] == run["run_id"]).all()
        assert frame["value"].between(0, 1).all()
        assert (frame["n_train"] == METRIC_COUNTS["smoke"]["n_train"]).all()
        assert (frame["factorvae_n_eval"] == smoke.factorvae_n_eval).all()
        assert (frame["dci_rounds"] == METRIC_COUNTS["smoke"]["dci_rounds"]).all()
        assert (frame["representation"] == "posterior mean").all()
    # The epoch records stay one schema: pandas reading the whole tree skips the _metrics folders.
    assert len(pd.read_parquet(scored / "runs")) == len(rows)


def test_the_report_shows_the_scores_with_their_tests(scored):
    done = run_bench("report", "--runs", scored / "runs", "--out", scored / "report" / "table1.md", cwd=scored)
    assert done.returncode == 0, done.stderr
    text = (scored / "report" / "table1.md").read_text()
    assert "### Disentanglement on ground-truth factors" in text
    assert "| DCI disentanglement | cfactorvae vs factorvae | 2 vs 2 |" in text
    assert "| DCI informativeness (test) | cfactorvae vs factorvae | 2 vs 2 |" in text
    # The counts are said next to the scores, and that they are not disentanglement_lib's.
    assert "the smoke profile's sample counts, fewer than disentanglement_lib's" in text
    assert "trained on those 500 and tested on 200 more" in text
    assert "GradientBoostingClassifier per factor, 10 boosting rounds)" in text
    assert (scored / "report" / "figure-kl-dims.png").is_file()
    # Seed 0 of both models has its weights, so the report draws them and sets them side by side.
    assert "![dsprites-seed0-factorvae-vs-cfactorvae](figures/dsprites-seed0-factorvae-vs-cfactorvae.png)" in text
    assert (scored / "report" / "figures" / "dsprites-cfactorvae-seed0-traversal.png").is_file()


def test_scoring_reads_the_posterior_mean(tmp_path):
    # That scoring is deterministic, across processes, is checked where bench metrics scores runs again.
    torch.manual_seed(0)
    vae = VAE(4, 1, 64)
    truth = ground_truth("dsprites", tmp_path)
    factors = np.array([[0, 1, 2, 3, 4], [2, 5, 39, 31, 0]])
    with torch.no_grad():
        direct = vae.encoder(render_dsprites(factors).float() / 255)[0].double().numpy()
    assert np.array_equal(posterior_means(vae, truth)(factors), direct)


@pytest.mark.fast
def test_the_score_table_and_tests_match_hand_computed_numbers():
    # CFactorVAE MIG 0.2, 0.4 (mean 0.3, SD 0.1414); FactorVAE 0.1, 0.1, 0.4 (mean 0.2, SD 0.1732).
    values = {("cfactorvae", 0): 0.2, ("cfactorvae", 1): 0.4, ("factorvae", 0): 0.1, ("factorvae", 1): 0.1,
              ("factorvae", 2): 0.4}
    scores = pd.DataFrame([{"run_id": f"{m}{s}", "model": m, "dataset": "dsprites", "seed": s, "metric": "mig",
                            "value": v} for (m, s), v in values.items()])
    summary = summarise_scores(scores).set_index(["model", "metric"])
    assert summary.loc[("cfactorvae", "mig"), "mean"] == pytest.approx(0.3)
    assert summary.loc[("cfactorvae", "mig"), "sd"] == pytest.approx(np.sqrt(0.02))
    assert summary.loc[("factorvae", "mig"), "sd"] == pytest.approx(np.sqrt(0.03))
    assert summary.loc[("vae", "mig"), "n"] == 0
    test = compare_scores(scores).set_index(["metric", "b"]).loc[("mig", "factorvae")]
    # Welch: se^2 = 0.02/2 + 0.03/3 = 0.02, t = 0.1 / sqrt(0.02) = 0.7071;
    # df = 0.02^2 / ((0.01^2)/1 + (0.01^2)/2) = 0.0004 / 0.00015 = 2.667.
    assert test["diff"] == pytest.approx(0.1)
    assert test["t"] == pytest.approx(0.1 / np.sqrt(0.02))
    assert test["df"] == pytest.approx(0.0004 / 0.00015)
    # The only test that could run is the whole Holm family.
    assert test["p_holm"] == pytest.approx(test["p"])


def _rows(metrics, runs, profile="quick"):
    """Metric rows as records hold them: every metric of every (model, seed) in ``runs``, value 0.1 * seed."""
    counts = dataclasses.asdict(counts_for(profile))
    return pd.DataFrame([{"run_id": f"{model}{seed}", "model": model, "dataset": "dsprites", "seed": seed,
                          "metric": metric, "value": 0.1 * seed, "metric_seed": 0, **counts,
                          "representation": "posterior mean", "seconds": 1.0}
                         for model, seed in runs for metric in metrics])


EARLIER = ["factorvae_score", "mig", "dci_disentanglement", "sap"]
PAIRS = [(model, seed) for model in ("cfactorvae", "factorvae") for seed in (1, 2)]


@pytest.mark.fast
def test_records_of_the_earlier_four_scores_still_report(tmp_path):
    # A metric file as runs scored before DCI and SAP came from disentanglement_lib's estimators wrote it.
    rows = _rows(EARLIER, PAIRS)
    for run_id, frame in rows.groupby("run_id"):
        write_metrics(tmp_path / "_metrics" / f"{run_id}.parquet", frame.to_dict("records"))
    read = read_metrics(tmp_path)
    assert set(read["metric"]) == set(EARLIER) and len(read) == len(rows)
    text = "\n".join(scores_markdown(read))
    assert "| Model | FactorVAE score | MIG | DCI disentanglement | SAP |" in text
    assert "DCI disentanglement (gradient-boosted stumps) on the same samples and SAP (least-squares" in text
    assert "the quick profile's sample counts, fewer than disentanglement_lib's (10,000 training" in text
    # Four metrics against four models, of which only FactorVAE has seeds: 4 tests of 16, not of 28.
    assert "Holm correction over the 4 tests that could run (of 16)" in text


@pytest.mark.fast
def test_metric_records_from_before_the_rounds_column_read_as_sklearns_100_rounds():
    earlier = REPO / "results" / "records" / "dsprites-quick-cpu"
    files = list(earlier.rglob("_metrics/*.parquet"))
    assert files and all("dci_rounds" not in pq.read_schema(path).names for path in files)
    assert read_metrics(earlier)["dci_rounds"].tolist() == [100] * 7 * len(files)


@pytest.mark.fast
def test_earlier_dci_and_sap_are_not_averaged_with_disentanglement_libs():
    # Seed 1 of both models was scored before, seed 2 with every metric now: the table's DCI
    # disentanglement and SAP are seed 2's alone (0.2, n = 1), its FactorVAE score both seeds'.
    scores = pd.concat([_rows(EARLIER, [(m, 1) for m in ("cfactorvae", "factorvae")]),
                        _rows(SCORES, [(m, 2) for m in ("cfactorvae", "factorvae")], profile="paper")])
    text = "\n".join(scores_markdown(scores))
    assert "2 of the 4 runs were scored before" in text
    factorvae = next(line for line in text.splitlines() if line.startswith("| FactorVAE (FVAE) |"))
    assert factorvae.split(" | ")[1:4] == ["0.150 ± 0.071 (n = 2)", "0.150 ± 0.071 (n = 2)", "0.200 (n = 1)"]
    assert factorvae.endswith("| 0.200 (n = 1) |")


@pytest.mark.fast
def test_the_counts_line_names_disentanglement_libs_counts():
    text = "\n".join(scores_markdown(_rows(SCORES, PAIRS, profile="paper")))
    assert "disentanglement_lib's sample counts (the paper profile's)" in text
    assert "trained on those 10,000 and tested on 5,000 more" in text


def _scores(record: Path) -> pd.DataFrame:
    return pd.read_parquet(metrics_path(record)).drop(columns="seconds")


def test_bench_metrics_scores_runs_whose_scores_are_gone_and_gets_the_same_numbers(scored, tmp_path):
    runs_root = tmp_path / "runs"
    shutil.copytree(scored / "runs", runs_root)
    records = sorted(Path(p) for p in read_tree(runs_root)[1]["path"])
    before = {record: _scores(record) for record in records}
    lost, gone = records[0], records[1]
    metrics_path(lost).unlink()
    metrics_path(gone).unlink()
    weights_path(gone).unlink()

    done = run_bench("metrics", "--runs", runs_root, "--data-root", scored / "no-data", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "scored 1, already scored 2, without final weights 1, not finished 0" in done.stdout
    assert f"no final weights (cannot be scored): {gone}" in done.stdout
    pd.testing.assert_frame_equal(_scores(lost), before[lost])
    assert not metrics_path(gone).exists()

    # --again scores anew a run scored before, here one as bench run scored it (one run: each costs seconds).
    kept = records[2]
    again = run_bench("metrics", "--runs", kept.parent, "--data-root", scored / "no-data", "--again", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "scored 1, already scored 0, without final weights 0" in again.stdout
    assert metrics_path(kept).stat().st_mtime_ns > metrics_path(records[3]).stat().st_mtime_ns
    for record in (r for r in records if r != gone):
        pd.testing.assert_frame_equal(_scores(record), before[record])


@pytest.mark.fast
def test_bench_metrics_on_runs_without_factors_says_there_is_nothing_to_score(tmp_path):
    mnist = REPO / "results" / "records" / "mnist-paper-e5-cpu"
    with pytest.raises(BenchError, match=r"no run under .* is on a dataset with known factors \(dsprites\)"):
        score_runs(mnist, tmp_path)


@pytest.mark.fast
@pytest.mark.parametrize("run, expected", [({"device": "cpu", "threads": 1}, 1), ({"device": "cpu", "threads": 2.0}, 2),
                                           ({"device": "cpu", "threads": float("nan")}, None),
                                           ({"device": "cuda", "threads": 1}, None), ({"device": "cpu"}, None)])
def test_bench_metrics_scores_a_cpu_run_with_the_threads_its_record_names(run, expected):
    assert scoring_threads(run) == expected
