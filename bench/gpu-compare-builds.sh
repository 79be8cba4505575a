#!/usr/bin/env bash
# Same-run speed comparison of two builds on the GPU machine, after `source .gpu/env.sh`: the staged
# build (dist/ and build/Release here) against an earlier one, packed as a tar of its dist/ and
# build/Release/*.node, e.g. here:
#   git worktree add ../base REV && ln -s "$PWD/node_modules" ../base/ && (cd ../base && npm run build) &&
#   tar -cJf .gpu/base.tar.xz -C ../base dist build/Release/ternlab.node
# then, on the GPU machine (device run, carry .gpu):
#   bash bench/gpu-compare-builds.sh .gpu/base.tar.xz [rounds]
# Each round runs the earlier build, then this one: ternlab's default products only, no PyTorch, no
# kernel program. Timing claims are ratios within one round (the card is shared and noisy).
set -euo pipefail
base_tar=$1
rounds=${2:-3}
out=${OUT:-/tmp/ternlab-compare}
mkdir -p "$out"
base=$(mktemp -d)
tar -xJf "$base_tar" -C "$base"
ln -s "$PWD/node_modules" "$base/node_modules"
cp package.json "$base/"
for r in $(seq 1 "$rounds"); do
  for which in base new; do
    dir=$PWD
    [ "$which" = base ] && dir=$base
    (cd "$dir" && node dist/bench/gpu.js --no-kernels --no-own --no-torch --steps 20 --out "$out/$which-$r.json") |
      grep -E "^  [a-z]+ +ternlab " | sed "s/^/round $r $which: /" || true
  done
done
