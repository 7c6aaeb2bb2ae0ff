"""pose-repro: a benchmark-and-reproduction harness for 6D object pose estimation."""

__version__ = "0.1.0"
