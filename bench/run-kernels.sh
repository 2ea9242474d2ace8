#!/usr/bin/env bash
# Builds bench/target/benchmarks.jar when a source is newer, then prints the kernel table.
#   bench/run-kernels.sh [THREADS] [KernelTable options]     THREADS: e.g. 1, 2 or 1,2 (default 1,2)
#   bench/run-kernels.sh 2 --include GemmBench --param shape=1024x1024x1024 --forks 3
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${JAVA_HOME:-}" && -d /usr/lib/jvm/temurin-25-jdk-amd64 ]]; then
    export JAVA_HOME=/usr/lib/jvm/temurin-25-jdk-amd64
fi
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"

threads="1,2"
if [[ $# -gt 0 && "$1" != -* ]]; then
    threads="$1"
    shift
fi

jar=bench/target/benchmarks.jar
stale=no
if [[ ! -f "$jar" ]]; then
    stale=yes
elif [[ -n "$(find pom.xml */pom.xml */src/main -newer "$jar" -type f -print -quit 2>/dev/null)" ]]; then
    stale=yes
fi
if [[ $stale == yes ]]; then
    echo "building $jar ..." >&2
    mvn -q -o -pl bench -am package -DskipTests || mvn -q -pl bench -am package -DskipTests
fi

exec "$JAVA" -cp "$jar" dev.biflow.bench.KernelTable --threads "$threads" "$@"
