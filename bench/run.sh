#!/bin/sh
# bench/run.sh: the attention benchmark on a GPU machine, end to end (`make bench`; docs/bench.md).
#   sh bench/run.sh [OUT]        (default OUT: bench-out)
# 1. gpu-bundle/mslab-gpu-bench --attn, then --lm (ours; LM=0 skips the end-to-end training rows)
#    -> OUT/ours.tsv, OUT/bench.txt; the bundle's binaries
#    ($BUNDLE/mslab and $BUNDLE/mslab-gpu-bench) when both are there, else `make` builds them;
# 2. bench/peers.py (the PyTorch peers in $PEERS, default peers/, else ../shared/bench or
#    shared/bench) -> OUT/peers.tsv, OUT/peers_*.log;
#    skipped with a message when python3 or torch is missing, or PEERS=0;
# 3. mslab bench-record -> the table (OUT/table.txt) and a run in $DB (default results.db);
# 4. mslab plot speed-vs-length -> OUT/plots/speed_vs_length.{png,svg,gp}.
# 5. bench/clocks.sh samples the SM clock / power / power-cap flag during steps 1 and 2
#    (OUT/clocks_ours.csv, OUT/clocks_peers.csv) and adds a summary of each to the table's note:
#    the H200 runs these kernels at its 700 W cap, below its 1980 MHz clock.
# BENCH_ARGS go to mslab-gpu-bench (e.g. "--max-len 131072 --reps 7"); NOTE to bench-record --note.
# T_OURS / T_PEERS: time limits in seconds of steps 1 and 2 (default 1500 / 2400).
# In two shorter commands (each under a 10-minute limit): PEERS=0 (ours, record, plot), then
# OURS=0 with the same OUT (the peers; records again, joining OUT/ours.tsv with the new peers.tsv).
OUT=${1:-bench-out}
BUNDLE=${BUNDLE:-gpu-bundle}
BUILD=${BUILD:-build}
DB=${DB:-results.db}
PEERS=${PEERS:-peers}
# the peer scripts: $PEERS, else the shared folder they come from (../shared/bench, shared/bench)
if [ "$PEERS" != 0 ] && [ ! -f "$PEERS/torch_peers_dense.py" ]; then
    for d in ../shared/bench shared/bench; do
        [ -f "$d/torch_peers_dense.py" ] && { PEERS=$d; break; }
    done
fi
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -2

if [ -x "$BUNDLE/mslab" ] && [ -x "$BUNDLE/mslab-gpu-bench" ]; then
    MSLAB=$BUNDLE/mslab GB=$BUNDLE/mslab-gpu-bench
    BIN=$BUNDLE
    [ -x "$BIN/mslab-gpu-tests" ] && . tests/gpu/env.sh # cuBLAS / cudart from PyTorch's packages
else
    echo "no $BUNDLE/mslab + $BUNDLE/mslab-gpu-bench: building"
    make mslab "$BUILD/mslab-gpu-bench" || { echo "bench: build failed"; exit 1; }
    MSLAB=./mslab GB=$BUILD/mslab-gpu-bench
fi

if [ "${OURS:-1}" = 0 ]; then
    echo "== ours: skipped (OURS=0): $OUT/ours.tsv from an earlier run =="
else
    echo "== ours: $GB --attn $BENCH_ARGS =="
    CK=$(sh bench/clocks.sh start "$OUT/clocks_ours.csv")
    # shellcheck disable=SC2086
    timeout "${T_OURS:-1500}" "$GB" --attn $BENCH_ARGS --tsv "$OUT/ours.tsv" 2>&1 | tee "$OUT/bench.txt"
    if [ "${LM:-1}" != 0 ]; then # end to end: training steps of the peers' 162M LM (LM=0 skips)
        echo "== ours: $GB --lm =="
        timeout "${T_LM:-120}" "$GB" --lm --tsv "$OUT/ours.tsv" 2>&1 | tee -a "$OUT/bench.txt"
    fi
    [ -n "$CK" ] && kill "$CK" 2>/dev/null
    echo "ours ran at: $(sh bench/clocks.sh summary "$OUT/clocks_ours.csv")" | tee -a "$OUT/bench.txt"
fi
[ -s "$OUT/ours.tsv" ] || { echo "bench: no rows in $OUT/ours.tsv (see $OUT/bench.txt)"; exit 1; }

PEERS_TSV=
if [ "$PEERS" = 0 ]; then
    echo "== peers: skipped (PEERS=0) =="
elif ! command -v python3 >/dev/null; then
    echo "== peers: skipped (no python3) =="
elif ! python3 -c "import torch" 2>/dev/null; then
    echo "== peers: skipped (python3 has no torch) =="
elif [ ! -f "$PEERS/torch_peers_dense.py" ] && [ ! -f "$PEERS/torch_peers_sparse.py" ]; then
    echo "== peers: skipped (no torch_peers_*.py in $PEERS/: copy them from ../shared/bench/) =="
else
    echo "== peers: python3 bench/peers.py $PEERS =="
    CK=$(sh bench/clocks.sh start "$OUT/clocks_peers.csv")
    timeout "${T_PEERS:-2400}" python3 bench/peers.py "$PEERS" --out "$OUT/peers.tsv" --log-dir "$OUT"
    echo "peers exit $?"
    [ -n "$CK" ] && kill "$CK" 2>/dev/null
    echo "peers ran at: $(sh bench/clocks.sh summary "$OUT/clocks_peers.csv")"
    [ -s "$OUT/peers.tsv" ] && PEERS_TSV=$OUT/peers.tsv
fi

echo "== record: $MSLAB bench-record (db $DB) =="
for ph in ours peers; do # the clocks each side ran at, into the run's note
    [ -s "$OUT/clocks_$ph.csv" ] &&
        NOTE="${NOTE:+$NOTE; }$ph: $(sh bench/clocks.sh summary "$OUT/clocks_$ph.csv")"
done
"$MSLAB" bench-record "$OUT/ours.tsv" $PEERS_TSV --db "$DB" ${NOTE:+--note "$NOTE"} \
    > "$OUT/table.txt" 2>&1
status=$?
cat "$OUT/table.txt"
# no gnuplot here is no failure: the .gp script is written, `mslab plot` draws it from the db anywhere
"$MSLAB" plot speed-vs-length --db "$DB" --out "$OUT/plots" 2>&1 ||
    echo "bench: figure not drawn here; copy $DB and run ./mslab plot speed-vs-length --db FILE"
exit $status
