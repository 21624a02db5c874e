"""Benchmarking harness for disentangling VAE objectives (CFactorVAE and its baselines)."""
