"""Networks and objectives: pure PyTorch (their names and coefficients in models.presets, without torch), no files,
no CLI, no records."""
