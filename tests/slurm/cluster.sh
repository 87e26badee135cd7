#!/bin/sh
# tests/slurm/cluster.sh — a throwaway single-node Slurm cluster on this host, everything in DIR:
# munged with a key made for it, slurmctld and slurmd as root, their configuration, state, spool,
# logs and pid files. For tests/slurm/run.sh, and by hand:
#
#   tests/slurm/cluster.sh install        installs Debian's slurmctld, slurmd, slurm-client and munge
#                                         when a program is missing (as root, apt-get)
#   tests/slurm/cluster.sh start DIR      starts the daemons, waits for the node to be idle and
#                                         prints the line to use it: export SLURM_CONF=DIR/slurm.conf
#   tests/slurm/cluster.sh stop DIR       cancels every job, stops the daemons it started (by the
#                                         pids in DIR) and any job step left behind
#
# install and start exit 0 on success; when they cannot (not root, no apt-get, no network, a
# daemon that does not come up, a job that cannot run) they exit 77 with one line saying why on
# standard error. Nothing outside DIR is touched but the packages installed, and, during
# apt-get install only, /usr/sbin/policy-rc.d when it is absent: Debian's maintainer scripts would
# otherwise start system-wide munge and Slurm daemons, which nothing would stop.
#
# Configuration for a container: proctrack/linuxproc and task/none (no cgroups), no accounting, no
# job completion log, select/cons_tres by core and memory so that tasks of one CPU share the node;
# the node declares CPUS cores (default 2: tests share a small machine) whatever the hardware has
# (SlurmdParameters=config_overrides), and its memory as slurmd -C measures it; the ports are
# free ones picked at random.
set -eu

need="slurmctld slurmd sbatch squeue sinfo scancel munged munge"
pkgs="slurmctld slurmd slurm-client munge"

skip() { echo "$*" >&2; exit 77; }

install() {
    missing=''
    for p in $need; do command -v "$p" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$p" >/dev/null 2>&1 || missing="$missing $p"; done
    [ -n "$missing" ] || return 0
    [ "$(id -u)" = 0 ] || skip "missing$missing; not root, so not installing (as root: apt-get install $pkgs)"
    command -v apt-get >/dev/null 2>&1 || skip "missing$missing and no apt-get"
    log=${TMPDIR:-/tmp}/mode-slurm-apt.$$.log
    made_policy=''
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\n# tests/slurm/cluster.sh: no service starts while it installs Slurm\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    set +e
    DEBIAN_FRONTEND=noninteractive apt-get update -q >"$log" 2>&1 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs >>"$log" 2>&1
    rc=$?
    set -e
    [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
    if [ $rc -ne 0 ]; then
        why=$(grep -E '^(E|W): ' "$log" | tail -n 1)
        rm -f "$log"
        skip "missing$missing; apt-get install $pkgs failed: ${why:-exit $rc}"
    fi
    rm -f "$log"
    echo "installed $pkgs" >&2
}

# whether a TCP port is listened on (/proc/net/tcp and tcp6: local address field 2, state 0A)
listening() {
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
        awk -v h="$(printf ':%04X' "$1")" '$4 == "0A" && substr($2, length($2) - 4) == h { f = 1 } END { exit !f }'
}

# a port p with p and p+1 free (slurmctld's and slurmd's), at random in 20000-39999
free_port() {
    for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
        p=$((20000 + $(od -An -N2 -tu2 /dev/urandom) % 20000))
        if ! listening "$p" && ! listening $((p + 1)); then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# pids of the slurmstepd processes (job steps), from /proc: procps may be absent
stepds() {
    for c in /proc/[0-9]*/comm; do
        [ "$(cat "$c" 2>/dev/null)" = slurmstepd ] || continue
        c=${c#/proc/}
        echo "${c%/comm}"
    done
}

# waits up to $1 seconds for the command in the other arguments to succeed
wait_for() {
    t=$1
    shift
    while [ "$t" -gt 0 ]; do
        "$@" >/dev/null 2>&1 && return 0
        sleep 1
        t=$((t - 1))
    done
    return 1
}

node_idle() { [ "$(sinfo -h -o %t 2>/dev/null)" = idle ]; }

last_error() { # the last error line of the logs given, for a skip message
    cat "$@" 2>/dev/null | grep -iE 'error|fatal' | grep -v -e 'mpi/pmix' -e 'MPI: Cannot create context' | tail -n 1
}

start() {
    d=$1
    # a start that fails stops what it started
    fail() { stop "$d"; skip "$@"; }
    PATH=$PATH:/usr/sbin:/sbin
    mkdir -p "$d"
    d=$(cd "$d" && pwd)
    mkdir -p "$d/munge" "$d/state" "$d/spool" "$d/log"
    # munged checks its files: the key readable by its owner only, the socket's directory
    # searchable by everyone
    chmod 755 "$d" "$d/munge"
    dd if=/dev/urandom of="$d/munge/munge.key" bs=1024 count=1 2>/dev/null
    chmod 400 "$d/munge/munge.key"
    stepds >"$d/stepd.before"
    munged -F --key-file="$d/munge/munge.key" --socket="$d/munge/socket" --pid-file="$d/munge/munged.pid" \
        --seed-file="$d/munge/seed" --log-file="$d/log/munged.log" >"$d/log/munged.out" 2>&1 &
    echo $! >"$d/munged.pid"
    wait_for 10 munge -S "$d/munge/socket" -n || fail "munged does not start: $(last_error "$d/log/munged.out" "$d/log/munged.log")"

    port=$(free_port) || fail "no free TCP port found"
    host=$(hostname -s 2>/dev/null || hostname)
    mem=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    cat >"$d/slurm.conf" <<EOF
# written by tests/slurm/cluster.sh: a single-node cluster in $d
ClusterName=modetest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$d/munge/socket
CredType=cred/munge
StateSaveLocation=$d/state
SlurmdSpoolDir=$d/spool
SlurmctldPidFile=$d/slurmctld.daemon.pid
SlurmdPidFile=$d/slurmd.daemon.pid
SlurmctldLogFile=$d/log/slurmctld.log
SlurmdLogFile=$d/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmdParameters=config_overrides
NodeName=$host NodeAddr=127.0.0.1 CPUs=${CPUS:-2} RealMemory=${mem:-2048} State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    SLURM_CONF=$d/slurm.conf
    export SLURM_CONF
    slurmctld -D -f "$SLURM_CONF" >"$d/log/slurmctld.out" 2>&1 &
    echo $! >"$d/slurmctld.pid"
    slurmd -D -f "$SLURM_CONF" >"$d/log/slurmd.out" 2>&1 &
    echo $! >"$d/slurmd.pid"
    wait_for 60 node_idle ||
        fail "the node does not come up: $(last_error "$d/log/slurmctld.out" "$d/log/slurmd.out" "$d/log/slurmctld.log" "$d/log/slurmd.log")"
    # a job must run, not only be accepted
    if ! timeout 120 sbatch --wait --quiet --output="$d/log/first-job.out" --chdir="$d" --wrap 'echo ran' >/dev/null 2>&1 ||
        [ "$(cat "$d/log/first-job.out" 2>/dev/null)" != ran ]; then
        fail "a job cannot run: $(last_error "$d/log/first-job.out" "$d/log/slurmd.out" "$d/log/slurmd.log")"
    fi
    echo "export SLURM_CONF=$SLURM_CONF"
}

# kill the process of pid file $1 and wait for it (then SIGKILL, after 15 s)
stop_pid() {
    [ -s "$1" ] || return 0
    p=$(cat "$1")
    if kill "$p" 2>/dev/null; then
        t=15
        while kill -0 "$p" 2>/dev/null && [ $t -gt 0 ]; do sleep 1; t=$((t - 1)); done
        kill -9 "$p" 2>/dev/null || true
    fi
    rm -f "$1"
}

stop() {
    d=$(cd "$1" && pwd)
    PATH=$PATH:/usr/sbin:/sbin
    if [ -s "$d/slurmctld.pid" ] && [ -s "$d/slurm.conf" ]; then
        SLURM_CONF=$d/slurm.conf
        export SLURM_CONF
        scancel --user="$(id -un)" >/dev/null 2>&1 || true
        wait_for 30 sh -c '[ -z "$(squeue -h 2>/dev/null)" ]' || true
    fi
    stop_pid "$d/slurmd.pid"
    stop_pid "$d/slurmctld.pid"
    stop_pid "$d/munged.pid"
    # job steps of ours still there: slurmstepd processes that were not there before start
    for p in $(stepds); do
        grep -qx "$p" "$d/stepd.before" 2>/dev/null || kill -9 "$p" 2>/dev/null || true
    done
}

case ${1:-} in
install) install ;;
start) [ $# -eq 2 ] || { echo "usage: $0 start DIR" >&2; exit 64; }; install; start "$2" ;;
stop) [ $# -eq 2 ] || { echo "usage: $0 stop DIR" >&2; exit 64; }; stop "$2" ;;
*) echo "usage: $0 install | start DIR | stop DIR" >&2; exit 64 ;;
esac
