#!/usr/bin/env bash
# wrk vs Squall on one core each: same target, same connection count, same duration.
#
# The target is pinned to one CPU (TARGET_CPU, default 0) and each generator in
# turn to another (GEN_CPU, default 1). wrk runs with one thread; Squall runs as
# one coordinator process with one in-process local worker and one engine
# thread (`--local-workers 1 --threads 1`), with full per-endpoint recording
# (latency, service and TTFB HDR histograms, status and error counts).
#
# Prints requests/s, p50 and p99 of both and the Squall/wrk throughput ratio,
# the CPU each process used (to see whether the target or the generator was the
# bottleneck), and for the demo target cross-checks Squall's request count
# against the target's own `served` counter.
#
# Usage: bench/wrk_vs_squall.sh
# Environment:
#   DURATION=10s         length of each measured run (wrk and Squall syntax: 10s, 1m)
#   CONNECTIONS=50       wrk -c / Squall users (one keep-alive connection each)
#   TARGETS="demo nginx" which targets: demo (`coordinator target`, axum) and/or nginx
#   RUNS=1               measured rounds per target (each round: wrk, then Squall)
#   WARMUP=2s            wrk warm-up against each target before measuring (0 = none)
#   TARGET_CPU=0 GEN_CPU=1  CPUs for the target and for the generator
#   DEMO_PORT, NGINX_PORT   loopback ports (default: a free port each)
#   QUIET_MAX=10         before each run, wait until the two CPUs are at most this
#   QUIET_TIMEOUT=120    busy (% of a core) from other processes, for at most this long (s)
#   NOISE_MAX=15         a round where other processes used more than this (% of a
#                        core) on the two CPUs is marked noisy and left out of the medians
#   SKIP_BUILD=1         use the existing target/release binaries
#   OUT=bench/out        results go to $OUT/<timestamp>/ (bench/out is gitignored)
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-50}
TARGETS=${TARGETS:-"demo nginx"}
RUNS=${RUNS:-1}
WARMUP=${WARMUP:-2s}
TARGET_CPU=${TARGET_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
SKIP_BUILD=${SKIP_BUILD:-0}
QUIET_MAX=${QUIET_MAX:-10}
QUIET_TIMEOUT=${QUIET_TIMEOUT:-120}
NOISE_MAX=${NOISE_MAX:-15}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/release
COORDINATOR=$BIN_DIR/coordinator
STAMP=$(date +%Y%m%d-%H%M%S)
OUT_DIR=${OUT:-$ROOT/bench/out}/$STAMP
WORK=$(mktemp -d -t squall-bench.XXXXXX)

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- cleanup ---
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]:-}"; do
        [[ -n $pid ]] || continue
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local keep=() p
    for p in "${PIDS[@]:-}"; do [[ $p == "$pid" || -z $p ]] || keep+=("$p"); done
    PIDS=("${keep[@]:-}")
}

# ----------------------------------------------------------- requirements ---
need_root_for_apt() {
    [[ $(id -u) -eq 0 ]] && return 0
    command -v sudo >/dev/null || die "installing $* needs root (or sudo)"
}
APT_UPDATED=0
apt_install() {
    need_root_for_apt "$@"
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    if [[ $APT_UPDATED -eq 0 ]]; then
        log "apt-get update"
        "${sudo[@]}" apt-get update -qq
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    # Keep the package's own service (nginx on :80) from being started: this
    # script runs its own instance on a loopback port with its own config.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod +x "$policy"
        made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >&2 \
        || { [[ $made_policy -eq 0 ]] || "${sudo[@]}" rm -f "$policy"; die "apt-get install $* failed"; }
    [[ $made_policy -eq 0 ]] || "${sudo[@]}" rm -f "$policy"
}

command -v python3 >/dev/null || die "python3 is required (report parsing)"
command -v flock >/dev/null || apt_install util-linux
command -v taskset >/dev/null || apt_install util-linux
command -v wrk >/dev/null || apt_install wrk
want_nginx=0
for t in $TARGETS; do
    case $t in
        demo) ;;
        nginx) want_nginx=1 ;;
        *) die "unknown target '$t' (TARGETS may contain: demo nginx)" ;;
    esac
done
NGINX=$(command -v nginx || true)
[[ -z $NGINX && -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx
if [[ $want_nginx -eq 1 && -z $NGINX ]]; then
    apt_install nginx-light || true
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    [[ -x $NGINX ]] || die "nginx is not available after install"
fi

CORES=$(nproc)
if [[ $TARGET_CPU == "$GEN_CPU" ]]; then
    die "TARGET_CPU and GEN_CPU must differ"
fi
taskset -c "$TARGET_CPU" true 2>/dev/null || die "cannot pin to CPU $TARGET_CPU (nproc=$CORES)"
taskset -c "$GEN_CPU" true 2>/dev/null || die "cannot pin to CPU $GEN_CPU (nproc=$CORES)"
[[ $CONNECTIONS =~ ^[0-9]+$ && $CONNECTIONS -ge 1 ]] || die "CONNECTIONS must be a positive integer"
[[ $RUNS =~ ^[0-9]+$ && $RUNS -ge 1 ]] || die "RUNS must be a positive integer"

# ------------------------------------------------------------------ build ---
if [[ $SKIP_BUILD != 1 ]]; then
    log "cargo build --release --bins (fat LTO: this can take several minutes)"
    (cd "$ROOT" && cargo build --release --bins) >&2
fi
[[ -x $COORDINATOR ]] || die "$COORDINATOR not found (build it, or unset SKIP_BUILD)"

# Two benchmarks on the same CPUs would measure each other: one at a time.
LOCK=${TMPDIR:-/tmp}/squall-wrk-vs-squall.lock
exec 9>"$LOCK"
if ! flock -n 9; then
    log "another wrk_vs_squall.sh is running (lock $LOCK); waiting for it"
    flock 9
fi

mkdir -p "$OUT_DIR"
log "results: $OUT_DIR"

# ---------------------------------------------------------------- helpers ---
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# GET a URL; prints the body, fails on a connection error or non-2xx.
http_get() {
    python3 -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())' "$1"
}

wait_ready() {
    local url=$1 pid=$2
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || die "target process $pid exited (url $url)"
        http_get "$url" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "target at $url did not become ready"
}

# CPU ticks (user+system) of a process and its direct children (nginx workers).
proc_ticks() {
    python3 - "$1" <<'PY'
import os, sys
root = int(sys.argv[1])
total = 0
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        with open(f"/proc/{d}/stat") as f:
            s = f.read()
    except OSError:
        continue
    fields = s[s.rindex(")") + 2:].split()
    pid, ppid = int(d), int(fields[1])
    if pid == root or ppid == root:
        total += int(fields[11]) + int(fields[12])
print(total)
PY
}
CLK_TCK=$(getconf CLK_TCK)

# timed.py OUT CMD...: runs CMD and writes "cpu_seconds wall_seconds" of it to OUT (the CPU
# time of the command and its children, from getrusage).
cat >"$WORK/timed.py" <<'PY'
import resource, subprocess, sys, time
out = sys.argv[1]
t0 = time.monotonic()
rc = subprocess.run(sys.argv[2:]).returncode
wall = time.monotonic() - t0
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(out, "w") as f:
    f.write(f"{ru.ru_utime + ru.ru_stime:.3f} {wall:.3f}\n")
sys.exit(rc)
PY

served() { # the demo target's served counter
    http_get "$1/__squall/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["served"])'
}

# wrk output -> "rps p50_ms p99_ms requests non2xx socket_errors"
parse_wrk() {
    python3 - "$1" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
unit = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
def lat(pct):
    m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
    if not m:
        sys.exit(f"no {pct}% latency line in wrk output {sys.argv[1]}")
    return float(m.group(1)) * unit[m.group(2)]
m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
if not m:
    sys.exit(f"no Requests/sec line in wrk output {sys.argv[1]}")
rps = float(m.group(1))
req = re.search(r"^\s*(\d+) requests in", text, re.M)
non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
errs = sum(int(x) for x in sock.groups()) if sock else 0
print(f"{rps:.1f} {lat(50):.3f} {lat(99):.3f} {req.group(1) if req else 0} "
      f"{non2xx.group(1) if non2xx else 0} {errs}")
PY
}

# Squall report.json -> "rps p50_ms p99_ms requests failures duration_s"
parse_squall() {
    python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
t = r["totals"]
lat = t["latency_ms"]
print("%.1f %.3f %.3f %d %d %s" % (t["rps"], lat["p50"], lat["p99"], t["requests"], t["failures"], r["duration_s"]))
' "$1"
}

# ---------------------------------------------------------------- targets ---
TARGET_PID=""
TARGET_URL=""

start_demo() {
    local port=${DEMO_PORT:-$(free_port)}
    TARGET_URL="http://127.0.0.1:$port"
    taskset -c "$TARGET_CPU" "$COORDINATOR" target --bind "127.0.0.1:$port" \
        >"$OUT_DIR/demo-target.log" 2>&1 &
    TARGET_PID=$!
    PIDS+=("$TARGET_PID")
    wait_ready "$TARGET_URL/api/fast" "$TARGET_PID"
}

start_nginx() {
    local port=${NGINX_PORT:-$(free_port)} dir=$WORK/nginx
    mkdir -p "$dir/www/api" "$dir/tmp"
    printf 'ok' >"$dir/www/api/fast"
    local user_line=""
    [[ $(id -u) -eq 0 ]] && user_line="user root;"
    cat >"$dir/nginx.conf" <<EOF
$user_line
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    default_type text/plain;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 100000000;
    open_file_cache max=16;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen 127.0.0.1:$port;
        root $dir/www;
    }
}
EOF
    cp "$dir/nginx.conf" "$OUT_DIR/nginx.conf"
    TARGET_URL="http://127.0.0.1:$port"
    taskset -c "$TARGET_CPU" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" \
        >"$OUT_DIR/nginx.log" 2>&1 &
    TARGET_PID=$!
    PIDS+=("$TARGET_PID")
    wait_ready "$TARGET_URL/api/fast" "$TARGET_PID"
}

# -------------------------------------------------------------- generators ---
# Busy ticks (everything but idle and iowait) of the target's and the
# generator's CPUs together, from /proc/stat: other tenants' load shows up as
# busy time that neither the target nor the generator accounts for.
cpu_busy() {
    python3 - "$TARGET_CPU" "$GEN_CPU" <<'PY'
import sys, time
want = {f"cpu{c}" for c in sys.argv[1:]}
busy = 0
for line in open("/proc/stat"):
    f = line.split()
    if f and f[0] in want:
        v = [int(x) for x in f[1:]]
        busy += sum(v[:8]) - v[3] - v[4]
print(busy, f"{time.monotonic():.3f}")
PY
}

# Waits (up to QUIET_TIMEOUT seconds) until the two pinned CPUs are nearly idle,
# so that other processes on a shared machine do not skew a run.
quiet_sample() { # busy % (of one core) of the two CPUs over one second
    python3 - "$TARGET_CPU" "$GEN_CPU" "$CLK_TCK" <<'PY'
import sys, time
want = {f"cpu{c}" for c in sys.argv[1:3]}
def busy():
    b = 0
    for line in open("/proc/stat"):
        f = line.split()
        if f and f[0] in want:
            v = [int(x) for x in f[1:]]
            b += sum(v[:8]) - v[3] - v[4]
    return b, time.monotonic()
b0, t0 = busy()
time.sleep(1)
b1, t1 = busy()
print(int((b1 - b0) / int(sys.argv[3]) / (t1 - t0) * 100))
PY
}
wait_quiet() {
    local start=$SECONDS pct warned=0
    while :; do
        pct=$(quiet_sample)
        [[ $pct -le $QUIET_MAX ]] && return 0
        if [[ $warned -eq 0 ]]; then
            log "CPUs $TARGET_CPU,$GEN_CPU busy: ${pct}% of a core used by other processes; waiting up to ${QUIET_TIMEOUT}s"
            warned=1
        fi
        if ((SECONDS - start >= QUIET_TIMEOUT)); then
            log "WARNING: still ${pct}% busy; measuring anyway (see the 'other CPU' column)"
            return 0
        fi
    done
}

RESULTS=$OUT_DIR/results.tsv
printf 'target\trun\ttool\trps\tp50_ms\tp99_ms\trequests\terrors\tgen_cpu_pct\ttarget_cpu_pct\tother_cpu_pct\treq_per_gen_cpu_s\tserved_delta\n' >"$RESULTS"

# Measurement window bookkeeping shared by both tools.
target_alive() {
    kill -0 "$TARGET_PID" 2>/dev/null \
        || die "the $1 target (pid $TARGET_PID) exited during the benchmark; see $OUT_DIR/$1*.log"
}

before_run() {
    target_alive "$1"
    wait_quiet
    BEFORE_SERVED=""
    if [[ $1 == demo ]]; then BEFORE_SERVED=$(served "$TARGET_URL"); fi
    TT0=$(proc_ticks "$TARGET_PID")
    CB0=$(cpu_busy)
}

# add_row TARGET RUN TOOL RPS P50 P99 REQUESTS ERRORS: the CPU columns come
# from $WORK/usage (the generator) and the target's and the CPUs' tick counters.
add_row() {
    local tt1 cb1 delta="" gcpu wall
    cb1=$(cpu_busy)
    target_alive "$1"
    tt1=$(proc_ticks "$TARGET_PID")
    if [[ $1 == demo ]]; then delta=$(($(served "$TARGET_URL") - BEFORE_SERVED)); fi
    read -r gcpu wall <"$WORK/usage"
    # shellcheck disable=SC2086 # CB0 and cb1 are "ticks time" pairs, split on purpose
    python3 - "$@" "$gcpu" "$wall" "$TT0" "$tt1" $CB0 $cb1 "$CLK_TCK" "$delta" >>"$RESULTS" <<'PY'
import sys
(target, run, tool, rps, p50, p99, reqs, errs, gcpu, wall, tt0, tt1, cb0, w0, cb1, w1, hz,
 delta) = sys.argv[1:]
gcpu, wall, hz = float(gcpu), float(wall), int(hz)
tcpu = (int(tt1) - int(tt0)) / hz
# Busy time of the two CPUs over the window that neither process accounts for,
# as a share of the window (the helper scripts at the window's edges add a little).
window = float(w1) - float(w0)
other = max(0.0, (int(cb1) - int(cb0)) / hz - tcpu - gcpu) * wall / window
per_cpu = int(reqs) / gcpu if gcpu > 0 else 0
print("\t".join([target, run, tool, rps, p50, p99, reqs, errs, f"{gcpu / wall * 100:.0f}",
                 f"{tcpu / wall * 100:.0f}", f"{other / wall * 100:.0f}", f"{per_cpu:.0f}", delta]))
PY
    LAST_DELTA=$delta
}

run_wrk() {
    local target=$1 run=$2 file=$OUT_DIR/$1-wrk-$2.txt
    local rps p50 p99 reqs non2xx sockerr
    before_run "$target"
    log "$target run $run: wrk -t1 -c$CONNECTIONS -d$DURATION --latency"
    taskset -c "$GEN_CPU" python3 "$WORK/timed.py" "$WORK/usage" \
        wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$TARGET_URL/api/fast" >"$file"
    read -r rps p50 p99 reqs non2xx sockerr < <(parse_wrk "$file")
    add_row "$target" "$run" wrk "$rps" "$p50" "$p99" "$reqs" "$((non2xx + sockerr))"
}

run_squall() {
    local target=$1 run=$2 dir=$OUT_DIR/$1-squall-$2
    local scenario=$OUT_DIR/squall-bench.yaml rc=0
    local rps p50 p99 reqs fails _dur
    cat >"$scenario" <<YAML
# Generated by bench/wrk_vs_squall.sh: no think time, one task, like wrk.
host: http://127.0.0.1:8080
scenarios:
  max: { users: $CONNECTIONS, spawn_rate: $((CONNECTIONS * 100)), duration: $DURATION }
user_classes:
  bench:
    tasks:
      - { name: fast, get: /api/fast }
YAML
    before_run "$target"
    log "$target run $run: squall --local-workers 1 --threads 1 --users $CONNECTIONS --duration $DURATION"
    taskset -c "$GEN_CPU" python3 "$WORK/timed.py" "$WORK/usage" \
        "$COORDINATOR" -f "$scenario" --local-workers 1 --threads 1 --headless \
        --out "$dir" --host "$TARGET_URL" --users "$CONNECTIONS" --duration "$DURATION" \
        >"$dir.log" 2>&1 || rc=$?
    [[ $rc -eq 0 ]] || die "squall exited with $rc (see $dir.log)"
    [[ -f $dir/report.json ]] || die "squall wrote no $dir/report.json (see $dir.log)"
    read -r rps p50 p99 reqs fails _dur < <(parse_squall "$dir/report.json")
    add_row "$target" "$run" squall "$rps" "$p50" "$p99" "$reqs" "$fails"
    if [[ -n $LAST_DELTA ]]; then
        local diff=$((LAST_DELTA - reqs))
        log "cross-check: squall counted $reqs requests, the target served $LAST_DELTA (difference $diff)"
        if [[ ${diff#-} -gt $CONNECTIONS ]]; then
            log "WARNING: counts differ by more than the number of connections"
        fi
    fi
}

# ------------------------------------------------------------------- main ---
for target in $TARGETS; do
    log "starting target: $target (CPU $TARGET_CPU)"
    "start_$target"
    if [[ $WARMUP != 0 ]]; then
        log "$target: warm-up wrk -d$WARMUP"
        taskset -c "$GEN_CPU" wrk -t1 -c"$CONNECTIONS" -d"$WARMUP" "$TARGET_URL/api/fast" >/dev/null
    fi
    for run in $(seq 1 "$RUNS"); do
        run_wrk "$target" "$run"
        sleep 1
        run_squall "$target" "$run"
        sleep 1
    done
    stop_pid "$TARGET_PID"
done

# ----------------------------------------------------------------- report ---
WRK_VERSION=$(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}' || true)
RUSTC_VERSION=$(rustc --version 2>/dev/null || echo unknown)
CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
export WRK_VERSION RUSTC_VERSION CPU_MODEL CORES DURATION CONNECTIONS TARGET_CPU GEN_CPU NOISE_MAX
python3 - "$RESULTS" "$OUT_DIR/results.md" <<'PY'
import csv, os, platform, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
wrk = {(r["target"], r["run"]): r for r in rows if r["tool"] == "wrk"}
def ratio(r, key):
    w = wrk.get((r["target"], r["run"]))
    if r["tool"] != "squall" or not w or not float(w[key]):
        return ""
    return f"{float(r[key]) / float(w[key]):.2f}x"
e = os.environ
noise_max = float(e["NOISE_MAX"])
def noisy(r):
    w = wrk.get((r["target"], r["run"]), r)
    return max(float(r["other_cpu_pct"]), float(w["other_cpu_pct"])) > noise_max
lines = [
    f"Machine: {e['CORES']} cores, {e['CPU_MODEL']}, Linux {platform.release()}; "
    f"{e['WRK_VERSION']}; {e['RUSTC_VERSION']}.",
    f"Each run: {e['DURATION']}, {e['CONNECTIONS']} connections, target on CPU "
    f"{e['TARGET_CPU']}, generator on CPU {e['GEN_CPU']}.",
    "",
    "| target | run | tool | requests/s | p50 ms | p99 ms | squall/wrk | requests "
    "| errors | generator CPU | target CPU | other CPU | requests per generator CPU-s "
    "| squall/wrk per CPU-s | target served |",
    "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
]
for r in rows:
    lines.append(
        f"| {r['target']} | {r['run']}{' (noisy)' if noisy(r) else ''} | {r['tool']} "
        f"| {float(r['rps']):,.0f} | {r['p50_ms']} "
        f"| {r['p99_ms']} | {ratio(r, 'rps')} | {r['requests']} | {r['errors']} "
        f"| {r['gen_cpu_pct']}% | {r['target_cpu_pct']}% | {r['other_cpu_pct']}% "
        f"| {int(r['req_per_gen_cpu_s']):,} | {ratio(r, 'req_per_gen_cpu_s')} "
        f"| {r['served_delta'] or '-'} |"
    )
ratios = {}
for r in rows:
    w = wrk.get((r["target"], r["run"]))
    if r["tool"] == "squall" and w:
        v = ratios.setdefault(r["target"], ([], [], []))
        if noisy(r):
            v[2].append(r["run"])
            continue
        v[0].append(float(r["rps"]) / float(w["rps"]))
        v[1].append(float(r["req_per_gen_cpu_s"]) / max(float(w["req_per_gen_cpu_s"]), 1.0))
if ratios:
    lines.append("")
    for t, (rps, per_cpu, skipped) in ratios.items():
        left_out = (f" (left out as noisy, other CPU > {noise_max:.0f}%: run(s) "
                    f"{', '.join(skipped)})") if skipped else ""
        if rps:
            lines.append(f"Median squall/wrk on {t} over {len(rps)} clean run(s): requests/s "
                         f"{statistics.median(rps):.2f}x, requests per generator CPU-second "
                         f"{statistics.median(per_cpu):.2f}x{left_out}.")
        else:
            lines.append(f"No clean run on {t}{left_out}.")
md = "\n".join(lines) + "\n"
open(sys.argv[2], "w").write(md)
print()
print(f"{'target':<7} {'run':>3} {'tool':<7} {'requests/s':>11} {'p50 ms':>8} {'p99 ms':>8} "
      f"{'sq/wrk':>7} {'gen CPU':>8} {'tgt CPU':>8} {'other':>6} {'req/CPU-s':>10}")
for r in rows:
    print(f"{r['target']:<7} {r['run']:>3} {r['tool']:<7} {float(r['rps']):>11,.0f} "
          f"{float(r['p50_ms']):>8.3f} {float(r['p99_ms']):>8.3f} {ratio(r, 'rps'):>7} "
          f"{r['gen_cpu_pct'] + '%':>8} {r['target_cpu_pct'] + '%':>8} "
          f"{r['other_cpu_pct'] + '%':>6} {int(r['req_per_gen_cpu_s']):>10,}"
          f"{'  noisy' if noisy(r) else ''}")
print()
print("Markdown:")
print()
print(md)
PY
log "raw outputs, reports and results.md are in $OUT_DIR"
ln -sfn "$STAMP" "$(dirname "$OUT_DIR")/latest"
