#!/bin/bash
# Spark benchmark: images/s of sharded sampling and steps/s of data-parallel training on local[1] and local[2], beside
# the plain commands at 1 and 2 threads, and the per-step overhead of a data-parallel step (what goes over the wire,
# scheduling and serialisation, the driver's sum). Spark's start-up (a few seconds per command) is not in the rates.
# Usage: bench/spark-bench.sh [OUT]   (N=images, STEPS=training steps, BATCH=global batch; defaults below)
cd "$(dirname "$0")/.."
OUT=${1:-bench/results/$(date +%F)-spark.txt}
N=${N:-128}; STEPS=${STEPS:-12}; BATCH=${BATCH:-64}; GBATCH=${GBATCH:-32}
F=models/fmnist/forward.safetensors
TMP=$(mktemp -d)
mkdir -p "$(dirname "$OUT")"
rate() { awk -v s="$1" 'BEGIN { n = split(s, a, /[hms]/); t = 0; if (s ~ /h/) t = a[1] * 3600 + a[2] * 60 + a[3]; else if (s ~ /m/) t = a[1] * 60 + a[2]; else t = a[1]; print t }'; }
./biflow --help > /dev/null 2>&1; ./biflow spark --help > /dev/null 2>&1 # builds, outside the timings
{
echo "# spark bench $(date -u '+%F %H:%M UTC'), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# sampling: $N exact-inverse images of $F (batch 16); training: $STEPS steps, F batch $BATCH, G batch $GBATCH (--perceptual none)"
printf "%-44s %12s %s\n" "run" "rate" "notes"
for t in 1 2; do
  line=$(./biflow sample --model $F --n $N --batch 16 --threads $t --out $TMP/s$t.png 2>&1 | grep "^sample:")
  ms=$(echo "$line" | sed -E 's/.*\(([0-9.]+) ms\/image\).*/\1/')
  printf "%-44s %12s %s\n" "sample, plain, --threads $t" "$(awk -v m=$ms 'BEGIN{printf "%.1f img/s", 1000/m}')" ""
done
for w in 1 2; do
  line=$(./biflow spark --master "local[$w]" sample --model $F --n $N --batch 16 --run $TMP/ss$w 2>&1 | grep "^spark sample:")
  ips=$(echo "$line" | sed -E 's/.*\(([0-9.]+) images\/s\).*/\1/')
  printf "%-44s %12s %s\n" "spark sample, local[$w], $w shards" "$ips img/s" "(broadcast, model load per slot, shard writes included)"
done
for t in 1 2; do
  line=$(./biflow train-forward --steps $STEPS --batch $BATCH --threads $t --runs $TMP --name f$t --eval-images 100 --checkpoint-every 0 2>&1 | grep "done")
  secs=$(rate "$(echo "$line" | sed -E 's/.*done [0-9]+ steps in ([0-9hms.]+).*/\1/')")
  printf "%-44s %12s %s\n" "train-forward, plain, --threads $t" "$(awk -v s=$secs -v n=$STEPS 'BEGIN{printf "%.2f step/s", n/s}')" ""
done
for w in 1 2; do
  out=$(./biflow spark --master "local[$w]" train-forward --steps $STEPS --batch $BATCH --runs $TMP --name fs$w --eval-images 100 --checkpoint-every 0 2>&1)
  secs=$(rate "$(echo "$out" | grep "done" | sed -E 's/.*done [0-9]+ steps in ([0-9hms.]+).*/\1/')")
  printf "%-44s %12s %s\n" "spark train-forward, local[$w], $w workers" "$(awk -v s=$secs -v n=$STEPS 'BEGIN{printf "%.2f step/s", n/s}')" ""
  echo "    $(echo "$out" | grep '^spark: .* steps over')"
done
for t in 1 2; do
  line=$(./biflow train-backward --forward $F --perceptual none --steps $STEPS --batch $GBATCH --threads $t --runs $TMP --name g$t --checkpoint-every 0 2>&1 | grep "done")
  secs=$(rate "$(echo "$line" | sed -E 's/.*done [0-9]+ steps in ([0-9hms.]+).*/\1/')")
  printf "%-44s %12s %s\n" "train-backward, plain, --threads $t" "$(awk -v s=$secs -v n=$STEPS 'BEGIN{printf "%.2f step/s", n/s}')" ""
done
for w in 1 2; do
  out=$(./biflow spark --master "local[$w]" train-backward --forward $F --perceptual none --steps $STEPS --batch $GBATCH --runs $TMP --name gs$w --checkpoint-every 0 2>&1)
  secs=$(rate "$(echo "$out" | grep "done" | sed -E 's/.*done [0-9]+ steps in ([0-9hms.]+).*/\1/')")
  printf "%-44s %12s %s\n" "spark train-backward, local[$w], $w workers" "$(awk -v s=$secs -v n=$STEPS 'BEGIN{printf "%.2f step/s", n/s}')" ""
  echo "    $(echo "$out" | grep '^spark: .* steps over')"
done
echo "# end $(date -u '+%H:%M'), load $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$OUT" 2>&1
rm -rf "$TMP"
cat "$OUT"
