#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the Slurm engine of `segcook sweep` and its tests.
# Installs Debian's slurm-wlm + munge when absent, writes a slurm.conf for this host, starts munged,
# slurmctld and slurmd (no systemd needed), and waits until `srun hostname` works. Safe to run again.
# Needs root (CI and the dev machines run as root). `tools/slurm.sh stop` stops the daemons.
set -euo pipefail
if [ "${1:-}" = stop ]; then scontrol shutdown 2>/dev/null || true; pkill -x munged 2>/dev/null || true; exit 0; fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi
if sinfo -h -o %T 2>/dev/null | grep -qE 'idle|mix|alloc'; then echo "slurm: already up ($(sinfo -h -o '%P %T %N' | head -1))"; exit 0; fi
H=$(hostname)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge /var/log/munge
[ -f /etc/munge/munge.key ] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge; chmod 400 /etc/munge/munge.key
MEM=$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) * 3 / 4 ))
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=local
SlurmctldHost=$H
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=300
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$H CPUs=$(nproc) RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
CONF
pgrep -x munged >/dev/null || /usr/sbin/munged --force
pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd
for i in $(seq 30); do
  if timeout 20 srun -N1 -n1 hostname >/dev/null 2>&1; then echo "slurm: up ($(sinfo -h -o '%P %T %N' | head -1))"; exit 0; fi
  sleep 1
done
echo "slurm: did not start; see /var/log/slurm/slurmctld.log and slurmd.log" >&2; exit 1
