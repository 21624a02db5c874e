"""The plan: which runs a command line asks for."""

import pytest

from bench.errors import BenchError
from bench.plan import make_plan, parse_names, parse_seeds
from models.presets import PAPER_MODELS, PRESETS

pytestmark = pytest.mark.fast


@pytest.mark.parametrize("text, seeds", [("5", [0, 1, 2, 3, 4]), ("1", [0]), ("5-9", [5, 6, 7, 8, 9]), ("3-3", [3])])
def test_seeds_are_a_count_or_a_range(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["0", "4-2", "x", "1-", "-1", "2.5"])
def test_bad_seeds_are_errors(text):
    with pytest.raises(BenchError, match=f"--seeds {text}"):
        parse_seeds(text)


def test_a_range_adds_seeds_beside_an_existing_matrix(tmp_path):
    first = make_plan(["vae"], ["mnist"], parse_seeds("2"), "smoke", {}, tmp_path)
    more = make_plan(["vae"], ["mnist"], parse_seeds("2-3"), "smoke", {}, tmp_path)
    assert [r.config.seed for r in first] == [0, 1] and [r.config.seed for r in more] == [2, 3]
    assert not {r.path for r in first} & {r.path for r in more}


def test_all_means_the_papers_five_and_a_variant_runs_by_name():
    assert parse_names("all", PRESETS, "model", PAPER_MODELS) == list(PAPER_MODELS)
    assert parse_names("cvae-burgess,vae", PRESETS, "model", PAPER_MODELS) == ["cvae-burgess", "vae"]
    with pytest.raises(BenchError, match="unknown model 'cvae-1000'"):
        parse_names("cvae-1000", PRESETS, "model", PAPER_MODELS)
