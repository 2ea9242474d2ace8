#!/usr/bin/env bash
# Fuzzes every Jazzer target for a set time each (the default `./test.sh` only replays their inputs).
#   scripts/fuzz.sh [SECONDS_PER_TARGET=150] [TARGET_REGEX]      e.g. scripts/fuzz.sh 120 'Checkpoint|Options'
# Each target runs in its own JVM (Jazzer fuzzes one @FuzzTest per run) with JAZZER_FUZZ=1, all of
# dev.biflow instrumented and inputs up to 64 KB (libFuzzer's default cap is 4 KB). The working corpus
# is <module>/.cifuzz-corpus (git-ignored); afterwards its entries (each found new coverage when it was
# added) are copied into src/test/resources/.../<Class>Inputs/<method>/ as corpus-<sha1>, up to
# KEEP (default 40: the smallest and the largest half), where every `mvn test` replays them. A finding (a crashing input)
# is written there by Jazzer too and fails the run; the log of each run is in target/fuzz-<name>.log.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/find-jdk.sh"
cd "$ROOT"
SECS="${1:-150}"
FILTER="${2:-}"
KEEP="${KEEP:-40}"
TARGETS=(
  "engine dev.biflow.engine.io.SafetensorsFuzzTest parse"
  "engine dev.biflow.engine.io.IdxFuzzTest parse"
  "flow dev.biflow.flow.model.CheckpointFuzzTest load"
  "flow dev.biflow.flow.train.TrainingStateFuzzTest read"
  "cli dev.biflow.cli.ConfigFileFuzzTest read"
  "cli dev.biflow.cli.OptionsFuzzTest parse"
)
mvn -q -B -o install -DskipTests -pl cli -am
status=0
for t in "${TARGETS[@]}"; do
  read -r module class method <<<"$t"
  simple="${class##*.}"
  if [ -n "$FILTER" ] && ! grep -qE "$FILTER" <<<"$simple"; then continue; fi
  log="$module/target/fuzz-$simple.log"
  echo "== $simple#$method: fuzzing ${SECS}s (log: $log)"
  if ! JAZZER_FUZZ=1 mvn -B -o -pl "$module" test -Dtest="$simple#$method" -Dsurefire.failIfNoSpecifiedTests=false \
      -Djazzer.instrument='dev.biflow.**' -Djazzer.internal.arg.0=fuzz -Djazzer.internal.arg.1=-max_total_time="$SECS" \
      -Djazzer.internal.arg.2=-max_len=65536 >"$log" 2>&1; then
    echo "   FINDING or failure: see $log (Jazzer stores the crashing input in the ${simple}Inputs folder)" >&2
    status=1
  fi
  grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)' "$log" | sed 's/^/   /' || true
  grep -E '^Done [0-9]+ runs' "$log" | sed 's/^/   /' || true
  corpus="$module/.cifuzz-corpus/$class/$method"
  inputs="$module/src/test/resources/$(dirname "${class//.//}")/${simple}Inputs/$method"
  if [ -d "$corpus" ]; then
    mkdir -p "$inputs"
    kept=0
    while read -r f; do
      [ "$kept" -ge "$KEEP" ] && break
      cp "$f" "$inputs/corpus-$(sha1sum "$f" | cut -c1-16)"
      kept=$((kept + 1))
    done < <(find "$corpus" -type f -printf '%s %p\n' | sort -n | awk -v k="$KEEP" '{a[NR]=$0} END {for (i = 1; i <= NR; i++) if (i <= k / 2 || i > NR - k / 2) print a[i]}' | cut -d' ' -f2-)
    echo "   corpus: $(find "$corpus" -type f | wc -l) entries; kept $kept (the smallest and the largest) in $inputs"
  fi
done
exit $status
