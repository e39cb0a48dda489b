"""The planner (pure): cluster state and pending pods in, per-GPU MIG layouts out, checked independently."""
