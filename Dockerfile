# syntax=docker/dockerfile:1
# The project image: every Kubeflow component and TrainJob node runs it.
#   make image                                   # CPU variant  (VARIANT=cpu, the default)
#   make image VARIANT=cuda                      # CUDA variant (torch's CUDA 13 wheels from the lock)
# Both start from the same pinned Python base (the lock is for CPython 3.11). Override the base
# with --build-arg BASE_IMAGE=python:3.11.7-slim-bookworm@sha256:<digest> to pin a digest.
# Optional evaluation weights (Inception for FID/KID, LPIPS) are copied in from docker/weights/
# at build time (see docker/weights/README.md); nothing is downloaded at run time.
ARG BASE_IMAGE=python:3.11.7-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY constraints.txt pyproject.toml README.md LICENSE ./
COPY docker/constraints-variant.sh docker/
# The CPU variant swaps torch/torchvision for the +cpu builds of the same versions and drops the
# CUDA libraries; every other pin is the lock's.
RUN python -m venv /opt/venv \
 && sh docker/constraints-variant.sh "${VARIANT}" constraints.txt > /tmp/constraints.txt
COPY src ./src
RUN if [ "${VARIANT}" = "cpu" ]; then \
      /opt/venv/bin/pip install --extra-index-url https://download.pytorch.org/whl/cpu \
        -c /tmp/constraints.txt . ; \
    else /opt/venv/bin/pip install -c /tmp/constraints.txt . ; fi

FROM ${BASE_IMAGE}
ARG VARIANT=cpu
LABEL org.opencontainers.image.title="cyclegan-mlops" \
      org.opencontainers.image.description="CycleGAN pipeline steps (${VARIANT})" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://github.com/cyclegan-mlops/cyclegan-mlops"
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HOME=/home/app TORCH_HOME=/opt/cyclegan/torch MPLCONFIGDIR=/tmp/matplotlib \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
RUN groupadd --gid 10001 app && useradd --uid 10001 --gid app --create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
# Weight files land in the torch hub cache, the second place evaluation looks (README: Evaluation).
COPY docker/weights/ /opt/cyclegan/torch/hub/checkpoints/
COPY params.yaml /opt/cyclegan/params.yaml
WORKDIR /home/app
USER 10001:10001
HEALTHCHECK NONE
CMD ["cyclegan", "--help"]
