# syntax=docker/dockerfile:1
# adapter-serve: the API (`python -m app`) and the training worker (`python -m app.worker`).
#
#   docker build -t adapter-serve .                              # CUDA build of torch (GPU host)
#   docker build --build-arg TORCH_VARIANT=cpu -t adapter-serve:cpu .    # CPU-only, much smaller
#
# The CUDA wheels of torch bundle the CUDA runtime; the host needs only the NVIDIA driver and
# the NVIDIA Container Toolkit (`docker run --gpus all` / the compose file's GPU reservation).

ARG PYTHON_VERSION=3.11

# ---- build: a virtual environment with torch and the project --------------------------------
FROM python:${PYTHON_VERSION}-slim AS build
ARG TORCH_VERSION=2.13.0
# cuda: torch from PyPI (the Linux x86_64 wheels there are CUDA builds); cpu: the CPU index.
ARG TORCH_VARIANT=cuda
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN set -eu; \
    case "$TORCH_VARIANT" in \
      cuda) pip install "torch==${TORCH_VERSION}" ;; \
      cpu)  pip install --index-url "$TORCH_CPU_INDEX" "torch==${TORCH_VERSION}" ;; \
      *)    echo "TORCH_VARIANT must be cuda or cpu, not $TORCH_VARIANT" >&2; exit 1 ;; \
    esac
WORKDIR /src
COPY pyproject.toml README.md ./
COPY adapters_store ./adapters_store
COPY training ./training
COPY app ./app
# torch is already there, so pip keeps the chosen build.
RUN pip install .

# ---- runtime ----------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS runtime
ARG TORCH_VARIANT=cuda
LABEL org.opencontainers.image.title="adapter-serve" \
      org.opencontainers.image.description="Many text-classification adapters on one base model"
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home app \
 && mkdir -p /data/adapters /data/datasets /cache/huggingface \
 && chown -R app:app /data /cache
# jemalloc: with glibc malloc the RSS of a long-running server creeps up (heap fragmentation
# from tensors of ever-changing batch shapes; see docs/reliability.md); jemalloc keeps it flat.
# DL3008 (pin apt versions): the base image's tag fixes the Debian release, and Debian drops a
# package version from its mirror when a security update replaces it, so a pin would break the
# build later; the release's current libjemalloc2 is what we want.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libjemalloc2 \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s "/usr/lib/$(uname -m)-linux-gnu/libjemalloc.so.2" /usr/local/lib/libjemalloc.so.2
COPY --from=build /opt/venv /opt/venv
# The API listens on every interface, so it needs keys (a keyless server refuses to start there):
# without APP_API_KEYS, the first start writes a random key with every scope to
# /data/api-keys (mode 0600) and prints it once to the log; later starts read that file.
# DL3064 (sensitive data in ENV) is a false positive: it matches "TOKEN" in
# TOKENIZERS_PARALLELISM, a tokenizers switch; no secret is set here (API keys come at run time).
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:$PATH \
    LD_PRELOAD=/usr/local/lib/libjemalloc.so.2 \
    PYTHONUNBUFFERED=1 \
    APP_DATA_DIR=/data \
    APP_HOST=0.0.0.0 \
    APP_PORT=8000 \
    APP_API_KEYS_FILE=/data/api-keys \
    APP_GENERATE_API_KEY=true \
    HF_HOME=/cache/huggingface \
    TOKENIZERS_PARALLELISM=false \
    TORCH_VARIANT=${TORCH_VARIANT}
WORKDIR /home/app
# Numeric (the app user made above), so that the host and Kubernetes' runAsNonRoot resolve it.
USER 10001:10001
# The store, the job records, the queue and the datasets live on /data; the model cache on
# /cache/huggingface (so the base model downloads once).
VOLUME ["/data", "/cache/huggingface"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
  CMD ["python", "-m", "app.healthcheck"]
# The API plus an embedded worker; compose runs the worker as its own service instead.
CMD ["python", "-m", "app"]
