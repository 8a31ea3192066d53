#!/usr/bin/env bash
# Start (or stop) PostgreSQL + RabbitMQ for the production-stack daemon test, and a real single-node Slurm (munge,
# slurmctld and slurmd on this machine) for the tests through the Slurm computer (recipes: shared/docs/stack.md).
# Installs them from Debian when missing (root only). `source scripts/services.sh start` exports
# MMTP_TEST_POSTGRES_PASSWORD and MMTP_TEST_SLURM=1, which tell the test suite they are up;
# `scripts/services.sh stop` ends them (and does nothing for those that are not running).
set -euo pipefail
PASSWORD=postgres
SLURM_CONF=/etc/slurm/slurm.conf
SLURM_PIDS=(/run/slurmd.pid /run/slurmctld.pid /run/munge/munged.pid)  # stopped in this order

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
    start_slurm
}

start_slurm() {
    if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sinfo >/dev/null \
        || ! command -v munged >/dev/null; then
        echo "services: installing slurmctld, slurmd, slurm-client and munge from Debian"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            slurmctld slurmd slurm-client munge >/dev/null
    fi
    install -d -o munge -g munge /run/munge  # the package made /etc/munge/munge.key
    running /run/munge/munged.pid || runuser -u munge -- /usr/sbin/munged
    install -d -o slurm -g slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
    write_slurm_conf
    running /run/slurmctld.pid || /usr/sbin/slurmctld  # both daemonize
    running /run/slurmd.pid || /usr/sbin/slurmd
    await_idle_node
    echo "services: Slurm is up (node $(hostname -s), $(nproc) CPUs, partition debug)"
}

# one node, this machine: its short host name, its CPUs, and its memory in MiB as slurmd itself measures it
write_slurm_conf() {
    local node memory
    node=$(hostname -s)
    memory=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    cat > "$SLURM_CONF" <<EOF
# written by aiida-mmtp scripts/services.sh: a single-node Slurm for the tests
ClusterName=ci
SlurmctldHost=$node(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$node NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=${memory:-1000} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

await_idle_node() {
    local state=''
    for _ in $(seq 30); do
        state=$(sinfo -h -o %T 2>/dev/null || true)
        [ "$state" = idle ] && return 0
        sleep 1
    done
    echo "services: the Slurm node is not idle after 30 s (sinfo: '${state:-no answer}');" \
        "see /var/log/slurm/slurmctld.log and slurmd.log" >&2
    return 1
}

# whether the process named in a pid file is alive
running() {
    [ -s "$1" ] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null
}

stop_slurm() {
    local pidfile
    for pidfile in "${SLURM_PIDS[@]}"; do
        running "$pidfile" || continue
        kill "$(cat "$pidfile")" 2>/dev/null || true
        for _ in $(seq 20); do  # slurmd must be gone before slurmctld, slurmctld before munged
            running "$pidfile" || break
            sleep 0.5
        done
    done
}

stop() {
    stop_slurm
    rabbitmqctl -q shutdown >/dev/null 2>&1 || true
    epmd -kill >/dev/null 2>&1 || true
    for version in $(ls /etc/postgresql 2>/dev/null); do
        pg_ctlcluster "$version" main stop >/dev/null 2>&1 || true
    done
}

case "${1:-start}" in
    start) start; export MMTP_TEST_POSTGRES_PASSWORD=$PASSWORD MMTP_TEST_SLURM=1 ;;
    stop) stop ;;
    *) echo "usage: scripts/services.sh start|stop" >&2; exit 2 ;;
esac
