"""Speed: ``bench bench`` and the usual training loop it measures against."""
