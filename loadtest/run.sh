#!/usr/bin/env bash
# Side-by-side benchmark: HAProxy, nginx and Fulcrum in front of the same two nginx
# backends, HTTP and TCP mode, loaded in interleaved rounds by wrk. Everything runs
# on 127.0.0.1 and every step is bounded in time. See loadtest/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in haproxy nginx wrk curl python3; do
    command -v "$tool" >/dev/null || need+=("$tool")
done
if ((${#need[@]})); then
    echo "installing: haproxy nginx-light libnginx-mod-stream wrk curl"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq haproxy nginx-light libnginx-mod-stream wrk curl python3 >/dev/null
fi

cargo build --release --quiet
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec python3 loadtest/bench.py "$@"
