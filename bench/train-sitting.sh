#!/bin/bash
# The training-speed sitting: train step and exact inverse, ours beside the PyTorch peers, patch 4 and 2, 1 and 2
# threads, ROUNDS rounds alternating ours / theirs so that both see the same machine. Needs ../shared/peers set up.
# Usage: bench/train-sitting.sh [OUT] (ROUNDS=2 by default)
cd "$(dirname "$0")/.."
OUT=${1:-bench/results/$(date +%F)-train-sitting.txt}
ROUNDS=${ROUNDS:-2}
PEERS="$(cd .. && pwd)/shared/peers"
mkdir -p "$(dirname "$OUT")"
{
echo "# train sitting $(date -u '+%F %H:%M UTC'), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
  echo "## round $r: ours (biflow bench, median of 5 after 3 s warm-up; gc % and MB allocated per pass)"
  ./biflow bench --what train,sample --patches 4,2 --threads-list 1,2 --repeats 5 2>&1 | grep -vE "^WARNING" | tail -9
  echo "## round $r: PyTorch 1.13 (OpenBLAS-openmp)"
  for p in 4 2; do for t in 1 2; do
    (cd "$PEERS" && BLAS=openmp T=$t ./run.sh tarflow_bench.py --patch $p --what train,sample 2>&1 | grep -E "train_step|sample_exact")
  done; done
done
echo "# end $(date -u '+%H:%M'), load $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$OUT" 2>&1
cat "$OUT"
