# syntax=docker/dockerfile:1
# One image for both nos components: `nos partitioner` (runs as the non-root user below) and
# `nos agent` (the chart runs it as root with CAP_SYS_ADMIN or privileged, for NVML's MIG calls).
#
#   docker build -t nos:0.1.0 .
#   docker run --rm nos:0.1.0 --help

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: a wheel of nos, installed with its runtime and agent dependencies into a venv ---------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/nos \
 && /opt/nos/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/nos/bin/pip install "$(ls /wheels/nos-*.whl)[agent]" \
 && /opt/nos/bin/python -c "import nos.cli.main, pynvml, grpc"

# --- runtime: the venv only, no compiler, no pip cache, no sources ----------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="nos" \
      org.opencontainers.image.description="Dynamic MIG partitioning of NVIDIA GPUs in Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/nos/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 65532 nos \
 && useradd --system --uid 65532 --gid nos --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nos
COPY --from=builder /opt/nos /opt/nos
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["nos"]
CMD ["--help"]
