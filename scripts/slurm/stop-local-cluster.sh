#!/usr/bin/env bash
# Stops the daemons scripts/slurm/start-local-cluster.sh started — by the PIDs it recorded in
# $NC_SLURM_STATE/started (slurmd, then slurmctld, then munged), never by name — and only when the
# PID still belongs to a process of that name. Daemons it found running are left running.
# NC_SLURM_KEEP_STATE=1 keeps $NC_SLURM_STATE (configuration and logs); by default only the logs
# and the configuration are kept and the spool directories are removed.
set -euo pipefail
state="${NC_SLURM_STATE:-/tmp/nc-slurm-local}"
say() { echo "local-slurm: $*"; }
if [ ! -s "$state/started" ]; then
  say "nothing to stop (no daemon was started by start-local-cluster.sh in $state)"
  exit 0
fi
for name in slurmd slurmctld munged; do
  # the last record of that name (an earlier one may be a daemon stopped before)
  pid=$(awk -v n="$name" '$1 == n { p = $2 } END { print p }' "$state/started")
  [ -n "$pid" ] || continue
  comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
  if [ "$comm" != "$name" ]; then
    say "$name (PID $pid) is no longer running"
    continue
  fi
  kill -TERM "$pid"
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$name (PID $pid) did not stop in 10 s; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  say "stopped $name (PID $pid)"
done
: > "$state/started"
if [ "${NC_SLURM_KEEP_STATE:-0}" != 1 ]; then
  rm -rf "$state/spool"
fi
