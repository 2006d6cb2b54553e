# syntax=docker/dockerfile:1
# Every Refundflow image: one Dockerfile, built from the repository root (the uv workspace) for one service.
#   docker build --build-arg SERVICE=intake --build-arg PORT=8000 -t refundflow-intake .
# SERVICE is a member under services/ (intake, processor, notifier, sandbox); PORT is the port it listens on.
# docker-compose.yml builds all four (`docker compose up --build`).
#
# Follows uv's Docker guide (https://docs.astral.sh/uv/guides/integration/docker/):
# uv copied from its distroless image, third-party dependencies synced in their own
# layer, then the workspace members, installed non-editable so that the runtime
# stage needs only the virtual environment.

FROM python:3.11-slim AS builder

ARG SERVICE
RUN test -n "$SERVICE" || { echo "build with --build-arg SERVICE=intake|processor|notifier|sandbox" >&2; exit 1; }

# Pin uv to the version that wrote uv.lock.
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /uvx /bin/

# Compile bytecode for faster start-up; copy from the cache mount instead of
# hard-linking (the cache is on another file system); use the image's Python.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never

WORKDIR /app

# 1) Dependencies only. Every workspace member's pyproject.toml must be present
#    for uv to discover the workspace (members = ["shared", "services/*", "devstack", "cli"]),
#    but none of their sources are, so this layer stays cached until a manifest or
#    uv.lock changes. --no-install-workspace skips the members themselves.
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/pyproject.toml
COPY services/intake/pyproject.toml services/intake/pyproject.toml
COPY services/processor/pyproject.toml services/processor/pyproject.toml
COPY services/notifier/pyproject.toml services/notifier/pyproject.toml
COPY services/sandbox/pyproject.toml services/sandbox/pyproject.toml
COPY devstack/pyproject.toml devstack/pyproject.toml
COPY cli/pyproject.toml cli/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package refundflow-${SERVICE} --no-install-workspace --no-editable

# 2) The sources, then the members themselves: the service's package and what it depends on
#    (shared for the three services; the sandbox needs nothing of Refundflow's, and uv installs no more).
COPY shared/refundflow_shared shared/refundflow_shared
COPY services/${SERVICE}/refundflow_${SERVICE} services/${SERVICE}/refundflow_${SERVICE}
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package refundflow-${SERVICE} --no-editable

# One name for the entry point of every image: the console script the service's package declares.
RUN test -x /app/.venv/bin/refundflow-${SERVICE} \
    && ln -s refundflow-${SERVICE} /app/.venv/bin/refundflow-service


FROM python:3.11-slim

ARG SERVICE
ARG PORT
RUN test -n "$PORT" || { echo "build with --build-arg PORT=<the port the service listens on>" >&2; exit 1; }

LABEL org.opencontainers.image.title="refundflow-${SERVICE}"

RUN groupadd --system --gid 10001 refundflow \
    && useradd --system --uid 10001 --gid refundflow --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin refundflow

COPY --from=builder --chown=refundflow:refundflow /app/.venv /app/.venv

# The services read HTTP_HOST/HTTP_PORT, the sandbox SANDBOX_HOST/SANDBOX_PORT; each ignores the other pair.
ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    HTTP_HOST=0.0.0.0 \
    HTTP_PORT=${PORT} \
    SANDBOX_HOST=0.0.0.0 \
    SANDBOX_PORT=${PORT}

WORKDIR /app
USER refundflow
EXPOSE ${PORT}

CMD ["refundflow-service"]
