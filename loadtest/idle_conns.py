#!/usr/bin/env python3
"""Open COUNT keep-alive TCP connections to 127.0.0.1:PORT, hold them idle, and on
command send one HTTP request on each (one after another, or all at once).

    python3 loadtest/idle_conns.py PORT COUNT [--hold SECONDS] [--per-source N]
                                   [--first-source K] [--request seq|burst]

Connections come from 127.0.0.K, 127.0.0.K+1, ... (PER_SOURCE per source address,
default 5000; K defaults to 2), so the test never runs short of ephemeral ports
however many connections or proxies are measured one after another.

Once every connection has been tried, prints one line on stdout:

    connected N failed M

then reads commands from stdin, one per line, and answers each with one line:

    seq     each open connection in turn sends `GET / HTTP/1.1` (keep-alive), reads
            the whole response, then stays open and idle; answers
            `seq ok N failed M open K secs S`
    burst   every open connection sends that request at once (all the requests are
            written before any response is read), then every response is read; the
            connections stay open and idle; answers `burst ok N failed M open K secs S`
    check   answers `check open K`: connections the peer has not closed
    close   closes every connection; answers `closed N`
    anything else, or EOF: closes every connection and exits

`ok` counts responses with status 200 and the backend's body (`--expect`, default
`ok\\n`: the bench's backend nginx answers `GET /` with it, so an `ok` is a request
that went through the proxy to the backend and back); `failed` counts the rest
(timeout, connection closed, other status or body; the first few reasons go to
stderr). `open` counts connections still open after the phase.

`--request seq|burst` runs that phase right after connecting (printing its line),
for use by hand. The process exits when the hold time (default 300 s) runs out or on
SIGTERM/SIGINT. Bounded: each connect has a 5 s timeout and all of them together
CONNECT_BUDGET s; a request phase at most PHASE_BUDGET s (and 5 s per response in
`seq`).
"""

import argparse
import errno
import resource
import selectors
import signal
import socket
import sys
import time

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
CONNECT_BUDGET = 120.0  # seconds for all the connects together
PHASE_BUDGET = 120.0    # seconds for one request phase (seq or burst)
RESPONSE_TIMEOUT = 5.0  # seconds per response in seq


class Response:
    """Incremental HTTP/1.1 response reader: feed() bytes until done."""

    def __init__(self):
        self.buf = b""
        self.head = None
        self.status = None
        self.length = None
        self.chunked = False
        self.done = False

    def feed(self, data):
        self.buf += data
        if self.head is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            self.head, self.buf = self.buf[:end], self.buf[end + 4:]
            lines = self.head.split(b"\r\n")
            parts = lines[0].split()
            self.status = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else -1
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    self.length = int(value.strip())
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    self.chunked = True
        if self.length is not None:
            self.done = len(self.buf) >= self.length
        elif self.chunked:
            self.done = self.buf.endswith(b"0\r\n\r\n")
        else:
            self.done = False  # close-delimited: not expected on keep-alive

    def body(self):
        if self.chunked:  # good enough for the short bodies expected here
            out, rest = b"", self.buf
            while rest:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0] or b"0", 16)
                if size == 0:
                    break
                out, rest = out + rest[:size], rest[size + 2:]
            return out
        return self.buf[: self.length]


class Tally:
    def __init__(self):
        self.ok = 0
        self.failed = 0
        self.reasons = {}

    def fail(self, reason):
        self.failed += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if self.failed <= 3:
            print(f"request failed: {reason}", file=sys.stderr, flush=True)

    def judge(self, resp, expect):
        if resp.status != 200:
            self.fail(f"status {resp.status}")
        elif expect is not None and resp.body() != expect:
            self.fail(f"body {resp.body()[:40]!r}")
        else:
            self.ok += 1


def request_bytes(port):
    return f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: idle_conns\r\n\r\n".encode()


def run_seq(socks, req, expect, stop):
    """One request per connection, one connection at a time."""
    tally = Tally()
    deadline = time.monotonic() + PHASE_BUDGET
    for i, s in enumerate(socks):
        if stop or time.monotonic() > deadline:
            for _ in socks[i:]:
                tally.fail("phase time budget or signal")
            break
        resp = Response()
        try:
            s.settimeout(RESPONSE_TIMEOUT)
            s.sendall(req)
            while not resp.done:
                data = s.recv(65536)
                if not data:
                    break
                resp.feed(data)
        except socket.timeout:
            tally.fail("timeout")
            continue
        except OSError as e:
            tally.fail(f"error {errno.errorcode.get(e.errno, e.errno)}")
            continue
        if not resp.done:
            tally.fail("closed before a whole response")
            continue
        tally.judge(resp, expect)
    return tally


def run_burst(socks, req, expect, stop):
    """Every connection writes its request before any response is read."""
    tally = Tally()
    sel = selectors.DefaultSelector()
    pending = {}
    for s in socks:
        try:
            s.setblocking(False)
            if s.send(req) != len(req):  # ~60 bytes into an empty socket buffer
                raise OSError(errno.EAGAIN, "short send")
        except OSError as e:
            tally.fail(f"send error {errno.errorcode.get(e.errno, e.errno)}")
            continue
        pending[s.fileno()] = (s, Response())
        sel.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + PHASE_BUDGET
    while pending and not stop and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            s, resp = pending[key.fd]
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                data = None
                tally.fail(f"error {errno.errorcode.get(e.errno, e.errno)}")
            if data:
                resp.feed(data)
                if not resp.done:
                    continue
                tally.judge(resp, expect)
            elif data is not None:
                tally.fail("closed before a whole response")
            sel.unregister(s)
            del pending[key.fd]
    for _ in pending:
        tally.fail("phase time budget or signal")
    sel.close()
    for s in socks:
        try:
            s.setblocking(True)
        except OSError:
            pass
    return tally


def still_open(socks):
    """Connections the peer has not closed (no EOF, no error pending)."""
    n = 0
    for s in socks:
        try:
            s.setblocking(False)  # a socket with a timeout would wait for it first
            data = s.recv(1, socket.MSG_PEEK)
            n += 1 if data else 0  # b"": the peer closed; bytes: open (unexpected data)
        except BlockingIOError:
            n += 1  # nothing to read: open and idle
        except OSError:
            pass
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument("--hold", type=float, default=300.0, help="seconds to live at most")
    ap.add_argument("--per-source", type=int, default=5000)
    ap.add_argument("--first-source", type=int, default=2, help="first source address 127.0.0.K")
    ap.add_argument("--request", choices=["seq", "burst"], help="run this phase right after connecting")
    ap.add_argument("--expect", default="ok\n", help="expected response body ('' for any)")
    args = ap.parse_args()
    expect = args.expect.encode() if args.expect else None
    req = request_bytes(args.port)
    end = time.monotonic() + args.hold

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
    deadline = min(end, time.monotonic() + CONNECT_BUDGET)
    for i in range(args.count):
        if stop or time.monotonic() > deadline:
            failed += args.count - i
            break
        src_host = args.first_source + i // args.per_source
        if src_host > 254:
            failed += args.count - i
            print("ran out of source addresses 127.0.0.x", file=sys.stderr)
            break
        src = f"127.0.0.{src_host}"
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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

    def phase(name):
        t0 = time.monotonic()
        tally = (run_seq if name == "seq" else run_burst)(socks, req, expect, stop)
        secs = time.monotonic() - t0
        if tally.reasons:
            print(f"{name}: failures {tally.reasons}", file=sys.stderr, flush=True)
        print(f"{name} ok {tally.ok} failed {tally.failed} open {still_open(socks)} secs {secs:.1f}", flush=True)

    if args.request:
        phase(args.request)

    sel = selectors.DefaultSelector()
    sel.register(sys.stdin, selectors.EVENT_READ)
    while not stop and time.monotonic() < end:
        try:
            ready = sel.select(timeout=0.5)
        except InterruptedError:
            continue
        if not ready:
            continue
        cmd = sys.stdin.readline().strip()
        if cmd in ("seq", "burst"):
            phase(cmd)
        elif cmd == "check":
            print(f"check open {still_open(socks)}", flush=True)
        elif cmd == "close":
            n = len(socks)
            for s in socks:
                s.close()
            socks = []
            print(f"closed {n}", flush=True)
        else:
            break  # EOF or an unknown line: release
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
