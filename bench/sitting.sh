#!/bin/bash
# One short sitting, ours beside the PyTorch peers: flow timings (bidir pass, train step) at patch 4 and 2 on
# 1 and 2 threads, the two samplers with their speed-up, GEMM at N=1024. Needs the peers set up (../shared/peers).
cd "$(dirname "$0")/.."
OUT=${1:-bench/results/$(date +%F)-sitting.txt}
PEERS="$(cd .. && pwd)/shared/peers"
source scripts/find-jdk.sh
J="$JAVA_HOME/bin/java"
[ -f bench/target/benchmarks.jar ] || mvn -q -o -pl bench -am package -DskipTests
{
echo "# sitting $(date -u '+%F %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "## ours: biflow bench (median of 5; bidir = 8-layer bidirectional pass of G's size, batch 64)"
./biflow bench --what bidir,train --patches 4,2 --threads-list 1,2 --repeats 5 2>&1 | grep -vE "^WARNING" | tail -9
echo "## ours: the two samplers, same batch of 64 (2 threads)"
./biflow bench --what exact-cfg,biflow --patches 4,2 --threads-list 2 --repeats 2 2>&1 | grep -vE "^WARNING" | tail -8
echo "## PyTorch 1.13 peers (OpenBLAS-openmp)"
for t in 1 2; do (cd $PEERS && BLAS=openmp T=$t ./run.sh tarflow_bench.py --patch 4 --what train,bidir 2>&1 | tail -2); done
(cd $PEERS && BLAS=openmp T=2 ./run.sh tarflow_bench.py --patch 2 --what train,bidir 2>&1 | tail -2)
echo "## GEMM: ours (JMH) then OpenBLAS"
$J -jar bench/target/benchmarks.jar GemmBench -p shape=1024x1024x1024,3136x512x128:NT -p threads=1,2 -f 1 -wi 3 -i 5 -w 1 -r 1 2>/dev/null | grep -E "^GemmBench.sgemm:flop" | awk '{printf "ours sgemm %-18s threads=%s %6.1f GFLOP/s (+- %.1f)\n", $2, $3, $6/1e9, $8/1e9}'
for t in 1 2; do (cd $PEERS && BLAS=openmp T=$t ./run.sh gemm_bench.py 1024 2>&1 | tail -1); done
echo "# end $(date -u '+%H:%M'), load $(cut -d' ' -f1-3 /proc/loadavg)"
} > $OUT 2>&1
