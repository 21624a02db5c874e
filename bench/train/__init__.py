"""The numerics of training, no files: one trainer per run, stacks of runs, Adam, process switches."""
