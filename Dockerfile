# NHS 111 receiver adaptor: `nhs111 serve` on 0.0.0.0:8080, SQLite store and outbox under /var/lib/nhs111.
#
#   docker build -t nhs111-adaptor .
#   docker run -p 8080:8080 -v nhs111-data:/var/lib/nhs111 -e PEM111_ITK_ODS_CODE_LIST=... nhs111-adaptor
#
# Two stages: wheels are built in the first, so the final image has no compiler or build tools.

FROM python:3.11-slim AS build
WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY adaptor ./adaptor
COPY mappings ./mappings
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN groupadd --system nhs111 && useradd --system --gid nhs111 --home-dir /var/lib/nhs111 nhs111 \
    && mkdir -p /var/lib/nhs111 && chown nhs111:nhs111 /var/lib/nhs111
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels nhs111-adaptor && rm -rf /wheels
# The WSDL and the project's own XSDs are served from here (they are not Python package data).
COPY wsdl /opt/nhs111/wsdl

ENV PEM111_HOST=0.0.0.0 \
    PEM111_PORT=8080 \
    PEM111_DATA_DIR=/var/lib/nhs111 \
    PEM111_WSDL_DIR=/opt/nhs111/wsdl \
    PYTHONUNBUFFERED=1
USER nhs111
WORKDIR /var/lib/nhs111
VOLUME ["/var/lib/nhs111"]
EXPOSE 8080
# /healthz over plain HTTP; with PEM111_TLS_CERT set (mutual TLS may demand a client certificate) a TCP connect.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD ["python", "-c", "import os, socket, urllib.request; port = int(os.environ.get('PEM111_PORT', '8080')); socket.create_connection(('127.0.0.1', port), 4).close() if os.environ.get('PEM111_TLS_CERT') else urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]
ENTRYPOINT ["nhs111"]
CMD ["serve"]
