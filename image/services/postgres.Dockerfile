# PostgreSQL 15 from Debian's packages on the local base (image/base.sh): a stand-in for the official postgres:15
# image where no registry is reachable. It takes the same POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB variables,
# keeps its cluster in /var/lib/postgresql/data and answers pg_isready; PGPORT sets the port.
ARG BASE_IMAGE=nhs111-base:bookworm-py311
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data \
    && install -d -o postgres -g postgres -m 2775 /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
USER postgres
VOLUME ["/var/lib/postgresql/data"]
ENTRYPOINT ["postgres-entrypoint.sh"]
CMD ["postgres"]
