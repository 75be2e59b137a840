# The billing gateway as a container image: `billing-gateway serve` on port 8000.
#
#   docker build -t billing-gateway .
#   docker compose up --build        # with PostgreSQL: see compose.yaml and docs/operations.md
#
# Two stages: `build` installs the dependencies (their own layer, rebuilt only when
# pyproject.toml changes) and then the code into a virtual environment; `runtime` copies that
# environment into a clean image and runs it as an unprivileged user.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN python -m venv /opt/venv

# Dependency layer: the project metadata and empty packages, installed, then the project
# itself removed again so that only its dependencies stay.
COPY pyproject.toml README.md ./
RUN mkdir gateway schema resolvers \
    && touch gateway/__init__.py schema/__init__.py resolvers/__init__.py \
    && pip install --no-cache-dir . \
    && pip uninstall --yes billing-gateway \
    && rm -rf gateway schema resolvers build ./*.egg-info

# Code layer.
COPY gateway ./gateway
COPY schema ./schema
COPY resolvers ./resolvers
RUN pip install --no-cache-dir --no-deps . \
    && python -m compileall -q /opt/venv/lib

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="billing-gateway" \
      org.opencontainers.image.description="GraphQL usage-billing gateway"
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --create-home --home-dir /home/gateway gateway
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000 \
    GATEWAY_DATA_DIR=/home/gateway/data
USER 10001:10001
WORKDIR /home/gateway
EXPOSE 8000
# Liveness only (/healthz): /readyz, which also checks the database, is for load balancers.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GATEWAY_PORT', '8000'), timeout=4)"]
# SIGTERM: stop accepting connections, let requests in flight finish (up to 30 s), close the
# database pool, exit 0. Give `docker stop` more than that: `docker stop -t 40`.
STOPSIGNAL SIGTERM
CMD ["billing-gateway", "serve"]
