#!/usr/bin/env bash
# A throwaway Slurm cluster on this host for ditlab's scheduler tests (`make test-cluster`):
# one slurmctld and two slurmd daemons (`slurmd -N n1`, `slurmd -N n2`) emulating two 1-CPU nodes.
#
#   tools/slurm_cluster.sh start    # installs Debian's slurm + munge packages if missing (needs root)
#   tools/slurm_cluster.sh status   # exit 0 when the controller answers and both nodes are idle/allocated
#   tools/slurm_cluster.sh env      # prints `export SLURM_CONF=...` for this cluster
#   tools/slurm_cluster.sh stop     # stops the daemons by their pid files and removes the state folder
#
# Everything lives in $DITLAB_SLURM_DIR (default /tmp/ditlab-slurm): slurm.conf, the munge key and
# socket, spool/state/log/pid files. Client commands find the cluster through SLURM_CONF (the tests
# set it from that folder). The node names must resolve for torch's rendezvous: as root, start adds
# "127.0.0.1 n1 n2" to /etc/hosts when they do not resolve, and stop removes that line again.
# start/stop/status are idempotent.
set -euo pipefail

DIR="${DITLAB_SLURM_DIR:-/tmp/ditlab-slurm}"
CTLD_PORT="${DITLAB_SLURM_PORT:-16817}"
NODE_PORTS="${DITLAB_SLURMD_PORTS:-17001-17002}"
HOSTS_MARK="# ditlab-slurm test cluster"
PACKAGES=(slurmctld slurmd slurm-client munge)

say() { echo "slurm_cluster: $*" >&2; }
die() { say "error: $*"; exit 1; }
alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
export SLURM_CONF="$DIR/slurm.conf"

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null && return 0
  [[ $(id -u) -eq 0 ]] || die "Slurm is not installed; as root: apt-get install -y ${PACKAGES[*]}"
  say "installing ${PACKAGES[*]} (apt-get)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${PACKAGES[@]}" >/dev/null
}

resolve_nodes() {
  getent hosts n1 >/dev/null && getent hosts n2 >/dev/null && return 0
  [[ $(id -u) -eq 0 ]] || die "node names n1/n2 do not resolve; as root add '127.0.0.1 n1 n2' to /etc/hosts"
  echo "127.0.0.1 n1 n2 $HOSTS_MARK" >>/etc/hosts
}

write_config() {
  mkdir -p "$DIR"/{munge,state,spool,log,run}
  chmod 700 "$DIR/munge"
  if [[ ! -s "$DIR/munge/munge.key" ]]; then
    dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$DIR/munge/munge.key"
  fi
  local host user
  host=$(hostname -s)
  user=$(id -un)
  cat >"$SLURM_CONF" <<EOF
# Written by tools/slurm_cluster.sh: a throwaway two-node test cluster on one host.
ClusterName=ditlabtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# No slurmdbd: no accounting. ditlab reads job states from squeue when sacct has none (ditlab.sweep.slurm_status).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
# Finished jobs stay visible to squeue/scontrol for an hour (their states, for the tests and submitit).
MinJobAge=3600
KillWait=5
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=2
NodeName=n[1-2] NodeHostname=$host NodeAddr=127.0.0.1 Port=$NODE_PORTS CPUs=1 RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
  install_packages
  resolve_nodes
  write_config
  if ! alive "$DIR/run/munged.pid"; then
    munged --force --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
      --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munge.seed"
  fi
  alive "$DIR/run/slurmctld.pid" || slurmctld -f "$SLURM_CONF"
  for node in n1 n2; do
    alive "$DIR/run/slurmd-$node.pid" || slurmd -f "$SLURM_CONF" -N "$node"
  done
  for _ in $(seq 60); do
    if status >/dev/null 2>&1; then
      say "up: 2 nodes (export SLURM_CONF=$SLURM_CONF)"
      return 0
    fi
    sleep 0.5
  done
  sinfo -N 2>&1 | sed 's/^/  /' >&2 || true
  die "the cluster did not come up in 30 s; logs in $DIR/log"
}

status() {
  [[ -f "$SLURM_CONF" ]] || { say "not running ($SLURM_CONF missing)"; return 1; }
  local states
  states=$(sinfo -h -N -o "%N %t" 2>/dev/null) || { say "the controller does not answer"; return 1; }
  echo "$states"
  [[ $(grep -cE '^n[12] (idle|alloc|mix|comp)' <<<"$states") -eq 2 ]]
}

stop() {
  local pidfile
  [[ -f "$SLURM_CONF" ]] && alive "$DIR/run/slurmctld.pid" && scancel --full -u "$(id -un)" 2>/dev/null && sleep 1
  for pidfile in "$DIR"/run/slurmd-n1.pid "$DIR"/run/slurmd-n2.pid "$DIR/run/slurmctld.pid" "$DIR/run/munged.pid"; do
    if alive "$pidfile"; then
      local pid
      pid=$(cat "$pidfile")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
  done
  if [[ $(id -u) -eq 0 ]] && grep -q "$HOSTS_MARK" /etc/hosts 2>/dev/null; then
    grep -v "$HOSTS_MARK" /etc/hosts >/etc/hosts.ditlab-slurm && cat /etc/hosts.ditlab-slurm >/etc/hosts
    rm -f /etc/hosts.ditlab-slurm
  fi
  [[ -d "$DIR" ]] && rm -rf "$DIR"
  say "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$SLURM_CONF" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
