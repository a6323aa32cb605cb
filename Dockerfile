# DiNTS pipeline images: the CPU variant (default, laptops) and a GPU variant for NVIDIA nodes. Every command that
# sets the image up is scripts/setup.sh, which the tests run too.
#   docker build -t dints .                                     # CPU: python:3.11-slim, torch 2.13.0 (CPU)
#   docker build --build-arg VARIANT=gpu -t dints:gpu .         # GPU: CUDA runtime, torch 2.13.0 (CUDA),
#                                                                 #      Horovod 0.28.1 with NCCL and Gloo
#   docker run --rm --gpus all --shm-size 8g -v $PWD/data:/app/data -v $PWD/work:/app/work \
#       -e TASKS=Task09_Spleen -e NGPU=8 dints:gpu bash code/main.sh all
ARG VARIANT=cpu
ARG CUDA=12.8.1
ARG CUDA_PKG=12-8
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

# ---- CPU: Debian's Python 3.11, and the tools Horovod's build needs
FROM python:3.11-slim AS cpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends graphviz build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
ENV PYTHON=python3.11

# ---- GPU: NVIDIA's CUDA runtime with Python 3.11
FROM nvidia/cuda:${CUDA}-cudnn-runtime-ubuntu22.04 AS cuda-python
ARG TORCH_INDEX_URL
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv graphviz \
    && rm -rf /var/lib/apt/lists/*
ENV PYTHON=python3.11 HOROVOD_WHEEL_DIR=/wheels HOROVOD_GPU_OPERATIONS=NCCL TORCH_INDEX_URL=${TORCH_INDEX_URL}

# ---- GPU build stage: Horovod's NCCL operations compile against the CUDA compiler and headers and NCCL's headers
FROM cuda-python AS horovod-gpu
ARG CUDA_PKG
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake git python3.11-dev \
       cuda-nvcc-${CUDA_PKG} cuda-cudart-dev-${CUDA_PKG} cuda-nvml-dev-${CUDA_PKG} libnccl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /build
COPY requirements.txt ./
COPY scripts/setup.sh scripts/
RUN VENV=/opt/build-venv bash scripts/setup.sh --with-horovod

FROM cuda-python AS gpu
COPY --from=horovod-gpu /wheels /wheels

# ---- the image: the pinned environment (scripts/setup.sh installs the wheel built above on the GPU variant)
# hadolint ignore=DL3006
FROM ${VARIANT}
WORKDIR /app
ENV VENV=/opt/venv
COPY requirements.txt ./
COPY scripts/setup.sh scripts/
RUN bash scripts/setup.sh --with-horovod
ENV PATH=/opt/venv/bin:$PATH
COPY . .
CMD ["bash", "scripts/demo.sh"]
