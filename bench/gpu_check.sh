#!/usr/bin/env bash
# The GPU check: trains FACE-net on CUDA against the CPU, faiss GPU vs CPU, the tiny LLM decoders
# in bf16, the FLAN-T5 XL shape's caption time and memory (Table 6), one NCCL process.
# At most 8 minutes (a hard timeout; sections that would start after --budget-s are skipped).
# On a machine without CUDA every GPU section is skipped and the JSON says so.
#   bash bench/gpu_check.sh [results/bench/gpu_check.json]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-results/bench/gpu_check.json}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec timeout --signal=TERM --kill-after=20 480 python bench/gpu_check.py --out "$out" --budget-s 420 "${@:2}"
