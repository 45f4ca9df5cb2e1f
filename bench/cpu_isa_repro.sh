#!/usr/bin/env bash
# How much does "another CPU" change a trained demo? Re-train and re-score the demo from its
# cached features, retrieval and triplets with PyTorch, oneDNN and MKL limited to AVX2 kernels
# (what a machine without AVX-512 runs), and compare with the run on this CPU.
#
#   bash bench/cpu_isa_repro.sh [results_root=results] [dataset=demo] [isa=avx2]
#
# Everything up to the features is hard-linked from <results_root>/<dataset>; the copy lives in
# <results_root>_<isa>/<dataset>. Prints the first training step whose losses differ, the number
# of test captions that differ and both runs' metrics (x100).
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:-results}
ds=${2:-demo}
isa=${3:-avx2}
copy="${root}_${isa}"
[ -f "$root/$ds/metrics.json" ] || { echo "no $root/$ds/metrics.json: run the workflow first" >&2; exit 2; }
mkdir -p "$copy"
rm -rf "${copy:?}/$ds"
# Upstream artifacts (data, CLIP, features, retrieval, triplets, lexicon, baselines) as hard links;
# the run's own outputs are left out so that they are rebuilt here.
cp -al "$root/$ds" "$copy/$ds"
# logs/ and benchmarks/ go too: a rule writing into a hard-linked log would overwrite the original's.
(cd "$copy/$ds" && rm -rf train predictions.json metrics.json metrics.md compare_retrieval.* seeds ablations browse explain \
    logs benchmarks)
isa_upper=$(echo "$isa" | tr '[:lower:]' '[:upper:]')
export ATEN_CPU_CAPABILITY="$isa" ONEDNN_MAX_CPU_ISA="$isa_upper" MKL_ENABLE_INSTRUCTIONS="$isa_upper"
snakemake --cores 2 --config results_root="$copy" --rerun-triggers mtime -- "$copy/$ds/metrics.json" \
    > "$copy/$ds.snakemake.log" 2>&1
python - "$root/$ds" "$copy/$ds" <<'EOF'
import csv, json, sys
a, b = sys.argv[1:3]
def rows(p):
    with open(f"{p}/train/log.csv") as f:
        return list(csv.DictReader(f))
ra, rb = rows(a), rows(b)
first = next((x["step"] for x, y in zip(ra, rb) if x != y), None)
print(f"training log: {len(ra)} vs {len(rb)} rows; first differing row at step {first}")
pa, pb = (json.load(open(f"{p}/predictions.json")) for p in (a, b))
print(f"test captions that differ: {sum(pa[v] != pb[v] for v in pa)} of {len(pa)}")
ma, mb = (json.load(open(f"{p}/metrics.json")) for p in (a, b))
for m in ("Acc_sw", "Acc_c", "Bleu_4", "METEOR", "CIDEr", "CFS"):
    print(f"  {m:7s} this CPU {100 * ma[m]:5.1f}   {sys.argv[2]} {100 * mb[m]:5.1f}   diff {100 * (mb[m] - ma[m]):+5.1f}")
EOF
