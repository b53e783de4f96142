#!/usr/bin/env bash
# Start a single-node SLURM "cluster" (munged + slurmctld + slurmd) on loopback, with fake GPUs,
# everything (config, munge key and socket, state, logs, pids) under $SLURM_BASE. For trying the
# slurm profile on a workstation and for tests/test_slurm.py; not for production.
# Idempotent: a daemon whose pidfile names a live process is left alone.
#   sudo scripts/slurm/start_local_slurm.sh && export SLURM_CONF=$SLURM_BASE/etc/slurm.conf
# Needs root and (Debian/Ubuntu): apt-get install slurm-wlm slurmctld slurmd slurm-client munge
# Environment (all optional):
#   SLURM_BASE            state directory (default ${TMPDIR:-/tmp}/ssltrace-slurm)
#   SLURM_CTLD_PORT, SLURMD_PORT   ports (6817, 6818); pick free ones to run beside another SLURM
#   SLURM_FAKE_GPUS       number of fake GPUs (1); SLURM_FAKE_GPU_TYPE e.g. a100 (untyped)
#   SLURM_NODE_MEM_MB     memory the node offers (MemTotal - 1 GiB)
#   SLURM_LINK_ETC=0      do not link /etc/slurm/slurm.conf (then jobs launched through the
#                         slurm-jobstep plugin cannot find the config, see below)
set -euo pipefail

SLURM_BASE=${SLURM_BASE:-${TMPDIR:-/tmp}/ssltrace-slurm}
CTLD_PORT=${SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${SLURMD_PORT:-6818}
NODE=$(hostname -s)
# hardware line as slurmd sees it (CPUs/Boards/Sockets/Cores/Threads), minus RealMemory
HW=$(slurmd -C | head -1 | sed -e "s/^NodeName=[^ ]* //" -e "s/ *RealMemory=[0-9]*//")
MEM_MB=${SLURM_NODE_MEM_MB:-$(($(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 - 1024))}
FAKE_GPUS=${SLURM_FAKE_GPUS:-1}
FAKE_GPU_TYPE=${SLURM_FAKE_GPU_TYPE:-}
GRES_SPEC=gpu:${FAKE_GPU_TYPE:+${FAKE_GPU_TYPE}:}${FAKE_GPUS}

E=$SLURM_BASE/etc; R=$SLURM_BASE/run; L=$SLURM_BASE/log
mkdir -p "$E" "$R" "$L" "$SLURM_BASE/state" "$SLURM_BASE/spool" "$SLURM_BASE/munge"
chmod 700 "$SLURM_BASE/munge"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
t0=$(date +%s.%N)

# ---- munge: a private key and socket, so no system munged is needed or disturbed --------------
MKEY=$SLURM_BASE/munge/munge.key
if [ ! -f "$MKEY" ]; then
  dd if=/dev/urandom of="$MKEY" bs=1 count=1024 status=none
  chmod 400 "$MKEY"
fi
MSOCK=$SLURM_BASE/munge/munge.socket
if ! alive "$R/munged.pid"; then
  rm -f "$MSOCK" "$MSOCK.lock"
  munged --force --socket="$MSOCK" --key-file="$MKEY" \
         --pid-file="$R/munged.pid" --log-file="$L/munged.log" \
         --seed-file="$SLURM_BASE/munge/munged.seed"
  for _ in $(seq 50); do [ -S "$MSOCK" ] && break; sleep 0.1; done
fi
munge -S "$MSOCK" -n | unmunge -S "$MSOCK" >/dev/null   # self-test

# ---- slurm.conf ---------------------------------------------------------------------------------
# Two partitions over the one node, like a cluster's CPU (default) and GPU partitions.
# No accounting: sacct is then unusable, so Snakemake must poll with --slurm-status-command squeue,
# which only sees finished jobs for MinJobAge seconds (the plugin wants >= 3 x its init delay).
cat > "$E/slurm.conf" <<CONF
ClusterName=ssltrace
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=${MSOCK}
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
StateSaveLocation=${SLURM_BASE}/state
SlurmdSpoolDir=${SLURM_BASE}/spool
SlurmctldPidFile=${R}/slurmctld.pid
SlurmdPidFile=${R}/slurmd.pid
SlurmctldLogFile=${L}/slurmctld.log
SlurmdLogFile=${L}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
LaunchParameters=use_interactive_step
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MinJobAge=300
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
GresTypes=gpu
NodeName=${NODE} NodeAddr=127.0.0.1 ${HW} RealMemory=${MEM_MB} Gres=${GRES_SPEC} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL MaxTime=INFINITE State=UP
CONF
# Fake GPUs: slurmd drops file-less GPUs ("Removing file-less GPU ... from final GRES list") and
# sets no CUDA_VISIBLE_DEVICES for a regular file, so each fake GPU is a char device node with
# /dev/null's numbers (1,3); a regular file is the fallback where mknod is refused.
mkdir -p "$SLURM_BASE/fakedev"
for i in $(seq 0 $((FAKE_GPUS - 1))); do
  f=$SLURM_BASE/fakedev/gpu$i
  [ -c "$f" ] || { rm -f "$f"; mknod "$f" c 1 3 2>/dev/null || touch "$f"; }
done
echo "NodeName=${NODE} Name=gpu ${FAKE_GPU_TYPE:+Type=${FAKE_GPU_TYPE} }File=${SLURM_BASE}/fakedev/gpu[0-$((FAKE_GPUS - 1))] Flags=nvidia_gpu_env" > "$E/gres.conf"
: > "$E/cgroup.conf"   # silences a warning; cgroups are not used (proctrack/linuxproc)
export SLURM_CONF=$E/slurm.conf
# The slurm-jobstep plugin removes every SLURM_* variable (SLURM_CONF too) before the srun it runs
# inside each job; that srun only finds the compiled-in /etc/slurm/slurm.conf ("srun: fatal:
# Could not establish a configuration source"). So link it to our config; a real file is kept.
# The link's previous target is saved so that stop_local_slurm.sh can put it back.
if [ "${SLURM_LINK_ETC:-1}" = 1 ]; then
  if [ -e /etc/slurm/slurm.conf ] && [ ! -L /etc/slurm/slurm.conf ]; then
    echo "WARNING: a real /etc/slurm/slurm.conf exists; not replacing it" >&2
  else
    if [ -L /etc/slurm/slurm.conf ] && [ ! -f "$R/etc-link.previous" ]; then
      previous=$(readlink /etc/slurm/slurm.conf)
      [ "$previous" = "$E/slurm.conf" ] || echo "$previous" > "$R/etc-link.previous"
    fi
    mkdir -p /etc/slurm && ln -sfn "$E/slurm.conf" /etc/slurm/slurm.conf
  fi
fi

# ---- slurmctld + slurmd ---------------------------------------------------------------------------
alive "$R/slurmctld.pid" || slurmctld -f "$SLURM_CONF"
alive "$R/slurmd.pid"    || slurmd -f "$SLURM_CONF" -N "$NODE"

state=""
for _ in $(seq 300); do
  state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
  case "$state" in
    idle|mixed|allocated|completing) break ;;   # a trailing "*" means: not responding yet
    drain*|inval*|down*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
  esac
  sleep 0.2
done
t1=$(date +%s.%N)
case "$state" in
  idle|mixed|allocated|completing) ;;
  *) echo "local SLURM did not come up (node state '${state}'); logs in $L" >&2; exit 1 ;;
esac
echo "local SLURM up: node=$NODE state=$state in $(echo "$t1 - $t0" | bc) s"
echo "export SLURM_CONF=$SLURM_CONF"
