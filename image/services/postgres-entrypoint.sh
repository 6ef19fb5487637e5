#!/bin/sh
# As the official image's entry point, in short: a new cluster with POSTGRES_USER (password POSTGRES_PASSWORD,
# scram-sha-256 over TCP) and the database POSTGRES_DB on the first start; then run the command (postgres).
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    password_file=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" >"$password_file"
    initdb --username="${POSTGRES_USER:-postgres}" --pwfile="$password_file" --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$password_file"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [ "${POSTGRES_DB:=${POSTGRES_USER:-postgres}}" != postgres ]; then  # initdb made "postgres" only
        # A server on the Unix socket only, for as long as it takes to create the database.
        pg_ctl --wait --silent --options="-c listen_addresses=''" start >/dev/null
        createdb --username="${POSTGRES_USER:-postgres}" --owner="${POSTGRES_USER:-postgres}" "$POSTGRES_DB"
        pg_ctl --wait --silent stop
    fi
    echo "postgres-entrypoint: created the cluster with user ${POSTGRES_USER:-postgres} and database $POSTGRES_DB"
fi
if [ "${1:-}" = "postgres" ]; then
    shift
    exec postgres -c "listen_addresses=${POSTGRES_LISTEN_ADDRESSES:-*}" "$@"
fi
exec "$@"
