# syntax=docker/dockerfile:1
#
# One image for every Baton process: the API (the default command), workers
# (`baton worker`) and the one-shot schema upgrade (`baton db upgrade`).
#
#   docker build -t baton .
#   docker run --rm baton db upgrade
#   docker run --rm -p 8080:8080 baton                 # the API
#   docker run --rm -e BATON_PROBE_TOKEN baton worker  # a worker, probe on :8081

# --- build: the project's wheel and the wheels of its runtime dependencies -----------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src

# Only what the wheel is built from: no tests, no virtualenv, no local state.
COPY pyproject.toml README.md ./
COPY etl_tasks ./etl_tasks
COPY api ./api
COPY worker ./worker
COPY ops ./ops

# Base dependencies only (no [test] extras). Every one of them ships a manylinux
# wheel for x86_64, so no compiler is needed here.
RUN pip wheel --wheel-dir /wheels .

# --- final: the installed wheel, tini, and an unprivileged user -----------------------
FROM python:3.11-slim

# tini is PID 1 and runs *without* -g: SIGTERM goes to its one child, `baton`, and
# nowhere else. `baton worker` execs Celery, so Celery's main process receives it
# and does a warm shutdown (finish the step in hand, requeue prefetched messages,
# exit 0); `baton api` runs gunicorn's master, which stops its own workers.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid, so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 baton \
    && useradd --system --uid 10001 --gid baton --no-create-home --home-dir /app \
        --shell /usr/sbin/nologin baton \
    && mkdir -p /app \
    && chown baton:baton /app

# A plain install of the wheel: its dependencies come from the wheels built above,
# mounted for this one step so they add nothing to the image.
RUN --mount=type=bind,from=build,source=/wheels,target=/tmp/wheels \
    pip install --no-cache-dir --no-index --root-user-action=ignore \
        --find-links=/tmp/wheels /tmp/wheels/baton-*.whl

# /app holds nothing but what a process writes (the default SQLite state DB lives
# in /app/.baton, BATON_HOME); nothing here shadows the installed `worker` package.
WORKDIR /app
ENV BATON_HOME=/app/.baton
USER 10001:10001

# The worker's probe listens on every interface inside the container, on a fixed
# port, so a healthcheck or a Kubernetes probe can reach it. Its POST /drain needs
# BATON_PROBE_TOKEN, which is never baked into the image: give it at run time (a
# Secret, an env file). Without it the probe refuses every drain request; SIGTERM
# (`docker stop`) still drains the worker.
ENV PYTHONUNBUFFERED=1 BATON_WORKER_HTTP_HOST=0.0.0.0 BATON_WORKER_HTTP_PORT=8081

# 8080: the API. 8081: each worker's probe (/healthz, /readyz, /drain).
EXPOSE 8080 8081

# Checks the API. Worker containers override it with their own probe, e.g. in
# docker-compose.yml:
#   healthcheck:
#     test: ["CMD", "python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/readyz', timeout=2)"]
# (/readyz answers 503 while the worker drains). One-shot containers such as
# `db upgrade` can set `healthcheck: {disable: true}`.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "baton"]
CMD ["api", "--host", "0.0.0.0", "--port", "8080"]
