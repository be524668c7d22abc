#!/usr/bin/env bash
# How fast `mercato up` answers the catalog, and how much memory it holds
# when idle. Usage: bench/startup.sh [runs]   (default 5)
#
# Each run starts the built binary on a fresh --data (a cold start: migrations,
# catalog seed, key generation) and then again on the same --data (a warm
# start), times from exec to the first 200 from GET /api/products through the
# gateway, then leaves it idle for 5 s and reads VmRSS from /proc.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
bin=$(mktemp -d)/mercato
go build -o "$bin" ./cmd/mercato

ms() { date +%s%3N; }

measure() { # data dir -> "startup_ms rss_mb"
  local data=$1 port pid t0 t1 rss
  port=$(shuf -i 20000-60000 -n 1)
  t0=$(ms)
  "$bin" up --addr "127.0.0.1:$port" --data "$data" >/dev/null 2>&1 &
  pid=$!
  until curl -sf -o /dev/null "http://127.0.0.1:$port/api/products"; do
    kill -0 "$pid" 2>/dev/null || { echo "mercato exited" >&2; exit 1; }
    sleep 0.01
  done
  t1=$(ms)
  sleep 5
  rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$pid/status")
  kill -INT "$pid"; wait "$pid" || true
  echo "$((t1 - t0)) $rss"
}

printf "%-5s %-6s %12s %10s\n" run start catalog_ms idle_rss_mb
for i in $(seq "$runs"); do
  data=$(mktemp -d)
  read -r c_ms c_rss < <(measure "$data")
  printf "%-5s %-6s %12s %10s\n" "$i" cold "$c_ms" "$c_rss"
  read -r w_ms w_rss < <(measure "$data")
  printf "%-5s %-6s %12s %10s\n" "$i" warm "$w_ms" "$w_rss"
  rm -rf "$data"
done
