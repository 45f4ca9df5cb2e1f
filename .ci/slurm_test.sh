#!/usr/bin/env bash
# CI: a real one-node SLURM cluster on this machine, then the reduced demo of
# tests/test_workflow.py (tests/data/demo_small.yaml) run through it: every rule is submitted
# with sbatch by snakemake-executor-plugin-slurm using the project's profile
# (workflow/profiles/slurm) plus the bare-cluster overrides in .ci/slurm-profile.
#
# munged, slurmctld and slurmd are started here directly (no systemd), with their config,
# key, sockets, state and logs in a private temporary folder; they are stopped by PID on exit,
# whatever happens. Needs root (apt-get; the daemons run as root). Usage: .ci/slurm_test.sh
# (FACENET_SLURM_KEEP=1 keeps the folder of a successful run too; a failed run's is always kept).
set -euo pipefail
cd "$(dirname "$0")/.."
PROJECT=$(pwd)
VENV=${VENV:-$PROJECT/.venv}
T0=$(date +%s)
say() { echo "[slurm-test $(( $(date +%s) - T0 ))s] $*"; }

# ------------------------------------------------------------------ packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi
[ -x "$VENV/bin/snakemake" ] || { echo "slurm_test: $VENV/bin/snakemake not found: run \`make setup\` first" >&2; exit 2; }
if ! "$VENV/bin/python" -c "import snakemake_executor_plugin_slurm" 2>/dev/null; then
    say "installing snakemake-executor-plugin-slurm (the project's [slurm] extra)"
    "$VENV/bin/pip" install --quiet snakemake-executor-plugin-slurm
fi

# ------------------------------------------------------------------ private cluster files
# Inside a job the plugin runs the rule with `srun` after dropping SLURM_* variables (SLURM_CONF
# too), so the configuration must be where SLURM looks by default: /etc/slurm/slurm.conf, made
# a link to our file for the run. A real one there means another cluster: leave it alone.
ETC_CONF=/etc/slurm/slurm.conf
if [ -e "$ETC_CONF" ] || [ -L "$ETC_CONF" ]; then
    if [ -L "$ETC_CONF" ] && [[ "$(readlink "$ETC_CONF")" == /tmp/facenet-slurm.*/slurm.conf ]] && [ ! -e "$ETC_CONF" ]; then
        rm -f "$ETC_CONF"    # left by a run that was killed (its folder is gone)
    else
        echo "slurm_test: $ETC_CONF exists (another cluster, or a run of this script in progress); not touching it" >&2
        exit 2
    fi
fi
WORK=$(mktemp -d /tmp/facenet-slurm.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$WORK/munge" "$WORK/ctld" "$WORK/spool" "$WORK/log" /etc/slurm
export SLURM_CONF=$WORK/slurm.conf
# Stop what this script started, by PID, however it ends; keep the logs of a failure.
PIDS=()
SNAKEMAKE_PID=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$SNAKEMAKE_PID" ] && kill -0 "$SNAKEMAKE_PID" 2>/dev/null; then
        kill -INT "$SNAKEMAKE_PID" 2>/dev/null || true   # Snakemake cancels its SLURM jobs on SIGINT
        for _ in $(seq 60); do kill -0 "$SNAKEMAKE_PID" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$SNAKEMAKE_PID" 2>/dev/null || true
        wait "$SNAKEMAKE_PID" 2>/dev/null || true
    fi
    if [ ${#PIDS[@]} -gt 0 ]; then
        # Jobs first (a job's processes belong to slurmstepd, not to the daemons).
        if squeue -h -o %i >/dev/null 2>&1; then
            squeue -h -o %i | xargs -r scancel 2>/dev/null || true
            for _ in $(seq 20); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
        fi
        for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[i]}" 2>/dev/null || true; done
        for pid in "${PIDS[@]}"; do
            for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            kill -9 "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        done
        say "daemons stopped (pids ${PIDS[*]})"
    fi
    if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$SLURM_CONF" ]; then rm -f "$ETC_CONF"; fi
    if [ "$rc" -eq 0 ] && [ -z "${FACENET_SLURM_KEEP:-}" ]; then
        rm -rf "$WORK"
    elif [ "$rc" -eq 0 ]; then
        say "kept $WORK (FACENET_SLURM_KEEP is set)"
    else
        echo "slurm_test: FAILED (exit $rc); logs kept in $WORK (log/, slurm_logs/, snakemake.log)" >&2
        tail -n 30 "$WORK"/log/*.log 2>/dev/null >&2 || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

NODE=$(hostname -s)
# The node exactly as slurmd detects it (CPUs, sockets, cores, RealMemory), so the
# configuration never claims more than the machine has.
NODE_HW=$(slurmd -C | head -n1 | sed -e 's/^NodeName=[^ ]* //')
CPUS=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$NODE_HW")
SOCKET=$WORK/munge/munge.socket
cat >"$SLURM_CONF" <<EOF
ClusterName=facenetci
SlurmctldHost=$NODE(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$WORK/ctld
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups, no accounting: what a container or a bare CI machine has
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
NodeName=$NODE NodeAddr=127.0.0.1 $NODE_HW State=UNKNOWN
PartitionName=ci Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
ln -s "$SLURM_CONF" "$ETC_CONF"
dd if=/dev/urandom of="$WORK/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$WORK/munge/munge.key"


# ------------------------------------------------------------------ start
say "starting munged, slurmctld, slurmd (config $SLURM_CONF)"
munged --foreground --force --key-file="$WORK/munge/munge.key" --socket="$SOCKET" \
    --pid-file="$WORK/munge/munged.pid" --log-file="$WORK/log/munged.log" --seed-file="$WORK/munge/munged.seed" \
    >"$WORK/log/munged.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do [ -S "$SOCKET" ] && break; sleep 0.1; done
[ -S "$SOCKET" ] || { echo "slurm_test: munged did not start" >&2; exit 1; }
slurmctld -D -i -f "$SLURM_CONF" >"$WORK/log/slurmctld.out" 2>&1 &
PIDS+=($!)
slurmd -D -f "$SLURM_CONF" -N "$NODE" >"$WORK/log/slurmd.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 120); do
    state=$(sinfo -h -N -n "$NODE" -o %t 2>/dev/null || true)
    [ "$state" = idle ] && break
    sleep 0.5
done
[ "$state" = idle ] || { echo "slurm_test: node $NODE not idle after 60 s (state '${state:-none}')" >&2; exit 1; }
T_UP=$(( $(date +%s) - T0 ))
say "cluster up: $(sinfo -h -N -o '%N %t cpus=%c mem=%m')"

# ------------------------------------------------------------------ the reduced demo, via sbatch
RESULTS=$WORK/results
cat >"$WORK/overlay.yaml" <<EOF
datasets: {demo_small: $PROJECT/tests/data/demo_small.yaml}
results_root: $RESULTS
EOF
TARGETS=("$RESULTS/demo_small/metrics.json" "$RESULTS/demo_small/baselines/retrieval/metrics.json")
say "snakemake --executor slurm: ${TARGETS[*]}"
T1=$(date +%s)
# --export=ALL (the plugin's) hands this PATH to the jobs, so they find the venv's facenet-evc.
# In the background so that a signal to this script is handled at once (bash runs traps only
# between foreground commands), not when the whole run is over.
PATH="$VENV/bin:$PATH" OMP_NUM_THREADS=1 snakemake --executor slurm \
    --profile workflow/profiles/slurm --profile .ci/slurm-profile \
    --slurm-logdir "$WORK/slurm_logs" --slurm-keep-successful-logs --max-threads "$CPUS" \
    --configfile "$WORK/overlay.yaml" -- "${TARGETS[@]}" >"$WORK/snakemake.log" 2>&1 &
SNAKEMAKE_PID=$!
wait "$SNAKEMAKE_PID" || { SNAKEMAKE_PID=; tail -n 60 "$WORK/snakemake.log" >&2; exit 1; }
SNAKEMAKE_PID=
T_RUN=$(( $(date +%s) - T1 ))

# ------------------------------------------------------------------ checks
for t in "${TARGETS[@]}"; do [ -s "$t" ] || { echo "slurm_test: $t missing" >&2; exit 1; }; done
n_jobs=$(sed -n 's/^total *\([0-9]*\)$/\1/p' "$WORK/snakemake.log" | head -n1)
slurm_ids=$(grep -o 'SLURM jobid [0-9]*' "$WORK/snakemake.log" | awk '{print $3}' | sort -n | uniq)
n_sbatch=$(grep -c '_slurm_rpc_submit_batch_job: JobId=' "$WORK/log/slurmctld.log" || true)
n_done=$(grep -c 'WEXITSTATUS 0' "$WORK/log/slurmctld.log" || true)
n_ids=$(wc -w <<<"$slurm_ids")
say "snakemake jobs: ${n_jobs:-?}; SLURM job ids in the snakemake log: $n_ids; sbatch submissions seen by slurmctld: $n_sbatch; exit 0: $n_done"
[ -n "$n_jobs" ] && [ "$n_ids" -eq "$n_jobs" ] && [ "$n_sbatch" -eq "$n_jobs" ] && [ "$n_done" -eq "$n_jobs" ] || {
    echo "slurm_test: expected every one of ${n_jobs:-?} jobs submitted with sbatch and finished with exit 0" >&2; exit 1; }
for id in $slurm_ids; do
    grep -q "JobId=$id .*WEXITSTATUS 0" "$WORK/log/slurmctld.log" || { echo "slurm_test: SLURM job $id did not end with exit 0" >&2; exit 1; }
done
"$VENV/bin/python" - "$RESULTS/demo_small" <<'EOF'
import json, sys
from pathlib import Path
base = Path(sys.argv[1])
m = json.loads((base / "baselines" / "retrieval" / "metrics.json").read_text())
refs = json.loads((base / "references" / "test.json").read_text())
preds = json.loads((base / "predictions.json").read_text())
fm = json.loads((base / "metrics.json").read_text())
assert m["n_videos"] == len(refs) and set(preds) == set(refs), "metrics/predictions do not cover the test videos"
assert fm["n_videos"] == len(refs), "FACE-net metrics do not cover the test videos"
print("retrieval-baseline metrics:", {k: v if v is None else round(v, 4) for k, v in m.items() if k in ("Bleu_4", "CIDEr", "BFS", "CFS")},
      "| FACE-net:", {k: v if v is None else round(v, 4) for k, v in fm.items() if k in ("Bleu_4", "CIDEr", "BFS", "CFS")})
EOF
say "OK: cluster up in ${T_UP}s, reduced demo under SLURM in ${T_RUN}s ($n_jobs sbatch jobs)"
