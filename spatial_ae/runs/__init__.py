"""Runs: the main workflow, the sweep, simulations and the worker processes or Spark tasks they run in."""
