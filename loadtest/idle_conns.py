#!/usr/bin/env python3
"""Open COUNT idle TCP connections to 127.0.0.1:PORT and hold them.

    python3 loadtest/idle_conns.py PORT COUNT [--hold SECONDS] [--per-source N]

Connections come from 127.0.0.2, 127.0.0.3, ... (PER_SOURCE per source address,
default 5000), so the test never runs short of ephemeral ports however many
connections or proxies are measured one after another. Nothing is ever sent: the
proxy sees an accepted connection waiting for a request (HTTP) or for data (TCP).

Prints one line `connected N failed M` on stdout once every connection has been
tried, then holds them until stdin is closed (or a line is read), the hold time
runs out, or SIGTERM/SIGINT arrives; then closes them all and exits.
Bounded: each connect has a 5 s timeout, all of them together CONNECT_BUDGET s.
"""

import argparse
import resource
import select
import signal
import socket
import sys
import time

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
CONNECT_BUDGET = 120.0  # seconds for all the connects together


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument("--hold", type=float, default=300.0, help="seconds to hold at most")
    ap.add_argument("--per-source", type=int, default=5000)
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.count + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
        if hard < want:
            print(f"descriptor limit {hard} < {want}: some connections will fail", file=sys.stderr)

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    socks, failed = [], 0
    deadline = time.monotonic() + CONNECT_BUDGET
    for i in range(args.count):
        if stop or time.monotonic() > deadline:
            failed += args.count - i
            break
        src = f"127.0.0.{2 + i // args.per_source}"
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((src, 0))
            s.settimeout(5)
            s.connect(("127.0.0.1", args.port))
            socks.append(s)
        except OSError as e:
            s.close()
            failed += 1
            if failed == 1:
                print(f"connect #{i} from {src} failed: {e}", file=sys.stderr)
    print(f"connected {len(socks)} failed {failed}", flush=True)

    end = time.monotonic() + args.hold
    while not stop and time.monotonic() < end:
        try:
            ready, _, _ = select.select([sys.stdin], [], [], 0.5)
        except InterruptedError:
            continue
        if ready:
            break  # a line or EOF on stdin: release
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
