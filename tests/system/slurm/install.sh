#!/usr/bin/env bash
# Install Debian's SLURM, MUNGE and MariaDB (for slurmdbd: the SLURM executor plugin asks
# sacct for job status) unless they are there already. Needs root and apt-get.
set -euo pipefail

need=(slurmctld slurmd slurmdbd sbatch sacct munged mariadbd mariadb-install-db)
missing=()
for exe in "${need[@]}"; do
    command -v "$exe" >/dev/null 2>&1 || [ -x "/usr/sbin/$exe" ] || missing+=("$exe")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "install.sh: missing ${missing[*]}: installing slurm-wlm slurmdbd munge mariadb-server" >&2
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install.sh: need root and apt-get to install them" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
timeout 300 apt-get update -qq
# Without the recommended packages (257 -> 113 to install on a bare Debian 12: the
# hdf5/influxdb/rrd/ipmi plugins and their X and Perl libraries are not used here); the
# SLURM tests passed on exactly this set, 2026-11-27.
timeout 600 apt-get install -y -qq --no-install-recommends slurm-wlm slurmdbd munge mariadb-server >/dev/null
