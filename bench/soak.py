#!/usr/bin/env python3
"""Soak benchmark (issue 17, item 5): is memory flat over a long run?

    python3 bench/soak.py                                # 1 h, 100 endpoints, 200 req/s, ci binaries
    python3 bench/soak.py --duration 5m --interval 15    # a quick look
    python3 bench/soak.py --bin /tmp/old-binaries --duration 5m   # another build

Starts the demo target (`coordinator target`), a coordinator waiting for 2
remote worker processes (`--workers 2`, real gRPC over loopback) and the
2 `worker` processes, all on 127.0.0.1 ports picked free. The scenario has
--endpoints GET endpoints (`e000` .. `e099`, all on the demo target's
/api/fast) driven by the open model at --rate iterations a second (one
request each, spread evenly over the endpoints), for --duration.

Every --interval seconds (60 by default) it reads VmRSS of the coordinator
and of each worker from /proc/PID/status and appends a row to rss.csv;
the table is printed as it goes and again at the end, with the growth over
the second half of the run.

Verdict: FLAT when, for every process, RSS at the last sample minus RSS at
the sample nearest the run's midpoint (after warm-up) is at most
--max-growth-mib (4 MiB by default): a leak of the old coordinator's 33 KiB a
second alone would be 58 MiB over the second half of an hour. Exit 0 when
flat and the run's report says every request was counted, 1 otherwise, 2 on
bad usage.

Light load on purpose: it does not take /work/bench.lock (it would block
other benchmarks for the whole hour). Outputs go to
bench/out/soak-<timestamp>/ (scenario, logs, rss.csv, report/, result.md).
Traffic goes only to 127.0.0.1; every process started is stopped at exit.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def duration_s(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*(s|m|h)?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"bad duration `{text}` (e.g. 90s, 5m, 1h)")
    n = int(m.group(1))
    return n * {"s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int, field: str = "VmRSS") -> int | None:
    """VmRSS (resident now) or VmHWM (the highest it has been) of a process, KiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_s(pid: int) -> float | None:
    """User + system CPU-seconds of a process so far, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def wait_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def scenario(target_port: int, endpoints: int, rate: int, duration: int) -> str:
    tasks = "\n".join(
        f"      - {{ name: e{i:03d}, get: /api/fast }}" for i in range(endpoints)
    )
    return f"""# Written by bench/soak.py: {endpoints} endpoints at {rate} iterations/s for {duration} s.
host: http://127.0.0.1:{target_port}
scenarios:
  soak:
    arrival_rate: {rate}/s
    max_users: {max(50, rate)}
    duration: {duration}s
user_classes:
  u:
    tasks:
{tasks}
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=duration_s, default=3600, help="run length (default 1h)")
    ap.add_argument("--endpoints", type=int, default=100, help="endpoints in the scenario (default 100)")
    ap.add_argument("--rate", type=int, default=200, help="requests a second over all endpoints (default 200)")
    ap.add_argument("--interval", type=int, default=60, help="seconds between RSS samples (default 60)")
    ap.add_argument("--max-growth-mib", type=float, default=4.0, help="allowed growth over the second half, per process (default 4)")
    ap.add_argument("--bin", type=Path, default=ROOT / "target" / "ci", help="directory with coordinator and worker (default target/ci)")
    ap.add_argument("--nice", type=int, default=0, help="run the target, coordinator and workers at this nice value; "
                    "a negative one keeps a busy shared machine from starving the coordinator into losing its workers")
    ap.add_argument("--out", type=Path, default=None, help="output directory (default bench/out/soak-<timestamp>)")
    ap.add_argument("--rejudge", type=Path, metavar="DIR", help="only recompute the verdict of a finished run's output directory")
    a = ap.parse_args()
    if a.rejudge:
        return rejudge(a, a.rejudge)
    if a.endpoints < 1 or a.rate < 1 or a.interval < 1 or a.duration < 2 * a.interval:
        print("soak: --endpoints and --rate must be >= 1, --duration at least two --interval", file=sys.stderr)
        return 2
    coord_bin, worker_bin = a.bin / "coordinator", a.bin / "worker"
    for b in (coord_bin, worker_bin):
        if not os.access(b, os.X_OK):
            print(f"soak: {b} is not an executable (build with cargo build --profile ci --bins)", file=sys.stderr)
            return 2
    out = a.out or ROOT / "bench" / "out" / time.strftime("soak-%Y%m%d-%H%M%S", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)

    target_port, grpc_port = free_port(), free_port()
    scen = out / "soak.yaml"
    scen.write_text(scenario(target_port, a.endpoints, a.rate, a.duration))
    procs: list[subprocess.Popen] = []

    def start(name: str, argv: list[str]) -> subprocess.Popen:
        log = open(out / f"{name}.log", "wb")
        if a.nice:
            argv = ["nice", "-n", str(a.nice), *argv]
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")})
        procs.append(p)
        return p

    def stop_all() -> None:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    rows: list[dict] = []
    try:
        start("target", [str(coord_bin), "target", "--bind", f"127.0.0.1:{target_port}"])
        wait_port(target_port, time.monotonic() + 20)
        coord = start("coordinator", [str(coord_bin), "-f", str(scen), "--workers", "2",
                                      "--bind", f"127.0.0.1:{grpc_port}", "--out", str(out / "report")])
        wait_port(grpc_port, time.monotonic() + 20)
        workers = [start(f"worker{i}", [str(worker_bin), "--master", f"127.0.0.1:{grpc_port}",
                                        "--id", f"soak-w{i}", "--threads", "1"]) for i in (1, 2)]
        t0 = time.monotonic()
        header = f"{'min':>5} {'coordinator MiB':>16} {'worker1 MiB':>12} {'worker2 MiB':>12}"
        print(f"soak: {a.duration} s, {a.endpoints} endpoints, {a.rate} req/s; outputs in {out}", flush=True)
        print(header, flush=True)
        next_at = t0
        while coord.poll() is None:
            now = time.monotonic()
            if now >= next_at:
                row = {"t_s": round(now - t0), "coordinator_kib": rss_kib(coord.pid),
                       "worker1_kib": rss_kib(workers[0].pid), "worker2_kib": rss_kib(workers[1].pid),
                       "load1": os.getloadavg()[0], "coordinator_cpu_s": cpu_s(coord.pid),
                       "workers_cpu_s": sum(cpu_s(w.pid) or 0.0 for w in workers),
                       "coordinator_hwm_kib": rss_kib(coord.pid, "VmHWM"),
                       "worker1_hwm_kib": rss_kib(workers[0].pid, "VmHWM"),
                       "worker2_hwm_kib": rss_kib(workers[1].pid, "VmHWM")}
                if row["t_s"] <= a.duration:
                    rows.append(row)
                    print(fmt_row(row), flush=True)
                next_at += a.interval
            time.sleep(min(1.0, max(0.05, next_at - time.monotonic())))
            if time.monotonic() - t0 > a.duration + 300:
                print("soak: the coordinator did not finish 5 min after the run's end", file=sys.stderr)
                break
        code = coord.wait(timeout=1) if coord.poll() is not None else None
    finally:
        stop_all()

    with open(out / "rss.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["t_s", "coordinator_kib", "worker1_kib", "worker2_kib", "load1",
                                           "coordinator_cpu_s", "workers_cpu_s",
                                           "coordinator_hwm_kib", "worker1_hwm_kib", "worker2_hwm_kib"])
        w.writeheader()
        w.writerows(rows)
    return verdict(a, out, rows, code)


def fmt_row(r: dict) -> str:
    mib = lambda k: f"{r[k] / 1024:.1f}" if r[k] is not None else "-"
    return f"{r['t_s'] / 60:>5.1f} {mib('coordinator_kib'):>16} {mib('worker1_kib'):>12} {mib('worker2_kib'):>12}   load {r['load1']:.2f}"


PROCS = [("coordinator_kib", "coordinator"), ("worker1_kib", "worker 1"), ("worker2_kib", "worker 2")]


def verdict(a, out: Path, rows: list[dict], code) -> int:
    """Writes result.md: the table, each process's growth, the count check and the verdict.

    Growth is the highest RSS of the second half minus the highest RSS of
    the first half after warm-up (the first tenth, at least 3 min): a leak
    shows in it as its rate times half the run, while a transient peak (a
    worker's snapshot buffers, about 40 MiB with 100 endpoints) that happens
    in both halves does not."""
    lines = [f"# Soak: {a.duration} s, {a.endpoints} endpoints, {a.rate} req/s, binaries {a.bin}", "",
             "| minute | coordinator RSS MiB | worker 1 RSS MiB | worker 2 RSS MiB | load avg (1 min) | coordinator CPU-s | workers CPU-s |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    cell = lambda v, f: f.format(v) if v is not None else "-"
    for r in rows:
        mib = lambda k: cell(r[k] / 1024 if r[k] is not None else None, "{:.1f}")
        lines.append(f"| {r['t_s'] / 60:.1f} | {mib('coordinator_kib')} | {mib('worker1_kib')} | {mib('worker2_kib')} | "
                     f"{r['load1']:.2f} | {cell(r.get('coordinator_cpu_s'), '{:.1f}')} | {cell(r.get('workers_cpu_s'), '{:.1f}')} |")
    ran = len(rows) >= 3 and rows[-1]["t_s"] >= a.duration - a.interval and code == 0
    ok = ran
    lines.append("")
    if not ran:
        lines.append(f"- the run did not complete (coordinator exit {code}, last sample at {rows[-1]['t_s'] if rows else 0} s "
                     f"of {a.duration} s): see coordinator.log")
    end = rows[-1]["t_s"] if rows else 0
    warm = max(0.1 * end, min(180, end / 4))
    first = [r for r in rows if warm <= r["t_s"] <= end / 2]
    second = [r for r in rows if r["t_s"] > end / 2]
    if not first or not second:
        ok = False
        lines.append("- too few samples after warm-up to judge growth")
    else:
        span_h = max(1, (end - warm) / 2) / 3600
        for k, name in PROCS:
            f_max = max((r[k] for r in first if r[k] is not None), default=None)
            s_max = max((r[k] for r in second if r[k] is not None), default=None)
            if f_max is None or s_max is None:
                ok = False
                lines.append(f"- {name}: no sample")
                continue
            grow = (s_max - f_max) / 1024
            flat = grow <= a.max_growth_mib
            ok &= flat
            hwm = k.replace("_kib", "_hwm_kib")
            if rows[-1].get(hwm) is not None and first[-1].get(hwm) is not None:
                lines.append(f"- {name}: peak RSS (VmHWM, between samples too) {first[-1][hwm] / 1024:.1f} MiB at "
                             f"{first[-1]['t_s'] / 60:.1f} min, {rows[-1][hwm] / 1024:.1f} MiB at the end")
            lines.append(f"- {name}: highest {f_max / 1024:.1f} MiB in {warm / 60:.1f}..{end / 120:.1f} min, "
                         f"{s_max / 1024:.1f} MiB in {end / 120:.1f}..{end / 60:.1f} min: {grow:+.1f} MiB "
                         f"(about {grow / span_h:+.1f} MiB/h), {'within' if flat else 'ABOVE'} {a.max_growth_mib} MiB")
    report = out / "report" / "report.json"
    exact = False
    if report.exists():
        r = json.loads(report.read_text())
        total = r["totals"]["requests"]
        per_ep = sum(e["requests"] for e in r["endpoints"])
        per_s = sum(p["requests"] for p in r["timeline"])
        exact = total == per_ep == per_s and total > 0
        lines.append(f"- report: {total} requests, {r['totals']['failures']} failures, {len(r['timeline'])} timeline seconds; "
                     f"endpoint sum {per_ep}, timeline sum {per_s}: {'consistent' if exact else 'INCONSISTENT'}; "
                     f"coordinator exit {code}")
    else:
        lines.append("- report: none written")
    ok &= exact
    lines.append(f"- verdict: {'FLAT' if ok else 'NOT FLAT (or incomplete)'} "
                 f"(bound {a.max_growth_mib} MiB per process, second half against first half after warm-up)")
    text = "\n".join(lines) + "\n"
    (out / "result.md").write_text(text)
    print(text)
    return 0 if ok else 1


def rejudge(a, out: Path) -> int:
    """The verdict again from a finished run's directory (rss.csv, soak.yaml, report/)."""
    num = lambda v: None if v in (None, "") else float(v)
    with open(out / "rss.csv") as f:
        rows = [{k: num(v) for k, v in r.items()} for r in csv.DictReader(f)]
    m = re.search(r"duration: (\d+)s", (out / "soak.yaml").read_text())
    a.duration = int(m.group(1)) if m else int(rows[-1]["t_s"])
    a.endpoints = (out / "soak.yaml").read_text().count("get: /api/fast")
    report = out / "report" / "report.json"
    partial = json.loads(report.read_text()).get("partial", True) if report.exists() else True
    return verdict(a, out, rows, None if partial else 0)


if __name__ == "__main__":
    sys.exit(main())
