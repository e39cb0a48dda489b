"""Observability of the in-cluster processes: Prometheus metrics, health endpoints, JSON logs."""
