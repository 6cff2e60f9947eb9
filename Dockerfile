# syntax=docker/dockerfile:1
# The cnn-serve image. VARIANT picks the base image and the torch build:
#   docker build -t cnn-serve:0.1.0-cpu .                              (CPU wheels)
#   docker build --build-arg VARIANT=cuda -t cnn-serve:0.1.0-cuda .    (PyPI's CUDA build)
#   docker run --rm -p 8000:8000 cnn-serve:0.1.0-cpu
#   docker run --rm --gpus all -p 8000:8000 cnn-serve:0.1.0-cuda
# Podman or buildah: add --format docker, or the OCI image drops the HEALTHCHECK.
# tests/deploy/test_image_install.py runs this file's build commands in a fresh venv.
ARG VARIANT=cpu
# PyTorch's own index holds the CPU-only wheels (torch==X matches X+cpu, which pip prefers);
# the cuda variant takes PyPI's build. A build argument: the runtime image never carries it.
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

# ---- base images: everything below is shared by both variants ----
FROM python:3.11-slim-bookworm AS base-cpu

# The CUDA base brings the driver-compatibility checks (NVIDIA_REQUIRE_CUDA) and the
# NVIDIA_* variables the container toolkit reads; the CUDA libraries come with the torch wheels.
FROM nvidia/cuda:13.0.2-base-ubuntu24.04 AS base-cuda
# Ubuntu's python3 is Python 3.12, which the package supports (requires-python >= 3.11).
# Versions float within the release on purpose: exact ones leave the archive at each update.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

# ---- build: a venv with the pinned dependencies, then the package itself ----
# base-${VARIANT} names a stage above, not an image to tag.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS build
ARG VARIANT
ARG TORCH_CPU_INDEX
ENV VIRTUAL_ENV=/opt/venv \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
ENV PATH="${VIRTUAL_ENV}/bin:${PATH}"
WORKDIR /src
RUN python3 -m venv "${VIRTUAL_ENV}"
# Only the two dependency files: the layers below are rebuilt when the pins change, not the code.
COPY pyproject.toml constraints.txt ./
# torch (with torchvision) first and alone, so that only it is looked up on the extra index;
# then the project's other dependencies, all pinned by constraints.txt.
RUN python3 -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('torch.txt', 'w').write('\n'.join(d for d in deps if d.split('=')[0] in ('torch', 'torchvision'))); open('requirements.txt', 'w').write('\n'.join(deps))" \
 && index="" && if [ "$VARIANT" = cpu ]; then index="$TORCH_CPU_INDEX"; fi \
 && pip install -c constraints.txt ${index:+--extra-index-url "$index"} -r torch.txt \
 && pip install -c constraints.txt -r requirements.txt
# pip falls back to PyPI without a word when the CPU index cannot be reached, and PyPI's torch
# is the CUDA build (6 GB more): the CPU image fails here instead.
RUN if [ "$VARIANT" = cpu ]; then python3 -c "import sys, torch; sys.exit(torch.version.cuda and f'VARIANT=cpu got torch {torch.__version__}, a CUDA build: pip could not reach {sys.argv[1]} and took PyPI instead. Retry, or pass --build-arg TORCH_CPU_INDEX=<a mirror of it>.')" "$TORCH_CPU_INDEX"; fi
# The code, with the shipped model (models/weights) as package data.
COPY README.md ./
COPY models ./models
COPY service ./service
RUN pip install --no-deps . && pip check

# ---- runtime: the venv on a bare base; no compiler, no package cache, no source tree ----
# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime
ARG VARIANT
RUN groupadd --gid 10001 cnn \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin cnn
COPY --from=build /opt/venv /opt/venv
# Everything the process writes goes to /tmp (an emptyDir under Kubernetes, with a read-only root).
ENV PATH="/opt/venv/bin:${PATH}" \
    VIRTUAL_ENV=/opt/venv \
    HOME=/tmp \
    TMPDIR=/tmp \
    CNN_TEMP_DIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    TORCH_HOME=/tmp/.cache/torch \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CNN_VARIANT=${VARIANT}
LABEL org.opencontainers.image.title="cnn-serve" \
      org.opencontainers.image.description="Serves PyTorch CNN image classifiers over HTTP" \
      org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /tmp
# Numeric, so that Kubernetes can check runAsNonRoot against the image.
USER 10001:10001
EXPOSE 8000
# No curl in a slim image: the venv's Python asks /healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CNN_PORT', '8000') + '/healthz', timeout=4)"]
ENTRYPOINT ["cnn-serve"]
