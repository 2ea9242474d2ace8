#!/usr/bin/env bash
# Runs one example program: samples/run.sh NAME [ARGS...], NAME one of Toy2DFlow, SampleBiFlow, AutogradBasics.
# Builds engine, flow and samples first when the samples jar is missing or older than their sources.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/find-jdk.sh"
if [ $# -lt 1 ]; then
  echo "usage: samples/run.sh NAME [ARGS...]   NAME: Toy2DFlow | SampleBiFlow | AutogradBasics" >&2
  exit 2
fi
NAME="$1"; shift
case "$NAME" in
  *.*) CLASS="$NAME" ;;                     # a fully qualified class name
  *) CLASS="dev.biflow.samples.$NAME" ;;
esac
JAR="$ROOT/samples/target/biflow-samples.jar"
LIB="$ROOT/samples/target/lib"
stale() {
  [ ! -f "$JAR" ] || [ ! -d "$LIB" ] && return 0
  [ -n "$(find "$ROOT/pom.xml" "$ROOT/engine/pom.xml" "$ROOT/engine/src/main" "$ROOT/flow/pom.xml" "$ROOT/flow/src/main" \
      "$ROOT/samples/pom.xml" "$ROOT/samples/src/main" -newer "$JAR" -print -quit)" ]
}
if stale; then
  command -v mvn >/dev/null || { echo "run.sh: Maven (mvn) is needed to build; install it (apt-get install maven)" >&2; exit 1; }
  echo "run.sh: building engine, flow and samples (first run or sources changed)..." >&2
  # Offline: setup.sh has already filled the local Maven repository.
  if ! (cd "$ROOT" && mvn -q -B -o install -Dmaven.test.skip=true -pl engine,flow,samples) >&2; then
    echo "run.sh: the build failed; if Maven reported a missing artifact, run ./setup.sh (or the same mvn command without -o) once" >&2
    exit 1
  fi
  touch "$JAR" # the jar plugin keeps an up-to-date jar's old time; mark this build as fresh
fi
exec "$JAVA_HOME/bin/java" --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED \
  -XX:+UseParallelGC ${BIFLOW_JAVA_OPTS:-} -cp "$JAR:$LIB/*" "$CLASS" "$@"
