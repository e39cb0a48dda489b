"""``nos simulate``: replay a workload on an in-memory cluster driven by the production partitioner
and MIG agent, under a virtual clock, and compare partitioning policies."""
