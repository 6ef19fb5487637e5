#!/bin/sh
# The default user from RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS, as the official image takes them, written to
# the configuration file before the command (rabbitmq-server) starts.
set -eu
{
    [ -n "${RABBITMQ_DEFAULT_USER:-}" ] && echo "default_user = $RABBITMQ_DEFAULT_USER"
    [ -n "${RABBITMQ_DEFAULT_PASS:-}" ] && echo "default_pass = $RABBITMQ_DEFAULT_PASS"
    true
} >/etc/rabbitmq/rabbitmq.conf
exec "$@"
