"""Networks and objectives: pure PyTorch, no files, no CLI, no records."""
