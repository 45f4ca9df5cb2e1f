#!/usr/bin/env bash
# How much does "another CPU" change the demo? Re-run it with PyTorch, oneDNN and MKL limited to
# AVX2 kernels (what a machine without AVX-512 runs) and compare it, stage by stage, with the run
# on this CPU (bench/compare_runs.py).
#
#   bash bench/cpu_isa_repro.sh [results_root=results] [dataset=demo] [isa=avx2] [from=all]
#
# from=all rebuilds every stage (generated videos, CLIP pretraining, features, retrieval,
# triplets, training, scoring: as long as `make demo`); from=train hard-links everything up to
# the features, retrieval and triplets from <results_root>/<dataset> and rebuilds only the
# training and scoring. The copy lives in <results_root>_<isa>/<dataset>; the report is printed
# and kept in <results_root>_<isa>/<dataset>.compare.txt, ending with FACE-net − retrieval (Acc_sw,
# CIDEr) and its 95% intervals on the other kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:-results}
ds=${2:-demo}
isa=${3:-avx2}
from=${4:-all}
copy="${root}_${isa}"
[ -f "$root/$ds/metrics.json" ] || { echo "no $root/$ds/metrics.json: run the workflow first" >&2; exit 2; }
mkdir -p "$copy"
rm -rf "${copy:?}/$ds"
case "$from" in
all) ;;
train)
    # Upstream artifacts as hard links; the run's own outputs, logs and benchmarks are left out
    # (a rule writing into a hard-linked log would overwrite the original's).
    cp -al "$root/$ds" "$copy/$ds"
    (cd "$copy/$ds" && rm -rf train predictions.json metrics.json metrics.md compare_retrieval.* seeds ablations \
        browse explain logs benchmarks)
    ;;
*) echo "from must be all or train, not '$from'" >&2; exit 2 ;;
esac
isa_upper=$(echo "$isa" | tr '[:lower:]' '[:upper:]')
export ATEN_CPU_CAPABILITY="$isa" ONEDNN_MAX_CPU_ISA="$isa_upper" MKL_ENABLE_INSTRUCTIONS="$isa_upper"
echo "re-running $root/$ds under $isa kernels into $copy/$ds (log: $copy/$ds.snakemake.log)"
snakemake --cores 2 --config results_root="$copy" --rerun-triggers mtime -- "$copy/$ds/metrics.json" \
    "$copy/$ds/compare_retrieval.md" \
    > "$copy/$ds.snakemake.log" 2>&1
python bench/compare_runs.py "$root/$ds" "$copy/$ds" | tee "$copy/$ds.compare.txt"
# FACE-net - retrieval on the other kernels, with its intervals
grep -E '^\| (Acc_sw|CIDEr) ' "$copy/$ds/compare_retrieval.md" | tee -a "$copy/$ds.compare.txt"
