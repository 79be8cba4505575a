#!/usr/bin/env bash
# One device call for a session's GPU checks and figures, after ../shared/gpu/stage here (the stage
# packs dist/ and the addon: build first, then stage, or the machine runs the previous build):
#   device run (carry .gpu):  bash bench/gpu-check.sh [--no-kernels]
# The CPU/GPU agreement suite first (stop and fix if it fails), then the memory plan on the GPU and
# the benchmark against PyTorch (batch 256, then the CIFAR net at batch 1000). Everything lands in $OUT
# (logs, JSON) packed as one archive, check.tar.gz (a device call returns at most 8 files: session 6
# lost the suite's and the memory plan's logs to that limit); the card and date in card.txt.
# The results runs (bench/gpu_train.ts) take minutes each: run them in calls of their own.
set -uo pipefail
dest=${OUT:-/tmp/ternlab-gpu-check}
mkdir -p "$dest"
out=$(mktemp -d)
trap 'tar -czf "$dest/check.tar.gz" -C "$out" . && echo "archive: check.tar.gz"' EXIT
source .gpu/env.sh >/dev/null
(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u) | tee "$out/card.txt"
npm run test:gpu > "$out/test-gpu.log" 2>&1
rc=$?
grep -E "passing|failing|pending" "$out/test-gpu.log"
if [ $rc -ne 0 ]; then
  grep -A12 -E "^  [0-9]+\) " "$out/test-gpu.log" | head -60
  exit $rc
fi
node dist/bench/memory.js --backend cuda 2>&1 | tee "$out/memory.log"
node dist/bench/gpu.js --steps 20 --profile "$@" --out "$out/bench.json" > "$out/bench.log" 2>&1
sed -n '/^ternlab bench/,$p' "$out/bench.log" | head -70
# The CIFAR net at the results runs' batch (1000), ternlab against PyTorch on the same card: at batch
# 256 PyTorch's figure is partly its per-step host cost (native/cuda/NOTES.md, session 5).
node dist/bench/gpu.js --batch 1000 --models cifar --no-kernels --no-own --steps 10 --out "$out/bench-b1000.json" > "$out/bench-b1000.log" 2>&1
sed -n '/^training/,/backend:/p' "$out/bench-b1000.log" | head -8
