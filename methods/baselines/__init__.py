"""Baselines and upper bounds that need no training."""
