#!/usr/bin/env bash
# Side-by-side benchmark: HAProxy, nginx and Fulcrum in front of the same two nginx
# backends, HTTP and TCP mode, each proxy at its default worker count and at 1 worker,
# loaded in interleaved rounds by wrk with 64 and 1,000 connections, and over TLS (one
# ECDSA P-256 certificate for all three; TLS=0 skips it): new TLS 1.3 connections/s
# (ab, a full handshake per request), keep-alive HTTPS (wrk), plus memory per
# keep-alive client connection (connected; after one request each, sequential; after
# one request each, all at once; after closing) and large-body throughput; and
# gunicorn behind a queue (issue #14; GUNICORN=0 skips it): two gunicorn servers with
# 2 sync workers each and a 200 ms handler, behind HAProxy (maxconn 2 per server +
# its queue), Fulcrum (max_connections: 2 + queue:) and nginx (no queue), 40 wrk
# clients for GUNICORN_SECS (default 10) through each; and static files (STATIC=0
# skips it): nginx (alias, sendfile on) and Fulcrum (a `static:` route) serving one
# directory, wrk -t1 -c64 for STATIC_SECS (default 5) on a 4 KiB file and 3 curl
# downloads of a 64 MiB file through each; and cache hits (CACHE=0 skips it): nginx
# (proxy_cache) and Fulcrum (cache:) in front of the nginx backend's 4 KiB cacheable
# answer, and Fulcrum's respond route with the same bytes, wrk -t1 -c64 for CACHE_SECS
# (default 5) on each. Everything runs on
# 127.0.0.0/8, every step is bounded in time, and every process started is stopped
# on exit.
#
#   bash loadtest/run.sh                      # defaults: ~10 minutes after the build
#   ROUNDS=1 DURATION=2 IDLE=2000 BIG_RUNS=1 bash loadtest/run.sh   # quick check (~2 min)
#   ROUNDS=0 BIG_RUNS=0 IDLE=0 TLS=0 STATIC=0 GUNICORN_SECS=5 PROXY_THREADS=default bash loadtest/run.sh
#                                             # the gunicorn row alone (~40 s)
#   ROUNDS=0 BIG_RUNS=0 IDLE=0 TLS=0 GUNICORN=0 CACHE=0 STATIC_SECS=3 PROXY_THREADS=default bash loadtest/run.sh
#                                             # the static-files row alone (~15 s)
#   ROUNDS=0 BIG_RUNS=0 IDLE=0 TLS=0 GUNICORN=0 STATIC=0 CACHE_SECS=3 PROXY_THREADS=default bash loadtest/run.sh
#                                             # the cache row alone (~15 s)
#
# Knobs and the meaning of each column: loadtest/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v nginx >/dev/null || need+=(nginx-light)
[[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || need+=(libnginx-mod-stream)
command -v wrk >/dev/null || need+=(wrk)
[[ "${INSTR:-1}" == 0 ]] || command -v valgrind >/dev/null || need+=(valgrind)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
if [[ "${TLS:-1}" != 0 ]]; then  # the TLS rows: the certificate, new-connection client
    command -v openssl >/dev/null || need+=(openssl)
    command -v ab >/dev/null || need+=(apache2-utils)
fi
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The gunicorn row: Debian's gunicorn (the `gunicorn` script; python3-gunicorn is the
# module), else from PyPI into this python3 (bench.py then runs `python3 -m gunicorn`).
if [[ "${GUNICORN:-1}" != 0 ]] && ! command -v gunicorn >/dev/null && ! python3 -c 'import gunicorn' 2>/dev/null; then
    echo "installing: gunicorn"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get -o DPkg::Lock::Timeout=600 update -qq &&
        apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends gunicorn >/dev/null; }; then
        echo "no gunicorn package from apt: pip install gunicorn"
        python3 -m pip install -q --break-system-packages gunicorn
    fi
fi

# Shared target dir: if another build holds the lock, cargo waits for it.
cargo build --release

# 8,000 client connections (and as many server connections in the burst) need
# descriptors: as many as the hard limit allows.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

BENCH_DIR="$(mktemp -d /tmp/fulcrum-bench.XXXXXX)"
export BENCH_DIR
driver=""

# bench.py writes every pid it starts (backends, proxies, nginx workers, the idle
# client) to $BENCH_DIR/pids; stop exactly those, whatever way this script ends.
cleanup() {
    trap - EXIT INT TERM
    if [[ -n "$driver" ]] && kill -0 "$driver" 2>/dev/null; then
        kill -TERM "$driver" 2>/dev/null || true
        for ((i = 0; i < 30; i++)); do kill -0 "$driver" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$driver" 2>/dev/null || true
    fi
    if [[ -f "$BENCH_DIR/pids" ]]; then
        while read -r pid; do kill -TERM "$pid" 2>/dev/null || true; done <"$BENCH_DIR/pids"
        sleep 1
        while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$BENCH_DIR/pids"
    fi
    rm -rf "$BENCH_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# In the background + wait, so a signal to this script is handled at once.
python3 loadtest/bench.py "$@" &
driver=$!
status=0
wait "$driver" || status=$?
driver=""
exit "$status"
