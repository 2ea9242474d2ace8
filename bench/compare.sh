#!/usr/bin/env bash
# One sitting, ours beside PyTorch's: GEMM GFLOP/s (JMH table vs torch/numpy), then the flow timings
# (biflow bench vs ../shared/peers/tarflow_bench.py). Needs the peers' set-up (see their README).
#   bench/compare.sh [OUT_FILE]        (default bench/results/$(date +%F).txt)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-bench/results/$(date +%F).txt}"
PEERS="$(cd .. && pwd)/shared/peers"
source scripts/find-jdk.sh
{
  echo "# BiFlow-J vs PyTorch 1.13 (CPU), one sitting, $(date -u '+%F %H:%M UTC'), $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo; echo "## GEMM (ours: JMH, bench/run-kernels.sh)"
  bench/run-kernels.sh 1,2 --include GemmBench --param shape=256x256x256,512x512x512,1024x1024x1024,2048x2048x2048,3136x512x128:NT,12544x512x128:NT 2>&1 | grep -vE "^WARNING|^#" | tail -24
  echo; echo "## Other kernels (ours: JMH)"
  bench/run-kernels.sh 1,2 --include OpsBench 2>&1 | grep -vE "^WARNING|^#" | tail -30
  if [ -x "$PEERS/run.sh" ] && /usr/bin/python3 -c "import torch" 2>/dev/null; then
    echo; echo "## GEMM (PyTorch / numpy, OpenBLAS)"
    for t in 1 2; do (cd "$PEERS" && BLAS=openmp T=$t ./run.sh gemm_bench.py 256 512 1024 2048 2>&1 | tail -8); done
  else
    echo "(PyTorch peers not set up: apt-get install python3-torch python3-numpy libopenblas0-openmp)"
  fi
  echo; echo "## Flow timings (ours: ./biflow bench)"
  ./biflow bench --patches 4,2 --threads-list 1,2 --what train,sample,bidir --repeats 3 2>&1 | grep -vE "^WARNING" | tail -13
  ./biflow bench --patches 4,2 --threads-list 2 --what exact-cfg,biflow --repeats 2 2>&1 | grep -vE "^WARNING" | tail -5
  if [ -x "$PEERS/run.sh" ]; then
    echo; echo "## Flow timings (PyTorch peers)"
    for p in 4 2; do (cd "$PEERS" && BLAS=openmp T=2 ./run.sh tarflow_bench.py --patch $p --what train,sample,bidir 2>&1 | tail -12); done
    (cd "$PEERS" && BLAS=openmp T=1 ./run.sh tarflow_bench.py --patch 4 --what train,sample,bidir 2>&1 | tail -12)
  fi
} | tee "$OUT"
echo "written: $OUT"
