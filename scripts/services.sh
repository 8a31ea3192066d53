#!/usr/bin/env bash
# Start (or stop) PostgreSQL + RabbitMQ for the production-stack daemon test (recipe: shared/docs/stack.md).
# Installs them from Debian when missing (root only). `source scripts/services.sh start` exports
# MMTP_TEST_POSTGRES_PASSWORD, which tells the test suite they are up; `scripts/services.sh stop` ends them.
set -euo pipefail
PASSWORD=postgres

start() {
    if ! command -v rabbitmq-server >/dev/null || ! command -v pg_ctlcluster >/dev/null; then
        echo "services: installing postgresql and rabbitmq-server from Debian"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            rabbitmq-server postgresql locales >/dev/null
    fi
    if ! locale -a 2>/dev/null | grep -qi '^en_US.utf8$'; then
        sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' /etc/locale.gen && locale-gen >/dev/null
    fi
    mkdir -p /etc/rabbitmq
    printf '[ {rabbit, [ {consumer_timeout, undefined} ]} ].\n' > /etc/rabbitmq/advanced.config
    if ! rabbitmqctl -q status >/dev/null 2>&1; then
        rabbitmq-server -detached
        # the node registers with epmd a moment after -detached returns: await_startup fails until then
        for _ in $(seq 60); do
            rabbitmqctl -q await_startup >/dev/null 2>&1 && break
            sleep 1
        done
    fi
    rabbitmqctl -q await_startup
    local version
    version=$(ls /etc/postgresql | sort -n | tail -1)
    pg_ctlcluster "$version" main status >/dev/null 2>&1 || pg_ctlcluster "$version" main start
    su postgres -c "psql -qc \"ALTER USER postgres PASSWORD '$PASSWORD'\"" >/dev/null
    echo "services: PostgreSQL $version and RabbitMQ are up"
}

stop() {
    rabbitmqctl -q shutdown >/dev/null 2>&1 || true
    epmd -kill >/dev/null 2>&1 || true
    for version in $(ls /etc/postgresql 2>/dev/null); do
        pg_ctlcluster "$version" main stop >/dev/null 2>&1 || true
    done
}

case "${1:-start}" in
    start) start; export MMTP_TEST_POSTGRES_PASSWORD=$PASSWORD ;;
    stop) stop ;;
    *) echo "usage: scripts/services.sh start|stop" >&2; exit 2 ;;
esac
