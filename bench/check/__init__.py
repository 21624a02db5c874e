"""Regression checks on the loss numbers: tier 1 (golden file) and tier 2 (stored references)."""
