# DiNTS pipeline image. CPU torch by default; for GPUs build FROM an NVIDIA CUDA runtime image with Python 3.11
# and install the matching CUDA build of torch 2.13.0 before requirements.txt.
#   docker build -t dints .
#   docker run --rm -v $PWD/data:/app/data -v $PWD/work:/app/work dints bash code/main.sh all
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends graphviz build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV VENV=/opt/venv
COPY requirements.txt ./
COPY scripts/setup.sh scripts/
RUN bash scripts/setup.sh --with-horovod
ENV PATH=/opt/venv/bin:$PATH
COPY . .
CMD ["bash", "scripts/demo.sh"]
