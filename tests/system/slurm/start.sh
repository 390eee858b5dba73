#!/usr/bin/env bash
# A one-node SLURM cluster on localhost, for tests: munged, mariadbd, slurmdbd, slurmctld
# and slurmd, each started and waited for in that order, all state (configs, keys,
# databases, logs, pid files, spool) in STATE_DIR. /etc/slurm and /etc/munge are not
# touched: clients find the cluster through SLURM_CONF (`source STATE_DIR/env.sh`).
# Inside jobs, snakemake-executor-plugin-slurm-jobstep (0.6.1) removes SLURM_CONF before
# calling srun, so srun looks where it looks on a configless SLURM node: the symlink
# /run/slurm/conf, which this script points at STATE_DIR (and stop.sh removes).
# The node has four generic `gpu` resources backed by dummy character devices, so jobs
# asking for --gpus=1 are scheduled as on a GPU node (they see CUDA_VISIBLE_DEVICES but
# no GPU). Stop it with stop.sh STATE_DIR.
#
#   tests/system/slurm/start.sh /tmp/qbench-slurm && source /tmp/qbench-slurm/env.sh
set -euo pipefail

S=${1:?usage: start.sh STATE_DIR}
mkdir -p "$S"
S=$(cd "$S" && pwd)
if ls "$S"/*.pid >/dev/null 2>&1; then
    echo "start.sh: $S already holds pid files: stop that cluster first (stop.sh $S)" >&2
    exit 1
fi
for exe in munged mariadbd slurmdbd slurmctld slurmd; do
    command -v "$exe" >/dev/null 2>&1 || { echo "start.sh: $exe not found: run install.sh first" >&2; exit 1; }
done
mkdir -p "$S/log" "$S/mysql" "$S/ctld" "$S/spool"
# Four fake GPUs and at least as many CPU slots, so four measurement jobs run at once
# even on a 2-core CI machine (the node then claims more CPUs than it has: fine for
# testing the plumbing, never for timing).
GPUS=${QBENCH_SLURM_GPUS:-4}
CPUS=$(( $(nproc) > GPUS ? $(nproc) : GPUS ))
CLUSTER=qbench

# Free TCP ports, so a cluster left over from a killed run cannot clash with this one.
read -r CTLD_PORT SLURMD_PORT DBD_PORT DB_PORT < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
PY
)

wait_for() {  # wait_for SECONDS WHAT LOG CMD...: poll CMD until it succeeds, or fail showing LOG
    local seconds=$1 what=$2 log=$3
    shift 3
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            echo "start.sh: $what did not come up within ${seconds}s; last lines of $log:" >&2
            tail -n 30 "$log" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
}

# --- munge: its own key and socket
dd if=/dev/urandom of="$S/munge.key" bs=1024 count=1 status=none
chmod 400 "$S/munge.key"
chmod 700 "$S"
MUNGE_SOCKET=$S/munge.socket
munged --force --key-file="$S/munge.key" --socket="$MUNGE_SOCKET" --pid-file="$S/munged.pid" \
    --log-file="$S/log/munged.log" --seed-file="$S/munged.seed"
wait_for 15 munged "$S/log/munged.log" bash -c "munge -n -S '$MUNGE_SOCKET' | unmunge -S '$MUNGE_SOCKET'"

# --- MariaDB for slurmdbd: TCP on 127.0.0.1 only
mariadb-install-db --datadir="$S/mysql" --user=root --auth-root-authentication-method=normal \
    --skip-test-db >"$S/log/mariadb-install.log" 2>&1
DB_SOCKET=$S/mysqld.sock
mariadbd --no-defaults --datadir="$S/mysql" --user=root --socket="$DB_SOCKET" --pid-file="$S/mariadbd.pid" \
    --bind-address=127.0.0.1 --port="$DB_PORT" --log-error="$S/log/mariadbd.log" \
    --innodb-buffer-pool-size=64M >/dev/null 2>&1 &
wait_for 60 mariadbd "$S/log/mariadbd.log" mariadb --no-defaults -S "$DB_SOCKET" -u root -e 'select 1'
DB_PASS=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
mariadb --no-defaults -S "$DB_SOCKET" -u root <<SQL
CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL

# --- configs, all beside slurm.conf (SLURM reads gres.conf and slurmdbd.conf from there)
for i in $(seq 0 $((GPUS - 1))); do
    mknod -m 666 "$S/gpu$i" c 1 3  # /dev/null's numbers: slurmd wants a character device
done
cat >"$S/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$S/slurmdbd.pid
LogFile=$S/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
CONF
chmod 600 "$S/slurmdbd.conf"
cat >"$S/slurm.conf" <<CONF
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$S/ctld
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
ReturnToService=2
# accept CPUs= above the machine's core count
SlurmdParameters=config_overrides
# squeue still knows a finished job for 10 minutes
MinJobAge=600
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# for slurmdbd connections, the MUNGE socket is given here, not by AuthInfo
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageTRES=gres/gpu
# sacct then shows the plugin's --comment (rule and wildcards)
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=4000 Gres=gpu:$GPUS State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
cat >"$S/gres.conf" <<CONF
NodeName=localhost Name=gpu File=$S/gpu[0-$((GPUS - 1))]
CONF
# where SLURM clients look when SLURM_CONF is unset and /etc/slurm/slurm.conf is missing
if [ -e /etc/slurm/slurm.conf ]; then
    echo "start.sh: /etc/slurm/slurm.conf exists: jobs' srun would read it instead of $S/slurm.conf" >&2
    exit 1
fi
if [ -e /run/slurm/conf ] || [ -L /run/slurm/conf ]; then
    OTHER=$(readlink /run/slurm/conf || true)
    # A link left by a cluster whose slurmctld is gone (a run killed before stop.sh) is
    # stale: replace it. A live one is another SLURM: leave it alone.
    OTHER_PID=$(cat "$OTHER/slurmctld.pid" 2>/dev/null || true)
    if [ -n "$OTHER" ] && [ "$(cat "/proc/${OTHER_PID:-0}/comm" 2>/dev/null)" != slurmctld ]; then
        echo "start.sh: replacing the stale /run/slurm/conf -> $OTHER (no slurmctld runs there)" >&2
        rm -f /run/slurm/conf
    else
        echo "start.sh: /run/slurm/conf exists (${OTHER:-not a link}): another SLURM runs here" >&2
        exit 1
    fi
fi
mkdir -p /run/slurm
ln -s "$S" /run/slurm/conf
cat >"$S/env.sh" <<CONF
export SLURM_CONF=$S/slurm.conf
CONF
export SLURM_CONF=$S/slurm.conf

# --- the daemons, each waited for
slurmdbd
wait_for 30 slurmdbd "$S/log/slurmdbd.log" sacctmgr -n show cluster
sacctmgr -i add cluster "$CLUSTER" >/dev/null
slurmctld
wait_for 30 slurmctld "$S/log/slurmctld.log" scontrol ping
slurmd -N localhost
wait_for 30 "slurmd (node localhost idle)" "$S/log/slurmd.log" bash -c 'sinfo -h -N -n localhost -o %t | grep -qx idle'
echo "start.sh: SLURM cluster $CLUSTER up in $S (source $S/env.sh); $GPUS fake GPUs, $CPUS CPUs"
