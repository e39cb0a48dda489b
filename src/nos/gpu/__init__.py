"""GPUs behind the ``Nvml`` port: the nvidia-ml-py adapter, the simulated GPU, probes, acceptance."""
