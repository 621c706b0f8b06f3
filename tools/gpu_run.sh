#!/usr/bin/env bash
# Everything GPU-side in one call: environment, kernel tests on CUDA, then tuning or the
# benchmark. Logs and JSON go under $OUT (the device tool brings back at most 8 files).
#
#   tools/gpu_run.sh            kernel tests + benchmark (all shapes, peers within budget)
#   tools/gpu_run.sh bench ARGS kernel tests + benchmark with extra bench_woq_gpu ARGS
#   tools/gpu_run.sh tune ARGS  kernel tests + config sweep (tune_woq.json, tuned_configs.json)
#   tools/gpu_run.sh all ARGS   kernel tests + sweep + benchmark with the configs just tuned
#                               (commit $OUT/tuned_configs.json as impl/kernels/tuned_configs_<gpu>.json)
#   tools/gpu_run.sh tests      kernel tests only
#   tools/gpu_run.sh matrix     the session's one call: the op tests and kernel tests on CUDA,
#                               then every suite's cuda matrix (existing cuda goldens compared,
#                               missing ones written); $OUT/cuda_goldens.tar holds the goldens
#                               to commit (tar -xf it in the repo root); perf checks off (--no-perf:
#                               14 workers on one GPU would time each other) and woq_perf.yaml left
#                               to the perf stage (budgets MATRIX_S, IMPL_S; IMPL_S=0 skips the op tests)
#   tools/gpu_run.sh perf ARGS  suites/woq_perf.yaml alone (-n 0): each cell timed against its perf
#                               golden for this GPU kind (missing ones written); $OUT/perf_goldens.tar
#                               holds the perf goldens to commit; then the harness's GPU-only tests
#   tools/gpu_run.sh tables     issue 28's two tables, no tests first: the Llama model (tools/bench_woq_model,
#                               budget MODEL_S, extra args MODEL_ARGS) and the per-shape kernels against
#                               tinygemm, bitsandbytes and GemLite (tools/bench_woq_kernels, budget KERNELS_S,
#                               extra args KERNEL_ARGS); the peers from a .gpu_peers folder here or one
#                               level up (../shared/tools/gpu_peers.sh; carry it). $OUT/model_<gpu>.md/json
#                               and kernels_<gpu>.md/json go to benchmarks/ as they are
#   tools/gpu_run.sh cpu        the GPU host's own CPU (AVX-512 where this project's dev and CI hosts may be
#                               AVX2-only): every suite's cpu matrix (-n 14, perf off, goldens compared, none
#                               written) and the CPU kernels' tests, then those tests under
#                               ATEN_CPU_CAPABILITY=avx2 (budgets CPU_MATRIX_S, 0 for none, CPU_TESTS_S; CPU_N workers of
#                               CPU_THREADS OpenMP threads, 8 x 2 by default)
#   tools/gpu_run.sh gpus       (a machine with several GPUs) the cuda matrix with -n 8 on every GPU,
#                               then on GPU 0 alone (CUDA_VISIBLE_DEVICES=0): cells per GPU, wall times;
#                               $OUT/gpus_goldens.tar holds the goldens written (multi_gpu.yaml's)
#
# Files under $OUT: env.txt, kernel_tests.log, bench.log + bench_woq.json + bench_woq.md
# (bench), tune.log + tune_woq.json + tuned_configs.json (tune).
set -u -o pipefail
# A stage past its budget gets SIGINT (pytest then prints its summary, the cells' table and
# --summary JSON of what ran), SIGKILL 30 s later if it is still there.
STOP="timeout -s INT -k 30"
cd "$(dirname "$0")/.."
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
MODE=${1:-bench}
shift || true
status=0

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv || true
  python3 -c 'import torch, triton, numpy; print("torch", torch.__version__, "triton", triton.__version__, "numpy", numpy.__version__, "cuda", torch.version.cuda)'
  nproc
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if [ -d .whl ]; then  # the GPU machine has no registry: wheels carried from here (filecheck)
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi

if [ "$MODE" = tables ]; then
  for peers in .gpu_peers ../.gpu_peers; do
    if [ -d "$peers" ]; then
      export PYTHONPATH="$(cd "$peers" && pwd)${PYTHONPATH:+:$PYTHONPATH}"
      break
    fi
  done
  gpu=$(python3 -c 'import torch; n = torch.cuda.get_device_name(); print("h200" if "H200" in n else "h100" if "H100" in n else "gpu")')
  start=$(date +%s)
  # The budgets bound the timing loops; the timeouts (budget + 90 s) the compile that runs past them.
  timeout $(( ${MODEL_S:-270} + 90 )) python3 -m tools.bench_woq_model --out "$OUT" --name "model_$gpu" \
    --budget-s "${MODEL_S:-270}" ${MODEL_ARGS:-} > "$OUT/model.log" 2>&1
  [ $? -eq 0 ] || status=1
  sed -n '/^# Llama/,$p' "$OUT/model.log"
  echo "model table: $(( $(date +%s) - start )) s"
  start=$(date +%s)
  timeout $(( ${KERNELS_S:-200} + 90 )) python3 -m tools.bench_woq_kernels --out "$OUT" --name "kernels_$gpu" \
    --budget-s "${KERNELS_S:-200}" ${KERNEL_ARGS:-} > "$OUT/kernels.log" 2>&1
  [ $? -eq 0 ] || status=1
  grep -E "not available" "$OUT/kernels.log"
  sed -n '/^# Weight-only/,$p' "$OUT/kernels.log"
  echo "kernel table: $(( $(date +%s) - start )) s"
  exit $status
fi

if [ "$MODE" = matrix ]; then
  # Goldens first (they are what must come back); each stage bounded so a slow one cannot
  # eat the next (MATRIX_S, IMPL_S seconds).
  touch /tmp/matrix_start
  start=$(date +%s)
  # 300 s: suites/llm.yaml builds Llama-3-8B-shaped layers and compiles them twice a cell.
  $STOP "${MATRIX_S:-300}" python3 -m harness --devices cuda -n 14 --no-perf --ignore=suites/woq_perf.yaml --add-missing-goldens --summary "$OUT/cuda_summary.json" \
    > "$OUT/cuda_matrix.log" 2>&1
  [ $? -eq 0 ] || status=1
  grep -E "passed|failed|FAILED|error" "$OUT/cuda_matrix.log" | tail -n 40
  echo "cuda matrix: $(( $(date +%s) - start )) s"
  find golden -name 'cuda-*' -newer /tmp/matrix_start -print0 | tar -cf "$OUT/cuda_goldens.tar" --null -T -
  echo "cuda goldens written: $(tar -tf "$OUT/cuda_goldens.tar" | wc -l) files"
  if [ "${IMPL_S:-180}" != 0 ]; then  # 0: the suites alone (impl/ unchanged since its last green run)
    start=$(date +%s)
    $STOP "${IMPL_S:-180}" python3 -m pytest tests/impl -q -p no:cacheprovider -n 14 -k "cuda or prologue or kernels or triton" \
      > "$OUT/impl_tests.log" 2>&1
    [ $? -eq 0 ] || status=1
    tail -n 25 "$OUT/impl_tests.log"
    echo "impl tests on cuda: $(( $(date +%s) - start )) s"
  fi
  exit $status
fi

if [ "$MODE" = cpu ]; then
  {
    grep -m1 'model name' /proc/cpuinfo
    echo "isa: $(grep -o -w 'avx2\|avx512[a-z_0-9]*\|amx_[a-z0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"
    python3 -c 'import torch; print("torch cpu capability:", torch.backends.cpu.get_cpu_capability())'
  } | tee -a "$OUT/env.txt"
  if [ "${CPU_MATRIX_S:-240}" != 0 ]; then  # 0: the kernels' tests alone (after the cuda matrix, say)
    start=$(date +%s)
    $STOP "${CPU_MATRIX_S:-240}" python3 -m harness --devices cpu -n 14 --no-perf --ignore=suites/woq_perf.yaml \
      --summary "$OUT/cpu_summary.json" > "$OUT/cpu_matrix.log" 2>&1
    [ $? -eq 0 ] || status=1
    grep -E "passed|failed|FAILED|error" "$OUT/cpu_matrix.log" | tail -n 40
    echo "cpu matrix: $(( $(date +%s) - start )) s"
  fi
  # Each worker's OpenMP would take every core (14 workers x 16 threads got through 77 of the
  # 153 tests in 120 s on the H100 host); two threads a worker still run the parallel loops.
  export OMP_NUM_THREADS=${CPU_THREADS:-2}
  kernel_tests="tests/impl/test_woq_gemv_cpu.py tests/impl/test_woq_panel_cpu.py tests/impl/test_int8pack_contract.py"
  for capability in default avx2; do
    start=$(date +%s)
    if [ "$capability" = avx2 ]; then export ATEN_CPU_CAPABILITY=avx2; fi
    $STOP "${CPU_TESTS_S:-90}" python3 -m pytest $kernel_tests -q -p no:cacheprovider -n "${CPU_N:-8}" \
      > "$OUT/cpu_tests_$capability.log" 2>&1
    [ $? -eq 0 ] || status=1
    tail -n 5 "$OUT/cpu_tests_$capability.log"
    echo "cpu kernel tests ($capability): $(( $(date +%s) - start )) s"
  done
  exit $status
fi

if [ "$MODE" = perf ]; then
  touch /tmp/perf_start
  start=$(date +%s)
  # 900 s: the ratio cases time a dense baseline too, and the Llama ones compile two models.
  $STOP "${PERF_S:-900}" python3 -m pytest suites/woq_perf.yaml -v -p no:cacheprovider -n 0 --add-missing-goldens "$@" \
    > "$OUT/perf.log" 2>&1
  [ $? -eq 0 ] || status=1
  grep -E "^(FAILED|ERROR)|XFAIL|XPASS|perf golden|slower than|as fast as the baseline|passed|failed" "$OUT/perf.log" | tail -n 40
  sed -n '/quantcheck perf/,$p' "$OUT/perf.log" | head -n 40
  echo "perf cases: $(( $(date +%s) - start )) s"
  find golden -name 'perf-*.json' -newer /tmp/perf_start -print0 | tar -cf "$OUT/perf_goldens.tar" --null -T -
  echo "perf goldens written: $(tar -tf "$OUT/perf_goldens.tar" | wc -l) files"
  $STOP "${HARNESS_S:-180}" python3 -m pytest tests/harness/test_perf.py tests/harness/test_kernel_asm.py -q -p no:cacheprovider \
    -k cuda > "$OUT/harness_gpu_tests.log" 2>&1
  [ $? -eq 0 ] || status=1
  tail -n 5 "$OUT/harness_gpu_tests.log"
  exit $status
fi

if [ "$MODE" = gpus ]; then
  gpus=$(nvidia-smi -L | wc -l)
  touch /tmp/gpus_start
  start=$(date +%s)
  $STOP "${MATRIX_S:-240}" python3 -m harness --devices cuda -n "${GPUS_N:-8}" --no-perf --add-missing-goldens \
    --summary "$OUT/gpus_summary.json" > "$OUT/gpus_matrix.log" 2>&1
  [ $? -eq 0 ] || status=1
  all_s=$(( $(date +%s) - start ))
  find golden -name 'cuda-*' -newer /tmp/gpus_start -print0 | tar -cf "$OUT/gpus_goldens.tar" --null -T -
  echo "cuda goldens written: $(tar -tf "$OUT/gpus_goldens.tar" | wc -l) files"
  sed -n '/^cells: /,$p' "$OUT/gpus_matrix.log" | head -n 12
  start=$(date +%s)
  CUDA_VISIBLE_DEVICES=0 $STOP "${MATRIX_S:-240}" python3 -m harness --devices cuda -n "${GPUS_N:-8}" --no-perf \
    --summary "$OUT/gpu0_summary.json" > "$OUT/gpu0_matrix.log" 2>&1
  [ $? -eq 0 ] || status=1
  one_s=$(( $(date +%s) - start ))
  sed -n '/^cells: /,$p' "$OUT/gpu0_matrix.log" | head -n 12
  echo "cuda matrix wall time: ${all_s} s on ${gpus} GPUs, ${one_s} s on GPU 0 alone (-n ${GPUS_N:-8} both)"
  exit $status
fi

# Kernel tests on CUDA: compiled kernels, full-size default configs included. xdist spreads
# the Triton compiles over the cores. --noconftest: these tests need no harness plugin.
start=$(date +%s)
python3 -m pytest tests/impl/test_kernels_*.py -q -p no:cacheprovider --noconftest -n 14 2>&1 | tee "$OUT/kernel_tests.log" \
  | tail -n 25
test_status=${PIPESTATUS[0]}
echo "kernel tests: exit $test_status in $(( $(date +%s) - start )) s"
[ "$test_status" -eq 0 ] || status=1

case "$MODE" in
  tests) ;;
  tune)
    python3 -m tools.bench_woq_gpu --tune --out "$OUT" "$@" 2>&1 | tee "$OUT/tune.log" | grep -v "^precompiled" | tail -n 80
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    ;;
  bench)
    python3 -m tools.bench_woq_gpu --out "$OUT" "$@" 2>&1 | tee "$OUT/bench.log" | tail -n 70
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    ;;
  all)
    python3 -m tools.bench_woq_gpu --tune --out "$OUT" > "$OUT/tune.log" 2>&1
    [ $? -eq 0 ] || status=1
    sed -n '/^best per shape/,$p' "$OUT/tune.log"
    python3 -m tools.bench_woq_gpu --out "$OUT" --configs "$OUT/tuned_configs.json" "$@" 2>&1 \
      | tee "$OUT/bench.log" | grep -v "^precompiled" | tail -n 60
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    ;;
  *)
    echo "gpu_run.sh: unknown mode '$MODE' (bench, tune, all, tests, matrix, perf, gpus, tables, cpu)" >&2
    exit 2
    ;;
esac
exit $status
