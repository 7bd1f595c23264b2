#!/bin/bash
# Run: bench/instructions.sh SERVER APP WORKLOAD [SECS]
#   e.g. bench/instructions.sh protoloop echo echo1k
#        bench/instructions.sh tokio rpc rpc32x10 6
#        bench/instructions.sh protoloop tls tls10k   (makes its own certificate)
#
# User-space instructions per request of one benchmark server, counted by
# valgrind's callgrind: a figure that does not move with the noise of a
# shared machine, unlike CPU time. The server runs under callgrind (about
# 50x slower, so it is always the bottleneck: more events per wake-up than
# in a native run), the load generator natively. The count covers the
# server's whole life, start-up included; with 50,000 requests or more that
# adds a few instructions per request. The annotated profile is left in
# target/bench-instructions/SERVER.APP.WORKLOAD.out for callgrind_annotate.
set -euo pipefail
SERVER=$1 APP=$2 WORKLOAD=$3 SECS=${4:-4}
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
cd "$(dirname "$0")/.."
B=$(cargo bench --bench bench --no-run --message-format=json 2>/dev/null |
    grep '"kind":\["bench"\]' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -x "$B" ] || { echo "could not build the bench binary" >&2; exit 1; }
OUT=target/bench-instructions
mkdir -p "$OUT"
PROFILE="$OUT/$SERVER.$APP.$WORKLOAD.out"
LOG="$OUT/$SERVER.$APP.$WORKLOAD.log"
# The server exits when its stdin closes: hold it open with a FIFO.
FIFO=$(mktemp -u); mkfifo "$FIFO"
sleep $((SECS + 60)) > "$FIFO" &
HOLD=$!
TLS=()
if [ "$APP" = tls ]; then
    "$B" --write-cert "$OUT/cert" > /dev/null
    TLS=(--cert "$OUT/cert/cert.pem" --key "$OUT/cert/key.pem")
fi
valgrind --tool=callgrind --callgrind-out-file="$PROFILE" \
    "$B" --serve "$SERVER" --app "$APP" "${TLS[@]}" --listen 127.0.0.1:0 < "$FIFO" > "$LOG.stdout" 2> "$LOG" &
VG=$!
ADDR=
for _ in $(seq 1 150); do
    ADDR=$(awk '/^listening/ {print $2}' "$LOG.stdout")
    [ -n "$ADDR" ] && break
    sleep 0.2
done
[ -n "$ADDR" ] || { echo "the server did not start: see $LOG" >&2; kill $VG $HOLD; exit 1; }
LOAD=$("$B" --load "$WORKLOAD" --connect "$ADDR" --secs "$SECS")
kill $HOLD; wait $VG || true; rm -f "$FIFO"
INSTR=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$LOG")
# Divide by every request the server handled, the warm-up's too: the count
# covers its whole life.
REQS=$(echo "$LOAD" | sed -n 's/^with the warm-up: \([0-9]*\) requests.*/\1/p')
echo "$LOAD"
echo "$SERVER $APP $WORKLOAD: $((INSTR / REQS)) user-space instructions per request ($REQS requests)"
