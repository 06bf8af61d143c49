#!/usr/bin/env python3
"""Drives the side-by-side benchmark (run through loadtest/run.sh).

Starts two nginx backends, then HAProxy, nginx and Fulcrum with equivalent configs,
one set per worker setting (`PROXY_THREADS`, default: each proxy's own default
worker count, and 1 worker), all listening at once on their own ports. Measures in
interleaved rounds keep-alive HTTP and TCP-mode throughput and latency with wrk at
each of `CONNECTIONS`, proxy CPU time per 1,000 requests from /proc, and large-body
throughput; with TLS (default), the same over TLS on an https frontend of each proxy
serving one ECDSA P-256 certificate: new TLS 1.3 connections per second (one request
each, full handshake, ab), keep-alive HTTPS requests (wrk) and the large body over
https. Then, on fresh proxy processes, the RSS per idle keep-alive client
connection: connected with no request, after one request each sent one after
another, after one request each sent all at once, and after the connections close.
Prints the tables, Fulcrum's ratios and the goals of issue #12 and of TLS termination.
"""

import os
import re
import resource
import selectors
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
DURATION = int(ENV("DURATION", "4"))                              # seconds per wrk run
CONNECTIONS = [int(c) for c in ENV("CONNECTIONS", "64 1000").split()]  # wrk keep-alive connections, one row each
WRK_THREADS = int(ENV("WRK_THREADS", "1"))
# Worker settings, each run as its own set of proxies: "default" = each proxy's own
# default (HAProxy without nbthread: one thread per CPU; nginx `worker_processes
# auto`; `fulcrum run` without --threads: one worker per core), N = N workers each.
PROXY_THREADS = ENV("PROXY_THREADS", "default 1").split()
CLOSE = ENV("CLOSE", "0") == "1"              # 1: a new client connection per request
# 1: HAProxy and nginx add the request headers Fulcrum always adds (X-Forwarded-For,
# -Proto, -Host, Via) and nginx keeps the client's Host, so all three do the same
# header work. 0: HAProxy and nginx with their bare defaults.
FORWARD_HEADERS = ENV("FORWARD_HEADERS", "1") == "1"
IDLE = int(ENV("IDLE", "8000"))               # keep-alive client connections in the memory test
MEMORY_THREADS = ENV("MEMORY_THREADS", PROXY_THREADS[0] if PROXY_THREADS else "default").split()
RETURN_WAIT = float(ENV("RETURN_WAIT", "3"))  # seconds after the close before the last RSS reading
# Seconds the connections sit idle after their request before RSS is read (every
# proxy alike): what a client's idle keep-alive connection costs once it is idle,
# not in the instant after its response (Fulcrum frees a connection's buffers after
# 1 s idle and gives a burst's memory back about 1.5-2.5 s after it ended).
IDLE_WAIT = float(ENV("IDLE_WAIT", "3.5"))
BIG_MB = int(ENV("BIG_MB", "256"))            # large-body size
BIG_RUNS = int(ENV("BIG_RUNS", "3"))
# 1: each load set also gets an https frontend (same ECDSA P-256 certificate for all
# three) and the TLS rows are measured: new TLS 1.3 connections with one request each
# (ab: a full handshake per connection), keep-alive HTTPS (wrk), the large body over
# https (curl). 0: no TLS at all.
TLS = ENV("TLS", "1") == "1"
TLS_CONNECTIONS = int(ENV("TLS_CONNECTIONS", "64"))  # concurrency of both TLS rows
# https-flood: new TLS clients at once (ab) while the keep-alive HTTPS row is measured.
FLOOD_CONNECTIONS = int(ENV("FLOOD_CONNECTIONS", "256"))
BENCH_DIR = ENV("BENCH_DIR")                  # temp dir made by run.sh (it cleans up)

for w in PROXY_THREADS + MEMORY_THREADS:
    if w != "default" and not (w.isdigit() and int(w) >= 1):
        sys.exit(f"PROXY_THREADS / MEMORY_THREADS: 'default' or a worker count >= 1, not {w!r}")
if len(PROXY_THREADS) > 9 or len(MEMORY_THREADS) > 4:
    sys.exit("at most 9 PROXY_THREADS and 4 MEMORY_THREADS settings (ports)")

# HAProxy refuses to start when maxconn needs more descriptors than the limit allows
# (two per connection plus ~20 of its own); its memory test holds at most this many
# connections. Everyone else gets IDLE.
FD_LIMIT = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
HAPROXY_MAXCONN = max(1000, (FD_LIMIT - 100) // 2)

# nginx's cache of idle upstream connections per worker. HAProxy (`http-reuse
# always`) and Fulcrum keep every idle server connection; with fewer cached than
# wrk has requests in flight, nginx would close and reopen server connections all
# the time, so the cache holds at least as many as the most connections measured.
NGINX_KEEPALIVE = max([128] + CONNECTIONS)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# FULCRUM_BIN: another binary (e.g. an older build for an A/B); default the release build.
FULCRUM = ENV("FULCRUM_BIN") or os.path.join(ROOT, "target", "release", "fulcrum")
IDLE_CLIENT = os.path.join(ROOT, "loadtest", "idle_conns.py")
TICK = os.sysconf("SC_CLK_TCK")
CPUS = os.cpu_count()

PROXIES = ("haproxy", "nginx", "fulcrum")
BACKENDS = [18081, 18082]


def tls_port(name, setting_index):
    """https port of one proxy in the load set of PROXY_THREADS[setting_index]:
    18301 haproxy, 18302 nginx, 18303 fulcrum, +10 per setting."""
    return 18300 + 10 * setting_index + PROXIES.index(name) + 1


def load_ports(name, setting_index):
    """(http, tcp) of one proxy in the load set of PROXY_THREADS[setting_index]:
    18101/18201 haproxy, 18102/18202 nginx, 18103/18203 fulcrum, +10 per setting."""
    k = PROXIES.index(name) + 1
    return 18100 + 10 * setting_index + k, 18200 + 10 * setting_index + k


def memory_ports(name, run_index):
    k = PROXIES.index(name) + 1
    return 18400 + 10 * run_index + k, 18500 + 10 * run_index + k


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def backend_config(tmp):
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
    location = /proto {{ return 200 "$http_x_forwarded_proto\\n"; }}
    location /big {{ }}
  }}
}}
""")


def make_certificate(tmp):
    """One self-signed ECDSA P-256 certificate and key for all three proxies (HAProxy
    wants both in one PEM file). Returns {"cert", "key", "pem"} paths."""
    d = os.path.join(tmp, "tls")
    os.makedirs(d)
    files = {k: os.path.join(d, f"{k}.pem") for k in ("cert", "key", "pem")}
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "2", "-subj", "/CN=bench.test", "-addext", "subjectAltName=DNS:bench.test",
                        "-keyout", files["key"], "-out", files["cert"]], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        sys.exit(f"openssl could not make the benchmark certificate:\n{r.stderr}")
    with open(files["pem"], "w") as out:
        for k in ("cert", "key"):
            with open(files[k]) as f:
                out.write(f.read())
    return files


CERT = {}  # filled by main() when TLS: {"cert", "key", "pem"}


def proxy_config(tmp, name, workers, http, tcp, tag, https=None):
    """Write one proxy's config (with an https frontend on `https` if given); returns
    its path."""
    srv = "\n".join(f"  server s{i} 127.0.0.1:{p}" for i, p in enumerate(BACKENDS))
    ups = "\n".join(f"    server 127.0.0.1:{p};" for p in BACKENDS)
    fsrv = "\n".join(f"      - {{ name: s{i}, address: 127.0.0.1:{p} }}" for i, p in enumerate(BACKENDS))
    if name == "haproxy":
        path = f"{tmp}/haproxy-{tag}.cfg"
        # Unset nbthread is HAProxy 2.6's default: one thread per CPU it may run on.
        nbthread = "" if workers == "default" else f"  nbthread {workers}\n"
        forward = lambda proto: f"""  option forwardfor
  http-request set-header X-Forwarded-Proto {proto}
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request add-header Via "1.1 haproxy"
""" if FORWARD_HEADERS else ""
        # Same as be_http but its own section, so the proto header says https.
        tls = f"""frontend fe_https
  mode http
  bind 127.0.0.1:{https} ssl crt {CERT.get("pem")} alpn h2,http/1.1
  default_backend be_https
backend be_https
  mode http
  balance roundrobin
  http-reuse always
{forward("https")}{srv}
""" if https else ""
        write(path, f"""
global
{nbthread}  maxconn {HAPROXY_MAXCONN}
defaults
  timeout connect 3s
  timeout client 60s
  timeout server 60s
frontend fe_http
  mode http
  bind 127.0.0.1:{http}
  default_backend be_http
backend be_http
  mode http
  balance roundrobin
  http-reuse always
{forward("http")}{srv}
frontend fe_tcp
  mode tcp
  bind 127.0.0.1:{tcp}
  default_backend be_tcp
backend be_tcp
  mode tcp
  balance roundrobin
{srv}
{tls}""")
    elif name == "nginx":
        path = f"{tmp}/nginx-{tag}.conf"
        forward = """      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header Via "1.1 nginx";
""" if FORWARD_HEADERS else ""
        # nginx 1.22's ssl_protocols default lacks TLSv1.3: say it (1.2 and 1.3, as
        # HAProxy and Fulcrum by default). $scheme is https here: X-Forwarded-Proto too.
        tls = f"""  server {{
    listen 127.0.0.1:{https} ssl http2;
    ssl_certificate {CERT.get("cert")};
    ssl_certificate_key {CERT.get("key")};
    ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_requests 1000000;
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
{forward}    }}
  }}
""" if https else ""
        write(path, f"""
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes {"auto" if workers == "default" else workers};
worker_rlimit_nofile 100000;
pid {tmp}/nginx-{tag}.pid;
error_log {tmp}/nginx-{tag}.err;
events {{ worker_connections 50000; }}
http {{
  access_log off;
  upstream up {{
{ups}
    keepalive {NGINX_KEEPALIVE};
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{http};
    keepalive_requests 1000000;
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
{forward}    }}
  }}
{tls}}}
stream {{
  upstream tup {{
{ups}
  }}
  server {{
    listen 127.0.0.1:{tcp};
    proxy_pass tup;
  }}
}}
""")
    else:
        path = f"{tmp}/fulcrum-{tag}.yaml"
        tls = (f"  - {{ name: https, bind: 127.0.0.1:{https}, mode: http, default_backend: app, access_log: false, "
               f"tls: {{ certificates: [ {{ cert: {CERT.get('cert')}, key: {CERT.get('key')} }} ] }} }}\n") if https else ""
        write(path, f"""
timeouts: {{ connect: 3s, client: 60s, server: 60s, request_header: 60s }}
frontends:
  - {{ name: http, bind: 127.0.0.1:{http}, mode: http, default_backend: app, access_log: false }}
  - {{ name: tcp, bind: 127.0.0.1:{tcp}, mode: tcp, default_backend: app, access_log: false }}
{tls}backends:
  - name: app
    balance: round_robin
    servers:
{fsrv}
""")
        check = subprocess.run([FULCRUM, "check", "--config", path], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            sys.exit(f"fulcrum check rejected the benchmark config {path}:\n{check.stderr}")
    return path


def wait_port(port, what, limit=10.0):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not start listening on {port}")


def ports_free():
    """Exit if anything already listens on a port this run will use: the backends
    listen with SO_REUSEPORT, so another nginx there would silently share them."""
    ports = list(BACKENDS)
    for name in PROXIES:
        ports += [p for i in range(len(PROXY_THREADS)) for p in load_ports(name, i)]
        ports += [tls_port(name, i) for i in range(len(PROXY_THREADS))] if TLS else []
        ports += [p for i in range(2 * len(MEMORY_THREADS)) for p in memory_ports(name, i)]
    busy = []
    for port in ports:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            busy.append(port)
        except OSError:
            pass
    if busy:
        sys.exit(f"already in use on 127.0.0.1 (another benchmark running?): ports {busy}")


def children(pid):
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, timeout=10).stdout
        return [int(p) for p in out.split()]
    except (OSError, subprocess.TimeoutExpired):
        return []


def pids_of(proc):
    """The process and its children (nginx workers)."""
    return [proc.pid] + children(proc.pid)


def thread_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def record_pid(pid):
    """run.sh kills every pid listed here when it exits, however this script ends."""
    if BENCH_DIR:
        with open(os.path.join(BENCH_DIR, "pids"), "a") as f:
            f.write(f"{pid}\n")


class Instance:
    """One running proxy: name, worker setting, ports, process."""

    def __init__(self, tmp, name, workers, http, tcp, tag, log, https=None):
        self.name, self.workers, self.http, self.tcp, self.tag = name, workers, http, tcp, tag
        self.https = https
        path = proxy_config(tmp, name, workers, http, tcp, tag, https)
        if name == "haproxy":
            cmd = ["haproxy", "-f", path]
        elif name == "nginx":
            cmd = ["nginx", "-c", path, "-g", "daemon off;"]
        else:
            cmd = [FULCRUM, "run", "--config", path]
            if workers != "default":
                cmd += ["--threads", workers]
        self.cmd = cmd
        env = {**os.environ, "RUST_LOG": "warn"} if name == "fulcrum" else None
        self.proc = subprocess.Popen(cmd, stdout=log if name == "fulcrum" else subprocess.DEVNULL,
                                     stderr=log if name == "fulcrum" else None, env=env)
        record_pid(self.proc.pid)
        wait_port(http, f"{name} ({tag})")
        wait_port(tcp, f"{name} ({tag})")
        if https:
            wait_port(https, f"{name} ({tag})")
        if name == "nginx":  # wait for the workers to be forked (<= 5 s)
            want = CPUS if workers == "default" else int(workers)
            deadline = time.time() + 5
            while len(children(self.proc.pid)) < want and time.time() < deadline:
                time.sleep(0.05)
        time.sleep(0.3)
        for pid in children(self.proc.pid):  # in case a master is killed hard
            record_pid(pid)

    def alive(self):
        return self.proc.poll() is None

    def pids(self):
        return pids_of(self.proc)

    def shape(self):
        """What the worker setting turned into, as seen in /proc."""
        if self.name == "nginx":
            return f"{len(children(self.proc.pid))} worker processes"
        return f"{thread_count(self.proc.pid)} threads"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


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


def status_kib(pids, field):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def rss_kib(pids):
    return status_kib(pids, "VmRSS")


def fd_count(pids):
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return total


UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * UNITS[m.group(2)]


def wrk(port, connections, scheme="http"):
    """One wrk run: (requests, req/s, p50 ms, p99 ms, errors), or None if wrk failed.
    Over https always keep-alive (wrk would resume its TLS session on every new
    connection: the new-connection row is ab's, below)."""
    close = ["-H", "Connection: close"] if CLOSE and scheme == "http" else []
    cmd = ["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{DURATION}s", "--latency", *close,
           f"{scheme}://127.0.0.1:{port}/"]
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


def ab(port, connections, csv):
    """One ab run over new TLS 1.3 connections, one request each (HTTP/1.0, no
    keep-alive; ab makes a new TLS session for every connection and never offers a
    previous one, so each is a full handshake): (requests, req/s, p50 ms, p99 ms,
    errors, negotiated), or None if ab failed. ab's own CPU per 1k connections goes
    to AB_CPU. `csv` is a scratch file for ab's percentiles (its text report rounds
    them to whole ms)."""
    cmd = ["ab", "-q", "-r", "-f", "TLS1.3", "-s", "10", "-c", str(connections), "-t", str(DURATION),
           "-n", str(max(1000, DURATION * 50000)), "-e", csv, f"https://127.0.0.1:{port}/"]
    try:
        if os.path.exists(csv):
            os.unlink(csv)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=DURATION + 30).stdout
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        client_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        requests = int(re.search(r"Complete requests:\s+(\d+)", out).group(1))
        rps = float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))
        with open(csv) as f:
            pct = dict(line.strip().split(",", 1) for line in f if line[:1].isdigit())
        p50, p99 = float(pct["50"]), float(pct["99"])
    except (subprocess.TimeoutExpired, AttributeError, OSError, KeyError, ValueError) as e:
        print(f"  ab on port {port} failed ({type(e).__name__})", file=sys.stderr)
        return None
    errors = 0
    for pattern in (r"Failed requests:\s+(\d+)", r"Non-2xx responses:\s+(\d+)", r"Write errors:\s+(\d+)"):
        m = re.search(pattern, out)
        if m:
            errors += int(m.group(1))
    if errors:
        detail = re.search(r"Failed requests:.*\n(\s+\(.*\))?", out)
        print(f"  port {port}: ab errors {errors} {detail.group(0).split() if detail else ''}", file=sys.stderr)
    proto = re.search(r"SSL/TLS Protocol:\s+(\S+)", out)
    key = re.search(r"Server Temp Key:\s+(.+)", out)
    negotiated = f"{proto.group(1) if proto else '?'} {key.group(1).strip() if key else ''}".strip()
    AB_CPU.append(client_cpu * 1e6 / max(requests, 1))
    return requests, rps, p50, p99, errors, negotiated


AB_CPU = []  # ab's own CPU ms per 1k connections, every run


def flooded_wrk(port, connections):
    """The keep-alive HTTPS row (wrk) measured while ab floods the same proxy with
    FLOOD_CONNECTIONS new TLS 1.3 clients at once: what established clients see of
    a burst of handshakes (p99 above all)."""
    url = f"https://127.0.0.1:{port}/"
    flood = subprocess.Popen(["ab", "-q", "-r", "-f", "TLS1.3", "-s", "10", "-c", str(FLOOD_CONNECTIONS),
                              "-t", str(DURATION + 3), "-n", str(max(1000, DURATION * 50000)), url],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    record_pid(flood.pid)
    try:
        time.sleep(0.5)  # the flood under way before the measurement starts
        return wrk(port, connections, "https")
    finally:
        flood.terminate()
        try:
            flood.wait(timeout=10)
        except subprocess.TimeoutExpired:
            flood.kill()
            flood.wait()


def tls_probe(port):
    """What one TLS frontend negotiates with OpenSSL's client, and the
    X-Forwarded-Proto the backend saw through it (its /proto echoes the header)."""
    try:
        r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "bench.test",
                            "-brief"], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
        text = r.stdout + r.stderr
        get = lambda label: (re.search(label + r":\s*(.+)", text) or [None, "?"])[1].strip()
        hs = f"{get('Protocol version')} {get('Ciphersuite')} {get('Server Temp Key')}"
    except (OSError, subprocess.TimeoutExpired):
        hs = "handshake failed"
    try:
        proto = subprocess.run(["curl", "-sk", "--http1.1", "--max-time", "10", f"https://127.0.0.1:{port}/proto"],
                               capture_output=True, text=True, timeout=20).stdout.strip() or "(none)"
    except (OSError, subprocess.TimeoutExpired):
        proto = "(curl failed)"
    return f"{hs}, X-Forwarded-Proto at the backend: {proto}"


def settle(pids, limit=10.0, step=0.5):
    """Wait until the proxy's descriptor count and RSS stop moving (<= limit s);
    returns (rss KiB, descriptors)."""
    last, deadline = None, time.time() + limit
    while time.time() < deadline:
        time.sleep(step)
        now = (rss_kib(pids), fd_count(pids))
        if last is not None and now[1] == last[1] and abs(now[0] - last[0]) <= 64:
            return now
        last = now
    return rss_kib(pids), fd_count(pids)


class IdleClient:
    """loadtest/idle_conns.py in its own process, driven line by line."""

    def __init__(self, port, count, first_source):
        self.proc = subprocess.Popen(
            [sys.executable, IDLE_CLIENT, str(port), str(count), "--hold", "300",
             "--first-source", str(first_source)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        record_pid(self.proc.pid)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)

    def line(self, limit):
        """The client's next line, split; [] if none within `limit` s (its own budgets
        are shorter) or it exited."""
        if not self.sel.select(timeout=limit):
            print("  idle client: no answer in time", file=sys.stderr)
            return []
        return self.proc.stdout.readline().split()

    def ask(self, cmd, limit):
        try:
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()
        except OSError:
            return []
        return self.line(limit)

    def stop(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.sel.close()


def field(words, name, default=0, kind=int):
    """The number after `name` in a client answer."""
    try:
        return kind(words[words.index(name) + 1])
    except (ValueError, IndexError):
        return default


def memory_run(tmp, log, name, workers, scenario, run_index, count):
    """A fresh proxy process; `count` keep-alive client connections to it; RSS
    before, once connected, after one request on each (scenario "seq": one after
    another, "burst": all at once), and after they are closed again."""
    http, tcp = memory_ports(name, run_index)
    inst = Instance(tmp, name, workers, http, tcp, f"mem{run_index}-{name}", log)
    out = {"name": name, "workers": workers, "scenario": scenario}
    client = None
    try:
        pids = inst.pids()
        rss0, fds0 = settle(pids, limit=5)
        out["before"] = rss0
        # Source addresses: a fresh pair of 127.0.0.x per run, so no 4-tuple of a
        # previous run's TIME_WAIT is ever reused.
        client = IdleClient(http, count, 2 + run_index * ((count + 4999) // 5000))
        words = client.line(180)
        out["opened"] = field(words, "connected")
        out["connect_failed"] = field(words, "failed", count)
        out["connected"], fds = settle(pids)
        out["accepted"] = fds - fds0
        t = time.time()
        words = client.ask(scenario, 180)
        out["ok"], out["failed"] = field(words, "ok"), field(words, "failed", out["opened"])
        out["phase_secs"] = field(words, "secs", float("nan"), float)
        time.sleep(IDLE_WAIT)
        out["requested"], _ = settle(pids)
        # The high-water mark: the burst's peak, which (c) no longer shows once the
        # requests' memory was freed.
        out["peak"] = status_kib(pids, "VmHWM")
        out["open"] = field(client.ask("check", 60), "open")
        out["hold_secs"] = time.time() - t
        client.ask("close", 60)
        settle(pids)
        time.sleep(RETURN_WAIT)  # an allocator that purges with a delay gets it
        out["closed"] = rss_kib(pids)
        out["alive"] = inst.alive()
    finally:
        if client:
            client.stop()
        inst.stop()
    kib = lambda k: (out[k] - rss0) / max(out["accepted"], 1)
    for k in ("connected", "requested", "closed"):
        out[k + "_per"] = kib(k)
    print(f"  memory {name:8} {workers:>7} {scenario:5}: {out['opened']} connected, {out['accepted']} accepted, "
          f"{out['ok']} ok / {out['failed']} failed, {out['open']} open; per connection "
          f"connected {out['connected_per']:.2f} KiB, after the requests {out['requested_per']:.2f} KiB, "
          f"after closing {out['closed_per']:.2f} KiB", file=sys.stderr)
    return out


def peak_rss_mib(pids):
    return status_kib(pids, "VmHWM") / 1024


def big_body(port, scheme="http"):
    """Median MB/s of BIG_RUNS downloads of /big (over https: HTTP/1.1, like http;
    -k: the benchmark's certificate is self-signed)."""
    speeds = []
    tls = ["-k", "--http1.1"] if scheme == "https" else []
    for _ in range(BIG_RUNS):
        try:
            out = subprocess.run(
                ["curl", "-s", *tls, "--max-time", "60", "-o", "/dev/null", "-w", "%{speed_download} %{size_download}",
                 f"{scheme}://127.0.0.1:{port}/big"],
                capture_output=True, text=True, timeout=90,
            ).stdout.split()
        except subprocess.TimeoutExpired:
            out = ["timeout"]
        if len(out) < 2 or int(float(out[1])) != BIG_MB * 1024 * 1024:
            print(f"  large body through port {port}: incomplete ({out})", file=sys.stderr)
            return float("nan")
        speeds.append(float(out[0]) / 1e6)
    return statistics.median(speeds)


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
    if ENV("FULCRUM_BIN"):
        commit += f" (binary: FULCRUM_BIN={FULCRUM})"
    return [
        f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"machine: {CPUS} cores, load average before start {os.getloadavg()[0]:.2f}, descriptor limit {FD_LIMIT}",
        f"haproxy: {first_line(['haproxy', '-v'])}",
        f"nginx: {first_line(['nginx', '-v'])}",
        f"wrk: {first_line(['wrk', '-v'])}",
        f"fulcrum: {commit}",
    ]


def load_cells():
    """(workers, connections, mode) of every throughput cell, in the order they are
    measured in a round and printed: per worker setting, http and tcp at each of
    CONNECTIONS, then (TLS) https keep-alive, https-new (a new TLS connection per
    request) and https-flood (keep-alive during a flood of new TLS clients) at
    TLS_CONNECTIONS."""
    cells = []
    for w in PROXY_THREADS:
        cells += [(w, c, m) for c in CONNECTIONS for m in ("http", "tcp")]
        if TLS:
            cells += [(w, TLS_CONNECTIONS, m) for m in ("https", "https-new", "https-flood")]
    return cells


def describe(workers):
    if workers == "default":
        return "default (HAProxy without nbthread, nginx worker_processes auto, fulcrum run without --threads)"
    return f"{workers} (nbthread {workers}, worker_processes {workers}, --threads {workers})"


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below
    started = time.time()
    ports_free()
    tmp = BENCH_DIR or tempfile.mkdtemp(prefix="fulcrum-bench-")
    backend_config(tmp)
    for line in versions():
        print(line)
    sys.stdout.flush()
    backend, sets, died = None, {}, []
    flog = open(f"{tmp}/fulcrum.log", "w")
    results, after_load, bodies, tls_bodies, memory = {}, {}, {}, {}, []
    if TLS:
        CERT.update(make_certificate(tmp))
    try:
        backend = subprocess.Popen(["nginx", "-c", f"{tmp}/backend.conf", "-g", "daemon off;"])
        record_pid(backend.pid)
        for port in BACKENDS:
            wait_port(port, "backend nginx")
        for i, workers in enumerate(PROXY_THREADS):
            sets[workers] = {name: Instance(tmp, name, workers, *load_ports(name, i), f"load{i}", flog,
                                            https=tls_port(name, i) if TLS else None)
                             for name in PROXIES}
        print(f"{ROUNDS} rounds x {DURATION}s, wrk -t{WRK_THREADS} -c{'/'.join(map(str, CONNECTIONS))}"
              f"{' (Connection: close)' if CLOSE else ''}, "
              f"{'forwarding headers added by all three' if FORWARD_HEADERS else 'HAProxy/nginx add no forwarding headers'}")
        for workers, insts in sets.items():
            print(f"workers {describe(workers)}: " + ", ".join(f"{n} {i.shape()}" for n, i in insts.items()))
        if TLS:
            print(f"TLS: one self-signed ECDSA P-256 certificate (bench.test) for all three, TLS 1.2 and 1.3 "
                  f"allowed; https-new: ab -f TLS1.3 -c{TLS_CONNECTIONS}, one HTTP/1.0 request per new "
                  f"connection, a full handshake each (no resumption); https: wrk -c{TLS_CONNECTIONS} keep-alive; "
                  f"large body: curl --http1.1. Negotiated with `openssl s_client` (workers {PROXY_THREADS[0]}):")
            for name, inst in sets[PROXY_THREADS[0]].items():
                print(f"  {name}: {tls_probe(inst.https)}")
        sys.stdout.flush()

        # Throughput: every (workers, connections, mode) cell once per round, the
        # three proxies back to back, who goes first rotating with the round.
        cells = load_cells()
        ab_csv = os.path.join(tmp, "ab-percentiles.csv")
        for r in range(ROUNDS):
            order = PROXIES[r % 3:] + PROXIES[:r % 3]
            for workers, conns, mode in cells:
                for name in order:
                    inst = sets[workers][name]
                    if not inst.alive():
                        continue
                    pids = inst.pids()
                    cpu0 = cpu_seconds(pids)
                    if mode == "https-new":
                        run = ab(inst.https, conns, ab_csv)
                    elif mode == "https-flood":
                        run = flooded_wrk(inst.https, conns)
                    else:
                        port = {"http": inst.http, "tcp": inst.tcp, "https": inst.https}[mode]
                        run = wrk(port, conns, "https" if mode == "https" else "http")
                    cpu = cpu_seconds(pids) - cpu0
                    if not inst.alive():
                        died.append(f"{name} (workers {workers}) exited with {inst.proc.returncode} "
                                    f"during round {r + 1} {mode} -c{conns}")
                        print(f"  !! {died[-1]}", file=sys.stderr)
                    if run is None:
                        continue
                    requests, rps, p50, p99, errors = run[:5]
                    per_k = cpu * 1e6 / max(requests, 1)
                    results.setdefault((workers, conns, mode, name), []).append((rps, p50, p99, per_k, errors))
                    print(f"  round {r + 1} w={workers:7} c={conns:<5} {mode:9} {name:8} {rps:9.0f} req/s  "
                          f"p99 {p99:7.2f} ms  cpu {per_k:5.1f} ms/1k  errors {errors}"
                          + (f"  ({run[5]})" if len(run) > 5 and r == 0 else ""), file=sys.stderr)
        for workers, insts in sets.items():
            for name, inst in insts.items():
                if inst.alive():
                    after_load[(workers, name)] = rss_kib(inst.pids()) / 1024
        if BIG_RUNS:  # on the first worker setting; peak RSS includes the wrk rounds
            workers = PROXY_THREADS[0]
            for name, inst in sets[workers].items():
                if inst.alive():
                    bodies[name] = (big_body(inst.http), peak_rss_mib(inst.pids()))
                if TLS and inst.alive():
                    tls_bodies[name] = big_body(inst.https, "https")
        for workers, insts in sets.items():
            for name, inst in insts.items():
                if not inst.alive() and not any(d.startswith(f"{name} (workers {workers})") for d in died):
                    died.append(f"{name} (workers {workers}) exited with {inst.proc.returncode}")
                inst.stop()
        print(f"  load runs done after {time.time() - started:.0f} s", file=sys.stderr)

        # Memory: a fresh process per proxy and scenario, so one scenario's freed
        # heap does not hide the next one's growth.
        if IDLE:
            run_index = 0
            for workers in MEMORY_THREADS:
                for scenario in ("seq", "burst"):
                    for name in PROXIES:
                        count = min(IDLE, HAPROXY_MAXCONN - 20) if name == "haproxy" else IDLE
                        memory.append(memory_run(tmp, flog, name, workers, scenario, run_index, count))
                    run_index += 1
        report(results, memory, bodies, after_load, tls_bodies)
        for d in died:
            print(f"!! {d}")
        print(f"\n(whole run {time.time() - started:.0f} s)")
    finally:
        for insts in sets.values():
            for inst in insts.values():
                inst.stop()
        if backend is not None:
            if backend.poll() is None:
                backend.send_signal(signal.SIGTERM)
            try:
                backend.wait(timeout=10)
            except subprocess.TimeoutExpired:
                backend.kill()
                backend.wait()
        if BENCH_DIR:  # all stopped and reaped: nothing left for run.sh to kill
            open(os.path.join(BENCH_DIR, "pids"), "w").close()
        flog.close()
        with open(f"{tmp}/fulcrum.log") as f:
            lines = f.read().splitlines()
        # wrk sends the IP literal of its URL as SNI; rustls ignores it and warns once
        # per connection (the https rows' wrk connections): counted, not shown.
        sni = [line for line in lines if "ignoring IP address presented as hostname" in line]
        if sni:
            print(f"\nfulcrum: {len(sni)} warning(s) from rustls ignoring an IP address sent as SNI "
                  f"(wrk's https connections)", file=sys.stderr)
            lines = [line for line in lines if line not in sni]
        if lines:
            print(f"\nfulcrum wrote {len(lines)} log line(s) (RUST_LOG=warn); last ones:", file=sys.stderr)
            for line in lines[-10:]:
                print(f"  {line}", file=sys.stderr)
        if not BENCH_DIR:
            shutil.rmtree(tmp, ignore_errors=True)



def report(results, memory, bodies, after_load, tls_bodies):
    med = lambda xs, i: statistics.median(x[i] for x in xs)
    ratios = {}  # (workers, conns, mode, other) -> (req/s, cpu, p99)
    body_ratios = {}  # (scheme, other) -> Fulcrum's MB/s / other's
    if ROUNDS:
        throughput(results, ratios, med)
    memory_tables(memory)
    if bodies or after_load:
        print()
        cols = " | ".join(f"RSS after the load runs, workers {w}" for w in PROXY_THREADS)
        big = f" {BIG_MB} MiB download (median of {BIG_RUNS}, workers {PROXY_THREADS[0]}) |" if bodies else ""
        big += " same over TLS |" if bodies and tls_bodies else ""
        big += " peak RSS then |" if bodies else ""
        print(f"| proxy |{big} {cols} |")
        print("|---|" + ("---:|" * big.count("|")) + "---:|" * len(PROXY_THREADS))
        nan = float("nan")
        for name in PROXIES:
            speed, peak = bodies.get(name, (nan, nan))
            big = f" {speed:.0f} MB/s |" if bodies else ""
            big += f" {tls_bodies.get(name, nan):.0f} MB/s |" if bodies and tls_bodies else ""
            big += f" {peak:.1f} MiB |" if bodies else ""
            rss = " | ".join(f"{after_load.get((w, name), nan):.1f} MiB" for w in PROXY_THREADS)
            print(f"| {name} |{big} {rss} |")
        if bodies:
            print()
            print("| large body, Fulcrum / other | vs HAProxy | vs nginx |")
            print("|---|---:|---:|")
            for scheme, speeds in (("http", {n: b[0] for n, b in bodies.items()}), ("https", tls_bodies)):
                if not speeds:
                    continue
                cells = []
                for other in ("haproxy", "nginx"):
                    r = speeds.get("fulcrum", nan) / speeds.get(other, nan) if speeds.get(other) else nan
                    body_ratios[(scheme, other)] = r
                    cells.append("n/a" if r != r else f"{r:.2f}")
                print(f"| MB/s over {scheme} | {cells[0]} | {cells[1]} |")
    goals(ratios, memory, body_ratios)


def throughput(results, ratios, med):
    print()
    if TLS:
        print("https: keep-alive over TLS (wrk); https-new: a new TLS 1.3 connection (full handshake) per request "
              "(ab), so its req/s is new connections/s and its CPU is per 1k handshakes; https-flood: the https "
              f"row while ab floods the proxy with {FLOOD_CONNECTIONS} new TLS clients at once.")
        print()
    print("| workers | conns | mode | proxy | req/s | p50 ms | p99 ms | CPU ms / 1k req | errors |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|")
    for workers, conns, mode in load_cells():
        for name in PROXIES:
            xs = results.get((workers, conns, mode, name))
            if not xs:
                print(f"| {workers} | {conns} | {mode} | {name} | failed | | | | |")
                continue
            print(f"| {workers} | {conns} | {mode} | {name} | {med(xs, 0):.0f} | {med(xs, 1):.3f} | "
                  f"{med(xs, 2):.3f} | {med(xs, 3):.1f} | {sum(x[4] for x in xs)} |")

    print()
    print("| workers | conns | mode | req/s vs HAProxy | req/s vs nginx | CPU/req vs HAProxy | CPU/req vs nginx "
          "| p99 vs HAProxy | p99 vs nginx |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for workers, conns, mode in load_cells():
        f = results.get((workers, conns, mode, "fulcrum"))
        cols = {}
        for other in ("haproxy", "nginx"):
            o = results.get((workers, conns, mode, other))
            if f and o:
                ratios[(workers, conns, mode, other)] = cols[other] = tuple(
                    med(f, i) / med(o, i) if med(o, i) else float("nan") for i in (0, 3, 2))
        g = lambda other, j: f"{cols[other][j]:.2f}" if other in cols else "n/a"
        print(f"| {workers} | {conns} | {mode} | {g('haproxy', 0)} | {g('nginx', 0)} | {g('haproxy', 1)} "
              f"| {g('nginx', 1)} | {g('haproxy', 2)} | {g('nginx', 2)} |")
    if AB_CPU:
        print()
        print(f"ab (the https-new client, one process on the same {CPUS} cores) used {statistics.median(AB_CPU):.0f} ms "
              f"CPU per 1k new connections (median of {len(AB_CPU)} runs, {min(AB_CPU):.0f}-{max(AB_CPU):.0f}).")


def memory_tables(memory):
    if memory:
        print()
        print(f"Memory per keep-alive client connection (RSS growth / connections accepted, KiB), "
              f"fresh process per run, nginx backend answering `return 200`:")
        print()
        print("| proxy | workers | connections opened / accepted | (a) connected, no request "
              "| (b) after one request each, sequential | (c) after one request each, all at once "
              "| (d) after closing them (burst run) | requests ok / failed (seq; burst) | still open (seq; burst) |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for workers in MEMORY_THREADS:
            for name in PROXIES:
                seq = next((m for m in memory if m["name"] == name and m["workers"] == workers
                            and m["scenario"] == "seq"), None)
                burst = next((m for m in memory if m["name"] == name and m["workers"] == workers
                              and m["scenario"] == "burst"), None)
                if not seq or not burst:
                    continue
                print(f"| {name} | {workers} | {seq['opened']} / {seq['accepted']} | {seq['connected_per']:.2f} "
                      f"| {seq['requested_per']:.2f} | {burst['requested_per']:.2f} | {burst['closed_per']:.2f} "
                      f"| {seq['ok']} / {seq['failed']}; {burst['ok']} / {burst['failed']} "
                      f"| {seq['open']}; {burst['open']} |")
        print()
        print("| proxy | workers | run | RSS before | connected | after the requests | after closing | accepted "
              "| request phase s |")
        print("|---|---|---|---:|---:|---:|---:|---:|---:|")
        for m in memory:
            mib = lambda k: f"{m[k] / 1024:.1f} MiB"
            print(f"| {m['name']} | {m['workers']} | {m['scenario']} | {mib('before')} | {mib('connected')} "
                  f"| {mib('requested')} | {mib('closed')} | {m['accepted']} | {m['phase_secs']:.1f} |")


def goals(ratios, memory, body_ratios):
    """Issue #12's goals and the TLS goals against this run: measured figure per cell,
    and whether all cells meet it."""
    rows = []

    def ratio_goal(label, mode, other, j, target, higher):
        vals = [(w, c, ratios[(w, c, m, other)][j]) for w, c, m in load_cells()
                if m == mode and (w, c, mode, other) in ratios]
        if not vals:
            return
        ok = all((v >= target) if higher else (v <= target) for _, _, v in vals)
        shown = ", ".join(f"{v:.2f} (w={w}, c={c})" for w, c, v in vals)
        rows.append((label, f"{'>=' if higher else '<='} {target}", shown, "yes" if ok else "no"))

    ratio_goal("HTTP req/s vs HAProxy", "http", "haproxy", 0, 1.25, True)
    ratio_goal("HTTP req/s vs nginx", "http", "nginx", 0, 1.1, True)
    ratio_goal("HTTP CPU/req vs HAProxy", "http", "haproxy", 1, 0.8, False)
    ratio_goal("HTTP p99 vs HAProxy", "http", "haproxy", 2, 1.0, False)
    ratio_goal("HTTP p99 vs nginx", "http", "nginx", 2, 1.0, False)
    ratio_goal("TCP req/s vs HAProxy", "tcp", "haproxy", 0, 1.0, True)
    ratio_goal("TCP req/s vs nginx", "tcp", "nginx", 0, 1.0, True)
    ratio_goal("TLS: new TLS 1.3 connections/s vs HAProxy", "https-new", "haproxy", 0, 1.5, True)
    ratio_goal("TLS: HTTPS keep-alive req/s vs HAProxy", "https", "haproxy", 0, 1.0, True)
    ratio_goal("TLS: HTTPS keep-alive req/s vs nginx", "https", "nginx", 0, 1.0, True)
    ratio_goal("TLS: keep-alive HTTPS p99 during a handshake flood vs HAProxy", "https-flood", "haproxy", 2, 1.0, False)
    ratio_goal("TLS: keep-alive HTTPS p99 during a handshake flood vs nginx", "https-flood", "nginx", 2, 1.0, False)
    for other, label in (("haproxy", "HAProxy"), ("nginx", "nginx")):
        r = body_ratios.get(("https", other))
        if r is not None:
            rows.append((f"TLS: large-body MB/s over TLS vs {label}", ">= 1.0",
                         "n/a" if r != r else f"{r:.2f} (w={PROXY_THREADS[0]})", "yes" if r >= 1.0 else "no"))
    for workers in MEMORY_THREADS:
        pick = lambda name, sc: next((m for m in memory if m["name"] == name and m["workers"] == workers
                                      and m["scenario"] == sc), None)
        f_seq, h_seq, f_burst = pick("fulcrum", "seq"), pick("haproxy", "seq"), pick("fulcrum", "burst")
        if f_seq and h_seq:
            target = min(1.0, h_seq["requested_per"])
            rows.append((f"idle after a request (b), workers {workers}", f"<= 1 KiB and < HAProxy ({h_seq['requested_per']:.2f})",
                         f"{f_seq['requested_per']:.2f} KiB", "yes" if f_seq["requested_per"] <= target else "no"))
        if f_burst:
            rows.append((f"after the burst (c), workers {workers}", "<= 6 KiB",
                         f"{f_burst['requested_per']:.2f} KiB", "yes" if f_burst["requested_per"] <= 6 else "no"))
            grown = f_burst["peak"] - f_burst["before"]
            kept = f_burst["closed"] - f_burst["before"]
            share = kept / grown if grown > 0 else 0.0
            rows.append((f"returned after the burst (d), workers {workers}", "<= 25% of the burst's peak kept",
                         f"{kept / 1024:.1f} of {grown / 1024:.1f} MiB kept ({share:.0%})",
                         "yes" if share <= 0.25 else "no"))
    if rows:
        print()
        print(f"Goals of issue #12{' and of TLS termination' if TLS else ''} (Fulcrum; ratios are Fulcrum / other, "
              "from the tables above):")
        print()
        print("| goal | target | measured | met |")
        print("|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
