#!/usr/bin/env python3
"""Drives the side-by-side benchmark (run through loadtest/run.sh).

Starts two nginx backends, HAProxy, nginx and Fulcrum with equivalent configs,
then measures in interleaved rounds: keep-alive HTTP and TCP-mode throughput and
latency with wrk, proxy CPU time per 1,000 requests from /proc, RSS per idle
connection, and large-body throughput. Prints one table and Fulcrum's ratios.
"""

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ENV = os.environ.get
ROUNDS = int(ENV("ROUNDS", "3"))
DURATION = int(ENV("DURATION", "10"))          # seconds per wrk run
CONNECTIONS = int(ENV("CONNECTIONS", "64"))    # wrk keep-alive connections
WRK_THREADS = int(ENV("WRK_THREADS", "1"))
PROXY_THREADS = int(ENV("PROXY_THREADS", "1")) # worker threads/processes of EVERY proxy
CLOSE = ENV("CLOSE", "0") == "1"              # 1: a new client connection per request
# 1: HAProxy and nginx add the request headers Fulcrum always adds (X-Forwarded-For,
# -Proto, -Host, Via) and nginx keeps the client's Host, so all three do the same
# header work. 0: HAProxy and nginx with their bare defaults.
FORWARD_HEADERS = ENV("FORWARD_HEADERS", "1") == "1"
IDLE = int(ENV("IDLE", "10000"))               # idle connections held per proxy
BIG_MB = int(ENV("BIG_MB", "256"))             # large-body size
BIG_RUNS = int(ENV("BIG_RUNS", "3"))
BENCH_DIR = ENV("BENCH_DIR")                   # temp dir made by run.sh (it cleans up)

# HAProxy refuses to start when maxconn needs more descriptors than the limit allows
# (two per connection plus ~20 of its own); its idle test holds at most this many
# connections. Everyone else gets IDLE.
FD_LIMIT = __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)[0]
HAPROXY_MAXCONN = max(1000, (FD_LIMIT - 100) // 2)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULCRUM = os.path.join(ROOT, "target", "release", "fulcrum")
TICK = os.sysconf("SC_CLK_TCK")

BACKENDS = [18081, 18082]
PORTS = {  # proxy -> (http port, tcp port)
    "haproxy": (18101, 18201),
    "nginx": (18102, 18202),
    "fulcrum": (18103, 18203),
}


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def configs(tmp):
    big = os.path.join(tmp, "www")
    os.makedirs(big)
    with open(os.path.join(big, "big"), "wb") as f:
        f.truncate(BIG_MB * 1024 * 1024)  # sparse: no disk I/O in the measurement
    # nginx workers drop root: let them read the file.
    for path in (tmp, big, os.path.join(big, "big")):
        os.chmod(path, 0o755)
    servers = "\n".join(f"    listen 127.0.0.1:{p} reuseport;" for p in BACKENDS)
    write(f"{tmp}/backend.conf", f"""
worker_processes 1;
pid {tmp}/backend.pid;
error_log {tmp}/backend.err;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
{servers}
    root {big};
    location = / {{ return 200 "ok\\n"; }}
    location /big {{ }}
  }}
}}
""")
    h, t = PORTS["haproxy"]
    HAPROXY_FORWARD = """  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request add-header Via "1.1 haproxy"
""" if FORWARD_HEADERS else ""
    NGINX_FORWARD = """      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header Via "1.1 nginx";
""" if FORWARD_HEADERS else ""
    srv = "\n".join(f"  server s{i} 127.0.0.1:{p}" for i, p in enumerate(BACKENDS))
    write(f"{tmp}/haproxy.cfg", f"""
global
  nbthread {PROXY_THREADS}
  maxconn {HAPROXY_MAXCONN}
defaults
  timeout connect 3s
  timeout client 60s
  timeout server 60s
frontend fe_http
  mode http
  bind 127.0.0.1:{h}
  default_backend be_http
backend be_http
  mode http
  balance roundrobin
  http-reuse always
{HAPROXY_FORWARD}{srv}
frontend fe_tcp
  mode tcp
  bind 127.0.0.1:{t}
  default_backend be_tcp
backend be_tcp
  mode tcp
  balance roundrobin
{srv}
""")
    h, t = PORTS["nginx"]
    ups = "\n".join(f"    server 127.0.0.1:{p};" for p in BACKENDS)
    write(f"{tmp}/nginx.conf", f"""
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes {PROXY_THREADS};
worker_rlimit_nofile 100000;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx.err;
events {{ worker_connections 50000; }}
http {{
  access_log off;
  upstream up {{
{ups}
    keepalive 128;
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{h};
    keepalive_requests 1000000;
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
{NGINX_FORWARD}    }}
  }}
}}
stream {{
  upstream tup {{
{ups}
  }}
  server {{
    listen 127.0.0.1:{t};
    proxy_pass tup;
  }}
}}
""")
    h, t = PORTS["fulcrum"]
    fsrv = "\n".join(f"      - {{ name: s{i}, address: 127.0.0.1:{p} }}" for i, p in enumerate(BACKENDS))
    write(f"{tmp}/fulcrum.yaml", f"""
timeouts: {{ connect: 3s, client: 60s, server: 60s, request_header: 60s }}
frontends:
  - {{ name: http, bind: 127.0.0.1:{h}, mode: http, default_backend: app, access_log: false }}
  - {{ name: tcp, bind: 127.0.0.1:{t}, mode: tcp, default_backend: app, access_log: false }}
backends:
  - name: app
    balance: round_robin
    servers:
{fsrv}
""")


def wait_port(port, what, limit=10.0):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not start listening on {port}")


def pids_of(proc):
    """The process and its children (nginx workers)."""
    pids = [proc.pid]
    try:
        out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout
        pids += [int(p) for p in out.split()]
    except OSError:
        pass
    return pids


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass
    return total / TICK


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * UNITS[m.group(2)]


def wrk(port):
    """One wrk run: (requests, req/s, p50 ms, p99 ms, errors), or None if wrk failed."""
    close = ["-H", "Connection: close"] if CLOSE else []
    cmd = ["wrk", f"-t{WRK_THREADS}", f"-c{CONNECTIONS}", f"-d{DURATION}s", "--latency", *close,
           f"http://127.0.0.1:{port}/"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=DURATION + 30).stdout
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        p50 = parse_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
        p99 = parse_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    except (subprocess.TimeoutExpired, AttributeError) as e:
        print(f"  wrk on port {port} failed ({type(e).__name__})", file=sys.stderr)
        return None
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
        print(f"  port {port}: {m.group(0)}", file=sys.stderr)
    return requests, rps, p50, p99, errors


def fd_count(pids):
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return total


def idle_rss(proc, port, count):
    """Hold `count` idle client connections (loadtest/idle_conns.py, its own process)
    and read the proxy's RSS growth. Returns (bytes per connection, RSS MiB with them
    open, connections the client opened, descriptors the proxy gained)."""
    pids = pids_of(proc)
    before, fds0 = rss_kib(pids), fd_count(pids)
    client = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "loadtest", "idle_conns.py"), str(port), str(count), "--hold", "180"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    record_pid(client.pid)
    try:
        line = client.stdout.readline().split()  # "connected N failed M"; bounded by its own budget
        opened = int(line[1]) if len(line) >= 2 else 0
        # Let the proxy accept and settle: until its descriptor count stops moving (<= 10 s).
        last, deadline = -1, time.time() + 10
        while time.time() < deadline:
            time.sleep(0.5)
            now = fd_count(pids)
            if now == last:
                break
            last = now
        after, fds1 = rss_kib(pids), fd_count(pids)
    finally:
        try:
            client.stdin.close()
            client.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            client.kill()
    accepted = fds1 - fds0
    return (after - before) * 1024 / max(accepted, 1), after / 1024, opened, accepted


def peak_rss_mib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def big_body(port):
    speeds = []
    for _ in range(BIG_RUNS):
        try:
            out = subprocess.run(
                ["curl", "-s", "--max-time", "60", "-o", "/dev/null", "-w", "%{speed_download} %{size_download}",
                 f"http://127.0.0.1:{port}/big"],
                capture_output=True, text=True, timeout=90,
            ).stdout.split()
        except subprocess.TimeoutExpired:
            out = ["timeout"]
        if len(out) < 2 or int(float(out[1])) != BIG_MB * 1024 * 1024:
            print(f"  large body through port {port}: incomplete ({out})", file=sys.stderr)
            return float("nan")
        speeds.append(float(out[0]) / 1e6)
    return statistics.median(speeds)


def record_pid(pid):
    """run.sh kills every pid listed here when it exits, however this script ends."""
    if BENCH_DIR:
        with open(os.path.join(BENCH_DIR, "pids"), "a") as f:
            f.write(f"{pid}\n")


def first_line(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def versions():
    commit = first_line(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
                           capture_output=True, text=True).stdout.strip()
    if dirty:
        commit += f" + uncommitted changes in {len(dirty.splitlines())} file(s) under src/"
    return [
        f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"machine: {os.cpu_count()} cores, load average before start {os.getloadavg()[0]:.2f}",
        f"haproxy: {first_line(['haproxy', '-v'])}",
        f"nginx: {first_line(['nginx', '-v'])}",
        f"wrk: {first_line(['wrk', '-v'])}",
        f"fulcrum: {commit}",
    ]


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below
    tmp = BENCH_DIR or tempfile.mkdtemp(prefix="fulcrum-bench-")
    configs(tmp)
    check = subprocess.run([FULCRUM, "check", "--config", f"{tmp}/fulcrum.yaml"], capture_output=True, text=True)
    if check.returncode != 0:
        sys.exit(f"fulcrum check rejected the benchmark config:\n{check.stderr}")
    for line in versions():
        print(line)
    procs = {}
    flog = open(f"{tmp}/fulcrum.log", "w")
    try:
        procs["backend"] = subprocess.Popen(["nginx", "-c", f"{tmp}/backend.conf", "-g", "daemon off;"])
        record_pid(procs["backend"].pid)
        for port in BACKENDS:
            wait_port(port, "backend nginx")
        procs["haproxy"] = subprocess.Popen(["haproxy", "-f", f"{tmp}/haproxy.cfg"], stdout=subprocess.DEVNULL)
        procs["nginx"] = subprocess.Popen(["nginx", "-c", f"{tmp}/nginx.conf", "-g", "daemon off;"])
        procs["fulcrum"] = subprocess.Popen(
            [FULCRUM, "run", "--config", f"{tmp}/fulcrum.yaml", "--threads", str(PROXY_THREADS)],
            env={**os.environ, "RUST_LOG": "warn"}, stdout=flog, stderr=flog,
        )
        for name in ("haproxy", "nginx", "fulcrum"):
            record_pid(procs[name].pid)
        for name, (h, t) in PORTS.items():
            wait_port(h, name)
            wait_port(t, name)
        time.sleep(0.5)  # nginx workers
        for p in procs.values():  # nginx workers too, in case a master is killed hard
            for pid in pids_of(p)[1:]:
                record_pid(pid)
        proxies = ["haproxy", "nginx", "fulcrum"]
        threads = {name: len(os.listdir(f"/proc/{procs[name].pid}/task")) for name in proxies}
        print(f"{ROUNDS} rounds x {DURATION}s, wrk -t{WRK_THREADS} -c{CONNECTIONS}"
              f"{' (Connection: close)' if CLOSE else ''}, {PROXY_THREADS} worker(s) per proxy, "
              f"{'forwarding headers added by all three' if FORWARD_HEADERS else 'HAProxy/nginx add no forwarding headers'} "
              f"(threads in the main process: {threads})")
        results, died = {}, []
        for r in range(ROUNDS):
            order = proxies[r % 3:] + proxies[:r % 3]  # rotate who goes first
            for mode, idx in (("http", 0), ("tcp", 1)):
                for name in order:
                    if procs[name].poll() is not None:
                        continue
                    pids = pids_of(procs[name])
                    cpu0 = cpu_seconds(pids)
                    run = wrk(PORTS[name][idx])
                    cpu = cpu_seconds(pids) - cpu0
                    if procs[name].poll() is not None:
                        died.append(f"{name} exited with {procs[name].returncode} during round {r + 1} {mode}")
                        print(f"  !! {died[-1]}", file=sys.stderr)
                    if run is None:
                        continue
                    requests, rps, p50, p99, errors = run
                    results.setdefault((name, mode), []).append(
                        (rps, p50, p99, cpu * 1e6 / max(requests, 1), errors))
                    print(f"  round {r + 1} {mode:4} {name:8} {rps:10.0f} req/s  p99 {p99:.2f} ms  "
                          f"cpu {cpu * 1e6 / max(requests, 1):.1f} ms/1k  errors {errors}", file=sys.stderr)
        alive = [name for name in proxies if procs[name].poll() is None]
        after_load = {name: rss_kib(pids_of(procs[name])) / 1024 for name in alive}
        held = lambda name: min(IDLE, HAPROXY_MAXCONN - 20) if name == "haproxy" else IDLE
        # Large bodies before the idle test, so the peak RSS reflects streaming only.
        bodies = {name: (big_body(PORTS[name][0]), peak_rss_mib(pids_of(procs[name]))) for name in alive} \
            if BIG_RUNS else {}
        memory = {name: idle_rss(procs[name], PORTS[name][0], held(name)) for name in alive} if IDLE else {}
        report(results, memory, bodies, after_load)
        for name in proxies:
            if procs[name].poll() is not None and not any(d.startswith(name) for d in died):
                died.append(f"{name} exited with {procs[name].returncode}")
        for d in died:
            print(f"!! {d}")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if BENCH_DIR:  # all stopped and reaped: nothing left for run.sh to kill
            open(os.path.join(BENCH_DIR, "pids"), "w").close()
        flog.close()
        with open(f"{tmp}/fulcrum.log") as f:
            lines = f.read().splitlines()
        if lines:
            print(f"\nfulcrum wrote {len(lines)} log line(s) (RUST_LOG=warn); last ones:", file=sys.stderr)
            for line in lines[-10:]:
                print(f"  {line}", file=sys.stderr)
        if not BENCH_DIR:
            shutil.rmtree(tmp, ignore_errors=True)


def report(results, memory, bodies, after_load):
    med = lambda xs, i: statistics.median(x[i] for x in xs)
    proxies = ("haproxy", "nginx", "fulcrum")
    print()
    print(f"| proxy | mode | req/s | p50 ms | p99 ms | CPU ms / 1k req | errors |")
    print(f"|---|---|---:|---:|---:|---:|---:|")
    for mode in ("http", "tcp"):
        for name in proxies:
            xs = results.get((name, mode))
            if not xs:
                print(f"| {name} | {mode} | failed | | | | |")
                continue
            print(f"| {name} | {mode} | {med(xs, 0):.0f} | {med(xs, 1):.3f} | {med(xs, 2):.3f} | "
                  f"{med(xs, 3):.1f} | {sum(x[4] for x in xs)} |")
    print()
    print("| Fulcrum vs | mode | req/s ratio | CPU/req ratio | p99 ratio |")
    print("|---|---|---:|---:|---:|")
    for other in ("haproxy", "nginx"):
        for mode in ("http", "tcp"):
            f, o = results.get(("fulcrum", mode)), results.get((other, mode))
            if not f or not o:
                print(f"| {other} | {mode} | n/a | n/a | n/a |")
                continue
            print(f"| {other} | {mode} | {med(f, 0) / med(o, 0):.2f} | {med(f, 3) / med(o, 3):.2f} | "
                  f"{med(f, 2) / med(o, 2):.2f} |")
    if memory:
        print()
        print("| proxy | idle connections opened | accepted by the proxy | RSS per idle connection "
              "| RSS with them open | RSS after the load runs |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, (per, total, opened, accepted) in memory.items():
            print(f"| {name} | {opened} | {accepted} | {per / 1024:.2f} KiB | {total:.1f} MiB "
                  f"| {after_load.get(name, float('nan')):.1f} MiB |")
    if bodies:
        print()
        print(f"| proxy | {BIG_MB} MiB download through the proxy (median of {BIG_RUNS}) | peak RSS so far |")
        print("|---|---:|---:|")
        for name, (speed, peak) in bodies.items():
            print(f"| {name} | {speed:.0f} MB/s | {peak:.1f} MiB |")


if __name__ == "__main__":
    main()
