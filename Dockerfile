# opentela-node image (head or worker). Build at the repository root:
#
#   docker build -t opentela:latest .
#   docker run --rm -p 8092:8092 -p 43905:43905 opentela:latest start --home /var/lib/opentela
#
# The Kubernetes base in deploy/kubernetes/ runs it as user 10001 with a read-only root
# filesystem; the identity key comes from a Secret (docs/deploy-kubernetes.md).

# --- build: py-libp2p pulls fastecdsa, which has no manylinux wheel and needs gcc + GMP ---
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential libgmp-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/opentela
WORKDIR /src
COPY pyproject.toml README.md ./
COPY opentela ./opentela
RUN /opt/opentela/bin/pip install . \
 && /opt/opentela/bin/python -m compileall -q /opt/opentela

# --- runtime ------------------------------------------------------------------------------
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgmp10 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 opentela \
 && useradd --uid 10001 --gid 10001 --home-dir /var/lib/opentela --no-create-home \
      --shell /usr/sbin/nologin opentela \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/opentela
COPY --from=build /opt/opentela /opt/opentela
ENV PATH=/opt/opentela/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/opentela
USER 10001:10001
WORKDIR /var/lib/opentela
# 8092: HTTP API (OpenAI endpoint, /v1/dnt/*, /v1/health); 43905: libp2p TCP
EXPOSE 8092 43905
ENTRYPOINT ["opentela-node"]
CMD ["start", "--home", "/var/lib/opentela"]
