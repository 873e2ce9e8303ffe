#!/usr/bin/env python3
"""Squall side by side with wrk, oha and Locust (issue 6): one command, three scenarios.

    python3 bench/compare.py [--scenarios A,B,C] [--tools squall,wrk,oha,locust]
                             [--targets nginx,demo] [--duration 10s] [--rounds N]
                             [--bin-dir DIR] [--skip-build] [--write-docs]
                             [--a-budget PCT] [--d-budget PCT] [--e-budget PCT]
                             [--docs-section NAME]

The target runs pinned to CPU 0 and every generator to CPU 1 (`taskset -c`), one
generator at a time, each run bounded by a timeout; before each measured run the
script waits until both CPUs are quiet, and it marks runs where other processes
used the CPUs anyway ("other CPU" above --noise-max) and leaves them out of the
medians. The generator's CPU time and peak RSS come from wait4() of its process
(its own and its reaped children's), the target's CPU time from /proc.

Scenarios:
  A  max throughput: --connections (50) keep-alive connections, no think time,
     GET /api/fast (a 2-byte body) for --duration, against nginx and/or the demo
     target (`coordinator target`); Squall's count is checked against the demo
     target's served counter. --a-budget PCT holds every generator to PCT% of
     one core (cgroup CPU quota), so that the generator is the bottleneck.
  B  think time: --b-users (1,000) users, each one request to GET /api/delay/50
     (the demo target answers after 50 ms) then --b-think (1 s) of think time,
     for --b-duration (30 s); the achieved rate over the steady window (from the
     target's served counter) against users / (think + 50 ms).
  D  HTTP/2 over TLS (ALPN h2), keep-alive: --d-connections (4) connections with
     --d-streams (32) concurrent streams each against nginx (http2, a
     certificate the harness makes with openssl), no think time, GET /api/fast:
     Squall (`defaults.http2`) against h2load (nghttp2-client) and
     `oha --http2`. --d-budget PCT holds every generator to PCT% of one core,
     as --a-budget does in A (one nginx core serves about what one generator
     core sends, so unbudgeted every tool runs into the target).
  E  HTTPS with HTTP/1.1 against the same nginx: `E-keepalive`, --connections
     keep-alive connections (Squall, wrk, oha); `E-close`, --e-close-connections
     (10) connections each opening a new connection (TCP + full TLS handshake:
     nginx has session tickets and its session cache off) per request (Squall
     `connection: close`, wrk `-H "Connection: close"`, oha
     `--disable-keepalive`): handshakes per second. --e-budget PCT holds every
     generator to PCT% of one core, as --d-budget does in D.
  R  open model at speed (`--scenarios R`, not in the default set): Squall's
     closed model (--connections users, no think time, one engine thread)
     finds the generator core's maximum req/s against the demo target's
     GET /api/fast; then Squall's open model (--r-max-users pool), oha -q RATE
     and hey -q RATE/c -c c (hey's -q is per worker) run at --r-fractions
     (50,80,90,110 %) of it: achieved rate (the target's served counter),
     Squall's schedule lag p50/p99 and dropped iterations, latency p50/p99.
     --r-realtime N runs every generator under SCHED_FIFO priority N.
  C  idle users: --c-users (10,000 and 50,000) users with --c-think (10 s) think
     time against nginx (4 workers, reuseport); RSS of the generator process(es)
     once all users hold a connection, per user and per user above a run of the
     same process layout with one user per process. Every generator process
     runs in a network namespace of its own (its own source address).
  F  flow speed (issue 16): Squall alone, --connections users, no think time,
     against the demo target, once with a static one-request task (GET
     /api/fast) and once with a five-step flow with templates, captures and
     checks (public demo routes), alternating per round; generator CPU-seconds
     per 1,000 requests of each (flow rows are not requests) and their ratio,
     which issue 16 wants at most 1.15.

Outputs go to bench/out/<timestamp>/ (raw tool outputs, results.json,
results.md); the markdown is also printed. --write-docs replaces the section
between `<!-- NAME:begin -->` and `<!-- NAME:end -->` (NAME: --docs-section,
default compare) in docs/benchmarks.md with it. Only one instance runs at a time (flock).

Needs: Linux, python3.11 (stdlib only), taskset, ss; wrk and nginx are
installed with apt-get, oha with `cargo install oha --locked` and Locust with
pip when missing (only those the selected tools and scenarios need).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import math
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
ALL_TOOLS = ("squall", "wrk", "oha", "locust", "hey")
ALL_SCENARIOS = ("A", "B", "C", "D", "E", "F", "R")
# `--scenarios` without D, E, F and R: the HTTP/2, HTTPS, flow-cost and
# rate-sweep runs only when asked for.
DEFAULT_SCENARIOS = ("A", "B", "C")
DEFAULT_TOOLS = ("squall", "wrk", "oha", "locust")
ALL_TARGETS = ("nginx", "demo")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
# Users per generator process in scenario C: each user holds a socket, and the
# per-process file-descriptor limit here is 20,000 (hard, not raisable).
USERS_PER_PROCESS = 17_000


# ------------------------------------------------------------------ helpers ---


class Log:
    """A harness's log: each line stamped with the harness's name and the
    time, on stderr and, once `path` is set (when the run's output folder is
    known), appended to that file. bench/scale.py and bench/ws/ws50k.py keep
    theirs with it too."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.path: Path | None = None

    def __call__(self, msg: str) -> None:
        line = f"[{self.tag} {time.strftime('%H:%M:%S')}] {msg}"
        print(line, file=sys.stderr, flush=True)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(line + "\n")


log = Log("compare")


def exit_on_signals() -> None:
    """SIGTERM and SIGHUP end the harness as Ctrl-C does: its `finally`
    still stops every process it started and writes what was measured."""

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)


class BenchError(Exception):
    """A run or a set-up step failed; the message says why."""


def parse_duration(text: str) -> int:
    """'10s', '2m', '1h', '30' (seconds) -> whole seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*(s|m|h)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad duration {text!r} (use e.g. 10s, 2m)")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def csv_list(allowed: tuple[str, ...], upper: bool = False):
    def parse(text: str) -> list[str]:
        items = [x.strip().upper() if upper else x.strip().lower() for x in text.split(",")]
        items = [x for x in items if x]
        bad = [x for x in items if x not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(bad) or '(empty)'}; choose from {','.join(allowed)}"
            )
        return list(dict.fromkeys(items))

    return parse


def int_list(text: str) -> list[int]:
    try:
        vals = [int(x.replace("_", "")) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError("need positive integers")
    return vals


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 2.0, netns: str | None = None) -> str:
    """GET `url`; from inside network namespace `netns` when the server is only reachable there.
    An https:// URL is the harness's own self-signed target: its certificate is not checked."""
    if netns is None:
        import ssl
        ctx = ssl._create_unverified_context() if url.startswith("https://") else None
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as r:
            return r.read().decode()
    code = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read().decode())"
    try:
        p = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code, url, str(timeout)],
                           capture_output=True, text=True, timeout=timeout + 10)
    except subprocess.TimeoutExpired as e:
        raise OSError(f"GET {url} in {netns}: timed out") from e
    if p.returncode != 0:
        raise OSError(f"GET {url} in {netns}: {p.stderr.strip().splitlines()[-1:] or p.returncode}")
    return p.stdout


def raise_nofile() -> None:
    """preexec_fn of every child: fd soft limit up to the hard limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def join_cgroup(procs: Path) -> None:
    """In a child before exec: move this process into the cgroup whose `cgroup.procs` is `procs`."""
    procs.write_text(str(os.getpid()))


def proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime+stime ticks) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def tree(root: int) -> list[int]:
    """root and all its live descendants."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = proc_stat(int(d))
            if st:
                children.setdefault(st[0], []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_ticks(root: int) -> int:
    return sum((proc_stat(p) or (0, 0))[1] for p in tree(root))


def mem_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, Pss) in KiB of one process (0, 0 if gone)."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                    break
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                    break
    except OSError:
        pass
    return rss, pss


def cpu_busy(cpus: tuple[int, int]) -> float:
    """Busy seconds (everything but idle and iowait) of the given CPUs since boot."""
    want = {f"cpu{c}" for c in cpus}
    busy = 0
    with open("/proc/stat") as f:
        for line in f:
            p = line.split()
            if p and p[0] in want:
                v = [int(x) for x in p[1:]]
                busy += sum(v[:8]) - v[3] - v[4]
    return busy / CLK_TCK


def established(port: int, netns: str | None = None) -> int:
    """Established TCP connections whose local (server) port is `port` (in namespace `netns`)."""
    out = subprocess.run(
        (["ip", "netns", "exec", netns] if netns else [])
        + ["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def percentile_from_counts(counts: dict[float, int], q: float) -> float:
    total = sum(counts.values())
    if total == 0:
        return float("nan")
    need = q * total
    acc = 0
    for v in sorted(counts):
        acc += counts[v]
        if acc >= need:
            return v
    return max(counts)


def median(vals: list[float]) -> float | None:
    vals = [v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(vals) if vals else None


# ---------------------------------------------------------------- processes ---


@dataclass
class Member:
    name: str
    popen: subprocess.Popen
    started: float
    ended: float | None = None
    rusage: resource.struct_rusage | None = None
    out: object = None


class Procs:
    """Every child runs in its own process group; all are stopped on exit."""

    def __init__(self) -> None:
        self.live: dict[int, Member] = {}
        self.commands: list[tuple[str, list[str]]] = []

    def start(self, name, cmd, *, out: Path | None, cpu: int | None, cwd=None, env=None,
              netns: str | None = None, cgroup: Path | None = None) -> Member:
        # `ip netns exec` and taskset both exec the next program, so the pid
        # (and wait4's rusage) is the tool's own.
        full = ((["ip", "netns", "exec", netns] if netns else [])
                + (["taskset", "-c", str(cpu)] if cpu is not None else []) + [str(c) for c in cmd])
        self.commands.append((name, full))
        fh = open(out, "wb") if out else subprocess.DEVNULL
        try:
            p = subprocess.Popen(
                full,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
                preexec_fn=(lambda: (raise_nofile(), join_cgroup(cgroup))) if cgroup else raise_nofile,
            )
        except OSError as e:
            if out:
                fh.close()
            raise BenchError(f"cannot start {cmd[0]}: {e}") from e
        m = Member(name, p, time.monotonic(), out=fh if out else None)
        self.live[p.pid] = m
        return m

    def reap(self, m: Member, block: bool = False) -> bool:
        """True once the member has exited (its rusage is then in m.rusage)."""
        if m.ended is not None:
            return True
        try:
            pid, status, ru = os.wait4(m.popen.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            pid, status, ru = m.popen.pid, 0, None
        if pid == 0:
            return False
        m.ended = time.monotonic()
        m.rusage = ru
        m.popen.returncode = os.waitstatus_to_exitcode(status) if ru is not None else -1
        self.live.pop(m.popen.pid, None)
        if m.out:
            m.out.close()
            m.out = None
        return True

    def kill_group(self, m: Member, sig: int) -> None:
        try:
            os.killpg(m.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, m: Member, sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
        if not self.reap(m):
            self.kill_group(m, sig)
            end = time.monotonic() + grace
            while time.monotonic() < end and not self.reap(m):
                time.sleep(0.05)
            if not self.reap(m):
                self.kill_group(m, signal.SIGKILL)
                self.reap(m, block=True)
        # stragglers of the group (nginx workers, forked Locust workers)
        self.kill_group(m, signal.SIGKILL)

    def stop_all(self) -> None:
        for m in list(self.live.values()):
            self.stop(m, signal.SIGTERM, grace=5.0)


PROCS = Procs()


@dataclass
class Outcome:
    wall_s: float
    cpu_s: float
    maxrss_kb: int
    rcs: list[int]
    timed_out: bool
    samples: list = field(default_factory=list)


def finish(members: list[Member], start: float, timed_out: bool, samples=None) -> Outcome:
    main = members[0]
    end = main.ended or time.monotonic()
    cpu = sum(m.rusage.ru_utime + m.rusage.ru_stime for m in members if m.rusage)
    rss = max((m.rusage.ru_maxrss for m in members if m.rusage), default=0)
    return Outcome(end - start, cpu, rss, [m.popen.returncode for m in members], timed_out, samples or [])


def run_bounded(members: list[Member], timeout: float, on_tick=None, tick: float = 0.5) -> Outcome:
    """Waits for members[0] (then stops the rest); kills everything at the timeout."""
    start = min(m.started for m in members)
    # From the call, not from the start: hold_and_sample calls this long after
    # the members started, to wait for them to exit after an interrupt.
    deadline = time.monotonic() + timeout
    samples = []
    timed_out = False
    next_tick = time.monotonic()
    while not PROCS.reap(members[0]):
        now = time.monotonic()
        if now > deadline:
            log(f"timeout after {timeout:.0f}s: stopping {members[0].name}")
            timed_out = True
            PROCS.stop(members[0], signal.SIGINT, grace=10)
            break
        if on_tick and now >= next_tick:
            s = on_tick(now - start)
            if s is not None:
                samples.append(s)
            next_tick = now + tick
        time.sleep(0.05)
    for m in members[1:]:
        PROCS.stop(m, signal.SIGTERM, grace=15)
    return finish(members, start, timed_out, samples)


# ------------------------------------------------------------------ targets ---


class Target:
    name = ""
    url = ""
    port = 0
    member: Member | None = None
    # The host (network namespace) the target runs on; None: this one.
    netns: str | None = None

    def alive(self) -> None:
        if self.member is None or PROCS.reap(self.member):
            raise BenchError(f"the {self.name} target exited; see its log in the results directory")

    def ticks(self) -> int:
        return tree_ticks(self.member.popen.pid) if self.member else 0

    def served(self) -> int | None:
        return None

    def stop(self) -> None:
        if self.member:
            PROCS.stop(self.member, signal.SIGTERM, grace=10)
            self.member = None

    def wait_ready(self, path: str = "/api/fast") -> None:
        for _ in range(200):
            self.alive()
            try:
                http_get(self.url + path, timeout=1, netns=self.netns)
                return
            except OSError:
                time.sleep(0.1)
        raise BenchError(f"{self.name} target at {self.url} did not become ready")


class DemoTarget(Target):
    name = "demo"

    def __init__(self, coordinator: Path, cpu: int, out: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.member = PROCS.start(
            "demo-target",
            [coordinator, "target", "--bind", f"127.0.0.1:{self.port}"],
            out=out / "demo-target.log",
            cpu=cpu,
        )
        self.wait_ready()

    def served(self) -> int:
        return int(json.loads(http_get(self.url + "/__squall/stats"))["served"])


class NginxTarget(Target):
    name = "nginx"

    def __init__(self, nginx: str, cpu: int, out: Path, work: Path, workers: int = 1, connections: int = 4096,
                 addr: str = "127.0.0.1", netns: str | None = None, tls: tuple[Path, Path] | None = None,
                 http2: bool = False):
        self.netns = netns
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://{addr}:{self.port}"
        d = work / f"nginx-{self.port}"
        (d / "www" / "api").mkdir(parents=True, exist_ok=True)
        (d / "tmp").mkdir(exist_ok=True)
        (d / "www" / "api" / "fast").write_text("ok")
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        user = "user root;" if os.geteuid() == 0 else ""
        # reuseport gives each worker its own accept queue, so that tens of
        # thousands of connections spread over the workers.
        listen = f"{addr}:{self.port}" + (" reuseport backlog=65535" if workers > 1 else "")
        tls_conf = ""
        if tls:
            listen += " ssl" + (" http2" if http2 else "")
            # Every handshake a full one: no tickets, no session cache, so that
            # scenario E's new-connection runs measure handshakes, not resumptions.
            tls_conf = (f"ssl_certificate {tls[0]};\n        ssl_certificate_key {tls[1]};\n"
                        "        ssl_session_tickets off;\n        ssl_session_cache off;\n"
                        "        http2_max_concurrent_streams 256;\n        keepalive_requests 100000000;")
        conf = f"""{user}
worker_processes {workers};
worker_rlimit_nofile {hard};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    default_type text/plain;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 300;
    keepalive_requests 100000000;
    open_file_cache max=16;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    server {{
        listen {listen};
        root {d}/www;
        {tls_conf}
    }}
}}
"""
        (d / "nginx.conf").write_text(conf)
        (out / f"nginx-{workers}w.conf").write_text(conf)
        self.member = PROCS.start(
            "nginx",
            [nginx, "-p", d, "-c", d / "nginx.conf", "-e", d / "error.log"],
            out=out / f"nginx-{self.port}.log",
            cpu=cpu,
            netns=netns,
        )
        self.wait_ready()


class CpuBudget:
    """A CPU quota for the generator in scenarios A, D and E (`--a-budget`, `--d-budget`, `--e-budget PCT`).

    On this 2-core machine one target core cannot outrun one generator core,
    so in a plain run of A the target is the bottleneck (99% of its core) and
    the generators idle part of the time: their CPU per request then includes
    the cost of sleeping and being woken for every few responses, which
    depends more on how a tool waits than on how fast it is. With the
    generator held to PCT% of a core (cgroup CFS quota, 5 ms periods) the
    generator is the bottleneck, the target has room, and requests/s divided
    by the budget is requests/s per core. Needs root and a cgroup v1 `cpu`
    hierarchy or cgroup v2 with the cpu controller."""

    def __init__(self, pct: float, period_us: int = 5000):
        self.pct = pct
        name = f"squall-bench-{os.getpid()}"
        quota = int(period_us * pct / 100)
        v1 = Path("/sys/fs/cgroup/cpu")
        v2 = Path("/sys/fs/cgroup")
        try:
            if (v1 / "cpu.cfs_quota_us").exists():
                self.dir = v1 / name
                self.dir.mkdir(exist_ok=True)
                (self.dir / "cpu.cfs_period_us").write_text(str(period_us))
                (self.dir / "cpu.cfs_quota_us").write_text(str(quota))
            elif "cpu" in (v2 / "cgroup.controllers").read_text().split():
                self.dir = v2 / name
                self.dir.mkdir(exist_ok=True)
                (self.dir / "cpu.max").write_text(f"{quota} {period_us}")
            else:
                raise BenchError("no cgroup cpu controller (v1 /sys/fs/cgroup/cpu or v2 with cpu) for --a-budget")
        except OSError as e:
            raise BenchError(f"cannot make a cgroup for --a-budget: {e}") from e
        self.procs = self.dir / "cgroup.procs"

    def close(self) -> None:
        try:
            self.dir.rmdir()
        except OSError:
            pass


def budget_note(pct: float) -> str:
    """The sentence a results table adds when its generators ran under `CpuBudget` (empty without one)."""
    if not pct:
        return ""
    return (f" Every generator held to **{pct:g}% of one core** (cgroup CPU quota, 5 ms periods), so that the "
            f"generator, not the target, is the bottleneck: compare requests/s (requests/s per core = requests/s / "
            f"{pct / 100:g}).")


class Hosts:
    """Scenario C's hosts: the target's host and one host per generator process,
    each a network namespace with its own address, joined by a bridge.

    Every TCP connection needs its own (source address, source port) towards
    the one target address, and Linux's connect() looks for a free source port
    by scanning the even ports of ip_local_port_range first: measured here,
    with a 9,000-port range to one destination, connect() took 32 us while
    fewer than half the ports were in use and 150-330 us beyond that, so on
    loopback (one source address) 50,000 connections make every generator
    spend its core in the kernel and time its requests out. Real clusters
    give each generator host its own address; this does the same on one
    machine. A switch namespace holds the bridge; the server namespace
    (nginx, Squall's coordinator, Locust's master) has ADDR; generator
    namespace i has 10.201.i/250.i%250+2 (its own port space, the port range
    widened to 1024-65000). Every address is inside a namespace the run made:
    nothing is added to the machine's own interfaces. The switch and server
    live for the whole of scenario C; the generator hosts are made fresh for
    every run, so no run inherits another's TIME_WAIT sockets. Needs root and
    iproute2; falls back to loopback otherwise."""

    ADDR = "10.201.255.1"

    def __init__(self) -> None:
        tag = os.getpid() % 10000
        self.prefix = f"sqbench{tag}"
        self.switch = f"{self.prefix}-sw"
        self.server = f"{self.prefix}-srv"
        self.made: list[str] = []
        self.generators: list[str] = []
        try:
            self._namespace(self.switch)
            self._ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            self._ip("-n", self.switch, "link", "set", "br0", "up")
            self._join(self.server, "srv", self.ADDR)
        except (OSError, subprocess.CalledProcessError) as e:
            self.close()
            raise BenchError(f"cannot make the target's host (network namespaces): {e}") from e

    def _namespace(self, ns: str) -> None:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # left over from an interrupted run
        self._ip("netns", "add", ns)
        self.made.append(ns)
        self._ip("-n", ns, "link", "set", "lo", "up")

    def _join(self, ns: str, port: str, addr: str) -> None:
        """Makes host `ns` with address `addr`, cabled to the bridge through veth `port`."""
        self._namespace(ns)
        # The pair is made inside the switch and one end moved to the host:
        # neither end is ever in the root namespace.
        self._ip("-n", self.switch, "link", "add", f"{port}b", "type", "veth", "peer", "name", f"{port}n")
        self._ip("-n", self.switch, "link", "set", f"{port}n", "netns", ns)
        self._ip("-n", self.switch, "link", "set", f"{port}b", "master", "br0")
        self._ip("-n", self.switch, "link", "set", f"{port}b", "up")
        self._ip("-n", ns, "addr", "add", f"{addr}/16", "dev", f"{port}n")
        self._ip("-n", ns, "link", "set", f"{port}n", "up")
        self._ip("netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000")

    def add_generators(self, n: int) -> None:
        try:
            for i in range(n):
                ns = f"{self.prefix}-{i}"
                self._join(ns, f"g{i}", f"10.201.{i // 250}.{i % 250 + 2}")
                self.generators.append(ns)
        except (OSError, subprocess.CalledProcessError) as e:
            self.remove_generators()
            raise BenchError(f"cannot make the generator hosts (network namespaces): {e}") from e

    def remove_generators(self) -> None:
        for ns in self.generators:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # takes its veth pair along
            self.made.remove(ns)
        self.generators = []

    @staticmethod
    def _ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)

    def ns(self, i: int) -> str:
        return self.generators[i % len(self.generators)]

    def close(self) -> None:
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.made = []
        self.generators = []


# ------------------------------------------------------------- tool outputs ---

WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_wrk(text: str) -> dict:
    def lat(pct: int) -> float | None:
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
        return float(m.group(1)) * WRK_UNITS[m.group(2)] if m else None

    m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if not m:
        raise BenchError("no Requests/sec line in wrk's output")
    req = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", text, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return {
        "rps": float(m.group(1)),
        "requests": int(req.group(1)) if req else None,
        "p50_ms": lat(50),
        "p99_ms": lat(99),
        "errors": (int(non2xx.group(1)) if non2xx else 0) + (sum(int(x) for x in sock.groups()) if sock else 0),
        "socket_errors": sock.group(0) if sock else "",
    }


def parse_squall(report: Path) -> dict:
    if not report.exists():
        raise BenchError(f"Squall wrote no {report}")
    r = json.loads(report.read_text())
    t = r["totals"]
    return {
        "rps": float(t["rps"]),
        "requests": int(t["requests"]),
        "errors": int(t["failures"]),
        "p50_ms": float(t["latency_ms"]["p50"]),
        "p99_ms": float(t["latency_ms"]["p99"]),
        "tool_duration_s": float(r["duration_s"]),
        "partial": bool(r.get("partial")),
    }


def parse_h2load(text: str) -> dict:
    m = re.search(r"finished in ([\d.]+)(ms|s), ([\d.]+) req/s", text)
    req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                    r"(\d+) errored, (\d+) timeout", text)
    if not m or not req:
        raise BenchError("no 'finished in' / 'requests:' lines in h2load's output")
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    # h2load prints only min/max/mean of request times, no percentiles.
    return {
        "rps": float(m.group(3)),
        "requests": int(req.group(3)),
        "errors": int(req.group(5)) + int(req.group(6)) + int(req.group(7))
        + (int(codes.group(3)) + int(codes.group(4)) if codes else 0),
        "p50_ms": None,
        "p99_ms": None,
    }


def parse_oha(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BenchError(f"oha wrote no JSON ({e})") from e
    s = d["summary"]
    codes = {k: int(v) for k, v in (d.get("statusCodeDistribution") or {}).items()}
    errs = {k: int(v) for k, v in (d.get("errorDistribution") or {}).items()}
    # Requests cut off by -z are not failures of the target (wrk and Squall do not count them).
    aborted = sum(v for k, v in errs.items() if "deadline" in k)
    answered = sum(codes.values())
    lat = d.get("latencyPercentiles") or {}
    return {
        "rps": answered / float(s["total"]) if s.get("total") else 0.0,
        "requests": answered,
        "errors": sum(v for k, v in codes.items() if not k.startswith(("2", "3")))
        + sum(errs.values())
        - aborted,
        "p50_ms": lat["p50"] * 1e3 if lat.get("p50") is not None else None,
        "p99_ms": lat["p99"] * 1e3 if lat.get("p99") is not None else None,
        "aborted_at_deadline": aborted,
    }


def parse_squall_open(report: Path) -> dict:
    row = parse_squall(report)
    t = json.loads(report.read_text())["totals"]
    lag = t.get("schedule_lag_ms") or {}
    row.update({
        "dropped": int(t.get("dropped_iterations", 0)),
        "lag_p50_ms": lag.get("p50"),
        "lag_p99_ms": lag.get("p99"),
        # The generator's own part of the lag (arrivals taken in hand late);
        # the rest is waiting for a free user, i.e. the target's latency.
        "own_lag_p99_ms": (t.get("generator_lag_ms") or {}).get("p99"),
        # The open model's pool: users running at the end of a second, the
        # most over the run, summed over the workers.
        "pool": sum(int(w.get("peak_users", 0)) for w in json.loads(report.read_text()).get("workers", [])),
    })
    return row


def parse_hey(text: str) -> dict:
    """hey's text summary: Requests/sec, the latency distribution (seconds), status codes and errors."""
    def num(pattern: str) -> float | None:
        m = re.search(pattern, text)
        return float(m.group(1)) if m else None

    codes = {c: int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", text)}
    if not codes and num(r"Requests/sec:\s+([\d.]+)") is None:
        raise BenchError("hey printed no summary")
    err_part = text.split("Error distribution:", 1)[1] if "Error distribution:" in text else ""
    errors = sum(int(n) for n in re.findall(r"\[(\d+)\]\s", err_part))
    p50, p99 = num(r"50%+ in ([\d.]+) secs"), num(r"99%+ in ([\d.]+) secs")
    answered = sum(codes.values())
    return {
        "rps": num(r"Requests/sec:\s+([\d.]+)"),
        "requests": answered,
        "errors": sum(n for c, n in codes.items() if not c.startswith(("2", "3"))) + errors,
        "p50_ms": p50 * 1e3 if p50 is not None else None,
        "p99_ms": p99 * 1e3 if p99 is not None else None,
    }


def squall_open_yaml(path: Path, rate: int, max_users: int, duration: int, request_path: str) -> None:
    path.write_text(
        f"""# Generated by bench/compare.py.
host: http://127.0.0.1:8080
scenarios:
  bench: {{ arrival_rate: {rate}/s, max_users: {max_users}, duration: {duration}s }}
user_classes:
  bench:
    tasks:
      - {{ name: bench, get: {request_path} }}
"""
    )


def parse_locust(prefix: Path) -> dict:
    path = Path(str(prefix) + ".json")
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BenchError(f"Locust wrote no {path.name} ({e})") from e
    reqs = sum(e["num_requests"] for e in entries)
    fails = sum(e["num_failures"] for e in entries)
    counts: dict[float, int] = {}
    for e in entries:
        for k, v in e["response_times"].items():
            counts[float(k)] = counts.get(float(k), 0) + int(v)
    start = min((e["start_time"] for e in entries), default=0)
    last = max((e["last_request_timestamp"] or 0 for e in entries), default=0)
    return {
        "rps": reqs / (last - start) if last > start else 0.0,
        "requests": reqs,
        "errors": fails,
        # Locust keeps response times rounded (to 1 ms under 100 ms, then to 10 ms).
        "p50_ms": percentile_from_counts(counts, 0.50),
        "p99_ms": percentile_from_counts(counts, 0.99),
    }


def locust_file(path: Path, request_path: str, think_s: float) -> None:
    path.write_text(
        f'''# Generated by bench/compare.py.
from locust import FastHttpUser, constant, task


class Bench(FastHttpUser):
    wait_time = constant({think_s!r})

    @task
    def one(self):
        self.client.get({request_path!r}, name="bench")
'''
    )


def squall_yaml(path: Path, users: int, spawn_rate: int, duration: int, request_path: str, think: str | None) -> None:
    wait = f"    wait: {{ constant: {think} }}\n" if think else ""
    path.write_text(
        f"""# Generated by bench/compare.py.
host: http://127.0.0.1:8080
scenarios:
  bench: {{ users: {users}, spawn_rate: {spawn_rate}, duration: {duration}s }}
user_classes:
  bench:
{wait}    tasks:
      - {{ name: bench, get: {request_path} }}
"""
    )


# Scenario F's five-step flow: templates in paths, headers and bodies, a JSON
# capture, a header capture, and status, JSON and body checks on every step.
FLOW_STEPS = """      - name: journey
        flow:
          - name: f1 post
            post: /api/echo
            json: { user: "u{{ user_id }}", n: "{{ sequence() }}" }
            expect: { status: 200, json: { "$.method": POST } }
            capture: { len: "$.length" }
          - name: f2 query
            get: "/api/echo?len={{ len }}&u={{ user_id }}"
            expect: { status: 200, json: { "$.query": { exists: true } } }
            capture: { q: "$.query" }
          - name: f3 fast
            get: /api/fast
            headers: { X-Query: "{{ q }}" }
            expect: { status: 200, body_contains: ok }
          - name: f4 health
            get: /api/health
            expect: { status: 200 }
            capture: { type: { header: content-type } }
          - name: f5 post
            post: /api/echo
            body: "{{ type }} {{ len }}"
            expect: { status: 200, json: { "$.length": { exists: true } } }
"""


def squall_flow_yaml(path: Path, users: int, duration: int, flow: bool) -> None:
    task = FLOW_STEPS if flow else "      - { name: static, get: /api/fast }\n"
    path.write_text(
        f"""# Generated by bench/compare.py (scenario F).
host: http://127.0.0.1:8080
scenarios:
  bench: {{ users: {users}, spawn_rate: {users * 100}, duration: {duration}s }}
user_classes:
  bench:
    tasks:
{task}"""
    )


def wrk_think_lua(path: Path, think_ms: int) -> None:
    path.write_text(
        f"""-- Generated by bench/compare.py: think time after every response.
function delay()
   return {think_ms}
end
"""
    )


# ------------------------------------------------------------------ harness ---


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.a = args
        self.cpus = (args.target_cpu, args.gen_cpu)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.out = Path(args.out).resolve() / stamp
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="squall-compare."))
        self.bin = Path(args.bin_dir).resolve()
        self.coordinator = self.bin / "coordinator"
        self.worker = self.bin / "worker"
        self.rows: list[dict] = []
        self.exe: dict[str, str] = {}
        self.first_cmds: dict[str, list[str]] = {}
        self.notes: list[str] = []
        self.cgroup: Path | None = None

    # ---- set-up -------------------------------------------------------------

    def need_tools(self) -> None:
        a = self.a
        if "wrk" in a.tools or "A" in a.scenarios:
            self.exe["wrk"] = shutil.which("wrk") or self.apt_install("wrk", "wrk")
        if ("A" in a.scenarios and "nginx" in a.targets) or "C" in a.scenarios:
            self.exe["nginx"] = shutil.which("nginx") or (
                "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else self.apt_install("nginx-light", "nginx")
            )
        if "oha" in a.tools:
            oha = shutil.which("oha") or str(Path.home() / ".cargo/bin/oha")
            if not os.access(oha, os.X_OK):
                log("oha not found: cargo install oha --locked (a few minutes)")
                subprocess.run(["cargo", "install", "oha", "--locked"], check=True)
            self.exe["oha"] = oha
        if "D" in a.scenarios or "E" in a.scenarios:
            if "nginx" not in self.exe:
                self.exe["nginx"] = shutil.which("nginx") or (
                    "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else self.apt_install("nginx-light", "nginx")
                )
            if not shutil.which("openssl"):
                raise BenchError("openssl is required for scenarios D and E (apt-get install openssl)")
        if "D" in a.scenarios:
            self.exe["h2load"] = shutil.which("h2load") or self.apt_install("nghttp2-client", "h2load")
        if "E" in a.scenarios and "wrk" in a.tools and "wrk" not in self.exe:
            self.exe["wrk"] = shutil.which("wrk") or self.apt_install("wrk", "wrk")
        if "hey" in a.tools:
            self.exe["hey"] = shutil.which("hey") or self.apt_install("hey", "hey")
        if "locust" in a.tools:
            loc = shutil.which("locust")
            if not loc:
                log("locust not found: pip install locust")
                subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "locust"], check=True)
                loc = shutil.which("locust")
            if not loc:
                raise BenchError("locust is not on PATH after pip install")
            self.exe["locust"] = loc
        for t in ("taskset", "ss"):
            if not shutil.which(t):
                raise BenchError(f"{t} is required (apt-get install util-linux iproute2)")
        for c in self.cpus:
            if subprocess.run(["taskset", "-c", str(c), "true"]).returncode != 0:
                raise BenchError(f"cannot pin to CPU {c}")

    def apt_install(self, package: str, binary: str) -> str:
        if os.geteuid() != 0:
            raise BenchError(f"{binary} is missing; install {package} (needs root)")
        log(f"apt-get install {package}")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        # Keep the package from starting its own service (nginx on :80).
        policy = Path("/usr/sbin/policy-rc.d")
        made = not policy.exists()
        if made:
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
        try:
            subprocess.run(
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
                check=True,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            )
        finally:
            if made:
                policy.unlink()
        found = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.access(f"/usr/sbin/{binary}", os.X_OK) else None)
        if not found:
            raise BenchError(f"{binary} not found after installing {package}")
        return found

    def build(self) -> None:
        if self.a.skip_build:
            log(f"--skip-build: using {self.bin}")
        else:
            log("cargo build --release --bins (fat LTO: several minutes)")
            subprocess.run(["cargo", "build", "--release", "--bins"], cwd=ROOT, check=True)
        for b in (self.coordinator, self.worker):
            if not os.access(b, os.X_OK):
                raise BenchError(f"{b} not found (build it, or pass --bin-dir)")

    # ---- measurement window ---------------------------------------------------

    def wait_quiet(self) -> None:
        a = self.a
        start = time.monotonic()
        warned = False
        while True:
            b0, t0 = cpu_busy(self.cpus), time.monotonic()
            time.sleep(1)
            pct = (cpu_busy(self.cpus) - b0) / (time.monotonic() - t0) * 100
            if pct <= a.quiet_max:
                return
            if not warned:
                log(f"CPUs {self.cpus[0]},{self.cpus[1]} {pct:.0f}% busy (of one core): waiting up to {a.quiet_timeout}s")
                warned = True
            if time.monotonic() - start >= a.quiet_timeout:
                log(f"still {pct:.0f}% busy: measuring anyway (see the 'other CPU' column)")
                return

    def record_cmd(self, key: str, members: list[Member]) -> None:
        if key not in self.first_cmds:
            self.first_cmds[key] = [shlex.join(m.popen.args) for m in members]

    def run_window(self, target: Target | None, key: str, start_members, timeout: float, on_tick=None, tick=0.5):
        """wait_quiet, snapshot counters, start the generator, run it bounded, snapshot again."""
        if target:
            target.alive()
        self.wait_quiet()
        served0 = target.served() if target else None
        tt0 = target.ticks() if target else 0
        b0, w0 = cpu_busy(self.cpus), time.monotonic()
        members = start_members()
        self.record_cmd(key, members)
        oc = run_bounded(members, timeout, on_tick, tick)
        b1, w1 = cpu_busy(self.cpus), time.monotonic()
        if target:
            target.alive()
        tt1 = target.ticks() if target else 0
        served1 = target.served() if target else None
        tcpu = (tt1 - tt0) / CLK_TCK
        window = w1 - w0
        other = max(0.0, (b1 - b0) - tcpu - oc.cpu_s)
        row = {
            "wall_s": round(oc.wall_s, 3),
            "cpu_s": round(oc.cpu_s, 3),
            "cpu_pct": round(oc.cpu_s / oc.wall_s * 100, 1) if oc.wall_s else None,
            "maxrss_kb": oc.maxrss_kb,
            "rc": oc.rcs[0],
            "timed_out": oc.timed_out,
            "target_cpu_pct": round(tcpu / window * 100, 1) if target else None,
            "other_cpu_pct": round(other / window * 100, 1),
            "served_delta": (served1 - served0) if served0 is not None else None,
        }
        row["noisy"] = row["other_cpu_pct"] > self.a.noise_max
        return row, oc

    @contextlib.contextmanager
    def budget(self, pct: float, scen: str):
        """Every generator started meanwhile runs under a `CpuBudget` of `pct` (none when 0)."""
        budget = CpuBudget(pct) if pct else None
        self.cgroup = budget.procs if budget else None
        if budget:
            log(f"scenario {scen}: generators held to {pct:g}% of CPU {self.a.gen_cpu} ({budget.dir})")
        try:
            yield
        finally:
            self.cgroup = None
            if budget:
                budget.close()

    # ---- scenario A -----------------------------------------------------------------

    def scenario_a(self) -> None:
        with self.budget(self.a.a_budget, "A"):
            self.scenario_a_targets()

    def scenario_a_targets(self) -> None:
        a = self.a
        for tname in a.targets:
            log(f"scenario A: starting target {tname} on CPU {a.target_cpu}")
            target = self.start_target(tname)
            try:
                if a.warmup:
                    log(f"A/{tname}: warm-up wrk -d{a.warmup}s")
                    w = PROCS.start(
                        "warmup",
                        [self.exe["wrk"], "-t1", f"-c{a.connections}", f"-d{a.warmup}s", target.url + "/api/fast"],
                        out=None,
                        cpu=a.gen_cpu,
                    )
                    run_bounded([w], a.warmup + 30)
                for rnd in range(1, a.rounds + 1):
                    for tool in a.tools:
                        self.run_a(target, tool, rnd)
                        time.sleep(1)
            finally:
                target.stop()

    def start_target(self, name: str, **kw) -> Target:
        if name == "demo":
            return DemoTarget(self.coordinator, self.a.target_cpu, self.out)
        return NginxTarget(self.exe["nginx"], self.a.target_cpu, self.out, self.work, **kw)

    def run_a(self, target: Target, tool: str, rnd: int) -> None:
        a = self.a
        n, d = a.connections, a.duration
        url = target.url + "/api/fast"
        base = self.out / f"A-{target.name}-{tool}-{rnd}"
        log(f"A/{target.name} round {rnd}: {tool}, {n} connections, {d}s")
        row = {"scenario": "A", "target": target.name, "tool": tool, "round": rnd, "users": n,
               "budget_pct": a.a_budget or None}
        try:
            if tool == "squall":
                yaml = self.out / "A-squall.yaml"
                squall_yaml(yaml, n, n * 100, d, "/api/fast", None)

                def start():
                    return [PROCS.start("squall", [self.coordinator, "-f", yaml, "--local-workers", 1, "--threads", 1,
                                                   "--headless", "--out", base, "--host", target.url, "--users", n,
                                                   "--duration", f"{d}s"], out=Path(f"{base}.log"), cpu=a.gen_cpu, cgroup=self.cgroup)]
            elif tool == "wrk":
                def start():
                    return [PROCS.start("wrk", [self.exe["wrk"], "-t1", f"-c{n}", f"-d{d}s", "--latency", url],
                                        out=Path(f"{base}.txt"), cpu=a.gen_cpu, cgroup=self.cgroup)]
            elif tool == "oha":
                def start():
                    return [PROCS.start("oha", [self.exe["oha"], "--no-tui", "--output-format", "json",
                                                "--worker-threads", 1, "-c", n, "-z", f"{d}s", url],
                                        out=Path(f"{base}.json"), cpu=a.gen_cpu, cgroup=self.cgroup)]
            else:
                lf = self.out / "A-locustfile.py"
                locust_file(lf, "/api/fast", 0)

                def start():
                    return [PROCS.start("locust", [self.exe["locust"], "-f", lf, "--headless", "-u", n, "-r", n,
                                                   "-t", f"{d}s", "--host", target.url, "--json-file", base,
                                                   "--only-summary", "--loglevel", "WARNING", "--stop-timeout", 2],
                                        out=Path(f"{base}.log"), cpu=a.gen_cpu, cgroup=self.cgroup)]
            w, oc = self.run_window(target, f"A/{tool}", start, d + 90)
            row.update(w)
            row.update(self.parse(tool, base))
            if oc.timed_out:
                row["failed"] = "timed out"
        except (BenchError, OSError, KeyError, ValueError) as e:
            row["failed"] = str(e)
            log(f"A/{target.name}/{tool} failed: {e}")
        self.finish_row(row)
        if tool == "squall" and row.get("served_delta") is not None and row.get("requests") is not None:
            diff = row["served_delta"] - row["requests"]
            log(f"cross-check: Squall counted {row['requests']}, the target served {row['served_delta']} (difference {diff})")

    # ---- scenarios D and E (TLS, HTTP/2) ----------------------------------------------

    def make_cert(self) -> tuple[Path, Path]:
        """A self-signed ECDSA P-256 certificate for 127.0.0.1 (every generator runs unverified)."""
        cert, key = self.work / "target-cert.pem", self.work / "target-key.pem"
        if not cert.exists():
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                            "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                            "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
        return cert, key

    def scenario_d(self) -> None:
        a = self.a
        log(f"scenario D: nginx with http2 over TLS on CPU {a.target_cpu}")
        target = NginxTarget(self.exe["nginx"], a.target_cpu, self.out, self.work, tls=self.make_cert(), http2=True)
        # As in scenario A (`CpuBudget`): one nginx core serves about what one
        # generator core sends, so unbudgeted every tool runs into the target
        # (98 % of its core) and requests per CPU-second say how a tool waits.
        try:
            with self.budget(a.d_budget, "D"):
                for rnd in range(1, a.rounds + 1):
                    for tool in ("squall", "h2load", "oha"):
                        if tool in a.tools or tool == "h2load":
                            self.run_tls("D", "h2", target, tool, rnd, a.d_connections, a.d_streams, close=False)
                            time.sleep(1)
        finally:
            target.stop()

    def scenario_e(self) -> None:
        a = self.a
        log(f"scenario E: nginx with TLS (HTTP/1.1) on CPU {a.target_cpu}")
        target = NginxTarget(self.exe["nginx"], a.target_cpu, self.out, self.work, tls=self.make_cert())
        try:
            with self.budget(a.e_budget, "E"):
                for rnd in range(1, a.rounds + 1):
                    for variant, n, close in (("keepalive", a.connections, False),
                                              ("close", a.e_close_connections, True)):
                        for tool in ("squall", "wrk", "oha"):
                            if tool in a.tools:
                                self.run_tls("E", variant, target, tool, rnd, n, 1, close=close)
                                time.sleep(1)
        finally:
            target.stop()

    def run_tls(self, scen: str, variant: str, target: Target, tool: str, rnd: int, conns: int, streams: int,
                close: bool) -> None:
        a = self.a
        d = a.duration
        url = target.url + "/api/fast"
        base = self.out / f"{scen}-{variant}-{tool}-{rnd}"
        h2 = scen == "D"
        log(f"{scen}/{variant} round {rnd}: {tool}, {conns} connections" + (f" x {streams} streams" if h2 else "")
            + (", a new connection per request" if close else "") + f", {d}s")
        row = {"scenario": scen, "target": variant, "tool": tool, "round": rnd, "users": conns * streams}
        try:
            if tool == "squall":
                yaml = self.out / f"{scen}-{variant}-squall.yaml"
                users = conns * streams
                extra = (f"  http2: {{ connections: {conns}, max_streams: {streams} }}\n" if h2 else "") + (
                    "  connection: close\n" if close else "") or "  timeout: 10s\n"
                yaml.write_text(f"""# Generated by bench/compare.py.
host: https://127.0.0.1:8443
tls: {{ insecure: true }}
defaults:
{extra}scenarios:
  bench: {{ users: {users}, spawn_rate: {users * 100}, duration: {d}s }}
user_classes:
  bench:
    tasks:
      - {{ name: bench, get: /api/fast }}
""")

                def start():
                    return [PROCS.start("squall", [self.coordinator, "-f", yaml, "--local-workers", 1, "--threads", 1,
                                                   "--headless", "--out", base, "--host", target.url],
                                        out=Path(f"{base}.log"), cpu=a.gen_cpu, cgroup=self.cgroup)]
            elif tool == "h2load":
                def start():
                    return [PROCS.start("h2load", [self.exe["h2load"], "-t", 1, "-c", conns, "-m", streams,
                                                   "-D", d, url], out=Path(f"{base}.txt"), cpu=a.gen_cpu, cgroup=self.cgroup)]
            elif tool == "wrk":
                def start():
                    return [PROCS.start("wrk", [self.exe["wrk"], "-t1", f"-c{conns}", f"-d{d}s", "--latency",
                                                *(["-H", "Connection: close"] if close else []), url],
                                        out=Path(f"{base}.txt"), cpu=a.gen_cpu, cgroup=self.cgroup)]
            else:
                def start():
                    return [PROCS.start("oha", [self.exe["oha"], "--no-tui", "--output-format", "json",
                                                "--worker-threads", 1, "--insecure", "-c", conns, "-z", f"{d}s",
                                                *(["--http2", "-p", streams] if h2 else []),
                                                *(["--disable-keepalive"] if close else []), url],
                                        out=Path(f"{base}.json"), cpu=a.gen_cpu, cgroup=self.cgroup)]
            w, oc = self.run_window(target, f"{scen}-{variant}/{tool}", start, d + 90)
            row.update(w)
            row.update(parse_h2load(Path(f"{base}.txt").read_text()) if tool == "h2load" else self.parse(tool, base))
            if oc.timed_out:
                row["failed"] = "timed out"
        except (BenchError, OSError, KeyError, ValueError) as e:
            row["failed"] = str(e)
            log(f"{scen}/{variant}/{tool} failed: {e}")
        self.finish_row(row)

    def table_tls(self, scen: str) -> list[str]:
        a = self.a
        if scen == "D":
            held = budget_note(a.d_budget)
            L = [f"**Scenario D**: HTTP/2 over TLS (ALPN h2, ECDSA P-256 certificate), nginx 1 worker, "
                 f"{a.d_connections} connections x {a.d_streams} concurrent streams, no think time, GET /api/fast, "
                 f"{a.duration}s per run, every generator on one core.{held}", ""]
        else:
            held = budget_note(a.e_budget)
            L = [f"**Scenario E**: HTTPS with HTTP/1.1 (ECDSA P-256, TLS 1.3, nginx 1 worker, no session "
                 f"resumption), GET /api/fast, {a.duration}s per run, every generator on one core: `keepalive` "
                 f"{a.connections} keep-alive connections; `close` {a.e_close_connections} connections each opening "
                 f"a new TCP connection and TLS handshake per request (requests/s = handshakes/s).{held}", ""]
        L.append("| variant | tool | requests/s | p50 ms | p99 ms | generator CPU | req per CPU-s | errors "
                 "| target CPU | other CPU | clean rounds |")
        L.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        g = self.groups(scen, lambda r: (r["target"], r["tool"]))
        ratios = []
        for variant in dict.fromkeys(k[0] for k in g):
            for tool in ("squall", "h2load", "wrk", "oha"):
                if (variant, tool) not in g:
                    continue
                m = self.agg(g[(variant, tool)])
                if m["_failed"]:
                    L.append(f"| {variant} | {tool} | failed: {m['_failed'][:80]} |" + " |" * 8)
                    continue
                L.append(f"| {variant} | {tool} | {fmt(m.get('rps'), 0)} | {fmt(m.get('p50_ms'), 3)} "
                         f"| {fmt(m.get('p99_ms'), 3)} | {fmt(m.get('cpu_pct'), 1)}% | {fmt(m.get('req_per_cpu_s'), 0)} "
                         f"| {fmt(m.get('errors'), 0)} | {fmt(m.get('target_cpu_pct'), 0)}% "
                         f"| {fmt(m.get('other_cpu_pct'), 0)}% | {m['_rounds']} |")
            ratios += self.ratio_lines(g, variant, scen, f"{scen} {variant}")
        L.append("")
        L += ratios + ([""] if ratios else [])
        return L

    def parse(self, tool: str, base: Path) -> dict:
        if tool == "squall":
            return parse_squall(base / "report.json")
        if tool == "wrk":
            return parse_wrk(Path(f"{base}.txt").read_text())
        if tool == "oha":
            return parse_oha(Path(f"{base}.json"))
        return parse_locust(base)

    def finish_row(self, row: dict) -> None:
        req = row.get("requests")
        cpu = row.get("cpu_s")
        if req and cpu:
            row["req_per_cpu_s"] = round(req / cpu, 1)
            row["cpu_s_per_1k"] = round(cpu / req * 1000, 4)
        if row.get("rc") not in (0, None) and "failed" not in row and row["scenario"] != "C" and not (row["tool"] == "locust" and row["rc"] == 1):
            row["failed"] = f"exit code {row['rc']}"
        self.rows.append(row)
        with open(self.out / "results.json", "w") as f:
            json.dump(self.rows, f, indent=1)

    # ---- scenario F -----------------------------------------------------------------

    def scenario_f(self) -> None:
        a = self.a
        log(f"scenario F: starting the demo target on CPU {a.target_cpu}")
        target = self.start_target("demo")
        try:
            for rnd in range(1, a.rounds + 1):
                for kind in ("static", "flow"):
                    self.run_f(target, kind, rnd)
                    time.sleep(1)
        finally:
            target.stop()

    def run_f(self, target: Target, kind: str, rnd: int) -> None:
        a = self.a
        n, d = a.connections, a.duration
        base = self.out / f"F-{kind}-{rnd}"
        log(f"F round {rnd}: squall {kind}, {n} users, {d}s")
        row = {"scenario": "F", "target": "demo", "tool": "squall", "kind": kind, "round": rnd, "users": n}
        try:
            yaml = self.out / f"F-{kind}.yaml"
            squall_flow_yaml(yaml, n, d, kind == "flow")

            def start():
                return [PROCS.start("squall", [self.coordinator, "-f", yaml, "--local-workers", 1, "--threads", 1,
                                               "--headless", "--out", base, "--host", target.url, "--users", n,
                                               "--duration", f"{d}s"], out=Path(f"{base}.log"), cpu=a.gen_cpu)]
            w, oc = self.run_window(target, f"F/{kind}", start, d + 90)
            row.update(w)
            row.update(self.parse("squall", base))
            if oc.timed_out:
                row["failed"] = "timed out"
        except (BenchError, OSError, KeyError, ValueError) as e:
            row["failed"] = str(e)
            log(f"F/{kind} failed: {e}")
        self.finish_row(row)

    def table_f(self) -> list[str]:
        a = self.a
        L = [f"**Scenario F**: flow speed (issue 16). Squall, {a.connections} users, no think time, demo target, "
             f"{a.duration}s per run: a static one-request task (GET /api/fast) against a five-step flow with "
             f"templates, captures and checks on every step (POST/GET /api/echo, /api/fast, /api/health), "
             f"alternating per round. Flow rows are not requests.", ""]
        L.append("| task | requests/s | p50 ms | p99 ms | generator CPU | CPU-s per 1k req | errors | other CPU "
                 "| target served | clean rounds |")
        L.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        g = self.groups("F", lambda r: r["kind"])
        per_1k = {}
        for kind in ("static", "flow"):
            if kind not in g:
                continue
            m = self.agg(g[kind])
            if m["_failed"]:
                L.append(f"| {kind} | failed: {m['_failed'][:80]} |" + " |" * 8)
                continue
            per_1k[kind] = m.get("cpu_s_per_1k")
            L.append(f"| {kind} | {fmt(m.get('rps'), 0, True)} | {fmt(m.get('p50_ms'), 3)} | {fmt(m.get('p99_ms'), 3)} "
                     f"| {fmt(m.get('cpu_pct'), 1)}% | {fmt(m.get('cpu_s_per_1k'), 4)} | {fmt(m.get('errors'), 0)} "
                     f"| {fmt(m.get('other_cpu_pct'), 0)}% | {fmt(m.get('served_delta'), 0, True)} | {m['_rounds']} |")
        L.append("")
        if per_1k.get("static") and per_1k.get("flow"):
            ratio = per_1k["flow"] / per_1k["static"]
            verdict = "within" if ratio <= 1.15 else "above"
            L.append(f"CPU per request, flow / static: **{ratio:.3f}** ({verdict} issue 16's 1.15).")
            L.append("")
        return L

    # ---- scenario B -----------------------------------------------------------------

    def scenario_b(self) -> None:
        a = self.a
        log(f"scenario B: starting the demo target on CPU {a.target_cpu}")
        target = DemoTarget(self.coordinator, a.target_cpu, self.out)
        try:
            probe = a.delay_path.format(ms=1)
            try:
                http_get(target.url + probe)
            except OSError as e:
                raise BenchError(
                    f"the demo target in {self.bin} has no GET {a.delay_path} ({e}); build a newer coordinator"
                ) from e
            for rnd in range(1, a.rounds + 1):
                for tool in a.tools:
                    self.run_b(target, tool, rnd)
                    time.sleep(2)
        finally:
            target.stop()

    def run_b(self, target: DemoTarget, tool: str, rnd: int) -> None:
        a = self.a
        n, d, think = a.b_users, a.b_duration, a.b_think
        path = a.delay_path.format(ms=a.b_delay_ms)
        url = target.url + path
        ideal = n / (think + a.b_delay_ms / 1000)
        base = self.out / f"B-{tool}-{rnd}"
        row = {"scenario": "B", "target": "demo", "tool": tool, "round": rnd, "users": n, "ideal_rps": round(ideal, 1)}
        log(f"B round {rnd}: {tool}, {n} users, {think}s think, {path}, {d}s")
        try:
            if tool == "squall":
                yaml = self.out / "B-squall.yaml"
                squall_yaml(yaml, n, n, d, path, f"{think}s")
                row["model"] = "closed, wait constant"

                def start():
                    return [PROCS.start("squall", [self.coordinator, "-f", yaml, "--local-workers", 1, "--threads", 1,
                                                   "--headless", "--out", base, "--host", target.url, "--users", n,
                                                   "--duration", f"{d}s"], out=Path(f"{base}.log"), cpu=a.gen_cpu)]
            elif tool == "wrk":
                lua = self.out / "B-think.lua"
                wrk_think_lua(lua, think * 1000)
                row["model"] = "delay() after each response"

                def start():
                    return [PROCS.start("wrk", [self.exe["wrk"], "-t1", f"-c{n}", f"-d{d}s", "--latency",
                                                "--timeout", "10s", "-s", lua, url],
                                        out=Path(f"{base}.txt"), cpu=a.gen_cpu)]
            elif tool == "oha":
                # oha has no think time: the closest it comes is a global rate
                # limit at the ideal rate over the same number of connections.
                row["model"] = f"no think time: -q {ideal:.1f} (the ideal rate) over {n} connections"

                def start():
                    return [PROCS.start("oha", [self.exe["oha"], "--no-tui", "--output-format", "json",
                                                "--worker-threads", 1, "-c", n, "-q", f"{ideal:.1f}",
                                                "-z", f"{d}s", url],
                                        out=Path(f"{base}.json"), cpu=a.gen_cpu)]
            else:
                lf = self.out / "B-locustfile.py"
                locust_file(lf, path, float(think))
                row["model"] = "wait_time = constant"

                def start():
                    return [PROCS.start("locust", [self.exe["locust"], "-f", lf, "--headless", "-u", n, "-r", n,
                                                   "-t", f"{d}s", "--host", target.url, "--json-file", base,
                                                   "--only-summary", "--loglevel", "WARNING", "--stop-timeout", 3],
                                        out=Path(f"{base}.log"), cpu=a.gen_cpu)]

            def sample(t):
                return (time.monotonic(), target.served())

            w, oc = self.run_window(target, f"B/{tool}", start, d + 90, on_tick=sample, tick=0.1)
            row.update(w)
            row.update(self.parse(tool, base))
            row.update(self.steady_rate(oc.samples, d))
            if row.get("steady_rps"):
                row["steady_vs_ideal"] = round(row["steady_rps"] / ideal, 4)
            if row.get("p50_ms") is not None:
                row["p50_minus_delay_ms"] = round(row["p50_ms"] - a.b_delay_ms, 3)
            if oc.timed_out:
                row["failed"] = "timed out"
        except (BenchError, OSError, KeyError, ValueError) as e:
            row["failed"] = str(e)
            log(f"B/{tool} failed: {e}")
        self.finish_row(row)

    def steady_rate(self, samples: list[tuple[float, int]], duration: int) -> dict:
        """Rate over the steady window, from the target's served counter.

        The window starts `--b-skip` s after the first request the target saw
        (the ramp-up) and ends by 2 s before the planned end. Generators that
        start every user at once (wrk, oha, Locust's fast spawn) send in waves
        one think-plus-delay period apart, so a window that is not a whole
        number of periods over- or under-counts by up to one wave: every window
        here lasts a whole number of periods, and the rate is the median over
        windows starting at every sample of the first period."""
        if len(samples) < 4:
            return {}
        base = samples[0][1]
        first = next((t for t, s in samples if s > base), None)
        if first is None:
            return {}
        a = self.a
        period = a.b_think + a.b_delay_ms / 1000
        lo = first + min(a.b_skip, duration / 3)
        hi = first + duration - 2
        k = math.floor((hi - lo - period) / period)
        if k < 1:
            return {}
        times = [t for t, _ in samples]

        def at(t: float) -> tuple[float, int]:
            i = min(range(len(times)), key=lambda j: abs(times[j] - t))
            return samples[i]

        rates = []
        for t0, s0 in samples:
            if lo <= t0 < lo + period:
                t1, s1 = at(t0 + k * period)
                if t1 > t0:
                    rates.append((s1 - s0) / (t1 - t0))
        if not rates:
            return {}
        return {"steady_rps": round(statistics.median(rates), 1), "steady_window_s": round(k * period, 1)}

    # ---- scenario R -----------------------------------------------------------------

    def scenario_r(self) -> None:
        """The open model against the closed model's per-core maximum, beside oha -q and hey -q."""
        a = self.a
        log(f"scenario R: starting the demo target on CPU {a.target_cpu}")
        target = DemoTarget(self.coordinator, a.target_cpu, self.out)
        try:
            for rnd in range(1, a.rounds + 1):
                cap = self.run_r(target, "squall", rnd, None)
                if not cap:
                    log("scenario R: the closed model gave no rate; skipping the sweep")
                    continue
                for pct in a.r_fractions:
                    rate = max(1, round(cap * pct / 100))
                    for tool in a.tools:
                        if tool in ("squall", "oha", "hey"):
                            self.run_r(target, tool, rnd, (pct, rate))
                            time.sleep(1)
        finally:
            target.stop()

    def run_r(self, target: DemoTarget, tool: str, rnd: int, at: tuple[int, int] | None) -> float | None:
        """One run of scenario R: `at` None is the closed model's maximum, else (percent, rate)."""
        a = self.a
        d, n = a.r_duration, a.connections
        url = target.url + "/api/fast"
        pct, rate = at if at else (None, None)
        name = f"R-{tool}-{'max' if at is None else pct}-{rnd}"
        base = self.out / name
        row = {"scenario": "R", "target": "demo", "tool": tool, "round": rnd, "pct": pct, "rate": rate,
               "users": n}
        log(f"R round {rnd}: {tool}, " + ("closed model, maximum" if at is None else f"{pct}% = {rate}/s") + f", {d}s")
        try:
            if tool == "squall" and at is None:
                yaml = self.out / "R-squall-closed.yaml"
                squall_yaml(yaml, n, n * 100, d, "/api/fast", None)
                row["model"] = f"closed, {n} users"
            elif tool == "squall":
                yaml = self.out / f"R-squall-{pct}.yaml"
                squall_open_yaml(yaml, rate, a.r_max_users, d, "/api/fast")
                row["model"] = f"open, arrival_rate {rate}/s, max_users {a.r_max_users}"
            # SCHED_FIFO for every generator alike (--r-realtime): Squall's
            # engine thread by its own flag, the peers' whole process by chrt.
            rt = a.r_realtime
            squall_rt = ["--realtime-priority", rt] if rt else []
            chrt = ["chrt", "-f", rt] if rt else []
            if tool == "squall":
                def start():
                    return [PROCS.start("squall", [self.coordinator, "-f", yaml, "--local-workers", 1, "--threads", 1,
                                                   "--headless", "--out", base, "--host", target.url, *squall_rt],
                                        out=Path(f"{base}.log"), cpu=a.gen_cpu)]
            elif tool == "oha":
                row["model"] = f"-q {rate} over {n} connections"

                def start():
                    return [PROCS.start("oha", [*chrt, self.exe["oha"], "--no-tui", "--output-format", "json",
                                                "--worker-threads", 1, "-c", n, "-q", rate, "-z", f"{d}s", url],
                                        out=Path(f"{base}.json"), cpu=a.gen_cpu)]
            else:
                per = rate / n
                row["model"] = f"-c {n} -q {per:.2f} (per worker)"

                def start():
                    return [PROCS.start("hey", [*chrt, self.exe["hey"], "-z", f"{d}s", "-c", n, "-q", f"{per:.2f}", url],
                                        out=Path(f"{base}.txt"), cpu=a.gen_cpu, env={**os.environ, "GOMAXPROCS": "1"})]
            w, oc = self.run_window(target, f"R/{tool}" + ("/closed" if at is None else ""), start, d + 60)
            row.update(w)
            if tool == "squall":
                row.update(parse_squall_open(base / "report.json"))
            elif tool == "oha":
                row.update(parse_oha(Path(f"{base}.json")))
            else:
                row.update(parse_hey(Path(f"{base}.txt").read_text()))
            served = row.get("served_delta")
            if served is not None:
                row["served_rps"] = round(served / d, 1)
                if rate:
                    row["of_rate"] = round(served / d / rate, 4)
            if oc.timed_out:
                row["failed"] = "timed out"
        except (BenchError, OSError, KeyError, ValueError) as e:
            row["failed"] = str(e)
            log(f"R/{tool} failed: {e}")
        self.finish_row(row)
        if at is None and "failed" not in row:
            log(f"R: closed-model maximum {row.get('rps', 0):.0f} req/s on one core")
            return row.get("rps")
        return None

    def table_r(self) -> list[str]:
        a = self.a
        L = [f"**Scenario R** (open model at speed): demo target, GET /api/fast, {a.r_duration}s per run, generator "
             f"on one core. First Squall's closed model ({a.connections} users, no think time) finds the core's "
             f"maximum; then every tool runs at a fixed rate, a share of it: Squall's open model (pool of "
             f"{a.r_max_users}), oha `-q RATE -c {a.connections}`, hey `-c {a.connections} -q RATE/{a.connections}`. "
             f"Achieved: the target's served counter over the run's length. Schedule lag (how late each request "
             f"started against its plan; own: the generator's part of it, how late it took each arrival in hand, the rest being "
             f"the wait for a free user), dropped arrivals and the pool (the most users it ran) are Squall's; oha and hey report neither, and their "
             f"latency is from the actual send (no coordinated-omission correction). Target CPU is the demo target's "
             f"share of its own core: near 100 % the target, not the generator, sets the pace and its queue shows "
             f"as schedule lag."
             + (f" Every generator ran under SCHED_FIFO priority {a.r_realtime}: Squall's engine thread by "
                f"`--realtime-priority {a.r_realtime}`, oha and hey by `chrt -f {a.r_realtime}`." if a.r_realtime else ""),
             ""]
        L.append("| rate | tool | how | asked req/s | achieved req/s | of asked | lag p50 ms | lag p99 ms | own lag p99 ms "
                 "| dropped | pool | p50 ms | p99 ms | generator CPU | target CPU | errors | other CPU |")
        L.append("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        g = self.groups("R", lambda r: (r["pct"], r["tool"]))
        for pct in [None] + list(a.r_fractions):
            for tool in ("squall", "oha", "hey"):
                if (pct, tool) not in g:
                    continue
                m = self.agg(g[(pct, tool)])
                label = "closed max" if pct is None else f"{pct} %"
                if m["_failed"]:
                    L.append(f"| {label} | {tool} | failed: {m['_failed'][:80]} |" + " |" * 14)
                    continue
                of = f"{m['of_rate'] * 100:.1f}%" if m.get("of_rate") else "-"
                L.append(f"| {label} | {tool} | {m.get('model', '')} | {fmt(m.get('rate'), 0)} "
                         f"| {fmt(m.get('served_rps'), 0)} | {of} | {fmt(m.get('lag_p50_ms'), 3)} "
                         f"| {fmt(m.get('lag_p99_ms'), 3)} | {fmt(m.get('own_lag_p99_ms'), 3)} "
                         f"| {fmt(m.get('dropped'), 0)} | {fmt(m.get('pool'), 0)} "
                         f"| {fmt(m.get('p50_ms'), 3)} "
                         f"| {fmt(m.get('p99_ms'), 3)} | {fmt(m.get('cpu_pct'), 1)}% "
                         f"| {fmt(m.get('target_cpu_pct'), 0)}% | {fmt(m.get('errors'), 0)} "
                         f"| {fmt(m.get('other_cpu_pct'), 0)}% |")
        L.append("")
        return L

    # ---- scenario C -----------------------------------------------------------------

    def scenario_c(self) -> None:
        a = self.a
        use_hosts = a.c_netns and os.geteuid() == 0 and shutil.which("ip") is not None
        self.lan = None
        if use_hosts:
            # The target's host lives for the whole scenario; the generator
            # hosts are made fresh for every run (run_c).
            self.lan = Hosts()
            log(f"scenario C: every generator process on its own host (network namespace), target at {Hosts.ADDR} "
                "on a host of its own")
        else:
            self.notes.append("Scenario C ran on loopback (no root or no `ip`, or --no-c-netns): above ~30,000 "
                              "connections connect() scans for free ports and the ramp is kernel-bound.")
        restore = None
        rng = Path("/proc/sys/net/ipv4/ip_local_port_range")
        lo, hi = (int(x) for x in rng.read_text().split())
        if not use_hosts and hi - lo < max(a.c_users) + 2000:
            try:
                restore = rng.read_text()
                rng.write_text("1024 65000\n")
                log(f"widened the ephemeral port range from {restore.split()} to 1024-65000 (restored at exit)")
            except OSError as e:
                log(f"cannot widen ip_local_port_range ({e}); runs above ~{hi - lo} users will fail to connect")
                restore = None
        try:
            log(f"scenario C: starting nginx (4 workers, reuseport) on CPU {a.target_cpu}")
            target = self.start_target("nginx", workers=4, connections=USERS_PER_PROCESS,
                                       addr=Hosts.ADDR if use_hosts else "127.0.0.1",
                                       netns=self.lan.server if self.lan else None)
            try:
                baselines: dict[tuple[str, int], dict] = {}
                for rnd in range(1, a.rounds + 1):
                    for users in a.c_users:
                        for tool in a.tools:
                            procs = math.ceil(users / USERS_PER_PROCESS)
                            key = (tool, procs)
                            if key not in baselines:
                                baselines[key] = self.run_c(target, use_hosts, tool, procs, procs, rnd, baseline=True)
                            self.run_c(target, use_hosts, tool, users, procs, rnd, base_row=baselines.get(key))
                            time.sleep(3)
            finally:
                target.stop()
        finally:
            if self.lan is not None:
                self.lan.close()
                self.lan = None
            if restore is not None:
                rng.write_text(restore)
                log(f"restored ip_local_port_range to {restore.split()}")

    def run_c(self, target: Target, use_hosts: bool, tool: str, users: int, procs: int, rnd: int,
              baseline: bool = False, base_row: dict | None = None) -> dict:
        a = self.a
        think = a.c_think
        spawn = max(100, users // 5)  # everyone up within ~5 s
        ramp_budget = a.c_ramp_timeout
        d = ramp_budget + a.c_hold + 20  # the harness stops the run once it has sampled
        url = target.url + "/api/fast"
        tag = f"C-{tool}-{users}{'-baseline' if baseline else ''}-{rnd}"
        base = self.out / tag
        per = [users // procs + (1 if i < users % procs else 0) for i in range(procs)]
        row = {"scenario": "C", "target": "nginx", "tool": tool, "round": rnd, "users": users,
               "processes": procs, "baseline": baseline, "hosts": procs if use_hosts else 0}
        log(f"C round {rnd}: {tool}, {users} users ({procs} process(es)), {think}s think{' [1-user baseline]' if baseline else ''}")
        gen = a.gen_cpu
        # The target's host also runs Squall's coordinator and Locust's master.
        here = Hosts.ADDR if use_hosts else "127.0.0.1"
        server = self.lan.server if use_hosts else None

        def ns(i: int) -> str | None:
            return hosts.ns(i) if hosts else None

        # Fresh generator hosts for every run: the sockets a previous run left
        # in TIME_WAIT would otherwise hold their ports for 60 s.
        hosts = None
        try:
            if use_hosts:
                hosts = self.lan
                hosts.add_generators(procs)
            if tool == "squall":
                yaml = self.out / "C-squall.yaml"
                squall_yaml(yaml, users, spawn, d, "/api/fast", f"{think}s")
                gport = free_port()
                row["model"] = "closed, wait constant"
                # A bind outside loopback needs a token.
                token = ["--token", "bench"] if use_hosts else []

                def start():
                    ms = [PROCS.start("squall-coordinator", [
                        self.coordinator, "-f", yaml, "--workers", procs, "--bind", f"{here}:{gport}", *token,
                        "--headless", "--out", base, "--host", target.url, "--users", users,
                        "--spawn-rate", spawn, "--duration", f"{d}s", "--wait-timeout", "60s"],
                        out=Path(f"{base}.log"), cpu=gen, netns=server)]
                    for i in range(procs):
                        ms.append(PROCS.start(f"squall-worker-{i}", [
                            self.worker, "--master", f"{here}:{gport}", *token, "--threads", 1,
                            "--give-up-after", "60s", "--id", f"bench-{i}"],
                            out=Path(f"{base}-worker{i}.log"), cpu=gen, netns=ns(i)))
                    return ms
            elif tool == "wrk":
                lua = self.out / "C-think.lua"
                wrk_think_lua(lua, think * 1000)
                row["model"] = "delay() after each response"

                def start():
                    return [PROCS.start(f"wrk-{i}", [self.exe["wrk"], "-t1", f"-c{c}", f"-d{d}s", "--latency",
                                                     "--timeout", "30s", "-s", lua, url],
                                        out=Path(f"{base}-{i}.txt"), cpu=gen, netns=ns(i)) for i, c in enumerate(per)]
            elif tool == "oha":
                row["model"] = "no think time: -q users/think over users connections"

                def start():
                    return [PROCS.start(f"oha-{i}", [self.exe["oha"], "--no-tui", "--output-format", "json",
                                                     "--worker-threads", 1, "-c", c, "-q", f"{c / think:.2f}",
                                                     "-z", f"{d}s", url],
                                        out=Path(f"{base}-{i}.json"), cpu=gen, netns=ns(i)) for i, c in enumerate(per)]
            else:
                lf = self.out / "C-locustfile.py"
                locust_file(lf, "/api/fast", float(think))
                common = ["--headless", "-u", users, "-r", spawn, "-t", f"{d}s", "--host", target.url,
                          "--json-file", base, "--only-summary", "--loglevel", "WARNING", "--stop-timeout", 5]
                if procs == 1:
                    row["model"] = "wait_time = constant"

                    def start():
                        return [PROCS.start("locust", [self.exe["locust"], "-f", lf, *common],
                                            out=Path(f"{base}.log"), cpu=gen, netns=ns(0))]
                else:
                    # Locust's distributed mode: a master and one worker per host.
                    row["model"] = f"wait_time = constant, --master + {procs} --worker"
                    mport = free_port()

                    def start():
                        ms = [PROCS.start("locust-master", [
                            self.exe["locust"], "-f", lf, *common, "--master", "--master-bind-host", here,
                            "--master-bind-port", mport, "--expect-workers", procs], out=Path(f"{base}.log"), cpu=gen,
                            netns=server)]
                        for i in range(procs):
                            ms.append(PROCS.start(f"locust-worker-{i}", [
                                self.exe["locust"], "-f", lf, "--worker", "--master-host", here, "--master-port",
                                mport, "--loglevel", "WARNING"], out=Path(f"{base}-worker{i}.log"), cpu=gen,
                                netns=ns(i)))
                        return ms
            row.update(self.hold_and_sample(target, f"C/{tool}", start, users, baseline, d + 120))
        except (BenchError, OSError, KeyError, ValueError) as e:
            row["failed"] = str(e)
            log(f"C/{tool}/{users} failed: {e}")
        finally:
            if hosts is not None:
                hosts.remove_generators()
        held = row.get("connections") or 0
        if row.get("rss_kb") and not baseline:
            row["rss_per_user_kb"] = round(row["rss_kb"] / users, 2)
            if base_row and base_row.get("rss_kb") and held:
                row["baseline_rss_kb"] = base_row["rss_kb"]
                row["marginal_kb_per_user"] = round((row["rss_kb"] - base_row["rss_kb"]) / max(1, held - procs), 2)
        notes = []
        if not baseline and held < users and "failed" not in row:
            notes.append(f"only {held:,} of {users:,} users held a connection")
        if row.get("stop_note"):
            notes.append(row["stop_note"])
        if notes:
            row["note"] = "; ".join(notes)
        self.finish_row(row)
        return row

    def hold_and_sample(self, target: Target, key: str, start, users: int, baseline: bool, timeout: float) -> dict:
        """Starts the generator, waits until `users` connections are established at
        the target (or stop growing), holds, samples RSS of every generator
        process tree, then interrupts the generator."""
        a = self.a
        target.alive()
        self.wait_quiet()
        members = start()
        self.record_cmd(key + ("-baseline" if baseline else ""), members)
        t0 = time.monotonic()
        deadline = t0 + (a.c_ramp_timeout if not baseline else 30)
        last_n, last_change, n = 0, t0, 0
        out: dict = {}
        try:
            while time.monotonic() < deadline:
                if any(PROCS.reap(m) for m in members):
                    raise BenchError(f"{[m.name for m in members if m.ended][0]} exited early "
                                     f"(exit {[m.popen.returncode for m in members if m.ended][0]})")
                n = established(target.port, target.netns)
                now = time.monotonic()
                if n >= users:
                    break
                if n > last_n:
                    last_n, last_change = n, now
                elif n > 0 and now - last_change > a.c_stall:
                    log(f"{key}: connections stopped growing at {n} of {users}")
                    break
                time.sleep(1)
            up_s = time.monotonic() - t0
            log(f"{key}: {n} of {users} connections after {up_s:.1f}s; holding {a.c_hold if not baseline else 3}s")
            hold_end = time.monotonic() + (a.c_hold if not baseline else 3)
            series = []
            while True:
                rss = pss = 0
                npids = 0
                by_member = {}
                for m in members:
                    if PROCS.reap(m):
                        continue
                    mr = 0
                    for p in tree(m.popen.pid):
                        r, s = mem_kb(p)
                        rss, pss, mr = rss + r, pss + s, mr + r
                        npids += 1
                    by_member[m.name] = mr
                series.append((round(time.monotonic() - t0, 1), rss, pss))
                if time.monotonic() >= hold_end:
                    break
                time.sleep(1)
            n_end = established(target.port, target.netns)
            out = {"connections": min(n, n_end) if n_end else n, "connections_at_end": n_end, "ramp_s": round(up_s, 1),
                   "rss_kb": series[-1][1], "pss_kb": series[-1][2], "rss_max_kb": max(s[1] for s in series),
                   "pids": npids, "rss_by_process_kb": by_member, "rss_series": series}
        finally:
            # Interrupt: every tool stops on SIGINT and prints/writes what it has.
            for m in members:
                PROCS.kill_group(m, signal.SIGINT)
            oc = run_bounded(members, timeout=30)
            out.update({"cpu_s": round(oc.cpu_s, 3), "wall_s": round(oc.wall_s, 3), "maxrss_kb": oc.maxrss_kb,
                        "exit_after_interrupt": oc.rcs})
            if oc.timed_out:
                out["stop_note"] = "killed: still running 30 s after SIGINT"
        return out

    # ---- report --------------------------------------------------------------------

    def versions(self) -> dict:
        def first_line(cmd: list[str]) -> str:
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
                return ((p.stdout or "") + (p.stderr or "")).strip().splitlines()[0]
            except (OSError, IndexError, subprocess.TimeoutExpired):
                return "unknown"

        v = {}
        if "wrk" in self.exe:
            v["wrk"] = " ".join(first_line([self.exe["wrk"], "-v"]).split()[:3])
        if "h2load" in self.exe:
            v["h2load"] = " ".join(first_line([self.exe["h2load"], "--version"]).split()[:2])
        if "oha" in self.exe:
            v["oha"] = first_line([self.exe["oha"], "--version"])
        if "hey" in self.exe:
            pkg = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "hey"], capture_output=True, text=True)
            v["hey"] = f"hey {pkg.stdout.strip() or 'unknown'} (Debian)"
        if "locust" in self.exe:
            v["locust"] = " ".join(first_line([self.exe["locust"], "--version"]).split()[:2])
        if "nginx" in self.exe:
            v["nginx"] = first_line([self.exe["nginx"], "-v"]).replace("nginx version: ", "")
        v["rustc"] = first_line(["rustc", "-V"])
        commit = first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        v["squall"] = f"{first_line([str(self.coordinator), '--version'])}, source tree at {commit}" + (
            " (uncommitted changes)" if dirty else "") + f", binaries from {self.bin}"
        v["python"] = platform.python_version()
        return v

    def machine(self) -> str:
        model = "unknown CPU"
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        return f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}"

    def report(self) -> str:
        a = self.a
        L: list[str] = []
        L.append(f"Run {time.strftime('%Y-%m-%d %H:%M')} (`{self.out.name}`), {self.machine()}; "
                 f"target on CPU {a.target_cpu}, generator on CPU {a.gen_cpu}; {a.rounds} round(s), medians over "
                 f"the rounds where other processes used at most {a.noise_max:.0f}% of a core (all rounds if none).")
        L.append("")
        if any(r["scenario"] == "A" for r in self.rows):
            L += self.table_a()
        if any(r["scenario"] == "B" for r in self.rows):
            L += self.table_b()
        if any(r["scenario"] == "C" for r in self.rows):
            L += self.table_c()
        for scen in ("D", "E"):
            if any(r["scenario"] == scen for r in self.rows):
                L += self.table_tls(scen)
        if any(r["scenario"] == "R" for r in self.rows):
            L += self.table_r()
        if any(r["scenario"] == "F" for r in self.rows):
            L += self.table_f()
        L.append("Versions: " + "; ".join(f"{k} {v}" if not v.startswith(k) else v for k, v in self.versions().items())
                 + ".")
        L.append("")
        L.append("Commands (first round; `$PORT` a free loopback port, `$OUT` the results directory):")
        L.append("")
        L.append("```sh")
        subs = [(str(self.out), "$OUT"), (str(self.bin) + "/", "")]
        for key, cmds in self.first_cmds.items():
            L.append(f"# {key}")
            for c in cmds:
                for s, r in subs:
                    c = c.replace(s, r)
                c = re.sub(r"(127\.0\.0\.1|10\.201\.255\.1):\d+", r"\1:$PORT", c)
                c = re.sub(r"sqbench\d+-", "sqbench-", c)
                c = c.replace(str(Path.home()) + "/.cargo/bin/", "")
                c = re.sub(r"/usr/(local/)?s?bin/", "", c)
                c = re.sub(r"/root/\.pyenv/\S*/bin/", "", c)
                L.append(c)
        L.append("```")
        return "\n".join(L) + "\n"

    def groups(self, scenario: str, keyf) -> dict:
        g: dict = {}
        for r in self.rows:
            if r["scenario"] == scenario and not r.get("baseline"):
                g.setdefault(keyf(r), []).append(r)
        return g

    @staticmethod
    def agg(rows: list[dict]) -> dict:
        ok = [r for r in rows if "failed" not in r]
        clean = [r for r in ok if not r.get("noisy")] or ok
        m = {"_rounds": f"{len([r for r in ok if not r.get('noisy')])}/{len(rows)}", "_failed": None}
        if not ok:
            m["_failed"] = rows[-1].get("failed", "failed")
            return m
        for k in clean[0]:
            vals = [r.get(k) for r in clean]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
                m[k] = median(vals)
            else:
                m[k] = vals[-1]
        return m

    def table_a(self) -> list[str]:
        a = self.a
        held = budget_note(a.a_budget)
        L = [f"**Scenario A**: max throughput, {a.connections} connections, no think time, GET /api/fast "
             f"(2-byte body), {a.duration}s per run.{held}", ""]
        L.append("| target | tool | requests/s | vs wrk | p50 ms | p99 ms | generator CPU | CPU-s per 1k req "
                 "| req per CPU-s | peak RSS | errors | target CPU | other CPU | target served | clean rounds |")
        L.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        g = self.groups("A", lambda r: (r["target"], r["tool"]))
        ratios = []
        for target in a.targets:
            w = self.agg(g.get((target, "wrk"), [])) if (target, "wrk") in g else None
            for tool in a.tools:
                if (target, tool) not in g:
                    continue
                m = self.agg(g[(target, tool)])
                if m["_failed"]:
                    L.append(f"| {target} | {tool} | failed: {m['_failed'][:80]} |" + " |" * 13)
                    continue
                vs = f"{m['rps'] / w['rps']:.2f}x" if w and not w["_failed"] and w.get("rps") else "-"
                L.append(
                    f"| {target} | {tool} | {m['rps']:,.0f} | {vs} | {fmt(m.get('p50_ms'), 3)} | {fmt(m.get('p99_ms'), 3)} "
                    f"| {fmt(m.get('cpu_pct'), 0)}% | {fmt(m.get('cpu_s_per_1k'), 4)} | {fmt(m.get('req_per_cpu_s'), 0, True)} "
                    f"| {mib(m.get('maxrss_kb'))} | {fmt(m.get('errors'), 0)} | {fmt(m.get('target_cpu_pct'), 0)}% "
                    f"| {fmt(m.get('other_cpu_pct'), 0)}% | {fmt(m.get('served_delta'), 0, True) if m.get('served_delta') is not None else '-'} "
                    f"| {m['_rounds']} |")
            ratios += self.ratio_lines(g, target, "A", target)
        L.append("")
        L += ratios
        if ratios:
            L.append("")
        sq = [r for r in self.rows if r["scenario"] == "A" and r["tool"] == "squall" and r.get("served_delta") is not None
              and r.get("requests") is not None]
        if sq:
            L.append("Cross-check on the demo target (Squall's count / requests the target served): "
                     + ", ".join(f"{r['requests']:,} / {r['served_delta']:,}" for r in sq) + ".")
            L.append("")
        return L

    def ratio_lines(self, g: dict, target: str, scenario: str, label: str, rate_key: str = "rps") -> list[str]:
        if (target, "squall") not in g:
            return []
        s = self.agg(g[(target, "squall")])
        if s["_failed"]:
            return []
        parts = []
        for peer in ("h2load", "wrk", "oha", "locust"):
            if (target, peer) not in g:
                continue
            p = self.agg(g[(target, peer)])
            if p["_failed"] or not p.get(rate_key) or not p.get("req_per_cpu_s"):
                continue
            parts.append(f"Squall/{peer} {s[rate_key] / p[rate_key]:.2f}x per wall-clock second, "
                         f"{s['req_per_cpu_s'] / p['req_per_cpu_s']:.2f}x per generator CPU-second")
        return [f"Ratios, {label}: " + "; ".join(parts) + "."] if parts else []

    def table_b(self) -> list[str]:
        a = self.a
        ideal = a.b_users / (a.b_think + a.b_delay_ms / 1000)
        L = [f"**Scenario B**: {a.b_users:,} users, each one request to GET "
             f"{a.delay_path.format(ms=a.b_delay_ms)} (answered after {a.b_delay_ms} ms) then {a.b_think} s think "
             f"time, {a.b_duration}s per run, demo target; ideal rate {ideal:.1f}/s. Achieved rate: the target's "
             f"served counter over the steady window (from {min(a.b_skip, a.b_duration / 3):.0f} s after the first "
             f"request to 2 s before the end), in whole periods of think time + delay (generators that start all "
             f"users at once send in waves), median over the start phases.", ""]
        L.append("| tool | how | achieved req/s | of ideal | p50 ms | p50 - delay | p99 ms | generator CPU "
                 "| CPU-s per 1k req | peak RSS | errors | other CPU | clean rounds |")
        L.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
        g = self.groups("B", lambda r: ("demo", r["tool"]))
        for tool in a.tools:
            if ("demo", tool) not in g:
                continue
            m = self.agg(g[("demo", tool)])
            if m["_failed"]:
                L.append(f"| {tool} | failed: {m['_failed'][:80]} |" + " |" * 11)
                continue
            vs = f"{m['steady_vs_ideal'] * 100:.1f}%" if m.get("steady_vs_ideal") else "-"
            L.append(f"| {tool} | {m.get('model', '')} | {fmt(m.get('steady_rps'), 1)} | {vs} | {fmt(m.get('p50_ms'), 3)} "
                     f"| {fmt(m.get('p50_minus_delay_ms'), 3)} | {fmt(m.get('p99_ms'), 3)} | {fmt(m.get('cpu_pct'), 1)}% "
                     f"| {fmt(m.get('cpu_s_per_1k'), 4)} | {mib(m.get('maxrss_kb'))} | {fmt(m.get('errors'), 0)} "
                     f"| {fmt(m.get('other_cpu_pct'), 0)}% | {m['_rounds']} |")
        L.append("")
        r = self.ratio_lines(g, "demo", "B", "scenario B", rate_key="steady_rps")
        L += r + ([""] if r else [])
        return L

    def table_c(self) -> list[str]:
        a = self.a
        L = [f"**Scenario C**: idle users, each one request to GET /api/fast then {a.c_think} s think time, against "
             f"nginx (4 workers, reuseport); RSS of all generator processes once the users held their connections "
             f"(after a {a.c_hold} s hold). Marginal: (RSS - RSS of the same process layout with one user per "
             f"process) / users. At most {USERS_PER_PROCESS:,} users per process (the fd limit is 20,000); "
             f"each generator process in its own network namespace, as on its own host "
             f"(`ip netns exec sqbench-N`, its own source address towards the target).", ""]
        L.append("| tool | users | processes | how | connections held | ramp s | RSS | RSS per user "
                 "| 1-user RSS | marginal per user | PSS | notes |")
        L.append("|---|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|---|")
        g = self.groups("C", lambda r: (r["tool"], r["users"]))
        for users in a.c_users:
            for tool in a.tools:
                if (tool, users) not in g:
                    continue
                m = self.agg(g[(tool, users)])
                if m["_failed"]:
                    L.append(f"| {tool} | {users:,} | | failed: {m['_failed'][:100]} |" + " |" * 8)
                    continue
                L.append(f"| {tool} | {users:,} | {m.get('processes')} | {m.get('model', '')} "
                         f"| {fmt(m.get('connections'), 0, True)} | {fmt(m.get('ramp_s'), 1)} | {mib(m.get('rss_kb'))} "
                         f"| {kib(m.get('rss_per_user_kb'))} | {mib(m.get('baseline_rss_kb'))} "
                         f"| {kib(m.get('marginal_kb_per_user'))} | {mib(m.get('pss_kb'))} | {m.get('note', '')} |")
        L.append("")
        return L


def fmt(v, digits: int, thousands: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:,.{digits}f}" if thousands else f"{v:.{digits}f}"


def mib(kb) -> str:
    return "-" if not kb else f"{kb / 1024:.1f} MiB"


def kib(kb) -> str:
    return "-" if kb is None else f"{kb:.1f} KiB"


def write_docs(md: str, section: str = "compare") -> None:
    begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
    text = DOCS.read_text()
    if begin not in text or end not in text:
        raise BenchError(f"{DOCS} has no {begin} ... {end} section")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    DOCS.write_text(f"{head}{begin}\n{md}{end}{tail}")
    log(f"updated {DOCS.relative_to(ROOT)}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--scenarios", type=csv_list(ALL_SCENARIOS, upper=True), default=list(DEFAULT_SCENARIOS))
    p.add_argument("--tools", type=csv_list(ALL_TOOLS), default=list(DEFAULT_TOOLS))
    p.add_argument("--targets", type=csv_list(ALL_TARGETS), default=list(ALL_TARGETS),
                   help="scenario A's targets (B always uses the demo target, C nginx)")
    p.add_argument("--duration", type=parse_duration, default=10, help="scenario A run length (default 10s)")
    p.add_argument("--rounds", type=int, default=1, help="rounds of every run; tables show medians")
    p.add_argument("--bin-dir", default=str(Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"),
                   help="where coordinator and worker are (default target/release)")
    p.add_argument("--skip-build", action="store_true", help="do not run cargo build --release --bins")
    p.add_argument("--write-docs", action="store_true",
                   help="replace the marked section of docs/benchmarks.md with the results")
    p.add_argument("--out", default=str(ROOT / "bench" / "out"))
    p.add_argument("--connections", type=int, default=50, help="scenario A connections (default 50)")
    p.add_argument("--a-budget", type=float, default=0,
                   help="scenario A: hold each generator to this %% of one core (cgroup quota); 0: no limit")
    p.add_argument("--docs-section", default="compare",
                   help="--write-docs replaces <!-- NAME:begin --> ... <!-- NAME:end --> (default compare)")
    p.add_argument("--warmup", type=parse_duration, default=2, help="wrk warm-up per A target (0: none)")
    p.add_argument("--b-users", type=int, default=1000)
    p.add_argument("--b-think", type=int, default=1, help="scenario B think time, seconds")
    p.add_argument("--b-delay-ms", type=int, default=50)
    p.add_argument("--b-duration", type=parse_duration, default=30)
    p.add_argument("--b-skip", type=float, default=5.0, help="seconds of ramp-up left out of B's steady window")
    p.add_argument("--delay-path", default="/api/delay/{ms}", help="the demo target's delay route")
    p.add_argument("--r-fractions", type=int_list, default=[50, 80, 90, 110],
                   help="scenario R: open-model rates in %% of the closed model's maximum")
    p.add_argument("--r-duration", type=parse_duration, default=10, help="scenario R run length (default 10s)")
    p.add_argument("--r-max-users", type=int, default=1000, help="scenario R: Squall's open-model pool")
    p.add_argument("--r-realtime", type=int, default=0, metavar="PRIORITY",
                   help="scenario R: every generator under SCHED_FIFO at this priority (Squall's "
                        "--realtime-priority, oha and hey under chrt -f; needs root). 0: off")
    p.add_argument("--c-users", type=int_list, default=[10_000, 50_000])
    p.add_argument("--c-think", type=int, default=10, help="scenario C think time, seconds")
    p.add_argument("--c-hold", type=int, default=10, help="seconds to hold once all C users are up, before sampling")
    p.add_argument("--c-ramp-timeout", type=int, default=90, help="most seconds to wait for C users to connect")
    p.add_argument("--no-c-netns", dest="c_netns", action="store_false",
                   help="run scenario C on loopback instead of one network namespace per generator process")
    p.add_argument("--c-stall", type=int, default=15, help="give up waiting when connections stop growing this long")
    p.add_argument("--d-connections", type=int, default=4, help="scenario D HTTP/2 connections (default 4)")
    p.add_argument("--d-streams", type=int, default=32, help="scenario D concurrent streams per connection (32)")
    p.add_argument("--d-budget", type=float, default=0,
                   help="scenario D: hold each generator to this %% of one core (cgroup quota), so that the "
                        "generator and not nginx is the bottleneck; 0: no limit")
    p.add_argument("--e-budget", type=float, default=0,
                   help="scenario E: hold each generator to this %% of one core (cgroup quota), as --d-budget")
    p.add_argument("--e-close-connections", type=int, default=10,
                   help="scenario E: connections opening a new connection per request (default 10)")
    p.add_argument("--target-cpu", type=int, default=0)
    p.add_argument("--gen-cpu", type=int, default=1)
    p.add_argument("--quiet-max", type=float, default=10, help="wait until the two CPUs are at most this busy (%%)")
    p.add_argument("--quiet-timeout", type=int, default=120, help="...for at most this many seconds")
    p.add_argument("--noise-max", type=float, default=15,
                   help="runs where other processes used more than this (%% of a core) are noisy")
    a = p.parse_args(argv)
    if a.target_cpu == a.gen_cpu:
        p.error("--target-cpu and --gen-cpu must differ")
    if a.rounds < 1:
        p.error("--rounds must be at least 1")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    raise_nofile()
    lock_path = Path(os.environ.get("TMPDIR", "/tmp")) / "squall-bench.lock"
    lock = open(lock_path, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log(f"another benchmark holds {lock_path}; waiting for it")
        fcntl.flock(lock, fcntl.LOCK_EX)

    exit_on_signals()
    b = Bench(a)
    log.path = b.out / "compare.log"
    log(f"results: {b.out}")
    try:
        b.need_tools()
        b.build()
        if "A" in a.scenarios:
            b.scenario_a()
        if "B" in a.scenarios:
            b.scenario_b()
        if "C" in a.scenarios:
            b.scenario_c()
        if "D" in a.scenarios:
            b.scenario_d()
        if "E" in a.scenarios:
            b.scenario_e()
        if "R" in a.scenarios:
            b.scenario_r()
        if "F" in a.scenarios:
            b.scenario_f()
    except KeyboardInterrupt:
        log("interrupted: reporting what was measured")
    except BenchError as e:
        log(f"error: {e}")
        return 1
    finally:
        PROCS.stop_all()
        shutil.rmtree(b.work, ignore_errors=True)
        if b.rows:
            md = b.report()
            (b.out / "results.md").write_text(md)
            print(md)
            latest = b.out.parent / "latest"
            if latest.is_symlink() or not latest.exists():
                latest.unlink(missing_ok=True)
                latest.symlink_to(b.out.name)
            if a.write_docs:
                write_docs(md, a.docs_section)
            log(f"raw outputs, results.json and results.md are in {b.out}")
    return 1 if any("failed" in r for r in b.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
