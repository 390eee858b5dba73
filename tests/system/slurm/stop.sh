#!/usr/bin/env bash
# Stop the cluster started by start.sh STATE_DIR: each daemon by its pid file, in the
# reverse order of start, waiting for it to exit (SIGKILL after 20 s), then the
# /run/slurm/conf link it made. Safe to run twice.
set -uo pipefail

S=${1:?usage: stop.sh STATE_DIR}
status=0
# Jobs first: slurmstepd outlives slurmd, so cancel this cluster's jobs while slurmctld is up.
if [ -f "$S/slurmctld.pid" ] && kill -0 "$(cat "$S/slurmctld.pid")" 2>/dev/null; then
    export SLURM_CONF=$S/slurm.conf
    timeout 10 scancel --quiet --user="$(id -un)" || true
    for _ in $(seq 50); do
        [ -z "$(timeout 5 squeue -h -t RUNNING,COMPLETING -o %i 2>/dev/null)" ] && break
        sleep 0.2
    done
fi
for name in slurmd slurmctld slurmdbd mariadbd munged; do
    pidfile=$S/$name.pid
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "stop.sh: $name (pid $pid) ignored SIGTERM for 20 s: killing it" >&2
            kill -KILL "$pid" 2>/dev/null
            status=1
        fi
    fi
    rm -f "$pidfile"
done
# the symlink start.sh made for srun inside jobs, if it is still ours
if [ "$(readlink /run/slurm/conf 2>/dev/null)" = "$(cd "$S" 2>/dev/null && pwd)" ]; then
    rm -f /run/slurm/conf
    rmdir /run/slurm 2>/dev/null || true
fi
exit $status
