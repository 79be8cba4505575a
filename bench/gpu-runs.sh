#!/usr/bin/env bash
# Several results runs at once, one per GPU of the machine, in one device call (after
# ../shared/gpu/stage here; device run with carry .gpu, kind nvidia-h200-x2 or -x4: a multi-GPU
# machine costs the same device time per call as one card):
#   bash bench/gpu-runs.sh "node dist/bench/gpu_train.js cifar ... --out @/a.json" "python3 bench/pytorch_gxnor_train.py ... --out @/b.json" …
# Command k runs on GPU k mod (number of GPUs), in the background; '@' in a command is its output
# folder. Each command's log is @/log. With --first "CMD", CMD runs before the others on GPU 0 (e.g.
# "npm run test:gpu"), and the runs start only if it passes. Everything lands in one archive,
# $OUT/runs.tar.gz (a device call returns at most 8 files: one archive loses none), plus the cards
# and the last lines of every log on stdout.
set -uo pipefail
out=${OUT:-/tmp/ternlab-runs}
mkdir -p "$out"
work=$(mktemp -d)
source .gpu/env.sh >/dev/null 2>&1 || true
first=""
if [ "${1:-}" = "--first" ]; then first=$2; shift 2; fi
gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
[ "$gpus" -ge 1 ] || gpus=1
(nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader; date -u; cat .gpu/commit.txt 2>/dev/null) > "$work/card.txt"
cat "$work/card.txt"
finish() {
  tar -czf "$out/runs.tar.gz" -C "$work" .
  echo "archive: runs.tar.gz ($(du -h "$out/runs.tar.gz" | cut -f1))"
}
if [ -n "$first" ]; then
  mkdir -p "$work/first"
  CUDA_VISIBLE_DEVICES=0 bash -c "$first" > "$work/first/log" 2>&1
  rc=$?
  grep -E "passing|failing|pending" "$work/first/log" || tail -5 "$work/first/log"
  if [ $rc -ne 0 ]; then echo "first command failed (rc $rc): no runs"; finish; exit $rc; fi
fi
k=0
for cmd in "$@"; do
  dir="$work/run$k"
  mkdir -p "$dir"
  echo "run$k on GPU $((k % gpus)): $cmd" | tee "$dir/command"
  (CUDA_VISIBLE_DEVICES=$((k % gpus)) bash -c "${cmd//@/$dir}" > "$dir/log" 2>&1; echo "rc $?" >> "$dir/log") &
  k=$((k + 1))
done
wait
for d in "$work"/run*; do echo "== $(basename "$d"): $(tail -n 2 "$d/log" | cut -c1-400)"; done
finish
