"""Executing a plan: stacks, the per-stack job, locks, the local and Dask backends, the long queue."""
