"""How a report prints a number, a p-value and a mean ± SD over seeds."""

from __future__ import annotations

import pandas as pd


def num(value: float, digits: int = 2) -> str:
    """A number to ``digits`` decimals, a dash for a missing one."""
    return "—" if pd.isna(value) else f"{value:.{digits}f}"


def p_value(value: float) -> str:
    """A p-value: four decimals, or two significant digits below 1e-4."""
    if pd.isna(value):
        return "—"
    return f"{value:.1e}" if value < 1e-4 else f"{value:.4f}"


def cell(mean: float, sd: float, n: int, digits: int = 2, signed: bool = False) -> str:
    """A table cell ``mean ± sd (n = n)``, the mean with its sign if ``signed``; one run has no SD, none a dash."""
    if n == 0:
        return "—"
    shown = f"{mean:{'+' if signed else ''}.{digits}f}"
    if n == 1:
        return f"{shown} (n = 1, no SD)"
    return f"{shown} ± {sd:.{digits}f} (n = {n})"
