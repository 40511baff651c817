#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for tests (the CI test scripts/test-slurm.sh uses it).
# It is NOT needed on a real cluster: there the job scripts beside this file are submitted as they are.
#
#   scripts/slurm/start-local-cluster.sh            # start what is not running, print the set-up
#   source "$NC_SLURM_STATE/env"                     # then sbatch/squeue/sinfo talk to it
#   scripts/slurm/stop-local-cluster.sh             # stop what this script started (by PID)
#
# What it does (as root; Debian bookworm's slurm-wlm 22.05 and munge; no systemd, no cgroups):
#   - installs slurm-wlm and munge with apt-get when they are missing, but only in CI (CI=true) or
#     when asked (NC_SLURM_INSTALL=1); otherwise it says what to install and exits 3;
#   - uses a cluster that is already reachable (`sinfo` answers with an idle/mixed node) and starts
#     nothing then;
#   - otherwise starts munged (unless a munge daemon already answers), slurmctld and slurmd with a
#     private configuration in $NC_SLURM_STATE (default /tmp/nc-slurm-local): slurm.conf, spool
#     directories, logs and PID files live there, /etc/slurm is not touched. Every daemon it starts
#     is recorded in $NC_SLURM_STATE/started (name and PID) so that stop-local-cluster.sh stops
#     exactly those and nothing else;
#   - writes $NC_SLURM_STATE/env (export SLURM_CONF=...) for the clients, and waits until the node
#     is idle.
# Exit codes: 0 ready, 3 cannot run here (not root, or Slurm missing and installing not allowed),
# 1 a daemon did not come up (its log is printed).
set -euo pipefail
state="${NC_SLURM_STATE:-/tmp/nc-slurm-local}"
say() { echo "local-slurm: $*"; }

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
# `sinfo` against a configured but dead controller retries for about 10 s: bounded here.
answers() { command -v sinfo >/dev/null 2>&1 && timeout 5 sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; }

# A cluster that already answers is used as it is: ours from an earlier call (its controller's PID
# is alive), or one configured on this machine (SLURM_CONF, or /etc/slurm/slurm.conf).
if [ -f "$state/slurm.conf" ] && alive "$(cat "$state/slurmctld.pid" 2>/dev/null)" \
   && SLURM_CONF="$state/slurm.conf" answers; then
  say "the local cluster of $state is already running; starting nothing"
  echo "export SLURM_CONF=$state/slurm.conf" > "$state/env"
  exit 0
fi
if { [ -n "${SLURM_CONF:-}" ] || [ -f /etc/slurm/slurm.conf ]; } && answers; then
  say "a Slurm cluster is already running (SLURM_CONF=${SLURM_CONF:-/etc/slurm/slurm.conf}); starting nothing"
  mkdir -p "$state"
  echo "${SLURM_CONF:+export SLURM_CONF=$SLURM_CONF}" > "$state/env"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  say "needs root to start slurmctld/slurmd here (not root); skipped"
  exit 3
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  if [ "${CI:-}" = true ] || [ "${NC_SLURM_INSTALL:-0}" = 1 ]; then
    say "installing slurm-wlm and munge (apt-get)"
    t0=$(date +%s)
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
    say "installed in $(( $(date +%s) - t0 )) s"
  else
    say "slurm-wlm and munge are not installed; run with NC_SLURM_INSTALL=1 (apt-get) or install them"
    exit 3
  fi
fi

mkdir -p "$state"/{spool/ctld,spool/d,log}
: >> "$state/started"
record() { echo "$1 $2" >> "$state/started"; say "started $1 (PID $2)"; }
wait_pidfile() { # FILE SECONDS -> prints the PID once the file holds a live one
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    if [ -s "$1" ] && alive "$(cat "$1")"; then cat "$1"; return 0; fi
    sleep 0.1
  done
  return 1
}

# --- munge: the system daemon on its default socket (Slurm's auth/munge talks to that socket) ----
if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  say "munged is already running; using it"
else
  mkdir -p /etc/munge /var/log/munge /run/munge /var/lib/munge
  if [ ! -f /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1k count=1 status=none
  fi
  chown -R munge:munge /etc/munge /var/log/munge /run/munge /var/lib/munge
  chmod 400 /etc/munge/munge.key
  rm -f /run/munge/munged.pid
  su -s /bin/sh munge -c /usr/sbin/munged
  pid=$(wait_pidfile /run/munge/munged.pid 10) || { say "munged did not start"; tail -20 /var/log/munge/munged.log || true; exit 1; }
  record munged "$pid"
fi

# --- slurm: a private configuration --------------------------------------------------------------
host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/^MemTotal:/ { print int($2 / 1024) }' /proc/meminfo) - 1024 ))
[ "$mem" -ge 1024 ] || mem=1024
conf="$state/slurm.conf"
cat > "$conf" <<EOF
# Written by scripts/slurm/start-local-cluster.sh: one node ($host, $cpus CPUs, $mem MB), one partition.
ClusterName=nclocal
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$state/spool/ctld
SlurmdSpoolDir=$state/spool/d
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
ReturnToService=2
MinJobAge=600
# schedule as soon as a job ends (the default waits up to 3 s to batch high-throughput submissions)
SchedulerParameters=batch_sched_delay=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
echo "export SLURM_CONF=$conf" > "$state/env"
export SLURM_CONF="$conf"

t0=$(date +%s.%N)
if alive "$(cat "$state/slurmctld.pid" 2>/dev/null)"; then
  say "slurmctld is already running (PID $(cat "$state/slurmctld.pid")); using it"
else
  rm -f "$state/slurmctld.pid"
  # -i: ignore state files a previous (killed) controller may have left
  /usr/sbin/slurmctld -f "$conf" -i
  pid=$(wait_pidfile "$state/slurmctld.pid" 15) || { say "slurmctld did not start"; tail -20 "$state/log/slurmctld.log"; exit 1; }
  record slurmctld "$pid"
fi
if alive "$(cat "$state/slurmd.pid" 2>/dev/null)"; then
  say "slurmd is already running (PID $(cat "$state/slurmd.pid")); using it"
else
  rm -f "$state/slurmd.pid"
  /usr/sbin/slurmd -f "$conf" -N "$host"
  pid=$(wait_pidfile "$state/slurmd.pid" 15) || { say "slurmd did not start"; tail -20 "$state/log/slurmd.log"; exit 1; }
  record slurmd "$pid"
fi

# Ready when the node is idle (it registers within a second or two).
for ((i = 0; i < 300; i++)); do
  if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed)'; then
    say "ready in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s: $(sinfo -h -o '%P %D node(s) %c CPUs %m MB %T')"
    say "clients: source $state/env   (SLURM_CONF=$conf)"
    exit 0
  fi
  sleep 0.1
done
say "the node did not become idle in 30 s"
sinfo || true
tail -20 "$state/log/slurmctld.log" "$state/log/slurmd.log" || true
exit 1
