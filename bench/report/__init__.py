"""Table 1, the figures and the significance tests, from the records alone."""
