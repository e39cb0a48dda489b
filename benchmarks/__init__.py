"""Planner benchmarks: nos' planner against the original greedy and the exact optimum."""
