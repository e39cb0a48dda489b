"""The MIG agent (a DaemonSet per labelled node): spec annotations in, NVML calls and status out."""
