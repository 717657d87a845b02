# syntax=docker/dockerfile:1
# edgelake-sidecar: the sidecar process of an EdgeLake node pod (see charts/edgelake-node).
#
# Python 3.11 on Debian bookworm: the interpreter and the git version the tests run with (CI is a
# bookworm machine with Python 3.11). The tag names the Debian release so a base-image bump to a
# newer Debian (and git) is a deliberate change, not a surprise.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: the wheel, and a virtual environment holding it and its dependencies --------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the wheel is built from, so an edit to tests or the chart does not rebuild it.
COPY pyproject.toml README.md ./
COPY sidecar ./sidecar
COPY docker/prune_venv.py ./docker/
# tests/test_dockerfile.py runs these same five commands (it checks they are still written here).
RUN pip wheel --no-deps --wheel-dir /dist .
# --without-pip: the final image gets no installer; the build stage's pip installs into the venv.
RUN python -m venv --without-pip /opt/venv
# Every dependency comes as a binary wheel: --only-binary stops pip from ever compiling one here.
# --no-compile: bytecode is compiled below, for what the pruning keeps.
RUN pip --python /opt/venv/bin/python install --no-compile --only-binary :all: /dist/edgelake_sidecar-*.whl
# Down to what the sidecar imports (168 MB -> 29 MB: the kubernetes client's unused API and model
# classes, and the distributions only they need); fails the build if the sidecar then cannot import.
RUN /opt/venv/bin/python docker/prune_venv.py
# Bytecode now, once: the image's root filesystem is read-only and PYTHONDONTWRITEBYTECODE is set.
RUN /opt/venv/bin/python -m compileall -q /opt/venv/lib

# ---- final: the venv, git, an SSH client and CA certificates; no compilers ---------------------------
FROM ${PYTHON_IMAGE}
# Set by the build: --build-arg VERSION=$(python -m sidecar version) --build-arg REVISION=$(git rev-parse HEAD)
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="edgelake-sidecar" \
      org.opencontainers.image.description="Sidecar for EdgeLake/AnyLog nodes on Kubernetes: scripts seed/sync with local edits, node checks, probes, metrics" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# git and ssh for the scripts remote, CA certificates for HTTPS remotes, tini as PID 1: git's ssh
# children killed with their process group are re-parented to PID 1, and a Python PID 1 would never
# reap them. --no-install-recommends keeps compilers and perl's extras out; apt's caches (package
# lists, downloaded packages) go in the same layer.
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client ca-certificates tini \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*
# A named account for the numeric uid: OpenSSH refuses to run for a uid missing from /etc/passwd.
# Home is /tmp (a tmp mount in the pod); the sidecar gives git its own HOME under its root folder.
RUN groupadd --gid 10001 sidecar \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin sidecar
COPY --from=build /opt/venv /opt/venv
# A read-only root filesystem: no .pyc writes (pip compiled them at install), unbuffered logs.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 10001:10001
# One port for every endpoint: probes, /metrics, /status, POST /sync.
EXPOSE 8088
ENTRYPOINT ["/usr/bin/tini", "--", "edgelake-sidecar"]
CMD ["run"]
