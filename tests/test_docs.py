"""The README's package map and docs/architecture.md name what `ls` shows, and every relative link resolves."""

import re

import pytest
from support import REPO

pytestmark = pytest.mark.fast


def code_block_after(text: str, heading: str) -> str:
    section = text[text.index(heading):]
    return section[section.index("```") + 3:].split("```", 1)[0]


def modules(folder: str) -> set[str]:
    root = REPO / folder
    return {p.name for p in root.iterdir() if (p.suffix == ".py" and p.name != "__init__.py") or
            (p.is_dir() and (p / "__init__.py").exists())}


def test_the_readme_package_map_names_every_module_and_package():
    package_map = code_block_after((REPO / "README.md").read_text(), "## The package")
    for name in modules("bench"):  # a module by its file name's stem (listed as "plan.py"), a package as "run/"
        assert (name.removesuffix(".py") if name.endswith(".py") else f"{name}/") in package_map, name
    for name in modules("models"):
        assert name in package_map, name


def test_the_architecture_page_names_every_module_of_every_package():
    package_map = code_block_after((REPO / "docs" / "architecture.md").read_text(), "## The package map")
    for package in (d for d in modules("bench") if "." not in d):
        for name in modules(f"bench/{package}"):
            assert name in package_map, f"bench/{package}/{name}"
    for name in modules("models"):
        assert f"models/{name}" in package_map, name


def test_every_relative_link_points_to_a_file():
    pages = [REPO / "README.md", REPO / "BENCHMARKS.md", *sorted((REPO / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target:
                assert (page.parent / target).exists(), f"{page.name}: {target}"
