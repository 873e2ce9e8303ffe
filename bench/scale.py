#!/usr/bin/env python3
"""Squall scaled out on one machine (issue 17, item 1): every worker process on a host of its own.

    sudo python3 bench/scale.py                         # 100,000 users over 10 worker hosts, 30 s think
    sudo python3 bench/scale.py --users 100000,300000,1000000 --tune all
    sudo python3 bench/scale.py --smoke                 # 3 worker hosts x 300 users x 10 s (about 15 s)
    sudo python3 bench/scale.py --many 1000 --many-users 20 --nice -10 --worker-nice 0   # 1,000 real workers

A host is a network namespace with its own address. The run makes a switch
namespace holding a bridge, a target host running nginx, a coordinator host
running `coordinator` and one host per worker process, each cabled to the
bridge by a veth pair made inside the switch (see compare.py's `Hosts`):
nothing is added to the machine's own interfaces, its loopback included, and
every namespace is removed at exit, on Ctrl-C and on errors. Needs root
(network namespaces) and iproute2; nginx-light is installed with apt-get
when missing.

Each run is the closed model with a constant think time (--think, 30 s): the
coordinator waits for every worker, starts the users over --ramp seconds
(users / 5,000 by default), runs --hold seconds more and writes its report. The
harness then reads nginx's own request count (stub_status, on a second port
that the load never touches; the harness's own reads of it are subtracted)
and reports, per run: whether the report's total equals nginx's count, the
coordinator's CPU-seconds and peak RSS (wait4), the time to full ramp (the
first second of the report's timeline with every user running), the
per-worker spread of requests, failures by kind, the workers' and nginx's
CPU-seconds, the machine's CPU split (user, system, softirq) from /proc/stat,
TCP buffer pages, and the TCP counters (listen overflows, memory aborts,
retransmissions, resets) of the target's host and one worker's host.

--tune picks kernel settings a user can apply (all only inside the run's
namespaces): somaxconn (65535 listen backlog and SYN backlog on the target's
host), multiaccept (nginx's multi_accept on: a wake-up accepts every queued
connection, not one), brnf (no netfilter calls for bridged frames in the switch), notrack
(raw-table NOTRACK in every host), twreuse (tcp_tw_reuse=1 on worker hosts),
bufs (smaller default socket buffers: 4 KiB/16 KiB), jitter (think time drawn
from [0.75, 1.25] x --think instead of constant). `--tune all` takes them all.
--nice N runs nginx, the coordinator and the workers at nice N (a shared
machine's other work otherwise takes the CPU the target needs);
--worker-nice N sets the workers' apart.

--many N runs N real worker processes instead (spread over --many-hosts
hosts, --many-users users each, --many-think think time), to measure the
coordinator's merge cost with real workers: its CPU over the later half of
the run and its peak RSS. A thousand processes on a small machine can starve
the coordinator: give it priority (--nice -10 --worker-nice 0).

Outputs go to bench/out/scale-<timestamp>/ (report directories, logs,
results.json, results.md; the markdown is also printed). Exit 0 when every
run's count was exact, 1 when one was not or failed, 2 on bad usage (no
root, a bad flag).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # no bench/__pycache__ from importing compare
import compare  # noqa: E402  (bench/compare.py: process handling, nginx, namespaces)
from compare import PROCS, BenchError, Hosts, free_port, mem_kb, proc_stat  # noqa: E402

ROOT = compare.ROOT
CLK_TCK = compare.CLK_TCK
# File descriptors a process may hold here: the hard limit (20,000 on the
# development machine; not raisable in its container). A worker needs one per
# user, an nginx worker one per connection (plus a few dozen each).
NOFILE = compare.resource.getrlimit(compare.resource.RLIMIT_NOFILE)[1]
TUNES = ("somaxconn", "multiaccept", "brnf", "notrack", "twreuse", "bufs", "jitter")
PREFIX = "sqscale"


log = compare.Log("scale")


def lab_args(doc: str, users: int, epilog: str | None = None) -> argparse.ArgumentParser:
    """The command line this harness shares with bench/ws/ws50k.py, which
    runs on the same `Lab`: `doc`'s first paragraph as the description,
    --users (comma-separated, `users` by default), --bin-dir and --out.
    Each adds its own options to it."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=epilog)
    p.add_argument("--users", type=compare.int_list, default=[users], help=f"users per run, comma-separated ({users})")
    p.add_argument("--bin-dir", default=str(ROOT / "target" / "release"), help="where coordinator and worker are")
    p.add_argument("--out", default=str(ROOT / "bench" / "out"))
    return p


def is_root(script: str) -> bool:
    """Whether this process may make the network namespaces; if not, it says
    so on stderr, naming `script` (under bench/), and the caller exits 2."""
    if os.geteuid() == 0:
        return True
    print(f"{Path(script).name}: needs root, to make network namespaces: sudo python3 bench/{script}", file=sys.stderr)
    return False


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=60)


def in_ns(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *args, check=check)


def cpu_split() -> dict[str, float]:
    """Seconds of all CPUs since boot by kind (user, system, softirq, irq, idle, other)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    return {k: x / CLK_TCK for k, x in (("user", user + nice), ("system", system), ("softirq", softirq),
                                        ("irq", irq), ("idle", idle + iowait), ("other", steal))}


# TCP counters that tell why requests stall: queues overflowing, memory
# limits, retransmissions (nstat's names, from /proc/net/netstat and snmp).
COUNTERS = ("ListenOverflows", "ListenDrops", "TCPAbortOnMemory", "TCPMemoryPressures", "PruneCalled",
            "RcvPruned", "TCPBacklogDrop", "TCPTimeouts", "RetransSegs", "TCPSynRetrans", "TCPReqQFullDrop",
            "TCPReqQFullDoCookies", "SyncookiesSent", "TCPAbortOnTimeout", "EstabResets", "OutRsts")


def link_losses(log: Path) -> dict:
    """What the coordinator said about workers losing their link: how many,
    why (its `lost: REASON` lines), how many came back with every snapshot
    and how many it stopped waiting for."""
    text = log.read_text(errors="replace") if log.exists() else ""
    reasons = collections.Counter(m.group(1) for m in re.finditer(r"warning: worker \S+ lost: (.*)", text))
    never = re.search(r"(\d+) lost worker\(s\) never came back", text)
    return {"lost": sum(reasons.values()), "reasons": dict(reasons),
            "came_back": text.count("came back and delivered all its snapshots"),
            "never_back": int(never.group(1)) if never else 0}


def tcp_counters(ns: str, save: Path) -> dict[str, int]:
    """The COUNTERS of host `ns` since it was made (every host is fresh per run); all of them saved to `save`."""
    text = in_ns(ns, "cat", "/proc/net/netstat", "/proc/net/snmp", check=False).stdout
    save.write_text(text)
    found: dict[str, int] = {}
    lines = text.splitlines()
    for head, vals in zip(lines[::2], lines[1::2]):
        for k, v in zip(head.split()[1:], vals.split()[1:]):
            if k in COUNTERS and v.lstrip("-").isdigit() and int(v):
                found[k] = int(v)
    return found


def tcp_mem_pages() -> int:
    """Pages the kernel has allocated to TCP buffers, machine-wide (/proc/net/sockstat 'mem'; limit: tcp_mem)."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                p = line.split()
                return int(p[p.index("mem") + 1])
    return 0


def mem_available_kb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def stop_together(members: list) -> None:
    """SIGTERM to all, then reap (one by one, 1,000 workers would take a minute); SIGKILL after 20 s."""
    for m in members:
        PROCS.kill_group(m, signal.SIGTERM)
    end = time.monotonic() + 20
    while time.monotonic() < end and not all(PROCS.reap(m) for m in members):
        time.sleep(0.1)
    for m in members:
        if not PROCS.reap(m):
            PROCS.kill_group(m, signal.SIGKILL)
            PROCS.reap(m, block=True)


class Lab(Hosts):
    """The run's hosts: compare.py's switch and target host, plus a host for the
    coordinator and one per worker (or per group of workers with --many).

    Addresses: target 10.201.255.1 (Hosts.ADDR), coordinator 10.201.255.2,
    worker host i 10.201.{i // 250}.{i % 250 + 2}, all in one /16 on the bridge."""

    COORD = "10.201.255.2"

    def __init__(self, tunes: set[str]) -> None:
        # Namespaces of an interrupted earlier run (same prefix) go first.
        for line in sh("ip", "netns", "list").stdout.splitlines():
            name = line.split()[0] if line.strip() else ""
            if name.startswith(PREFIX):
                sh("ip", "netns", "del", name, check=False)
        # compare.Hosts.__init__, with this harness's prefix.
        self.prefix = f"{PREFIX}{os.getpid() % 10000}"
        self.switch = f"{self.prefix}-sw"
        self.server = f"{self.prefix}-srv"
        self.made: list[str] = []
        self.generators: list[str] = []
        self.tunes = tunes
        try:
            self._namespace(self.switch)
            self._ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            self._ip("-n", self.switch, "link", "set", "br0", "up")
            self._join(self.server, "srv", self.ADDR)
            self._join(self.coord_ns, "crd", self.COORD)
            if "brnf" in tunes:
                for k in ("iptables", "ip6tables", "arptables"):
                    in_ns(self.switch, "sysctl", "-qw", f"net.bridge.bridge-nf-call-{k}=0", check=False)
            if "somaxconn" in tunes:
                in_ns(self.server, "sysctl", "-qw", "net.core.somaxconn=65535", "net.ipv4.tcp_max_syn_backlog=65535")
            for ns in (self.server, self.coord_ns):
                self.tune_host(ns)
        except (OSError, subprocess.CalledProcessError) as e:
            self.close()
            raise BenchError(f"cannot make the target's and the coordinator's hosts: {e}") from e

    @property
    def coord_ns(self) -> str:
        return f"{self.prefix}-crd"

    def tune_host(self, ns: str) -> None:
        if "notrack" in self.tunes:
            for chain in ("PREROUTING", "OUTPUT"):
                in_ns(ns, "iptables", "-t", "raw", "-A", chain, "-j", "NOTRACK")
        if "bufs" in self.tunes:
            in_ns(ns, "sysctl", "-qw", "net.ipv4.tcp_rmem=4096 16384 262144", "net.ipv4.tcp_wmem=4096 16384 262144")
        if "twreuse" in self.tunes:
            in_ns(ns, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1")

    def add_generators(self, n: int) -> None:
        super().add_generators(n)
        try:
            for ns in self.generators:
                self.tune_host(ns)
        except (OSError, subprocess.CalledProcessError) as e:
            raise BenchError(f"cannot tune the worker hosts: {e}") from e

    def conntrack_entries(self) -> int:
        """Connection-tracking entries over all the run's hosts (0: nothing tracks)."""
        total = 0
        for ns in self.made:
            p = in_ns(ns, "cat", "/proc/sys/net/netfilter/nf_conntrack_count", check=False)
            total += int(p.stdout.strip() or 0)
        return total


class Nginx(compare.Target):
    """nginx on the target's host: enough workers that each holds under
    `per_worker` connections (one descriptor each, NOFILE per process), with
    reuseport so that the kernel spreads connections over them, and
    stub_status on a second port for the request count."""

    name = "nginx"

    def __init__(self, exe: list, lab: Lab, out: Path, work: Path, users: int, multi_accept: bool):
        self.netns = lab.server
        self.port = free_port()
        self.status_port = free_port()
        addr = Hosts.ADDR
        self.url = f"http://{addr}:{self.port}"
        self.status_url = f"http://{addr}:{self.status_port}/status"
        self.reads = 0
        per_worker = NOFILE - 1000
        # reuseport hashes connections onto the workers: 15 % headroom over the
        # mean keeps the fullest worker under its limit (the spread of a
        # 1,000,000-connection hash over 60 workers is about 0.8 %).
        workers = max(2, math.ceil(users * 1.15 / per_worker))
        d = work / f"nginx-{self.port}"
        (d / "www" / "api").mkdir(parents=True, exist_ok=True)
        (d / "www" / "api" / "fast").write_text("ok")
        conf = f"""user root;
worker_processes {workers};
worker_rlimit_nofile {NOFILE};
daemon off;
pid {d}/nginx.pid;
error_log {out}/nginx-error.log warn;
events {{ worker_connections {per_worker};{" multi_accept on;" if multi_accept else ""} }}
http {{
    access_log off;
    default_type text/plain;
    keepalive_timeout 600;
    keepalive_requests 100000000;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen {addr}:{self.port} reuseport backlog=65535;
        root {d}/www;
    }}
    server {{
        listen {addr}:{self.status_port};
        location = /status {{ stub_status; }}
    }}
}}
"""
        (d / "nginx.conf").write_text(conf)
        (out / "nginx.conf").write_text(conf)
        self.workers = workers
        self.member = PROCS.start("nginx", [*exe, "-p", d, "-c", d / "nginx.conf", "-e", out / "nginx-error.log"],
                                  out=out / "nginx.log", cpu=None, netns=self.netns)
        for _ in range(100):
            self.alive()
            try:
                self.requests()
                return
            except OSError:
                time.sleep(0.2)
        raise BenchError(f"nginx at {self.status_url} did not become ready")

    def requests(self) -> int:
        """nginx's count of requests so far, less the harness's own reads of it."""
        # One long try rather than retries: a read that timed out may or may not
        # have been counted.
        text = compare.http_get(self.status_url, timeout=60, netns=self.netns)
        self.reads += 1  # counted by nginx as soon as it has read the request, this one included
        m = re.search(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s*$", text, re.M)
        if not m:
            raise OSError(f"unexpected stub_status answer: {text!r}")
        return int(m.group(3)) - self.reads


def scenario_yaml(path: Path, think: int, jitter: bool) -> None:
    wait = (f"{{ between: [{think * 750}ms, {think * 1250}ms] }}" if jitter else f"{{ constant: {think}s }}")
    path.write_text(f"""# Generated by bench/scale.py.
host: http://127.0.0.1:8080
scenarios:
  scale: {{ users: 1, duration: 10s }}
user_classes:
  bench:
    wait: {wait}
    tasks:
      - {{ name: fast, get: /api/fast }}
""")


class Scale:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.out = Path(a.out).resolve() / time.strftime("scale-%Y%m%d-%H%M%S")
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="squall-scale."))
        self.bin = Path(a.bin_dir).resolve()
        self.rows: list[dict] = []
        self.commands: dict[str, list[str]] = {}

    def need_tools(self) -> str:
        for b in ("coordinator", "worker"):
            if not os.access(self.bin / b, os.X_OK):
                raise BenchError(f"{self.bin / b} not found: cargo build --release --bins (or pass --bin-dir)")
        for t in ("ip", "ss", "sysctl") + (("iptables",) if "notrack" in self.a.tunes else ()):
            if not shutil.which(t):
                raise BenchError(f"{t} is required (apt-get install iproute2 procps iptables)")
        exe = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
        if exe is None:
            b = compare.Bench.__new__(compare.Bench)
            exe = compare.Bench.apt_install(b, "nginx-light", "nginx")
        return exe

    def cmd(self, exe, *args, nice: int | None = None) -> list:
        """The command line of a run process, at --nice priority (nice execs: the pid stays the program's)."""
        nice = self.a.nice if nice is None else nice
        return (["nice", "-n", nice] if nice else []) + [exe, *args]

    def run(self, users: int, workers: int, hosts: int, think: int, ramp: int, hold: int) -> dict:
        a = self.a
        tag = (f"{users}u-{workers}w" + (f"-{'+'.join(sorted(a.tunes))}" if a.tunes else "")
               + (f"-nice{a.nice}" if a.nice else ""))
        base = self.out / tag
        base.mkdir()
        row: dict = {"users": users, "workers": workers, "hosts": hosts, "think_s": think, "nice": a.nice,
                     "worker_nice": a.worker_nice,
                     "tunes": sorted(a.tunes), "ramp_s_asked": ramp}
        per = [users // workers + (1 if i < users % workers else 0) for i in range(workers)]
        if max(per) > NOFILE - 200:
            raise BenchError(f"{max(per)} users per worker: a process may hold only {NOFILE} descriptors here; "
                             f"use --per-worker {NOFILE - 3000} or more workers")
        spawn = max(1, users // max(1, ramp))
        duration = ramp + hold
        log(f"run {tag}: {users:,} users over {workers} worker process(es) on {hosts} host(s), "
            f"{think}s think, spawn {spawn:,}/s, {duration}s")
        lab = Lab(a.tunes)
        nginx = None
        try:
            lab.add_generators(hosts)
            nginx = Nginx(self.cmd(self.nginx), lab, base, self.work, users, "multiaccept" in a.tunes)
            row["nginx_workers"] = nginx.workers
            yaml = base / "scenario.yaml"
            scenario_yaml(yaml, think, "jitter" in a.tunes)
            gport = free_port()
            before = nginx.requests()  # 0 on a fresh nginx; read before any load can start
            coord = PROCS.start("coordinator", self.cmd(
                self.bin / "coordinator", "-f", yaml, "--workers", workers, "--bind", f"{Lab.COORD}:{gport}",
                "--token", "bench", "--headless", "--out", base / "report", "--host", nginx.url,
                "--users", users, "--spawn-rate", spawn, "--duration", f"{duration}s",
                "--wait-timeout", f"{max(60, workers // 4)}s"), out=base / "coordinator.log", cpu=None,
                netns=lab.coord_ns)
            members = [coord]
            t_start = time.monotonic()
            for i in range(workers):
                members.append(PROCS.start(f"worker-{i}", self.cmd(
                    self.bin / "worker", "--master", f"{Lab.COORD}:{gport}", "--token", "bench", "--threads", 1,
                    "--give-up-after", "60s", "--id", f"w{i:04d}", nice=a.worker_nice),
                    out=base / f"worker-{i}.log" if workers <= 100 or i < 10 else None, cpu=None,
                    netns=lab.ns(i % hosts)))
            self.commands.setdefault(tag, [" ".join(map(str, coord.popen.args)),
                                           " ".join(map(str, members[1].popen.args))])
            row["start_workers_s"] = round(time.monotonic() - t_start, 1)
            row.update(self.watch(coord, members, nginx, lab, duration + max(120, workers // 4) + 60))
            # Workers first: their load ended with the run, and nginx answers
            # the read sooner without 100,000s of idle connections to close.
            row["nginx_cpu_s"] = round(nginx.ticks() / CLK_TCK, 2)
            row["kernel_counters"] = {"target_host": tcp_counters(lab.server, base / "netstat-target.txt"),
                                      "worker_host_0": tcp_counters(lab.ns(0), base / "netstat-worker0.txt")}
            stop_together(members[1:])
            row["workers_cpu_s"] = round(sum(m.rusage.ru_utime + m.rusage.ru_stime for m in members[1:] if m.rusage), 2)
            row["nginx_requests"] = nginx.requests() - before
            ru = coord.rusage
            if ru is not None:
                row["coord_cpu_s"] = round(ru.ru_utime + ru.ru_stime, 2)
                row["coord_maxrss_mb"] = round(ru.ru_maxrss / 1024, 1)
            row["coord_exit"] = coord.popen.returncode
            row.update(self.parse_report(base / "report" / "report.json", users))
            row["exact"] = (row.get("requests") == row["nginx_requests"] and row.get("failures") == 0)
            # Every request once, failures or not (workers that lose their link cut requests short).
            row["counted"] = row.get("requests") == row["nginx_requests"]
            row["links"] = link_losses(base / "coordinator.log")
        except (BenchError, OSError, subprocess.CalledProcessError, KeyError, ValueError) as e:
            row["failed"] = str(e)
            log(f"run {tag} failed: {e}")
        finally:
            PROCS.stop_all()
            if nginx is not None:
                nginx.stop()
            lab.close()
        self.rows.append(row)
        (self.out / "results.json").write_text(json.dumps(self.rows, indent=1))
        log(f"run {tag}: " + json.dumps({k: v for k, v in row.items() if k not in ("samples", "worker_requests")}))
        return row

    def watch(self, coord, members, nginx: Nginx, lab: Lab, timeout: float) -> dict:
        """Samples the machine every 2 s until the coordinator exits (bounded by `timeout`)."""
        t0 = time.monotonic()
        c0 = cpu_split()
        mem0 = mem_available_kb()
        samples, min_avail, coord_rss, conntrack, tcp_peak = [], mem0, 0, 0, 0
        next_sample = t0
        while not PROCS.reap(coord):
            now = time.monotonic()
            if now - t0 > timeout:
                PROCS.stop(coord, signal.SIGINT, grace=30)
                raise BenchError(f"the coordinator was still running after {timeout:.0f}s: stopped")
            dead = [m.name for m in members[1:] if PROCS.reap(m)]
            if dead:
                log(f"{len(dead)} worker(s) exited early, e.g. {dead[0]} (exit "
                    f"{next(m.popen.returncode for m in members if m.name == dead[0])})")
                members[:] = [m for m in members if m.name not in dead] or [coord]
            if now >= next_sample:
                st = proc_stat(coord.popen.pid)
                rss, _ = mem_kb(coord.popen.pid)
                coord_rss = max(coord_rss, rss)
                avail = mem_available_kb()
                min_avail = min(min_avail, avail)
                c = cpu_split()
                tcp_pages = tcp_mem_pages()
                tcp_peak = max(tcp_peak, tcp_pages)
                samples.append({"t": round(now - t0, 1), "coord_ticks": st[1] if st else None, "coord_rss_kb": rss,
                                "tcp_mem_pages": tcp_pages,
                                "mem_avail_mb": avail // 1024,
                                **{k: round(v - c0[k], 2) for k, v in c.items()}})
                next_sample = now + 2
            time.sleep(0.1)
        c1 = cpu_split()
        busy = {k: c1[k] - c0[k] for k in c1}
        total = sum(busy.values()) or 1
        conntrack = lab.conntrack_entries()
        # The coordinator's CPU over the later half of the run (its steady
        # merging, without the start-up and the workers attaching).
        late = [x for x in samples if x["coord_ticks"] is not None]
        late = late[len(late) // 2:]
        steady = (round((late[-1]["coord_ticks"] - late[0]["coord_ticks"]) / CLK_TCK / (late[-1]["t"] - late[0]["t"]) * 100,
                        1) if len(late) >= 2 and late[-1]["t"] > late[0]["t"] else None)
        tcp_mem = Path("/proc/sys/net/ipv4/tcp_mem").read_text().split()
        return {"coord_cpu_pct_late_half": steady, "tcp_mem_peak_pages": tcp_peak, "tcp_mem_limits_pages": tcp_mem, "wall_s": round(time.monotonic() - t0, 1),
                "cpu_split_pct": {k: round(v / total * 100, 1) for k, v in busy.items()},
                "mem_used_peak_mb": (mem0 - min_avail) // 1024, "coord_rss_sampled_mb": round(coord_rss / 1024, 1),
                "conntrack_entries_at_end": conntrack, "samples": samples}

    @staticmethod
    def parse_report(path: Path, users: int) -> dict:
        if not path.exists():
            raise BenchError(f"the coordinator wrote no {path} (see coordinator.log)")
        r = json.loads(path.read_text())
        t = r["totals"]
        errors: dict[str, int] = {}
        for e in r.get("endpoints", []):
            for k, n in (e.get("errors") or {}).items():
                errors[k] = errors.get(k, 0) + n
        ramp = next((s["t"] for s in r.get("timeline", []) if s.get("users", 0) >= users), None)
        reqs = sorted(w["requests"] for w in r.get("workers", []))
        lost = sum(1 for w in r.get("workers", []) if w.get("lost"))
        cpu = [w.get("cpu_percent_mean", 0) for w in r.get("workers", [])]
        steady = [s for s in r.get("timeline", []) if ramp is not None and s["t"] > ramp + 1][:-1]
        return {"requests": int(t["requests"]), "failures": int(t["failures"]), "errors": errors,
                "rps": t["rps"], "p50_ms": t["latency_ms"]["p50"], "p99_ms": t["latency_ms"]["p99"],
                "max_ms": t["latency_ms"].get("max"), "partial": bool(r.get("partial")),
                "ramp_s": ramp, "workers_in_report": len(reqs), "workers_lost": lost,
                "worker_requests_min": reqs[0] if reqs else None, "worker_requests_max": reqs[-1] if reqs else None,
                "worker_spread_pct": round((reqs[-1] - reqs[0]) / reqs[-1] * 100, 2) if reqs and reqs[-1] else None,
                "worker_cpu_mean_pct": round(sum(cpu) / len(cpu), 1) if cpu else None,
                "steady_rps": round(sum(s["rps"] for s in steady) / len(steady), 1) if steady else None,
                "steady_p99_ms_max": max((s["p99_ms"] for s in steady), default=None)}

    def markdown(self) -> str:
        def tunes(r: dict) -> str:
            nice = [f"nice {r['nice']}"] if r.get("nice") else []
            if r.get("worker_nice") != r.get("nice"):
                nice.append(f"workers nice {r.get('worker_nice')}")
            return ",".join(r["tunes"] + nice) or "-"

        lines = ["| users | workers x hosts | tunes | exact (report = nginx) | failures | ramp to all users | "
                 "steady req/s | p50 / p99 ms | coordinator CPU-s, % of a core (later half), peak RSS | "
                 "per-worker requests min-max | "
                 "workers / nginx CPU-s | machine CPU user/sys/softirq/idle % | memory used | "
                 "links lost / came back / never came back |",
                 "|--:|--|--|--|--|--:|--:|--|--|--|--|--|--:|--|"]
        for r in self.rows:
            if "failed" in r:
                lines.append(f"| {r['users']:,} | {r['workers']} x {r['hosts']} | {tunes(r)} | "
                             f"failed: {r['failed']} ||||||||||")
                continue
            c = r.get("cpu_split_pct", {})
            links = r.get("links", {})
            errs = ", ".join(f"{k} {v:,}" for k, v in r.get("errors", {}).items()) or "0"
            lines.append(
                f"| {r['users']:,} | {r['workers']} x {r['hosts']} | {tunes(r)} | "
                f"{'yes' if r.get('exact') else 'counted once, with failures' if r.get('counted') else 'NO'}: "
                f"{r.get('requests', 0):,} / {r.get('nginx_requests', 0):,} | "
                f"{errs} | {r.get('ramp_s')} s (asked {r['ramp_s_asked']}) | {r.get('steady_rps')} | "
                f"{r.get('p50_ms')} / {r.get('p99_ms')} | {r.get('coord_cpu_s')} s, {r.get('coord_cpu_pct_late_half')} %, "
                f"{r.get('coord_maxrss_mb')} MB | "
                f"{r.get('worker_requests_min') or 0:,}-{r.get('worker_requests_max') or 0:,} ({r.get('worker_spread_pct')} %) | "
                f"{r.get('workers_cpu_s')} / {r.get('nginx_cpu_s')} | "
                f"{c.get('user')}/{c.get('system')}/{c.get('softirq')}/{c.get('idle')} | "
                f"{r.get('mem_used_peak_mb'):,} MB | "
                f"{links.get('lost', 0)} / {links.get('came_back', 0)} / {links.get('never_back', 0)} |")
        lines.append("")
        for tag, cmds in self.commands.items():
            lines.append(f"`{tag}`: `{cmds[0]}`; worker: `{cmds[1]}`")
        return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = lab_args(__doc__, 100_000, epilog="Needs root: it makes network namespaces. " + __doc__.split("\n\n", 2)[2])
    p.add_argument("--per-worker", type=int, default=10_000, help="users per worker process and host (10000)")
    p.add_argument("--think", type=compare.parse_duration, default=30, help="think time (30s)")
    p.add_argument("--ramp", type=compare.parse_duration, default=None,
                   help="seconds to start every user (default: users / 5,000, at least 10)")
    p.add_argument("--hold", type=compare.parse_duration, default=None,
                   help="seconds to run once all users are started (default: 2 x think)")
    p.add_argument("--tune", default="", help=f"kernel settings to apply inside the run's namespaces: "
                   f"comma-separated of {', '.join(TUNES)}, or all")
    p.add_argument("--nice", type=int, default=0,
                   help="run nginx, the coordinator and the workers at this nice value (e.g. -5: ahead of "
                   "other work on a shared machine)")
    p.add_argument("--worker-nice", type=int, default=None,
                   help="nice value of the workers (default: --nice); e.g. --nice -10 --worker-nice 0 keeps "
                   "1,000 worker processes from starving the coordinator on a small machine")
    p.add_argument("--smoke", action="store_true", help="3 worker hosts x 300 users, 1 s think, 10 s")
    p.add_argument("--many", type=int, default=0, help="N real worker processes (the merge-cost run)")
    p.add_argument("--many-hosts", type=int, default=4, help="hosts the --many workers share (4)")
    p.add_argument("--many-users", type=int, default=20, help="users per --many worker (20)")
    p.add_argument("--many-think", type=compare.parse_duration, default=5, help="think time of --many runs (5s)")
    a = p.parse_args(argv)
    tunes = {t.strip() for t in a.tune.split(",") if t.strip()}
    if tunes == {"all"}:
        tunes = set(TUNES)
    bad = tunes - set(TUNES)
    if bad:
        p.error(f"unknown --tune {', '.join(sorted(bad))} (known: {', '.join(TUNES)}, all)")
    a.tunes = tunes
    if a.worker_nice is None:
        a.worker_nice = a.nice
    if a.per_worker < 1 or a.per_worker > NOFILE - 200:
        p.error(f"--per-worker must be 1..{NOFILE - 200} (a process may hold {NOFILE} descriptors here)")
    if a.many and (a.many < 1 or a.many_hosts < 1 or a.many_users < 1):
        p.error("--many, --many-hosts and --many-users must be positive")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    if not is_root("scale.py"):
        return 2
    compare.raise_nofile()
    # One benchmark at a time (compare.py takes the same lock): a second
    # instance would remove this one's namespaces as leftovers, and the two
    # would share the CPUs.
    lock_path = Path(os.environ.get("TMPDIR", "/tmp")) / "squall-bench.lock"
    lock = open(lock_path, "w")
    try:
        compare.fcntl.flock(lock, compare.fcntl.LOCK_EX | compare.fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"scale.py: another benchmark holds {lock_path}; waiting for it", file=sys.stderr)
        compare.fcntl.flock(lock, compare.fcntl.LOCK_EX)

    compare.exit_on_signals()
    s = Scale(a)
    log.path = s.out / "scale.log"
    log(f"results: {s.out}")
    try:
        s.nginx = s.need_tools()
        if a.smoke:
            s.run(900, 3, 3, 1, 2, 8)
        elif a.many:
            s.run(a.many * a.many_users, a.many, min(a.many_hosts, a.many), a.many_think, 10,
                  a.hold if a.hold is not None else 6 * a.many_think)
        else:
            for users in a.users:
                workers = math.ceil(users / a.per_worker)
                ramp = a.ramp if a.ramp is not None else max(10, users // 5000)
                hold = a.hold if a.hold is not None else 2 * a.think
                s.run(users, workers, workers, a.think, ramp, hold)
    except KeyboardInterrupt:
        log("interrupted: reporting what was measured")
    except BenchError as e:
        log(f"error: {e}")
        return 1
    finally:
        PROCS.stop_all()
        shutil.rmtree(s.work, ignore_errors=True)
        if s.rows:
            md = s.markdown()
            (s.out / "results.md").write_text(md)
            print(md)
    return 0 if s.rows and all(r.get("exact") for r in s.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
