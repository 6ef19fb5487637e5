# RabbitMQ from Debian's packages on the local base (image/base.sh): a stand-in for the official rabbitmq:3.13 image
# where no registry is reachable. RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS create the user on the first start
# (as the official image does); the AMQP 1.0 plugin is enabled by the compose command, as with the official image.
ARG BASE_IMAGE=nhs111-base:bookworm-py311
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server \
    && rm -rf /var/lib/apt/lists/* \
    && chown -R rabbitmq:rabbitmq /etc/rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
COPY rabbitmq-entrypoint.sh /usr/local/bin/
ENV PATH=/usr/lib/rabbitmq/bin:$PATH HOME=/var/lib/rabbitmq RABBITMQ_LOGS=-
USER rabbitmq
VOLUME ["/var/lib/rabbitmq"]
ENTRYPOINT ["rabbitmq-entrypoint.sh"]
CMD ["rabbitmq-server"]
