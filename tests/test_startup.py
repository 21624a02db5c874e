"""The commands that only read records start without torch: `bench --help`, `bench report`, `bench check --runs`.

Loading torch takes seconds of a process's start on a small machine, more than these commands'
own work. Each command runs in one fresh interpreter, which then says whether torch was loaded.
"""

import dataclasses

from support import record_meta, run_python

from bench.config import METRIC_COUNTS
from bench.eval.metrics import MetricCounts
from bench.records import metrics_path, run_path, write_metrics, write_run

SCORES = ("factorvae_score", "mig", "dci_disentanglement", "dci_completeness", "dci_informativeness_train",
          "dci_informativeness_test", "sap")

COMMANDS = r"""
import sys
from bench.cli import main

runs, out, reference = sys.argv[1:]
main(["--help"])
main(["report", "--runs", runs, "--out", out])
for update in (["--update"], []):
    try:
        main(["check", "--runs", runs, "--reference", reference, *update])
    except SystemExit as exc:
        sys.exit(f"bench check {' '.join(update)} exited {exc.code}")
print("torch loaded:", sorted(name for name in sys.modules if name.split(".")[0] == "torch") or "no")
"""


def write_scored_runs(root):
    """Three seeds of two models on dSprites, two epochs each, with their disentanglement scores."""
    counts = dataclasses.asdict(MetricCounts(**METRIC_COUNTS["quick"]))
    for model, centre in (("vae", 100.0), ("factorvae", 90.0)):
        for seed in range(3):
            config = {"model": model, "dataset": "dsprites", "seed": seed, "epochs": 2, "train_subset": 256}
            run_id = f"{model}-{seed}"
            rows = [{"run_id": run_id, "model": model, "dataset": "dsprites", "seed": seed, "epoch": epoch,
                     "split": split, "step": 4 * epoch, "loss": centre + seed + 10.0 * (2 - epoch),
                     "recon": centre + seed - 5.0, "kl": 1.0, "tc": 0.0, "capacity": 0.0, "capacity_gap": 0.0,
                     "disc_acc": 0.5, "n_images": 256, "seconds": 1.0}
                    for epoch in (1, 2) for split in ("train", "test")]
            path = run_path(root, "dsprites", model, seed, run_id)
            write_run(path, rows, record_meta(run_id, config, profile="quick"))
            write_metrics(metrics_path(path), [
                {"run_id": run_id, "model": model, "dataset": "dsprites", "seed": seed, "metric": metric,
                 "value": 0.1 * (seed + 1), "metric_seed": 0, **counts, "representation": "posterior mean",
                 "seconds": 1.0} for metric in SCORES])
    return root


def test_help_report_and_the_statistical_check_do_not_load_torch(tmp_path):
    runs = write_scored_runs(tmp_path / "runs")
    result = run_python("-c", COMMANDS, runs, tmp_path / "report" / "table1.md", tmp_path / "reference.json",
                        check=True)
    assert "Benchmark disentangling VAE objectives" in result.stdout  # --help ran
    report = (tmp_path / "report" / "table1.md").read_text()
    assert "### Significance" in report and "### Disentanglement on ground-truth factors" in report
    assert (tmp_path / "reference.json").is_file()
    assert result.stdout.splitlines()[-1] == "torch loaded: no"
