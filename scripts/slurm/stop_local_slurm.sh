#!/usr/bin/env bash
# Stop the daemons started by start_local_slurm.sh, each by the PID in its pidfile, after
# cancelling whatever jobs are still queued or running there.
# Usage: scripts/slurm/stop_local_slurm.sh [--purge]   (--purge also deletes all of $SLURM_BASE)
set -u
SLURM_BASE=${SLURM_BASE:-${TMPDIR:-/tmp}/ssltrace-slurm}
R=$SLURM_BASE/run
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if alive "$R/slurmctld.pid"; then
  SLURM_CONF=$SLURM_BASE/etc/slurm.conf scancel --user="$(id -un)" 2>/dev/null || true
  for _ in $(seq 50); do
    [ -z "$(SLURM_CONF=$SLURM_BASE/etc/slurm.conf squeue -h -t R,CG 2>/dev/null)" ] && break
    sleep 0.2
  done
fi
for d in slurmd slurmctld munged; do
  f=$R/$d.pid
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { echo "$d ($pid) still alive, sending KILL"; kill -KILL "$pid"; }
    echo "stopped $d (pid $pid)"
  fi
  rm -f "$f"
done
# Remove the /etc/slurm/slurm.conf link only if it is ours; put back the link it replaced.
if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$SLURM_BASE/etc/slurm.conf" ]; then
  rm -f /etc/slurm/slurm.conf
  if [ -f "$R/etc-link.previous" ] && [ -e "$(cat "$R/etc-link.previous")" ]; then
    ln -s "$(cat "$R/etc-link.previous")" /etc/slurm/slurm.conf
    echo "restored /etc/slurm/slurm.conf -> $(cat "$R/etc-link.previous")"
  else
    echo "removed /etc/slurm/slurm.conf link"
  fi
fi
rm -f "$R/etc-link.previous"
if [ "${1:-}" = "--purge" ]; then
  rm -rf "$SLURM_BASE"
  echo "purged $SLURM_BASE"
fi
