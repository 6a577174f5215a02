#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to try `fusionlab run --launcher slurm` (and
# for the tests marked `cluster`). Debian/Ubuntu, as root.
#
#   scripts/slurm_local.sh start   installs the packages if missing (apt-get), then starts
#                                  munged -> MariaDB -> slurmdbd -> slurmctld -> slurmd
#                                  (accounting, so that sacct works: submitit follows jobs
#                                  with it) and waits until `srun hostname` works (~15 s)
#   scripts/slurm_local.sh stop    cancels the jobs left and stops exactly the daemons that
#                                  `start` started (their PIDs, never by name)
#
# If a SLURM cluster already answers (`sinfo`), `start` uses it and starts nothing (and
# `stop` then stops nothing). Everything else lives under $FUSIONLAB_SLURM_BASE: the
# configuration, munge key and socket, the database, state, logs, and the PIDs file; the
# only file outside it is the symlink /etc/slurm/slurm.conf (made only if that path is
# free or already ours), through which sinfo/sbatch/submitit find the cluster.
#
# Env: FUSIONLAB_SLURM_BASE (/tmp/fusionlab-slurm), FUSIONLAB_SLURM_PORT (6817: slurmctld;
# +1 slurmd, +2 slurmdbd), FUSIONLAB_SLURM_DB_PORT (3307), FUSIONLAB_SLURM_CPUS (all),
# FUSIONLAB_SLURM_MEM_MB (85% of RAM), FUSIONLAB_SLURM_WAIT_S (90),
# FUSIONLAB_SLURM_NO_INSTALL=1 (never apt-get), FUSIONLAB_SLURM_STOP_GRACE_S (30).
set -euo pipefail

BASE=${FUSIONLAB_SLURM_BASE:-/tmp/fusionlab-slurm}
PORT=${FUSIONLAB_SLURM_PORT:-6817}
DB_PORT=${FUSIONLAB_SLURM_DB_PORT:-3307}
WAIT_S=${FUSIONLAB_SLURM_WAIT_S:-90}
GRACE_S=${FUSIONLAB_SLURM_STOP_GRACE_S:-30}
ETC=$BASE/etc; RUN=$BASE/run; LOG=$BASE/log; STATE=$BASE/state; PIDS=$BASE/pids
t0=$(date +%s.%N)
say() { printf '[slurm_local %5.1fs] %s\n' "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')" "$*" >&2; }
die() { echo "slurm_local: error: $*" >&2; exit 1; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
# the PID is still the daemon we started (not a recycled PID)
ours() { alive "$2" && tr '\0' ' ' <"/proc/$2/cmdline" 2>/dev/null | grep -qw "$1"; }
pid_of() { awk -v n="$1" '$1 == n {print $2}' "$PIDS"; }
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() {  # SECONDS DESCRIPTION CMD...: poll CMD every 0.2 s
  local s=$1 what=$2; shift 2
  local end=$(( $(date +%s) + s ))
  while [ "$(date +%s)" -lt "$end" ]; do
    timeout 10 "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "$what did not happen within ${s}s (logs: $LOG)"
}

install_packages() {
  local need=() b
  for b in munged:munge slurmctld:slurmctld slurmd:slurmd sinfo:slurm-client \
           slurmdbd:slurmdbd mariadbd:mariadb-server; do
    command -v "${b%%:*}" >/dev/null 2>&1 || need+=("${b#*:}")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  [ "${FUSIONLAB_SLURM_NO_INSTALL:-0}" = 1 ] && die "missing packages: ${need[*]}"
  command -v apt-get >/dev/null 2>&1 || die "missing packages (${need[*]}) and no apt-get"
  say "installing ${need[*]} (log: $BASE/apt.log)"
  export DEBIAN_FRONTEND=noninteractive
  local apt="apt-get -q -y -o DPkg::Lock::Timeout=600"
  $apt update >"$BASE/apt.log" 2>&1 || { tail -5 "$BASE/apt.log" >&2; die "apt-get update failed"; }
  $apt install --no-install-recommends "${need[@]}" >>"$BASE/apt.log" 2>&1 \
    || { tail -5 "$BASE/apt.log" >&2; die "apt-get install failed"; }
}

write_config() {
  local host=$1 cpus mem
  cpus=${FUSIONLAB_SLURM_CPUS:-$(nproc)}
  mem=${FUSIONLAB_SLURM_MEM_MB:-$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.85}' /proc/meminfo)}
  cat > "$ETC/slurm.conf" <<EOF
# written by $0 on $(date -Is)
ClusterName=fusionlab
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$RUN/munge.socket
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$((PORT + 2))
AccountingStoragePass=$RUN/munge.socket
JobAcctGatherType=jobacct_gather/linux
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
EnforcePartLimits=ALL
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
InactiveLimit=0
MinJobAge=600
KillWait=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  say "node $host: $cpus CPUs, $mem MB"
}

start_daemon() {  # NAME CMD...: in the foreground mode, backgrounded here ($! is its PID)
  local name=$1; shift
  setsid nohup "$@" >>"$LOG/$name.out" 2>&1 </dev/null &
  local pid=$!
  echo "$name $pid" >>"$PIDS"
  sleep 0.3
  alive "$pid" || { tail -n 5 "$LOG/$name.out" >&2; die "$name exited at once (log: $LOG/$name.out)"; }
  say "$name started, pid $pid"
}

start_db() {
  local db=$STATE/mysql sock=$RUN/mysqld.sock pass
  if [ ! -d "$db/mysql" ]; then
    rm -rf "$db"
    mariadb-install-db --no-defaults --datadir="$db" --user=root --skip-test-db \
      --auth-root-authentication-method=socket >"$LOG/mariadb-install.log" 2>&1 \
      || { tail -n 5 "$LOG/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
  fi
  start_daemon mariadbd mariadbd --no-defaults --datadir="$db" --user=root --port="$DB_PORT" \
    --bind-address=127.0.0.1 --socket="$sock" --pid-file="$RUN/mysqld.pid" \
    --log-error="$LOG/mariadb.err" --innodb-use-native-aio=0 --skip-log-bin \
    --innodb-buffer-pool-size=128M
  wait_for 60 "MariaDB answering" mariadb --no-defaults -S "$sock" -u root -e "select 1"
  [ -s "$ETC/dbpass" ] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$ETC/dbpass")
  pass=$(cat "$ETC/dbpass")
  mariadb --no-defaults -S "$sock" -u root -e "
    CREATE OR REPLACE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
    CREATE OR REPLACE USER 'slurm'@'localhost' IDENTIFIED BY '$pass';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  (umask 077; cat > "$ETC/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$RUN/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((PORT + 2))
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$pass
StorageLoc=slurm_acct_db
EOF
  )
  start_daemon slurmdbd slurmdbd -D   # reads slurmdbd.conf next to $SLURM_CONF
  wait_for 60 "slurmdbd answering" sacctmgr -n list cluster
}

cmd_start() {
  if [ -f "$PIDS" ]; then
    local up=0 down=0 name pid
    while read -r name pid; do if ours "$name" "$pid"; then up=$((up + 1)); else down=$((down + 1)); fi; done < "$PIDS"
    if [ "$up" -gt 0 ] && [ "$down" = 0 ] && SLURM_CONF=$ETC/slurm.conf timeout 10 sinfo -h >/dev/null 2>&1; then
      say "already running (started by this script; PIDs in $PIDS)"; return 0
    fi
    [ "$up" = 0 ] || die "some daemons of $PIDS run, some not: run '$0 stop' first"
    rm -f "$PIDS"
  fi
  if command -v sinfo >/dev/null 2>&1 && timeout 10 sinfo -h >/dev/null 2>&1; then
    say "a SLURM cluster already answers (sinfo): using it, starting nothing"; return 0
  fi
  [ "$(id -u)" = 0 ] || die "starting a SLURM cluster needs root (and apt-get to install it)"
  local p
  for p in "$PORT" $((PORT + 1)) $((PORT + 2)) "$DB_PORT"; do
    in_use "$p" && die "port $p is in use (set FUSIONLAB_SLURM_PORT / FUSIONLAB_SLURM_DB_PORT)"
  done
  mkdir -p "$BASE"
  install_packages
  mkdir -p "$ETC" "$RUN" "$LOG" "$STATE/ctld" "$STATE/d"
  chmod 0755 "$BASE" "$ETC" "$RUN" "$LOG" "$STATE"
  local host; host=$(hostname -s)
  write_config "$host"
  [ -s "$ETC/munge.key" ] || dd if=/dev/urandom of="$ETC/munge.key" bs=1 count=1024 status=none
  chmod 0400 "$ETC/munge.key"
  # no cluster answered sinfo above: a symlink there points at a stopped cluster's
  # configuration (ours or another script's) and is taken over; a real file is a system
  # installation's and is left alone
  if [ -e /etc/slurm/slurm.conf ] && [ ! -L /etc/slurm/slurm.conf ]; then
    say "warning: /etc/slurm/slurm.conf is not ours: export SLURM_CONF=$ETC/slurm.conf"
  else
    mkdir -p /etc/slurm; ln -sfn "$ETC/slurm.conf" /etc/slurm/slurm.conf
  fi
  export SLURM_CONF=$ETC/slurm.conf
  rm -f "$RUN/munge.socket" "$RUN/munge.socket.lock"
  start_daemon munged munged -F --force --key-file="$ETC/munge.key" --socket="$RUN/munge.socket" \
    --log-file="$LOG/munged.log" --pid-file="$RUN/munged.pid" --seed-file="$STATE/munged.seed"
  wait_for 10 "munge answering" bash -c "munge -n -S '$RUN/munge.socket' | unmunge -S '$RUN/munge.socket'"
  start_db
  start_daemon slurmctld slurmctld -D -f "$ETC/slurm.conf"
  start_daemon slurmd slurmd -D -f "$ETC/slurm.conf"
  local state="" end=$(( $(date +%s) + WAIT_S ))
  while [ "$(date +%s)" -lt "$end" ]; do
    state=$(timeout 10 sinfo -h -n "$host" -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    sleep 0.5
  done
  [ "$state" = idle ] || die "node $host is '$state', not idle, after ${WAIT_S}s (logs: $LOG)"
  timeout "$WAIT_S" srun -N1 -n1 -t 1 -J slurm_local_check hostname >/dev/null \
    || die "srun hostname failed (logs: $LOG)"
  say "ready: sinfo, sbatch and fusionlab --launcher slurm work; '$0 stop' stops it"
}

cmd_stop() {
  [ -f "$PIDS" ] || { echo "slurm_local: nothing started by this script ($PIDS absent)" >&2; return 0; }
  export SLURM_CONF=$ETC/slurm.conf
  local ctld jobs name pid rc=0
  ctld=$(pid_of slurmctld)
  if [ -n "$ctld" ] && ours slurmctld "$ctld"; then  # no job step outlives slurmd
    jobs=$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ' || true)
    if [ -n "${jobs// }" ]; then
      echo "slurm_local: cancelling jobs $jobs" >&2
      # shellcheck disable=SC2086
      timeout 10 scancel $jobs 2>/dev/null || true
      for _ in $(seq $((GRACE_S * 2))); do
        [ -z "$(timeout 10 squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.5
      done
    fi
  fi
  for name in slurmd slurmctld slurmdbd mariadbd munged; do
    pid=$(pid_of "$name")
    [ -n "$pid" ] || continue
    ours "$name" "$pid" || { echo "slurm_local: $name (pid $pid) was not running" >&2; continue; }
    kill -TERM "$pid"
    for _ in $(seq $((GRACE_S * 10))); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then kill -KILL "$pid"; rc=1; fi
    echo "slurm_local: stopped $name (pid $pid)" >&2
  done
  rm -f "$PIDS"
  [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$ETC/slurm.conf" ] && rm -f /etc/slurm/slurm.conf
  return $rc
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
