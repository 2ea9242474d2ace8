#!/usr/bin/env bash
# The test command: the default (fast) suite of every module on JDK 25. Long tests: ./test.sh -Pslow
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$ROOT/scripts/find-jdk.sh"
cd "$ROOT"
exec mvn -B install "$@"
