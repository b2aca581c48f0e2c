#!/usr/bin/env bash
# A real one-node SLURM cluster on this Debian machine: munge, MariaDB + slurmdbd
# (accounting, so `sacct` answers the executor plugin's status queries), slurmctld and
# slurmd on localhost, a `cpu` and a `gpu` partition.
#
#   sudo tests/cluster/slurm_cluster.sh up     # install (apt) if needed, configure, start
#   sudo tests/cluster/slurm_cluster.sh down   # stop the daemons
#
# Needs root and the distribution's packages (slurm-wlm, slurmdbd, munge,
# mariadb-server); not part of .ci/run. It writes /etc/slurm/{slurm,slurmdbd,gres}.conf
# and refuses to overwrite a slurm.conf it did not write.
#
# The node is declared with more CPUs and memory than a small test machine has
# (SlurmdParameters=config_overrides), so the profile's requests (8 CPUs, 32 GB for an
# encoder) are granted as written and sacct shows them; and with one `gpu` GRES that has
# no device file, so a `--gpus=1` request is accepted on a machine without a GPU. The
# jobs then run on the CPU (mmpipe's `device: auto`); on a real cluster the gpu
# partition's nodes declare their real GPUs. `tests/cluster/run_demo.py` runs the demo
# through it.
set -euo pipefail

MARK="# written by mmpipe tests/cluster/slurm_cluster.sh"
NODE=$(hostname -s)
DB_PASS=mmpipe-slurm-test

log() { echo "[slurm_cluster] $*"; }

install() {
    local missing=()
    for pkg in slurm-wlm slurmdbd munge mariadb-server; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
    fi
}

configure() {
    if [[ -f /etc/slurm/slurm.conf ]] && ! grep -qF "$MARK" /etc/slurm/slurm.conf; then
        echo "/etc/slurm/slurm.conf exists and was not written by this script; not touching it" >&2
        exit 1
    fi
    mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge \
        /run/mysqld
    chown slurm:slurm /var/spool/slurmctld /var/log/slurm
    chown munge:munge /run/munge
    chown mysql:mysql /run/mysqld
    [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile /etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key

    cat >/etc/slurm/slurm.conf <<EOF
$MARK
ClusterName=mmpipe
SlurmctldHost=$NODE
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# no cgroup hierarchy to confine jobs in this VM: plain process tracking
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
# the executor plugin puts the rule and wildcards in the comment: keep it for sacct
AccountingStoreFlags=job_comment
ReturnToService=2
MinJobAge=300
SlurmdParameters=config_overrides
NodeName=$NODE CPUs=8 RealMemory=64000 Gres=gpu:1 State=UNKNOWN
# no default partition: a job the profile gives no partition is refused, not placed
PartitionName=cpu Nodes=$NODE MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE MaxTime=INFINITE State=UP
EOF
    cat >/etc/slurm/gres.conf <<EOF
$MARK
# one GRES on /dev/null, no real device: --gpus=1 is accepted and binds nothing usable
NodeName=$NODE Name=gpu File=/dev/null Count=1
EOF
    cat >/etc/slurm/slurmdbd.conf <<EOF
$MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
PidFile=/run/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    chown slurm:slurm /etc/slurm/slurmdbd.conf && chmod 600 /etc/slurm/slurmdbd.conf
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2
    shift 2
    for ((i = 0; i < seconds; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 1
    done
    echo "timed out after ${seconds}s waiting for $what" >&2
    return 1
}

up() {
    install
    configure
    pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
    wait_for 20 munge munge -n
    if ! pgrep -x mariadbd >/dev/null; then
        (setsid mysqld_safe >/dev/null 2>&1 &)
    fi
    wait_for 60 MariaDB mysqladmin ping
    mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
              CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
    pgrep -x slurmdbd >/dev/null || slurmdbd
    wait_for 60 slurmdbd sacctmgr -n show cluster
    sacctmgr -i add cluster mmpipe >/dev/null 2>&1 || true
    sacctmgr -i add account mmpipe Description="mmpipe test" Organization=mmpipe \
        >/dev/null 2>&1 || true
    sacctmgr -i add user "${SUDO_USER:-root}" Account=mmpipe DefaultAccount=mmpipe \
        >/dev/null 2>&1 || true
    pgrep -x slurmctld >/dev/null || slurmctld
    wait_for 60 slurmctld scontrol ping
    pgrep -x slurmd >/dev/null || slurmd
    # a drain left by an earlier configuration (saved state) is lifted once slurmd has
    # registered; a node that is still invalid stays drained and the wait below says so
    wait_for 60 "node $NODE to register" bash -c "sinfo -h -n $NODE -o %t | grep -qvx 'unk.*'"
    scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
    wait_for 60 "node $NODE idle" bash -c "sinfo -h -n $NODE -o %t | grep -qx idle" || {
        scontrol show node "$NODE" | grep -E "State|Reason" >&2
        exit 1
    }
    log "up: $(sinfo -h -o '%P %a %D %c CPUs %m MB %G %t' | tr '\n' ';')"
}

stop() {  # stop DAEMON and wait until it has exited (a later `up` would see it running)
    pkill -x "$1" 2>/dev/null || return 0
    wait_for 60 "$1 to exit" bash -c "! pgrep -x $1"
}

down() {
    for daemon in slurmd slurmctld slurmdbd; do
        stop "$daemon"
    done
    mysqladmin shutdown 2>/dev/null || true
    stop munged
    log "down"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
