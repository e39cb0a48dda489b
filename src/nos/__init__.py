"""nos: dynamic MIG partitioning of NVIDIA GPUs in Kubernetes."""

__version__ = "0.1.0"
