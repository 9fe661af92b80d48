#!/bin/sh
# bench/clocks.sh: what the GPU ran at while a benchmark phase ran (bench/run.sh). An H200 running
# our attention kernels back to back draws its 700 W limit and lowers its SM clock (s13: 1710-1850
# MHz under "SW power cap" vs 1980 idle), so a timing depends on the clock it ran at: every phase's
# samples go to a CSV and a one-line summary goes beside its figures.
#   sh bench/clocks.sh start FILE     sample every 100 ms into FILE (background); prints the PID
#   sh bench/clocks.sh summary FILE   "SM clock median M MHz (min A, max B), power cap P% of N
#                                     samples, power max W W"
# Columns: clocks.sm [MHz], power.draw [W], clocks_event_reasons.active (bit 0x4 = SW power cap).
case "$1" in
start)
    command -v nvidia-smi >/dev/null || exit 0
    nvidia-smi --query-gpu=clocks.sm,power.draw,clocks_event_reasons.active \
        --format=csv,noheader,nounits -lms 100 > "$2" 2>/dev/null &
    echo $!
    ;;
summary)
    [ -s "$2" ] || { echo "no clock samples"; exit 0; }
    # median from the sorted clocks; the cap bit read from the hex mask's last digit
    sort -t, -k1,1n "$2" | awk -F', *' '
        $1 ~ /^[0-9]+$/ { c[n++] = $1; if ($2 + 0 > pw) pw = $2 + 0
                          d = substr($3, length($3)); if (index("4567cdefCDEF", d)) cap++ }
        END { if (!n) { print "no clock samples"; exit }
              printf "SM clock median %d MHz (min %d, max %d), power cap %.0f%% of %d samples, power max %.0f W\n",
                     c[int((n - 1) / 2)], c[0], c[n - 1], 100 * cap / n, n, pw }'
    ;;
*)
    echo "usage: sh bench/clocks.sh start FILE | summary FILE" >&2
    exit 2
    ;;
esac
