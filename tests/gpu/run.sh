#!/bin/sh
# tests/gpu/run.sh: everything the GPU machine should run for the CUDA backend, in one command.
#   sh tests/gpu/run.sh [BIN_DIR] [OUT_DIR]
# BIN_DIR holds mslab-gpu-tests (and mslab) built by `make gpu-bundle` (default gpu-bundle/);
# OUT_DIR receives parity.txt, smoke.txt, bench.txt and sanitizer logs (default /tmp/mslab-gpu).
# SANITIZE=0 skips compute-sanitizer (memcheck + racecheck of --quick: about 3 minutes), BENCH=0
# the benchmark, TRAIN=0 experiments/gpu_train.lua (its results.db lands in OUT_DIR; step counts
# DEMO_STEPS / BIG_STEPS / MS_STEPS, each run once per precision in PRECISIONS, default bf16,fp32).
# SAN_FILTER restricts the sanitizers to the checks whose op name contains it (e.g. sparse, bf16:
# racecheck of the whole quick suite takes longer than one call may). Every stage runs under `timeout` (T_PARITY, T_TRAIN, T_SMOKE,
# T_BENCH, T_SAN seconds) so one slow stage cannot eat the others' time.
# tests/gpu/env.sh finds cuBLAS / cudart 13 in PyTorch's pip packages when the loader does not; their
# folders are added to LD_LIBRARY_PATH.
BIN=${1:-gpu-bundle}
OUT=${2:-/tmp/mslab-gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -2

. tests/gpu/env.sh
ldd "$BIN/mslab-gpu-tests" | grep -E "not found|cublas|cudart"

echo "== parity (CUDA vs CPU) =="
timeout ${T_PARITY:-240} "$BIN/mslab-gpu-tests" > "$OUT/parity.txt" 2>&1
status=$?
cat "$OUT/parity.txt"
echo "parity exit $status"

if [ -x "$BIN/mslab" ] && [ -f data/kjv.txt ] && [ "${TRAIN:-1}" != 0 ]; then
    echo "== training throughput: experiments/gpu_train.lua =="
    rm -f "$OUT/results.db"
    timeout ${T_TRAIN:-200} "$BIN/mslab" run experiments/gpu_train.lua --db "$OUT/results.db" -- \
        data/kjv.txt ${DEMO_STEPS:-1200} ${BIG_STEPS:-200} ${MS_STEPS:-50} cuda ${PRECISIONS:-bf16,fp32} 2>&1 |
        grep -v "eta" > "$OUT/train.txt"
    echo "train exit $?"
    cat "$OUT/train.txt"
    [ -f "$OUT/results.db" ] && "$BIN/mslab" runs --db "$OUT/results.db" 2>&1 | tail -8
fi

if [ -x "$BIN/mslab" ] && [ -f data/kjv.txt ]; then
    echo "== smoke: tests/gpu/smoke.lua (quickstart model, cuda then cpu) =="
    rm -f "$OUT/smoke.db"
    timeout ${T_SMOKE:-60} "$BIN/mslab" run tests/gpu/smoke.lua --db "$OUT/smoke.db" -- data/kjv.txt ${SMOKE_STEPS:-300} 2>&1 | grep -v "step .*eta" | tee "$OUT/smoke.txt"
fi

if [ -x "$BIN/mslab-gpu-bench" ] && [ "${BENCH:-1}" != 0 ]; then
    echo "== benchmark =="
    timeout ${T_BENCH:-60} "$BIN/mslab-gpu-bench" 2>&1 | tee "$OUT/bench.txt"
fi

if command -v compute-sanitizer >/dev/null && [ "${SANITIZE:-1}" != 0 ]; then
    for tool in memcheck racecheck; do
        echo "== compute-sanitizer --tool $tool (quick shapes${SAN_FILTER:+, filter $SAN_FILTER}) =="
        timeout ${T_SAN:-100} compute-sanitizer --tool $tool --error-exitcode 9 "$BIN/mslab-gpu-tests" --quick \
            $SAN_FILTER > "$OUT/sanitizer-$tool.txt" 2>&1
        echo "exit $? ($OUT/sanitizer-$tool.txt)"
        grep -E "ERROR SUMMARY|RACECHECK SUMMARY|passed,|Error" "$OUT/sanitizer-$tool.txt" | tail -4
    done
fi
exit $status
