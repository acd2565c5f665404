# One image for every process kind of a cluster: its command is `shardex <kind>`
# (router, engine, accounts, bridge, gateway, redis, candles-worker, history-writer, mm),
# e.g. `docker run shardex:0.1.0 router --shards 2 ...`. docs/deploy.md walks through it;
# `shardex deploy k8s` writes the Kubernetes manifests that run it.
#
#   docker build -t shardex:0.1.0 .
ARG PYTHON=python:3.11-slim

# -- build: the package in a virtualenv, and its compiled engine (mypyc needs a C compiler,
#    which stays in this stage)
FROM ${PYTHON} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/shardex
ENV PATH=/opt/shardex/bin:$PATH \
    SHARDEX_ENGINE_CACHE=/opt/shardex/engine
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shardex ./shardex
RUN pip install --no-cache-dir . \
 && python -m shardex.engine.build

# -- run: the virtualenv only, as a user of its own
FROM ${PYTHON}
ENV PATH=/opt/shardex/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SHARDEX_ENGINE_CACHE=/opt/shardex/engine \
    SHARDEX_ENGINE_BUILD=off \
    SHARDEX_METRICS_HOST=0.0.0.0 \
    SHARDEX_DATA_DIR=/data \
    SHARDEX_KEYS_DIR=/keys
RUN groupadd --system --gid 10001 shardex \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin shardex \
 && mkdir -p /data /keys \
 && chown 10001:10001 /data /keys \
 && chmod 0700 /keys
COPY --from=build /opt/shardex /opt/shardex
USER 10001:10001
WORKDIR /data
# journals, snapshots and Redis's AOF; the cluster's keys (a Secret, never in the image)
VOLUME ["/data", "/keys"]
# the default layout's ports (shardex/layout.py): router 5555-5557, bridge metrics 5558,
# Redis 5559, candles 5560, history writer 5562, feed 5563, gateway 5641, engine shard 0 5655/5755/5855/5955 (+i per shard), account shard 0
# 6055/6155/6255, replication 6655 (engine) and 7255 (accounts)
EXPOSE 5555 5556 5557 5558 5559 5560 5562 5563 5641 5655 5755 5855 5955 6055 6155 6255 6655 7255
# GET /healthz of the process's exporter: give its port as SHARDEX_HEALTH_PORT (unset: healthy)
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "shardex.health"]
ENTRYPOINT ["shardex"]
CMD ["--help"]
