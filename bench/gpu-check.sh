#!/usr/bin/env bash
# bench/gpu-check.sh: one script for a GPU machine with no JDK and no network: lists OpenCL devices, runs the
# conformance suite on the GPU, then the kernel benchmarks, and writes a table. Two phases:
#
#   bench/gpu-check.sh prepare   # here (JDK 25 + Maven, offline): builds the bundle below (~55 MB)
#   bench/gpu-check.sh [run]     # there: needs only the bundle and the working tree
#
# The bundle (gpu-kernels/target/gpu-bundle, git-ignored; packed as gpu-bundle.tgz, ~37 MB, which is what to carry
# along with the working tree: the device tool moves at most 64 MiB in all; run unpacks it) holds a jlink'd
# JDK 25 runtime (java.base, java.logging, jdk.incubator.vector, jdk.unsupported, java.management; Aparapi uses
# java.desktop only in a GUI tool),
# the project's jars with their runtime dependencies (Aparapi's JNI jar cut to linux x86_64), JUnit for the
# conformance suite, and the OpenCL ICD loader libOpenCL.so.1 (ocl-icd). At run time the loader and ICD files of
# the machine are used when present; otherwise the bundled loader and an ICD file written to a temp folder that
# points at the NVIDIA driver's libnvidia-opencl.so.1. Whatever is missing is said plainly, in the log and table.
#
# Environment: BIFLOW_DEVICE (default "opencl": the first GPU, else the first OpenCL device; or opencl:N),
# BIFLOW_BENCH_SIZES (GEMM sizes, default 256,512,1024,2048), OUT (output folder; default bench/target),
# BIFLOW_E2E_PATCHES (patch sizes of the end-to-end sampling benchmark, default 4), BIFLOW_GPU_BUNDLE (bundle
# folder). Time limits: devices 30 s, conformance 120 s, model passes 90 s, kernel benchmark 100 s, end-to-end 45 s
# on the CPU and 75 s on the device per patch size: under 8 min in all with one; on an H200 the whole check took 46 s.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUNDLE=${BIFLOW_GPU_BUNDLE:-$ROOT/gpu-kernels/target/gpu-bundle}
OUTDIR=${OUT:-$ROOT/bench/target}
mkdir -p "$OUTDIR"
TABLE=$OUTDIR/gpu-check-table.md
LOG=$OUTDIR/gpu-check.log
DEVICE=${BIFLOW_DEVICE:-opencl}
SIZES=${BIFLOW_BENCH_SIZES:-256,512,1024,2048}
E2E_PATCHES=${BIFLOW_E2E_PATCHES:-4}
MODULES=java.base,java.logging,jdk.incubator.vector,jdk.unsupported,java.management

prepare() {
  set -e
  : "${JAVA_HOME:=/usr/lib/jvm/temurin-25-jdk-amd64}"
  export JAVA_HOME
  "$JAVA_HOME/bin/java" -version 2>&1 | grep -q '"25' || { echo "prepare needs JDK 25 in JAVA_HOME"; exit 2; }
  cd "$ROOT"
  mvn -o -q install -Dmaven.test.skip=true -pl engine,gpu-kernels,flow,flow-opencl
  mvn -o -q package -DskipTests -pl gpu-kernels
  mvn -o -q package -Dmaven.test.skip=true -pl cli
  mvn -o -q test-compile -pl flow,flow-opencl # the model-level OpenCL tests (flow-opencl, on flow's test helpers) run in the conformance step
  mvn -o -q dependency:build-classpath -pl gpu-kernels -Dmdep.includeScope=test -Dmdep.outputFile="$ROOT/gpu-kernels/target/test.cp"
  rm -rf "$BUNDLE"; mkdir -p "$BUNDLE/lib" "$BUNDLE/native"
  cp gpu-kernels/target/biflow-gpu-kernels-*.jar "$BUNDLE/lib/"
  "$JAVA_HOME/bin/jar" cf "$BUNDLE/lib/biflow-gpu-kernels-tests.jar" -C gpu-kernels/target/test-classes .
  "$JAVA_HOME/bin/jar" cf "$BUNDLE/lib/biflow-flow-tests.jar" -C flow/target/test-classes .
  "$JAVA_HOME/bin/jar" cf "$BUNDLE/lib/biflow-flow-opencl-tests.jar" -C flow-opencl/target/test-classes .
  # Runtime needs of the kernels and the suite only: fastutil, jackson and commons-math serve engine's I/O.
  tr ':' '\n' < gpu-kernels/target/test.cp | grep -vE 'fastutil|jackson|commons-math' | while read -r j; do
    case "$j" in
      *aparapi-jni*) # keep the linux x86_64 library only (the jar carries every platform: 19 MB)
        t=$(mktemp -d); (cd "$t" && "$JAVA_HOME/bin/jar" xf "$j" && rm -rf win osx linux/libaparapi_x86.so linux/libaparapi_aarch64.so linux/libaparapi_armhf.so \
          && "$JAVA_HOME/bin/jar" cfm "$BUNDLE/lib/$(basename "$j")" META-INF/MANIFEST.MF com linux); rm -rf "$t" ;;
      *) cp "$j" "$BUNDLE/lib/" ;;
    esac
  done
  # The end-to-end sampling benchmark is `biflow bench` (cli + flow + their runtime jars; no charts or metrics
  # libraries: xchart/pdfbox and commons-math serve eval and reports, which the GPU check does not run).
  cp cli/target/biflow-cli.jar flow/target/biflow-flow-0*.jar flow-opencl/target/biflow-flow-opencl-*.jar "$BUNDLE/lib/"
  for j in cli/target/lib/*.jar; do
    case "$(basename "$j")" in
      picocli-*|progressbar-*|jline-*|jackson-*) cp "$j" "$BUNDLE/lib/" ;;
    esac
  done
  "$JAVA_HOME/bin/jlink" --add-modules "$MODULES" --strip-debug --no-header-files --no-man-pages --compress zip-9 --strip-native-debug-symbols exclude-debuginfo-files --output "$BUNDLE/jre"
  # the device tool carries at most 64 MiB with the working tree: a stripped libjvm (29 -> 25 MB) and one gzip
  command -v strip >/dev/null && strip --strip-unneeded "$BUNDLE/jre/lib/server/libjvm.so"
  lib=$(ldconfig -p | awk '/libOpenCL\.so\.1 .*x86-64/ {print $NF; exit}')
  if [ -n "$lib" ]; then cp -L "$lib" "$BUNDLE/native/libOpenCL.so.1"; else echo "warning: no libOpenCL.so.1 here (apt-get install ocl-icd-libopencl1): the bundle will rely on the GPU machine's"; fi
  git -C "$ROOT" rev-parse --short HEAD > "$BUNDLE/COMMIT" 2>/dev/null || true
  du -sh "$BUNDLE" "$BUNDLE"/* | tee "$BUNDLE/SIZES"
  tar czf "$BUNDLE.tgz" -C "$(dirname "$BUNDLE")" "$(basename "$BUNDLE")"
  du -sh "$BUNDLE.tgz"
  echo "bundle ready: $BUNDLE, packed as $BUNDLE.tgz (carry the .tgz with the working tree, then run bench/gpu-check.sh)"
}

say() { echo "$*" | tee -a "$LOG"; }
# biflow bench prints each row as it is measured, then the whole table: show the table, else the rows measured so far
e2e_rows() { if grep -q '^device:' "$1"; then sed -n '/^device:/,$p' "$1"; else grep -E '^[0-9]+ \(T=' "$1"; fi; }

run() {
  : > "$LOG"
  if [ ! -d "$BUNDLE" ] && [ -f "$BUNDLE.tgz" ]; then # carried packed: unpack beside the output
    local into; into=$(mktemp -d); tar xzf "$BUNDLE.tgz" -C "$into" && BUNDLE=$into/$(basename "$BUNDLE")
  fi
  local missing=() found=()
  say "== BiFlow-J gpu-check $(date -u +%FT%TZ) on $(hostname) =="
  # --- Java
  local java=""
  if [ -x "$BUNDLE/jre/bin/java" ]; then java=$BUNDLE/jre/bin/java; found+=("bundled JDK 25 runtime")
  elif [ -n "${JAVA_HOME:-}" ] && "$JAVA_HOME/bin/java" -version 2>&1 | grep -q '"25'; then java=$JAVA_HOME/bin/java; found+=("JDK 25 at $JAVA_HOME")
  else missing+=("a Java 25 runtime: the bundle $BUNDLE/jre is absent (run 'bench/gpu-check.sh prepare' on a machine with JDK 25 and carry the bundle)"); fi
  [ -d "$BUNDLE/lib" ] && found+=("project jars ($(ls "$BUNDLE/lib" | wc -l) in $BUNDLE/lib)") || missing+=("the project jars ($BUNDLE/lib): run 'bench/gpu-check.sh prepare'")
  # --- GPU driver
  if command -v nvidia-smi >/dev/null 2>&1; then
    found+=("nvidia-smi: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)")
  else missing+=("nvidia-smi (no NVIDIA driver visible)"); fi
  # --- OpenCL ICD loader
  if ldconfig -p 2>/dev/null | grep -q 'libOpenCL\.so\.1 '; then found+=("system OpenCL ICD loader")
  elif [ -f "$BUNDLE/native/libOpenCL.so.1" ]; then export LD_LIBRARY_PATH="$BUNDLE/native${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; found+=("bundled OpenCL ICD loader (ocl-icd)")
  else missing+=("an OpenCL ICD loader libOpenCL.so.1 (apt-get install ocl-icd-libopencl1, or prepare the bundle where it is installed)"); fi
  # --- ICD: the NVIDIA OpenCL library alone when it is there. The H200 machine also registers PoCL
  # (OCL_ICD_FILENAMES=libpocl.so.2:libnvidia-opencl.so.1); loading PoCL's LLVM into the JVM next to the driver
  # replaced the JVM's SIGSEGV handler and killed runs with a bare "Segmentation fault". The check is about the GPU.
  local nv=""
  case "${OCL_ICD_FILENAMES:-}" in *nvidia*) nv=$(echo "$OCL_ICD_FILENAMES" | tr ':' '\n' | grep nvidia | head -1) ;; esac
  [ -z "$nv" ] && nv=$(ldconfig -p 2>/dev/null | awk '/libnvidia-opencl\.so\.1 .*x86-64/ {print $NF; exit}')
  if [ -n "$nv" ]; then
    local icd; icd=$(mktemp -d); echo "$nv" > "$icd/nvidia.icd"
    [ -n "${OCL_ICD_FILENAMES:-}" ] && found+=("OCL_ICD_FILENAMES was $OCL_ICD_FILENAMES: narrowed to the NVIDIA library")
    export OCL_ICD_FILENAMES=$nv OCL_ICD_VENDORS=$icd
    found+=("NVIDIA OpenCL library $nv (the only ICD used)")
  elif [ -n "${OCL_ICD_VENDORS:-}" ]; then found+=("OCL_ICD_VENDORS=$OCL_ICD_VENDORS (given)")
  elif ls /etc/OpenCL/vendors/*.icd >/dev/null 2>&1; then found+=("ICD files: $(cat /etc/OpenCL/vendors/*.icd | tr '\n' ' ')")
  else
    nv=$(ls /usr/lib/x86_64-linux-gnu/libnvidia-opencl.so.1 /usr/lib64/libnvidia-opencl.so.1 /usr/local/nvidia/lib64/libnvidia-opencl.so.1 /usr/lib/nvidia*/libnvidia-opencl.so.1 2>/dev/null | head -1)
    # containers mount the driver's libraries in varying places: look once more, then give up
    [ -z "$nv" ] && nv=$(find /usr /lib /lib64 /opt -name 'libnvidia-opencl.so*' 2>/dev/null | sort | head -1)
    if [ -n "$nv" ]; then
      local icd; icd=$(mktemp -d); echo "$nv" > "$icd/nvidia.icd"; export OCL_ICD_FILENAMES=$nv OCL_ICD_VENDORS=$icd
      found+=("NVIDIA OpenCL library $nv (ICD file written to $icd)")
    else missing+=("an OpenCL driver: no /etc/OpenCL/vendors/*.icd and no libnvidia-opencl.so.1 (the NVIDIA driver's OpenCL part, e.g. package libnvidia-compute-*/nvidia-opencl-icd; CUDA alone does not provide it)"); fi
  fi
  for f in "${found[@]}"; do say "found:   $f"; done
  for m in "${missing[@]}"; do say "MISSING: $m"; done
  local status_devices="not run" status_conf="not run" status_models="not run" status_bench="not run" status_e2e=""
  if [ -n "$java" ] && [ -d "$BUNDLE/lib" ]; then
    local cp; cp=$(ls "$BUNDLE"/lib/*.jar | tr '\n' ':')
    # signal chaining (libjsig): a driver's LLVM must not replace the JVM's SIGSEGV handler while it compiles
    [ -f "$(dirname "$(dirname "$java")")/lib/libjsig.so" ] && export LD_PRELOAD="$(dirname "$(dirname "$java")")/lib/libjsig.so"
    local jv=(--add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -XX:+UseParallelGC -Xmx8g -cp "$cp")
    say "== 1. devices"
    timeout 30 "$java" "${jv[@]}" dev.biflow.gpu.Devices 2>&1 | grep -v '^WARNING: Aparapi is running on an untested' | tee -a "$LOG"
    case ${PIPESTATUS[0]} in 0) status_devices="ok";; 2) status_devices="no OpenCL device";; 124) status_devices="timed out";; *) status_devices="failed";; esac
    say "== 2. conformance suite on $DEVICE (same checks as CPU, vs double references)"
    timeout 120 "$java" "${jv[@]}" dev.biflow.gpu.ConformanceMain "$DEVICE" > "$OUTDIR/gpu-check-conformance.log" 2>&1
    local rc=$?
    grep -E '^\[conformance\]|tests (successful|failed|skipped|aborted|found)|CONFORMANCE|=> ' "$OUTDIR/gpu-check-conformance.log" | head -40 | tee -a "$LOG"
    case $rc in 0) status_conf="PASS";; 124) status_conf="timed out (120 s)";; *) status_conf="FAIL (see gpu-check-conformance.log)";; esac
    say "== 2b. whole model passes on $DEVICE vs the CPU backend: TarFlow forward, exact inverse and a training step (per-op), BiFlow 1-NFE (per-op and resident), TarFlow exact inverse (resident)"
    timeout 90 "$java" "${jv[@]}" dev.biflow.gpu.ConformanceMain "$DEVICE" dev.biflow.flow.model.TarFlowOpenClTest \
      dev.biflow.flow.inverse.BiFlowOpenClTest dev.biflow.flow.inverse.ResidentBiFlowTest dev.biflow.flow.model.ResidentTarFlowTest > "$OUTDIR/gpu-check-models.log" 2>&1
    rc=$?
    grep -E '^\[|tests (successful|failed|skipped|aborted|found)|CONFORMANCE|=> ' "$OUTDIR/gpu-check-models.log" | head -40 | tee -a "$LOG"
    case $rc in 0) status_models="PASS";; 124) status_models="timed out (90 s)";; *) status_models="FAIL (see gpu-check-models.log)";; esac
    say "== 3. kernel benchmarks on $DEVICE"
    timeout 100 "$java" "${jv[@]}" dev.biflow.gpu.GpuBench --device "$DEVICE" --sizes "$SIZES" --budget-s 70 --out "$OUTDIR/gpu-bench.md" > "$OUTDIR/gpu-bench.log" 2>&1
    rc=$?
    case $rc in 0) status_bench="ok";; 124) status_bench="timed out (100 s)";; *) status_bench="failed (see gpu-bench.log)"; tail -5 "$OUTDIR/gpu-bench.log" | tee -a "$LOG";; esac
    say "== 4. end-to-end sampling: TARFlow exact inverse + CFG + denoising vs BiFlow 1-NFE (biflow bench), CPU then $DEVICE"
    local th; th=$(nproc)
    for dev in cpu "$DEVICE"; do
      local np; np=$(echo "$E2E_PATCHES" | tr ',' '\n' | wc -l)
      local lim=$((45 * np)) reps=3; [ "$dev" = cpu ] || { lim=$((75 * np)); reps=2; }
      timeout $lim "$java" "${jv[@]}" dev.biflow.cli.Main bench --what exact-cfg,biflow --patches "$E2E_PATCHES" --threads-list "$th" \
        --repeats $reps --warmup 1 --device "$dev" > "$OUTDIR/gpu-e2e-$dev.log" 2>&1  # warm-up: 1 s (at least one pass), the device time is scarce
      rc=$?
      case $rc in 0) ;; 124) status_e2e="$status_e2e $dev: timed out ($lim s);";; *) status_e2e="$status_e2e $dev: failed (see gpu-e2e-$dev.log);"; tail -5 "$OUTDIR/gpu-e2e-$dev.log" | tee -a "$LOG";; esac
      e2e_rows "$OUTDIR/gpu-e2e-$dev.log" | tee -a "$LOG"
    done
    [ -z "$status_e2e" ] && status_e2e="ok"
  fi
  {
    echo "# gpu-check $(date -u +%FT%TZ), commit $(cat "$BUNDLE/COMMIT" 2>/dev/null || echo '?')"
    echo
    for f in "${found[@]}"; do echo "- found: $f"; done
    for m in "${missing[@]}"; do echo "- **missing**: $m"; done
    echo "- devices: $status_devices; conformance on $DEVICE: $status_conf; model passes: $status_models; benchmark: $status_bench; end-to-end: ${status_e2e:-not run}"
    echo
    [ -f "$OUTDIR/gpu-bench.md" ] && cat "$OUTDIR/gpu-bench.md"
    for dev in cpu "$DEVICE"; do
      [ -f "$OUTDIR/gpu-e2e-$dev.log" ] || continue
      echo; echo "### End-to-end sampling, --device $dev ($(nproc) CPU threads; batch 64, reference configuration width 128, 4 blocks x 2 layers)"
      echo; echo '```'; e2e_rows "$OUTDIR/gpu-e2e-$dev.log"; echo '```'
    done
  } > "$TABLE"
  say "== table: $TABLE"
  cat "$TABLE"
  [ "$status_conf" = "PASS" ] && [ "$status_models" = "PASS" ] && [ "$status_bench" = "ok" ]
}

case "${1:-run}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: bench/gpu-check.sh [prepare|run]"; exit 2 ;;
esac
