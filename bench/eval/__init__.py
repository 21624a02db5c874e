"""What a trained run learned: disentanglement metrics, scoring saved runs, traversal pictures."""
