#!/usr/bin/env bash
# One server and ten clients on loopback over mutual TLS, from a fresh CA.
#   bash examples/network/loopback.sh [OUT_DIR]
# Writes the CA (and its private key) to OUT/ca, the server's credentials to OUT/pki/server,
# the clients' to OUT/pki/clients, the server's state and results.json to OUT/server, each
# client's identity key to OUT/clients/NAME, and logs to OUT/logs. On a real deployment each
# directory of OUT/pki goes to its own machine and OUT/ca stays with the operator.
set -euo pipefail
cd "$(dirname "$0")/../.."
FEDFORT="${FEDFORT:-.venv/bin/fedfort}"
OUT="${1:-runs/network}"
CONFIG=examples/network/federation.toml
CLIENTS=10
rm -rf "$OUT"
mkdir -p "$OUT/logs"

"$FEDFORT" certs init --dir "$OUT/ca" --federation loopback-demo
"$FEDFORT" certs issue --dir "$OUT/ca" --out "$OUT/pki/server" --name server --role server
"$FEDFORT" certs issue --dir "$OUT/ca" --out "$OUT/pki/clients" --clients "$CLIENTS"

"$FEDFORT" server --config "$CONFIG" --pki "$OUT/pki/server" --out "$OUT/server" \
    > "$OUT/logs/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; kill $(jobs -p) 2>/dev/null || true' EXIT

pids=()
for ((k = 0; k < CLIENTS; k++)); do
    name=$(printf "client-%03d" "$k")
    "$FEDFORT" client --config "$CONFIG" --data "partition:$k" --pki "$OUT/pki/clients" \
        --name "$name" --state "$OUT/clients/$name" > "$OUT/logs/$name.log" 2>&1 &
    pids+=($!)
done

status=0
wait "$SERVER" || status=$?
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
trap - EXIT
grep -h "^round\|fedfort server:" "$OUT/logs/server.log"
echo "results: $OUT/server/results.json (exit status $status)"
exit "$status"
