"""Every committed report is what `bench report` makes of the committed records today.

Records are the only contract between training and report, so a change to the report code that moves a
committed number, verdict or sentence must come with the regenerated report. Each report names the records
it was made from (its "From the run records under ..." line): that line is the command to remake it. The
markdown and CSV are compared byte for byte; the figures are not (their renderer's bytes are not ours).
"""

import re
from pathlib import Path

import pytest
from support import REPO, needs_mnist, run_bench

# results/queue/ is `bench queue`'s default folder (git-ignored): its reports are not committed ones.
REPORTS = sorted(path.relative_to(REPO) for path in (REPO / "results").rglob("table1.md")
                 if path.relative_to(REPO).parts[1] != "queue")


def runs_folders(report: Path) -> list[str]:
    """The records folders a report says it was made from, in the order given to ``--runs``."""
    source = next(line for line in report.read_text().splitlines() if line.startswith("From the run records under"))
    return re.findall(r"`([^`]+)`", source.split(" (each model", 1)[0].split(". Each run", 1)[0])


def test_every_report_names_its_records():
    assert len(REPORTS) >= 5, REPORTS  # results/table1.md and the 5-epoch, quick and dSprites reports
    for report in REPORTS:
        folders = runs_folders(REPO / report)
        assert folders, report
        for folder in folders:
            assert (REPO / folder).is_dir(), f"{report} names {folder}, which is not committed"


@needs_mnist
@pytest.mark.parametrize("report", REPORTS, ids=str)
def test_a_committed_report_regenerates_from_its_records(report: Path, tmp_path: Path):
    args = [arg for folder in runs_folders(REPO / report) for arg in ("--runs", folder)]
    run_bench("report", *args, "--out", tmp_path / "table1.md", check=True)
    for name in ("table1.md", "table1.csv"):
        made, committed = (tmp_path / name).read_text(), (REPO / report.parent / name).read_text()
        assert made == committed, (f"{report.parent / name} is not what `bench report {' '.join(args)} "
                                   f"--out {report}` makes of its records now: regenerate it with that command")
