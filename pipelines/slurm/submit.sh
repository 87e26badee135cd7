#!/bin/sh
# pipelines/slurm/submit.sh — runs the tasks of one stage as a Slurm job array and waits for it;
# a task that fails is resubmitted alone. pipelines/mode.mk calls it when SCHED=slurm.
#
#   submit.sh -d DIR -n NAME [-p PARTITION] [-c CPUS] [-m MEM] [-T TIME] [-r RETRIES] [-x FLAGS] TASKS
#   submit.sh -d DIR -n NAME [...] -1 OUTPUT -- COMMAND [ARG...]
#
# TASKS holds one task a line, "LABEL<TAB>OUTPUT<TAB>COMMAND" (pipelines/slurm/task.sbatch runs
# it); the second form is one task, labelled NAME, written to DIR/NAME.tasks. A task is done when
# its OUTPUT exists (the filters write under a temporary name and rename when complete), so:
#   1. the tasks whose OUTPUT is missing are submitted as one array, sbatch --wait --array=i,j,...,
#      with the resources given (-c cpus per task, -m memory per task, -T time limit, -p partition;
#      -x more sbatch options, split at blanks, e.g. "--account=a --qos=q");
#   2. when sbatch returns, the tasks whose OUTPUT is still missing are submitted again, alone —
#      an array of just their indices — up to RETRIES times (default 1);
#   3. exit 0 when every OUTPUT exists, else 1 naming the failed tasks and their logs.
# A second run after an interruption submits only what is missing. Logs: DIR/logs/LABEL.log (one
# per task, every attempt appended, pipelines/slurm/task.sbatch), and what Slurm itself prints
# before the job script starts in DIR/logs/NAME.JOBID_INDEX.slurm (removed by the task when empty).
# SIGINT, SIGTERM and SIGHUP cancel the array being waited for (scancel) before exiting.
#
# Why sbatch --wait from make rather than a chain of --dependency=afterok jobs: an afterok
# dependency on an array is never satisfied once one task has failed, and a task submitted again
# is a new job that the dependency does not know; the stages' dependencies are the files in
# pipelines/mode.mk, which Slurm's state cannot contradict. The price: make runs (on a login node,
# in tmux or screen, or in a small job of its own) while the stages run.
set -eu
usage() {
    echo "usage: $0 -d DIR -n NAME [-p PARTITION] [-c CPUS] [-m MEM] [-T TIME] [-r RETRIES] [-x FLAGS] TASKS" >&2
    echo "       $0 -d DIR -n NAME [...] -1 OUTPUT -- COMMAND [ARG...]" >&2
    exit 64
}
here=$(cd "$(dirname "$0")" && pwd)
dir='' name='' partition='' cpus=1 mem='' time='' retries=1 extra='' one=''
while getopts d:n:p:c:m:T:r:x:1: opt; do
    case $opt in
    d) dir=$OPTARG ;;
    n) name=$OPTARG ;;
    p) partition=$OPTARG ;;
    c) cpus=$OPTARG ;;
    m) mem=$OPTARG ;;
    T) time=$OPTARG ;;
    r) retries=$OPTARG ;;
    x) extra=$OPTARG ;;
    1) one=$OPTARG ;;
    *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ -n "$dir" ] && [ -n "$name" ] || usage
case $retries in '' | *[!0-9]*) echo "$0: -r: '$retries' is not a count" >&2; exit 64 ;; esac
command -v sbatch >/dev/null 2>&1 || { echo "$0: sbatch not found: SCHED=slurm needs Slurm's client commands" >&2; exit 69; }
mkdir -p "$dir/logs"
tab=$(printf '\t')

if [ -n "$one" ]; then
    [ $# -ge 1 ] || usage
    tasks=$dir/$name.tasks
    # the command, each argument quoted for sh -c
    cmd=''
    for a in "$@"; do
        cmd="$cmd '$(printf '%s' "$a" | sed "s/'/'\\\\''/g")'"
    done
    printf '%s\t%s\t%s\n' "$name" "$one" "${cmd# }" >"$tasks"
else
    [ $# -eq 1 ] || usage
    tasks=$1
fi
[ -s "$tasks" ] || { echo "$0: $tasks: no task" >&2; exit 65; }
tasks=$(cd "$(dirname "$tasks")" && pwd)/$(basename "$tasks")
logs=$(cd "$dir/logs" && pwd)

# the 0-based indices of the tasks whose output is missing, comma-separated; labels in $labels
missing() {
    idx='' labels='' i=0
    while IFS="$tab" read -r label output cmd; do
        if [ ! -e "$output" ]; then
            idx="$idx${idx:+,}$i"
            labels="$labels $label"
        fi
        i=$((i + 1))
    done <"$tasks"
}

job=''
cancel() {
    [ -z "$job" ] || scancel "$job" 2>/dev/null || true
    echo "$0: $name: interrupted; array $job cancelled" >&2
    exit 130
}
trap cancel INT TERM HUP

n=$(wc -l <"$tasks")
attempt=0
while :; do
    missing
    [ -n "$idx" ] || exit 0
    if [ $attempt -gt "$retries" ]; then
        echo "$0: $name: failed after $retries resubmission(s):$labels; see" >&2
        for l in $labels; do echo "  $logs/$l.log" >&2; done
        exit 1
    fi
    if [ $attempt -eq 0 ]; then
        echo "$0: $name: submitting $(echo "$labels" | wc -w) of $n task(s)" >&2
    else
        echo "$0: $name: resubmitting the failed task(s) alone:$labels (array indices $idx)" >&2
    fi
    out=$dir/.$name.sbatch.$$
    # for task.sbatch, through the environment (--export=ALL): a list in --export would be cut at
    # commas in the paths
    MODE_TASKS=$tasks MODE_LOGS=$logs MODE_NAME=$name
    export MODE_TASKS MODE_LOGS MODE_NAME
    set +e
    # --wait: return when every task of the array has ended (status: the highest of the tasks');
    # --parsable: the job id alone, printed as soon as the array is submitted
    # shellcheck disable=SC2086 # extra is split at blanks on purpose
    sbatch --wait --parsable --array="$idx" --job-name="mode-$name" --chdir="$PWD" \
        --output="$logs/$name.%A_%a.slurm" --cpus-per-task="$cpus" \
        ${mem:+--mem="$mem"} ${time:+--time="$time"} ${partition:+--partition="$partition"} $extra \
        --export=ALL "$here/task.sbatch" >"$out" &
    pid=$!
    # the job id, for cancel(), once sbatch has printed it
    while [ -z "$job" ] && kill -0 $pid 2>/dev/null; do
        job=$(cut -d';' -f1 "$out" 2>/dev/null)
        [ -n "$job" ] || sleep 1
    done
    wait $pid
    rc=$?
    set -e
    [ -n "$job" ] || job=$(cut -d';' -f1 "$out" 2>/dev/null)
    rm -f "$out"
    if [ -z "$job" ]; then
        echo "$0: $name: sbatch could not submit the array (exit $rc)" >&2
        exit 1
    fi
    echo "$0: $name: array $job ended (sbatch exit $rc)" >&2
    job=''
    attempt=$((attempt + 1))
done
