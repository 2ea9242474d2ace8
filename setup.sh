#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine: the dataset, the OpenCL runtime on the CPU (PoCL), Maven, and a build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
need=()
[ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
[ -e /etc/OpenCL/vendors/pocl.icd ] || need+=(pocl-opencl-icd ocl-icd-libopencl1 clinfo)
command -v mvn >/dev/null || need+=(maven)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}"
fi
source "$ROOT/scripts/find-jdk.sh"
echo "setup: building with $JAVA_HOME"
(cd "$ROOT" && mvn -q -B install -DskipTests)
echo "setup: done"
