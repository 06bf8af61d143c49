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
With GUNICORN (default), before the memory test: two gunicorn servers with 2 sync
workers each (a 200 ms handler) behind one more HAProxy (per-server `maxconn 2` and
its queue), Fulcrum (`max_connections: 2` and `queue:`) and nginx (round robin, no
queue), 40 wrk clients through each in turn (issue #14). With STATIC (default), after
that: nginx (`alias`, sendfile on) and Fulcrum (a `static:` route) serving the same
directory, a 4 KiB file (wrk) and a 64 MiB file (curl). With CACHE (default), last:
cache hits on a 4 KiB answer of the nginx backend (`expires 1h`) through nginx
(`proxy_cache`) and Fulcrum (`cache:`), and Fulcrum's `respond` route with the same
body, the yardstick of issue #16's goal. With INSTR (default): each proxy alone under
valgrind's callgrind, the user-space instructions per proxied request.
Prints the tables, Fulcrum's ratios and the goals of issues #12, #14 and #16, of TLS
termination and of static files.
"""

import glob
import http.client
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
# https-new-capped: the https-new row with each proxy held to the same CPU time, this
# many CPUs' worth (a cgroup cpu quota on its processes; 0 skips the row). On a few
# shared cores the client's handshakes cost more than the proxy's, so https-new
# measures ab; under the cap the proxy is what runs out, as at an edge with many
# clients, and connections/s compares the proxies' handshake cost directly.
TLS_CPU_CAP = float(ENV("TLS_CPU_CAP", "0.25"))
# https-flood: new TLS clients at once (ab) while the keep-alive HTTPS row is measured.
FLOOD_CONNECTIONS = int(ENV("FLOOD_CONNECTIONS", "256"))
# 1: the gunicorn row (issue #14): two gunicorn servers, 2 sync workers each, a
# 200 ms handler, behind HAProxy and Fulcrum with 2 connections per server and a
# queue, and nginx (no queue); GUNICORN_CLIENTS wrk connections for GUNICORN_SECS
# through each. 0: skipped (and gunicorn not needed).
GUNICORN = ENV("GUNICORN", "1") == "1"
GUNICORN_SECS = int(ENV("GUNICORN_SECS", "10"))
# 1: the static-files row: nginx (`location /static/ { alias DIR/; }`, sendfile on)
# and Fulcrum (a route with `static: {root: DIR, strip_prefix: true}`) serving one
# directory: wrk -t1 -c64 for STATIC_SECS on a 4 KiB file, and the median MB/s of 3
# curl downloads of a 64 MiB file. 0: skipped.
STATIC = ENV("STATIC", "1") == "1"
STATIC_SECS = int(ENV("STATIC_SECS", "5"))
# 1: the cache row (issue #16): nginx (`proxy_cache`) and Fulcrum (`cache:`) in front
# of the nginx backend, which answers /cached.css (4 KiB, `expires 1h`), each warmed
# with one request and then wrk -t1 -c64 for CACHE_SECS on it (all hits); and
# Fulcrum's `respond` route with the same 4 KiB, the goal's yardstick. 0: skipped.
CACHE = ENV("CACHE", "1") == "1"
CACHE_SECS = int(ENV("CACHE_SECS", "5"))
# 1: the instructions row: each proxy alone (one worker, plain HTTP, the load set's
# config and forwarding headers) under valgrind's callgrind, and the user-space
# instructions it executes per proxied request over INSTR_SECS of wrk -t1 -c16,
# counted after a warm-up. Unlike req/s and CPU time this does not move with the
# machine's load: small changes to the per-request work show. 0: skipped.
INSTR = ENV("INSTR", "1") == "1"
INSTR_SECS = int(ENV("INSTR_SECS", "4"))
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

# The gunicorn row: the two gunicorn servers, and one proxy of each kind in front of
# them (18611 haproxy, 18612 nginx, 18613 fulcrum).
GUNICORN_SERVERS = [18601, 18602]
GUNICORN_WORKERS = 2         # sync workers per server: requests each serves at once
GUNICORN_SLOTS = 2           # HAProxy maxconn / Fulcrum max_connections per server
GUNICORN_SLEEP = 0.2         # seconds the handler sleeps
GUNICORN_CLIENTS = 40        # wrk connections
GUNICORN_WRK_TIMEOUT = 30    # wrk --timeout, s: longer than any wait in the queue


def gunicorn_port(name):
    return 18610 + PROXIES.index(name) + 1


# The static-files row: nginx and Fulcrum (their default worker counts) serving the
# same directory on their own ports.
STATIC_PROXIES = ("nginx", "fulcrum")
STATIC_PORTS = {"nginx": 18711, "fulcrum": 18713}
# The same nginx serves the directory a second time, with `open_file_cache` (valid
# 1s, as long as Fulcrum trusts a small file it keeps in memory): its best case.
STATIC_NGINX_OFC_PORT = 18715
STATIC_SMALL = 4096          # bytes of small.css
STATIC_BIG_MB = 64           # MiB of big.bin (sparse)
STATIC_CLIENTS = 64          # wrk connections on small.css
STATIC_RUNS = 3              # curl downloads of big.bin per proxy (median)

# The cache row: nginx and Fulcrum (default worker counts) caching the backend's
# /cached.css; Fulcrum's /respond answers the same bytes from its config.
CACHE_PORTS = {"nginx": 18721, "fulcrum": 18723}
CACHE_BODY = 4096            # bytes of /cached.css and /respond
CACHE_CLIENTS = 64           # wrk connections
CACHE_ROWS = (("nginx", "/cached.css"), ("fulcrum", "/cached.css"), ("fulcrum", "/respond"))

# The instructions row: (http, tcp) of each proxy under callgrind.
INSTR_PORTS = {"haproxy": (18731, 18741), "nginx": (18732, 18742), "fulcrum": (18733, 18743)}


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
    # The cache row's answer: cacheable for an hour (nginx `expires`).
    write(os.path.join(big, "cached.css"), cache_body())
    # nginx workers drop root: let them read the files.
    for path in (tmp, big, os.path.join(big, "big"), os.path.join(big, "cached.css")):
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
    location = /cached.css {{ expires 1h; }}
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


def haproxy_forward(proto):
    """The request headers Fulcrum always adds, for an HAProxy backend section
    (FORWARD_HEADERS)."""
    return f"""  option forwardfor
  http-request set-header X-Forwarded-Proto {proto}
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request add-header Via "1.1 haproxy"
""" if FORWARD_HEADERS else ""


# The same for an nginx `location` (FORWARD_HEADERS); nginx also passes the client's Host.
NGINX_FORWARD = """      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header Via "1.1 nginx";
""" if FORWARD_HEADERS else ""


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
        forward = haproxy_forward
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
        forward = NGINX_FORWARD
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
        fulcrum_check(path)
    return path


def fulcrum_check(path):
    check = subprocess.run([FULCRUM, "check", "--config", path], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        sys.exit(f"fulcrum check rejected the benchmark config {path}:\n{check.stderr}")


GUNICORN_APP = f"""import time


def app(environ, start_response):
    time.sleep({GUNICORN_SLEEP})
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\\n"]
"""


def gunicorn_configs(tmp):
    """The gunicorn row's files: the WSGI app (gunicorn_app.py: sleeps GUNICORN_SLEEP,
    answers 200 `ok\\n`) and one config per proxy in front of the two gunicorn servers,
    on its gunicorn_port. HAProxy and Fulcrum let GUNICORN_SLOTS requests at once reach
    each server and queue the rest (30 s at most); open-source nginx has no such queue:
    plain round robin, the excess waits in gunicorn's listen backlog. Timeouts as in the
    load sets. Fulcrum's config is checked here, before anything runs. Returns
    {proxy: config path}."""
    write(f"{tmp}/gunicorn_app.py", GUNICORN_APP)
    write(f"{tmp}/latency.lua", WRK_LATENCY_LUA)
    paths = {name: f"{tmp}/{name}-gunicorn.{ext}" for name, ext in zip(PROXIES, ("cfg", "conf", "yaml"))}
    srv = "\n".join(f"  server g{i} 127.0.0.1:{p} maxconn {GUNICORN_SLOTS}" for i, p in enumerate(GUNICORN_SERVERS))
    write(paths["haproxy"], f"""
global
  maxconn 1000
defaults
  timeout connect 3s
  timeout client 60s
  timeout server 60s
  timeout queue 30s
frontend fe_gunicorn
  mode http
  bind 127.0.0.1:{gunicorn_port("haproxy")}
  default_backend be_gunicorn
backend be_gunicorn
  mode http
  balance roundrobin
{haproxy_forward("http")}{srv}
""")
    ups = "\n".join(f"    server 127.0.0.1:{p};" for p in GUNICORN_SERVERS)
    write(paths["nginx"], f"""
worker_processes auto;
pid {tmp}/nginx-gunicorn.pid;
error_log {tmp}/nginx-gunicorn.err;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  upstream gunicorn {{
{ups}
  }}
  server {{
    listen 127.0.0.1:{gunicorn_port("nginx")};
    client_header_timeout 60s;
    client_body_timeout 60s;
    send_timeout 60s;
    location / {{
      proxy_pass http://gunicorn;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_connect_timeout 3s;
      proxy_send_timeout 60s;
      proxy_read_timeout 60s;
{NGINX_FORWARD}    }}
  }}
}}
""")
    fsrv = "\n".join(f"      - {{ name: g{i}, address: 127.0.0.1:{p}, max_connections: {GUNICORN_SLOTS} }}"
                     for i, p in enumerate(GUNICORN_SERVERS))
    write(paths["fulcrum"], f"""
timeouts: {{ connect: 3s, client: 60s, server: 60s, request_header: 60s }}
frontends:
  - {{ name: http, bind: 127.0.0.1:{gunicorn_port("fulcrum")}, mode: http, default_backend: gunicorn, access_log: false }}
backends:
  - name: gunicorn
    balance: round_robin
    queue: {{ max: 1000, timeout: 30s }}
    servers:
{fsrv}
""")
    fulcrum_check(paths["fulcrum"])
    return paths


def static_configs(tmp):
    """The static-files row's files: the directory both serve ({tmp}/static:
    small.css, STATIC_SMALL bytes of text, and big.bin, STATIC_BIG_MB MiB, sparse)
    and one config each for nginx (`alias`, `sendfile on` as its default build's
    stock nginx.conf, `access_log off`) and Fulcrum (a `static:` route with
    strip_prefix, `access_log: false`), on STATIC_PORTS."""
    root = f"{tmp}/static"
    os.makedirs(root, exist_ok=True)
    line = "body { margin: 0; padding: 0; font-family: sans-serif; color: #222; }\n"
    css = (line * (STATIC_SMALL // len(line) + 1))[:STATIC_SMALL - 1] + "\n"
    write(f"{root}/small.css", css)
    with open(f"{root}/big.bin", "wb") as f:
        f.truncate(STATIC_BIG_MB * 1024 * 1024)
    paths = {"nginx": f"{tmp}/nginx-static.conf", "fulcrum": f"{tmp}/fulcrum-static.yaml"}
    write(paths["nginx"], f"""
worker_processes auto;
pid {tmp}/nginx-static.pid;
error_log {tmp}/nginx-static.err;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  server {{
    listen 127.0.0.1:{STATIC_PORTS["nginx"]};
    keepalive_requests 1000000;
    location /static/ {{
      alias {root}/;
    }}
  }}
  server {{
    listen 127.0.0.1:{STATIC_NGINX_OFC_PORT};
    keepalive_requests 1000000;
    open_file_cache max=1000 inactive=20s;
    open_file_cache_valid 1s;
    location /static/ {{
      alias {root}/;
    }}
  }}
}}
""")
    write(paths["fulcrum"], f"""
timeouts: {{ connect: 3s, client: 60s, server: 60s, request_header: 60s }}
frontends:
  - name: http
    bind: 127.0.0.1:{STATIC_PORTS["fulcrum"]}
    mode: http
    access_log: false
    routes:
      - match: {{ path_prefix: /static/ }}
        static: {{ root: {root}, strip_prefix: true }}
""")
    fulcrum_check(paths["fulcrum"])
    return paths


def cache_body():
    """CACHE_BODY bytes of text: the backend's /cached.css and Fulcrum's /respond."""
    line = "p { margin: 0 auto; padding: 1em; line-height: 1.5; color: #333; }\n"
    return (line * (CACHE_BODY // len(line) + 1))[:CACHE_BODY - 1] + "\n"


def cache_configs(tmp):
    """The cache row's configs: nginx (`proxy_cache` in a directory under tmp,
    `X-Cache` telling HIT or MISS, `access_log off`) and Fulcrum (`cache: {size:
    64MiB, max_object: 1MiB}` on a backend of the first nginx backend, and a route
    `respond`ing /respond with cache_body(), `access_log: false`), on CACHE_PORTS."""
    cache_dir = f"{tmp}/nginx-cache"
    for d in (cache_dir, f"{cache_dir}-temp"):
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o777)  # nginx workers drop root
    paths = {"nginx": f"{tmp}/nginx-cache.conf", "fulcrum": f"{tmp}/fulcrum-cache.yaml"}
    write(paths["nginx"], f"""
worker_processes auto;
pid {tmp}/nginx-cache.pid;
error_log {tmp}/nginx-cache.err;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  proxy_cache_path {cache_dir} levels=1:2 keys_zone=bench:10m max_size=64m;
  proxy_temp_path {cache_dir}-temp;
  server {{
    listen 127.0.0.1:{CACHE_PORTS["nginx"]};
    keepalive_requests 1000000;
    location / {{
      proxy_pass http://127.0.0.1:{BACKENDS[0]};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache bench;
      add_header X-Cache $upstream_cache_status;
    }}
  }}
}}
""")
    body = cache_body().replace("\n", "\\n")
    write(paths["fulcrum"], f"""
timeouts: {{ connect: 3s, client: 60s, server: 60s, request_header: 60s }}
frontends:
  - name: http
    bind: 127.0.0.1:{CACHE_PORTS["fulcrum"]}
    mode: http
    access_log: false
    default_backend: app
    routes:
      - match: {{ path: /respond }}
        respond: {{ status: 200, content_type: text/css, body: "{body}" }}
backends:
  - name: app
    cache: {{ size: 64MiB, max_object: 1MiB }}
    servers:
      - {{ name: nginx, address: 127.0.0.1:{BACKENDS[0]} }}
""")
    fulcrum_check(paths["fulcrum"])
    return paths


def cache_warm(port, path):
    """GETs `path` until an answer comes from the cache (nginx: X-Cache: HIT, which
    may take a moment: nginx commits the entry after the first answer has left;
    Fulcrum's cache: an Age header; /respond is not cached), at most 10 times: True
    if one did, every answer being 200 with CACHE_BODY bytes."""
    for attempt in range(10):
        if attempt:
            time.sleep(0.1)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            headers = {k.lower(): v for k, v in resp.getheaders()}
            conn.close()
        except OSError as e:
            print(f"  !! cache {path} through port {port}: {e}", file=sys.stderr)
            return False
        if resp.status != 200 or len(body) != CACHE_BODY:
            print(f"  !! cache {path} through port {port}: {resp.status}, {len(body)} bytes "
                  f"(want 200 and {CACHE_BODY})", file=sys.stderr)
            return False
        if attempt and (headers.get("x-cache") == "HIT" or "age" in headers or path == "/respond"):
            return True
    print(f"  !! cache {path} through port {port}: no answer came from the cache ({headers})", file=sys.stderr)
    return False


def static_get(port, path, size):
    """GET `path` once: True if it answered 200 with `size` bytes."""
    try:
        out = subprocess.run(["curl", "-s", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                              f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, timeout=20).stdout.split()
    except subprocess.TimeoutExpired:
        out = ["timeout"]
    if out[:1] != ["200"] or len(out) < 2 or int(float(out[1])) != size:
        print(f"  !! static {path} through port {port}: {out} (want 200 and {size} bytes)", file=sys.stderr)
        return False
    return True


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
    if GUNICORN:
        ports += GUNICORN_SERVERS + [gunicorn_port(name) for name in PROXIES]
    if STATIC:
        ports += [*STATIC_PORTS.values(), STATIC_NGINX_OFC_PORT]
    if CACHE:
        ports += list(CACHE_PORTS.values())
    if INSTR:
        ports += [p for pair in INSTR_PORTS.values() for p in pair]
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
    """One running proxy: name, worker setting, ports, process. `config`: a config
    already written (the gunicorn row's, listening on `http` only; tcp None) instead
    of the load set's."""

    def __init__(self, tmp, name, workers, http, tcp, tag, log, https=None, config=None):
        self.name, self.workers, self.http, self.tcp, self.tag = name, workers, http, tcp, tag
        self.https = https
        path = config or proxy_config(tmp, name, workers, http, tcp, tag, https)
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
        if tcp:
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


def wrk(port, connections, scheme="http", duration=None, timeout=None, stats=None, threads=None, script=None,
        path="/"):
    """One wrk run: (requests, req/s, p50 ms, p99 ms, errors), or None if wrk failed.
    Over https always keep-alive (wrk would resume its TLS session on every new
    connection: the new-connection row is ab's, below). `duration`: seconds instead of
    DURATION; `timeout`: wrk's --timeout in s (default 2); `stats`: a dict that gets
    the max latency in ms ("max") and wrk's error lines ("detail"); `threads`: instead
    of WRK_THREADS; `script`: a wrk Lua script, e.g. WRK_LATENCY_LUA's (then p50, p99
    and max are its microseconds, not wrk's text, which has 3 significant digits);
    `path`: the URL path requested."""
    duration = duration or DURATION
    close = ["-H", "Connection: close"] if CLOSE and scheme == "http" else []
    limit = ["--timeout", f"{timeout}s"] if timeout else []
    limit += ["-s", script] if script else []
    cmd = ["wrk", f"-t{threads or WRK_THREADS}", f"-c{connections}", f"-d{duration}s", *limit, "--latency", *close,
           f"{scheme}://127.0.0.1:{port}{path}"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        p50 = parse_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
        p99 = parse_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
        if stats is not None:  # Latency   avg   stdev   max   +/- stdev
            stats["max"] = parse_ms(re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out).group(1))
            stats["detail"] = "; ".join(re.findall(r"(?:Socket errors|Non-2xx or 3xx responses):.*", out))
        exact = re.search(r"latency_us p50 (\d+) p99 (\d+) max (\d+)", out)
        if exact:
            p50, p99 = int(exact.group(1)) / 1000, int(exact.group(2)) / 1000
            if stats is not None:
                stats["max"] = int(exact.group(3)) / 1000
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


# wrk's latency figures in microseconds, for wrk(script=...): its text report prints
# e.g. "2.01s", so 10 ms steps around the gunicorn row's ~2 s.
WRK_LATENCY_LUA = """done = function(summary, latency, requests)
  io.write(string.format("latency_us p50 %d p99 %d max %d\\n",
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


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


class CpuCap:
    """For a with-block, the processes `pids` (every thread of each) held to `cpus`
    CPUs' time in all: a cgroup made for it (v2 `cpu.max`, or v1 `cpu.cfs_quota_us`)
    takes them, and gives them back to the cgroup each came from on exit. Entering
    yields False, with the reason printed once, where no cpu cgroup can be made
    (not root, no cpu controller): the capped row is then left out."""

    PERIOD_US = 100_000
    warned = False

    def __init__(self, pids, cpus):
        self.pids, self.quota = pids, max(1000, int(cpus * self.PERIOD_US))
        self.group, self.home = None, {}

    @staticmethod
    def hierarchy():
        """(mount, v2?) of the cgroup hierarchy with the cpu controller, or None."""
        v1 = "/sys/fs/cgroup/cpu"
        if os.path.exists(os.path.join(v1, "cpu.cfs_quota_us")):
            return v1, False
        try:
            with open("/sys/fs/cgroup/cgroup.controllers") as f:
                if "cpu" in f.read().split():
                    return "/sys/fs/cgroup", True
        except OSError:
            pass
        return None

    @staticmethod
    def current(pid, v2):
        """The cgroup path of `pid` in that hierarchy (relative to its mount)."""
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if (v2 and controllers == "") or (not v2 and "cpu" in controllers.split(",")):
                    return path
        return "/"

    def __enter__(self):
        found = self.hierarchy()
        try:
            if found is None:
                raise OSError("no cgroup hierarchy with the cpu controller")
            mount, v2 = found
            self.mount = mount
            group = os.path.join(mount, f"fulcrum-bench-{os.getpid()}")
            os.makedirs(group, exist_ok=True)
            self.group = group
            if v2:
                write(os.path.join(group, "cpu.max"), f"{self.quota} {self.PERIOD_US}")
            else:
                write(os.path.join(group, "cpu.cfs_period_us"), str(self.PERIOD_US))
                write(os.path.join(group, "cpu.cfs_quota_us"), str(self.quota))
            for pid in self.pids:
                self.home[pid] = self.current(pid, v2)
                write(os.path.join(group, "cgroup.procs"), str(pid))
            return True
        except OSError as e:
            if not CpuCap.warned:
                print(f"  https-new-capped left out: no CPU cap here ({e})", file=sys.stderr)
                CpuCap.warned = True
            self.__exit__()
            return False

    def __exit__(self, *exc):
        for pid, home in self.home.items():
            try:
                write(os.path.join(self.mount, home.lstrip("/"), "cgroup.procs"), str(pid))
            except OSError:
                pass  # the process is gone
        if self.group:
            try:
                os.rmdir(self.group)
            except OSError as e:
                print(f"  could not remove {self.group}: {e}", file=sys.stderr)
        return False


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


def gunicorn_cmd():
    """How to start gunicorn: its script (Debian's `gunicorn` package), else the
    module in this Python (pip)."""
    exe = shutil.which("gunicorn")
    return [exe] if exe else [sys.executable, "-m", "gunicorn"]


def gunicorn_get(port, limit):
    """GET / straight from one gunicorn server: True if it answered 200 `ok\\n`
    within `limit` s."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=limit)
    try:
        conn.request("GET", "/")
        r = conn.getresponse()
        return r.status == 200 and r.read() == b"ok\n"
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def gunicorn_busy():
    """Connections to the gunicorn servers not finished yet: their server side
    ESTABLISHED or CLOSE_WAIT (accepted, or still waiting in the listen backlog,
    including those the proxy has given up on: gunicorn still serves them)."""
    ports = {f"{p:04X}" for p in GUNICORN_SERVERS}
    busy = 0
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[1].rsplit(":", 1)[1] in ports and cols[3] in ("01", "08"):
                    busy += 1
    except OSError:
        pass
    return busy


def gunicorn_idle(limit):
    """Wait (<= `limit` s) until nothing is left for the gunicorn servers to do (no
    connection to them for 0.5 s: a proxy may still be sending what it had queued)
    and each answers a request of its own. True if so."""
    deadline = time.time() + limit
    quiet_since = None
    while time.time() < deadline:
        if gunicorn_busy():
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since >= 0.5:
            break
        time.sleep(0.1)
    for port in GUNICORN_SERVERS:
        while not gunicorn_get(port, max(0.5, min(5.0, deadline - time.time()))):
            if time.time() >= deadline:
                return False
            time.sleep(0.2)
    return time.time() < deadline


def stop_gunicorn(master):
    """SIGTERM to the master (it stops its workers; --graceful-timeout 5), SIGKILL
    after 10 s; then any worker still there."""
    workers = children(master.pid)
    if master.poll() is None:
        master.send_signal(signal.SIGTERM)
    try:
        master.wait(timeout=10)
    except subprocess.TimeoutExpired:
        master.kill()
        master.wait()
    for pid in workers:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"gunicorn" in f.read():
                    os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def gunicorn_row(tmp, log, paths):
    """Issue #14's row: two gunicorn servers (GUNICORN_WORKERS sync workers each,
    the app of gunicorn_configs) and one proxy of each kind in front of them (their
    default worker counts), all started here and stopped at the end; then, one proxy
    after another, `wrk -t1 -c40 -d$GUNICORN_SECS --timeout 30s` through it, each run
    starting once the servers have nothing left to do. Returns {proxy: {"rps", "p50",
    "p99", "max", "errors", "detail"}} for the proxies measured."""
    out, masters, insts = {}, [], {}
    started = time.time()
    try:
        for port in GUNICORN_SERVERS:
            g = subprocess.Popen(gunicorn_cmd() + [
                "--workers", str(GUNICORN_WORKERS), "--worker-class", "sync", "--bind", f"127.0.0.1:{port}",
                "--backlog", "2048", "--timeout", "300", "--graceful-timeout", "5", "--chdir", tmp,
                "--error-logfile", f"{tmp}/gunicorn-{port}.log", "gunicorn_app:app"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            record_pid(g.pid)
            masters.append(g)
        ready = gunicorn_idle(30)
        for g in masters:  # in case a master is killed hard
            for pid in children(g.pid):
                record_pid(pid)
        if not ready:
            print(f"  !! gunicorn did not answer on {GUNICORN_SERVERS} within 30 s: no gunicorn row "
                  f"(its logs: {tmp}/gunicorn-*.log)", file=sys.stderr)
            return out
        for name in PROXIES:
            insts[name] = Instance(tmp, name, "default", gunicorn_port(name), None, "gunicorn", log,
                                   config=paths[name])
        print("  gunicorn row: " + ", ".join(f"{n} {i.shape()}" for n, i in insts.items())
              + f", gunicorn {'/'.join(str(len(children(g.pid))) for g in masters)} workers", file=sys.stderr)
        for name in PROXIES:
            if not gunicorn_idle(60):
                print(f"  !! gunicorn still busy or not answering after 60 s (before {name})", file=sys.stderr)
            stats = {}
            run = wrk(gunicorn_port(name), GUNICORN_CLIENTS, duration=GUNICORN_SECS, timeout=GUNICORN_WRK_TIMEOUT,
                      stats=stats, threads=1, script=f"{tmp}/latency.lua")
            if not insts[name].alive():
                print(f"  !! {name} (gunicorn row) exited with {insts[name].proc.returncode}", file=sys.stderr)
            if run is None:
                continue
            _, rps, p50, p99, errors = run
            out[name] = {"rps": rps, "p50": p50, "p99": p99, "max": stats.get("max", float("nan")),
                         "errors": errors, "detail": stats.get("detail", "")}
            print(f"  gunicorn {name:8} {rps:6.1f} req/s  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  "
                  f"max {out[name]['max']:7.1f} ms  errors {errors}"
                  + (f"  ({out[name]['detail']})" if out[name]["detail"] else ""), file=sys.stderr)
    finally:
        for inst in insts.values():
            inst.stop()
        for g in masters:
            stop_gunicorn(g)
        noted = []
        for port in GUNICORN_SERVERS:
            try:
                with open(f"{tmp}/gunicorn-{port}.log") as f:
                    noted += [f"{port}: {line.strip()}" for line in f
                              if any(k in line for k in ("[WARNING]", "[ERROR]", "[CRITICAL]"))]
            except OSError:
                pass
        if noted:
            print(f"  gunicorn logged {len(noted)} warning/error line(s); last ones:", file=sys.stderr)
            for line in noted[-5:]:
                print(f"    {line}", file=sys.stderr)
        print(f"  gunicorn row done in {time.time() - started:.0f} s", file=sys.stderr)
    return out


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


def instructions_row(tmp, log):
    """User-space instructions per proxied request for each proxy, counted by
    callgrind (see INSTR); {name: instructions}, or a missing name if it failed."""
    counts = {}
    for i, name in enumerate(PROXIES):
        http, tcp = INSTR_PORTS[name]
        path = proxy_config(tmp, name, "1", http, tcp, f"instr{i}")
        out = f"{tmp}/callgrind-{name}.out"
        cmd = {"haproxy": ["haproxy", "-f", path],
               # One process: the master would otherwise be what valgrind follows.
               "nginx": ["nginx", "-c", path, "-g", "daemon off; master_process off;"],
               "fulcrum": [FULCRUM, "run", "--config", path, "--threads", "1"]}[name]
        env = {**os.environ, "RUST_LOG": "warn"} if name == "fulcrum" else None
        proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                                 f"--log-file={tmp}/valgrind-{name}.log", *cmd],
                                stdout=subprocess.DEVNULL, stderr=log if name == "fulcrum" else subprocess.DEVNULL,
                                env=env)
        record_pid(proc.pid)
        try:
            wait_port(http, f"{name} under valgrind", limit=60)
            wrk(http, 16, duration=2, timeout=10)  # warm-up: pools filled, lazy state set up
            control = lambda flag: subprocess.run(["callgrind_control", flag, str(proc.pid)],
                                                  capture_output=True, timeout=60)
            control("-z")
            run = wrk(http, 16, duration=INSTR_SECS, timeout=10)
            control("-d")
            dumps = sorted(glob.glob(f"{out}.*"), key=lambda f: int(f.rsplit(".", 1)[1]))
            total = None
            if dumps:
                with open(dumps[-1]) as f:
                    total = next((int(line.split()[1]) for line in f if line.startswith("summary:")), None)
            if run and total and run[0] > 0 and run[4] == 0:
                counts[name] = total / run[0]
                print(f"  instructions {name:8} {run[0]} requests, {counts[name]:,.0f} per request", file=sys.stderr)
            else:
                print(f"  instructions {name}: no count (wrk {run}, dump {total})", file=sys.stderr)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return counts


def static_row(tmp, log, paths):
    """The static-files row: nginx and Fulcrum (default worker counts) started on
    the configs of static_configs, checked to answer both files, then one after the
    other `wrk -t1 -c64 -d$STATIC_SECS --latency` on /static/small.css and
    STATIC_RUNS curl downloads of /static/big.bin; stopped at the end. Returns
    {proxy: {"rps", "p99", "errors", "mbs"}} for the proxies measured."""
    out, insts = {}, {}
    started = time.time()
    try:
        for name in STATIC_PROXIES:
            insts[name] = Instance(tmp, name, "default", STATIC_PORTS[name], None, "static", log, config=paths[name])
        print("  static row: " + ", ".join(f"{n} {i.shape()}" for n, i in insts.items()), file=sys.stderr)
        rows = [(name, name, STATIC_PORTS[name]) for name in STATIC_PROXIES]
        rows.insert(1, ("nginx", "nginx open_file_cache", STATIC_NGINX_OFC_PORT))
        for name, row, port in rows:
            if not (static_get(port, "/static/small.css", STATIC_SMALL)
                    and static_get(port, "/static/big.bin", STATIC_BIG_MB * 1024 * 1024)):
                continue
            run = wrk(port, STATIC_CLIENTS, duration=STATIC_SECS, threads=1, path="/static/small.css")
            mbs = big_body(port, path="/static/big.bin", mib=STATIC_BIG_MB, runs=STATIC_RUNS)
            if not insts[name].alive():
                print(f"  !! {name} (static row) exited with {insts[name].proc.returncode}", file=sys.stderr)
            if run is None:
                continue
            _, rps, _, p99, errors = run
            out[row] = {"rps": rps, "p99": p99, "errors": errors, "mbs": mbs}
            print(f"  static {row:22} {rps:9.0f} req/s  p99 {p99:7.2f} ms  errors {errors}  "
                  f"{STATIC_BIG_MB} MiB {mbs:6.0f} MB/s", file=sys.stderr)
    finally:
        for inst in insts.values():
            inst.stop()
        print(f"  static row done in {time.time() - started:.0f} s", file=sys.stderr)
    return out


def cache_row(tmp, log, paths):
    """The cache row: nginx and Fulcrum (default worker counts) started on the
    configs of cache_configs, each path of CACHE_ROWS warmed (and checked to be a
    hit), then `wrk -t1 -c64 -d$CACHE_SECS --latency` on each in turn; stopped at
    the end. Returns {(proxy, path): {"rps", "p99", "errors"}}."""
    out, insts = {}, {}
    started = time.time()
    try:
        for name in CACHE_PORTS:
            insts[name] = Instance(tmp, name, "default", CACHE_PORTS[name], None, "cache", log, config=paths[name])
        print("  cache row: " + ", ".join(f"{n} {i.shape()}" for n, i in insts.items()), file=sys.stderr)
        for name, path in CACHE_ROWS:
            port = CACHE_PORTS[name]
            if not cache_warm(port, path):
                continue
            run = wrk(port, CACHE_CLIENTS, duration=CACHE_SECS, threads=1, path=path)
            if not insts[name].alive():
                print(f"  !! {name} (cache row) exited with {insts[name].proc.returncode}", file=sys.stderr)
            if run is None:
                continue
            _, rps, _, p99, errors = run
            out[(name, path)] = {"rps": rps, "p99": p99, "errors": errors}
            print(f"  cache {name:8} {path:12} {rps:9.0f} req/s  p99 {p99:7.2f} ms  errors {errors}", file=sys.stderr)
    finally:
        for inst in insts.values():
            inst.stop()
        print(f"  cache row done in {time.time() - started:.0f} s", file=sys.stderr)
    return out


def peak_rss_mib(pids):
    return status_kib(pids, "VmHWM") / 1024


def big_body(port, scheme="http", path="/big", mib=None, runs=None):
    """Median MB/s of BIG_RUNS (`runs`) downloads of /big (`path`, BIG_MB or `mib`
    MiB: else NaN; over https: HTTP/1.1, like http; -k: the benchmark's certificate
    is self-signed)."""
    speeds = []
    tls = ["-k", "--http1.1"] if scheme == "https" else []
    mib = mib or BIG_MB
    for _ in range(runs or BIG_RUNS):
        try:
            out = subprocess.run(
                ["curl", "-s", *tls, "--max-time", "60", "-o", "/dev/null", "-w", "%{speed_download} %{size_download}",
                 f"{scheme}://127.0.0.1:{port}{path}"],
                capture_output=True, text=True, timeout=90,
            ).stdout.split()
        except subprocess.TimeoutExpired:
            out = ["timeout"]
        if len(out) < 2 or int(float(out[1])) != mib * 1024 * 1024:
            print(f"  large body {path} through port {port}: incomplete ({out})", file=sys.stderr)
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
        *([f"gunicorn: {first_line(gunicorn_cmd() + ['--version'])}"] if GUNICORN else []),
        f"fulcrum: {commit}",
    ]


def load_cells():
    """(workers, connections, mode) of every throughput cell, in the order they are
    measured in a round and printed: per worker setting, http and tcp at each of
    CONNECTIONS, then (TLS) https keep-alive, https-new (a new TLS connection per
    request), https-flood (keep-alive during a flood of new TLS clients) and
    https-new-capped (https-new with the proxy held to TLS_CPU_CAP CPUs) at
    TLS_CONNECTIONS."""
    cells = []
    for w in PROXY_THREADS:
        cells += [(w, c, m) for c in CONNECTIONS for m in ("http", "tcp")]
        if TLS:
            cells += [(w, TLS_CONNECTIONS, m) for m in ("https", "https-new", "https-flood")]
            if TLS_CPU_CAP > 0:
                cells.append((w, TLS_CONNECTIONS, "https-new-capped"))
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
    if GUNICORN:
        if not shutil.which("gunicorn") and subprocess.run([sys.executable, "-c", "import gunicorn"],
                                                           capture_output=True).returncode != 0:
            sys.exit("gunicorn not found (run.sh installs it; GUNICORN=0 skips its row)")
        gunicorn_paths = gunicorn_configs(tmp)  # Fulcrum's checked now, not after the load runs
    if STATIC:
        static_paths = static_configs(tmp)  # likewise
    if CACHE:
        cache_paths = cache_configs(tmp)  # likewise
    for line in versions():
        print(line)
    sys.stdout.flush()
    backend, sets, died = None, {}, []
    flog = open(f"{tmp}/fulcrum.log", "w")
    results, after_load, bodies, tls_bodies, memory, queue, files, hits = {}, {}, {}, {}, [], {}, {}, {}
    instructions = {}
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
                    elif mode == "https-new-capped":
                        with CpuCap(pids, TLS_CPU_CAP) as capped:
                            run = ab(inst.https, conns, ab_csv) if capped else None
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

        # gunicorn behind a queue (issue #14): its own servers and proxies.
        if GUNICORN:
            queue = gunicorn_row(tmp, flog, gunicorn_paths)

        # Static files: nginx and Fulcrum serving one directory, their own processes.
        if STATIC:
            files = static_row(tmp, flog, static_paths)

        # Cache hits: nginx's proxy_cache and Fulcrum's cache in front of the backend.
        if CACHE:
            hits = cache_row(tmp, flog, cache_paths)

        # Instructions per request: each proxy alone under callgrind.
        if INSTR:
            instructions = instructions_row(tmp, flog)

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
        report(results, memory, bodies, after_load, tls_bodies, queue, files, hits, instructions)
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



def report(results, memory, bodies, after_load, tls_bodies, queue, files, hits, instructions):
    med = lambda xs, i: statistics.median(x[i] for x in xs)
    ratios = {}  # (workers, conns, mode, other) -> (req/s, cpu, p99)
    body_ratios = {}  # (scheme, other) -> Fulcrum's MB/s / other's
    if ROUNDS:
        throughput(results, ratios, med)
    if GUNICORN:
        gunicorn_table(queue)
    if STATIC:
        static_table(files)
    if CACHE:
        cache_table(hits)
    if INSTR:
        instructions_table(instructions)
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
    goals(ratios, memory, body_ratios, queue, files, hits)


def instructions_table(counts):
    print()
    print(f"User-space instructions per proxied request (callgrind, one worker, plain HTTP, "
          f"wrk -t1 -c16 for {INSTR_SECS} s after a warm-up; forwarding headers as above):")
    print()
    print("| proxy | instructions / request | Fulcrum / this |")
    print("|---|---:|---:|")
    ours = counts.get("fulcrum")
    for name in PROXIES:
        n = counts.get(name)
        ratio = f"{ours / n:.2f}" if n and ours else "n/a"
        print(f"| {name} | {f'{n:,.0f}' if n else 'n/a'} | {ratio} |")


def cache_table(hits):
    print()
    print("HTTP cache hits (nginx proxy_cache vs Fulcrum cache, and Fulcrum's respond route)")
    print()
    print(f"The nginx backend answers /cached.css ({CACHE_BODY // 1024} KiB, `expires 1h`); each proxy (default worker "
          f"counts, no access log) is warmed with one request, then `wrk -t1 -c{CACHE_CLIENTS} -d{CACHE_SECS}s "
          f"--latency`: every request a hit. nginx: `proxy_cache` (keys_zone 10m, files under a temporary "
          f"directory); Fulcrum: `cache: {{size: 64MiB, max_object: 1MiB}}`; Fulcrum's /respond: a `respond` route "
          f"with the same {CACHE_BODY // 1024} KiB (issue #16's yardstick: a hit should cost no more).")
    print()
    print("| proxy | path | req/s | p99 ms | errors |")
    print("|---|---|---:|---:|---:|")
    for name, path in CACHE_ROWS:
        h = hits.get((name, path))
        if not h:
            print(f"| {name} | {path} | failed | | |")
            continue
        print(f"| {name} | {path} | {h['rps']:.0f} | {h['p99']:.3f} | {h['errors']} |")


def static_table(files):
    print()
    print("Static files (nginx and Fulcrum, both with sendfile)")
    print()
    print(f"One directory served by both (default worker counts, no access log): small.css ({STATIC_SMALL // 1024} KiB "
          f"of text) with `wrk -t1 -c{STATIC_CLIENTS} -d{STATIC_SECS}s --latency`, big.bin ({STATIC_BIG_MB} MiB, "
          f"sparse) with curl (median of {STATIC_RUNS}). nginx: `location /static/ {{ alias DIR/; }}`, `sendfile on`, "
          f"and the same with `open_file_cache max=1000 inactive=20s; open_file_cache_valid 1s;`; "
          f"Fulcrum: a route `static: {{root: DIR, strip_prefix: true}}` (small files kept in memory for 1 s "
          f"after their lookup; sendfile on the blocking pool for the rest).")
    print()
    print(f"| proxy | {STATIC_SMALL // 1024} KiB req/s | {STATIC_SMALL // 1024} KiB p99 ms | errors "
          f"| {STATIC_BIG_MB} MiB MB/s |")
    print("|---|---:|---:|---:|---:|")
    for name in (STATIC_PROXIES[0], "nginx open_file_cache", *STATIC_PROXIES[1:]):
        f = files.get(name)
        if not f:
            print(f"| {name} | failed | | | |")
            continue
        print(f"| {name} | {f['rps']:.0f} | {f['p99']:.3f} | {f['errors']} | {f['mbs']:.0f} |")


def gunicorn_table(queue):
    slots = len(GUNICORN_SERVERS) * GUNICORN_WORKERS
    print()
    print(f"gunicorn sync workers ({len(GUNICORN_SERVERS)} servers x {GUNICORN_WORKERS} workers, "
          f"{GUNICORN_SLEEP * 1000:.0f} ms handler), {GUNICORN_CLIENTS} clients")
    print()
    print(f"wrk -t1 -c{GUNICORN_CLIENTS} -d{GUNICORN_SECS}s --timeout {GUNICORN_WRK_TIMEOUT}s, one run per proxy. "
          f"{slots} workers x {1 / GUNICORN_SLEEP:.0f} req/s each: the ceiling is {slots / GUNICORN_SLEEP:.0f} req/s. "
          f"HAProxy and Fulcrum send at most {GUNICORN_SLOTS} requests at once to each server and queue the rest; "
          f"open-source nginx has no such queue: it passes every request on at once and the excess waits in "
          f"gunicorn's listen backlog.")
    print()
    setup = {"haproxy": f"`maxconn {GUNICORN_SLOTS}` per server, `timeout queue 30s`",
             "nginx": "round robin, no queue (open-source nginx has none)",
             "fulcrum": f"`max_connections: {GUNICORN_SLOTS}` per server, `queue: {{max: 1000, timeout: 30s}}`"}
    print("| proxy | in front of gunicorn | req/s | p50 ms | p99 ms | max ms | errors |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in PROXIES:
        q = queue.get(name)
        if not q:
            print(f"| {name} | {setup[name]} | failed | | | | |")
            continue
        print(f"| {name} | {setup[name]} | {q['rps']:.1f} | {q['p50']:.0f} | {q['p99']:.0f} | {q['max']:.0f} "
              f"| {q['errors']} |")


def throughput(results, ratios, med):
    print()
    if TLS:
        print("https: keep-alive over TLS (wrk); https-new: a new TLS 1.3 connection (full handshake) per request "
              "(ab), so its req/s is new connections/s and its CPU is per 1k handshakes; https-flood: the https "
              f"row while ab floods the proxy with {FLOOD_CONNECTIONS} new TLS clients at once"
              + (f"; https-new-capped: https-new with each proxy's processes held to {TLS_CPU_CAP:g} CPU "
                 "(one cgroup cpu quota for all its threads and workers), so the proxy, not ab, is what runs out."
                 if TLS_CPU_CAP > 0 else "."))
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


def goals(ratios, memory, body_ratios, queue, files, hits):
    """Issue #12's goals, the TLS goals and issue #14's (the gunicorn row) against this
    run: measured figure per cell, and whether all cells meet it."""
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
    ratio_goal(f"TLS: new TLS 1.3 connections/s vs HAProxy, each held to {TLS_CPU_CAP:g} CPU", "https-new-capped",
               "haproxy", 0, 1.5, True)
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
    if GUNICORN:
        f, h = queue.get("fulcrum"), queue.get("haproxy")
        if f and h and h["p99"] and h["rps"]:
            # Fast 503s would make a low p99: met only without more errors than HAProxy.
            p99 = f["p99"] / h["p99"]
            # Three decimals: the p99s are ~2 s apiece, so 1.00 could still be "no".
            shown = (f"p99 {p99:.3f}x ({f['p99']:.1f} vs {h['p99']:.1f} ms), req/s {f['rps'] / h['rps']:.2f}x "
                     f"({f['rps']:.1f} vs {h['rps']:.1f}), errors {f['errors']} vs {h['errors']}")
            rows.append(("gunicorn queue: p99 <= HAProxy's", "<= 1.0x HAProxy", shown,
                         "yes" if p99 <= 1.0 and f["errors"] <= h["errors"] else "no"))
        else:
            rows.append(("gunicorn queue: p99 <= HAProxy's", "<= 1.0x HAProxy", "n/a (a run failed)", "no"))
    if STATIC:
        f, n, ofc = files.get("fulcrum"), files.get("nginx"), files.get("nginx open_file_cache")
        for label, key, target, unit, n in (
                (f"static {STATIC_SMALL // 1024} KiB req/s vs nginx", "rps", 1.0, "req/s", n),
                (f"static {STATIC_SMALL // 1024} KiB req/s vs nginx with open_file_cache", "rps", 1.0, "req/s", ofc),
                (f"static {STATIC_BIG_MB} MiB MB/s vs nginx", "mbs", 0.9, "MB/s", n)):
            fv, nv = (f or {}).get(key, float("nan")), (n or {}).get(key, float("nan"))
            r = fv / nv if nv else float("nan")
            if r != r:
                rows.append((label, f">= {target}", "n/a (a run failed)", "no"))
            else:
                met = r >= target and (f["errors"] <= n["errors"] if key == "rps" else True)
                rows.append((label, f">= {target}", f"{r:.2f} ({fv:.0f} vs {nv:.0f} {unit})", "yes" if met else "no"))
    if CACHE:
        hit, fixed, nginx = (hits.get(k) for k in (("fulcrum", "/cached.css"), ("fulcrum", "/respond"),
                                                  ("nginx", "/cached.css")))
        for label, other, target in (("cache hit req/s vs Fulcrum's respond route", fixed, 0.9),
                                     ("cache hit req/s vs nginx proxy_cache", nginx, None)):
            if not (hit and other and other["rps"]):
                rows.append((label, f">= {target}" if target else "(shown)", "n/a (a run failed)",
                             "no" if target else "-"))
                continue
            r = hit["rps"] / other["rps"]
            shown = f"{r:.2f} ({hit['rps']:.0f} vs {other['rps']:.0f} req/s)"
            met = r >= target and hit["errors"] <= other["errors"] if target else None
            rows.append((label, f">= {target}" if target else "(shown)", shown,
                         "-" if met is None else ("yes" if met else "no")))
    if rows:
        print()
        nums = ["#12"] + (["#14"] if GUNICORN else []) + (["#16"] if CACHE else [])
        issues = f"issues {', '.join(nums[:-1])} and {nums[-1]}" if len(nums) > 1 else "issue #12"
        extra = [x for x, on in (("TLS termination", TLS), ("static files", STATIC)) if on]
        print(f"Goals of {issues}{' and of ' + ' and '.join(extra) if extra else ''} (Fulcrum; ratios are Fulcrum / other, "
              "from the tables above):")
        print()
        print("| goal | target | measured | met |")
        print("|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
