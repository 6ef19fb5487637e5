# NHS 111 receiver adaptor: `nhs111 serve` on 0.0.0.0:8080, SQLite store and outbox under /var/lib/nhs111, CDA schema
# validation (rules D4-D6) on with the published schema pack in /opt/nhs111/schemas. Needs BuildKit (Docker 23+
# with buildx, or DOCKER_BUILDKIT=1 on Docker 20.10). See README, Docker.
#
#   docker build -t nhs111-adaptor .                        # python:3.11-slim, schema pack fetched from GitHub
#   make image IMAGE_BASE=local SCHEMA_PACK_DIR=../shared/schemas   # a local Debian base, a local copy of the pack
#
# Build arguments:
#   BASE_IMAGE          python:3.11-slim, or any Debian bookworm image with Python 3.11 as python3 and the venv
#                       module (image/base.sh builds one from Debian's packages)
#   SCHEMA_PACK         fetch: download the pack at IUC_SCHEMA_COMMIT / PATHWAYS_SCHEMA_COMMIT; local: take it from
#                       the build context's schema-pack/ folder (make image puts a copy there, outside the repo)
#   IUC_SCHEMA_COMMIT, PATHWAYS_SCHEMA_COMMIT   the commits (or refs) fetched; whatever they are, every file must
#                       match image/schema-pack.sha256 or the build fails
# Build secret (optional): build_ca, a PEM CA bundle for the build's downloads behind a TLS-inspecting proxy:
#   docker build --secret id=build_ca,src=/etc/ssl/certs/ca-certificates.crt ...

ARG BASE_IMAGE=python:3.11-slim
ARG SCHEMA_PACK=fetch

# -- the schema pack, checked file by file against image/schema-pack.sha256 -----------------------------------------

FROM ${BASE_IMAGE} AS schemas-fetch
ARG IUC_SCHEMA_COMMIT=HEAD
ARG PATHWAYS_SCHEMA_COMMIT=HEAD
COPY image/schema_pack.py image/schema-pack.sha256 /build/
RUN --mount=type=secret,id=build_ca \
    if [ -s /run/secrets/build_ca ]; then export SSL_CERT_FILE=/run/secrets/build_ca; fi; \
    python3 /build/schema_pack.py --list /build/schema-pack.sha256 --out /pack --fetch \
        --iuc-commit "$IUC_SCHEMA_COMMIT" --pathways-commit "$PATHWAYS_SCHEMA_COMMIT"

FROM ${BASE_IMAGE} AS schemas-local
COPY image/schema_pack.py image/schema-pack.sha256 /build/
COPY schema-pack/ /build/schema-pack/
RUN python3 /build/schema_pack.py --list /build/schema-pack.sha256 --out /pack --from-dir /build/schema-pack

FROM schemas-${SCHEMA_PACK} AS schemas

# -- build: compilers and headers, a virtual environment with the adaptor -------------------------------------------

FROM ${BASE_IMAGE} AS build
# python-qpid-proton is a source distribution: it needs a compiler, and pkg-config with OpenSSL's headers, without
# which it builds without SSL and silently (amqps:// then cannot work). lxml and psycopg come as wheels on x86_64
# and arm64; their headers are here for the platforms where pip builds them from source.
RUN apt-get update \
    && packages="gcc libc6-dev pkg-config libssl-dev libffi-dev libxml2-dev libxslt1-dev libpq-dev" \
    && if ! python3 -c "import sys, sysconfig, os; sys.exit(not os.path.exists(sysconfig.get_paths()['include'] + '/Python.h'))"; \
       then packages="$packages python3-dev"; fi \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $packages \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/nhs111/venv
ENV PATH=/opt/nhs111/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The dependencies first, from setup.cfg alone: a change to the adaptor's code reuses this layer.
COPY setup.cfg /src/
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=build_ca \
    if [ -s /run/secrets/build_ca ]; then export PIP_CERT=/run/secrets/build_ca; fi; \
    python3 -c "import configparser; c = configparser.ConfigParser(); c.read('/src/setup.cfg'); print(c['options']['install_requires'])" \
        > /src/requirements.txt \
    && pip install -r /src/requirements.txt \
    && python -c "import proton, sys; sys.exit(0 if proton.SSL.present() else 'python-qpid-proton was built without SSL')"

COPY pyproject.toml README.md /src/
COPY adaptor /src/adaptor
COPY mappings /src/mappings
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=secret,id=build_ca \
    if [ -s /run/secrets/build_ca ]; then export PIP_CERT=/run/secrets/build_ca; fi; \
    pip install --no-deps /src \
    && pip uninstall --yes --quiet pip setuptools

# -- the image: Python, the virtual environment, the WSDL and the schema pack; no compiler --------------------------

FROM ${BASE_IMAGE}
RUN groupadd --system --gid 10111 nhs111 \
    && useradd --system --uid 10111 --gid nhs111 --home-dir /var/lib/nhs111 --no-create-home --shell /usr/sbin/nologin nhs111 \
    && install -d -o nhs111 -g nhs111 -m 0750 /var/lib/nhs111
COPY --from=build /opt/nhs111/venv /opt/nhs111/venv
# The WSDL and the project's own XSDs are served from here (they are not Python package data).
COPY wsdl /opt/nhs111/wsdl
COPY --from=schemas /pack /opt/nhs111/schemas

ENV PATH=/opt/nhs111/venv/bin:$PATH \
    PEM111_HOST=0.0.0.0 \
    PEM111_PORT=8080 \
    PEM111_DATA_DIR=/var/lib/nhs111 \
    PEM111_WSDL_DIR=/opt/nhs111/wsdl \
    PEM111_SCHEMA_DIR=/opt/nhs111/schemas \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# A numeric user, so that an orchestrator's runAsNonRoot can check it. The root filesystem may be read-only: the
# adaptor writes only below PEM111_DATA_DIR (the volume).
USER 10111:10111
WORKDIR /var/lib/nhs111
VOLUME ["/var/lib/nhs111"]
EXPOSE 8080
# SIGTERM: stop accepting, answer the requests in flight (up to 20 s), finish deliveries, close; give `docker stop`
# (or the orchestrator) at least 30 s.
STOPSIGNAL SIGTERM
# /healthz over plain HTTP; with PEM111_TLS_CERT set (mutual TLS may demand a client certificate) a TCP connect.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD ["python", "-c", "import os, socket, urllib.request; port = int(os.environ.get('PEM111_PORT', '8080')); socket.create_connection(('127.0.0.1', port), 4).close() if os.environ.get('PEM111_TLS_CERT') else urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]
ENTRYPOINT ["nhs111"]
CMD ["serve"]
