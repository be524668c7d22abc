#!/usr/bin/env bash
# The gateway against nginx and a default httputil.ReverseProxy, all in front
# of the same upstream, in one run: peak req/s and p50/p99 under wrk, then
# latency at a fixed rate of half mercato (b)'s peak. See bench/README.md.
#
#   bash bench/gateway/run.sh
#
# Environment: DURATION (wrk runs, default 15s), LOAD_DURATION (fixed-rate
# runs, default 10s, after 2s of warm-up), PROFILE=0 to skip the CPU profile,
# OUT (results file, default bench/gateway/results-<UTC date>.txt), NOTE (a
# line for the results file, such as "trial run on a shared machine"),
# PROXIES_ENV (environment of the Go proxies' process, such as GOGC=400).
set -euo pipefail

cd "$(dirname "$0")/../.."
DURATION=${DURATION:-15s}
LOAD_DURATION=${LOAD_DURATION:-10s}
PROFILE=${PROFILE:-1}
OUT=${OUT:-bench/gateway/results-$(date -u +%Y-%m-%d).txt}
NOTE=${NOTE:-}
PROXIES_ENV=${PROXIES_ENV:-}

sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
	pkg=nginx-light
	apt-cache show nginx-light >/dev/null 2>&1 || pkg=nginx
	$sudo apt-get install -y "$pkg" wrk >/dev/null
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

work=$(mktemp -d /tmp/gateway-bench.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

echo "building into $work"
go build -o "$work/gwbench" ./bench/gateway

# wait_ready FILE: until the program has printed READY=1 (10 s at most).
wait_ready() {
	for _ in $(seq 100); do
		grep -q '^READY=1' "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "no READY in $1:" >&2
	cat "$1" "$1.err" >&2 || true
	exit 1
}
# value KEY FILE
value() { sed -n "s/^$1=//p" "$2"; }

"$work/gwbench" upstream >"$work/upstream.env" 2>"$work/upstream.env.err" &
pids+=($!)
wait_ready "$work/upstream.env"
UPSTREAM=$(value UPSTREAM "$work/upstream.env")

env $PROXIES_ENV "$work/gwbench" proxies -upstream "$UPSTREAM" -dir "$work" -cpuprofile "$work/cpu.out" >"$work/proxies.env" 2>"$work/proxies.env.err" &
proxies_pid=$!
pids+=("$proxies_pid")
wait_ready "$work/proxies.env"
REVERSEPROXY=$(value REVERSEPROXY "$work/proxies.env")
POOLED=$(value REVERSEPROXY_POOLED "$work/proxies.env")
RP_H1=$(value REVERSEPROXY_H1 "$work/proxies.env")
MERCATO_A=$(value MERCATO_A "$work/proxies.env")
MERCATO_B=$(value MERCATO_B "$work/proxies.env")
MERCATO_C=$(value MERCATO_C "$work/proxies.env")
TOKEN=$(value TOKEN "$work/proxies.env")

# nginx on a free port, as a reverse proxy with keep-alive to the upstream.
free_port() {
	while :; do
		p=$((20000 + RANDOM % 30000))
		(echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
}
NGINX=127.0.0.1:$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes 2;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    upstream bench {
        server $UPSTREAM;
        keepalive 64;
    }
    server {
        listen $NGINX;
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
"$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
pids+=($!)

# Every contestant answers 200 before anything is measured; (b) refuses a
# request without a token, so the token is really checked.
auth="Authorization: Bearer $TOKEN"
for _ in $(seq 100); do
	curl -fs -o /dev/null "http://$NGINX/api/products" && break
	sleep 0.1
done
for a in "$UPSTREAM" "$NGINX" "$REVERSEPROXY" "$POOLED" "$RP_H1" "$MERCATO_A"; do
	curl -fsS -o /dev/null "http://$a/api/products"
done
for a in "$MERCATO_B" "$MERCATO_C"; do
	curl -fsS -o /dev/null -H "$auth" "http://$a/api/products"
	code=$(curl -s -o /dev/null -w '%{http_code}' "http://$a/api/products")
	[ "$code" = 401 ] || { echo "$a answered $code without a token, want 401" >&2; exit 1; }
done

# to_ms VALUE: wrk's 812.00us / 1.20ms / 1.01s in milliseconds.
to_ms() {
	awk -v v="$1" 'BEGIN {
		if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
		else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
		else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
		else printf "?" }'
}

declare -A rps p50 p99 bad
# bench_wrk NAME ADDR [wrk args]: one closed-loop run at 64 connections.
bench_wrk() {
	local name=$1 addr=$2
	shift 2
	echo "wrk: $name" >&2
	wrk -t2 -c64 -d"$DURATION" --latency "$@" "http://$addr/api/products" >"$work/wrk-$name.txt"
	rps[$name]=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$work/wrk-$name.txt")
	p50[$name]=$(to_ms "$(awk '$1 == "50%" {print $2}' "$work/wrk-$name.txt")")
	p99[$name]=$(to_ms "$(awk '$1 == "99%" {print $2}' "$work/wrk-$name.txt")")
	# Non-2xx answers and socket errors would make a fast run meaningless.
	bad[$name]=$(awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}' "$work/wrk-$name.txt")
}

bench_wrk direct "$UPSTREAM"
bench_wrk nginx "$NGINX"
bench_wrk reverseproxy "$REVERSEPROXY"
bench_wrk rp-pooled "$POOLED"
bench_wrk rp-h1 "$RP_H1"
bench_wrk mercato-a "$MERCATO_A"
bench_wrk mercato-b "$MERCATO_B" -H "$auth"
bench_wrk mercato-c "$MERCATO_C" -H "$auth"

# Latency at half of (b)'s peak, open loop (see load.go): the added p99 is
# (b)'s p99 minus the direct call's at the same rate.
half=$((${rps[mercato-b]} / 2))
declare -A lp50 lp99 lrate lerr
bench_load() {
	local name=$1 addr=$2
	shift 2
	echo "load: $name at $half/s" >&2
	"$work/gwbench" load -url "http://$addr/api/products" -rate "$half" -duration "$LOAD_DURATION" -warmup 2s -c 64 "$@" >"$work/load-$name.txt"
	lrate[$name]=$(grep -o 'achieved=[0-9]*' "$work/load-$name.txt" | cut -d= -f2)
	lp50[$name]=$(grep -o 'p50_ms=[0-9.]*' "$work/load-$name.txt" | cut -d= -f2)
	lp99[$name]=$(grep -o 'p99_ms=[0-9.]*' "$work/load-$name.txt" | cut -d= -f2)
	lerr[$name]=$(grep -o 'errors=[0-9]*' "$work/load-$name.txt" | cut -d= -f2)
}
bench_load direct "$UPSTREAM"
bench_load mercato-b "$MERCATO_B" -H "$auth"
# The same rate through nginx and the bare Go proxy: what any proxy adds on
# this machine, for scale.
bench_load nginx "$NGINX"
bench_load rp-h1 "$RP_H1"

if [ "$PROFILE" = 1 ]; then
	echo "profile: mercato-b under wrk for 10s" >&2
	kill -USR1 "$proxies_pid"
	wrk -t2 -c64 -d10s -H "$auth" "http://$MERCATO_B/api/products" >/dev/null
	kill -USR2 "$proxies_pid"
	sleep 0.5 # the profile is written as the signal is handled
fi

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
verdict() { awk -v v="$1" -v t="$2" -v d="$3" 'BEGIN {print ((d == "min" ? v >= t : v < t) ? "met" : "MISSED")}'; }
r_nginx=$(ratio "${rps[mercato-b]}" "${rps[nginx]}")
r_rp=$(ratio "${rps[mercato-b]}" "${rps[reverseproxy]}")
added=$(awk -v a="${lp99[mercato-b]}" -v b="${lp99[direct]}" 'BEGIN {printf "%.3f", a - b}')

{
	echo "# bench/gateway/run.sh, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	[ -z "$NOTE" ] || echo "# $NOTE"
	[ -z "$PROXIES_ENV" ] || echo "# environment of the proxies' process: $PROXIES_ENV"
	echo "# commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ":(exclude)$OUT" 2>/dev/null || echo ' (with local changes)'), $(go version | cut -d' ' -f3), $(nproc) cores, $("$nginx_bin" -v 2>&1 | cut -d/ -f2), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
	echo "# load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo
	echo "wrk -t2 -c64 -d$DURATION --latency (closed loop, peak)"
	printf '%-14s %10s %9s %9s %7s\n' contestant req/s p50_ms p99_ms errors
	for n in direct nginx reverseproxy rp-pooled rp-h1 mercato-a mercato-b mercato-c; do
		printf '%-14s %10s %9s %9s %7s\n' "$n" "${rps[$n]}" "${p50[$n]}" "${p99[$n]}" "${bad[$n]}"
	done
	echo
	echo "fixed rate $half/s = half of mercato-b's peak, open loop, 64 connections, ${LOAD_DURATION} after 2s warm-up"
	printf '%-14s %10s %9s %9s %7s\n' target achieved p50_ms p99_ms errors
	for n in direct mercato-b nginx rp-h1; do
		printf '%-14s %10s %9s %9s %7s\n' "$n" "${lrate[$n]}" "${lp50[$n]}" "${lp99[$n]}" "${lerr[$n]}"
	done
	echo
	echo "targets (mercato-b: JWT + rate limit + access log to a file)"
	echo "mercato-b / nginx          $r_nginx  (target >= 0.45: $(verdict "$r_nginx" 0.45 min))"
	echo "mercato-b / reverseproxy   $r_rp  (target >= 1.5: $(verdict "$r_rp" 1.5 min))"
	echo "added p99 at half peak     ${added} ms  (target < 1 ms: $(verdict "$added" 1 max))"
	echo "added p99 at that rate: nginx $(awk -v a="${lp99[nginx]}" -v b="${lp99[direct]}" 'BEGIN {printf "%.3f", a - b}') ms, rp-h1 $(awk -v a="${lp99[rp-h1]}" -v b="${lp99[direct]}" 'BEGIN {printf "%.3f", a - b}') ms"
	echo "also / nginx: mercato-a $(ratio "${rps[mercato-a]}" "${rps[nginx]}"), mercato-c $(ratio "${rps[mercato-c]}" "${rps[nginx]}"), rp-pooled $(ratio "${rps[rp-pooled]}" "${rps[nginx]}"), rp-h1 $(ratio "${rps[rp-h1]}" "${rps[nginx]}")"
	echo "mercato-b / rp-h1          $(ratio "${rps[mercato-b]}" "${rps[rp-h1]}")  (the gateway's own cost over a bare Go proxy on its transport)"
	if [ "$PROFILE" = 1 ] && [ -s "$work/cpu.out" ]; then
		echo
		echo "CPU profile of the proxies process, mercato-b under wrk -t2 -c64 for 10s (go tool pprof -top -nodecount=20)"
		go tool pprof -top -nodecount=20 "$work/gwbench" "$work/cpu.out" 2>/dev/null | sed -n '/^Showing\|flat%/,$p'
		echo
		echo "by cumulative time (go tool pprof -top -cum -nodecount=30)"
		go tool pprof -top -cum -nodecount=30 "$work/gwbench" "$work/cpu.out" 2>/dev/null | sed -n '/flat%/,$p'
	fi
} | tee "$OUT"
echo "results in $OUT; raw wrk and load outputs in $work"
