#!/usr/bin/env bash
# ncu over a few training steps of one model, on the GPU machine after ../shared/gpu/stage here:
#   device run (carry .gpu):  bash bench/gpu-ncu.sh [resnet|cifar] [kernel regex] [skip] [count]
# Profiles `count` launches of the kernels matching the regex (default: the elementwise ones) after
# `skip` launches (past the warm-up steps), with a few metrics (time, DRAM bytes and % of peak,
# warps active, registers), then sums them by kernel (bench/ncu_summary.py). Outputs in $OUT:
# ncu-MODEL.csv, ncu-MODEL.err, summary-MODEL.txt. Session 7's run: bench/results/gpu-2026-11-28-session7/6-ncu-resnet.
set -uo pipefail
model=${1:-resnet}
regex=${2:-'k_(bn|column|int_moments|act|add|accumulate|bf16|f32_to|i8_to|nonzero|active|maxpool|dst|adam|normalize)'}
skip=${3:-700}
count=${4:-350}
out=${OUT:-/tmp/ternlab-ncu}
mkdir -p "$out"
source .gpu/env.sh >/dev/null
(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u) | tee "$out/card.txt"
ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
timeout 500 "$ncu" --kill yes --csv --page raw -k "regex:$regex" --launch-skip "$skip" --launch-count "$count" \
  --metrics gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes.sum,launch__grid_size,launch__block_size,launch__registers_per_thread,sm__warps_active.avg.pct_of_peak_sustained_active \
  node dist/bench/gpu.js --models "$model" --steps 3 --no-torch --no-kernels --no-own > "$out/ncu-$model.csv" 2> "$out/ncu-$model.err"
python3 bench/ncu_summary.py "$out/ncu-$model.csv" "$model, batch 256, $(head -1 "$out/card.txt")" | tee "$out/summary-$model.txt"
