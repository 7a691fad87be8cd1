#!/usr/bin/env bash
# A one-node Slurm cluster for the pilot factory's Slurm backend (tests marked `slurm`).
# Called by scripts/services.sh after its apt-get (slurmctld slurmd slurm-client munge);
# safe to run again: it starts only what does not answer. Everything lives under
# .services/slurm (config, state, spool, logs, pid files); munged uses the key the
# Debian package made. Appends SLURM_CONF to .services/env.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="$PWD/.services/slurm"
CONF="$DIR/slurm.conf"
HOST="$(hostname -s)"
mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
cat > "$CONF.new" <<CONFEOF
ClusterName=dawms
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdParameters=config_overrides
MinJobAge=600
KillWait=15
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=8 RealMemory=4000
PartitionName=debug Nodes=ALL Default=YES State=UP MaxTime=INFINITE
CONFEOF
mv "$CONF.new" "$CONF"
export SLURM_CONF="$CONF"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if ! alive /run/munge/munged.pid; then
  mkdir -p /run/munge && chown munge:munge /run/munge
  runuser -u munge -- /usr/sbin/munged
fi
node_up() { timeout 10 sinfo -h -o %T 2>/dev/null | grep -qE "^(idle|mixed|allocated)"; }
# A cluster already answering on 127.0.0.1 (this checkout's, or another's) is used as it is:
# a second slurmctld/slurmd could not bind 6817/6818.
if ! node_up; then
  if ! timeout 10 scontrol ping 2>/dev/null | grep -q "is UP"; then
    alive "$DIR/slurmctld.pid" || slurmctld
  fi
  alive "$DIR/slurmd.pid" || slurmd
fi
deadline=$((SECONDS + 60))
until node_up; do
  if [ $SECONDS -ge $deadline ]; then
    echo "services: Slurm did not come up; see $DIR/log" >&2
    exit 1
  fi
  sleep 0.5
done
touch .services/env && sed -i "/^export SLURM_CONF=/d" .services/env
echo "export SLURM_CONF='$CONF'" >> .services/env
echo "services: Slurm at $CONF ($(sinfo -h -o '%P %T %c CPUs'))"
