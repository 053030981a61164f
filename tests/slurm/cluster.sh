#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for the integration test (tests/test_slurm.py):
# munge, MariaDB on 127.0.0.1, slurmdbd (accounting, so `sacct` works as on a real cluster),
# slurmctld and slurmd with two fake GPUs. Needs root (Debian packages, daemons as root).
#
#   tests/slurm/cluster.sh start    install missing packages, start every daemon (idempotent)
#   tests/slurm/cluster.sh stop     cancel jobs, stop every daemon by its PID
#   tests/slurm/cluster.sh status   exit 0 when every daemon runs and the node is up
#   tests/slurm/cluster.sh env      print the variables that point Slurm's commands here
#
# All state (configs, database, spool, logs, pid files) lives in $SCALSELECT_SLURM_STATE
# (default /tmp/scalselect-slurm); Slurm's commands find the cluster through SLURM_CONF.
set -euo pipefail
# The daemons and runuser live in the system folders, which a minimal PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${SCALSELECT_SLURM_STATE:-/tmp/scalselect-slurm}
HOST=$(hostname -s)
DB_PORT=${SCALSELECT_SLURM_DB_PORT:-16306}
CTLD_PORT=${SCALSELECT_SLURM_CTLD_PORT:-16817}
SLURMD_PORT=${SCALSELECT_SLURM_SLURMD_PORT:-16818}
DBD_PORT=${SCALSELECT_SLURM_DBD_PORT:-16819}
CLUSTER=scalselect-ci
export SLURM_CONF=$STATE/etc/slurm.conf
RUN_CONF=/run/slurm/conf
# Daemons in start order; stopped in reverse.
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)
PACKAGES=(slurm-wlm munge slurmdbd mariadb-server)

log() { echo "cluster.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

pid_of() { cat "$STATE/run/$1.pid" 2>/dev/null || true; }

alive() {
    local pid
    pid=$(pid_of "$1")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

# Poll `$@` every 0.5 s for up to $timeout seconds.
wait_for() {
    local timeout=$1 what=$2
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for $what (logs: $STATE/log)"
        sleep 0.5
    done
}

install_packages() {
    local missing=() command
    for command in slurmctld slurmd sbatch sacct munged mungekey slurmdbd mariadbd mariadb; do
        command -v "$command" >/dev/null || missing+=("$command")
    done
    ((${#missing[@]} == 0)) && return
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    log "installing ${PACKAGES[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${PACKAGES[@]}" >"$STATE/log/apt-get.log" 2>&1 ||
        die "apt-get install failed, see $STATE/log/apt-get.log"
}

render() {
    local src=$1 dest=$2
    sed -e "s|@STATE@|$STATE|g" -e "s|@HOST@|$HOST|g" -e "s|@DB_PORT@|$DB_PORT|g" \
        -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
        -e "s|@DBD_PORT@|$DBD_PORT|g" -e "s|@DB_PASS@|$(cat "$STATE/etc/db.pass")|g" \
        "$HERE/$src" >"$dest"
}

configure() {
    mkdir -p "$STATE"/{etc,run,log,ctld,slurmd,munge,db,dev}
    # munged (user munge) must reach its socket inside the state directory.
    chmod 755 "$STATE"
    [[ -s $STATE/etc/db.pass ]] || head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$STATE/etc/db.pass"
    render slurm.conf.in "$STATE/etc/slurm.conf"
    render gres.conf.in "$STATE/etc/gres.conf"
    render slurmdbd.conf.in "$STATE/etc/slurmdbd.conf"
    # slurmdbd refuses a config readable by others (it holds the database password).
    chmod 600 "$STATE/etc/slurmdbd.conf" "$STATE/etc/db.pass"
    : >"$STATE/etc/plugstack.conf"
    # Slurm accepts only character devices as GPU files; these read like /dev/null.
    for i in 0 1; do
        [[ -c $STATE/dev/fakegpu$i ]] || mknod "$STATE/dev/fakegpu$i" c 1 3
    done
    # Inside a job the executor calls srun with SLURM_CONF removed; Slurm's commands then
    # read /run/slurm/conf/ (where a configless slurmd caches its config). Link ours there
    # unless another cluster's config is already in place.
    # A link left by an earlier test cluster is replaced; anything else is not ours.
    if [[ -e $RUN_CONF && ! -L $RUN_CONF ]]; then
        die "$RUN_CONF exists and is not a test cluster's link; refusing to replace it"
    fi
    mkdir -p "$(dirname "$RUN_CONF")"
    ln -sfn "$STATE/etc" "$RUN_CONF"
}

start_munge() {
    alive munged && return
    # munged runs as the munge user and checks that its files are private to it.
    [[ -s $STATE/munge/munge.key ]] || mungekey --create --keyfile="$STATE/munge/munge.key"
    chown -R munge: "$STATE/munge"
    chmod 711 "$STATE/munge"
    chmod 600 "$STATE/munge/munge.key"
    rm -f "$STATE/munge/munge.socket" "$STATE/munge/munge.socket.lock"
    runuser -u munge -- munged --socket="$STATE/munge/munge.socket" \
        --key-file="$STATE/munge/munge.key" --pid-file="$STATE/munge/munged.pid" \
        --log-file="$STATE/munge/munged.log" --seed-file="$STATE/munge/munged.seed"
    wait_for 10 munged test -s "$STATE/munge/munged.pid"
    cp "$STATE/munge/munged.pid" "$STATE/run/munged.pid"
}

db_sql() { mariadb --no-defaults --socket="$STATE/run/mariadb.sock" -u root -e "$1"; }

start_mariadb() {
    alive mariadbd && return
    if [[ ! -d $STATE/db/mysql ]]; then
        mariadb-install-db --no-defaults --datadir="$STATE/db" --user=root \
            --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1 ||
            die "mariadb-install-db failed, see $STATE/log/mariadb-install.log"
    fi
    setsid mariadbd --no-defaults --user=root --datadir="$STATE/db" \
        --socket="$STATE/run/mariadb.sock" --bind-address=127.0.0.1 --port="$DB_PORT" \
        --pid-file="$STATE/run/mariadbd.pid" --log-error="$STATE/log/mariadb.log" \
        --skip-name-resolve --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 &
    wait_for 30 mariadbd db_sql "SELECT 1"
    local pass
    pass=$(cat "$STATE/etc/db.pass")
    db_sql "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

start_slurmdbd() {
    alive slurmdbd && return
    slurmdbd
    wait_for 30 slurmdbd sacctmgr -n show cluster
}

# Accounting entities: the cluster, a default account for root and a second one that the
# test asks for explicitly (so it can tell the user's account from the default).
setup_accounts() {
    if [[ -z $(sacctmgr -n -P show cluster "$CLUSTER" format=cluster) ]]; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
    local account
    for account in ci-default ci-project; do
        if [[ -z $(sacctmgr -n -P show account "$account" format=account) ]]; then
            sacctmgr -i add account "$account" Cluster="$CLUSTER" Description=test Organization=ci >/dev/null
        fi
        if [[ -z $(sacctmgr -n -P show assoc user=root account="$account" format=account) ]]; then
            sacctmgr -i add user root Account="$account" Cluster="$CLUSTER" >/dev/null
        fi
    done
    sacctmgr -i modify user root set DefaultAccount=ci-default >/dev/null || true
}

node_usable() {
    local state
    state=$(sinfo -h -n "$HOST" -o %T | head -1)
    [[ $state == idle* || $state == mixed* || $state == allocated* ]]
}

start_slurm() {
    alive slurmctld || slurmctld
    wait_for 30 slurmctld scontrol ping
    alive slurmd || slurmd
    wait_for 30 "node $HOST to register" node_usable
}

start() {
    [[ $(id -u) == 0 ]] || die "must run as root (installs packages, starts daemons)"
    if status >/dev/null 2>&1; then
        log "already running ($STATE)"
        return
    fi
    mkdir -p "$STATE/log"
    install_packages
    # A half-started cluster from an interrupted run is restarted from scratch.
    stop >/dev/null 2>&1 || true
    configure
    start_munge
    start_mariadb
    start_slurmdbd
    setup_accounts
    start_slurm
    log "running: SLURM_CONF=$SLURM_CONF"
}

stop_daemon() {
    local name=$1 pid
    pid=$(pid_of "$name")
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        local deadline=$((SECONDS + 20))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$STATE/run/$name.pid"
}

stop() {
    [[ -d $STATE ]] || return 0
    if alive slurmctld; then
        scancel --user=root 2>/dev/null || true
    fi
    local i
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        stop_daemon "${DAEMONS[i]}"
    done
    if [[ $(readlink "$RUN_CONF" 2>/dev/null) == "$STATE/etc" ]]; then
        rm -f "$RUN_CONF"
    fi
    log "stopped"
}

status() {
    local name ok=0
    for name in "${DAEMONS[@]}"; do
        if alive "$name"; then
            echo "$name: running (pid $(pid_of "$name"))"
        else
            echo "$name: stopped"
            ok=1
        fi
    done
    ((ok == 0)) && node_usable && sinfo
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) status ;;
env) echo "export SLURM_CONF=$SLURM_CONF" ;;
*) die "usage: $0 start|stop|status|env" ;;
esac
